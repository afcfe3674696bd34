package armtest

import (
	"fmt"
	"net/http"
	"net/url"
)

type operation struct {
	id, resKey string
	left       int
	fail       *ServiceError
	done       bool
	delete     bool
	guest      bool
}

// accept finishes a write: new etag, provisioning state, an operation and
// the LRO headers.
func (s *Server) accept(w http.ResponseWriter, rt route, res *resource, status int, isDelete bool) *ServiceError {
	op := &operation{id: fmt.Sprintf("op-%d", s.seq+1), resKey: rt.key, left: s.opts.LROPolls, delete: isDelete}
	s.seq++
	if f := s.failNextOp; f != nil {
		op.fail, s.failNextOp = f, nil
	}
	op.guest = s.opts.GuestAutoLatch && (rt.kind == kindVM || rt.kind == kindInstance) && rt.action == ""
	s.ops[op.id] = op
	s.recordWrite(rt)
	h := http.Header{}
	opURL := fmt.Sprintf("%s/subscriptions/%s/providers/Microsoft.Compute/locations/%s/operations/%s?api-version=%s",
		s.URL, url.PathEscape(rt.sub), "fakeregion", op.id, "2025-04-01")
	h.Set("Azure-AsyncOperation", opURL)
	if status == http.StatusAccepted {
		h.Set("Location", opURL+"&monitor=true")
	}
	if res == nil || isDelete {
		writeJSON(w, status, nil, h)
		return nil
	}
	if res.kind == kindVM || res.kind == kindScaleSet || res.kind == kindInstance {
		res.body["etag"] = s.newETag()
	}
	state := "Updating"
	if status == http.StatusCreated {
		state = "Creating"
	}
	ensure(res.body, "properties")["provisioningState"] = state
	writeJSON(w, status, res.body, h)
	return nil
}

func (s *Server) serveOperation(w http.ResponseWriter, r *http.Request, rt route, _ []byte) *ServiceError {
	op, ok := s.ops[rt.opID]
	if !ok {
		return notFound(r.URL.Path)
	}
	monitor := r.URL.Query().Get("monitor") == "true"
	if op.left > 0 {
		op.left--
		if monitor {
			w.Header().Set("Location", r.URL.String())
			writeJSON(w, http.StatusAccepted, nil, nil)
			return nil
		}
		writeJSON(w, http.StatusOK, map[string]any{"name": op.id, "status": "InProgress"}, nil)
		return nil
	}
	if !op.done {
		op.done = true
		s.finish(op)
	}
	if op.fail != nil {
		if monitor {
			return &ServiceError{Status: http.StatusBadRequest, Code: op.fail.Code, Message: op.fail.Message}
		}
		writeJSON(w, http.StatusOK, map[string]any{"name": op.id, "status": "Failed",
			"error": map[string]any{"code": op.fail.Code, "message": op.fail.Message}}, nil)
		return nil
	}
	if monitor {
		writeJSON(w, http.StatusOK, nil, nil)
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": op.id, "status": "Succeeded"}, nil)
	return nil
}

func (s *Server) finish(op *operation) {
	res, ok := s.res[op.resKey]
	if !ok || op.delete {
		return
	}
	state := "Succeeded"
	if op.fail != nil {
		state = "Failed"
	}
	ensure(res.body, "properties")["provisioningState"] = state
	if op.guest && op.fail == nil {
		res.guest = guestReport(settingsOf(res))
	}
}
