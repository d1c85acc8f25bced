package grpcchannel_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/internal/freeport"
)

// After a long outage, a Dialer's connection is back at the server's return,
// not after gRPC's reconnect backoff (1 s growing by 1.6 to 120 s, which
// after 10 s of failed attempts would put the next one 4.5–7 s after a return
// at 10 s): Dial resets that backoff when it finds the connection failed, so
// the connector's own backoff decides when a connector comes back.
func TestDialerReconnectsSoonAfterAnOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	addr, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	d := newDialer(t, addr, grpcchannel.WithInsecure())

	// The outage: nothing listens; the connector's Dials fail (fast, or
	// refused), every 100 ms.
	outage := time.Now().Add(10 * time.Second)
	for time.Now().Before(outage) {
		if c, err := d.Dial(ctx); err == nil {
			_ = c.Close()
			t.Fatal("Dial() succeeded with nothing listening")
		} else if !errors.Is(err, grpcchannel.ErrUnavailable) {
			t.Fatalf("Dial() with nothing listening = %v, want ErrUnavailable", err)
		}
		time.Sleep(100 * time.Millisecond) // the pace of a retrying connector, not a synchronisation
	}

	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("Listen(%s) after the outage = %v", addr, err)
	}
	srv := startServer(t, lis)
	back := time.Now()
	for {
		c, err := d.Dial(ctx)
		if err == nil {
			t.Logf("connected %v after the server's return", time.Since(back).Round(10*time.Millisecond))
			_ = c.Close()
			break
		}
		if time.Since(back) > 3*time.Second {
			t.Fatalf("Dial() still failing %v after the server's return: %v", time.Since(back).Round(10*time.Millisecond), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = srv
}
