package management

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// goldenCase is one request through real HTTP whose body is compared with
// testdata/<golden>.golden.
type goldenCase struct {
	name       string
	server     string // key of the servers map; "" is "full"
	method     string // "" is GET
	path       string
	body       string
	wantStatus int
	golden     string // "" is name
	wantHeader map[string]string
	// contentType is the request's Content-Type; "" is application/json
	// when there is a body.
	contentType string
}

func goldenCases() []goldenCase {
	return []goldenCase{
		// Targets.
		{name: "targets", path: "/exchange/targets", wantStatus: 200},
		{name: "targets_empty", server: "empty", path: "/exchange/targets", wantStatus: 200},
		{name: "targets_without_batches", server: "nobatches", path: "/exchange/targets", wantStatus: 200},
		{name: "target", path: "/exchange/targets/t1", wantStatus: 200},
		{name: "target_only_batches", path: "/exchange/targets/t-orphan", wantStatus: 200},
		{name: "target_not_found", path: "/exchange/targets/unknown", wantStatus: 404},
		{name: "target_channels", path: "/exchange/targets/t1/channels", wantStatus: 200},
		{name: "target_channels_empty", path: "/exchange/targets/unknown/channels", wantStatus: 200, golden: "empty_list"},
		{name: "target_batchs", path: "/exchange/targets/t1/batchs", wantStatus: 200},
		{name: "target_batches_alias", path: "/exchange/targets/t1/batches", wantStatus: 200, golden: "target_batchs"},
		{name: "target_batchs_empty", path: "/exchange/targets/t2/batchs", wantStatus: 200, golden: "empty_list"},
		// Batches.
		{name: "batchs", path: "/exchange/batchs", wantStatus: 200},
		{name: "batches_alias", path: "/exchange/batches", wantStatus: 200, golden: "batchs"},
		{name: "batchs_status", path: "/exchange/batchs?status=PENDING", wantStatus: 200},
		{name: "batchs_status_any_case", path: "/exchange/batchs?status=pending", wantStatus: 200, golden: "batchs_status"},
		{name: "batchs_status_and_target", path: "/exchange/batchs?status=ERROR&targetId=t-orphan", wantStatus: 200},
		{name: "batchs_status_no_match", path: "/exchange/batchs?status=succeeded&targetId=t-orphan", wantStatus: 200, golden: "empty_list"},
		{name: "batchs_target", path: "/exchange/batchs?targetId=t1", wantStatus: 200, golden: "target_batchs"},
		{name: "batchs_key", path: "/exchange/batchs?key=orphan", wantStatus: 200, golden: "batchs_status_and_target"},
		{name: "batchs_status_invalid", path: "/exchange/batchs?status=DONE", wantStatus: 400},
		{name: "batchs_disabled", server: "nobatches", path: "/exchange/batchs", wantStatus: 200, golden: "empty_list"},
		{name: "batch", path: "/exchange/batchs/b1", wantStatus: 200},
		{name: "batch_pending", path: "/exchange/batches/b2", wantStatus: 200},
		{name: "batch_not_found", path: "/exchange/batchs/unknown", wantStatus: 404},
		{name: "batch_disabled_not_found", server: "nobatches", path: "/exchange/batchs/b1", wantStatus: 404},
		// Channels.
		{name: "channels", path: "/exchange/channels", wantStatus: 200},
		{name: "channels_empty", server: "empty", path: "/exchange/channels", wantStatus: 200, golden: "empty_list"},
		{name: "channels_active", path: "/exchange/channels?active=true", wantStatus: 200},
		{name: "channels_inactive_any_case", path: "/exchange/channels?active=FALSE", wantStatus: 200},
		{name: "channels_target", path: "/exchange/channels?targetId=t2", wantStatus: 200},
		{name: "channels_target_active", path: "/exchange/channels?targetId=t1&active=True", wantStatus: 200},
		{name: "channels_active_invalid", path: "/exchange/channels?active=yes", wantStatus: 400},
		{name: "channel", path: "/exchange/channels/c1", wantStatus: 200},
		{name: "channel_remote", path: "/exchange/channels/c2", wantStatus: 200},
		{name: "channel_not_found", path: "/exchange/channels/unknown", wantStatus: 404},
		// Cluster and probes.
		{name: "cluster", path: "/exchange/cluster", wantStatus: 200},
		{name: "cluster_standalone", server: "standalone", path: "/exchange/cluster", wantStatus: 200},
		{name: "snapshot_restore", method: "POST", path: "/exchange/cluster/snapshot", wantStatus: 200, contentType: octetStream,
			body: "exchange-state v1\n{}"},
		{name: "snapshot_restore_invalid", method: "POST", path: "/exchange/cluster/snapshot", wantStatus: 400, contentType: octetStream,
			body: "bad data"},
		{name: "snapshot_restore_empty", method: "POST", path: "/exchange/cluster/snapshot", wantStatus: 400},
		{name: "snapshot_restore_not_leader", method: "POST", path: "/exchange/cluster/snapshot", wantStatus: 409, contentType: octetStream,
			body: "follower: restore me"},
		{name: "snapshot_restore_too_large", server: "smallbody", method: "POST", path: "/exchange/cluster/snapshot", wantStatus: 413, contentType: octetStream,
			body: strings.Repeat("x", 200)},
		{name: "snapshot_restore_json", method: "POST", path: "/exchange/cluster/snapshot", wantStatus: 415,
			body: `{"channels":{}}`},
		{name: "snapshot_disabled", server: "nobatches", path: "/exchange/cluster/snapshot", wantStatus: 501},
		{name: "snapshot_restore_disabled", server: "nobatches", method: "POST", path: "/exchange/cluster/snapshot", wantStatus: 501, contentType: octetStream,
			body: "exchange-state v1\n{}", golden: "snapshot_disabled"},
		{name: "healthz", path: "/healthz", wantStatus: 200},
		{name: "readyz", path: "/readyz", wantStatus: 200},
		{name: "readyz_not_ready", server: "notready", path: "/readyz", wantStatus: 503},
		{name: "metrics", path: "/metrics", wantStatus: 200, wantHeader: map[string]string{"Content-Type": "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"}},
		// Commands.
		{name: "command", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 200,
			body: `{"id":"cmd-1","type":"ECHO","payload":{"text":"hello"},"timeoutMs":5000}`},
		{name: "command_no_payload", method: "POST", path: "/exchange/targets/t2/commands", wantStatus: 200,
			body: `{"id":"cmd-1","type":"PING"}`},
		{name: "command_text_reply", method: "POST", path: "/exchange/targets/t-binary/commands", wantStatus: 200,
			body: `{"id":"cmd-1","type":"READ","payload":"file.txt"}`},
		{name: "command_error_reply", method: "POST", path: "/exchange/targets/t-error-reply/commands", wantStatus: 200,
			body: `{"id":"cmd-1","type":"ECHO","payload":[1,2,3]}`},
		{name: "command_no_channel", method: "POST", path: "/exchange/targets/t-none/commands", wantStatus: 404,
			body: `{"id":"cmd-1","type":"ECHO"}`},
		{name: "command_timeout", method: "POST", path: "/exchange/targets/t-timeout/commands", wantStatus: 504,
			body: `{"id":"cmd-1","type":"ECHO"}`},
		{name: "command_remote_error", method: "POST", path: "/exchange/targets/t-remote/commands", wantStatus: 502,
			body: `{"id":"cmd-1","type":"ECHO"}`},
		{name: "command_unknown", method: "POST", path: "/exchange/targets/t-unknown/commands", wantStatus: 502,
			body: `{"id":"cmd-1","type":"ECHO"}`},
		{name: "command_busy", method: "POST", path: "/exchange/targets/t-busy/commands", wantStatus: 503,
			body: `{"id":"cmd-1","type":"ECHO"}`, wantHeader: map[string]string{"Retry-After": "2"}},
		{name: "command_closed", method: "POST", path: "/exchange/targets/t-closed/commands", wantStatus: 502,
			body: `{"id":"cmd-1","type":"ECHO"}`},
		{name: "command_frame_too_large", method: "POST", path: "/exchange/targets/t-large/commands", wantStatus: 413,
			body: `{"id":"cmd-1","type":"ECHO"}`},
		{name: "command_internal_error", method: "POST", path: "/exchange/targets/t-broken/commands", wantStatus: 500,
			body: `{"id":"cmd-1","type":"ECHO"}`},
		{name: "command_bad_json", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400,
			body: `{"type":"ECHO",`},
		{name: "command_empty_body", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400},
		{name: "command_missing_type", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400,
			body: `{"payload":{}}`},
		{name: "command_unknown_field", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400,
			body: `{"type":"ECHO","timeout":"5s"}`},
		{name: "command_wrong_field_type", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400,
			body: `{"type":"ECHO","timeoutMs":"5000"}`},
		{name: "command_negative_timeout", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400,
			body: `{"type":"ECHO","timeoutMs":-1}`},
		{name: "command_timeout_too_large", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400,
			body: `{"type":"ECHO","timeoutMs":600000}`},
		{name: "command_two_objects", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400,
			body: `{"type":"ECHO"} {"type":"ECHO"}`},
		{name: "command_not_an_object", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 400,
			body: `[1]`},
		// Batch creation.
		{name: "batch_create", method: "POST", path: "/exchange/batchs", wantStatus: 201,
			body: `{"id":"b-new","key":"k","targetId":"t2","maxRetry":2,"commands":[{"id":"c-a","type":"DEPLOY","payload":{"api":"a"}},{"type":"START"}]}`},
		{name: "batch_create_alias", method: "POST", path: "/exchange/batches", wantStatus: 201,
			body: `{"targetId":"t2","commands":[{"type":"START"}]}`},
		{name: "batch_create_duplicate", method: "POST", path: "/exchange/batchs", wantStatus: 409,
			body: `{"id":"b1","targetId":"t1","commands":[{"type":"DEPLOY"}]}`},
		{name: "batch_create_missing_target", method: "POST", path: "/exchange/batchs", wantStatus: 400,
			body: `{"commands":[{"type":"DEPLOY"}]}`},
		{name: "batch_create_no_commands", method: "POST", path: "/exchange/batchs", wantStatus: 400,
			body: `{"targetId":"t1","commands":[]}`},
		{name: "batch_create_missing_type", method: "POST", path: "/exchange/batchs", wantStatus: 400,
			body: `{"targetId":"t1","commands":[{"type":"A"},{"payload":1}]}`},
		{name: "batch_create_negative_max_retry", method: "POST", path: "/exchange/batchs", wantStatus: 400,
			body: `{"targetId":"t1","maxRetry":-1,"commands":[{"type":"A"}]}`},
		{name: "batch_create_max_retry_too_large", method: "POST", path: "/exchange/batchs", wantStatus: 400,
			body: `{"targetId":"t1","maxRetry":9223372036854775807,"commands":[{"type":"A"}]}`},
		{name: "batch_create_duplicate_command_ids", method: "POST", path: "/exchange/batchs", wantStatus: 400,
			body: `{"targetId":"t1","commands":[{"id":"x","type":"A"},{"id":"x","type":"B"}]}`},
		{name: "batch_create_disabled", server: "nobatches", method: "POST", path: "/exchange/batchs", wantStatus: 501,
			body: `{"targetId":"t1","commands":[{"type":"A"}]}`},
		// Batch cancellation (last: it deletes batches of the shared server).
		{name: "batch_cancel", method: "DELETE", path: "/exchange/batchs/b3", wantStatus: 200},
		{name: "batch_cancelled_is_gone", path: "/exchange/batchs/b3", wantStatus: 404},
		{name: "batch_cancel_alias", method: "DELETE", path: "/exchange/batches/b1", wantStatus: 200, golden: "batch"},
		{name: "batch_cancel_again", method: "DELETE", path: "/exchange/batches/b1", wantStatus: 404},
		{name: "batch_cancel_not_found", method: "DELETE", path: "/exchange/batchs/unknown", wantStatus: 404, golden: "batch_not_found"},
		{name: "batch_cancel_disabled", server: "nobatches", method: "DELETE", path: "/exchange/batchs/b1", wantStatus: 404, golden: "batch_disabled_not_found"},
		// Routing and limits.
		{name: "route_not_found", path: "/exchange/nothing", wantStatus: 404},
		{name: "method_not_allowed", method: "DELETE", path: "/exchange/targets", wantStatus: 405},
		{name: "body_too_large", server: "smallbody", method: "POST", path: "/exchange/targets/t1/commands", wantStatus: 413,
			body: `{"type":"ECHO","payload":"` + strings.Repeat("x", 200) + `"}`},
	}
}

const octetStream = "application/octet-stream"

func goldenServers(t *testing.T) map[string]*Server {
	return map[string]*Server{
		"full":       newServer(t, Config{Snapshots: newFakeSnapshots()}, newFakeExchange(), newFakeBatches()),
		"standalone": newServer(t, Config{}, &standaloneExchange{*newFakeExchange()}, nil),
		"empty":      newServer(t, Config{}, &emptyExchange{}, newFakeBatches()),
		"nobatches":  newServer(t, Config{}, newFakeExchange(), nil),
		"notready":   newServer(t, Config{Ready: func() error { return errors.New("raft: no leader") }}, newFakeExchange(), nil),
		"smallbody":  newServer(t, Config{BodyLimit: 64, MaxSnapshotBytes: 128, Snapshots: newFakeSnapshots()}, newFakeExchange(), nil),
	}
}

// TestGolden runs every route, including its errors, through real HTTP and
// compares the bodies with testdata/*.golden (go test -run Golden -update
// rewrites them).
func TestGolden(t *testing.T) {
	servers := map[string]string{}
	for name, s := range goldenServers(t) {
		servers[name] = serveHTTP(t, s).URL
	}
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.server
			if key == "" {
				key = "full"
			}
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			var header http.Header
			if tc.contentType != "" {
				header = http.Header{"Content-Type": {tc.contentType}}
			}
			resp, body := doURL(t, servers[key], method, tc.path, tc.body, header)
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("%s %s: status = %d, want %d; body:\n%s", method, tc.path, resp.StatusCode, tc.wantStatus, body)
			}
			wantType := "application/json"
			if tc.path == "/metrics" {
				wantType = tc.wantHeader["Content-Type"]
			}
			if got := resp.Header.Get("Content-Type"); got != wantType {
				t.Errorf("Content-Type = %q, want %q", got, wantType)
			}
			for k, v := range tc.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tc.wantStatus >= 400 {
				checkErrorBody(t, body, tc.wantStatus)
			}
			golden := tc.golden
			if golden == "" {
				golden = tc.name
			}
			checkGolden(t, golden, body)
		})
	}
}
