package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate to dir, as PEM files, and returns their paths.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	// nodeCert is for cluster nodes: valid for 127.0.0.1, usable as a
	// server and as a client certificate (nodes dial each other's links).
	nodeCert, nodeKey string
}

func newPKI(t *testing.T, dir, clientCN string) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "exchange-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usages []x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: usages, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "EC PRIVATE KEY", der)
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	sDER, sKey := issue(2, "controller", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, loopback)
	cDER, cKey := issue(3, clientCN, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil)
	nDER, nKey := issue(4, "node", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, loopback)
	return pki{
		ca:         write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", sDER), serverKey: writeKey("server-key.pem", sKey),
		clientCert: write("client.pem", "CERTIFICATE", cDER), clientKey: writeKey("client-key.pem", cKey),
		nodeCert: write("node.pem", "CERTIFICATE", nDER), nodeKey: writeKey("node-key.pem", nKey),
	}
}

// Mutual TLS through the command line: the controller requires client
// certificates from its CA, the connector presents one, and the channel
// records the certificate's subject.
func TestEndToEndMutualTLS(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	p := newPKI(t, t.TempDir(), "edge-42.example")
	ctrl, grpcAddr, httpURL := startController(ctx, t, "--in-memory",
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.ca)

	conn := start(t, "connector", "connector", "--controller", grpcAddr, "--target", "secure", "--id", "edge-42.example",
		"--tls-ca", p.ca, "--tls-cert", p.clientCert, "--tls-key", p.clientKey)
	conn.waitLine(ctx, 0, regexp.MustCompile(`^PRIMARY connector=edge-42\.example target=secure`))

	var channels []struct {
		ConnectorID string            `json:"connectorId"`
		Metadata    map[string]string `json:"metadata"`
	}
	if code := getJSON(ctx, t, httpURL+"/exchange/channels?targetId=secure", &channels); code != http.StatusOK || len(channels) != 1 {
		t.Fatalf("GET /exchange/channels?targetId=secure: %d, %d channels", code, len(channels))
	}
	var subject string
	for k, v := range channels[0].Metadata {
		if strings.Contains(k, "tls.subject") {
			subject = v
		}
	}
	if !strings.Contains(subject, "edge-42.example") {
		t.Errorf("channel metadata %v: want the client certificate's subject CN=edge-42.example", channels[0].Metadata)
	}

	// A connector without a client certificate never gets a channel: the TLS
	// handshake refuses it before HELLO, and it keeps backing off.
	anon := start(t, "anonymous", "connector", "--controller", grpcAddr, "--target", "secure", "--id", "anon",
		"--tls-ca", p.ca)
	anon.waitLine(ctx, 0, regexp.MustCompile(`connection attempt failed`))
	anon.stop(ctx)
	var out, errb strings.Builder
	code := run(ctx, []string{"ctl", "--addr", httpURL, "channels"}, &out, &errb)
	if code != 0 || strings.Count(out.String(), "secure") != 1 {
		t.Errorf("ctl channels: exit %d, output:\n%s", code, out.String())
	}
	conn.stop(ctx)
	ctrl.stop(ctx)
}

// TestEndToEndClusterTLS: with --tls-cert, --tls-key and --tls-client-ca on
// every node, connectors and the node-to-node links both use mutual TLS: a
// command sent on one node reaches a connector on another.
func TestEndToEndClusterTLS(t *testing.T) {
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	p := newPKI(t, t.TempDir(), "edge-7.example")
	nodes := newClusterNodes(t, 3)
	for _, n := range nodes {
		n.extra = []string{"--tls-cert", p.nodeCert, "--tls-key", p.nodeKey, "--tls-client-ca", p.ca}
	}
	startCluster(ctx, t, hc, nodes)
	waitClusterLeader(ctx, t, nodes)
	conn := start(t, "connector", "connector", "--controller", nodes[0].grpc, "--target", "secure", "--id", "edge-7.example",
		"--tls-ca", p.ca, "--tls-cert", p.clientCert, "--tls-key", p.clientKey)
	conn.waitLine(ctx, 0, regexp.MustCompile(`^PRIMARY connector=edge-7\.example target=secure`))
	waitTargets(ctx, t, nodes, []string{"secure"}, "", 1)
	for _, n := range nodes[1:] {
		if err := echo(ctx, n, "secure"); err != nil {
			t.Errorf("command via %s to a connector on %s, over a TLS link: %v", n.id, nodes[0].id, err)
		}
	}
	conn.stop(ctx)
	for _, n := range nodes {
		n.p.stop(ctx)
	}
}
