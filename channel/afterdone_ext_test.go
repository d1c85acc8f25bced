package channel_test

import (
	"errors"
	"testing"
	"testing/synctest"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
)

// AfterDone runs its functions once the channel dies (Err already set), each
// on a goroutine of its own; stop before that deregisters a function, stop
// after it reports false; on a dead channel the function runs at once.
func TestAfterDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := embedded.Pipe()
		defer b.Close()
		ch := channel.New(a, nil, channel.Config{})

		ran := make(chan error, 3)
		record := func() { ran <- ch.Err() }
		stopFirst := ch.AfterDone(record)
		stopSecond := ch.AfterDone(record)
		stopped := ch.AfterDone(func() { t.Error("a stopped function ran") })
		if !stopped() {
			t.Fatal("stop() before the channel died = false, want true")
		}
		if stopped() {
			t.Fatal("a second stop() = true, want false")
		}
		synctest.Wait()
		if len(ran) != 0 {
			t.Fatal("a function ran before the channel died")
		}

		_ = ch.Close()
		for range 2 {
			if err := <-ran; !errors.Is(err, channel.ErrClosed) {
				t.Errorf("Err() seen by a function = %v, want ErrClosed", err)
			}
		}
		if stopFirst() || stopSecond() {
			t.Error("stop() after the functions ran = true, want false")
		}

		stopLate := ch.AfterDone(record) // dead already: runs at once
		if err := <-ran; !errors.Is(err, channel.ErrClosed) {
			t.Errorf("Err() seen by a late function = %v, want ErrClosed", err)
		}
		if stopLate() {
			t.Error("stop() of a function that ran at once = true, want false")
		}
	})
}
