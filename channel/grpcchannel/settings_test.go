package grpcchannel_test

import (
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/exchangekit/exchange/channel/grpcchannel"
)

// TestServerSettingsForQuietStreams reads the SETTINGS frame the server
// opens every connection with, as a client's HTTP/2 stack does: fixed
// flow-control windows (decision 0033), and no dynamic table for the
// headers a client sends it (decision 0053), whose entries an idle
// connection would otherwise keep for its whole life.
func TestServerSettingsForQuietStreams(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, lis)

	conn, err := net.DialTimeout("tcp", lis.Addr().String(), defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(defaultTestTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's frames: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		if v, ok := sf.Value(http2.SettingHeaderTableSize); !ok || v != 0 {
			t.Errorf("SETTINGS_HEADER_TABLE_SIZE = %d (sent: %t), want 0", v, ok)
		}
		if v, ok := sf.Value(http2.SettingInitialWindowSize); !ok || v != grpcchannel.FlowWindow {
			t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE = %d (sent: %t), want %d", v, ok, grpcchannel.FlowWindow)
		}
		return
	}
}
