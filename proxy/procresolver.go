package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// AuditLookup finds and consumes the kernel's record of a redirected
// connection by its client address and port (the accepted connection's
// remote address). Records are one-shot: a second lookup of the same
// client must fail. *ebpf.AuditMap implements it; keying by address as well
// as port means a process that binds another loopback address to a recorded
// port finds nothing.
type AuditLookup interface {
	LookupAndDelete(client netip.AddrPort) (msp.ConnectRecord, error)
}

// ProcResolver is the production CallerResolver: the audit record names the
// process and the original destination; /proc and the user database fill in
// the rest, as upstream does at accept time (docs/protocol.md §4.2).
//
// A process that opens many connections is read from /proc once per
// program image: what /proc gave (exe path, name, redacted command line) is
// cached by the record's (PID, StartTime, ExecID), which a reused pid or an
// exec cannot match. A command line the process rewrites in place without
// exec is not seen again until the entry is evicted. The user's name and
// groups still come from each record's uid (a setuid process keeps its
// image but not its uid).
type ProcResolver struct {
	lookup   AuditLookup
	procRoot string
	fs       procFS
	users    *userCache
	cmdlines *cmdlineCache
	procs    *procCache // nil: disabled
}

// ProcResolverOptions configure NewProcResolver.
type ProcResolverOptions struct {
	// ProcRoot is the proc file system; "/proc" when empty. Tests point it
	// at a fake tree.
	ProcRoot string
	// UserCacheSize bounds the uid -> user cache; 256 when zero.
	UserCacheSize int
	// UserCacheTTL is how long a cached user is trusted; 10 minutes when
	// zero. Upstream never refreshes, so group changes went unseen.
	UserCacheTTL time.Duration
	// LookupUser resolves a uid to a user name and group names; the os/user
	// database when nil.
	LookupUser func(uid uint32) (name string, groups []string, err error)
	// ProcessCacheSize bounds the processes whose /proc answers are kept;
	// 1024 when zero, none (read /proc for every connection) when
	// negative. Only records that carry a start time and exec id
	// (msp.ConnectRecord.Generation) are cached.
	ProcessCacheSize int
}

// NewProcResolver returns a resolver over lookup.
func NewProcResolver(lookup AuditLookup, opts *ProcResolverOptions) *ProcResolver {
	var o ProcResolverOptions
	if opts != nil {
		o = *opts
	}
	setDefault(&o.ProcRoot, "/proc")
	setDefault(&o.UserCacheSize, 256)
	setDefault(&o.UserCacheTTL, 10*time.Minute)
	setDefault(&o.ProcessCacheSize, 1024)
	if o.LookupUser == nil {
		o.LookupUser = lookupOSUser
	}
	p := &ProcResolver{lookup: lookup, procRoot: o.ProcRoot, fs: osProcFS{},
		users:    &userCache{max: o.UserCacheSize, ttl: o.UserCacheTTL, lookup: o.LookupUser, m: make(map[uint32]userEntry)},
		cmdlines: &cmdlineCache{max: cmdlineCacheSize, m: make(map[[sha256.Size]byte]string)}}
	if o.ProcessCacheSize > 0 {
		p.procs = &procCache{max: o.ProcessCacheSize, m: make(map[procKey]procInfo)}
	}
	return p
}

// Resolve implements CallerResolver.
func (p *ProcResolver) Resolve(_ context.Context, conn net.Conn) (*Caller, error) {
	ap := remoteAddrPort(conn)
	rec, err := p.lookup.LookupAndDelete(ap)
	if err != nil {
		if errors.Is(err, ErrNoCaller) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: client port %d: %w", ErrNoCaller, ap.Port(), err)
	}
	if !rec.OriginalDst.IsValid() {
		return nil, fmt.Errorf("%w: client port %d: record has no destination", ErrNoCaller, ap.Port())
	}
	c := &Caller{OriginalDst: rec.OriginalDst}
	cl := &c.Claims
	cl.UserID, cl.ProcessID = rec.UID, rec.PID
	cl.RunAsElevated = rec.UID == 0
	cl.ClientIP, cl.ClientPort = ap.Addr().Unmap().String(), ap.Port()
	info := p.process(rec)
	cl.ProcessFullPath, cl.ProcessName, cl.ProcessCmdLine = info.exe, info.name, info.cmdline
	cl.UserName, cl.UserGroups = p.users.get(rec.UID)
	return c, nil
}

// process returns what /proc says about rec's process, from the cache when
// the record names its generation and it was read before.
func (p *ProcResolver) process(rec msp.ConnectRecord) procInfo {
	// Without a start time and exec id the pid alone could be another
	// process's, or another image's: read /proc every time.
	if p.procs == nil || !rec.Generation() {
		info, _ := p.readProc(rec.PID)
		return info
	}
	key := procKey{pid: rec.PID, start: rec.StartTime, exec: rec.ExecID}
	if info, ok := p.procs.get(key); ok {
		return info
	}
	info, complete := p.readProc(rec.PID)
	if complete {
		p.procs.put(key, info)
	}
	return info
}

// readProc reads a process's exe link and command line. complete is false
// when either could not be read (the process is gone, or not ours to see):
// such an answer is never cached.
func (p *ProcResolver) readProc(pid uint32) (info procInfo, complete bool) {
	dir := filepath.Join(p.procRoot, strconv.FormatUint(uint64(pid), 10))
	complete = true
	if exe, err := p.fs.readlink(filepath.Join(dir, "exe")); err == nil {
		info.exe, info.name = exe, filepath.Base(exe)
	} else {
		complete = false
	}
	info.cmdline = p.readCmdline(filepath.Join(dir, "cmdline"))
	if info.cmdline == cmdlineUnknown {
		complete = false
	}
	return info, complete
}

// cmdlineUnknown is the command line of a process whose cmdline file
// cannot be read, as upstream reports it.
const cmdlineUnknown = "undefined"

// readCmdline returns the first four arguments of a process, joined by
// spaces and redacted, or "undefined" when the file cannot be read.
// Redaction runs regular expressions that cost tens of microseconds on a
// long argument, more than the rest of a request: a client that connects
// again and again gets its redacted command line from the cache.
func (p *ProcResolver) readCmdline(path string) string {
	// Four arguments rarely need more; a bound keeps a hostile process from
	// making the proxy read megabytes per connection.
	b, err := p.fs.readFile(path, 16<<10)
	if err != nil {
		return cmdlineUnknown
	}
	return p.cmdlines.redact(b)
}

// procFS is the part of /proc the resolver reads; tests count the reads.
type procFS interface {
	readlink(path string) (string, error)
	readFile(path string, max int) ([]byte, error)
}

type osProcFS struct{}

func (osProcFS) readlink(path string) (string, error)          { return os.Readlink(path) }
func (osProcFS) readFile(path string, max int) ([]byte, error) { return readSmallFile(path, max) }

// procKey names one program image of one process: a reused pid has
// another start time, an exec another exec id.
type procKey struct {
	pid         uint32
	start, exec uint64
}

// procInfo is what /proc says about a process image.
type procInfo struct {
	exe, name, cmdline string
}

// procCacheEntryMax bounds the bytes one cached process may hold, so a
// full cache stays near a megabyte however long its callers' command lines
// are; a longer answer is read from /proc each time, as without the cache.
const procCacheEntryMax = 1 << 10

// procCache maps process images to what /proc said about them, bounded in
// entries.
type procCache struct {
	max int

	mu sync.Mutex
	m  map[procKey]procInfo
}

func (c *procCache) get(k procKey) (procInfo, bool) {
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	return v, ok
}

func (c *procCache) put(k procKey, v procInfo) {
	if len(v.exe)+len(v.cmdline) > procCacheEntryMax {
		return
	}
	c.mu.Lock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		// Evict one entry, whichever map iteration yields first (a
		// random one): entries of processes that have exited can never
		// be hit again, and a live one evicted costs one /proc read.
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = v
	c.mu.Unlock()
}

func (c *procCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// readSmallFile reads up to max bytes of a /proc file with plain system
// calls: os.Open adds an fstat, and the *os.File an allocation and a
// finalizer, to every connection.
func readSmallFile(path string, max int) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	buf := make([]byte, 0, min(max, 4096))
	for len(buf) < max {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), max-len(buf)))
		}
		n, err := syscall.Read(fd, buf[len(buf):min(cap(buf), max)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	return buf, nil
}

// cmdlineCacheSize bounds the redacted command lines kept.
const cmdlineCacheSize = 256

// cmdlineCache maps the contents of a cmdline file to its redacted form.
// Keys are SHA-256 digests, so the cache never holds a secret the
// redaction removed, and a process cannot choose arguments that collide
// with another's to borrow its command line.
type cmdlineCache struct {
	max int
	mu  sync.Mutex
	m   map[[sha256.Size]byte]string
}

func (c *cmdlineCache) redact(raw []byte) string {
	key := sha256.Sum256(raw)
	c.mu.Lock()
	s, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return s
	}
	s = redactRaw(raw)
	c.mu.Lock()
	if len(c.m) >= c.max {
		// Dropping everything is crude but bounded, and a busy caller is
		// back in the cache on its next connection.
		clear(c.m)
	}
	c.m[key] = s
	c.mu.Unlock()
	return s
}

// redactRaw splits a cmdline file's NUL-separated arguments, keeps the
// first four and redacts them.
func redactRaw(b []byte) string {
	var args []string
	for _, a := range bytes.Split(b, []byte{0}) {
		if len(a) == 0 {
			continue
		}
		args = append(args, strings.ToValidUTF8(string(a), "\uFFFD"))
		if len(args) == 4 {
			break
		}
	}
	return RedactCmdline(args)
}

var (
	// name=value or name:value where the name says secret.
	secretAssign = regexp.MustCompile(`(?i)((?:^|[^a-z0-9])(?:[a-z0-9_-]*(?:password|passwd|pwd|secret|token|apikey|api-key|api_key|access[_-]?key|client[_-]?secret|credential|sig|signature|sas|auth|authorization|bearer|key))\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&;]+)`)
	// an Authorization header passed on the command line
	bearer = regexp.MustCompile(`(?i)\b(bearer|basic|Azure-HMAC-SHA256)\s+\S+`)
	// user:password@ in URLs
	userinfo = regexp.MustCompile(`(://[^/\s:@]*:)[^/\s@]+@`)
	// JSON web tokens
	jwt = regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`)
	// a flag whose next argument is a secret: --password X, -p X
	secretFlag = regexp.MustCompile(`(?i)^-{1,2}[a-z0-9_-]*(password|passwd|secret|token|key|credential|sig|signature)$`)
)

// Redacted replaces every secret the redactor finds.
const Redacted = "[REDACTED]"

// RedactCmdline joins args with spaces, replacing values that look like
// secrets (password=..., --token X, Authorization values, user:pass@ in URLs,
// JWTs) with [REDACTED]. It errs on the side of redacting.
func RedactCmdline(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if i > 0 && secretFlag.MatchString(args[i-1]) {
			out[i] = Redacted
			continue
		}
		a = jwt.ReplaceAllString(a, Redacted)
		a = bearer.ReplaceAllString(a, "${1} "+Redacted)
		a = userinfo.ReplaceAllString(a, "${1}"+Redacted+"@")
		a = secretAssign.ReplaceAllString(a, "${1}"+Redacted)
		out[i] = a
	}
	return strings.Join(out, " ")
}

// userCache maps uids to user names and groups, bounded in size and age.
type userCache struct {
	max    int
	ttl    time.Duration
	lookup func(uint32) (string, []string, error)

	mu sync.Mutex
	m  map[uint32]userEntry
}

type userEntry struct {
	name   string
	groups []string
	at     time.Time
}

func (c *userCache) get(uid uint32) (string, []string) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[uid]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl {
		return e.name, slices.Clone(e.groups)
	}
	name, groups, err := c.lookup(uid)
	if err != nil {
		name, groups = "undefined", []string{}
	}
	if groups == nil {
		groups = []string{}
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		// Evict the oldest entry; the cache is small, a scan is cheap next
		// to the user-database lookup it saves.
		var oldest uint32
		var at time.Time
		first := true
		for k, v := range c.m {
			if first || v.at.Before(at) {
				oldest, at, first = k, v.at, false
			}
		}
		delete(c.m, oldest)
	}
	c.m[uid] = userEntry{name: name, groups: groups, at: now}
	c.mu.Unlock()
	return name, slices.Clone(groups)
}

func (c *userCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func lookupOSUser(uid uint32) (string, []string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return "", nil, err
	}
	gids, err := u.GroupIds()
	if err != nil {
		return u.Username, nil, nil
	}
	groups := make([]string, 0, len(gids))
	for _, g := range gids {
		if gr, err := user.LookupGroupId(g); err == nil {
			groups = append(groups, gr.Name)
		}
	}
	return u.Username, groups, nil
}
