//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/metadatasec/gpa/msp"
)

// Options configures Load.
type Options struct {
	// CgroupPath is the cgroup v2 directory whose processes (and
	// descendants) are redirected. The agent passes the hierarchy root
	// (CgroupV2Root); tests pass a child cgroup they created. Required.
	CgroupPath string

	// PinPath, if set, is a directory on a bpffs mount (for example
	// /sys/fs/bpf/azure-proxy-agent) where maps and links are pinned. With
	// pins, Close leaves the programs attached and the next Load swaps the
	// programs in place and keeps the maps, so a restarting agent leaves no
	// window in which connect() bypasses it. RemovePins detaches and
	// removes them. A pinned policy or exemption map whose layout differs
	// from this version's is refused (a *MapError wrapping
	// ebpf.ErrMapIncompatible): call RemovePins and load again. The maps
	// of connections in flight (gpa_caller_map, gpa_sk_storage) are
	// replaced instead. Empty means nothing outlives Close.
	PinPath string

	// Proxy is where PolicyMap.SetRedirect sends protected endpoints'
	// connections; msp.ProxyAddr when zero.
	Proxy netip.AddrPort

	// Logger receives attach and replace events. Nil discards them.
	Logger *slog.Logger

	// host overrides how the machine is inspected (tests only).
	host *host
}

// Redirector owns the loaded programs, their cgroup links and the maps.
// Close it when done; with no PinPath, closing detaches everything. The map
// accessors may be used from many goroutines at once, but not concurrently
// with or after Close.
type Redirector struct {
	policy PolicyMap
	audit  AuditMap

	exemptMu sync.Mutex
	exempted *Exemption // set by ExemptSelf

	cgroupPath string
	pinPath    string
	objs       redirectObjects
	links      []link.Link
}

// attachment is where one program goes; name is its name in the object,
// which also names its pinned link.
type attachment struct {
	name   string
	prog   *ebpf.Program
	attach ebpf.AttachType
}

// attachments lists the programs of o in attach order. The audit hook
// comes first and the redirect last, so no connection is redirected before
// its caller can be recorded and shown its original peer.
func (o *redirectObjects) attachments() []attachment {
	return []attachment{
		{redirectProgConnectAudit, o.ConnectAudit, ebpf.AttachCGroupSockOps},
		{redirectProgGetpeername4, o.Getpeername4, ebpf.AttachCgroupInet4GetPeername},
		{redirectProgGetpeername6, o.Getpeername6, ebpf.AttachCgroupInet6GetPeername},
		{redirectProgConnect4, o.Connect4, ebpf.AttachCGroupInet4Connect},
		{redirectProgConnect6, o.Connect6, ebpf.AttachCGroupInet6Connect},
	}
}

// linkNames and mapNames are the pins a Load leaves under PinPath/links and
// PinPath/maps: the object's program and map names, which older versions
// used too, so a newer agent takes their pins over.
var (
	linkNames = []string{redirectProgConnectAudit, redirectProgGetpeername4, redirectProgGetpeername6,
		redirectProgConnect4, redirectProgConnect6}
	mapNames = []string{redirectMapPolicyMap, redirectMapGpaExemptMap, redirectMapAuditMap,
		redirectMapGpaSkStorage, redirectMapGpaCallerMap}
)

// transientMapNames are maps that hold only the callers of connections in
// flight. A pin of another layout (an older version's shorter caller
// record) is replaced instead of refused: the old programs keep their map
// until their links are updated, and all that is lost is the records of
// connections made meanwhile, which the proxy then refuses (fail closed).
// The other maps hold the policy and the exemptions, and are refused.
var transientMapNames = []string{redirectMapGpaCallerMap, redirectMapGpaSkStorage}

// replaceIncompatiblePin removes the pin at path when the map there does
// not match spec, so LoadAndAssign creates and pins a new one. Any other
// problem with the pin is left for LoadAndAssign to report.
func replaceIncompatiblePin(log *slog.Logger, path string, spec *ebpf.MapSpec) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return
	}
	defer m.Close()
	cerr := spec.Compatible(m)
	if cerr == nil {
		return
	}
	if err := os.Remove(path); err != nil {
		log.Warn("cannot replace pinned map of another layout", "map", path, "error", err)
		return
	}
	log.Info("replacing pinned map of another layout", "map", path, "difference", cerr)
}

// legacyMapNames are maps older versions pinned and this one no longer
// uses. Load removes their pins once the programs that used them are
// replaced; RemovePins removes them too.
var legacyMapNames = []string{
	// Upstream's skip list keyed by bare pid: a process given a dead
	// agent's pid inherited its exemption (docs/exemption.md).
	"skip_process_map",
}

// Load checks the kernel, loads the programs and attaches them to
// opts.CgroupPath. Errors are *RequirementError (the host cannot run it),
// *CgroupError (bad path), *ProgramError (the kernel refused a program;
// the text is the troubleshooting guide's) or *MapError. On error nothing
// stays loaded or attached, except what is pinned under Options.PinPath.
func Load(ctx context.Context, opts Options) (*Redirector, error) {
	return load(ctx, opts)
}

func load(ctx context.Context, opts Options) (_ *Redirector, err error) {
	h := opts.host
	if h == nil {
		h = realHost()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	if err := h.check(); err != nil {
		return nil, err
	}
	cg, cgID, err := openCgroup(opts.CgroupPath)
	if err != nil {
		return nil, err
	}
	defer cg.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	spec, err := loadRedirect()
	if err != nil {
		return nil, fmt.Errorf("ebpf: embedded object: %w", err)
	}
	if h.editSpec != nil {
		h.editSpec(spec)
	}

	r := &Redirector{cgroupPath: opts.CgroupPath, pinPath: opts.PinPath}
	defer func() {
		if err != nil {
			// Without pinning this detaches whatever was attached.
			// With pinning, links pinned so far stay: they are the
			// previous agent's programs or new ones a retry updates
			// in place, and detaching them would open a bypass
			// window. RemovePins clears them.
			r.Close()
		}
	}()

	var colOpts ebpf.CollectionOptions
	if opts.PinPath != "" {
		colOpts.Maps.PinPath = filepath.Join(opts.PinPath, "maps")
		for _, d := range []string{colOpts.Maps.PinPath, filepath.Join(opts.PinPath, "links")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, fmt.Errorf("ebpf: create pin directory: %w", err)
			}
		}
		// Pinned by name, so the next Load finds and reuses them.
		for _, ms := range spec.Maps {
			ms.Pinning = ebpf.PinByName
		}
		for _, name := range transientMapNames {
			replaceIncompatiblePin(log, filepath.Join(colOpts.Maps.PinPath, name), spec.Maps[name])
		}
	}
	if err := spec.LoadAndAssign(&r.objs, &colOpts); err != nil {
		return nil, loadError(err)
	}

	for _, a := range r.objs.attachments() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l, err := r.attach(log, cg, cgID, a)
		if err != nil {
			return nil, &ProgramError{Op: OpAttach, Program: a.name, Err: err}
		}
		r.links = append(r.links, l)
	}

	if opts.PinPath != "" {
		// Every link now runs this version's programs, so nothing
		// reads the old maps any more.
		for _, name := range legacyMapNames {
			p := filepath.Join(opts.PinPath, "maps", name)
			if err := os.Remove(p); err == nil {
				log.Info("removed pinned map of an older version", "map", p)
			} else if !errors.Is(err, os.ErrNotExist) {
				log.Warn("cannot remove pinned map of an older version", "map", p, "error", err)
			}
		}
	}
	// Exemptions of processes that are gone (killed agents) go now, so
	// the map holds only live ones.
	if err := pruneExemptions(r.objs.GpaExemptMap); err != nil {
		log.Warn("cannot remove every stale exemption", "error", err)
	}

	proxy := opts.Proxy
	if !proxy.IsValid() {
		proxy = msp.ProxyAddr
	}
	r.policy = PolicyMap{m: r.objs.PolicyMap, proxy: proxy}
	r.audit = AuditMap{caller: r.objs.GpaCallerMap, reap: newAuditReaper(r.objs.AuditMap, reapDelay, reapBatch)}
	log.Info("eBPF redirector attached", "cgroup", opts.CgroupPath, "pinned", opts.PinPath != "")
	return r, nil
}

// attach links prog to the cgroup. With pinning, a pinned link for the
// same cgroup gets the new program swapped in atomically (BPF_LINK_UPDATE).
// A pinned link that cannot be updated (another cgroup, an update error)
// is replaced only after the new link is in force, so there is never a
// moment without one.
func (r *Redirector) attach(log *slog.Logger, cg *os.File, cgID uint64, a attachment) (link.Link, error) {
	name, prog := a.name, a.prog
	var old link.Link
	pin := ""
	if r.pinPath != "" {
		pin = filepath.Join(r.pinPath, "links", name)
		l, err := link.LoadPinnedLink(pin, nil)
		switch {
		case err == nil:
			if linkCgroup(l) == cgID {
				uerr := l.Update(prog)
				if uerr == nil {
					log.Info("replaced pinned eBPF program", "program", name, "link", pin)
					return l, nil
				}
				log.Warn("cannot update pinned link, attaching a new one", "program", name, "link", pin, "error", uerr)
			} else {
				log.Warn("pinned link is for another cgroup, attaching a new one", "program", name, "link", pin)
			}
			old = l
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("open pinned link %s: %w", pin, err)
		}
	}
	// A bpf_link on the directory already checked to be cgroup v2 (no
	// re-open by path), and no fallback to the legacy attach API: only
	// links can be pinned and updated in place, and 5.15 has them.
	l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: prog, Attach: a.attach})
	if err != nil {
		if old != nil {
			old.Close() // still pinned, still in force
		}
		return nil, err
	}
	if old != nil {
		uerr := old.Unpin()
		old.Close()
		if uerr != nil {
			l.Close()
			return nil, fmt.Errorf("unpin replaced link %s: %w", pin, uerr)
		}
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			l.Close()
			return nil, fmt.Errorf("pin link at %s: %w", pin, err)
		}
	}
	log.Debug("attached eBPF program", "program", name, "cgroup", cg.Name())
	return l, nil
}

// loadError names the object a failed LoadAndAssign was creating.
// cilium/ebpf wraps each step's error as "program <name>: " and "map <name>:
// ", outermost first, so the innermost of those markers names the object
// that failed. An error naming neither is about the object as a whole.
func loadError(err error) error {
	msg := err.Error()
	at, prog, mapName := -1, "", ""
	for _, name := range linkNames {
		if i := strings.LastIndex(msg, "program "+name+": "); i > at {
			at, prog, mapName = i, name, ""
		}
	}
	for _, name := range mapNames {
		if i := strings.LastIndex(msg, "map "+name+": "); i > at {
			at, prog, mapName = i, "", name
		}
	}
	switch {
	case mapName != "":
		return &MapError{Op: "create", Map: mapName, Err: err}
	case prog != "":
		return newLoadError(prog, err)
	}
	return fmt.Errorf("ebpf: load the redirect object: %w", err)
}

// linkCgroup returns the id of the cgroup a link is attached to, or 0.
func linkCgroup(l link.Link) uint64 {
	info, err := l.Info()
	if err != nil || info.Cgroup() == nil {
		return 0
	}
	return info.Cgroup().CgroupId
}

// Policy returns the redirect policy map.
func (r *Redirector) Policy() *PolicyMap { return &r.policy }

// Audit returns the caller lookup for accepted connections.
func (r *Redirector) Audit() *AuditMap { return &r.audit }

// CgroupPath returns the cgroup the programs are attached to.
func (r *Redirector) CgroupPath() string { return r.cgroupPath }

// Close removes the exemption ExemptSelf made, removes the audit_map
// entries of records already consumed, and releases every file descriptor
// the Redirector holds. Without pinning that detaches the
// programs and frees the maps; with pinning the pinned links and maps stay
// in place for the next Load (use RemovePins to take them down). Close is
// safe to call more than once.
func (r *Redirector) Close() error {
	var errs []error
	if r.audit.reap != nil {
		// Its last flush needs audit_map open.
		r.audit.reap.close()
	}
	r.exemptMu.Lock()
	if err := r.unexemptLocked(); err != nil {
		errs = append(errs, err)
	}
	r.exemptMu.Unlock()
	for _, l := range r.links {
		if err := l.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	r.links = nil
	if err := r.objs.Close(); err != nil {
		errs = append(errs, err)
	}
	r.objs = redirectObjects{}
	return errors.Join(errs...)
}

// RemovePins detaches the programs pinned under pinPath by an earlier Load
// (this or a previous process) and removes their pins and the pinned maps.
// Use it on uninstall, or to clear pins left by a different version. Pins
// that are already gone are not an error.
func RemovePins(pinPath string) error {
	if pinPath == "" {
		return errors.New("ebpf: RemovePins: empty pin path")
	}
	var errs []error
	for _, name := range linkNames {
		p := filepath.Join(pinPath, "links", name)
		l, err := link.LoadPinnedLink(p, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			// Not a link (or unreadable): remove the file so the
			// name is free, but say so.
			errs = append(errs, fmt.Errorf("ebpf: open pinned link %s: %w", p, err))
			if rerr := os.Remove(p); rerr != nil {
				errs = append(errs, rerr)
			}
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("ebpf: unpin %s: %w", p, err))
		}
		l.Close()
	}
	for _, name := range slices.Concat(mapNames, legacyMapNames) {
		p := filepath.Join(pinPath, "maps", name)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("ebpf: remove pinned map %s: %w", p, err))
		}
	}
	for _, d := range []string{"links", "maps"} {
		if err := os.Remove(filepath.Join(pinPath, d)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("ebpf: remove %s: %w", filepath.Join(pinPath, d), err))
		}
	}
	return errors.Join(errs...)
}
