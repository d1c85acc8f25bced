package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common, version 2):
// pages 0 and 1 are meta pages, each a 16-byte page header followed by the
// meta. checkBoltFile reads them itself, because bbolt memory-maps the file
// and trusts them: a file shorter than its own high-water mark faults (SIGBUS)
// as soon as bbolt touches a page past the end, which no recover() catches.
const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltPageHeaderSize = 16
	boltMetaSize       = 64 // magic, version, pageSize, flags, root{pgid, seq}, freelist, pgid, txid, checksum
	boltNoFreelist     = ^uint64(0)
)

// boltMeta is the part of a bbolt meta page checkBoltFile needs.
type boltMeta struct {
	pageSize uint32
	root     uint64 // page of the root bucket
	freelist uint64 // page of the freelist, or boltNoFreelist
	pgid     uint64 // high-water mark: pages [0, pgid) are in use or free
	txid     uint64
}

// parseBoltMeta decodes and verifies the meta page at the start of b.
func parseBoltMeta(b []byte) (boltMeta, error) {
	if len(b) < boltPageHeaderSize+boltMetaSize {
		return boltMeta{}, errors.New("short meta page")
	}
	m := b[boltPageHeaderSize : boltPageHeaderSize+boltMetaSize]
	le := binary.NativeEndian // bbolt writes its structs in the host's byte order
	if le.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, errors.New("not a bbolt meta page (bad magic)")
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt format version %d, want %d", v, boltVersion)
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return boltMeta{}, errors.New("meta page checksum mismatch")
	}
	return boltMeta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}, nil
}

// readBoltMeta returns the meta page bbolt would use for f (the valid one
// with the higher transaction id), as bbolt's Open and DB.meta choose it.
func readBoltMeta(f *os.File, size int64) (boltMeta, error) {
	read := func(off int64) ([]byte, error) {
		b := make([]byte, boltPageHeaderSize+boltMetaSize)
		if _, err := f.ReadAt(b, off); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("file ends inside a meta page")
			}
			return nil, err
		}
		return b, nil
	}
	b0, err := read(0)
	if err != nil {
		return boltMeta{}, fmt.Errorf("meta page 0: %w", err)
	}
	m0, err0 := parseBoltMeta(b0)
	// The second meta page is one page in; without a valid first page the
	// page size is unknown, so try every size bbolt supports (as it does).
	var offsets []int64
	if err0 == nil {
		offsets = []int64{int64(m0.pageSize)}
	} else {
		for i := range 15 {
			offsets = append(offsets, 1024<<i)
		}
	}
	var m1 boltMeta
	err1 := errors.New("meta page 1 not found")
	for _, off := range offsets {
		if off+boltPageHeaderSize+boltMetaSize > size {
			break
		}
		b1, err := read(off)
		if err != nil {
			err1 = fmt.Errorf("meta page 1: %w", err)
			break
		}
		if m1, err1 = parseBoltMeta(b1); err1 == nil {
			break
		}
	}
	switch {
	case err0 == nil && err1 == nil:
		if m1.txid > m0.txid {
			return m1, nil
		}
		return m0, nil
	case err0 == nil:
		return m0, nil
	case err1 == nil:
		return m1, nil
	}
	return boltMeta{}, fmt.Errorf("both meta pages are invalid (page 0: %v; page 1: %v)", err0, err1)
}

// checkBoltFile verifies that the non-empty bbolt file at path is whole and
// consistent before raft-boltdb opens it read-write: its meta pages are
// valid, the file reaches its high-water mark, every bucket, key and value is
// readable, and bbolt's own consistency check (Tx.Check) passes. Damage is a
// *DataDirError wrapping ErrRaftLogCorrupt; a lock held by another process
// for longer than lockTimeout is reported as such. The read-only pass costs
// one read of the file. It also reports whether the file has raft-boltdb's
// buckets (a file bbolt initialised but raft-boltdb never set up has not).
func checkBoltFile(path string, lockTimeout time.Duration, recovery string) (raftBuckets bool, err error) {
	corrupt := func(problem string, err error) error {
		return &DataDirError{Path: path, Kind: ErrRaftLogCorrupt, Problem: problem, Recovery: recovery, Err: err}
	}
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("cluster: open raft log %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("cluster: open raft log %s: %w", path, err)
	}
	meta, err := readBoltMeta(f, fi.Size())
	if err != nil {
		return false, corrupt("not a readable bbolt file", err)
	}
	if meta.pageSize < 512 || meta.pageSize&(meta.pageSize-1) != 0 {
		return false, corrupt(fmt.Sprintf("implausible bbolt page size %d", meta.pageSize), nil)
	}
	if end := meta.pgid * uint64(meta.pageSize); end > uint64(fi.Size()) {
		return false, corrupt(fmt.Sprintf("truncated: the file holds %d bytes but its pages reach byte %d", fi.Size(), end), nil)
	}
	if meta.root >= meta.pgid || (meta.freelist != boltNoFreelist && meta.freelist >= meta.pgid) {
		return false, corrupt(fmt.Sprintf("meta page points past the end of the data (root %d, freelist %d, %d pages)",
			meta.root, meta.freelist, meta.pgid), nil)
	}

	var db *bbolt.DB
	err = protect(func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{
			ReadOnly: true, Timeout: lockTimeout, PreLoadFreelist: true,
		})
		if err != nil {
			return err
		}
		return db.View(func(tx *bbolt.Tx) error {
			if err := walkBolt(tx.Cursor(), tx.Bucket); err != nil {
				return err
			}
			raftBuckets = tx.Bucket([]byte("logs")) != nil && tx.Bucket([]byte("conf")) != nil
			// Every page walkBolt reached is mapped, so Tx.Check (which
			// runs on its own goroutine, where a fault is not ours to
			// recover) only revisits pages known to be readable.
			var errs []error
			for err := range tx.Check() {
				if len(errs) < 5 {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		})
	})
	if db != nil {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close after check: %w", cerr)
		}
	}
	switch {
	case err == nil:
		return raftBuckets, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return false, fmt.Errorf("cluster: open raft log %s: locked by another process for %v: %w", path, lockTimeout, err)
	}
	return false, corrupt("bbolt consistency check failed", err)
}

// walkBolt reads every key and value reachable from c, recursing into
// nested buckets (bucket returns the bucket named by a key of c's bucket; at
// the top level every key is a bucket), so that a damaged page faults or
// panics here, under protect, rather than later inside raft.
func walkBolt(c *bbolt.Cursor, bucket func([]byte) *bbolt.Bucket) error {
	var sum byte
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) > 0 {
			sum ^= k[len(k)-1]
		}
		if v == nil { // a nested bucket
			b := bucket(k)
			if b == nil {
				return fmt.Errorf("bucket %q: cannot open", k)
			}
			if err := walkBolt(b.Cursor(), b.Bucket); err != nil {
				return fmt.Errorf("bucket %q: %w", k, err)
			}
			continue
		}
		if len(v) > 0 {
			sum ^= v[0] ^ v[len(v)-1]
		}
	}
	_ = sum // touching the bytes is the point
	return nil
}

// protect runs fn and turns a panic, or a memory fault (SIGBUS, SIGSEGV on
// a mapped file: debug.SetPanicOnFault), on this goroutine into an error.
// bbolt panics on pages it cannot make sense of, and faults on pages past the
// end of a truncated file.
func protect(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bbolt panicked: %v", r)
		}
	}()
	return fn()
}
