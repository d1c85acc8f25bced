package grpcchannel_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/channeltest"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
)

// wireCounter counts the gRPC messages of Connect streams as the server sees
// them, through a stream interceptor: what the client sent (recv) and what
// the server sent (sent).
type wireCounter struct {
	mu                       sync.Mutex
	recvMsgs, recvBatches    int
	sentMsgs, sentBatches    int
	recvBatched, sentBatched int
}

func (w *wireCounter) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &countingStream{ServerStream: ss, w: w})
}

func (w *wireCounter) count(m any, sent bool) {
	ok, batch, frames := grpcchannel.WireMessage(m)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	msgs, batches, batched := &w.recvMsgs, &w.recvBatches, &w.recvBatched
	if sent {
		msgs, batches, batched = &w.sentMsgs, &w.sentBatches, &w.sentBatched
	}
	*msgs++
	if batch {
		*batches++
		*batched += frames
	}
}

func (w *wireCounter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("client→server: %d messages, %d batches of %d frames; server→client: %d messages, %d batches of %d frames",
		w.recvMsgs, w.recvBatches, w.recvBatched, w.sentMsgs, w.sentBatches, w.sentBatched)
}

type countingStream struct {
	grpc.ServerStream
	w *wireCounter
}

func (s *countingStream) SendMsg(m any) error {
	s.w.count(m, true)
	return s.ServerStream.SendMsg(m)
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.w.count(m, false)
	}
	return err
}

// A burst of commands queued behind a busy writer crosses gRPC as batch
// messages, in both directions, from a side that coalesces; a side that does
// not (its peer did not announce the "batch" capability) never sends one.
func TestBatchOnTheWire(t *testing.T) {
	const n = 16
	for _, tc := range []struct {
		name                             string
		clientCoalesces, serverCoalesces bool
	}{
		{"BothCoalesce", true, true},
		{"NeitherCoalesces", false, false},
		{"OnlyClientCoalesces", true, false}, // the server's peer is an old client
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			w := &wireCounter{}
			lis := listenTCP(t)
			srv := startServer(t, lis, grpcchannel.WithServerOptions(grpc.StreamInterceptor(w.intercept)))
			d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
			a, b := connect(t, srv, d)

			events := make(chan string, 2*n)
			mux := command.NewMux()
			mux.RegisterFunc("EVENT", func(_ context.Context, c *command.Command) (*command.Reply, error) {
				events <- c.ID
				return nil, nil
			})
			fa, fb := channeltest.NewFaultConn(a), channeltest.NewFaultConn(b)
			ca := channel.New(fa, mux, channel.Config{Coalesce: tc.clientCoalesces})
			t.Cleanup(func() { _ = ca.Close() })
			cb := channel.New(fb, mux, channel.Config{Coalesce: tc.serverCoalesces})
			t.Cleanup(func() { _ = cb.Close() })

			// Hold both writers, queue a burst on each side, let go.
			fa.Stall(channeltest.DirSend)
			fb.Stall(channeltest.DirSend)
			for i := range n {
				for _, side := range []struct {
					name string
					ch   *channel.Channel
				}{{"client", ca}, {"server", cb}} {
					if err := side.ch.Notify(ctx, &command.Command{ID: side.name + "-" + strconv.Itoa(i), Type: "EVENT"}); err != nil {
						t.Fatalf("%s Notify() = %v", side.name, err)
					}
				}
			}
			fa.Unstall()
			fb.Unstall()
			seen := map[string]bool{}
			for len(seen) < 2*n {
				select {
				case id := <-events:
					seen[id] = true
				case <-ctx.Done():
					t.Fatalf("%d of %d events handled before %v (%s)", len(seen), 2*n, context.Cause(ctx), w)
				}
			}

			w.mu.Lock()
			recvBatches, sentBatches := w.recvBatches, w.sentBatches
			w.mu.Unlock()
			t.Log(w)
			if got := recvBatches > 0; got != tc.clientCoalesces {
				t.Errorf("client sent batches: %t, want %t (%s)", got, tc.clientCoalesces, w)
			}
			if got := sentBatches > 0; got != tc.serverCoalesces {
				t.Errorf("server sent batches: %t, want %t (%s)", got, tc.serverCoalesces, w)
			}
		})
	}
}
