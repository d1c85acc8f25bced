package testproxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTunnelsToTheNamedHost checks that a CONNECT to Name:port reaches
// Target, that the tunnel carries bytes both ways, that it is counted, and
// that a missing Proxy-Authorization gets 407.
func TestTunnelsToTheNamedHost(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "echo %s", line)
	}()
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	p := Start(t, Options{Name: "server.test", Target: lis.Addr().String(), Auth: "Basic x"})

	for _, auth := range []string{"", "Basic x"} {
		u, _ := url.Parse(p.URL())
		c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "CONNECT server.test:%s HTTP/1.1\r\nHost: server.test:%s\r\nProxy-Authorization: %s\r\n\r\n", port, port, auth)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth == "" {
			if resp.StatusCode != http.StatusProxyAuthRequired {
				t.Errorf("without credentials: %d, want 407", resp.StatusCode)
			}
			c.Close()
			continue
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		fmt.Fprint(c, "hi\n")
		if got, _ := br.ReadString('\n'); got != "echo hi\n" {
			t.Errorf("through the tunnel: %q", got)
		}
		c.Close()
	}
	if n, hosts := p.Connects(), p.Hosts(); n != 2 || hosts[1] != "server.test:"+port {
		t.Errorf("counted %d CONNECTs to %v", n, hosts)
	}
}
