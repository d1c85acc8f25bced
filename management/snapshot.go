package management

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// Snapshots is the cluster's backup and restore, as the management API
// serves them on /exchange/cluster/snapshot. cmd adapts cluster.Node to it
// (this package does not import cluster). Both methods must be safe for
// concurrent use.
type Snapshots interface {
	// OpenSnapshot takes a consistent snapshot of this node's replica of the
	// replicated state and opens it; the caller closes the reader, which
	// yields exactly SnapshotInfo.Size bytes.
	OpenSnapshot(ctx context.Context) (SnapshotInfo, io.ReadCloser, error)
	// RestoreSnapshot restores a snapshot OpenSnapshot made into the
	// cluster. It fails with an error wrapping ErrInvalidSnapshot for data
	// that is not a snapshot, and ErrNotLeader on a node that cannot
	// restore (the message names the leader).
	RestoreSnapshot(ctx context.Context, r io.Reader) (SnapshotInfo, error)
}

// Errors a Snapshots implementation wraps so that the API answers 400 and
// 409.
var (
	ErrInvalidSnapshot = errors.New("not a valid snapshot")
	ErrNotLeader       = errors.New("this node is not the raft leader")
)

// errSnapshotsDisabled is the 501 of a server without Config.Snapshots.
var errSnapshotsDisabled = &statusError{http.StatusNotImplemented, "snapshots are not available on this controller (it keeps no raft state: --in-memory)"}

// SnapshotInfo describes a snapshot: the body of POST
// /exchange/cluster/snapshot, and the X-Exchange-Snapshot-* headers of GET.
type SnapshotInfo struct {
	// Index and Term are the raft index and term the snapshot covers.
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// Size is the size of the snapshot, in bytes.
	Size int64 `json:"size"`
	// NodeID is the node that took (or restored) it; Leader whether that
	// node was the leader. A follower's snapshot is of its own replica, as of
	// Index.
	NodeID string `json:"nodeId"`
	Leader bool   `json:"leader"`
}

// Headers of GET /exchange/cluster/snapshot.
const (
	HeaderSnapshotIndex  = "X-Exchange-Snapshot-Index"
	HeaderSnapshotTerm   = "X-Exchange-Snapshot-Term"
	HeaderSnapshotNode   = "X-Exchange-Snapshot-Node"
	HeaderSnapshotLeader = "X-Exchange-Snapshot-Leader"
)

// snapshotTransfer bounds the read or write of one snapshot body, in place
// of the server's ReadTimeout and WriteTimeout, which are sized for JSON.
const snapshotTransfer = 10 * time.Minute

const snapshotPath = "/exchange/cluster/snapshot"

// getSnapshot streams a snapshot of this node's replica.
func (s *Server) getSnapshot(c echo.Context) error {
	if s.cfg.Snapshots == nil {
		return errSnapshotsDisabled
	}
	info, rc, err := s.cfg.Snapshots.OpenSnapshot(c.Request().Context())
	if err != nil {
		return fmt.Errorf("management: snapshot: %w", err)
	}
	defer rc.Close()
	_ = http.NewResponseController(c.Response().Writer).SetWriteDeadline(time.Now().Add(snapshotTransfer))
	h := c.Response().Header()
	h.Set(HeaderSnapshotIndex, strconv.FormatUint(info.Index, 10))
	h.Set(HeaderSnapshotTerm, strconv.FormatUint(info.Term, 10))
	h.Set(HeaderSnapshotNode, info.NodeID)
	h.Set(HeaderSnapshotLeader, strconv.FormatBool(info.Leader))
	h.Set(echo.HeaderContentLength, strconv.FormatInt(info.Size, 10))
	h.Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="exchange-%d-%d.snap"`, info.Term, info.Index))
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMEOctetStream)
	c.Response().WriteHeader(http.StatusOK)
	if _, err := io.Copy(c.Response(), rc); err != nil {
		// The status is sent: the client sees a body shorter than
		// Content-Length.
		s.log.Warn("management: snapshot: write", "err", err)
	}
	return nil
}

// postSnapshot restores an uploaded snapshot (at most
// Config.MaxSnapshotBytes: limitBody) into the cluster.
func (s *Server) postSnapshot(c echo.Context) error {
	if s.cfg.Snapshots == nil {
		return errSnapshotsDisabled
	}
	_ = http.NewResponseController(c.Response().Writer).SetReadDeadline(time.Now().Add(snapshotTransfer))
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return fmt.Errorf("management: read snapshot: %w", err)
	}
	if len(body) == 0 {
		return &badRequestError{"body", "is empty; a snapshot (exchange ctl snapshot save) is expected"}
	}
	info, err := s.cfg.Snapshots.RestoreSnapshot(c.Request().Context(), bytes.NewReader(body))
	switch {
	case errors.Is(err, ErrInvalidSnapshot):
		return &statusError{http.StatusBadRequest, err.Error()}
	case errors.Is(err, ErrNotLeader):
		return &statusError{http.StatusConflict, err.Error()}
	case err != nil:
		return fmt.Errorf("management: restore: %w", err)
	}
	return writeJSON(c, http.StatusOK, info)
}

// bodyLimit is the request body limit of the route c matched.
func (s *Server) bodyLimit(c echo.Context) int64 {
	if c.Request().Method == http.MethodPost && c.Path() == snapshotPath {
		return s.cfg.MaxSnapshotBytes
	}
	return s.cfg.BodyLimit
}

// SaveSnapshot calls GET /exchange/cluster/snapshot and writes the snapshot
// to w. It fails if the body is shorter than announced.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	req, err := c.newRequest(ctx, http.MethodGet, snapshotPath, nil)
	if err != nil {
		return SnapshotInfo{}, err
	}
	req.Header.Set("Accept", echo.MIMEOctetStream)
	resp, err := c.send(ctx, req)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return SnapshotInfo{}, apiError(resp, data)
	}
	info := SnapshotInfo{Size: resp.ContentLength, NodeID: resp.Header.Get(HeaderSnapshotNode)}
	info.Index, _ = strconv.ParseUint(resp.Header.Get(HeaderSnapshotIndex), 10, 64)
	info.Term, _ = strconv.ParseUint(resp.Header.Get(HeaderSnapshotTerm), 10, 64)
	info.Leader, _ = strconv.ParseBool(resp.Header.Get(HeaderSnapshotLeader))
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("management: GET %s: read snapshot: %w", snapshotPath, err)
	}
	if info.Size >= 0 && n != info.Size {
		return SnapshotInfo{}, fmt.Errorf("management: GET %s: got %d of %d bytes", snapshotPath, n, info.Size)
	}
	info.Size = n
	return info, nil
}

// RestoreSnapshot calls POST /exchange/cluster/snapshot with the snapshot r
// yields (size bytes, -1 if unknown), which the leader restores into the
// cluster.
func (c *Client) RestoreSnapshot(ctx context.Context, r io.Reader, size int64) (SnapshotInfo, error) {
	req, err := c.newRequest(ctx, http.MethodPost, snapshotPath, r)
	if err != nil {
		return SnapshotInfo{}, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", echo.MIMEOctetStream)
	req.Header.Set("Accept", echo.MIMEApplicationJSON)
	resp, err := c.send(ctx, req)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("management: POST %s: read response: %w", snapshotPath, err)
	}
	if resp.StatusCode != http.StatusOK {
		return SnapshotInfo{}, apiError(resp, data)
	}
	var info SnapshotInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return SnapshotInfo{}, fmt.Errorf("management: POST %s: decode response: %w", snapshotPath, err)
	}
	return info, nil
}
