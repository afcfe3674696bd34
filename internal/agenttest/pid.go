package agenttest

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"
)

// GetAsPid is Get from a caller whose process id is pid, such as the pid a
// killed agent had: it sets /proc/sys/kernel/ns_last_pid just below pid
// before each start. Other processes on the machine may take the pid first,
// so it tries a bounded number of times and fails t if none got it. pid
// must be free.
func (e *Env) GetAsPid(t *testing.T, uid uint32, pid int, url string, header map[string]string) Result {
	t.Helper()
	in, err := json.Marshal(callerSpec{Op: "get", URL: url, Header: header})
	if err != nil {
		t.Fatal(err)
	}
	const tries = 50
	for range tries {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Fatalf("set ns_last_pid: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := e.Command(ctx, uid, e.suite.callerBin)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatalf("start caller: %v", err)
		}
		if cmd.Process.Pid != pid {
			// Not ours: it reads an empty spec and exits.
			stdin.Close()
			cmd.Wait()
			cancel()
			continue
		}
		stdin.Write(in)
		stdin.Close()
		var res []Result
		derr := json.NewDecoder(stdout).Decode(&res)
		werr := cmd.Wait()
		cancel()
		if derr != nil || werr != nil || len(res) != 1 {
			t.Fatalf("caller as pid %d: %v, %v, %d results", pid, derr, werr, len(res))
		}
		return res[0]
	}
	t.Fatalf("no caller got pid %d in %d tries", pid, tries)
	return Result{}
}
