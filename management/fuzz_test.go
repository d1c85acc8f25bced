package management

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// maxErrorText bounds the text of a 400 answered to a bad body: the error
// names the field and the problem, it never echoes the body back.
const maxErrorText = 1024

// decodeRequest runs decodeBody on body as the handlers do.
func decodeRequest(body []byte, v any) error {
	e := echo.New()
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	return decodeBody(e.NewContext(req, httptest.NewRecorder()), v)
}

// checkDecode decodes body into a fresh T: a refusal is a *badRequestError of
// bounded text; an accepted body re-encodes to a body that is accepted too
// and encodes to the same bytes.
func checkDecode[T any](t *testing.T, body []byte) {
	t.Helper()
	var v T
	err := decodeRequest(body, &v)
	if err != nil {
		var bad *badRequestError
		if !errors.As(err, &bad) {
			t.Fatalf("decodeBody(%T) = %T %v, want a *badRequestError", v, err, err)
		}
		if n := len(err.Error()); n > maxErrorText {
			t.Fatalf("decodeBody(%T) error is %d bytes (limit %d): %.200s…", v, n, maxErrorText, err)
		}
		return
	}
	first, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal(accepted %T) = %v", v, err)
	}
	var again T
	if err := decodeRequest(first, &again); err != nil {
		t.Fatalf("decodeBody(Marshal(accepted %T)) = %v\n%s", v, err, first)
	}
	second, err := json.Marshal(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Fatalf("%T changed in a round trip:\nfirst  %s\nsecond %s", v, first, second)
	}
}

// FuzzDecodeBody feeds request bodies to the decoder of POST
// /exchange/targets/:id/commands and POST /exchange/batchs.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"type":"DEPLOY","payload":{"api":"orders"},"metadata":{"k":"v"},"timeoutMs":5000}`,
		`{"targetId":"t","key":"k","maxRetry":2,"commands":[{"id":"c1","type":"A","payload":[1]}]}`,
		`{"type":"A"} {"type":"B"}`, `{"type":"A"}]`, `{"type":1}`, `{"timeoutMs":1e400}`,
		`{"maxRetry":9223372036854775808}`, `{"unknown":1}`, `{"commands":[{"nope":true}]}`,
		`{"type":"A","payload":"\u0000\ud800"}`, "{\"type\":\"\xff\"}", "\x00", ``, `null`, `[]`, `"x"`,
		`{"type":"A","metadata":{"k":null}}`,
	} {
		f.Add([]byte(s))
	}
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	f.Add([]byte(`{"type":"A","payload":` + deep + `}`))
	f.Add([]byte(`{"targetId":"t","commands":[{"type":"A","payload":` + deep + `}]}`))
	f.Add([]byte(`{"` + strings.Repeat("k", 2000) + `":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkDecode[CommandRequest](t, body)
		checkDecode[BatchRequest](t, body)
	})
}

// A 4 MB body (too big to commit as a seed) decodes like a small one, and an
// unknown field with a 4 MB name is refused without echoing the name.
func TestDecodeBodyLarge(t *testing.T) {
	big := strings.Repeat("x", 4<<20)
	checkDecode[CommandRequest](t, []byte(`{"type":"A","payload":"`+big+`","metadata":{"k":"`+big+`"}}`))
	checkDecode[BatchRequest](t, []byte(`{"targetId":"`+big+`","commands":[{"type":"A"}]}`))
	checkDecode[CommandRequest](t, []byte(`{"`+big+`":1}`))
}

// scripted answers a client's first request with a fuzzed response, and any
// later one (the next page of a listing) with a last, empty page.
type scripted struct {
	status int
	body   []byte
	header http.Header
	calls  atomic.Int32
}

func (s *scripted) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	if s.calls.Add(1) > 1 {
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`[]`)), Request: req}, nil
	}
	return &http.Response{StatusCode: s.status, Header: s.header.Clone(), Body: io.NopCloser(bytes.NewReader(s.body)), Request: req}, nil
}

// FuzzClientResponse feeds the management client arbitrary responses (status,
// Retry-After and next-cursor headers, body) for each kind of call: it never
// panics; a status outside 2xx is an *APIError carrying that status, with a
// bounded message unless the body is a JSON error with a message, and a
// Retry-After only when the header is a positive number of seconds; a 2xx
// either decodes or fails with a decode error.
func FuzzClientResponse(f *testing.F) {
	f.Add(200, "", "", []byte(`[{"id":"t","channels":1}]`))
	f.Add(200, "", "c2", []byte(`[]`))
	f.Add(200, "", "", []byte(`{"id":"b","targetId":"t","status":"SUCCEEDED","commands":[]}`))
	f.Add(204, "", "", []byte(``))
	f.Add(503, "7", "", []byte(`{"code":503,"message":"not ready"}`))
	f.Add(429, "-1", "", []byte(`{"code":"x","message":""}`))
	f.Add(500, "99999999999999999999", "", []byte("\x00\xff not json"))
	f.Add(404, "", "", []byte(strings.Repeat("é", 300)))
	f.Add(299, "", "", []byte(`null`))
	f.Add(199, "", "", []byte(`{}`))
	f.Add(200, "", "", []byte(`{"status":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}`))
	f.Fuzz(func(t *testing.T, status int, retryAfter, cursor string, body []byte) {
		if status < 100 || status > 999 {
			return // net/http refuses such responses before the client sees them
		}
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		if cursor != "" {
			h.Set(HeaderNextCursor, cursor)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		calls := []func(c *Client) error{
			func(c *Client) error { _, err := c.Targets(ctx); return err },
			func(c *Client) error { _, err := c.Batch(ctx, "b1"); return err },
			func(c *Client) error { _, err := c.Send(ctx, "t", CommandRequest{Type: "A"}); return err },
			func(c *Client) error { _, err := c.Cluster(ctx); return err },
			func(c *Client) error { return c.Ready(ctx) },
		}
		for i, call := range calls {
			rt := &scripted{status: status, body: body, header: h}
			c, err := NewClient("http://controller.invalid", "tok", &http.Client{Transport: rt})
			if err != nil {
				t.Fatal(err)
			}
			err = call(c)
			if status >= 200 && status <= 299 {
				var api *APIError
				if errors.As(err, &api) {
					t.Fatalf("call %d: status %d gave an *APIError %v", i, status, err)
				}
				continue
			}
			var api *APIError
			if !errors.As(err, &api) || api.StatusCode != status {
				t.Fatalf("call %d: status %d gave %v, want an *APIError with that status", i, status, err)
			}
			var eb ErrorBody
			if (json.Unmarshal(body, &eb) != nil || eb.Message == "") && len(api.Message) > 200+len("…") {
				t.Fatalf("call %d: APIError message of %d bytes from a raw body", i, len(api.Message))
			}
			s, perr := strconv.Atoi(retryAfter)
			if want := perr == nil && s > 0; want != (api.RetryAfter > 0) {
				t.Fatalf("call %d: Retry-After %q gave RetryAfter %v", i, retryAfter, api.RetryAfter)
			}
		}
	})
}

// loopingPages answers every request with the same page and the same next
// cursor, or with cursors that cycle.
type loopingPages struct {
	cursors []string
	calls   atomic.Int32
}

func (l *loopingPages) RoundTrip(req *http.Request) (*http.Response, error) {
	n := int(l.calls.Add(1))
	h := http.Header{}
	h.Set(HeaderNextCursor, l.cursors[n%len(l.cursors)])
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: io.NopCloser(strings.NewReader(`[{"id":"t"}]`)), Request: req}, nil
}

// A server that hands out a cursor again (a hostile or broken one) makes a
// listing fail instead of loop, collecting the same page, until the deadline.
func TestClientListRepeatedCursor(t *testing.T) {
	for _, cursors := range [][]string{{"same"}, {"a", "b", "c"}} {
		rt := &loopingPages{cursors: cursors}
		c, err := NewClient("http://controller.invalid", "", &http.Client{Transport: rt})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Targets(t.Context())
		if err == nil || !strings.Contains(err.Error(), "twice") {
			t.Fatalf("cursors %q: Targets() = %v, want an error about a repeated cursor", cursors, err)
		}
		if got := int(rt.calls.Load()); got > len(cursors)+1 {
			t.Fatalf("cursors %q: %d requests, want at most %d", cursors, got, len(cursors)+1)
		}
	}
}

// FuzzPageCursor sends the pages of a real controller any cursor a client
// may make up (a key of any length and content, or no key at all) and any
// limit: the answer is 200 with the items after the cursor's key in order,
// or 400 for a cursor or limit this server did not make, never a failure.
func FuzzPageCursor(f *testing.F) {
	ctrl := pageController(f, 21) // 11 targets, the last with one channel
	s, err := New(Config{Logger: slog.New(slog.DiscardHandler)}, ctrl, nil, testRegistry())
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Add("target-000003", "00000000000000000004", "ch-0000007", 3, false)
	f.Add("target-000003", "", "", 1, false)
	f.Add("", "", "", 0, true)
	f.Add("target-999999", "-0000000000000000005", "", 10000, false)
	f.Add("target-000010", "00000000000000000020", "ch-0000020", 2, true)
	f.Fuzz(func(t *testing.T, target, at, id string, limit int, raw bool) {
		key := []string{target, at, id}
		for len(key) > 0 && key[len(key)-1] == "" {
			key = key[:len(key)-1] // keys of every length
		}
		cursor := encodeCursor(key)
		if raw {
			cursor = target // not a cursor this server made, or by chance one
			key = nil       // the key the server reads from it
			if k, err := decodeCursor(cursor); err == nil && cursor != "" {
				key = k
			}
		}
		after := "" // the target the pages start after
		if len(key) > 0 {
			after = key[0]
		}
		for _, path := range []string{"/exchange/channels", "/exchange/targets"} {
			q := url.Values{"cursor": {cursor}, "limit": {strconv.Itoa(limit)}}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+path+"?"+q.Encode(), nil))
			if rec.Code == http.StatusBadRequest {
				continue // checked by the page tests: a bad cursor or limit
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s?%s = %d %s", path, q.Encode(), rec.Code, rec.Body)
			}
			if path == "/exchange/targets" {
				var got []Target
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				for i, tg := range got {
					if tg.ID <= after || (i > 0 && tg.ID <= got[i-1].ID) || len(tg.Channels) == 0 {
						t.Fatalf("GET %s after %q: target #%d %s out of order or empty", path, key, i, tg.ID)
					}
				}
				continue
			}
			var got []Channel
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if len(got) > limit {
				t.Fatalf("GET %s: %d channels, limit %d", path, len(got), limit)
			}
			for i, ch := range got {
				if slices.Compare(channelKey(ch), key) <= 0 || (i > 0 && slices.Compare(channelKey(ch), channelKey(got[i-1])) <= 0) {
					t.Fatalf("GET %s after %q: channel #%d %v out of order", path, key, i, channelKey(ch))
				}
			}
		}
	})
}
