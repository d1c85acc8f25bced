package grpcchannel_test

import (
	"testing"

	"github.com/exchangekit/exchange/channel/grpcchannel"
)

// A Dialer names its target, so a connector's logs can name the endpoint.
func TestDialerString(t *testing.T) {
	d, err := grpcchannel.NewDialer("ctl-1.example:7400", grpcchannel.WithInsecure())
	if err != nil {
		t.Fatalf("NewDialer() = %v", err)
	}
	defer d.Close()
	if got := d.String(); got != "ctl-1.example:7400" {
		t.Errorf("String() = %q, want the target", got)
	}
}
