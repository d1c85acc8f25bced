package management

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/controller"
)

// idsExchange is a fakeExchange that lists its target ids, as
// *controller.Controller does, and counts the whole-registry reads.
type idsExchange struct {
	*fakeExchange
	targets, target atomic.Int64
	channels        atomic.Int64 // whole-registry reads of the channels
	idsRead         atomic.Int64 // ids returned by TargetIDsAfter
}

func (f *idsExchange) Channels() []controller.ChannelInfo {
	f.channels.Add(1)
	return f.fakeExchange.Channels()
}

func (f *idsExchange) TargetIDsAfter(after string, limit int) []string {
	var out []string
	for _, id := range targetIDsOf(f.fakeExchange) {
		if id > after && len(out) < limit {
			out = append(out, id)
		}
	}
	f.idsRead.Add(int64(len(out)))
	return out
}

func targetIDsOf(f *fakeExchange) []string {
	var ids []string
	for _, c := range f.channels {
		if !slices.Contains(ids, c.TargetID) {
			ids = append(ids, c.TargetID)
		}
	}
	slices.Sort(ids)
	return ids
}

// allExchange is a fakeExchange whose Targets are those of its channels,
// without TargetIDs: the listing reads every target.
type allExchange struct{ *fakeExchange }

func (f allExchange) Targets() []controller.TargetInfo {
	var out []controller.TargetInfo
	for _, id := range targetIDsOf(f.fakeExchange) {
		t, _ := f.Target(id)
		out = append(out, t)
	}
	return out
}

func (f *idsExchange) Targets() []controller.TargetInfo {
	f.targets.Add(1)
	return f.fakeExchange.Targets()
}

func (f *idsExchange) Target(id string) (controller.TargetInfo, bool) {
	f.target.Add(1)
	return f.fakeExchange.Target(id)
}

// manyTargets returns the fake exchange with 10 more targets of one channel
// each.
func manyTargets() *fakeExchange {
	f := newFakeExchange()
	for i := range 10 {
		f.channels = append(f.channels, controller.ChannelInfo{
			ID: fmt.Sprintf("c-x%d", i), TargetID: fmt.Sprintf("t-x%d", i), ConnectorID: "conn", NodeID: "node-1",
			Active: true, Primary: true, Epoch: 1, RegisteredAt: base,
		})
	}
	return f
}

// GET /exchange/targets over an Exchange that lists its target ids builds
// only the targets of the page (never the whole registry), and answers
// exactly what the listing built from every target answers, page by page.
func TestListTargetsPagedOnIDs(t *testing.T) {
	plain := serveHTTP(t, newServer(t, Config{}, allExchange{manyTargets()}, manyBatches(2)))
	ids := &idsExchange{fakeExchange: manyTargets()}
	paged := serveHTTP(t, newServer(t, Config{}, ids, manyBatches(2)))
	for query, limit := range map[string]int64{"": DefaultPageLimit, "?limit=3": 3, "?limit=5&view=summary": 5} {
		pages := walkPages(t, plain, paged, "/exchange/targets"+query, func(path string) {
			if n := ids.target.Load(); n > limit {
				t.Errorf("GET %s: %d targets built for one page", path, n)
			}
			if n := ids.idsRead.Load(); n > limit+1 {
				t.Errorf("GET %s: %d target ids read for one page of %d", path, n, limit)
			}
			ids.target.Store(0)
			ids.idsRead.Store(0)
		})
		if query == "?limit=3" && pages != 4 { // t1, t2 and 10 more
			t.Errorf("%d pages of 3 for 12 targets", pages)
		}
	}
	if n := ids.targets.Load(); n != 0 {
		t.Errorf("the paged listing read every target %d times", n)
	}
	// ?all=true (targets that only have batches too) still reads them all.
	if resp, _ := do(t, paged, http.MethodGet, "/exchange/targets?all=true", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET ?all=true: %d", resp.StatusCode)
	}
}

// walkPages GETs path from both servers, page after page, and fails unless
// they answer the same bodies and Link headers; after each page it calls
// check with the page's path. It returns the number of pages.
func walkPages(t *testing.T, plain, paged *httptest.Server, path string, check func(path string)) int {
	t.Helper()
	pages := 0
	for pathA, pathB := path, path; pathA != ""; pages++ {
		ra, ba := do(t, plain, http.MethodGet, pathA, "", nil)
		rb, bb := do(t, paged, http.MethodGet, pathB, "", nil)
		if ra.StatusCode != http.StatusOK || rb.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d and %d", pathA, ra.StatusCode, rb.StatusCode)
		}
		if string(ba) != string(bb) {
			t.Fatalf("GET %s:\nfrom the whole registry %s\npaged on ids            %s", pathA, ba, bb)
		}
		if la, lb := ra.Header.Get("Link"), rb.Header.Get("Link"); la != lb {
			t.Fatalf("GET %s: Link %q and %q", pathA, la, lb)
		}
		check(pathB)
		pathA, pathB = nextPath(ra.Header.Get("Link")), nextPath(rb.Header.Get("Link"))
	}
	return pages
}

func nextPath(link string) string {
	if link == "" {
		return ""
	}
	return strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
}

// GET /exchange/channels over an Exchange that lists its target ids walks
// the targets of the page only, and answers exactly what the listing built
// from every channel answers, page by page, with every filter.
func TestListChannelsPagedOnIDs(t *testing.T) {
	plain := serveHTTP(t, newServer(t, Config{}, allExchange{manyTargets()}, manyBatches(2)))
	ids := &idsExchange{fakeExchange: manyTargets()}
	paged := serveHTTP(t, newServer(t, Config{}, ids, manyBatches(2)))
	queries := []string{"", "?limit=1", "?limit=2", "?limit=3&active=true", "?limit=2&active=false",
		"?limit=1&targetId=t1", "?targetId=t-x3", "?targetId=unknown"}
	for _, query := range queries {
		ids.target.Store(0)
		pages := walkPages(t, plain, paged, "/exchange/channels"+query, func(path string) {
			if n := ids.target.Load(); query == "?limit=1" && n > 3 {
				t.Errorf("GET %s: %d targets read for a page of one channel", path, n)
			}
			ids.target.Store(0)
		})
		if query == "?limit=1" && pages < 12 {
			t.Errorf("GET /exchange/channels?limit=1: %d pages for at least 12 channels", pages)
		}
	}
	if n := ids.targets.Load() + ids.channels.Load(); n != 0 {
		t.Errorf("the paged listing read the whole registry %d times", n)
	}
}

// timeKey writes times as fmt's %020d of their UnixNano would.
func TestTimeKey(t *testing.T) {
	for _, tm := range []time.Time{time.Unix(0, 0), time.Unix(0, 1), base, time.Unix(1<<33, 999_999_999), time.Time{}} {
		if got, want := timeKey(tm), fmt.Sprintf("%020d", tm.UnixNano()); got != want {
			t.Errorf("timeKey(%v) = %s, want %s", tm, got, want)
		}
	}
}

// compareChannels and compareChannelKey order as the channels' keys do
// (channelKey, compared by slices.Compare), without making them: for times
// before and after 1970, equal and different parts, and cursors of every
// length.
func TestCompareChannelsAsKeys(t *testing.T) {
	times := []time.Time{time.Time{}, time.Unix(-5, 0), time.Unix(-10, 0), time.Unix(0, 0), time.Unix(0, 1), base, base.Add(time.Nanosecond)}
	var chs []Channel
	for _, target := range []string{"", "a", "b"} {
		for _, tm := range times {
			for _, id := range []string{"", "x", "y"} {
				chs = append(chs, Channel{TargetID: target, RegisteredAt: tm, ID: id})
			}
		}
	}
	sign := func(n int) int { return max(-1, min(1, n)) }
	for _, a := range chs {
		for _, b := range chs {
			if got, want := sign(compareChannels(a, b)), sign(slices.Compare(channelKey(a), channelKey(b))); got != want {
				t.Errorf("compareChannels(%v, %v) = %d, want %d", channelKey(a), channelKey(b), got, want)
			}
			key := channelKey(b)
			for n := range len(key) + 2 {
				k := key[:min(n, len(key))]
				if n > len(key) {
					k = append(slices.Clone(key), "z")
				}
				if got, want := sign(compareChannelKey(a, k)), sign(slices.Compare(channelKey(a), k)); got != want {
					t.Errorf("compareChannelKey(%v, %q) = %d, want %d", channelKey(a), k, got, want)
				}
			}
		}
	}
}
