//go:build unix

package grpcchannel

import (
	"io"
	"syscall"

	"google.golang.org/grpc/mem"
)

// ReadOnReady lets gRPC read a counted connection as it reads a bare
// *net.TCPConn: it waits until data is ready, and only then takes a read
// buffer from pool, so that an idle connection holds no read buffer (gRPC's
// framer read-buffer pooling; 32 KiB per idle connection otherwise). It is
// gRPC's optional read interface for net.Conn wrappers (its
// internal/transport/readyreader.Reader), mirrored here: gRPC finds it by its
// method set. A connection without a raw file descriptor reads through the
// pool but waits holding the buffer.
func (c *limitedConn) ReadOnReady(bufSize int, pool mem.BufferPool) (*[]byte, int, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return blockingReadOnReady(c.Conn, bufSize, pool)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return blockingReadOnReady(c.Conn, bufSize, pool)
	}
	var (
		buf     *[]byte
		n       int
		readErr error
	)
	err = raw.Read(func(fd uintptr) bool {
		buf = pool.Get(bufSize)
		n, readErr = syscall.Read(int(fd), *buf)
		if readErr != nil {
			pool.Put(buf)
			buf = nil
		}
		return readErr != syscall.EAGAIN && readErr != syscall.EWOULDBLOCK // else: wait until readable
	})
	switch {
	case err != nil:
		if buf != nil {
			pool.Put(buf)
		}
		return nil, 0, err
	case readErr != nil:
		return nil, 0, readErr
	case n <= 0:
		// read(2) reports a closed connection as 0 bytes; io.Reader says EOF.
		pool.Put(buf)
		return nil, 0, io.EOF
	}
	return buf, n, nil
}

// blockingReadOnReady reads r into a buffer from pool.
func blockingReadOnReady(r io.Reader, bufSize int, pool mem.BufferPool) (*[]byte, int, error) {
	buf := pool.Get(bufSize)
	n, err := r.Read(*buf)
	if err != nil {
		pool.Put(buf)
		return nil, 0, err
	}
	return buf, n, nil
}
