package keylatch

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/metadatasec/gpa/msp"
)

// DefaultKeyDir is upstream's latchKeyFolder.
const DefaultKeyDir = "/var/lib/azure-proxy-agent/keys"

// FileSystem is the handful of file operations the store needs. The
// default is the operating system's; tests inject failures (a full or
// read-only disk) through it.
type FileSystem interface {
	Lstat(name string) (fs.FileInfo, error)
	Mkdir(name string, perm fs.FileMode) error
	Chmod(name string, perm fs.FileMode) error
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	ReadDir(name string) ([]fs.DirEntry, error)
}

// File is an open file of a FileSystem.
type File interface {
	io.Reader
	io.Writer
	io.Closer
	Sync() error
	Stat() (fs.FileInfo, error)
}

// OSFileSystem is FileSystem on the real operating system.
type OSFileSystem struct{}

// Lstat calls os.Lstat.
func (OSFileSystem) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(name) }

// Mkdir calls os.Mkdir.
func (OSFileSystem) Mkdir(name string, perm fs.FileMode) error { return os.Mkdir(name, perm) }

// Chmod calls os.Chmod.
func (OSFileSystem) Chmod(name string, perm fs.FileMode) error { return os.Chmod(name, perm) }

// OpenFile calls os.OpenFile.
func (OSFileSystem) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	return os.OpenFile(name, flag, perm)
}

// Rename calls os.Rename.
func (OSFileSystem) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

// ReadDir calls os.ReadDir.
func (OSFileSystem) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(name) }

// Remove calls os.Remove.
func (OSFileSystem) Remove(name string) error { return os.Remove(name) }

// StoreOptions configure OpenStore.
type StoreOptions struct {
	// Dir is the key folder; DefaultKeyDir if empty.
	Dir string
	// Owner is the uid that must own the folder and every file; 0 (root)
	// unless a test runs unprivileged and sets its own uid.
	Owner uint32
	// FS performs the file operations; OSFileSystem if nil.
	FS FileSystem
	// Logger is told when the folder's mode is repaired; nil discards.
	Logger *slog.Logger
}

// Store keeps latched keys on disk as <guid>.key in a folder only its owner
// (root) can read. It refuses to work in a folder, or with a file, that a
// non-root user could have planted or read. The provisioning tag files that
// share the folder are written by status.Provision, not here.
type Store struct {
	dir   string
	owner uint32
	fs    FileSystem
	log   *slog.Logger
}

// OpenStore creates the folder (mode 0700) if it is missing and checks it:
// not a symlink, a directory, owned by Owner. A folder of Owner's that
// lets group or others in is narrowed to 0700, as upstream does at every
// start, and logged; anything else is an error matching ErrInsecurePath
// that names the path and the fix.
func OpenStore(opts *StoreOptions) (*Store, error) {
	if opts == nil {
		opts = &StoreOptions{}
	}
	s := &Store{dir: opts.Dir, owner: opts.Owner, fs: opts.FS, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.dir == "" {
		s.dir = DefaultKeyDir
	}
	s.dir = filepath.Clean(s.dir)
	if s.fs == nil {
		s.fs = OSFileSystem{}
	}
	if err := s.mkdirPrivate(s.dir, "key folder"); err != nil {
		return nil, err
	}
	if err := s.CheckDir(); err != nil {
		return nil, err
	}
	s.removeStaleTemps()
	return s, nil
}

// removeStaleTemps deletes temp files a crash left between create and
// rename. They hold key material, so they should not linger; failing to
// delete one is harmless (the folder is root-only) and not reported.
func (s *Store) removeStaleTemps() {
	ents, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, ".") && strings.HasSuffix(n, ".tmp") && e.Type().IsRegular() {
			_ = s.fs.Remove(filepath.Join(s.dir, n))
		}
	}
}

// Dir returns the key folder.
func (s *Store) Dir() string { return s.dir }

// RulesDir returns the local rules folder upstream pairs with the key
// folder: parent(keys)/rules.
func (s *Store) RulesDir() string { return filepath.Join(filepath.Dir(s.dir), "rules") }

// EnsureRulesDir creates RulesDir, mode 0700, if it is missing, as
// upstream does at start: the folder operators put local rules into is
// then root-only from the beginning. An existing folder is left as it is;
// ReadRulesFile checks it on every read.
func (s *Store) EnsureRulesDir() error {
	return s.mkdirPrivate(s.RulesDir(), "rules folder")
}

// mkdirPrivate creates dir with mode 0700 when it does not exist.
func (s *Store) mkdirPrivate(dir, what string) error {
	if _, err := s.fs.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := s.fs.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("keylatch: creating %s %s: %w", what, dir, err)
	}
	// Mkdir's mode is reduced by the umask, never widened; this makes it
	// exactly 0700 before anything is written.
	if err := s.fs.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("keylatch: setting mode of %s %s: %w", what, dir, err)
	}
	return nil
}

// CheckDir checks the folder again; the latcher calls it before every use,
// since the folder can be changed under a running agent.
func (s *Store) CheckDir() error {
	fi, err := s.fs.Lstat(s.dir)
	if err != nil {
		return fmt.Errorf("keylatch: key folder %s: %w", s.dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return insecure(s.dir, "is a symlink", "replace it with a real directory owned by root, mode 0700")
	}
	if !fi.IsDir() {
		return insecure(s.dir, "is not a directory", "remove it; the agent recreates the folder")
	}
	// A folder of the right owner that others may enter is repaired, not
	// refused: upstream sets 0700 at every start, so an image or an
	// operator that left 0755 must not keep the agent from starting. Its
	// key files are still checked one by one, and a file others could read
	// is never used.
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == s.owner && fi.Mode().Perm()&0o077 != 0 {
		if err := s.fs.Chmod(s.dir, 0o700); err != nil {
			return fmt.Errorf("keylatch: narrowing key folder %s from %04o to 0700: %w", s.dir, fi.Mode().Perm(), err)
		}
		s.log.Warn("keylatch: key folder let group or others in; narrowed to 0700", "folder", s.dir, "was", fmt.Sprintf("%04o", fi.Mode().Perm()))
		return nil
	}
	return s.checkOwnerMode(s.dir, fi, 0o077, "chown root:root "+s.dir+" && chmod 0700 "+s.dir)
}

func (s *Store) checkOwnerMode(path string, fi fs.FileInfo, mask fs.FileMode, fix string) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return insecure(path, "has no owner information", fix)
	}
	if st.Uid != s.owner {
		return insecure(path, fmt.Sprintf("is owned by uid %d, want %d", st.Uid, s.owner), fix)
	}
	if fi.Mode().Perm()&mask != 0 {
		return insecure(path, fmt.Sprintf("has mode %04o, which lets group or others in", fi.Mode().Perm()), fix)
	}
	return nil
}

// InsecurePathError names a path the store refuses and how to fix it. It
// matches ErrInsecurePath.
type InsecurePathError struct {
	Path, Problem, Fix string
}

// Error names the path, the problem and the fix.
func (e *InsecurePathError) Error() string {
	return fmt.Sprintf("keylatch: %s %s; fix: %s", e.Path, e.Problem, e.Fix)
}

// Is makes errors.Is(err, ErrInsecurePath) true.
func (e *InsecurePathError) Is(target error) bool { return target == ErrInsecurePath }

func insecure(path, problem, fix string) error {
	return &InsecurePathError{Path: path, Problem: problem, Fix: fix}
}

// validGUID keeps a host-supplied guid from naming a path outside the
// folder.
func validGUID(guid string) error {
	if guid == "" || len(guid) > 128 || guid == "." || guid == ".." ||
		strings.ContainsAny(guid, "/\\\x00") || strings.HasPrefix(guid, ".") {
		return fmt.Errorf("keylatch: %q is not a usable key guid", guid)
	}
	return nil
}

// KeyPath returns where the key with guid is stored.
func (s *Store) KeyPath(guid string) string { return filepath.Join(s.dir, guid+".key") }

// Save writes k to <guid>.key atomically and durably: a temp file created
// with O_EXCL and mode 0600 from the first byte, written, fsynced, renamed
// over the target, then the folder fsynced.
func (s *Store) Save(k msp.Key) error {
	if err := validGUID(k.GUID); err != nil {
		return err
	}
	data, err := msp.MarshalKeyFile(k)
	if err != nil {
		return fmt.Errorf("keylatch: encoding %s: %w", k, err)
	}
	return s.writeFile(k.GUID+".key", data)
}

// Load reads the key with guid. A missing file is ErrKeyNotFound; a file
// that is truncated, malformed or holds another guid is ErrCorruptKey; a
// symlink or a file others can read is ErrInsecurePath. Errors never carry
// key material.
func (s *Store) Load(guid string) (msp.Key, error) {
	if err := validGUID(guid); err != nil {
		return msp.Key{}, fmt.Errorf("%w: %w", ErrKeyNotFound, err)
	}
	if err := s.CheckDir(); err != nil {
		return msp.Key{}, err
	}
	path := s.KeyPath(guid)
	data, err := s.readFile(path)
	if err != nil {
		return msp.Key{}, err
	}
	k, err := msp.ParseKeyJSON(data)
	if err != nil {
		return msp.Key{}, fmt.Errorf("%w: %s: %w", ErrCorruptKey, path, err)
	}
	if k.GUID != guid {
		return msp.Key{}, fmt.Errorf("%w: %s holds key %s", ErrCorruptKey, path, k.GUID)
	}
	return k, nil
}

// ReadRulesFile reads a local rules file from RulesDir. The folder and the
// file must be owned by the store's owner and not writable by group or
// others (read access is harmless: rules are not secret). A missing folder
// or file is an error matching fs.ErrNotExist.
func (s *Store) ReadRulesFile(name string) ([]byte, error) {
	dir := s.RulesDir()
	fi, err := s.fs.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
		return nil, insecure(dir, "is not a real directory", "make it a directory owned by root, mode 0700")
	}
	if err := s.checkOwnerMode(dir, fi, 0o022, "chown root:root "+dir+" && chmod 0700 "+dir); err != nil {
		return nil, err
	}
	// readChecked's O_NOFOLLOW open refuses a symlink, and its error for a
	// missing file matches fs.ErrNotExist, so no Lstat of the file first.
	path := filepath.Join(dir, name)
	return s.readChecked(path, 0o022, "chown root:root "+path+" && chmod 0600 "+path)
}

func (s *Store) readFile(path string) ([]byte, error) {
	if err := s.checkLink(path, ErrKeyNotFound, "delete it; the agent fetches a new key"); err != nil {
		return nil, err
	}
	return s.readChecked(path, 0o077, "chown root:root "+path+" && chmod 0600 "+path)
}

// checkLink looks at path before it is opened: missing is notFound, and a
// symlink is refused with fix as the remedy.
func (s *Store) checkLink(path string, notFound error, fix string) error {
	fi, err := s.fs.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", notFound, path)
	}
	if err != nil {
		return fmt.Errorf("keylatch: %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return insecure(path, "is a symlink", fix)
	}
	return nil
}

func (s *Store) readChecked(path string, mask fs.FileMode, fix string) ([]byte, error) {
	// A larger file is cut at 64 KiB and then fails to parse.
	return s.readUpTo(path, mask, fix, 64<<10)
}

// readLimited is readChecked with a size limit; a larger file is an error.
func (s *Store) readLimited(path string, mask fs.FileMode, fix string, limit int64) ([]byte, error) {
	data, err := s.readUpTo(path, mask, fix, limit+1)
	if err == nil && int64(len(data)) > limit {
		return nil, fmt.Errorf("keylatch: %s is larger than %d bytes", path, limit)
	}
	return data, err
}

// readUpTo opens path without following a symlink, checks owner and mode
// on the open file and reads at most n bytes.
func (s *Store) readUpTo(path string, mask fs.FileMode, fix string, n int64) ([]byte, error) {
	// O_NOFOLLOW closes the window between Lstat and open.
	f, err := s.fs.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, insecure(path, "is a symlink", "delete it; the agent fetches a new key")
		}
		return nil, fmt.Errorf("keylatch: opening %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keylatch: %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, insecure(path, "is not a regular file", "delete it")
	}
	if err := s.checkOwnerMode(path, fi, mask, fix); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, n))
	if err != nil {
		return nil, fmt.Errorf("keylatch: reading %s: %w", path, err)
	}
	return data, nil
}

// writeFile puts data at name in the folder atomically.
func (s *Store) writeFile(name string, data []byte) (err error) {
	if err := s.CheckDir(); err != nil {
		return err
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	final := filepath.Join(s.dir, name)
	tmp := filepath.Join(s.dir, "."+name+"."+hex.EncodeToString(rnd[:])+".tmp")
	f, err := s.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("keylatch: creating %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			_ = s.fs.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("keylatch: writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("keylatch: syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("keylatch: closing %s: %w", tmp, err)
	}
	if err := s.fs.Rename(tmp, final); err != nil {
		return fmt.Errorf("keylatch: renaming %s to %s: %w", tmp, final, err)
	}
	d, err := s.fs.OpenFile(s.dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("keylatch: opening %s to sync it: %w", s.dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keylatch: syncing %s: %w", s.dir, err)
	}
	return nil
}
