//go:build unix

package cluster_test

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/state"
)

// The crash tests re-execute this test binary as a child that opens a node,
// applies ops and prints "ack <channel id>" after each Apply that returned
// nil, then dies without Close. The parent reopens the data directory and
// checks that every acknowledged op is there: an acknowledged Apply is on
// disk.
const (
	crashDirEnv  = "EXCHANGE_CLUSTER_CRASH_DIR"
	crashModeEnv = "EXCHANGE_CLUSTER_CRASH_MODE" // "exit" or "stream"
	crashOps     = 200                           // ops applied in "exit" mode
	crashKillAt  = 150                           // acks read before SIGKILL in "stream" mode
)

func TestCrashDurability(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(t, dir, os.Getenv(crashModeEnv)) // exits the process
		return
	}
	t.Run("ExitWithoutClose", func(t *testing.T) {
		// The child applies crashOps ops one by one, then os.Exit(0)
		// without Close: like kill -9 right after the last ack.
		dir := t.TempDir()
		acked := runCrashChild(t, dir, "exit", 0)
		if len(acked) != crashOps {
			t.Fatalf("child acknowledged %d ops, want %d", len(acked), crashOps)
		}
		checkAcked(t, dir, acked, false)
	})
	t.Run("SIGKILL", func(t *testing.T) {
		// The child applies from 8 goroutines, snapshotting and compacting
		// its log as it goes; the parent kills it mid-stream.
		dir := t.TempDir()
		acked := runCrashChild(t, dir, "stream", crashKillAt)
		if len(acked) < crashKillAt {
			t.Fatalf("child acknowledged %d ops before dying, want at least %d", len(acked), crashKillAt)
		}
		checkAcked(t, dir, acked, true)
	})
}

// runCrashChild runs the child on dir and returns the ids it acknowledged.
// killAt > 0: SIGKILL the child once it has acknowledged killAt ops (it goes
// on acknowledging until the signal lands; those acks count too).
func runCrashChild(t *testing.T, dir, mode string, killAt int) []string {
	t.Helper()
	ctx := testCtx(t)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashDurability$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashModeEnv+"="+mode)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("StdoutPipe() = %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	var acked []string
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() { // until the child's stdout closes: it has exited
		id, ok := strings.CutPrefix(sc.Text(), "ack ")
		if !ok {
			continue
		}
		acked = append(acked, id)
		if killAt > 0 && len(acked) >= killAt && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Errorf("SIGKILL child: %v", err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	t.Logf("child: %d acks, %v; stderr:\n%s", len(acked), cmd.ProcessState, stderr.String())
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ctx.Err() != nil:
		t.Fatalf("child did not finish in time: %v", ctx.Err())
	case killAt > 0 && !(ws.Signaled() && ws.Signal() == syscall.SIGKILL):
		t.Fatalf("child ended with %v, want killed by SIGKILL", cmd.ProcessState)
	case killAt == 0 && err != nil:
		t.Fatalf("child ended with %v, want exit status 0", err)
	}
	return acked
}

// checkAcked reopens dir and checks that every acknowledged channel is there
// (and, with snapshotted, that the node restarted from a snapshot).
func checkAcked(t *testing.T, dir string, acked []string, snapshotted bool) {
	t.Helper()
	n := open(t, testConfig(t, dir))
	if st := n.Stats(); snapshotted && st.LastSnapshotIndex == 0 {
		t.Errorf("Stats() after restart = %+v, want a snapshot restored", st)
	}
	n.View(func(s *state.State) {
		for _, id := range acked {
			if _, ok := s.Channels[id]; !ok {
				t.Errorf("acknowledged channel %s lost", id)
			}
		}
		if uint64(len(s.Channels)) != s.Seq {
			t.Errorf("%d channels with Seq %d: every register applied counts once", len(s.Channels), s.Seq)
		}
		t.Logf("%d acknowledged, %d in the state after restart", len(acked), len(s.Channels))
	})
}

// crashChild is the child process. It never returns.
func crashChild(t *testing.T, dir, mode string) {
	ctx := testCtx(t)
	die := func(code int, format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		os.Exit(code)
	}
	cfg := cluster.DefaultConfig()
	cfg.NodeID = "node-1"
	cfg.DataDir = dir
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.HeartbeatTimeout = 20 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 20 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if mode == "stream" {
		// Snapshot and compact the log often, so the kill may land in
		// the middle of either.
		cfg.SnapshotInterval = 20 * time.Millisecond
		cfg.SnapshotThreshold = 32
		cfg.TrailingLogs = 8
	}
	n, err := cluster.Open(ctx, cfg)
	if err != nil {
		die(2, "child: Open() = %v", err)
	}
	ack := func(id string) { _, _ = os.Stdout.WriteString("ack " + id + "\n") } // one write: atomic on a pipe
	switch mode {
	case "exit":
		for i := range crashOps {
			id := fmt.Sprintf("c-%d", i)
			if err := state.Err(n.Apply(ctx, register(id, fmt.Sprintf("t-%d", i%7)))); err != nil {
				die(3, "child: Apply(%s) = %v", id, err)
			}
			ack(id)
		}
		os.Exit(0) // no Close: the process just ends
	case "stream":
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					id := fmt.Sprintf("c-%d-%d", w, i)
					if err := state.Err(n.Apply(ctx, register(id, fmt.Sprintf("t-%d", w)))); err != nil {
						die(3, "child: Apply(%s) = %v", id, err)
					}
					ack(id)
					if w == 0 && i == 10 {
						if err := n.Snapshot(ctx); err != nil {
							die(3, "child: Snapshot() = %v", err)
						}
					}
				}
			})
		}
		wg.Wait()
		die(4, "child: never killed")
	}
	die(5, "child: unknown mode %q", mode)
}
