package controller_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/controller"
)

// The batch runner must see a controller's "no channel" as batch.ErrNoChannel
// (wait for the target, spend no retry), through any wrapping.
func TestNoChannelErrorIsBatchNoChannel(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("send ECHO to t1: %w", &controller.NoChannelError{TargetID: "t1"})
	if !errors.Is(err, controller.ErrNoChannel) || !errors.Is(err, batch.ErrNoChannel) {
		t.Errorf("errors.Is(%v): ErrNoChannel %t, batch.ErrNoChannel %t; want both", err,
			errors.Is(err, controller.ErrNoChannel), errors.Is(err, batch.ErrNoChannel))
	}
	if errors.Is(errors.New("other"), batch.ErrNoChannel) {
		t.Error("an unrelated error matched batch.ErrNoChannel")
	}
}
