package logadapt_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/exchangekit/exchange/cluster/internal/logadapt"
)

func newLogger(minLevel slog.Level) (hclog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug - 4,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return logadapt.HCLog(slog.New(h), "raft", minLevel), &buf
}

func TestLevels(t *testing.T) {
	l, buf := newLogger(slog.LevelWarn)
	l.Info("quiet")
	l.Debug("quiet")
	l.Warn("loud", "k", 1)
	l.Error("louder")
	want := "level=WARN msg=loud logger=raft k=1\nlevel=ERROR msg=louder logger=raft\n"
	if got := buf.String(); got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	if l.IsInfo() || !l.IsWarn() || l.GetLevel() != hclog.Warn {
		t.Errorf("IsInfo() = %v, IsWarn() = %v, GetLevel() = %v; want false, true, warn", l.IsInfo(), l.IsWarn(), l.GetLevel())
	}

	buf.Reset()
	child := l.Named("transport").With("peer", "n2")
	l.SetLevel(hclog.Trace) // shared with derived loggers, as in hclog
	child.Trace("dial", "try", 2)
	want = "level=DEBUG-4 msg=dial logger=raft.transport peer=n2 try=2\n"
	if got := buf.String(); got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	if child.Name() != "raft.transport" || len(child.ImpliedArgs()) != 2 {
		t.Errorf("Name() = %q, ImpliedArgs() = %v", child.Name(), child.ImpliedArgs())
	}

	buf.Reset()
	l.SetLevel(hclog.Off)
	l.Error("silenced")
	if buf.Len() != 0 {
		t.Errorf("output after SetLevel(Off) = %q, want none", buf.String())
	}
}

func TestFormatAndStandardLogger(t *testing.T) {
	l, buf := newLogger(slog.LevelInfo)
	l.Info("cfg", "servers", hclog.Fmt("%d servers", 3), "empty", hclog.Format{})
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}).Print("from log.Logger")
	want := "level=INFO msg=cfg logger=raft servers=\"3 servers\" empty=\"\"\n" +
		"level=WARN msg=\"from log.Logger\" logger=raft\n"
	if got := buf.String(); got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	if n, err := l.StandardWriter(nil).Write([]byte("line\n")); err != nil || n != 5 {
		t.Errorf("StandardWriter().Write() = %d, %v", n, err)
	}
	if !strings.HasSuffix(buf.String(), "level=INFO msg=line logger=raft\n") {
		t.Errorf("output = %q, want the written line at Info", buf.String())
	}
}

func TestNilLogger(t *testing.T) {
	l := logadapt.HCLog(nil, "raft", slog.LevelDebug)
	l.Error("dropped") // must not panic
	if l.IsError() {
		t.Errorf("IsError() = true on a discarding logger")
	}
}

// Demote logs chosen warnings at Info, from derived loggers too.
func TestDemote(t *testing.T) {
	l, buf := newLogger(slog.LevelDebug)
	named := l.Named("x")
	logadapt.Demote(l, func(msg string) bool { return msg == "routine" })
	named.Warn("routine")
	named.Warn("alarming")
	got := buf.String()
	if !strings.Contains(got, `level=INFO msg=routine`) || !strings.Contains(got, `level=WARN msg=alarming`) {
		t.Errorf("logged:\n%s\nwant routine at INFO, alarming at WARN", got)
	}
	buf.Reset()
	logadapt.Demote(l, nil)
	named.Warn("routine")
	if got := buf.String(); !strings.Contains(got, `level=WARN msg=routine`) {
		t.Errorf("logged %q after Demote(nil), want WARN", got)
	}
}
