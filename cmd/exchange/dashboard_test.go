package main

// The dashboard in a real browser: headless Chromium (Debian's package,
// installed by scripts/install-chromium.sh, which `make test` runs) driven
// by chromedp, against a controller binary with connector binaries.

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/exchangekit/exchange/management"
)

var screenshot = flag.String("screenshot", "", "TestDashboard also writes a PNG of the dashboard to this file (make screenshot)")

// browserStep bounds each wait in the page: a dashboard that never shows
// what is expected fails here rather than at the test's deadline.
const browserStep = 15 * time.Second

// chromiumPath finds Debian's chromium.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: run scripts/install-chromium.sh (make deps; make test runs it)")
	return ""
}

// newBrowser starts headless Chromium and returns a tab's context.
func newBrowser(ctx context.Context, t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // root, here and on CI
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1440, 1100),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	tctx, tcancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		tcancel()
		acancel() // waits for the browser to exit
	})
	if err := chromedp.Do(tctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("start chromium: %v", err)
	}
	return tctx
}

// in runs actions in the tab, each call bounded by browserStep.
func in(t *testing.T, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserStep)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		hctx, hcancel := context.WithTimeout(tab, 5*time.Second)
		html, _ := chromedp.Run(hctx, chromedp.OuterHTML(chromedp.CSS("body")))
		hcancel()
		t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
}

// shows waits until an element matching the XPath expression is visible.
func shows(xpath string) chromedp.Action[chromedp.Void] { return chromedp.WaitVisible(xpath) }

// read returns the text of the element with the given id.
func read(t *testing.T, tab context.Context, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserStep)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("read #%s: %v", id, err)
	}
	return s
}

// TestDashboard: the page loads against a running controller, asks for the
// token, shows the cluster, the targets, their channels and primaries; when
// the primary's connector is killed, the new primary appears without a
// reload; a command sent from the form shows its reply; a batch shows up.
func TestDashboard(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	tab := newBrowser(ctx, t)

	_, grpcAddr, httpURL := startController(ctx, t, "--in-memory", "--management-token", "mt", "--node-id", "node-1")
	c1 := start(t, "c1", "connector", "--controller", grpcAddr, "--target", "t1", "--id", "c1")
	c1.waitLine(ctx, 0, primaryRe) // c1 first: it is t1's primary
	c2 := start(t, "c2", "connector", "--controller", grpcAddr, "--target", "t1", "--id", "c2")
	c3 := start(t, "c3", "connector", "--controller", grpcAddr, "--target", "t2", "--id", "c3")
	c3.waitLine(ctx, 0, primaryRe)
	c2.waitLine(ctx, 0, regexp.MustCompile(`^CONNECTED `))

	in(t, tab, "open the page and give the token",
		chromedp.Navigate(httpURL+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "mt"),
		chromedp.Click(`//form[@id="login-form"]//button`),
		chromedp.WaitNotVisible(chromedp.ID("login")),
	)
	in(t, tab, "the cluster, the targets, t1's channels and its primary",
		shows(`//*[@id="live" and text()="live"]`),
		shows(`//*[@id="cluster-summary" and contains(text(), "leader node-1")]`),
		shows(`//*[@id="cluster"]//tr[@data-node="node-1"]`),
		shows(`//*[@id="targets"]/li[@data-target="t1" and contains(., "2/2 channels")]`),
		shows(`//*[@id="targets"]/li[@data-target="t2"]`),
		shows(`//*[@id="channels"]//tr[@data-connector="c1" and @data-primary="true"]`),
		shows(`//*[@id="channels"]//tr[@data-connector="c2" and @data-primary="false"]`),
		shows(`//*[@id="primary-connector" and text()="c1"]`),
	)
	epoch1 := read(t, tab, "primary-epoch")

	// The primary's connector dies: the page follows the event stream.
	if err := c1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	in(t, tab, "the new primary, without a reload",
		shows(`//*[@id="events"]/li[@data-kind="channel_unregistered" and contains(., "c1")]`),
		shows(`//*[@id="events"]/li[@data-kind="primary_elected" and contains(., "c2")]`),
		shows(`//*[@id="primary-connector" and text()="c2"]`),
		shows(`//*[@id="channels"]//tr[@data-connector="c2" and @data-primary="true"]`),
		chromedp.WaitNotPresent(`//*[@id="channels"]//tr[@data-connector="c1"]`),
		shows(`//*[@id="targets"]/li[@data-target="t1" and contains(., "1/1 channels")]`),
	)
	epoch2 := read(t, tab, "primary-epoch")
	if epoch2 == epoch1 || epoch2 == "" {
		t.Errorf("epoch %q after the failover, was %q: want a new one", epoch2, epoch1)
	}

	// A command from the form, and its reply; the latency histogram counts it.
	in(t, tab, "send a command from the form",
		chromedp.SetValue(chromedp.ID("send-payload"), `{"from": "the browser test"}`),
		chromedp.Click(chromedp.ID("send")),
		shows(`//*[@id="reply-meta" and contains(text(), "SUCCEEDED from connector c2")]`),
		shows(`//*[@id="reply" and contains(text(), "the browser test")]`),
		shows(`//*[@id="latency-summary" and contains(text(), "1 sent")]`),
	)

	// A batch, created elsewhere, appears with its status.
	cl, err := management.NewClient(httpURL, "mt", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cl.CreateBatch(ctx, management.BatchRequest{TargetID: "t2", Key: "deploy-7",
		Commands: []management.BatchCommandRequest{{Type: "ECHO"}, {Type: "ECHO"}}})
	if err != nil {
		t.Fatalf("create a batch: %v", err)
	}
	in(t, tab, "the batch, live",
		shows(fmt.Sprintf(`//*[@id="batches"]//tr[@data-batch=%q and contains(., "SUCCEEDED")]`, b.ID)),
		shows(`//*[@id="events"]/li[@data-kind="batch_succeeded"]`),
	)

	if *screenshot != "" {
		sctx, scancel := context.WithTimeout(tab, browserStep)
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // 100: PNG
		scancel()
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", *screenshot, len(png))
	}
	if !strings.HasPrefix(httpURL, "http://127.0.0.1:") {
		t.Errorf("the controller's API is at %s, want loopback", httpURL)
	}
}
