package controller_test

import (
	"bytes"
	"testing"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// The answer the health loop recognises without decoding is the one a
// healthy connector of this module sends: the fast path is taken, and it
// agrees with the decoded one.
func TestHealthyPayloadIsTheUsualAnswer(t *testing.T) {
	b, err := command.Encode(command.HealthCheckReplyPayload{Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, controller.HealthyPayload) {
		t.Fatalf("a healthy reply encodes as %s, the health loop recognises %s", b, controller.HealthyPayload)
	}
	p, err := command.Decode[command.HealthCheckReplyPayload](controller.HealthyPayload)
	if err != nil || !p.Healthy || p.Detail != "" {
		t.Fatalf("Decode(%s) = %+v, %v; want healthy", controller.HealthyPayload, p, err)
	}
}
