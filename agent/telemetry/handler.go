package telemetry

import (
	"context"
	"log/slog"
	"strings"
)

// Handler is a slog.Handler that turns records at or above a level into
// events of a pipeline: the agent's log lines become upstream's generic
// log events. It never blocks.
type Handler struct {
	p       *Pipeline
	level   slog.Level
	version string
	attrs   string // preformatted " k=v" of WithAttrs
	group   string
	task    string // a "component" attribute given to WithAttrs
}

// Handler returns a handler writing records at level or above as events
// stamped with version.
func (p *Pipeline) Handler(level slog.Level, version string) *Handler {
	return &Handler{p: p, level: level, version: version}
}

// Enabled reports whether l reaches the handler's level.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

// Handle queues r as one event: the message and its attributes as
// key=value text in Message, the first "component" attribute or the group
// in TaskName.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	task := h.task
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.group, a)
		if a.Key == "component" && task == "" {
			task = a.Value.Resolve().String()
		}
		return true
	})
	if task == "" {
		task = h.group
	}
	h.p.Write(NewEvent(r.Time, r.Level, b.String(), task, ExecutionMode, h.version))
	return nil
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	v := a.Value.Resolve() // keys redact themselves through LogValue
	if a.Key == "" && v.Kind() != slog.KindGroup {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			appendAttr(b, key, g)
		}
		return
	}
	b.WriteString(" " + key + "=" + v.String())
}

// WithAttrs returns a handler that adds as to every event.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		appendAttr(&b, h.group, a)
		if a.Key == "component" && n.task == "" {
			n.task = a.Value.Resolve().String()
		}
	}
	n.attrs = b.String()
	return &n
}

// WithGroup returns a handler that qualifies later attributes with name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	if n.group != "" {
		n.group += "."
	}
	n.group += name
	return &n
}
