package management

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/exchangekit/exchange/batch"
)

// Listings are paged so that no response grows with the whole state. A page
// holds at most `limit` items (default DefaultPageLimit, at most
// MaxPageLimit); when more follow, the response carries the cursor of the
// next page in the X-Next-Cursor header and a Link header with rel="next".
// The body stays the bare JSON array of the reference system. A cursor is
// the opaque sort key of the last item sent, so pages neither repeat nor skip
// items when others are added or removed between calls.
const (
	// DefaultPageLimit is the page size of a listing that names none.
	DefaultPageLimit = 1000
	// MaxPageLimit is the largest limit accepted.
	MaxPageLimit = 10000
	// HeaderNextCursor carries the cursor of the next page.
	HeaderNextCursor = "X-Next-Cursor"
)

// page is a listing's paging request.
type page struct {
	limit   int
	after   []string // sort key of the last item already sent; nil: from the start
	summary bool     // view=summary: no payloads
}

// parsePage reads limit, cursor and view.
func parsePage(c echo.Context) (page, error) {
	p := page{limit: DefaultPageLimit}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageLimit {
			return page{}, &badRequestError{"query parameter limit", fmt.Sprintf("[%s] is not a whole number from 1 to %d", v, MaxPageLimit)}
		}
		p.limit = n
	}
	if v := c.QueryParam("cursor"); v != "" {
		key, err := decodeCursor(v)
		if err != nil {
			return page{}, &badRequestError{"query parameter cursor", "is not a cursor this server returned"}
		}
		p.after = key
	}
	switch v := c.QueryParam("view"); v {
	case "", "full":
	case "summary":
		p.summary = true
	default:
		return page{}, &badRequestError{"query parameter view", fmt.Sprintf("[%s] is neither full nor summary", v)}
	}
	return p, nil
}

func encodeCursor(key []string) string {
	b, _ := json.Marshal(key) // a []string always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	var key []string
	if err := json.Unmarshal(b, &key); err != nil {
		return nil, err
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("empty cursor")
	}
	return key, nil
}

// paginate returns the page of items (sorted by key) that p asks for, and
// sets the next-page headers when more items follow.
func paginate[T any](c echo.Context, items []T, key func(T) []string, p page) []T {
	start := 0
	if p.after != nil {
		start, _ = slices.BinarySearchFunc(items, p.after, func(it T, after []string) int {
			if slices.Compare(key(it), after) <= 0 {
				return -1
			}
			return 1
		})
	}
	end := min(len(items), start+p.limit)
	out := items[start:end]
	if end < len(items) {
		next := encodeCursor(key(items[end-1]))
		c.Response().Header().Set(HeaderNextCursor, next)
		q := c.QueryParams()
		q.Set("cursor", next)
		q.Set("limit", strconv.Itoa(p.limit))
		u := url.URL{Path: c.Request().URL.Path, RawQuery: q.Encode()}
		c.Response().Header().Set("Link", fmt.Sprintf("<%s>; rel=\"next\"", u.String()))
	}
	return out
}

// timeKey writes t so that keys sort in time order (without fmt: it runs
// for every item of a page).
func timeKey(t time.Time) string {
	var b [20]byte
	return string(appendTimeKey(b[:0], t))
}

// appendTimeKey appends timeKey(t) to dst.
func appendTimeKey(dst []byte, t time.Time) []byte {
	n := t.UnixNano()
	if n < 0 {
		return fmt.Appendf(dst, "%020d", n)
	}
	var d [20]byte // zero-padded: int64's 19 digits and one more
	for i, u := len(d)-1, uint64(n); i >= 0; i, u = i-1, u/10 {
		d[i] = byte('0' + u%10)
	}
	return append(dst, d[:]...)
}

func batchKey(b Batch) []string { return []string{timeKey(b.CreatedAt), b.ID} }

// batchPosition is where the page after the cursor key of a batch (batchKey)
// starts, as paginate reads the key: nil without one, a *badRequestError for
// a key whose time no batch could have.
func batchPosition(key []string) (*batch.Position, error) {
	if len(key) == 0 {
		return nil, nil // every batch's key follows an empty one
	}
	n, err := strconv.ParseInt(key[0], 10, 64)
	at := time.Unix(0, n)
	if err != nil || timeKey(at) != key[0] {
		return nil, &badRequestError{"query parameter cursor", "is not a cursor this server returned"}
	}
	pos := &batch.Position{CreatedAt: at} // [time]: every batch of that time follows
	if len(key) > 1 {
		pos.ID = key[1] // [time, id, …]: the batch of that key does not
	}
	return pos, nil
}
func channelKey(ch Channel) []string { return []string{ch.TargetID, timeKey(ch.RegisteredAt), ch.ID} }
func targetKey(t Target) []string    { return []string{t.ID} }

// compareChannels orders a and b as their keys (channelKey) do, without
// making the keys: a page sorts and filters thousands of channels.
func compareChannels(a, b Channel) int {
	if c := strings.Compare(a.TargetID, b.TargetID); c != 0 {
		return c
	}
	if c := compareTimeKeys(a.RegisteredAt, b.RegisteredAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// compareChannelKey is slices.Compare(channelKey(ch), key) (key is a
// cursor's, of any length).
func compareChannelKey(ch Channel, key []string) int {
	var b [20]byte
	own := [...]string{ch.TargetID, string(appendTimeKey(b[:0], ch.RegisteredAt)), ch.ID}
	return slices.Compare(own[:], key)
}

// compareTimeKeys compares timeKey(a) and timeKey(b) without making them:
// the keys of times from 1970 on are zero-padded numbers of the same
// length, in the order of the numbers.
func compareTimeKeys(a, b time.Time) int {
	na, nb := a.UnixNano(), b.UnixNano()
	if na >= 0 && nb >= 0 {
		return cmp.Compare(na, nb)
	}
	return strings.Compare(timeKey(a), timeKey(b))
}

// summarize drops the payloads of batches (view=summary).
func summarize(bs []Batch) []Batch {
	for i := range bs {
		for j := range bs[i].Commands {
			bs[i].Commands[j].Command.Payload = nil
			if r := bs[i].Commands[j].Reply; r != nil {
				r.Payload = nil
			}
		}
	}
	return bs
}
