package wschannel_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/channeltest"
	"github.com/exchangekit/exchange/channel/wschannel"
)

const defaultTestTimeout = 10 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startServer serves a new Server on loopback (over TLS if useTLS) until the
// test ends, and returns it with a Dialer for it.
func startServer(t testing.TB, useTLS bool, cfg wschannel.Config) (*wschannel.Server, *wschannel.Dialer) {
	t.Helper()
	srv := wschannel.NewServer(cfg)
	ts := httptest.NewUnstartedServer(srv)
	if useTLS {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	t.Cleanup(func() { _ = srv.Close() })
	d := &wschannel.Dialer{URL: ts.URL, Config: cfg}
	if useTLS {
		d.TLSConfig = ts.Client().Transport.(*http.Transport).TLSClientConfig
	}
	return srv, d
}

// connect dials d and accepts the connection on srv: a is the client end, b
// the server end. Both are closed when the test ends.
func connect(t testing.TB, srv *wschannel.Server, d *wschannel.Dialer) (a, b channel.Conn) {
	t.Helper()
	ctx := testContext(t)
	a, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	b, err = srv.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return a, b
}

func tcpPipe(t testing.TB) (channel.Conn, channel.Conn) {
	srv, d := startServer(t, false, wschannel.Config{})
	return connect(t, srv, d)
}

func tlsPipe(t testing.TB) (channel.Conn, channel.Conn) {
	srv, d := startServer(t, true, wschannel.Config{})
	return connect(t, srv, d)
}

func TestConformanceTCP(t *testing.T) {
	channeltest.TestConn(t, tcpPipe)
	channeltest.TestChannel(t, tcpPipe)
}

func TestConformanceTLS(t *testing.T) {
	channeltest.TestConn(t, tlsPipe)
	channeltest.TestChannel(t, tlsPipe)
}

func BenchmarkWebSocket(b *testing.B) {
	b.Run("tcp", func(b *testing.B) { channeltest.RunBenchmarks(b, tcpPipe) })
}
