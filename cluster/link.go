package cluster

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// LinkTransport carries node-to-node links: the Cluster/Link service on every
// node's gRPC port (grpcchannel.Server.Links and WithLinkService), or any
// other channel transport.
type LinkTransport interface {
	// Listener yields the links other nodes open to this one. The Node owns
	// it once opened and closes it on Close.
	Listener() channel.Listener
	// Dialer returns a dialer of links to the node whose link address is
	// addr. The Node closes it (if it is an io.Closer) when done.
	Dialer(addr string) (channel.Dialer, error)
}

// linkHelloTimeout bounds a link's handshake.
const linkHelloTimeout = 5 * time.Second

// links is this node's side of the node-to-node links: the peers it dials
// (one link each, opened on first use, reopened after a failure) and the
// links other nodes opened to it. Every command between nodes goes one hop:
// what a link delivers is applied or sent locally, never passed on.
type links struct {
	self      string
	token     string
	transport LinkTransport
	resolve   func(node string) (addr string, ok bool) // a node's link address
	log       *slog.Logger
	chcfg     channel.Config
	handler   command.Handler // serves commands received on links

	mu      sync.Mutex
	peers   map[string]*peer
	served  map[*channel.Channel]struct{}
	closed  bool
	serving sync.WaitGroup // accept loop and one goroutine per served link
	ctx     context.Context
	cancel  context.CancelFunc
}

// peer is the link to one node.
type peer struct {
	id     string
	addr   string
	dialer channel.Dialer

	mu      sync.Mutex
	ch      *channel.Channel // nil or dead: dial again
	dialing chan struct{}    // closed when the dial in progress ends
	lastErr error
}

func newLinks(self, token string, t LinkTransport, resolve func(string) (string, bool), h command.Handler, lg *slog.Logger) *links {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := channel.DefaultConfig()
	cfg.Logger = lg
	cfg.Coalesce = true
	return &links{self: self, token: token, transport: t, resolve: resolve, log: lg, chcfg: cfg, handler: h,
		peers: map[string]*peer{}, served: map[*channel.Channel]struct{}{}, ctx: ctx, cancel: cancel}
}

// serve accepts links until close.
func (l *links) serve() {
	lis := l.transport.Listener()
	l.serving.Go(func() {
		for {
			conn, err := lis.Accept(l.ctx)
			if err != nil {
				if l.ctx.Err() != nil || errors.Is(err, channel.ErrClosed) {
					return
				}
				l.log.Warn("cluster: accept link failed", "err", err)
				continue
			}
			l.serving.Go(func() { l.serveLink(conn) })
		}
	})
}

// serveLink runs the handshake of a link another node opened, then serves
// its commands until it closes.
func (l *links) serveLink(conn channel.Conn) {
	ctx, cancel := context.WithTimeout(l.ctx, linkHelloTimeout)
	defer cancel()
	hello, _, err := channel.AcceptHello(ctx, conn, func(_ context.Context, cmd *command.Command, h command.HelloPayload) (*command.Reply, error) {
		if h.TargetID != linkTarget || h.ConnectorID == "" {
			return nil, errors.New("not a node-to-node link")
		}
		if subtle.ConstantTimeCompare([]byte(h.Token), []byte(l.token)) != 1 {
			return nil, errors.New("wrong cluster token")
		}
		return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: linkTarget, NodeID: l.self,
			ProtocolVersion: command.ProtocolVersion, Capabilities: []string{command.CapabilityBatch}})
	})
	if err != nil {
		_ = conn.Close()
		if l.ctx.Err() == nil {
			l.log.Warn("cluster: link refused", "peer", channel.Peer(conn).Addr, "err", err)
		}
		return
	}
	cfg := l.chcfg
	cfg.Coalesce = slices.Contains(hello.Capabilities, command.CapabilityBatch)
	ch := channel.New(conn, l.handler, cfg)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = ch.Close()
		return
	}
	l.served[ch] = struct{}{}
	l.mu.Unlock()
	l.log.Debug("cluster: link from node", "node", hello.ConnectorID)
	select {
	case <-ch.Done():
	case <-l.ctx.Done():
	}
	_ = ch.Close()
	l.mu.Lock()
	delete(l.served, ch)
	l.mu.Unlock()
}

// send sends cmd to node over its link, opening the link if needed, and
// returns the reply, or the error the node reported, typed as it was there.
// A live link is used as it is; the node's address is resolved (from the
// membership, which decodes every member's meta) only to open a link.
func (l *links) send(ctx context.Context, node string, cmd *command.Command) (*command.Reply, error) {
	ch := l.live(node)
	if ch == nil {
		p, err := l.peer(node)
		if err != nil {
			return nil, err
		}
		if ch, err = p.get(ctx, l); err != nil {
			return nil, err
		}
	}
	reply, err := ch.Send(ctx, cmd)
	if err != nil {
		if errors.Is(err, channel.ErrClosed) && ch.Err() != nil {
			// The link itself broke: the command may or may not have
			// reached the node. Say which node, keep the cause.
			return nil, fmt.Errorf("cluster: link to node %s: %w", node, err)
		}
		return nil, err
	}
	if rerr, ok := replyError(node, reply); ok {
		return nil, rerr
	}
	return reply, nil
}

// live returns the link to node if one is open and alive, else nil.
func (l *links) live(node string) *channel.Channel {
	l.mu.Lock()
	p := l.peers[node]
	l.mu.Unlock()
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == nil || p.ch.Err() != nil {
		return nil
	}
	return p.ch
}

// peer returns the peer record of node, creating it.
func (l *links) peer(node string) (*peer, error) {
	addr, ok := l.resolve(node)
	if !ok {
		return nil, fmt.Errorf("cluster: node %s: no known address: %w", node, state.ErrNodeUnavailable)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("cluster: node %s: %w", node, ErrClosed)
	}
	p := l.peers[node]
	if p != nil && p.addr != addr { // the node moved: drop the old link
		p.close()
		p = nil
	}
	if p == nil {
		d, err := l.transport.Dialer(addr)
		if err != nil {
			return nil, fmt.Errorf("cluster: node %s at %s: %w: %w", node, addr, state.ErrNodeUnavailable, err)
		}
		p = &peer{id: node, addr: addr, dialer: d}
		l.peers[node] = p
	}
	return p, nil
}

// get returns p's live link, dialing one if needed; concurrent callers share
// one dial.
func (p *peer) get(ctx context.Context, l *links) (*channel.Channel, error) {
	for {
		p.mu.Lock()
		if p.ch != nil && p.ch.Err() == nil {
			ch := p.ch
			p.mu.Unlock()
			return ch, nil
		}
		if wait := p.dialing; wait != nil {
			p.mu.Unlock()
			select {
			case <-wait:
				p.mu.Lock()
				err := p.lastErr
				p.mu.Unlock()
				if err != nil {
					return nil, err
				}
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("cluster: link to node %s: %w", p.id, ctx.Err())
			}
		}
		p.dialing = make(chan struct{})
		p.mu.Unlock()

		ch, err := p.dial(ctx, l)
		p.mu.Lock()
		p.ch, p.lastErr = ch, err
		close(p.dialing)
		p.dialing = nil
		p.mu.Unlock()
		return ch, err
	}
}

func (p *peer) dial(ctx context.Context, l *links) (*channel.Channel, error) {
	hctx, cancel := context.WithTimeout(ctx, linkHelloTimeout)
	defer cancel()
	conn, err := p.dialer.Dial(hctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: link to node %s at %s: %w: %w", p.id, p.addr, state.ErrNodeUnavailable, err)
	}
	rep, err := channel.Hello(hctx, conn, command.HelloPayload{TargetID: linkTarget, ConnectorID: l.self, Token: l.token,
		Capabilities: []string{command.CapabilityBatch}})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("cluster: link to node %s at %s: handshake: %w: %w", p.id, p.addr, state.ErrNodeUnavailable, err)
	}
	if rep.NodeID != p.id {
		_ = conn.Close()
		return nil, fmt.Errorf("cluster: link to node %s at %s: the node there is %q: %w", p.id, p.addr, rep.NodeID, state.ErrNodeUnavailable)
	}
	cfg := l.chcfg
	cfg.Coalesce = slices.Contains(rep.Capabilities, command.CapabilityBatch)
	return channel.New(conn, nil, cfg), nil
}

func (p *peer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch != nil {
		_ = p.ch.Close()
	}
	if c, ok := p.dialer.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

// close closes every link, the listener and the dialers, and waits for the
// goroutines serving links.
func (l *links) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	peers := maps.Clone(l.peers)
	served := maps.Clone(l.served)
	l.mu.Unlock()
	l.cancel()
	_ = l.transport.Listener().Close()
	for _, p := range peers {
		p.close()
	}
	for ch := range served {
		_ = ch.Close()
	}
	l.serving.Wait()
}

// applied is the reply of an apply sent over a link: the log index of the
// entry (the sender waits until its own replica has applied it) and the
// ops' results.
type applied struct {
	Index   uint64         `json:"index"`
	Results []state.Result `json:"results"`
}

// decodeResults reads the reply of an apply sent over a link.
func decodeResults(node string, r *command.Reply, n int) ([]state.Result, uint64, error) {
	var a applied
	if err := json.Unmarshal(r.Payload, &a); err != nil {
		return nil, 0, fmt.Errorf("cluster: node %s: undecodable apply results: %w", node, err)
	}
	if len(a.Results) != n {
		return nil, 0, fmt.Errorf("cluster: node %s: %d apply results for %d ops", node, len(a.Results), n)
	}
	return a.Results, a.Index, nil
}
