package grpcchannel_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
)

const (
	defaultTestTimeout      = 10 * time.Second
	defaultTestShortTimeout = 20 * time.Millisecond
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startServer serves a new Server on lis until the test ends.
func startServer(t testing.TB, lis net.Listener, opts ...grpcchannel.ServerOption) *grpcchannel.Server {
	t.Helper()
	srv := grpcchannel.NewServer(opts...)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v, want nil after Stop", err)
		}
	})
	return srv
}

// newDialer returns a Dialer closed when the test ends.
func newDialer(t testing.TB, target string, opts ...grpcchannel.DialOption) *grpcchannel.Dialer {
	t.Helper()
	d, err := grpcchannel.NewDialer(target, opts...)
	if err != nil {
		t.Fatalf("NewDialer(%q) = %v", target, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Dialer.Close() = %v", err)
		}
	})
	return d
}

// connect dials d and accepts the stream on srv: a is the client end, b the
// server end. Both are closed when the test ends.
func connect(t testing.TB, srv *grpcchannel.Server, d *grpcchannel.Dialer) (a, b channel.Conn) {
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

// bufconnDialer dials lis in memory.
func bufconnDialer(lis *bufconn.Listener) grpcchannel.DialOption {
	return grpcchannel.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return lis.DialContext(ctx)
	})
}

// bufconnPipe is a channeltest.MakePipe over an in-memory listener.
func bufconnPipe(t testing.TB) (a, b channel.Conn) {
	lis := bufconn.Listen(1 << 20)
	srv := startServer(t, lis)
	d := newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis))
	return connect(t, srv, d)
}

// tcpPipe is a channeltest.MakePipe over TCP on the loopback interface.
func tcpPipe(t testing.TB) (a, b channel.Conn) {
	lis := listenTCP(t)
	srv := startServer(t, lis)
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	return connect(t, srv, d)
}

func listenTCP(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen() = %v", err)
	}
	return lis
}

// pki is a throw-away certificate authority with a server and a client
// certificate, for TLS tests on the loopback interface.
type pki struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
	rogue  tls.Certificate // a client certificate from another CA
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	caKey, caCert := newCA(t, "exchange test CA")
	p := &pki{pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	p.server = issue(t, caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "controller"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.client = issue(t, caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "connector-1", Organization: []string{"exchange"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	rogueKey, rogueCert := newCA(t, "rogue CA")
	p.rogue = issue(t, rogueCert, rogueKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "intruder"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

func newCA(t testing.TB, name string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// refusingInterceptor is a server option of the caller's whose stream
// interceptor refuses every stream (PermissionDenied) until refuse is
// cleared: gRPC then ends a stream between the tap handle and its handler.
func refusingInterceptor() (refuse *atomic.Bool, deny grpc.ServerOption) {
	refuse = new(atomic.Bool)
	refuse.Store(true)
	deny = grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if refuse.Load() {
			return status.Error(codes.PermissionDenied, "refused by the caller's interceptor")
		}
		return h(srv, ss)
	})
	return refuse, deny
}
