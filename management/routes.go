package management

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/propagation"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/internal/jsonlimit"
)

// batchSpellings are the two spellings of the batch collection: the
// reference's "batchs" and the English "batches".
var batchSpellings = []string{"batchs", "batches"}

func (s *Server) routes() {
	e := s.echo
	// Authentication is applied per route rather than with group middleware:
	// echo's group middleware adds catch-all routes that turn 405s into 404s.
	api := e.Group("/exchange")
	api.GET("/targets", s.listTargets, s.auth)
	api.GET("/targets/:id", s.getTarget, s.auth)
	api.GET("/targets/:id/channels", s.listTargetChannels, s.auth)
	api.POST("/targets/:id/commands", s.sendCommand, s.auth)
	api.GET("/targets/:id/latency", s.getLatency, s.auth)
	for _, b := range batchSpellings {
		api.GET("/targets/:id/"+b, s.listTargetBatches, s.auth)
		api.GET("/"+b, s.listBatches, s.auth)
		api.POST("/"+b, s.createBatch, s.auth)
		api.GET("/"+b+"/:id", s.getBatch, s.auth)
		api.DELETE("/"+b+"/:id", s.cancelBatch, s.auth)
	}
	api.GET("/channels", s.listChannels, s.auth)
	api.GET("/channels/:id", s.getChannel, s.auth)
	api.GET("/cluster", s.getCluster, s.auth)
	api.GET("/cluster/snapshot", s.getSnapshot, s.auth)
	api.POST("/cluster/snapshot", s.postSnapshot, s.auth)
	api.GET("/events", s.streamEvents, s.auth)

	metrics := promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{s},
		ErrorHandling: promhttp.ContinueOnError,
	})
	e.GET("/metrics", echo.WrapHandler(metrics), s.auth)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	s.pprofRoutes()
	s.uiRoutes()
}

// pprofRoutes mounts net/http/pprof under /debug/pprof/, behind the same
// authentication as /metrics (on loopback without a token, like the rest of
// the API). CPU profiles and traces last ?seconds= (by default 30 for a
// profile, 1 for a trace, net/http/pprof's), which must stay under
// Config.WriteTimeout.
func (s *Server) pprofRoutes() {
	e := s.echo
	wrap := func(h http.HandlerFunc) echo.HandlerFunc { return echo.WrapHandler(h) }
	e.GET("/debug/pprof/", wrap(pprof.Index), s.auth)
	e.GET("/debug/pprof/cmdline", wrap(pprof.Cmdline), s.auth)
	e.GET("/debug/pprof/profile", wrap(pprof.Profile), s.auth)
	e.GET("/debug/pprof/symbol", wrap(pprof.Symbol), s.auth)
	e.POST("/debug/pprof/symbol", wrap(pprof.Symbol), s.auth)
	e.GET("/debug/pprof/trace", wrap(pprof.Trace), s.auth)
	// Named profiles: heap, goroutine, allocs, block, mutex, threadcreate.
	e.GET("/debug/pprof/:name", func(c echo.Context) error {
		pprof.Handler(c.Param("name")).ServeHTTP(c.Response(), c.Request())
		return nil
	}, s.auth)
}

// slogPrinter adapts the server's logger to promhttp.Logger.
type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) { p.s.log.Warn("management: metrics: " + fmt.Sprint(v...)) }

// param returns a path parameter decoded exactly once. Echo routes on
// URL.RawPath when the request has one (the path holds escapes that decoding
// would lose, such as %2F) and leaves the parameter escaped; otherwise it
// routes on URL.Path, already decoded, and the parameter must be taken as is:
// decoding it again would turn an id "a%2F" into "a/".
func param(c echo.Context, name string) string {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v
	}
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

func (s *Server) listTargets(c echo.Context) error {
	p, err := parsePage(c)
	if err != nil {
		return err
	}
	all, err := boolParam(c, "all")
	if err != nil {
		return err
	}
	if ids, ok := s.ex.(targetIDLister); ok && (all == nil || !*all) {
		// Paged on the ids: only the page's ids are read (one more, to know
		// whether another page follows) and only the page's targets built
		// (their channels read), not every target of the registry.
		after := ""
		if len(p.after) > 0 {
			after = p.after[0]
		}
		out := []Target{}
		for _, id := range ids.TargetIDsAfter(after, p.limit+1) {
			out = append(out, Target{ID: id})
		}
		page := paginate(c, out, targetKey, p)
		pageIDs := make([]string, len(page))
		for i, pt := range page {
			pageIDs[i] = pt.ID
		}
		out = out[:0:0]
		for _, t := range s.targetsOf(pageIDs) {
			if len(t.Channels) == 0 {
				continue // it lost its channels since
			}
			bs := batchesOf(s.listBatchesOf(batch.Filter{TargetID: t.ID}))
			if p.summary {
				bs = summarize(bs)
			}
			out = append(out, Target{ID: t.ID, Channels: channelsOf(t.Channels), Batchs: bs})
		}
		return writeJSON(c, http.StatusOK, out)
	}
	out := []Target{}
	seen := map[string]bool{}
	for _, t := range s.ex.Targets() {
		if len(t.Channels) == 0 {
			continue // like the reference: only targets with a channel
		}
		seen[t.ID] = true
		out = append(out, Target{ID: t.ID, Channels: channelsOf(t.Channels)})
	}
	if all != nil && *all { // and those that only have batches
		for _, b := range s.listBatchesOf(batch.Filter{}) {
			if !seen[b.TargetID] {
				seen[b.TargetID] = true
				out = append(out, Target{ID: b.TargetID, Channels: []Channel{}})
			}
		}
	}
	sortTargets(out)
	out = paginate(c, out, targetKey, p)
	for i := range out {
		bs := batchesOf(s.listBatchesOf(batch.Filter{TargetID: out[i].ID}))
		if p.summary {
			bs = summarize(bs)
		}
		out[i].Batchs = bs
	}
	return writeJSON(c, http.StatusOK, out)
}

func (s *Server) getTarget(c echo.Context) error {
	id := param(c, "id")
	p, err := parsePage(c)
	if err != nil {
		return err
	}
	out := TargetDetail{Channels: s.targetChannels(id), Batchs: batchesOf(s.listBatchesOf(batch.Filter{TargetID: id}))}
	if len(out.Channels) == 0 && len(out.Batchs) == 0 {
		return &notFoundError{fmt.Sprintf("No metrics found for the given target [%s]", id)}
	}
	if p.summary {
		out.Batchs = summarize(out.Batchs)
	}
	return writeJSON(c, http.StatusOK, out)
}

func (s *Server) listTargetChannels(c echo.Context) error {
	p, err := parsePage(c)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, paginate(c, s.targetChannels(param(c, "id")), channelKey, p))
}

func (s *Server) targetChannels(id string) []Channel {
	t, ok := s.ex.Target(id)
	if !ok {
		return []Channel{}
	}
	return channelsOf(t.Channels)
}

func (s *Server) listTargetBatches(c echo.Context) error {
	return s.writeBatches(c, batch.Filter{TargetID: param(c, "id")})
}

// writeBatches writes the page of the batches matching f that the request
// asks for.
func (s *Server) writeBatches(c echo.Context, f batch.Filter) error {
	p, err := parsePage(c)
	if err != nil {
		return err
	}
	var out []Batch
	if bp, ok := s.batches.(batchPager); ok {
		// The page alone (and one more, to know whether another follows).
		after, err := batchPosition(p.after)
		if err != nil {
			return err
		}
		out = paginate(c, batchesOf(bp.ListBatchesPage(f, after, p.limit+1)), batchKey, p)
	} else {
		out = paginate(c, batchesOf(s.listBatchesOf(f)), batchKey, p)
	}
	if p.summary {
		out = summarize(out)
	}
	return writeJSON(c, http.StatusOK, out)
}

func (s *Server) listBatches(c echo.Context) error {
	f := batch.Filter{TargetID: c.QueryParam("targetId"), Key: c.QueryParam("key")}
	if v := c.QueryParam("status"); v != "" {
		st, ok := parseBatchStatus(v)
		if !ok {
			return &badRequestError{"query parameter status", fmt.Sprintf("[%s] is not one of %s", v, strings.Join(batchStatusNames(), ", "))}
		}
		f.Status = st
	}
	// Filtered per batch (the reference filtered per target group: its
	// weakness 34); the runner applies f to each batch.
	return s.writeBatches(c, f)
}

func (s *Server) listBatchesOf(f batch.Filter) []batch.Batch {
	if s.batches == nil {
		return nil
	}
	return s.batches.ListBatches(f)
}

func (s *Server) getBatch(c echo.Context) error {
	id := param(c, "id")
	if s.batches == nil {
		return &batchError{id, batch.ErrNotFound}
	}
	b, err := s.batches.GetBatch(id)
	if err != nil {
		return &batchError{id, err}
	}
	return writeJSON(c, http.StatusOK, batchOf(b))
}

// cancelBatch deletes a batch, which cancels it if it has not finished, and
// answers 200 with the batch as it was last read before the deletion. An
// attempt in progress stops at its next store write; a command already sent
// may still be executed by the connector.
func (s *Server) cancelBatch(c echo.Context) error {
	id := param(c, "id")
	if s.batches == nil {
		return &batchError{id, batch.ErrNotFound}
	}
	b, err := s.batches.GetBatch(id)
	if err != nil {
		return &batchError{id, err}
	}
	if err := s.batches.DeleteBatch(c.Request().Context(), id); err != nil {
		return &batchError{id, err}
	}
	return writeJSON(c, http.StatusOK, batchOf(b))
}

func (s *Server) createBatch(c echo.Context) error {
	if s.batches == nil {
		return errBatchesDisabled
	}
	var req BatchRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	b, err := batchFromRequest(req)
	if err != nil {
		return err
	}
	created, err := s.batches.ExecuteBatch(c.Request().Context(), b)
	if err != nil {
		return &batchError{req.ID, err}
	}
	return writeJSON(c, http.StatusCreated, batchOf(created))
}

func (s *Server) listChannels(c echo.Context) error {
	p, err := parsePage(c)
	if err != nil {
		return err
	}
	active, err := boolParam(c, "active")
	if err != nil {
		return err
	}
	target := c.QueryParam("targetId")
	keep := func(ch controller.ChannelInfo) bool {
		return (target == "" || ch.TargetID == target) && (active == nil || ch.Active == *active)
	}
	if ids, ok := s.ex.(targetIDLister); ok {
		return writeJSON(c, http.StatusOK, paginate(c, s.channelsPage(ids, target, keep, p), channelKey, p))
	}
	var in []controller.ChannelInfo
	for _, ch := range s.ex.Channels() {
		if keep(ch) {
			in = append(in, ch)
		}
	}
	return writeJSON(c, http.StatusOK, paginate(c, channelsOf(in), channelKey, p))
}

// channelsPage gathers the channels that keep accepts and that follow the
// cursor of p, in channelKey order, target by target from the cursor's
// target (or the one target asked for) until it has one more than the page
// holds, so that paginate knows whether another page follows. It reads the
// targets it walks, not the whole registry: the first page costs the same
// at 100 channels and at 100,000, and a filter that few channels pass costs
// the targets walked to fill the page.
func (s *Server) channelsPage(ids targetIDLister, target string, keep func(controller.ChannelInfo) bool, p page) []Channel {
	out := []Channel{} // an empty page is [], not null
	add := func(t controller.TargetInfo) {
		var in []controller.ChannelInfo
		for _, ch := range t.Channels {
			if keep(ch) {
				in = append(in, ch)
			}
		}
		for _, ch := range channelsOf(in) {
			if p.after == nil || compareChannelKey(ch, p.after) > 0 {
				out = append(out, ch)
			}
		}
	}
	if target != "" {
		for _, t := range s.targetsOf([]string{target}) {
			add(t)
		}
		return out
	}
	from := ""
	if len(p.after) > 0 {
		from = p.after[0]
		for _, t := range s.targetsOf([]string{from}) {
			add(t) // the rest of the cursor's target
		}
	}
	// Target ids a page at a time: about two channels per target, the
	// usual fleet, fill a page from one read. Their targets are read a
	// part at a time, until the page is full.
	batch := min(p.limit+1, MaxPageLimit)
	for len(out) <= p.limit {
		next := ids.TargetIDsAfter(from, batch)
		for part := range slices.Chunk(next, targetsPart) {
			for _, t := range s.targetsOf(part) {
				add(t)
				if len(out) > p.limit {
					return out
				}
			}
			from = part[len(part)-1]
		}
		if len(next) < batch {
			break
		}
	}
	return out
}

// targetsPart is how many targets a page of channels reads at once: a page
// of the usual fleet (two channels per target) reads about half a part more
// than it shows.
const targetsPart = 64

// targetsOf returns the targets among ids that have at least one channel,
// in the order of ids: in one call when the Exchange reads several at once
// (targetsReader), else one by one.
func (s *Server) targetsOf(ids []string) []controller.TargetInfo {
	if tr, ok := s.ex.(targetsReader); ok {
		return tr.TargetsOf(ids)
	}
	var out []controller.TargetInfo
	for _, id := range ids {
		if t, ok := s.ex.Target(id); ok && len(t.Channels) > 0 {
			out = append(out, t)
		}
	}
	return out
}

// boolParam reads the query parameter name: true or false in any case, nil
// when absent.
func boolParam(c echo.Context, name string) (*bool, error) {
	v := c.QueryParam(name)
	switch {
	case v == "":
		return nil, nil
	case strings.EqualFold(v, "true"):
		return new(true), nil
	case strings.EqualFold(v, "false"):
		return new(false), nil
	}
	return nil, &badRequestError{"query parameter " + name, fmt.Sprintf("[%s] is neither true nor false", v)}
}

func (s *Server) getChannel(c echo.Context) error {
	id := param(c, "id")
	ch, ok := s.ex.Channel(id)
	if !ok {
		return &notFoundError{fmt.Sprintf("No channel found for the given id [%s]", id)}
	}
	return writeJSON(c, http.StatusOK, channelOf(ch))
}

func (s *Server) getCluster(c echo.Context) error {
	return writeJSON(c, http.StatusOK, clusterOf(s.ex.Cluster()))
}

func (s *Server) sendCommand(c echo.Context) error {
	target := param(c, "id")
	var req CommandRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	if req.Type == "" {
		return &badRequestError{"field type", "is required"}
	}
	if err := jsonlimit.Check(req.Payload, jsonlimit.MaxDepth); err != nil {
		return &badRequestError{"field payload", err.Error()}
	}
	timeout := s.cfg.CommandTimeout
	switch {
	case req.TimeoutMs < 0:
		return &badRequestError{"field timeoutMs", "must not be negative"}
	case req.TimeoutMs > s.cfg.MaxCommandTimeout.Milliseconds():
		return &badRequestError{"field timeoutMs", fmt.Sprintf("must be at most %d", s.cfg.MaxCommandTimeout.Milliseconds())}
	case req.TimeoutMs > 0:
		timeout = time.Duration(req.TimeoutMs) * time.Millisecond
	}
	cmd := &command.Command{ID: req.ID, Type: command.Type(req.Type), Payload: payloadBytes(req.Payload), Metadata: req.Metadata}
	if cmd.ID == "" {
		cmd.ID = command.NewID()
	}
	// A W3C traceparent/tracestate header makes the send (its exchange.send
	// span and what follows) part of the caller's trace.
	ctx := propagation.TraceContext{}.Extract(c.Request().Context(), propagation.HeaderCarrier(c.Request().Header))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, rt, err := s.ex.SendVia(ctx, target, cmd, req.Primary)
	if err != nil {
		return &sendError{target: target, cmd: cmd, err: err}
	}
	if reply == nil {
		return &sendError{target: target, cmd: cmd, err: errors.New("no reply")}
	}
	out := replyOf(reply)
	out.ChannelID, out.NodeID = rt.ChannelID, rt.NodeID
	if ch, ok := s.ex.Channel(rt.ChannelID); ok && rt.ChannelID != "" {
		out.ConnectorID = ch.ConnectorID // as registered; the channel may be gone by now
	}
	return writeJSON(c, http.StatusOK, out)
}

func (s *Server) healthz(c echo.Context) error {
	return writeJSON(c, http.StatusOK, Status{Status: "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			return &notReadyError{err}
		}
	}
	return writeJSON(c, http.StatusOK, Status{Status: "ready"})
}

// batchFromRequest checks the shape of a batch request and builds the batch;
// the runner checks the rest (and fills the defaults).
func batchFromRequest(req BatchRequest) (batch.Batch, error) {
	if req.TargetID == "" {
		return batch.Batch{}, &badRequestError{"field targetId", "is required"}
	}
	if len(req.Commands) == 0 {
		return batch.Batch{}, &badRequestError{"field commands", "must hold at least one command"}
	}
	if req.MaxRetry != nil && *req.MaxRetry < 0 {
		return batch.Batch{}, &badRequestError{"field maxRetry", "must not be negative"}
	}
	if req.MaxRetry != nil && *req.MaxRetry > batch.MaxRetryLimit {
		return batch.Batch{}, &badRequestError{"field maxRetry", fmt.Sprintf("must be at most %d, got %d", batch.MaxRetryLimit, *req.MaxRetry)}
	}
	b := batch.Batch{ID: req.ID, Key: req.Key, TargetID: req.TargetID, MaxRetry: req.MaxRetry}
	for i, rc := range req.Commands {
		if rc.Type == "" {
			return batch.Batch{}, &badRequestError{fmt.Sprintf("field commands[%d].type", i), "is required"}
		}
		if err := jsonlimit.Check(rc.Payload, jsonlimit.MaxDepth); err != nil {
			return batch.Batch{}, &badRequestError{fmt.Sprintf("field commands[%d].payload", i), err.Error()}
		}
		b.Commands = append(b.Commands, batch.Command{
			Command: &command.Command{ID: rc.ID, Type: command.Type(rc.Type), Payload: payloadBytes(rc.Payload)},
		})
	}
	return b, nil
}

// payloadBytes returns a request's payload as command payload bytes: absent
// or null is empty.
func payloadBytes(raw json.RawMessage) []byte {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}

// decodeBody decodes one JSON object into v, rejecting unknown fields and
// trailing data, and names the offending field in its error.
func decodeBody(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			return &badRequestError{"body", "must hold a single JSON object"}
		}
		return nil
	}
	var (
		tooLarge  *http.MaxBytesError
		syntax    *json.SyntaxError
		typeError *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return err
	case errors.Is(err, io.EOF):
		return &badRequestError{"body", "is empty; a JSON object is expected"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &badRequestError{"body", "malformed JSON: unexpected end of input"}
	case errors.As(err, &syntax):
		return &badRequestError{"body", fmt.Sprintf("malformed JSON at offset %d: %v", syntax.Offset, syntax)}
	case errors.As(err, &typeError):
		if typeError.Field == "" {
			return &badRequestError{"body", "a JSON object is expected"}
		}
		return &badRequestError{"field " + clip(typeError.Field), fmt.Sprintf("must be a JSON %s, not %s", jsonKind(typeError.Type.Kind().String()), typeError.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return &badRequestError{"field " + clip(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)), "is not a known field"}
	default:
		return &badRequestError{"body", clip(err.Error())}
	}
}

// maxEcho bounds what an error quotes of a request body (a field name): a 4 MB
// unknown key must not come back as a 4 MB error.
const maxEcho = 128

// clip shortens s to at most maxEcho bytes, on a rune boundary, marking the
// cut with "…".
func clip(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	i := maxEcho
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// jsonKind names a Go kind as a JSON type.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	default:
		return "number"
	}
}
