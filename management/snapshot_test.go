package management

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/controller"
)

// fakeSnapshots serves a fixed snapshot and records what it restores:
// "bad…" is not a snapshot, "follower…" meets a follower.
type fakeSnapshots struct {
	data []byte

	mu       sync.Mutex
	restored [][]byte
}

func newFakeSnapshots() *fakeSnapshots {
	return &fakeSnapshots{data: []byte("exchange-state v1\n{\"channels\":{}}")}
}

func (f *fakeSnapshots) OpenSnapshot(context.Context) (SnapshotInfo, io.ReadCloser, error) {
	return SnapshotInfo{Index: 42, Term: 3, Size: int64(len(f.data)), NodeID: "node-1", Leader: true},
		io.NopCloser(bytes.NewReader(f.data)), nil
}

func (f *fakeSnapshots) RestoreSnapshot(_ context.Context, r io.Reader) (SnapshotInfo, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return SnapshotInfo{}, err
	}
	switch {
	case bytes.HasPrefix(b, []byte("bad")):
		return SnapshotInfo{}, fmt.Errorf("%w: cluster: restore: bad header", ErrInvalidSnapshot)
	case bytes.HasPrefix(b, []byte("follower")):
		return SnapshotInfo{}, fmt.Errorf("%w: the leader is node-2 (10.0.0.2:7401): restore there", ErrNotLeader)
	}
	f.mu.Lock()
	f.restored = append(f.restored, b)
	f.mu.Unlock()
	return SnapshotInfo{Index: 57, Term: 3, Size: int64(len(b)), NodeID: "node-1", Leader: true}, nil
}

// TestSnapshotRoundTrip saves a snapshot through the client (headers, exact
// bytes) and uploads it back, past the JSON body limit but within
// MaxSnapshotBytes, with the token required.
func TestSnapshotRoundTrip(t *testing.T) {
	snaps := newFakeSnapshots()
	snaps.data = append([]byte("exchange-state v1\n"), bytes.Repeat([]byte("x"), 3000)...)
	s := newServer(t, Config{Tokens: []string{"secret"}, BodyLimit: 1024, MaxSnapshotBytes: 4096, Snapshots: snaps}, newFakeExchange(), nil)
	ts := serveHTTP(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()

	anon, err := NewClient(ts.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var api *APIError
	if _, err := anon.SaveSnapshot(ctx, io.Discard); !errors.As(err, &api) || api.StatusCode != http.StatusUnauthorized {
		t.Errorf("SaveSnapshot() without token = %v, want 401", err)
	}
	if _, err := anon.RestoreSnapshot(ctx, bytes.NewReader(snaps.data), int64(len(snaps.data))); !errors.As(err, &api) || api.StatusCode != http.StatusUnauthorized {
		t.Errorf("RestoreSnapshot() without token = %v, want 401", err)
	}

	c, err := NewClient(ts.URL, "secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	info, err := c.SaveSnapshot(ctx, &buf)
	if err != nil {
		t.Fatalf("SaveSnapshot() = %v", err)
	}
	want := SnapshotInfo{Index: 42, Term: 3, Size: int64(len(snaps.data)), NodeID: "node-1", Leader: true}
	if d := cmp.Diff(want, info); d != "" {
		t.Errorf("SaveSnapshot() info (-want +got):\n%s", d)
	}
	if !bytes.Equal(buf.Bytes(), snaps.data) {
		t.Errorf("saved %d bytes, want the %d of the snapshot", buf.Len(), len(snaps.data))
	}
	info, err = c.RestoreSnapshot(ctx, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatalf("RestoreSnapshot() = %v", err)
	}
	if info.Index != 57 || len(snaps.restored) != 1 || !bytes.Equal(snaps.restored[0], snaps.data) {
		t.Errorf("RestoreSnapshot() = %+v; restored %d snapshots", info, len(snaps.restored))
	}
	// Unknown size (chunked): the limit still holds while reading.
	big := bytes.Repeat([]byte("y"), 5000)
	if _, err := c.RestoreSnapshot(ctx, io.MultiReader(bytes.NewReader(big)), -1); !errors.As(err, &api) || api.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("RestoreSnapshot(5000 bytes, chunked) = %v, want 413", err)
	}
	if len(snaps.restored) != 1 {
		t.Errorf("a refused upload reached the restore: %d restores", len(snaps.restored))
	}
}

// TestSnapshotHeaders checks the GET response's headers.
func TestSnapshotHeaders(t *testing.T) {
	s := newServer(t, Config{Snapshots: newFakeSnapshots()}, newFakeExchange(), nil)
	resp, body := doURL(t, serveHTTP(t, s).URL, http.MethodGet, "/exchange/cluster/snapshot", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d: %s", resp.StatusCode, body)
	}
	for k, v := range map[string]string{
		"Content-Type":        "application/octet-stream",
		"Content-Length":      fmt.Sprint(len(newFakeSnapshots().data)),
		"Content-Disposition": `attachment; filename="exchange-3-42.snap"`,
		HeaderSnapshotIndex:   "42",
		HeaderSnapshotTerm:    "3",
		HeaderSnapshotNode:    "node-1",
		HeaderSnapshotLeader:  "true",
	} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(string(body), "exchange-state v1\n") {
		t.Errorf("body = %q", body)
	}
}

// standaloneExchange describes the cluster as controller.Controller does
// without a raft node (--in-memory).
type standaloneExchange struct{ fakeExchange }

func (standaloneExchange) Cluster() controller.ClusterInfo {
	return controller.ClusterInfo{NodeID: "node-1", LeaderID: "node-1", State: "Leader",
		Members: []controller.MemberInfo{{NodeID: "node-1", State: "alive", Leader: true}}}
}
