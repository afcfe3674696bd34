package proxy

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

// mapLookup is an AuditLookup over a map, one-shot like the eBPF audit map.
type mapLookup struct {
	mu sync.Mutex
	m  map[uint16]msp.ConnectRecord
}

func (l *mapLookup) LookupAndDelete(client netip.AddrPort) (msp.ConnectRecord, error) {
	port := client.Port()
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.m[port]
	if !ok {
		return msp.ConnectRecord{}, errors.New("no audit entry")
	}
	delete(l.m, port)
	return r, nil
}

// fakeConn is a net.Conn with a given remote address.
type fakeConn struct {
	net.Conn
	remote net.Addr
}

func (c fakeConn) RemoteAddr() net.Addr { return c.remote }

func connFrom(port uint16) net.Conn {
	return fakeConn{remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))}
}

// TestProcResolverFakeProc resolves against a fake /proc tree.
func TestProcResolverFakeProc(t *testing.T) {
	proc := t.TempDir()
	mk := func(pid int, exe string, cmdline string) {
		d := filepath.Join(proc, strconv.Itoa(pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if exe != "" {
			if err := os.Symlink(exe, filepath.Join(d, "exe")); err != nil {
				t.Fatal(err)
			}
		}
		if cmdline != "" {
			if err := os.WriteFile(filepath.Join(d, "cmdline"), []byte(cmdline), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk(100, "/usr/bin/curl", "curl\x00-H\x00Metadata:true\x00\x00--password\x00hunter2\x00http://169.254.169.254/\x00")
	mk(101, "", "")
	lookups := 0
	lk := &mapLookup{m: map[uint16]msp.ConnectRecord{
		5000: {PID: 100, UID: 1000, OriginalDst: msp.IMDSAddr},
		5001: {PID: 101, UID: 0, OriginalDst: msp.WireServerAddr},
		5002: {PID: 102, UID: 4242, OriginalDst: msp.HostGAAddr},
	}}
	r := NewProcResolver(lk, &ProcResolverOptions{ProcRoot: proc, LookupUser: func(uid uint32) (string, []string, error) {
		lookups++
		switch uid {
		case 0:
			return "root", []string{"root"}, nil
		case 1000:
			return "alice", []string{"alice", "docker"}, nil
		}
		return "", nil, errors.New("unknown uid")
	}})
	for _, tc := range []struct {
		port uint16
		want *Caller
	}{
		{5000, &Caller{OriginalDst: msp.IMDSAddr, Claims: msp.Claims{UserID: 1000, UserName: "alice", UserGroups: []string{"alice", "docker"},
			ProcessID: 100, ProcessName: "curl", ProcessFullPath: "/usr/bin/curl", ProcessCmdLine: "curl -H Metadata:true --password",
			ClientIP: "127.0.0.1", ClientPort: 5000}}},
		{5001, &Caller{OriginalDst: msp.WireServerAddr, Claims: msp.Claims{UserID: 0, UserName: "root", UserGroups: []string{"root"},
			ProcessID: 101, ProcessCmdLine: "undefined", RunAsElevated: true, ClientIP: "127.0.0.1", ClientPort: 5001}}},
		{5002, &Caller{OriginalDst: msp.HostGAAddr, Claims: msp.Claims{UserID: 4242, UserName: "undefined", UserGroups: []string{},
			ProcessID: 102, ProcessCmdLine: "undefined", ClientIP: "127.0.0.1", ClientPort: 5002}}},
	} {
		got, err := r.Resolve(context.Background(), connFrom(tc.port))
		if err != nil {
			t.Fatalf("port %d: %v", tc.port, err)
		}
		if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
			t.Errorf("port %d (-want +got):\n%s", tc.port, diff)
		}
	}
	// One-shot: the second lookup of a port fails with ErrNoCaller.
	if _, err := r.Resolve(context.Background(), connFrom(5000)); !errors.Is(err, ErrNoCaller) {
		t.Errorf("second resolve: %v, want ErrNoCaller", err)
	}
	// Cached users are not looked up again.
	lk.m[5003] = msp.ConnectRecord{PID: 100, UID: 1000, OriginalDst: msp.IMDSAddr}
	before := lookups
	if _, err := r.Resolve(context.Background(), connFrom(5003)); err != nil || lookups != before {
		t.Errorf("cached user looked up again (%d -> %d), %v", before, lookups, err)
	}
}

// TestUserCacheBounded: the cache never holds more than its size.
func TestUserCacheBounded(t *testing.T) {
	c := &userCache{max: 4, ttl: 1 << 62, m: map[uint32]userEntry{}, lookup: func(uid uint32) (string, []string, error) {
		return "u" + strconv.Itoa(int(uid)), nil, nil
	}}
	for uid := range uint32(100) {
		if name, _ := c.get(uid); name != "u"+strconv.Itoa(int(uid)) {
			t.Fatalf("uid %d: %q", uid, name)
		}
	}
	if n := c.len(); n != 4 {
		t.Errorf("cache holds %d entries, want 4", n)
	}
}

// TestProcResolverSelf resolves this test process through the real /proc
// and user database.
func TestProcResolverSelf(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Skipf("no user database: %v", err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	lk := &mapLookup{m: map[uint16]msp.ConnectRecord{7000: {PID: uint32(os.Getpid()), UID: uint32(uid), OriginalDst: msp.IMDSAddr}}}
	got, err := NewProcResolver(lk, nil).Resolve(context.Background(), connFrom(7000))
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if got.Claims.ProcessFullPath != exe || got.Claims.ProcessName != filepath.Base(exe) || got.Claims.UserName != me.Username ||
		got.Claims.RunAsElevated != (uid == 0) || len(got.Claims.UserGroups) == 0 {
		t.Errorf("claims %+v, exe %s, user %s", got.Claims, exe, me.Username)
	}
}

// TestRedactCmdline keeps arguments and removes what looks like a secret.
func TestRedactCmdline(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"curl", "-H", "Metadata:true", "http://169.254.169.254/metadata/instance"}, "curl -H Metadata:true http://169.254.169.254/metadata/instance"},
		{[]string{"app", "--password", "hunter2"}, "app --password [REDACTED]"},
		{[]string{"app", "--password=hunter2", "x"}, "app --password=[REDACTED] x"},
		{[]string{"app", "client_secret=abc", "token:xyz"}, "app client_secret=[REDACTED] token:[REDACTED]"},
		{[]string{"curl", "-H", "Authorization: Bearer abc.def"}, "curl -H Authorization: [REDACTED] [REDACTED]"},
		{[]string{"curl", "https://acct.blob.core.windows.net/c/b?sv=2020&sig=AbC%2Bd"}, "curl https://acct.blob.core.windows.net/c/b?sv=2020&sig=[REDACTED]"},
		{[]string{"git", "clone", "https://user:s3cret@example.com/r.git"}, "git clone https://user:[REDACTED]@example.com/r.git"},
		{[]string{"x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_part"}, "x [REDACTED]"},
		{[]string{"ls", "-key-file-path", "/etc/k"}, "ls -key-file-path /etc/k"},
	} {
		if got := RedactCmdline(tc.args); got != tc.want {
			t.Errorf("RedactCmdline(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

// benchCmdline is a caller whose arguments are long and secret-free, the
// worst case for the redaction patterns (gpa-bench's load generator).
var benchCmdline = []byte("/usr/local/bin/client\x00load\x00" + `{"mode":"http","addr":"169.254.169.254:80","host":"169.254.169.254","path":"/metadata/instance?api-version=2021-02-01","clients":8,"newConn":true,"duration":3000000000,"warmup":1}` + "\x00")

func BenchmarkResolveCmdline(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "cmdline")
	if err := os.WriteFile(path, benchCmdline, 0o644); err != nil {
		b.Fatal(err)
	}
	p := NewProcResolver(nil, nil)
	b.ReportAllocs()
	for b.Loop() {
		p.readCmdline(path)
	}
}

// TestCmdlineCache: a cached answer is the redacted one, on the first
// call and on every hit, and the cache stays within its bound.
func TestCmdlineCache(t *testing.T) {
	c := &cmdlineCache{max: 2, m: make(map[[32]byte]string)}
	tests := []struct {
		raw  string
		want string
	}{
		{"az\x00login\x00--password\x00hunter2\x00", "az login --password [REDACTED]"},
		{"curl\x00https://u:hunter2@example.com/\x00", "curl https://u:[REDACTED]@example.com/"},
		{"python3\x00app.py\x00", "python3 app.py"},
		{"a\x00b\x00c\x00d\x00token=hunter2\x00", "a b c d"},
	}
	for round := 0; round < 3; round++ {
		for _, tt := range tests {
			if got := c.redact([]byte(tt.raw)); got != tt.want {
				t.Errorf("round %d: redact(%q) = %q, want %q", round, tt.raw, got, tt.want)
			}
			if len(c.m) > c.max {
				t.Fatalf("cache holds %d entries, bound %d", len(c.m), c.max)
			}
		}
	}
	for _, v := range c.m {
		if strings.Contains(v, "hunter2") {
			t.Errorf("cache holds a secret: %q", v)
		}
	}
}

// TestReadSmallFile: whole files up to the bound, the bound for longer
// ones (across the first buffer's growth), and a typed error otherwise.
func TestReadSmallFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name      string
		size, max int
		want      int
	}{
		{"empty", 0, 100, 0},
		{"small", 37, 16 << 10, 37},
		{"grows past the first buffer", 10000, 16 << 10, 10000},
		{"cut at the bound", 20000, 16 << 10, 16 << 10},
		{"bound below the first buffer", 5000, 100, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.size)
			for i := range data {
				data[i] = byte('a' + i%26)
			}
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readSmallFile(path, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[:tc.want]) {
				t.Errorf("read %d bytes, want the first %d of %d", len(got), tc.want, tc.size)
			}
		})
	}
	_, err := readSmallFile(filepath.Join(dir, "missing"), 10)
	var pe *os.PathError
	if !errors.As(err, &pe) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want a *os.PathError for ENOENT", err)
	}
}
