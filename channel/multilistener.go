package channel

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// MultiListener returns a Listener that accepts from all of ls at once (a
// controller serving connectors over gRPC and WebSocket, say): Accept
// returns the Conn of whichever listener yields first.
//
// It owns one goroutine per listener, which calls that listener's Accept and
// hands the result over; Close closes every listener, closes the Conns
// accepted but not yet handed over, and waits for the goroutines.
//
// When one listener fails with an error wrapping ErrClosed (it was closed
// under the MultiListener) while others remain, the MultiListener goes on
// with the others, and one Accept reports the loss with an error that does
// not wrap ErrClosed, so that a caller such as the controller's accept loop
// logs it and carries on. Once every listener is closed, Accept fails with an
// error wrapping ErrClosed. Other errors of a listener are returned by Accept
// as they are; that listener's next Accept waits for the caller's next one,
// so a caller that backs off on errors paces a failing listener too.
//
// With no listener, Accept fails at once with ErrClosed. The MultiListener must own them: nothing else may
// call their Accept or Close.
func MultiListener(ls ...Listener) Listener {
	ctx, cancel := context.WithCancel(context.Background())
	m := &multiListener{ls: ls, results: make(chan acceptResult), cancel: cancel,
		live: len(ls), allClosed: make(chan struct{})}
	if len(ls) == 0 {
		close(m.allClosed)
	}
	for i, l := range ls {
		m.wg.Go(func() { m.run(ctx, i, l) })
	}
	return m
}

type acceptResult struct {
	conn Conn
	err  error
}

type multiListener struct {
	ls      []Listener
	results chan acceptResult
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the goroutines of run

	mu        sync.Mutex
	live      int           // listeners not yet closed under us
	allClosed chan struct{} // closed when live drops to 0

	closeOnce sync.Once
	closeErr  error
}

var _ Listener = (*multiListener)(nil)

// lost counts one listener closed under us, and reports whether others remain.
func (m *multiListener) lost() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live--
	if m.live == 0 {
		close(m.allClosed)
	}
	return m.live > 0
}

// run accepts from l until the MultiListener is closed or l is.
func (m *multiListener) run(ctx context.Context, i int, l Listener) {
	for {
		conn, err := l.Accept(ctx)
		if ctx.Err() != nil {
			if conn != nil {
				_ = conn.Close()
			}
			return
		}
		r := acceptResult{conn: conn, err: err}
		closed := err != nil && errors.Is(err, ErrClosed)
		if closed {
			if !m.lost() {
				return // nothing remains: Accept reports ErrClosed
			}
			r.err = fmt.Errorf("channel: listener %d of %d closed; accepting from the others: %s", i+1, len(m.ls), err.Error())
		}
		select {
		case m.results <- r:
		case <-ctx.Done():
			if conn != nil {
				_ = conn.Close()
			}
			return
		case <-m.allClosed:
			// Every listener is closed: Accept reports ErrClosed instead.
			return
		}
		if closed {
			return
		}
	}
}

// Accept returns the next Conn of any listener; see MultiListener for the
// errors.
func (m *multiListener) Accept(ctx context.Context) (Conn, error) {
	select {
	case r := <-m.results:
		return r.conn, r.err
	case <-m.allClosed:
		return nil, fmt.Errorf("channel: accept: every listener is closed: %w", ErrClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("channel: accept: %w", context.Cause(ctx))
	}
}

// Close closes every listener and waits for the goroutines; Conns accepted
// but not handed over are closed. It returns the listeners' errors, joined.
// It is idempotent, and Accept then fails with an error wrapping ErrClosed.
func (m *multiListener) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		errs := make([]error, 0, len(m.ls))
		for _, l := range m.ls {
			errs = append(errs, l.Close())
		}
		m.wg.Wait()
		m.mu.Lock()
		if m.live > 0 {
			m.live = 0
			close(m.allClosed)
		}
		m.mu.Unlock()
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}
