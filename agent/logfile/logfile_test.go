package logfile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// line is a log line, written as one JSON object.
type line struct {
	Method, URL, UserName, ResponseStatus string
	ElapsedTime                           int64
}

// writeRecord writes rec as one JSON line.
func writeRecord(w *RotatingFile, rec *line) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// TestRotatingFile: the log rotates before a write would take it past the
// limit, keeps at most MaxFiles files, and never splits a line; buffered or
// not.
func TestRotatingFile(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprint("buffered=", buffered), func(t *testing.T) { testRotatingFile(t, buffered) })
	}
}

func testRotatingFile(t *testing.T, buffered bool) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ProxyAgent.Connection.log")
	rf, err := Open(path, 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	if buffered {
		rf.Buffer(time.Millisecond)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				rec := &line{Method: "GET", URL: "/x", UserName: "u", ResponseStatus: "200 OK", ElapsedTime: int64(w*100 + i)}
				if err := writeRecord(rf, rec); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := rf.Close(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Errorf("%d files, want 3", len(ents))
	}
	for _, e := range ents {
		if e.Name() != "ProxyAgent.Connection.log" && !strings.HasPrefix(e.Name(), "ProxyAgent.Connection.log.") {
			t.Errorf("unexpected file %s", e.Name())
		}
		st, _ := e.Info()
		if st.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the limit", e.Name(), st.Size())
		}
		if st.Mode().Perm() != 0o640 {
			t.Errorf("%s mode %v, want 0640", e.Name(), st.Mode().Perm())
		}
		f, _ := os.Open(filepath.Join(dir, e.Name()))
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r line
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Errorf("%s: torn line %q", e.Name(), sc.Text())
			}
		}
		f.Close()
	}
	if _, err := rf.Write([]byte("x")); err == nil {
		t.Errorf("Write after Close succeeded")
	}
}

// Buffered lines reach the file on Flush, on the timer and on Close.
// TestRotatingFileNoFollow: a symlink planted at the log's path (the agent
// runs as root) is replaced by a new file, never written through; one
// planted again before a rotation is moved aside with the log, and the
// live file is new; a log others could write is narrowed to 0640.
func TestRotatingFileNoFollow(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ProxyAgent.Connection.log")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	rf, err := Open(path, 64, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	line := []byte(strings.Repeat("x", 40) + "\n")
	if _, err := rf.Write(line); err != nil {
		t.Fatal(err)
	}
	// Plant it again, then make the next write rotate and reopen.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if _, err := rf.Write(line); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&^0o640 != 0 {
		t.Errorf("log is %v, want a regular file, at most 0640", fi.Mode())
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, line) {
		t.Errorf("live log holds %q, want the second line", b)
	}

	wide := filepath.Join(dir, "wide.log")
	if err := os.WriteFile(wide, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(wide, 0o666); err != nil {
		t.Fatal(err)
	}
	rf2, err := Open(wide, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rf2.Close()
	if fi, err := os.Stat(wide); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("a 0666 log after open: %v %v, want 0640", fi.Mode(), err)
	}
}

func TestRotatingFileBuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	rf, err := Open(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rf.Buffer(time.Hour)
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	rf.Write([]byte("one\n"))
	if n := size(); n != 0 {
		t.Fatalf("%d bytes written before any flush", n)
	}
	if err := rf.Flush(); err != nil || size() != 4 {
		t.Fatalf("after Flush: %d bytes, %v", size(), err)
	}
	rf.Write(bytes.Repeat([]byte("x"), bufferLimit)) // reaching the limit writes at once
	if n := size(); n != 4+bufferLimit {
		t.Fatalf("after a full buffer: %d bytes", n)
	}
	rf.Write([]byte("two\n"))
	if err := rf.Close(); err != nil || size() != 8+bufferLimit {
		t.Fatalf("after Close: %d bytes, %v", size(), err)
	}
	if err := rf.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// The timer flushes without anyone asking.
	path2 := filepath.Join(t.TempDir(), "d.log")
	rf2, err := Open(path2, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rf2.Close()
	rf2.Buffer(5 * time.Millisecond)
	rf2.Write([]byte("tick\n"))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(path2); string(b) == "tick\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the timer never flushed")
		}
	}
}
