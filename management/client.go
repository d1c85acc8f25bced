package management

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// APIError is an error answered by the management API: its HTTP status and
// the message of its {"code","message"} body.
type APIError struct {
	StatusCode int
	Message    string
	// RetryAfter is the Retry-After header of a 503, if any.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("management: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// UnreachableError is returned by Client when the controller cannot be
// reached at all (connection refused, DNS failure, …).
type UnreachableError struct {
	Addr string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the controller at %s: %s", e.Addr, reason(e.Err))
}

// Unwrap returns the transport error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// reason is the short cause of a transport error: "connection refused"
// rather than the whole chain.
func reason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// Client calls the management API. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// NewClient returns a client of the API at addr ("http://127.0.0.1:7480";
// "http://" is assumed when no scheme is given). token, if not empty, is sent
// as a bearer token. hc nil means http.DefaultClient; deadlines come from the
// contexts given to each call.
func NewClient(addr, token string, hc *http.Client) (*Client, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("management: address %q: %w", addr, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("management: address %q: want http(s)://host:port", addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, token: token, hc: hc}, nil
}

// Addr returns the base address of the API.
func (c *Client) Addr() string { return c.base.String() }

// ChannelQuery filters Client.Channels; zero fields do not filter.
type ChannelQuery struct {
	TargetID string
	Active   *bool
}

// BatchQuery filters Client.Batches; zero fields do not filter. Status is a
// batch status name, in any case.
type BatchQuery struct {
	TargetID string
	Status   string
	Key      string
}

// Targets calls GET /exchange/targets.
func (c *Client) Targets(ctx context.Context) ([]Target, error) {
	return list[Target](ctx, c, "/exchange/targets", url.Values{})
}

// AllTargets calls GET /exchange/targets?all=true: also the targets that
// only have batches. (A controller older than the parameter ignores it, and
// lists the targets with a channel only.)
func (c *Client) AllTargets(ctx context.Context) ([]Target, error) {
	return list[Target](ctx, c, "/exchange/targets", url.Values{"all": {"true"}})
}

// Target calls GET /exchange/targets/:id.
func (c *Client) Target(ctx context.Context, id string) (TargetDetail, error) {
	var out TargetDetail
	return out, c.do(ctx, http.MethodGet, "/exchange/targets/"+url.PathEscape(id), nil, nil, &out)
}

// Channels calls GET /exchange/channels.
func (c *Client) Channels(ctx context.Context, q ChannelQuery) ([]Channel, error) {
	v := url.Values{}
	if q.TargetID != "" {
		v.Set("targetId", q.TargetID)
	}
	if q.Active != nil {
		v.Set("active", strconv.FormatBool(*q.Active))
	}
	return list[Channel](ctx, c, "/exchange/channels", v)
}

// Channel calls GET /exchange/channels/:id.
func (c *Client) Channel(ctx context.Context, id string) (Channel, error) {
	var out Channel
	return out, c.do(ctx, http.MethodGet, "/exchange/channels/"+url.PathEscape(id), nil, nil, &out)
}

// Batches calls GET /exchange/batchs.
func (c *Client) Batches(ctx context.Context, q BatchQuery) ([]Batch, error) {
	v := url.Values{}
	if q.TargetID != "" {
		v.Set("targetId", q.TargetID)
	}
	if q.Status != "" {
		v.Set("status", q.Status)
	}
	if q.Key != "" {
		v.Set("key", q.Key)
	}
	return list[Batch](ctx, c, "/exchange/batchs", v)
}

// Batch calls GET /exchange/batchs/:id.
func (c *Client) Batch(ctx context.Context, id string) (Batch, error) {
	var out Batch
	return out, c.do(ctx, http.MethodGet, "/exchange/batchs/"+url.PathEscape(id), nil, nil, &out)
}

// CancelBatch calls DELETE /exchange/batchs/:id: it deletes the batch, which
// cancels it if it has not finished, and returns the batch as it was when
// cancelled.
func (c *Client) CancelBatch(ctx context.Context, id string) (Batch, error) {
	var out Batch
	return out, c.do(ctx, http.MethodDelete, "/exchange/batchs/"+url.PathEscape(id), nil, nil, &out)
}

// CreateBatch calls POST /exchange/batchs.
func (c *Client) CreateBatch(ctx context.Context, req BatchRequest) (Batch, error) {
	var out Batch
	return out, c.do(ctx, http.MethodPost, "/exchange/batchs", nil, req, &out)
}

// Send calls POST /exchange/targets/:id/commands and returns the reply, which
// may have status ERROR (the connector answered with an error).
func (c *Client) Send(ctx context.Context, targetID string, req CommandRequest) (Reply, error) {
	var out Reply
	return out, c.do(ctx, http.MethodPost, "/exchange/targets/"+url.PathEscape(targetID)+"/commands", nil, req, &out)
}

// Cluster calls GET /exchange/cluster.
func (c *Client) Cluster(ctx context.Context) (Cluster, error) {
	var out Cluster
	return out, c.do(ctx, http.MethodGet, "/exchange/cluster", nil, nil, &out)
}

// Ready calls GET /readyz; nil means ready.
func (c *Client) Ready(ctx context.Context) error {
	var out Status
	return c.do(ctx, http.MethodGet, "/readyz", nil, nil, &out)
}

// list reads every page of a listing, following the X-Next-Cursor header. A
// cursor the server already sent would make it loop for ever, collecting the
// same pages: that is an error.
func list[T any](ctx context.Context, c *Client, path string, q url.Values) ([]T, error) {
	out := []T{}
	seen := map[string]bool{}
	for {
		var page []T
		next, err := c.doPage(ctx, http.MethodGet, path, q, nil, &page)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return out, nil
		}
		if seen[next] {
			return nil, fmt.Errorf("management: GET %s: the server sent the cursor %.64q twice; the listing would never end", path, next)
		}
		seen[next] = true
		q.Set("cursor", next)
	}
}

// do sends one request and decodes a 2xx body into out; other statuses
// become *APIError, transport failures *UnreachableError.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	_, err := c.doPage(ctx, method, path, q, in, out)
	return err
}

// doPage is do that also returns the cursor of the next page, if any.
func (c *Client) doPage(ctx context.Context, method, path string, q url.Values, in, out any) (next string, err error) {
	target := path // path segments are escaped by the callers
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return "", fmt.Errorf("management: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, target, body)
	if err != nil {
		return "", err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.send(ctx, req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", fmt.Errorf("management: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", apiError(resp, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return "", fmt.Errorf("management: %s %s: decode response: %w", method, path, err)
	}
	return resp.Header.Get(HeaderNextCursor), nil
}

// newRequest builds a request of path (escaped, with its query), with the
// bearer token.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, fmt.Errorf("management: %s %s: %w", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// send sends req: a transport failure is an *UnreachableError, unless ctx
// ended.
func (c *Client) send(ctx context.Context, req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("management: %s %s: %w", req.Method, req.URL.Path, context.Cause(ctx))
		}
		return nil, &UnreachableError{Addr: c.base.String(), Err: err}
	}
	return resp, nil
}

func apiError(resp *http.Response, data []byte) *APIError {
	e := &APIError{StatusCode: resp.StatusCode}
	var body ErrorBody
	if err := json.Unmarshal(data, &body); err == nil && body.Message != "" {
		e.Message = body.Message
	} else {
		e.Message = strings.TrimSpace(string(data))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}
