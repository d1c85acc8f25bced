package main

// The dashboard in a real browser: headless Chromium (Debian's package,
// installed by scripts/install-chromium.sh, which `make test` runs) driven
// by chromedp, against a controller binary with connector binaries.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/management"
	"github.com/exchangekit/exchange/state"
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

// newBrowser starts headless Chromium and returns a tab's context, and a
// function that closes the browser (also called at the end of the test).
func newBrowser(ctx context.Context, t *testing.T) (context.Context, func()) {
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
	var once sync.Once
	stop := func() {
		once.Do(func() {
			tcancel()
			acancel() // waits for the browser to exit
		})
	}
	t.Cleanup(stop)
	if err := chromedp.Do(tctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("start chromium: %v", err)
	}
	return tctx, stop
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
	tab, _ := newBrowser(ctx, t)

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
		shows(`//*[@id="cluster-summary" and contains(text(), "ready · leader node-1")]`),
		shows(`//*[@id="per-node" and contains(text(), "node-1 2/2")]`),
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

// TestDashboardTenThousandChannels: with 10,000 channels the page shows
// pages of them (50 targets, 100 channels at a time), never the whole
// registry, and still follows the changes live. The controller is real, its
// state filled with channels of other nodes.
func TestDashboardTenThousandChannels(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	tab, closeBrowser := newBrowser(ctx, t)

	clu := standalone.New("node-0")
	defer clu.Close()
	lis := embedded.Listen()
	defer lis.Close()
	cfg := controller.DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctrl, err := controller.New(cfg, lis, clu)
	if err != nil {
		t.Fatal(err)
	}
	register := func(id, target string, i int) state.Op {
		return state.Op{Register: &state.RegisterChannel{Channel: state.Channel{ID: id, TargetID: target,
			ConnectorID: "conn-" + id, NodeID: fmt.Sprint("node-", 1+i%2), Active: true, RegisteredAt: time.Unix(int64(i), 0)}}}
	}
	var ops []state.Op
	for i := range 5000 { // one target with half of them
		ops = append(ops, register(fmt.Sprintf("big-%05d", i), "big", i))
	}
	for i := range 5000 { // and 500 targets of 10
		ops = append(ops, register(fmt.Sprintf("ch-%05d", i), fmt.Sprintf("t-%04d", i/10), i))
	}
	for chunk := range slices.Chunk(ops, 2048) {
		if err := state.Err(clu.Apply(ctx, chunk...)); err != nil {
			t.Fatal(err)
		}
	}
	mgmt, err := management.New(management.Config{Events: clu}, ctrl, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(mgmt.Handler())
	defer ts.Close()
	defer closeBrowser() // before the server: the page's event stream must end first

	start := time.Now()
	in(t, tab, "the first pages",
		chromedp.Navigate(ts.URL+"/ui/"),
		shows(`//*[@id="live" and text()="live"]`),
		shows(`//*[@id="targets"]/li[@data-target="big" and contains(., "5000/5000 channels") and contains(., "★ conn-big-00000")]`),
		shows(`//*[@id="channels"]//tr[@data-channel="big-00099"]`),
		shows(`//*[@id="primary-connector" and text()="conn-big-00000"]`),
	)
	t.Logf("10,000 channels: first pages shown %s after the navigation", time.Since(start).Round(time.Millisecond))
	if n := count(t, tab, `#targets > li`); n != 50 {
		t.Errorf("%d targets in the list, want a page of 50", n)
	}
	if n := count(t, tab, `#channels tbody tr`); n != 100 {
		t.Errorf("%d channel rows, want a page of 100", n)
	}
	in(t, tab, "the next pages",
		chromedp.Click(chromedp.ID("channels-next")),
		shows(`//*[@id="channels"]//tr[@data-channel="big-00199"]`),
		chromedp.Click(chromedp.ID("targets-next")),
		shows(`//*[@id="targets"]/li[@data-target="t-0049"]`),
	)
	if n := count(t, tab, `#channels tbody tr`); n != 100 {
		t.Errorf("page 2: %d channel rows, want 100", n)
	}

	// A change is followed live: one more channel for big.
	if err := state.Err(clu.Apply(ctx, register("big-new", "big", 20000))); err != nil {
		t.Fatal(err)
	}
	in(t, tab, "the new channel, without a reload",
		shows(`//*[@id="events"]/li[@data-kind="channel_registered" and contains(., "conn-big-new")]`),
		chromedp.Click(chromedp.ID("targets-prev")),
		shows(`//*[@id="targets"]/li[@data-target="big" and contains(., "5001/5001 channels")]`),
	)
}

// count returns the number of elements matching a CSS selector.
func count(t *testing.T, tab context.Context, css string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserStep)
	defer cancel()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", css)))
	if err != nil {
		t.Fatalf("count %s: %v", css, err)
	}
	return n
}
