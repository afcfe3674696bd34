package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/status"
)

// Record is the audit record of one request: the ProxySummary fields of
// gpa-protocol §9.2 plus the decision. It never holds key material; the
// command line is redacted by the resolver before it gets here.
type Record struct {
	// Time is when the request head was read. Method and URL are the
	// request line's; ClientIP/ClientPort the accepted socket's peer; IP and
	// Port the original destination ("None" and 0 when the caller is
	// unknown); the user and process fields come from the caller's claims
	// ("empty" when unknown).
	Time            time.Time `json:"time"`
	Method          string    `json:"method"`
	URL             string    `json:"url"`
	ClientIP        string    `json:"clientIp"`
	ClientPort      uint16    `json:"clientPort"`
	IP              string    `json:"ip"`
	Port            uint16    `json:"port"`
	UserID          uint32    `json:"userId"`
	UserName        string    `json:"userName"`
	UserGroups      []string  `json:"userGroups"`
	ProcessFullPath string    `json:"processFullPath"`
	ProcessCmdLine  string    `json:"processCmdLine"`
	RunAsElevated   bool      `json:"runAsElevated"`
	// ResponseStatus is the status the client got, as "403 Forbidden".
	ResponseStatus string `json:"responseStatus"`
	// StatusCode is the numeric form of ResponseStatus.
	StatusCode int `json:"statusCode"`
	// ElapsedTime is the time the proxy spent on the request in
	// milliseconds, as upstream reports it; ElapsedMicros is finer.
	ElapsedTime   int64 `json:"elapsedTime"`
	ElapsedMicros int64 `json:"elapsedMicros"`
	// Decision is "allow", "audit" (denied by the rules, forwarded because
	// the endpoint is in Audit mode), "deny", or "" when the request never
	// reached authorization (malformed, local endpoint, unknown caller).
	Decision string `json:"decision"`
	// Rule is the rule-set id that decided, Reason why.
	Rule      string `json:"rule"`
	Reason    string `json:"reason,omitempty"`
	Privilege string `json:"privilege,omitempty"`
	Identity  string `json:"identity,omitempty"`
	Endpoint  string `json:"endpoint"`
	Mode      string `json:"mode,omitempty"`
	// Epoch is the latch snapshot the request was decided and signed under;
	// Signed says whether it carried a signature upstream.
	Epoch  uint64 `json:"epoch"`
	Signed bool   `json:"signed"`
	// Retried says the host refused the first signature (401) and the
	// request was signed again under a newer key and sent once more.
	Retried bool `json:"retried,omitempty"`
	// Forwarded says whether the request reached the host endpoint.
	Forwarded    bool   `json:"forwarded"`
	ErrorDetails string `json:"errorDetails,omitempty"`
}

// FailedAuthorization reports whether the record belongs in the
// failed-authorization summary: denied or audited by the rules, or from a
// connection whose caller is unknown.
func (r *Record) FailedAuthorization() bool {
	return r.Decision == "deny" || r.Decision == "audit" || r.StatusCode == 421
}

// SummarySink receives every audit record, for aggregation into the
// status.json summaries. Add is called synchronously on the request path, so
// it must be quick, must not keep rec, and must be safe for concurrent use.
type SummarySink interface {
	Add(rec *Record)
}

// RotatingFile is an append-only log file that is archived when it would
// grow past MaxBytes, keeping at most MaxFiles files (the live one
// included), as upstream's connection log does: archives are named
// "<file>.<YYYY-MM-DDTHH.MM.SS.mmm>-<unix-nanos>.log". It is safe for
// concurrent use; each Write lands whole in one file.
type RotatingFile struct {
	path     string
	maxBytes int64
	maxFiles int

	mu   sync.Mutex
	f    *os.File
	size int64 // bytes in the file, buffered ones included

	// buffering, when Buffer was called
	buf     []byte
	stop    chan struct{}
	stopped chan struct{}
}

// bufferLimit is how much Buffer lets gather before it writes anyway.
const bufferLimit = 64 << 10

// Default rotation limits of the connection log (gpa-protocol §9.1).
const (
	DefaultLogMaxBytes = 10 << 20
	DefaultLogMaxFiles = 5
)

// OpenRotatingFile opens (creating, mode 0640) the log at path. Zero limits
// take the defaults.
func OpenRotatingFile(path string, maxBytes int64, maxFiles int) (*RotatingFile, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultLogMaxBytes
	}
	if maxFiles <= 0 {
		maxFiles = DefaultLogMaxFiles
	}
	rf := &RotatingFile{path: path, maxBytes: maxBytes, maxFiles: maxFiles}
	if err := rf.open(); err != nil {
		return nil, err
	}
	return rf, nil
}

// logFileMode is the most a log file may allow: others could forge lines in
// a file they can write.
const logFileMode = 0o640

func (rf *RotatingFile) open() error {
	// The agent runs as root: a symlink planted at the log's path would
	// have it append to whatever file the link names (§10.1 E2). The link
	// is replaced by a new file instead; O_EXCL makes a link planted again
	// in between an error, not a write through it.
	flags := os.O_WRONLY | os.O_APPEND | os.O_CREATE | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	f, err := os.OpenFile(rf.path, flags, logFileMode)
	if errors.Is(err, syscall.ELOOP) {
		if rerr := os.Remove(rf.path); rerr != nil {
			return fmt.Errorf("proxy: open log %s: a symlink that cannot be removed: %w", rf.path, rerr)
		}
		f, err = os.OpenFile(rf.path, flags|os.O_EXCL, logFileMode)
	}
	if err != nil {
		return fmt.Errorf("proxy: open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("proxy: stat log: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("proxy: open log %s: not a regular file (%v)", rf.path, st.Mode().Type())
	}
	if st.Mode().Perm()&^logFileMode != 0 {
		if err := f.Chmod(logFileMode); err != nil {
			f.Close()
			return fmt.Errorf("proxy: restrict log %s to %v: %w", rf.path, fs.FileMode(logFileMode), err)
		}
	}
	rf.f, rf.size = f, st.Size()
	return nil
}

// Write appends p, rotating first if p would take the file past MaxBytes.
// After Buffer, p is copied into the buffer and written with the next batch.
func (rf *RotatingFile) Write(p []byte) (int, error) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.f == nil {
		return 0, os.ErrClosed
	}
	if rf.size > 0 && rf.size+int64(len(p)) > rf.maxBytes {
		if err := rf.flushLocked(); err != nil {
			return 0, err
		}
		if err := rf.rotate(); err != nil {
			return 0, err
		}
	}
	if rf.stop == nil {
		n, err := rf.f.Write(p)
		rf.size += int64(n)
		return n, err
	}
	rf.buf = append(rf.buf, p...)
	rf.size += int64(len(p))
	if len(rf.buf) >= bufferLimit {
		if err := rf.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Buffer makes Write gather lines in memory and write them together every
// interval, or sooner when 64 KiB gather, and on Close: one write system
// call per batch instead of one per request, at the price of losing at
// most interval's worth of lines if the process dies. Upstream buffers its
// connection log per connection for the same reason. Call it once, before
// concurrent use.
func (rf *RotatingFile) Buffer(interval time.Duration) {
	rf.stop, rf.stopped = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(rf.stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-rf.stop:
				return
			case <-t.C:
				rf.Flush()
			}
		}
	}()
}

// Flush writes what Buffer gathered.
func (rf *RotatingFile) Flush() error {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.flushLocked()
}

func (rf *RotatingFile) flushLocked() error {
	if len(rf.buf) == 0 || rf.f == nil {
		return nil
	}
	_, err := rf.f.Write(rf.buf)
	rf.buf = rf.buf[:0]
	return err
}

func (rf *RotatingFile) rotate() error {
	rf.f.Close()
	rf.f = nil
	now := time.Now().UTC()
	archive := fmt.Sprintf("%s.%s-%d.log", rf.path, now.Format("2006-01-02T15.04.05.000"), now.UnixNano())
	if err := os.Rename(rf.path, archive); err != nil {
		// Keep logging to the live file rather than stop for good.
		if oerr := rf.open(); oerr != nil {
			return fmt.Errorf("proxy: rotate connection log: %w (and reopen: %v)", err, oerr)
		}
		return fmt.Errorf("proxy: rotate connection log: %w", err)
	}
	rf.prune()
	return rf.open()
}

// prune deletes the oldest archives so that, with the live file, at most
// maxFiles remain. Archive names sort by time because of their timestamp.
func (rf *RotatingFile) prune() {
	dir, base := filepath.Split(rf.path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var archives []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, base+".") && strings.HasSuffix(n, ".log") && n != base {
			archives = append(archives, n)
		}
	}
	slices.Sort(archives)
	for len(archives) > rf.maxFiles-1 {
		os.Remove(filepath.Join(dir, archives[0]))
		archives = archives[1:]
	}
}

// Close writes what is buffered and closes the file.
func (rf *RotatingFile) Close() error {
	if rf.stop != nil {
		select {
		case <-rf.stop:
		default:
			close(rf.stop)
			<-rf.stopped
		}
	}
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.f == nil {
		return nil
	}
	ferr := rf.flushLocked()
	err := rf.f.Close()
	rf.f = nil
	if ferr != nil {
		return ferr
	}
	return err
}

// RegistrySummaries is the SummarySink the agent uses: it counts every
// request (proxyConnectionsCount) and feeds the two connection summaries
// of status.json, whose 15-minute buckets the status package keeps.
type RegistrySummaries struct {
	Registry *status.Registry
}

// Add implements SummarySink.
func (s RegistrySummaries) Add(r *Record) {
	s.Registry.CountRequest()
	c := status.Connection{UserName: r.UserName, UserGroups: r.UserGroups, ClientIP: r.ClientIP, IP: r.IP, Port: r.Port,
		ProcessFullPath: r.ProcessFullPath, ProcessCmdLine: r.ProcessCmdLine, ResponseStatus: r.ResponseStatus}
	if c.IP == "" {
		c.IP = "None"
	}
	s.Registry.Connections().Record(r.Time, c)
	if r.FailedAuthorization() {
		s.Registry.FailedAuthentications().Record(r.Time, c)
	}
}
