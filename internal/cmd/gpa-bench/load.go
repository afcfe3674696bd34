package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// loadSpec is one measurement the load generator runs. It travels as JSON
// on the command line of the generator process, so that the generator can
// run in a cgroup of its own while the harness stays outside it.
type loadSpec struct {
	// Mode is "http" (one GET after another per client) or "connect"
	// (connect and reset, no data).
	Mode string `json:"mode"`
	// Addr is the host:port dialled.
	Addr string `json:"addr"`
	// Host and Path make up the request line and Host field.
	Host string `json:"host,omitempty"`
	Path string `json:"path,omitempty"`
	// Clients is the number of concurrent clients.
	Clients int `json:"clients"`
	// NewConn makes every request use a connection of its own.
	NewConn bool `json:"newConn,omitempty"`
	// Duration and Count bound the run: it stops at whichever comes first.
	// At least one must be set.
	Duration time.Duration `json:"duration,omitempty"`
	Count    int64         `json:"count,omitempty"`
	// Warmup requests are sent per client before measuring.
	Warmup int `json:"warmup,omitempty"`
}

// loadResult is what the generator prints on stdout.
type loadResult struct {
	Requests  int64         `json:"requests"`
	Errors    int64         `json:"errors"`
	FirstErr  string        `json:"firstErr,omitempty"`
	NonOK     int64         `json:"nonOK"`
	Elapsed   time.Duration `json:"elapsed"`
	Latencies *histogram    `json:"latencies"`
}

// Rate returns completed operations per second.
func (r *loadResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

var errBadSpec = errors.New("gpa-bench: invalid load spec")

func (s *loadSpec) validate() error {
	switch {
	case s.Mode != "http" && s.Mode != "connect":
		return fmt.Errorf("%w: mode %q", errBadSpec, s.Mode)
	case s.Clients < 1 || s.Clients > 1024:
		return fmt.Errorf("%w: clients %d not in 1..1024", errBadSpec, s.Clients)
	case s.Duration <= 0 && s.Count <= 0:
		return fmt.Errorf("%w: neither duration nor count bounds the run", errBadSpec)
	case s.Duration > 10*time.Minute:
		return fmt.Errorf("%w: duration %v over 10 minutes", errBadSpec, s.Duration)
	}
	if _, _, err := net.SplitHostPort(s.Addr); err != nil {
		return fmt.Errorf("%w: addr: %v", errBadSpec, err)
	}
	return nil
}

// runLoad runs spec and returns the merged result. Every client stops on
// its own when the count or the duration is used up, or ctx ends.
func runLoad(ctx context.Context, spec *loadSpec) (*loadResult, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	req := []byte("GET " + spec.Path + " HTTP/1.1\r\nHost: " + spec.Host + "\r\nMetadata: true\r\nUser-Agent: gpa-bench\r\n\r\n")
	for w := 0; w < spec.Warmup; w++ {
		var wg sync.WaitGroup
		for c := 0; c < spec.Clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := &httpClient{addr: spec.Addr, req: req, newConn: true}
				cl.do()
				cl.close()
			}()
		}
		wg.Wait()
	}
	if spec.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, spec.Duration)
		defer cancel()
	}
	var (
		issued atomic.Int64
		wg     sync.WaitGroup
		mu     sync.Mutex
		res    = &loadResult{Latencies: newHistogram()}
	)
	start := time.Now()
	for c := 0; c < spec.Clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := newHistogram()
			var n, errs, nonOK int64
			var firstErr error
			cl := &httpClient{addr: spec.Addr, req: req, newConn: spec.NewConn}
			defer cl.close()
			for ctx.Err() == nil {
				if spec.Count > 0 && issued.Add(1) > spec.Count {
					break
				}
				t0 := time.Now()
				var code int
				var err error
				if spec.Mode == "connect" {
					err = connectOnce(spec.Addr)
					code = 200
				} else {
					code, err = cl.do()
				}
				d := time.Since(t0)
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				if code != 200 {
					nonOK++
				}
				n++
				h.add(d)
			}
			mu.Lock()
			res.Requests += n
			res.Errors += errs
			res.NonOK += nonOK
			if firstErr != nil && res.FirstErr == "" {
				res.FirstErr = firstErr.Error()
			}
			res.Latencies.merge(h)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res, nil
}

// connectOnce connects and resets, so no TIME_WAIT socket piles up and the
// loop measures connect() and not port exhaustion.
func connectOnce(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	c.(*net.TCPConn).SetLinger(0)
	return c.Close()
}

// httpClient is a minimal HTTP/1.1 client: the same bytes for every request
// and a response reader that only finds the status and the body's end. It
// keeps the generator's own CPU cost low and identical for every target.
type httpClient struct {
	addr    string
	req     []byte
	newConn bool
	conn    net.Conn
	br      *bufio.Reader
}

func (c *httpClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// errMalformed is a response the client cannot parse.
var errMalformed = errors.New("malformed response")

func (c *httpClient) do() (int, error) {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			return 0, err
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 16<<10)
		} else {
			c.br.Reset(conn)
		}
	}
	code, keep, err := c.roundTrip()
	if err != nil || !keep || c.newConn {
		c.close()
	}
	return code, err
}

func (c *httpClient) roundTrip() (code int, keep bool, err error) {
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, false, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, errMalformed
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, errMalformed
	}
	length := int64(-1)
	keep = line[7] == '1'
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return code, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return code, false, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return code, false, errMalformed
			}
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return code, false, fmt.Errorf("%w: chunked body not supported", errMalformed)
		}
	}
	if length < 0 {
		// Body ends with the connection.
		_, err = io.Copy(io.Discard, c.br)
		return code, false, err
	}
	if _, err := c.br.Discard(int(length)); err != nil {
		return code, false, err
	}
	return code, keep, nil
}

// runLoadCommand is the hidden subcommand the harness starts as its load
// generator: the spec in argv, the result as JSON on stdout.
func runLoadCommand(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: want one JSON argument", errBadSpec)
	}
	var spec loadSpec
	if err := json.Unmarshal([]byte(args[0]), &spec); err != nil {
		return fmt.Errorf("%w: %v", errBadSpec, err)
	}
	// Many clients with a new connection each need more than the default
	// 1024 descriptors.
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	res, err := runLoad(ctx, &spec)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}
