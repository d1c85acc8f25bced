// Package management is Exchange's HTTP management API: read-only views of
// targets, channels, batches and the cluster, a route to send one command to a
// target, a route to submit a batch, Prometheus metrics, and health probes.
//
// The routes and JSON field names are those of the reference system's
// management endpoints (including its "batchs" spelling; "batches" is
// accepted everywhere as an alias), plus the additions of ARCHITECTURE §8:
//
//	GET  /exchange/targets                    [{id, channels, batchs}]
//	GET  /exchange/targets/:id                {channels, batchs}
//	GET  /exchange/targets/:id/channels       [Channel]
//	GET  /exchange/targets/:id/batchs         [Batch]
//	POST /exchange/targets/:id/commands       {type, payload, timeoutMs} → Reply
//	GET  /exchange/batchs?status=&targetId=   [Batch]
//	POST /exchange/batchs                     {id?, key?, targetId, maxRetry?, commands} → 201 Batch
//	GET  /exchange/batchs/:id                 Batch
//	DELETE /exchange/batchs/:id               cancel: 200 Batch as it was
//	GET  /exchange/channels?active=&targetId= [Channel]
//	GET  /exchange/channels/:id               Channel
//	GET  /exchange/cluster                    Cluster
//	GET  /exchange/cluster/snapshot           backup: application/octet-stream (Config.Snapshots)
//	POST /exchange/cluster/snapshot           restore on the leader → SnapshotInfo
//	GET  /exchange/events                     live events, text/event-stream (Config.Events)
//	GET  /exchange/targets/:id/latency        Latency: the target's send durations, from the metrics
//	GET  /ui/                                 the dashboard (embedded files, see below)
//	GET  /metrics                             Prometheus text format
//	GET  /healthz                             the process is alive
//	GET  /readyz                              Config.Ready()
//
// docs/openapi.yaml describes every route, parameter, body and error; a test
// keeps it in step with the routes. Every error has the body
// {"code": N, "message": "..."} with HTTP status N, and one function maps
// errors to statuses. Bodies are compact JSON.
//
// # Security
//
// With Config.Tokens set, /exchange/* and /metrics require
// "Authorization: Bearer <token>" (compared in constant time); /healthz and
// /readyz stay open for probes. With no token, the API is unauthenticated and
// Listen binds to loopback only (":7480" becomes "127.0.0.1:7480"), logging a
// warning; Serve refuses a non-loopback listener. See
// docs/decisions/0003-management-auth.md.
//
// Whatever the tokens, web pages of other sites cannot drive the API
// (docs/decisions/0015-management-cross-site.md): request bodies must be
// application/json (415), a foreign or null Origin is refused (403), and
// without a token a Host that is not a loopback name or address, nor the
// listen address, is refused (421: DNS rebinding).
//
// # Events and the dashboard
//
// GET /exchange/events follows Config.Events (the controller's replicated
// state) as server-sent events; each stream is bounded and never blocks the
// state (docs/decisions/0030-live-events-stream.md). Client.Events reads it.
// /ui/ serves the dashboard, static files embedded from management/ui,
// without the token: they hold no data and read everything from /exchange/*
// with it (docs/decisions/0029-dashboard-auth.md).
//
// # Usage
//
//  1. Build the server over the controller (which satisfies Exchange), the
//     batch runner (Batches; nil answers empty lists) and a Prometheus
//     registry:
//
//     srv, err := management.New(management.Config{Tokens: tokens}, ctrl, runner, reg)
//
//  2. Run it until ctx is done; it then shuts down gracefully:
//
//     err = srv.ListenAndServe(ctx)
//
//  3. Or mount Handler() in another server, or call Listen and Serve
//     separately to learn the bound address first.
//
// Client is the Go client of this API (used by "exchange ctl").
//
// Serve owns one goroutine (the http.Server's accept loop, which starts one
// per connection) and waits for it before returning. While event streams
// are open, one more goroutine fans the events out; the last stream to
// close stops it, and Serve's shutdown ends every stream.
package management
