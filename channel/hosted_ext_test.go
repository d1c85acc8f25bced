package channel_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// A Channel from NewHosted reads only while its owner runs the loop: a
// command waits for it, is answered once it runs, and the loop returns once
// the channel is dead, whether the peer closed or the owner did.
func TestNewHosted(t *testing.T) {
	for _, end := range []string{"peer closes", "owner closes"} {
		t.Run(end, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := embedded.Pipe()
				mux := command.NewMux()
				mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
					return command.Succeeded(c, nil)
				})
				hosted, loop := channel.NewHosted(a, mux, channel.Config{})
				peer := channel.New(b, nil, channel.Config{})
				defer peer.Close()

				replied := make(chan error, 1)
				go func() {
					_, err := peer.Send(t.Context(), command.MustCommand("ECHO", "hi"))
					replied <- err
				}()
				synctest.Wait()
				if len(replied) != 0 {
					t.Fatal("the command was answered before the owner ran the read loop")
				}

				looped := make(chan struct{})
				go func() { defer close(looped); loop() }()
				if err := <-replied; err != nil {
					t.Fatalf("Send through the hosted channel: %v", err)
				}
				synctest.Wait()
				select {
				case <-looped:
					t.Fatal("the loop returned while the channel lives")
				default:
				}

				if end == "peer closes" {
					_ = peer.Close()
				} else {
					_ = hosted.Close() // waits for the loop too
				}
				<-looped
				if err := hosted.Err(); err == nil {
					t.Fatal("the loop returned and the channel is alive")
				}
				if end == "owner closes" && !errors.Is(hosted.Err(), channel.ErrClosed) {
					t.Errorf("Err() after Close = %v, want ErrClosed", hosted.Err())
				}
				_ = hosted.Close()
			})
		})
	}
}
