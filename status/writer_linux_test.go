package status

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/metadatasec/gpa/internal/testenv"
	"golang.org/x/sys/unix"
)

const roChildEnv = "GPA_STATUS_TEST_RO_DIR"

// TestWriterReadOnlyFolder makes the status folder a read-only bind mount,
// which stops root as ProtectSystem=strict would. The mount lives in a
// private mount namespace of a child copy of this test binary, so nothing
// outside the child ever sees it.
func TestWriterReadOnlyFolder(t *testing.T) {
	if dir := os.Getenv(roChildEnv); dir != "" {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind mount: %v", err)
		}
		if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			t.Fatalf("read-only remount: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "probe"), nil, 0o600); err == nil {
			t.Fatal("folder is still writable after the read-only remount")
		}
		checkWriteFailureReported(t, filepath.Join(dir, "status.json"))
		return
	}
	testenv.MustBeRoot(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriterReadOnlyFolder$", "-test.v")
	cmd.Env = append(os.Environ(), roChildEnv+"="+dir)
	// Go makes the new namespace's mounts private before exec.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}
