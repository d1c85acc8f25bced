package controller_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/cputime"
)

// BenchmarkRegistration is one connector's registration as a reconnect
// storm makes it, from a controller's side and a bare client's, over gRPC on
// loopback (one process, one shared TCP connection): a Connect stream opens,
// the HELLO is answered, the channel is registered and elected, its PRIMARY
// notice is received and answered, and the stream closes (the controller then
// unregisters it). Each op uses a new target, as a fleet's first start does.
// Time, CPU (cpu-ns/op, the whole process's) and allocations per
// registration, both sides: what a storm's registrations per second on a
// given machine come down to. One at a time, every step waits for the one
// before (wake-ups dominate); 64 in flight, as in a storm, the work does.
func BenchmarkRegistration(b *testing.B) {
	lim := grpcchannel.DefaultServerLimits()
	lim.MaxConcurrentStreams = -1 // no limit: one connection carries every stream, closing and new
	_, ctx, addr := benchController(b, grpcchannel.WithLimits(lim))
	d, err := grpcchannel.NewDialer(addr, grpcchannel.WithInsecure())
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()

	register := func(i int64) error {
		octx, ocancel := context.WithTimeout(ctx, testTimeout)
		defer ocancel()
		conn, err := d.Dial(octx)
		if err != nil {
			return fmt.Errorf("Dial() = %w", err)
		}
		defer conn.Close()
		target := "t" + strconv.FormatInt(i, 10)
		if _, err := channel.Hello(octx, conn, command.HelloPayload{TargetID: target, ConnectorID: target + "-c"}); err != nil {
			return fmt.Errorf("Hello() = %w", err)
		}
		f, err := conn.Recv()
		if err != nil {
			return fmt.Errorf("waiting for the PRIMARY notice: %w", err)
		}
		if f.Command == nil || f.Command.Type != command.TypePrimary {
			return fmt.Errorf("first frame after HELLO = %+v, want a PRIMARY command", f)
		}
		ack, err := command.Succeeded(f.Command, nil)
		if err != nil {
			return err
		}
		if err := conn.Send(&channel.Frame{Reply: ack}); err != nil {
			return fmt.Errorf("answering the PRIMARY notice: %w", err)
		}
		return nil
	}
	if err := register(-1); err != nil { // the connection is up
		b.Fatal(err)
	}
	for _, inFlight := range []int{1, 64} {
		b.Run(fmt.Sprintf("InFlight%d", inFlight), func(b *testing.B) {
			var next atomic.Int64
			next.Store(int64(inFlight) << 32) // targets of their own
			b.SetParallelism(max(inFlight/runtime.GOMAXPROCS(0), 1))
			b.ReportAllocs()
			cpu0 := cputime.Self()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := register(next.Add(1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(cputime.Self()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
