package bench

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// BenchmarkHandlerStack measures what a gRPC server's idle stream costs in
// goroutine stacks, by where its handler waits (docs/benchmarks.md, "Ninth
// pass"): blocked in RecvMsg, as every server that reads its stream is
// (recv); blocked at the top of the handler, reading nothing (shallow); and
// blocked at the top while a goroutine of its own blocks in RecvMsg
// (reader). It reports the stacks in use per stream after the collector has
// shrunk what it can, server and client in one process: the client's share
// is the same in every case, so the differences are the server's.
//
//	go test -run '^$' -bench HandlerStack -benchtime 1x ./bench/
func BenchmarkHandlerStack(b *testing.B) {
	for _, mode := range []string{"recv", "shallow", "reader"} {
		b.Run(mode, func(b *testing.B) {
			var kib float64
			for b.Loop() {
				var err error
				if kib, err = handlerStack(b.Context(), mode, 2000); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(kib, "stack-KiB/stream")
		})
	}
}

// handlerStack opens n idle streams to a server whose handlers wait as mode
// says and returns the stacks in use per stream.
func handlerStack(ctx context.Context, mode string, n int) (float64, error) {
	var waiting atomic.Int64 // handlers (or their readers) about to block
	allWaiting := make(chan struct{})
	wait := func() {
		if waiting.Add(1) == int64(n) {
			close(allWaiting)
		}
	}
	handler := func(_ any, st grpc.ServerStream) error {
		var m emptypb.Empty
		switch mode {
		case "recv":
			wait()
			return st.RecvMsg(&m)
		case "reader":
			// The handler owns its reader: it returns once the reader has
			// (RecvMsg ends with the stream's context).
			read := make(chan struct{})
			go func() {
				defer close(read)
				wait()
				_ = st.RecvMsg(&m)
			}()
			defer func() { <-read }()
		default:
			wait()
		}
		<-st.Context().Done()
		return nil
	}
	desc := grpc.StreamDesc{StreamName: "Idle", Handler: handler, ServerStreams: true, ClientStreams: true}
	gs := grpc.NewServer()
	gs.RegisterService(&grpc.ServiceDesc{ServiceName: "bench.Stack", HandlerType: (*any)(nil), Streams: []grpc.StreamDesc{desc}}, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(ln) }()
	defer func() { gs.Stop(); <-served }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	before := stacksInUse()
	for range n {
		if _, err := cc.NewStream(ctx, &desc, "/bench.Stack/Idle"); err != nil {
			return 0, err
		}
	}
	select {
	case <-allWaiting:
	case <-ctx.Done():
		return 0, fmt.Errorf("%d of %d handlers waiting: %w", waiting.Load(), n, ctx.Err())
	}
	// A goroutine counted as waiting may not have parked yet: read until
	// two readings agree (each after the collections that shrink stacks).
	last := stacksInUse()
	for {
		now := stacksInUse()
		if now == last {
			return float64(now-before) / float64(n) / 1024, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		last = now
	}
}

// stacksInUse is the stacks in use after two collections (a collection
// shrinks the stacks of parked goroutines that use under a quarter of theirs).
func stacksInUse() uint64 {
	_, stacks := inUse()
	return stacks
}
