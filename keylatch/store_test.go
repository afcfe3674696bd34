package keylatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

func testKey(t *testing.T, guid string) msp.Key {
	t.Helper()
	k, err := msp.NewKey(guid, "4A404E635266556A586E3272357538782F413F4428472B4B6250645367566B59")
	if err != nil {
		t.Fatal(err)
	}
	inc := uint32(3)
	k.Incarnation = &inc
	k.Issued = "2021-05-05T 12:00:00Z"
	return k
}

const guid1 = "9cf81e97-0316-4a3c-a4e1-48d7a5c4e0f5"

func TestStoreRoundTrip(t *testing.T) {
	s := openTestStore(t, testStoreDir(t), nil)
	k := testKey(t, guid1)
	if err := s.Save(k); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(guid1)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(k) || got.Issued != k.Issued || *got.Incarnation != 3 {
		t.Fatalf("loaded %v", got)
	}
	fi, err := os.Stat(s.KeyPath(guid1))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	// Saving again replaces atomically and leaves no temp files.
	if err := s.Save(k); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(s.Dir())
	if len(ents) != 1 || ents[0].Name() != guid1+".key" {
		t.Fatalf("folder holds %v", ents)
	}
	if _, err := s.Load("00000000-0000-0000-0000-00000000abcd"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	// A temp file left by a crash is removed when the store is opened.
	stale := filepath.Join(s.Dir(), "."+guid1+".key.0123456789ab.tmp")
	writeRaw(t, stale, []byte("{"), 0o600)
	openTestStore(t, s.Dir(), nil)
	if _, err := os.Lstat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale temp file kept: %v", err)
	}
	if _, err := s.Load(guid1); err != nil {
		t.Fatalf("the real key went with the temp file: %v", err)
	}
}

func TestStoreRefusesBadFiles(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, s *Store)
		want    error
	}{
		{"truncated", func(t *testing.T, s *Store) {
			b, _ := msp.MarshalKeyFile(testKey(t, guid1))
			writeRaw(t, s.KeyPath(guid1), b[:len(b)/2], 0o600)
		}, ErrCorruptKey},
		{"empty", func(t *testing.T, s *Store) { writeRaw(t, s.KeyPath(guid1), nil, 0o600) }, ErrCorruptKey},
		{"not hex", func(t *testing.T, s *Store) {
			writeRaw(t, s.KeyPath(guid1), []byte(`{"authorizationScheme":"Azure-HMAC-SHA256","guid":"`+guid1+`","issued":"","key":"ZZZZ"}`), 0o600)
		}, ErrCorruptKey},
		{"other guid inside", func(t *testing.T, s *Store) {
			b, _ := msp.MarshalKeyFile(testKey(t, "aaaaaaaa-0316-4a3c-a4e1-48d7a5c4e0f5"))
			writeRaw(t, s.KeyPath(guid1), b, 0o600)
		}, ErrCorruptKey},
		{"symlink", func(t *testing.T, s *Store) {
			other := filepath.Join(s.Dir(), "real")
			b, _ := msp.MarshalKeyFile(testKey(t, guid1))
			writeRaw(t, other, b, 0o600)
			if err := os.Symlink(other, s.KeyPath(guid1)); err != nil {
				t.Fatal(err)
			}
		}, ErrInsecurePath},
		{"world readable", func(t *testing.T, s *Store) {
			b, _ := msp.MarshalKeyFile(testKey(t, guid1))
			writeRaw(t, s.KeyPath(guid1), b, 0o644)
		}, ErrInsecurePath},
		{"directory", func(t *testing.T, s *Store) {
			if err := os.Mkdir(s.KeyPath(guid1), 0o700); err != nil {
				t.Fatal(err)
			}
		}, ErrInsecurePath},
		// Narrowed again (TestOpenStoreRepairsFolderMode); what another user
		// put there meanwhile is theirs, and refused.
		{"file planted while the folder was open", func(t *testing.T, s *Store) {
			if err := os.Chmod(s.Dir(), 0o777); err != nil {
				t.Fatal(err)
			}
			b, _ := msp.MarshalKeyFile(testKey(t, guid1))
			writeRaw(t, s.KeyPath(guid1), b, 0o666)
		}, ErrInsecurePath},
		{"path traversal guid", nil, ErrKeyNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, testStoreDir(t), nil)
			g := guid1
			if tt.prepare != nil {
				tt.prepare(t, s)
			} else {
				g = "../../etc/passwd"
			}
			k, err := s.Load(g)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Load: %v, want %v", err, tt.want)
			}
			if k.Valid() {
				t.Fatal("a bad file gave a key")
			}
			assertNoSecret(t, testKey(t, guid1), err.Error())
			if errors.Is(err, ErrInsecurePath) {
				var ie *InsecurePathError
				if !errors.As(err, &ie) || ie.Path == "" || !strings.Contains(err.Error(), "fix:") {
					t.Fatalf("insecure-path error lacks path or fix: %v", err)
				}
			}
		})
	}
}

func writeRaw(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestOpenStoreRefusesInsecureFolder(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
	}{
		{"symlink", func(t *testing.T, dir string) {
			real := dir + ".real"
			os.Mkdir(real, 0o700)
			if err := os.Symlink(real, dir); err != nil {
				t.Fatal(err)
			}
		}},
		{"a file", func(t *testing.T, dir string) { writeRaw(t, dir, []byte("x"), 0o600) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testStoreDir(t)
			tt.prepare(t, dir)
			_, err := OpenStore(&StoreOptions{Dir: dir, Owner: uint32(os.Geteuid())})
			if !errors.Is(err, ErrInsecurePath) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("OpenStore: %v", err)
			}
		})
	}
}

// TestOpenStoreRepairsFolderMode: a folder of the store's owner that lets
// group or others in is narrowed to 0700 and logged, as upstream does at
// every start, so the agent starts; a key file others could read in it is
// still refused.
func TestOpenStoreRepairsFolderMode(t *testing.T) {
	for _, mode := range []os.FileMode{0o755, 0o750, 0o777, 0o701} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := testStoreDir(t)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, mode); err != nil {
				t.Fatal(err)
			}
			var logs testenv.Buffer
			s, err := OpenStore(&StoreOptions{Dir: dir, Owner: uint32(os.Geteuid()), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatalf("OpenStore: %v", err)
			}
			if fi, _ := os.Lstat(dir); fi.Mode().Perm() != 0o700 {
				t.Errorf("folder mode %v, want 0700", fi.Mode().Perm())
			}
			if !strings.Contains(logs.String(), "narrowed to 0700") || !strings.Contains(logs.String(), fmt.Sprintf("%04o", mode)) {
				t.Errorf("log %q does not say what was repaired", logs.String())
			}
			b, _ := msp.MarshalKeyFile(testKey(t, guid1))
			writeRaw(t, s.KeyPath(guid1), b, 0o644)
			if _, err := s.Load(guid1); !errors.Is(err, ErrInsecurePath) {
				t.Errorf("a key file others can read: %v, want ErrInsecurePath", err)
			}
		})
	}
}

func TestStoreRefusesForeignOwner(t *testing.T) {
	testenv.MustBeRoot(t)
	dir := testStoreDir(t)
	s := openTestStore(t, dir, nil)
	if err := s.Save(testKey(t, guid1)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(s.KeyPath(guid1), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(guid1); !errors.Is(err, ErrInsecurePath) || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("file owned by nobody: %v", err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(&StoreOptions{Dir: dir}); !errors.Is(err, ErrInsecurePath) {
		t.Fatalf("folder owned by nobody: %v", err)
	}
}

// faultFS wraps the OS and fails chosen operations.
type faultFS struct {
	OSFileSystem
	writeErr  error // returned by Write of new files
	createErr error // returned by OpenFile with O_CREATE
	syncErr   error
}

func (f faultFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if flag&os.O_CREATE != 0 && f.createErr != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: f.createErr}
	}
	file, err := f.OSFileSystem.OpenFile(name, flag, perm)
	if err != nil || flag&os.O_CREATE == 0 {
		return file, err
	}
	return faultFile{File: file, writeErr: f.writeErr, syncErr: f.syncErr}, nil
}

type faultFile struct {
	File
	writeErr, syncErr error
}

func (f faultFile) Write(p []byte) (int, error) {
	if f.writeErr != nil {
		// A full disk takes part of the data, then refuses.
		n, _ := f.File.Write(p[:len(p)/2])
		return n, f.writeErr
	}
	return f.File.Write(p)
}

func (f faultFile) Sync() error {
	if f.syncErr != nil {
		return f.syncErr
	}
	return f.File.Sync()
}

func TestSaveFailuresLeaveNothingBehind(t *testing.T) {
	tests := []struct {
		name string
		fs   faultFS
		want error
	}{
		{"disk full", faultFS{writeErr: syscall.ENOSPC}, syscall.ENOSPC},
		{"read-only", faultFS{createErr: syscall.EROFS}, syscall.EROFS},
		{"sync fails", faultFS{syncErr: syscall.EIO}, syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testStoreDir(t)
			s := openTestStore(t, dir, tt.fs)
			k := testKey(t, guid1)
			err := s.Save(k)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Save: %v, want %v", err, tt.want)
			}
			assertNoSecret(t, k, err.Error())
			ents, _ := os.ReadDir(dir)
			if len(ents) != 0 {
				t.Fatalf("left behind %v", ents)
			}
		})
	}
}

// TestLatcherWithBrokenDisk checks the agent never reports latched when the
// key cannot be stored, and latches once the disk is fixed.
func TestLatcherWithBrokenDisk(t *testing.T) {
	tests := []struct {
		name  string
		fs    faultFS
		chmod bool
	}{
		{"disk full", faultFS{writeErr: syscall.ENOSPC}, false},
		{"read-only", faultFS{createErr: syscall.EROFS}, false},
		// A folder that lets others in is narrowed and used; one that
		// another user owns is not.
		{"folder owned by another user", faultFS{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
			broken := openTestStore(t, r.store.Dir(), tt.fs)
			if tt.chmod {
				if err := os.Chown(broken.Dir(), 65534, 65534); err != nil {
					testenv.SkipOrFail(t, "needs root to give the folder away: %v", err)
				}
			}
			l, err := NewLatcher(&LatcherOptions{Client: r.client, Store: broken, Clock: r.clock, Logger: nil})
			if err != nil {
				t.Fatal(err)
			}
			l.Poll(context.Background())
			if s := l.Current(); s.Latched() || s.Key.Valid() {
				t.Fatalf("latched without a stored key: %q", s.State)
			}
			msg := l.Status().Message
			if !strings.HasPrefix(msg, msp.KeyLatchMsgSaveFailed) {
				t.Fatalf("status %q, want prefix %q", msg, msp.KeyLatchMsgSaveFailed)
			}
			if n := len(r.host.RequestsTo("POST", KeyPath+"/"+r.host.IssuedKeys()[0].GUID+"/key-attestation")); n != 0 {
				t.Fatal("attested a key that was not stored")
			}
			for _, k := range r.host.IssuedKeys() {
				assertNoSecret(t, k, msg)
			}
			// Fixed disk: the same store folder through the real OS.
			os.Chown(broken.Dir(), os.Geteuid(), os.Getegid())
			fixed, err := NewLatcher(&LatcherOptions{Client: r.client, Store: r.store, Clock: r.clock})
			if err != nil {
				t.Fatal(err)
			}
			fixed.Poll(context.Background())
			if !fixed.Current().Latched() {
				t.Fatalf("did not latch after the fix: %+v", fixed.Status())
			}
		})
	}
}

// TestLatcherReplacesUnusableStoredKey covers a status naming a key whose
// file is corrupt or a symlink: the file is not trusted, a new key is
// acquired, and no key material reaches the logs.
func TestLatcherReplacesUnusableStoredKey(t *testing.T) {
	for _, mode := range []string{"corrupt", "symlink"} {
		t.Run(mode, func(t *testing.T) {
			r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
			k := testKey(t, guid1)
			r.host.LatchKey(k)
			switch mode {
			case "corrupt":
				writeRaw(t, r.store.KeyPath(guid1), []byte(`{"authorizationScheme":"Azure-HMAC-SHA256","guid":"`+guid1+`","issu`), 0o600)
			case "symlink":
				b, _ := msp.MarshalKeyFile(k)
				other := filepath.Join(t.TempDir(), "planted.key")
				writeRaw(t, other, b, 0o600)
				os.Symlink(other, r.store.KeyPath(guid1))
			}
			r.latcher.Poll(context.Background())
			s := r.latcher.Current()
			if !s.Latched() || s.Key.GUID == guid1 {
				t.Fatalf("state %q key %s: the unusable file was trusted or nothing was latched", s.State, s.Key)
			}
			if n := len(r.host.RequestsTo("POST", KeyPath)); n != 1 {
				t.Fatalf("%d acquisitions, want 1", n)
			}
			logs := r.logs.String()
			if !strings.Contains(logs, guid1) {
				t.Fatal("the unusable file was not reported")
			}
			assertNoSecret(t, k, logs)
			assertNoSecret(t, s.Key, logs)
		})
	}
}

// TestStoreOnFullTmpfs fills a real 16 KiB tmpfs.
func TestStoreOnFullTmpfs(t *testing.T) {
	testenv.MustBeRoot(t)
	dir := t.TempDir()
	err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=16k,mode=0700")
	testenv.Require(t, "mounting a tmpfs", err)
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	s := openTestStore(t, filepath.Join(dir, "keys"), nil)
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := filler.Write(buf); err != nil {
			break
		}
	}
	filler.Close()
	err = s.Save(testKey(t, guid1))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Save on a full tmpfs: %v, want ENOSPC", err)
	}
	if _, err := s.Load(guid1); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("after a failed save: %v", err)
	}
	os.Remove(filepath.Join(dir, "filler"))
	if err := s.Save(testKey(t, guid1)); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
}

// TestEnsureRulesDir: the agent creates the local rules folder root-only,
// as upstream does, and leaves an existing one as the operator made it.
func TestEnsureRulesDir(t *testing.T) {
	base := t.TempDir()
	s, err := OpenStore(&StoreOptions{Dir: filepath.Join(base, "keys"), Owner: uint32(os.Geteuid())})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second call finds it
		if err := s.EnsureRulesDir(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(s.RulesDir())
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("rules folder %s: %v, %v; want a directory, mode 0700", s.RulesDir(), fi, err)
		}
	}
	if err := os.Chmod(s.RulesDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureRulesDir(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(s.RulesDir()); fi.Mode().Perm() != 0o755 {
		t.Errorf("an existing rules folder was changed to %v", fi.Mode().Perm())
	}
}
