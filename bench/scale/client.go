package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

// roleEnv selects the client role: the tool (and its test binary) re-executes
// itself with roleEnv=client; the client reads its clientConfig as the first
// line of stdin.
const roleEnv = "EXCHANGE_SCALE_ROLE"

// clientConfig is what the orchestrator tells one client process.
type clientConfig struct {
	Addr      string `json:"addr"`      // the controller's gRPC address
	First     int    `json:"first"`     // index of the first connector (ids and targets)
	Count     int    `json:"count"`     // connectors in this process
	PerTarget int    `json:"perTarget"` // connectors per target
	// Conns is the number of gRPC connections the connectors share; 0 means
	// one connection (one Dialer) per connector.
	Conns    int    `json:"conns"`
	SourceIP string `json:"sourceIP"` // local address to dial from (127.0.0.x), or ""
	// NoThrottle turns off the Dialers' adaptive throttling
	// (grpcchannel.WithoutThrottle, decision 0049).
	NoThrottle bool `json:"noThrottle,omitempty"`
}

// status is what a client reports on stdout, one JSON line every
// statusEvery.
type status struct {
	Ready     bool           `json:"ready,omitempty"`
	Stopped   bool           `json:"stopped,omitempty"`
	Error     string         `json:"error,omitempty"`
	Connected int            `json:"connected"` // connectors connected now
	Mark      int64          `json:"mark"`      // the last mark (unix ns)
	Since     int            `json:"since"`     // of which connected after it
	LastConn  int64          `json:"lastConn"`  // unix ns of the latest connection among Since
	Told      int            `json:"told"`      // connectors that learnt their role (epoch > 0) since start
	LastTold  int64          `json:"lastTold"`  // unix ns of the latest first PRIMARY notice
	Primaries int            `json:"primaries"` // connectors that believe they are primary
	Accepts   map[int64]int  `json:"accepts,omitempty"`
	RSSKiB    int64          `json:"rssKiB"`
	Errors    map[string]int `json:"errors,omitempty"` // attempt failures by kind since the last status
	// Examples holds, for each kind first seen since the last status, the
	// text of that first failure.
	Examples map[string]string `json:"examples,omitempty"`
}

const statusEvery = 200 * time.Millisecond

// targetOf names the target of connector i.
func targetOf(i, perTarget int) string { return fmt.Sprintf("t-%06d", i/perTarget) }

// connectorOf names connector i.
func connectorOf(i int) string { return fmt.Sprintf("c-%06d", i) }

// clientMain runs a client process: it builds the connectors, says ready,
// starts them all at once on "start", reports status lines, moves its mark on
// "mark <unix ns>", and stops on "stop" or the end of stdin.
func clientMain(in io.Reader, out io.Writer) int {
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	var encMu sync.Mutex
	emit := func(s status) {
		encMu.Lock()
		defer encMu.Unlock()
		_ = enc.Encode(s)
	}
	fail := func(err error) int {
		emit(status{Error: err.Error()})
		return 1
	}
	if !sc.Scan() {
		return fail(fmt.Errorf("no configuration on stdin"))
	}
	var cfg clientConfig
	if err := json.Unmarshal(sc.Bytes(), &cfg); err != nil {
		return fail(fmt.Errorf("configuration: %w", err))
	}
	c, err := newClient(cfg)
	if err != nil {
		return fail(err)
	}
	defer c.close()
	emit(status{Ready: true})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reporter sync.WaitGroup
	reporter.Go(func() {
		t := time.NewTicker(statusEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				emit(c.status())
			}
		}
	})
	var prof phaseProfile
	defer prof.stop()
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "start":
			stopProfile := startClientProfile(cfg.First)
			defer stopProfile()
			c.start()
		case strings.HasPrefix(line, "profile "):
			prof.start(strings.TrimPrefix(line, "profile "))
		case line == "profile-stop":
			prof.stop()
		case strings.HasPrefix(line, "mark "):
			ns, err := strconv.ParseInt(strings.TrimPrefix(line, "mark "), 10, 64)
			if err == nil {
				c.mark.Store(ns)
			}
		case line == "stop":
			cancel()
			reporter.Wait()
			c.close()
			emit(status{Stopped: true})
			return 0
		}
	}
	// stdin closed: the orchestrator is gone.
	cancel()
	reporter.Wait()
	return 0
}

type client struct {
	cfg     clientConfig
	dialers []*grpcchannel.Dialer
	conns   []*connector.Connector
	connAt  []atomic.Int64 // unix ns of the live connection; 0: not connected
	toldAt  []atomic.Int64 // unix ns of the first PRIMARY notice
	primary []atomic.Bool
	mark    atomic.Int64

	mu      sync.Mutex
	accepts map[int64]int  // connections per unix second, since the last status
	errs    map[string]int // failed attempts by kind, since the last status
	// examples holds the first failure's text of each kind in seen, until
	// the next status reports it.
	examples map[string]string
	seen     map[string]bool

	ctx     context.Context
	cancel  context.CancelFunc
	running sync.WaitGroup
	once    sync.Once
}

func newClient(cfg clientConfig) (*client, error) {
	if cfg.PerTarget < 1 {
		cfg.PerTarget = 1
	}
	c := &client{
		cfg:      cfg,
		conns:    make([]*connector.Connector, cfg.Count),
		connAt:   make([]atomic.Int64, cfg.Count),
		toldAt:   make([]atomic.Int64, cfg.Count),
		primary:  make([]atomic.Bool, cfg.Count),
		accepts:  map[int64]int{},
		errs:     map[string]int{},
		examples: map[string]string{},
		seen:     map[string]bool{},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{}
		if cfg.SourceIP != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(cfg.SourceIP)}
		}
		return d.DialContext(ctx, "tcp", addr)
	}
	newDialer := func() (*grpcchannel.Dialer, error) {
		opts := []grpcchannel.DialOption{grpcchannel.WithInsecure(), grpcchannel.WithContextDialer(dial)}
		if cfg.NoThrottle {
			opts = append(opts, grpcchannel.WithoutThrottle())
		}
		d, err := grpcchannel.NewDialer(cfg.Addr, opts...)
		if err != nil {
			return nil, err
		}
		c.dialers = append(c.dialers, d)
		return d, nil
	}
	for range cfg.Conns {
		if _, err := newDialer(); err != nil {
			c.close()
			return nil, err
		}
	}
	mux := command.NewMux()
	mux.RegisterFunc("ECHO", func(_ context.Context, cmd *command.Command) (*command.Reply, error) {
		return &command.Reply{Status: command.StatusSucceeded, Payload: cmd.Payload}, nil
	})
	discard := slog.New(slog.DiscardHandler)
	for i := range cfg.Count {
		var d channel.Dialer
		if cfg.Conns > 0 {
			d = c.dialers[i%cfg.Conns]
		} else {
			nd, err := newDialer()
			if err != nil {
				c.close()
				return nil, err
			}
			d = nd
		}
		ccfg := connector.DefaultConfig()
		ccfg.ConnectorID = connectorOf(cfg.First + i)
		ccfg.TargetID = targetOf(cfg.First+i, cfg.PerTarget)
		ccfg.Logger = discard
		ccfg.OnState = func(sc connector.StateChange) { c.onState(i, sc) }
		ccfg.OnPrimary = func(primary bool, epoch uint64) {
			c.primary[i].Store(primary)
			if epoch > 0 && c.toldAt[i].Load() == 0 {
				c.toldAt[i].Store(time.Now().UnixNano())
			}
		}
		conn, err := connector.New(ccfg, mux, d)
		if err != nil {
			c.close()
			return nil, err
		}
		c.conns[i] = conn
	}
	return c, nil
}

func (c *client) onState(i int, sc connector.StateChange) {
	switch sc.State {
	case connector.StateConnected:
		now := time.Now()
		c.connAt[i].Store(now.UnixNano())
		c.mu.Lock()
		c.accepts[now.Unix()]++
		c.mu.Unlock()
	case connector.StateDisconnected:
		c.connAt[i].Store(0)
		if sc.Err != nil && sc.ChannelID == "" { // a failed attempt
			kind := errorKind(sc.Err)
			c.mu.Lock()
			c.errs[kind]++
			if !c.seen[kind] {
				c.seen[kind] = true
				c.examples[kind] = sc.Err.Error()
			}
			c.mu.Unlock()
		}
	}
}

// errorKind names an attempt failure coarsely, for the report.
func errorKind(err error) string {
	if err == nil {
		return ""
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "throttled by the client"):
		return "throttled" // refused by the Dialer itself (decision 0049), before the server's limit
	case strings.Contains(msg, "limit"):
		return "limit"
	case strings.Contains(msg, "refused"):
		return "refused"
	case strings.Contains(msg, "deadline"):
		return "timeout"
	default:
		return "other"
	}
}

// start runs every connector at once.
func (c *client) start() {
	for _, conn := range c.conns {
		c.running.Go(func() { _ = conn.Run(c.ctx) })
	}
}

func (c *client) status() status {
	s := status{}
	mark := c.mark.Load()
	s.Mark = mark
	for i := range c.conns {
		if at := c.connAt[i].Load(); at > 0 {
			s.Connected++
			if at > mark {
				s.Since++
				s.LastConn = max(s.LastConn, at)
			}
		}
		if at := c.toldAt[i].Load(); at > 0 {
			s.Told++
			s.LastTold = max(s.LastTold, at)
		}
		if c.primary[i].Load() {
			s.Primaries++
		}
	}
	c.mu.Lock()
	if len(c.accepts) > 0 {
		s.Accepts, c.accepts = c.accepts, map[int64]int{}
	}
	if len(c.errs) > 0 {
		s.Errors, c.errs = c.errs, map[string]int{}
	}
	if len(c.examples) > 0 {
		s.Examples, c.examples = c.examples, map[string]string{}
	}
	c.mu.Unlock()
	s.RSSKiB, _ = rssKiB(os.Getpid())
	return s
}

// close stops every connector (in parallel) and releases the dialers.
func (c *client) close() {
	c.once.Do(func() {
		c.cancel()
		c.running.Wait()
		var wg sync.WaitGroup
		for _, conn := range c.conns {
			if conn != nil {
				wg.Go(func() { _ = conn.Close() })
			}
		}
		wg.Wait()
		for _, d := range c.dialers {
			_ = d.Close()
		}
	})
}

// clientProfileEnv names a directory: each client process then saves a CPU
// profile of its first clientProfileFor after the start there
// (client-<first>.cpu.pprof), to see what the simulated fleet spends.
const clientProfileEnv = "EXCHANGE_SCALE_CLIENT_PROFILE"

const clientProfileFor = 20 * time.Second

// startClientProfile starts the client's CPU profile if clientProfileEnv asks
// for one, and returns what stops it early (at "stop").
func startClientProfile(first int) (stop func()) {
	dir := os.Getenv(clientProfileEnv)
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("client-%d.cpu.pprof", first)))
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return func() {}
	}
	var once sync.Once
	end := func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		})
	}
	t := time.AfterFunc(clientProfileFor, end)
	return func() { t.Stop(); end() }
}

// phaseProfile is the CPU profile of one phase that the orchestrator asked
// for ("profile <path>" … "profile-stop", with -client-profiles).
type phaseProfile struct{ f *os.File }

// start begins a CPU profile written to path, ending the current one first.
// A profile already running from clientProfileEnv makes it a no-op.
func (p *phaseProfile) start(path string) {
	p.stop()
	f, err := os.Create(path)
	if err != nil {
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return
	}
	p.f = f
}

func (p *phaseProfile) stop() {
	if p.f == nil {
		return
	}
	pprof.StopCPUProfile()
	_ = p.f.Close()
	p.f = nil
}
