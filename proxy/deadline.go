package proxy

import (
	"net"
	"time"
)

// Deadlines are moved lazily. Moving a connection's deadline updates a
// runtime timer under a lock, and the proxy moved one five or six times
// per request (idle wait, header, client write, upstream write and read,
// and the clear when a connection went back to the pool): a few percent of
// its CPU under keep-alive load, for timeouts measured in seconds. A
// deadline is now armed a slack later than asked and left alone while it
// still falls within [now+timeout, now+timeout+slack], so a busy
// connection moves it about once per slack rather than per request, and a
// timeout fires at most one slack late, never early.

// deadlineSlack is the lateness allowed on a timeout.
func deadlineSlack(timeout time.Duration) time.Duration { return timeout / 8 }

// armed is the deadline last set on one direction of a connection.
type armed struct{ at time.Time }

// next returns the deadline to set for timeout from now, or false when the
// one armed already fits.
func (a *armed) next(now time.Time, timeout time.Duration) (time.Time, bool) {
	want := now.Add(timeout)
	slack := deadlineSlack(timeout)
	if !a.at.IsZero() && !a.at.Before(want) && a.at.Sub(want) <= slack {
		return time.Time{}, false
	}
	a.at = want.Add(slack)
	return a.at, true
}

// deadlineReader reads from conn with the read deadline moved lazily.
// With timeout set, every read must make progress within it, so a slow but
// progressing body is fine and a stalled one times out.
type deadlineReader struct {
	conn    net.Conn
	timeout time.Duration
	armed   armed
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if d.timeout > 0 {
		d.extend(time.Now(), d.timeout)
	}
	return d.conn.Read(p)
}

// extend makes the next reads fail once timeout has passed from now
// (within the slack).
func (d *deadlineReader) extend(now time.Time, timeout time.Duration) {
	if at, ok := d.armed.next(now, timeout); ok {
		_ = d.conn.SetReadDeadline(at)
	}
}

// clear removes the read deadline.
func (d *deadlineReader) clear() {
	d.armed.at = time.Time{}
	_ = d.conn.SetReadDeadline(time.Time{})
}

// deadlineWriter does the same for writes.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
	armed   armed
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if d.timeout > 0 {
		if at, ok := d.armed.next(time.Now(), d.timeout); ok {
			_ = d.conn.SetWriteDeadline(at)
		}
	}
	return d.conn.Write(p)
}
