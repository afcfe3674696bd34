package arm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// mappedPoller is the polling handler behind every poller this package
// returns. It delegates to azcore's own poller for the protocol (the
// Azure-AsyncOperation, Location and body pollers) and passes its errors
// through MapError, so PollUntilDone, Poll and Result fail with the same
// typed *Error as the Begin call would. Its resume token is azcore's,
// optionally carrying the key-reset values, so tokens stay interchangeable
// with those of plain azcore pollers.
type mappedPoller[T any] struct {
	inner *runtime.Poller[T]
	// reset, when set, travels in the resume token so that a resumed key
	// reset still says which value it wrote.
	reset *resetToken
}

// resetToken is the key-reset state kept in a resume token.
type resetToken struct {
	Previous         int32 `json:"previous"`
	KeyIncarnationID int32 `json:"keyIncarnationId"`
}

// resetTokenField is the resume-token member that holds a resetToken; azcore
// ignores members it does not know.
const resetTokenField = "gpaKeyReset"

func (m *mappedPoller[T]) Done() bool { return m.inner.Done() }

func (m *mappedPoller[T]) Poll(ctx context.Context) (*http.Response, error) {
	resp, err := m.inner.Poll(ctx)
	return resp, MapError(err)
}

func (m *mappedPoller[T]) Result(ctx context.Context, out *T) error {
	res, err := m.inner.Result(ctx)
	if err != nil {
		return MapError(err)
	}
	*out = res
	return nil
}

// MarshalJSON returns azcore's token for the inner poller (the "token"
// member of its resume token), plus the key-reset values if any.
func (m *mappedPoller[T]) MarshalJSON() ([]byte, error) {
	tok, err := m.inner.ResumeToken()
	if err != nil {
		return nil, err
	}
	var wrapper struct {
		Token map[string]json.RawMessage `json:"token"`
	}
	if err := json.Unmarshal([]byte(tok), &wrapper); err != nil || wrapper.Token == nil {
		return nil, fmt.Errorf("arm: unexpected resume token shape from azcore")
	}
	if m.reset != nil {
		b, err := json.Marshal(m.reset)
		if err != nil {
			return nil, err
		}
		wrapper.Token[resetTokenField] = b
	}
	return json.Marshal(wrapper.Token)
}

// UnmarshalJSON reads the key-reset values back; the inner poller was
// already built from the same token by resumePoller.
func (m *mappedPoller[T]) UnmarshalJSON(b []byte) error {
	var t map[string]json.RawMessage
	if err := json.Unmarshal(b, &t); err != nil {
		return err
	}
	if raw, ok := t[resetTokenField]; ok {
		m.reset = new(resetToken)
		return json.Unmarshal(raw, m.reset)
	}
	return nil
}

// newPoller wraps the poller of an LRO's initial response.
func newPoller[T any](c *Client, resp *http.Response, reset *resetToken) (*runtime.Poller[T], error) {
	// The inner poller traces nothing: the outer one already does.
	inner, err := runtime.NewPoller[T](resp, c.internal.Pipeline(), nil)
	if err != nil {
		return nil, MapError(err)
	}
	return runtime.NewPoller[T](resp, c.internal.Pipeline(), &runtime.NewPollerOptions[T]{
		Handler: &mappedPoller[T]{inner: inner, reset: reset},
		Tracer:  c.internal.Tracer(),
	})
}

// resumePoller rebuilds a poller from a token of newPoller's (or of any
// azcore poller for T) and returns the key-reset values it carried, if any.
func resumePoller[T any](c *Client, token string) (*runtime.Poller[T], *resetToken, error) {
	inner, err := runtime.NewPollerFromResumeToken[T](token, c.internal.Pipeline(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("arm: %w: resume token: %w", ErrInvalidRequest, err)
	}
	h := &mappedPoller[T]{inner: inner}
	p, err := runtime.NewPollerFromResumeToken[T](token, c.internal.Pipeline(), &runtime.NewPollerFromResumeTokenOptions[T]{
		Handler: h,
		Tracer:  c.internal.Tracer(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("arm: %w: resume token: %w", ErrInvalidRequest, err)
	}
	return p, h.reset, nil
}
