package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// nodeIDFile is the file in DataDir that binds the directory to a node id: the
// raft configuration stored in the log names this node by that id, so opening
// the directory under another id would leave the node waiting forever for an
// election it cannot win.
const nodeIDFile = "node-id"

// resolveNodeID returns the node id to use for dir: the stored one (which must
// match configured, when configured is set), else configured, else the host
// name; a new id is stored durably.
func resolveNodeID(dir, configured string) (string, error) {
	path := filepath.Join(dir, nodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored := strings.TrimSpace(string(b))
		if stored == "" {
			return "", fmt.Errorf("cluster: %s is empty", path)
		}
		if configured != "" && configured != stored {
			return "", fmt.Errorf("%w: %s was created by node %q, not %q", ErrNodeIDMismatch, dir, stored, configured)
		}
		return stored, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("cluster: read node id: %w", err)
	}
	id := configured
	if id == "" {
		if id, err = os.Hostname(); err != nil || id == "" {
			return "", fmt.Errorf("cluster: no node id configured and no host name: %w", err)
		}
	}
	if err := writeFileSync(path, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("cluster: store node id: %w", err)
	}
	return id, nil
}

// writeFileSync writes path atomically and durably: a temporary file, fsync,
// rename, fsync of the directory.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
