package agenttest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// callerSpec is what a caller subprocess reads on stdin.
type callerSpec struct {
	// Op is "raw", "get", "loop" or "flood".
	Op string
	// Addr is where raw and flood connect, host:port.
	Addr string
	// Requests are the raw request heads (and bodies) raw sends, each on
	// a connection of its own.
	Requests []string
	// URL and Header are what get and loop ask for.
	URL    string
	Header map[string]string
	// Count is how many connects flood makes, or the most requests loop
	// makes; Interval spaces loop's requests.
	Count    int
	Interval time.Duration
}

// Result is what one request got.
type Result struct {
	// Status is the HTTP status, 0 when there was no response.
	Status int
	// Header is the response header.
	Header http.Header `json:",omitempty"`
	// BodySHA256 is the hex SHA-256 of the response body.
	BodySHA256 string `json:",omitempty"`
	// Body is the start of the response body, at most 64 KiB.
	Body []byte `json:",omitempty"`
	// Err says why there was no response (refused, reset, timeout).
	Err string `json:",omitempty"`
	// Start is when the request was sent.
	Start time.Time
}

// OK reports a 2xx response.
func (r Result) OK() bool { return r.Status >= 200 && r.Status < 300 }

// String renders the status, or the error when there was no response.
func (r Result) String() string {
	if r.Err != "" {
		return "error: " + r.Err
	}
	return fmt.Sprintf("%d", r.Status)
}

// runCaller is the whole life of a caller subprocess: one spec in, one
// JSON array of results out. It returns the exit code.
func runCaller(in io.Reader, out io.Writer) int {
	var spec callerSpec
	if err := json.NewDecoder(in).Decode(&spec); err != nil {
		fmt.Fprintln(out, "caller: bad spec:", err)
		return 2
	}
	var res []Result
	switch spec.Op {
	case "raw":
		for _, r := range spec.Requests {
			res = append(res, rawRequest(spec.Addr, r))
		}
	case "get":
		res = append(res, get(spec.URL, spec.Header))
	case "loop":
		for i := 0; i < spec.Count; i++ {
			res = append(res, get(spec.URL, spec.Header))
			time.Sleep(spec.Interval)
		}
	case "flood":
		n, err := flood(spec.Addr, spec.Count)
		r := Result{Status: n, Start: time.Now()}
		if err != nil {
			r.Err = err.Error()
		}
		res = append(res, r)
	default:
		fmt.Fprintln(out, "caller: unknown op", spec.Op)
		return 2
	}
	if err := json.NewEncoder(out).Encode(res); err != nil {
		return 1
	}
	return 0
}

func rawRequest(addr, req string) Result {
	r := Result{Start: time.Now()}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		r.Err = err.Error()
		return r
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	return fill(r, resp)
}

func get(url string, header map[string]string) Result {
	r := Result{Start: time.Now()}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	// No proxy from the environment and no keep-alive: every request is a
	// connect() of its own, so every one goes through the redirect.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	return fill(r, resp)
}

func fill(r Result, resp *http.Response) Result {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		r.Err = "body: " + err.Error()
	}
	sum := sha256.Sum256(b)
	r.Status, r.Header, r.BodySHA256, r.Body = resp.StatusCode, resp.Header, hex.EncodeToString(sum[:]), b[:min(len(b), 64<<10)]
	return r
}

// flood starts n non-blocking connects to addr and closes each socket at
// once: every connect() leaves a caller record in the eBPF maps for a
// connection the proxy may never accept. It returns how many it started.
func flood(addr string, n int) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return 0, fmt.Errorf("flood needs an IPv4 address:port, not %q", addr)
	}
	sa := &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	started := 0
	for i := 0; i < n; i++ {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return started, err
		}
		err = syscall.Connect(fd, sa)
		syscall.Close(fd)
		if err != nil && err != syscall.EINPROGRESS {
			return started, fmt.Errorf("connect %d: %w", i, err)
		}
		started++
	}
	return started, nil
}
