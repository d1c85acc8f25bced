package connector_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/command"
)

// A connected connector reads its channel on Run's own goroutine
// (channel.NewHosted): besides Run, it owns no goroutine while idle (the
// notifier runs only while it has events to deliver).
func TestConnectedConnectorReadsOnRunsGoroutine(t *testing.T) {
	ctx := testContext(t)
	f := newFakeController(t) // its side is a channel.New over an embedded Conn: a reader of its own
	c := newConnector(t, testConfig(t), nil, f.dialer())
	errc := start(t, c)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	// A round trip: the connector's reader is running by then.
	if r := f.next(ctx).send(ctx, t, command.TypeHealthCheck, nil); !r.Succeeded() {
		t.Fatalf("HEALTH_CHECK = %+v", r)
	}

	buf := make([]byte, 1<<20)
	stacks := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
	var own, hosted int
	for _, g := range stacks {
		if strings.Contains(g, "channel.(*Channel).ownReadLoop") {
			own++
		}
		if strings.Contains(g, "connector.(*Connector).serve") && strings.Contains(g, "channel.(*Channel).hostedReadLoop") {
			hosted++
		}
	}
	if own != 1 || hosted != 1 {
		t.Errorf("goroutines reading a channel: %d on Run's goroutine (want 1), %d of a channel's own (want 1: the controller's side)", hosted, own)
	}
	_ = c.Close()
	if err := waitRun(ctx, t, errc); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
