package wschannel_test

import (
	"testing"

	"github.com/exchangekit/exchange/channel/wschannel"
)

// A Dialer names its URL, password redacted, so a connector's logs can name
// the endpoint.
func TestDialerString(t *testing.T) {
	d := &wschannel.Dialer{URL: "wss://gw:s3cret@ctl-1.example:8062/root"}
	if got, want := d.String(), "wss://gw:xxxxx@ctl-1.example:8062/root"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
