package management

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// manyBatches returns fake batches b00..b(n-1) on t1, created a second apart.
func manyBatches(n int) *fakeBatches {
	f := &fakeBatches{batches: map[string]batch.Batch{}}
	for i := range n {
		id := fmt.Sprintf("b%02d", i) // ids sort as creation does up to 100; beyond, creation order rules
		f.batches[id] = batch.Batch{
			ID: id, TargetID: "t1", Status: batch.StatusSucceeded, MaxRetry: new(5),
			CreatedAt: base.Add(time.Duration(i) * time.Second), UpdatedAt: base.Add(time.Hour),
			Commands: []batch.Command{{
				Command: &command.Command{ID: id + "-c", Type: "ECHO", Payload: []byte(`{"n":1}`)},
				Status:  batch.StatusSucceeded,
				Reply:   &command.Reply{Status: command.StatusSucceeded, Payload: []byte(`{"ok":true}`)},
			}},
		}
	}
	return f
}

func TestListingsPage(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), manyBatches(7)))
	var ids []string
	path := "/exchange/batchs?limit=3&targetId=t1"
	pages := 0
	for path != "" {
		resp, body := do(t, ts, http.MethodGet, path, "", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		var got []Batch
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		for _, b := range got {
			ids = append(ids, b.ID)
		}
		pages++
		next := resp.Header.Get(HeaderNextCursor)
		link := resp.Header.Get("Link")
		if (next == "") != (link == "") {
			t.Fatalf("X-Next-Cursor %q but Link %q", next, link)
		}
		path = ""
		if link != "" {
			if !strings.Contains(link, "cursor="+next) || !strings.HasSuffix(link, `>; rel="next"`) {
				t.Fatalf("Link = %q", link)
			}
			path = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	want := "b00 b01 b02 b03 b04 b05 b06"
	if got := strings.Join(ids, " "); got != want || pages != 3 {
		t.Errorf("paged ids = %s in %d pages, want %s in 3", got, pages, want)
	}
}

func TestListingsSummaryView(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), manyBatches(2)))
	for _, path := range []string{"/exchange/batchs?view=summary", "/exchange/targets/t1/batchs?view=summary", "/exchange/targets?view=summary", "/exchange/targets/t1?view=summary"} {
		resp, body := do(t, ts, http.MethodGet, path, "", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		if !strings.Contains(string(body), `"b01"`) || strings.Contains(string(body), `"payload":{`) {
			t.Errorf("GET %s: want batches without payloads, got %s", path, body)
		}
	}
}

func TestListingsRejectBadPaging(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), manyBatches(2)))
	for _, q := range []string{"limit=0", "limit=10001", "limit=x", "cursor=%21%21", "cursor=e30", "view=all"} {
		for _, p := range []string{"/exchange/batchs", "/exchange/channels", "/exchange/targets", "/exchange/targets/t1/channels"} {
			resp, body := do(t, ts, http.MethodGet, p+"?"+q, "", nil)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("GET %s?%s = %d %s, want 400", p, q, resp.StatusCode, body)
			}
			checkErrorBody(t, body, http.StatusBadRequest)
		}
	}
}

// TestDeepPayloadsStayProportional is the regression test of a listing that
// grew with the square of the nesting: 200 KB of deeply nested replies once
// made one GET /exchange/targets return 2 GB. A payload nested deeper than
// jsonlimit.MaxDepth is served as a JSON string, and nothing is indented.
func TestDeepPayloadsStayProportional(t *testing.T) {
	f := manyBatches(10)
	deep := []byte(strings.Repeat("[", 9993) + strings.Repeat("]", 9993))
	stored := 0
	for id, b := range f.batches {
		b.Commands[0].Reply.Payload = deep
		f.batches[id] = b
		stored += len(deep)
	}
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), f))
	for _, path := range []string{"/exchange/targets", "/exchange/batchs", "/exchange/targets/t1"} {
		resp, body := do(t, ts, http.MethodGet, path, "", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		if len(body) > 2*stored {
			t.Errorf("GET %s: %d bytes for %d stored payload bytes", path, len(body), stored)
		}
		if !json.Valid(body) {
			t.Errorf("GET %s: the body is not JSON", path)
		}
	}
	resp, body := do(t, ts, http.MethodGet, "/exchange/batchs/b01", "", nil)
	var b Batch
	if err := json.Unmarshal(body, &b); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET batch: %d %v", resp.StatusCode, err)
	}
	var s string
	if err := json.Unmarshal(b.Commands[0].Reply.Payload, &s); err != nil || s != string(deep) {
		t.Errorf("deep payload not served as a JSON string holding it")
	}
}

func TestBodiesNestedTooDeepAreRefused(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), newFakeBatches()))
	deep := strings.Repeat("[", 65) + strings.Repeat("]", 65)
	for _, tc := range []struct{ path, body, field string }{
		{"/exchange/targets/t1/commands", `{"type":"ECHO","payload":` + deep + `}`, "field payload"},
		{"/exchange/batchs", `{"targetId":"t1","commands":[{"type":"ECHO","payload":` + deep + `}]}`, "field commands[0].payload"},
	} {
		resp, body := do(t, ts, http.MethodPost, tc.path, tc.body, http.Header{"Content-Type": {"application/json"}})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.field) || !strings.Contains(string(body), "65 levels deep; at most 64") {
			t.Errorf("POST %s = %d %s, want 400 naming %s", tc.path, resp.StatusCode, body, tc.field)
		}
	}
}

func TestClientFollowsPages(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), manyBatches(DefaultPageLimit+5)))
	c, err := NewClient(ts.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Batches(t.Context(), BatchQuery{TargetID: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, b := range got {
		seen[b.ID] = true
	}
	if len(got) != DefaultPageLimit+5 || len(seen) != len(got) {
		t.Errorf("Client.Batches() = %d batches (%d distinct), want %d", len(got), len(seen), DefaultPageLimit+5)
	}
}

// Walking the pages of the targets and of the channels of a real controller
// (which reads a page's targets together, targetsReader) with limits that
// cut targets and parts of targets anywhere yields every item once, in
// order, the channels of a target oldest first.
func TestPagesOfAControllerWalkEveryItemOnce(t *testing.T) {
	const n = 601 // channels, two per target: the last target has one
	ctrl := pageController(t, n)
	ts := serveHTTP(t, newServer(t, Config{}, ctrl, nil))
	walk := func(path string) (items []json.RawMessage, pages int) {
		for path != "" {
			resp, body := do(t, ts, http.MethodGet, path, "", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
			}
			var got []json.RawMessage
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			items = append(items, got...)
			pages++
			path = "" // the next page's, from the Link header: <path>; rel="next"
			if link := resp.Header.Get("Link"); link != "" {
				path = strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<")
			}
		}
		return items, pages
	}
	for _, limit := range []int{1, 7, 64, 65, 1000} {
		raw, pages := walk(fmt.Sprintf("/exchange/targets?limit=%d", limit))
		if want := (n/2 + 1 + limit - 1) / limit; pages != want {
			t.Errorf("targets, limit %d: %d pages, want %d", limit, pages, want)
		}
		if len(raw) != n/2+1 {
			t.Fatalf("targets, limit %d: %d targets, want %d", limit, len(raw), n/2+1)
		}
		for i, r := range raw {
			var tg Target
			if err := json.Unmarshal(r, &tg); err != nil {
				t.Fatal(err)
			}
			wantCh := min(2, n-2*i)
			if want := fmt.Sprintf("target-%06d", i); tg.ID != want || len(tg.Channels) != wantCh {
				t.Fatalf("targets, limit %d: #%d = %s with %d channels, want %s with %d", limit, i, tg.ID, len(tg.Channels), want, wantCh)
			}
			for j, ch := range tg.Channels {
				if want := fmt.Sprintf("ch-%07d", 2*i+j); ch.ID != want || ch.Metadata["version"] != "1.2.3" {
					t.Fatalf("targets, limit %d: %s channel #%d = %+v, want %s with its metadata", limit, tg.ID, j, ch, want)
				}
			}
		}
		raw, _ = walk(fmt.Sprintf("/exchange/channels?limit=%d", limit))
		if len(raw) != n {
			t.Fatalf("channels, limit %d: %d channels, want %d", limit, len(raw), n)
		}
		for i, r := range raw {
			var ch Channel
			if err := json.Unmarshal(r, &ch); err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("ch-%07d", i); ch.ID != want {
				t.Fatalf("channels, limit %d: #%d = %s, want %s", limit, i, ch.ID, want)
			}
		}
	}
}

// onlyBatches hides a Batches' pager: the listings then read every batch
// and page them (the path of Batches that cannot page).
type onlyBatches struct{ Batches }

// Walking the pages of the batches of a real runner (which reads a page
// alone, batchPager) yields every batch once, in creation-time then id
// order, with every filter and limit, and page for page the same bodies and
// cursors as reading every batch does. The batches share creation times,
// and their ids do not follow them.
func TestBatchPagesOfARunnerMatchTheWholeListing(t *testing.T) {
	store := state.NewBatchStore(state.NewMemory())
	runner, err := batch.NewRunner(batch.Config{Logger: slog.New(slog.DiscardHandler)},
		batch.SenderFunc(func(context.Context, string, *command.Command) (*command.Reply, error) {
			return nil, errors.New("not sent in this test")
		}), store)
	if err != nil {
		t.Fatal(err)
	}
	const n = 37
	for i := range n {
		in := batch.Batch{ID: fmt.Sprintf("b%02d", i*7%n), TargetID: fmt.Sprintf("t%d", i%3), Key: []string{"", "k"}[i%2],
			Commands: []batch.Command{{Command: &command.Command{ID: "c", Type: "A"}}}}
		b, err := batch.Prepare(in, base.Add(time.Duration(i%5)*time.Second), 3, func() string { return "unused" })
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Apply(t.Context(), batch.Op{Create: &batch.CreateBatch{Batch: b}}); err != nil {
			t.Fatal(err)
		}
	}
	paged := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), runner))
	whole := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), onlyBatches{runner}))
	walk := func(ts *httptest.Server, path string) (bodies, links []string) {
		for path != "" {
			resp, body := do(t, ts, http.MethodGet, path, "", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
			}
			bodies, links = append(bodies, string(body)), append(links, resp.Header.Get("Link"))
			path = ""
			if link := resp.Header.Get("Link"); link != "" {
				path = strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<")
			}
		}
		return bodies, links
	}
	for _, query := range []string{"", "targetId=t1&", "key=k&", "status=CREATED&", "status=SUCCEEDED&"} {
		for _, limit := range []int{1, 4, 36, 37, 1000} {
			path := fmt.Sprintf("/exchange/batchs?%slimit=%d", query, limit)
			gotBodies, gotLinks := walk(paged, path)
			wantBodies, wantLinks := walk(whole, path)
			if diff := cmp.Diff(wantBodies, gotBodies); diff != "" {
				t.Fatalf("GET %s: pages differ from the whole listing's (-whole +paged):\n%s", path, diff)
			}
			if diff := cmp.Diff(wantLinks, gotLinks); diff != "" {
				t.Fatalf("GET %s: links differ (-whole +paged):\n%s", path, diff)
			}
			if query == "" {
				var ids []string
				for _, body := range gotBodies {
					var page []Batch
					if err := json.Unmarshal([]byte(body), &page); err != nil {
						t.Fatal(err)
					}
					for _, b := range page {
						ids = append(ids, b.ID)
					}
				}
				if slices.Sort(ids); len(slices.Compact(ids)) != n {
					t.Fatalf("GET %s: %d distinct batches, want %d", path, len(slices.Compact(ids)), n)
				}
			}
		}
	}
	for path, want := range map[string]int{
		"/exchange/targets/t1/batchs?limit=5":                                                               http.StatusOK,
		"/exchange/batchs?cursor=" + encodeCursor([]string{"x", "b01"}):                                     http.StatusBadRequest,
		"/exchange/batchs?cursor=" + encodeCursor([]string{}):                                               http.StatusBadRequest,
		"/exchange/batchs?cursor=" + encodeCursor([]string{timeKey(base.Add(2 * time.Second)), "b05", "z"}): http.StatusOK,
	} {
		if resp, body := do(t, paged, http.MethodGet, path, "", nil); resp.StatusCode != want {
			t.Errorf("GET %s = %d %s, want %d", path, resp.StatusCode, body, want)
		}
	}
}
