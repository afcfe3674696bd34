package logfile

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
)

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

// Default rotation limits of the connection log (docs/protocol.md §9.1).
const (
	DefaultMaxBytes = 10 << 20
	DefaultMaxFiles = 5
)

// Open opens (creating, mode 0640) the log at path. Zero limits
// take the defaults.
func Open(path string, maxBytes int64, maxFiles int) (*RotatingFile, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
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
			return fmt.Errorf("logfile: open log %s: a symlink that cannot be removed: %w", rf.path, rerr)
		}
		f, err = os.OpenFile(rf.path, flags|os.O_EXCL, logFileMode)
	}
	if err != nil {
		return fmt.Errorf("logfile: open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("logfile: stat log: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("logfile: open log %s: not a regular file (%v)", rf.path, st.Mode().Type())
	}
	if st.Mode().Perm()&^logFileMode != 0 {
		if err := f.Chmod(logFileMode); err != nil {
			f.Close()
			return fmt.Errorf("logfile: restrict log %s to %v: %w", rf.path, fs.FileMode(logFileMode), err)
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
			return fmt.Errorf("logfile: rotate connection log: %w (and reopen: %v)", err, oerr)
		}
		return fmt.Errorf("logfile: rotate connection log: %w", err)
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
