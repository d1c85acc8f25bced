//go:build unix

package grpcchannel

import (
	"io"
	"net"
	"syscall"

	"google.golang.org/grpc/mem"
)

// readyConn lets gRPC read a wrapped connection (a counted one, see
// limitListener) as it reads a bare *net.TCPConn: it waits until data is
// ready, and only then takes a read buffer from the pool, so that an idle
// connection holds no read buffer (gRPC's framer read-buffer pooling; 32 KiB
// per idle connection otherwise). ReadOnReady is gRPC's optional read
// interface for net.Conn wrappers (its internal/transport/readyreader.Reader),
// which gRPC finds by its method set; this is its non-blocking reader, with
// its state kept in the conn so that a read allocates nothing.
type readyConn struct {
	net.Conn
	raw syscall.RawConn

	// The read in progress; fields rather than captured variables, so that
	// doRead is made once per connection.
	bufSize int
	pool    mem.BufferPool
	buf     *[]byte
	n       int
	readErr error
	doRead  func(fd uintptr) bool
}

// withReadOnReady wraps c, whose underlying connection is under, when under
// is a TCP or Unix socket; otherwise it returns c as it is.
func withReadOnReady(c, under net.Conn) net.Conn {
	switch under.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return c
	}
	raw, err := under.(syscall.Conn).SyscallConn()
	if err != nil {
		return c
	}
	rc := &readyConn{Conn: c, raw: raw}
	rc.doRead = rc.read
	return rc
}

func (c *readyConn) read(fd uintptr) bool {
	c.buf = c.pool.Get(c.bufSize)
	c.n, c.readErr = syscall.Read(int(fd), *c.buf)
	if c.readErr != nil {
		c.pool.Put(c.buf)
		c.buf = nil
	}
	return c.readErr != syscall.EAGAIN && c.readErr != syscall.EWOULDBLOCK // else: wait until readable
}

// ReadOnReady waits until the connection is readable, then reads up to
// bufSize bytes into a buffer from pool, which the caller gives back.
func (c *readyConn) ReadOnReady(bufSize int, pool mem.BufferPool) (*[]byte, int, error) {
	c.bufSize, c.pool = bufSize, pool
	err := c.raw.Read(c.doRead)
	buf, n, readErr := c.buf, c.n, c.readErr
	c.buf, c.n, c.readErr, c.pool = nil, 0, nil, nil
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
