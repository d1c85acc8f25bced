package logadapt_test

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/exchangekit/exchange/cluster/internal/logadapt"
)

func TestStdLog(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	l := logadapt.StdLog(slog.New(h), "memberlist", slog.LevelInfo)
	l.Printf("[DEBUG] memberlist: quiet")
	l.Printf("[INFO] memberlist: Marking n2 as failed")
	l.Printf("[WARN] memberlist: slow")
	l.Printf("[ERR] memberlist: Conflicting address for n1")
	l.Printf("no prefix")
	l.Printf("[odd] kept as is")
	want := "level=INFO msg=\"memberlist: Marking n2 as failed\" logger=memberlist\n" +
		"level=WARN msg=\"memberlist: slow\" logger=memberlist\n" +
		"level=ERROR msg=\"memberlist: Conflicting address for n1\" logger=memberlist\n" +
		"level=INFO msg=\"no prefix\" logger=memberlist\n" +
		"level=INFO msg=\"[odd] kept as is\" logger=memberlist\n"
	if got := buf.String(); got != want {
		t.Errorf("output =\n%s\nwant\n%s", got, want)
	}

	logadapt.StdLog(nil, "x", slog.LevelDebug).Printf("[ERR] discarded") // must not panic
}
