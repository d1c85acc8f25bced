package controller_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// A registered channel costs the controller no goroutine of its own while it
// lives: the connection's goroutine ends once the channel is registered, and
// the unregistration runs when the channel dies (decision 0021). It still
// happens: closing the connector unregisters its channel.
func TestRegisteredChannelHasNoWatcherGoroutine(t *testing.T) {
	h := newHarness(t, fastConfig())
	const n = 5
	conns := make([]*connector, n)
	for i := range conns {
		conns[i] = h.connect(connOpts{target: fmt.Sprintf("t-%d", i)})
		h.waitRegistered(conns[i].id(), true)
	}
	const serveConn = "controller.(*Controller).serveConn("
	h.waitFor("no connection goroutine left", func() bool {
		buf := make([]byte, 1<<20)
		for {
			k := runtime.Stack(buf, true)
			if k < len(buf) {
				return !strings.Contains(string(buf[:k]), serveConn)
			}
			buf = make([]byte, 2*len(buf))
		}
	})
	conns[0].close()
	h.waitRegistered(conns[0].id(), false)
}
