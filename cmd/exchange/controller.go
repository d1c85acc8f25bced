package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/management"
	"github.com/exchangekit/exchange/metrics"
	"github.com/exchangekit/exchange/state"
)

func init() { subcommands = append(subcommands, newControllerCommand) }

type controllerFlags struct {
	nodeID          string
	dataDir         string
	grpcAddr        string
	wsAddr          string
	httpAddr        string
	raftAddr        string
	gossipAddr      string
	join            []string
	bootstrapExpect int
	clusterToken    string
	advertise       string
	leaveOnStop     bool
	isolation       time.Duration
	rebalance       time.Duration
	maxChannels     int
	maxPerTarget    int
	maxBatches      int
	inMemory        bool
	restore         string
	tlsCert         string
	tlsKey          string
	tlsClientCA     string
	tokens          []string
	tokensFile      string
	tlsIdentity     string
	tlsIdentitySet  bool // --tls-identity was given
	mgmtTokens      []string
	healthInterval  time.Duration
	healthTimeout   time.Duration
	shutdownTimeout time.Duration
	batchMaxReply   int
	limits          limitFlags
	log             logFlags
	tracing         tracingFlags
}

// limitFlags are the limits before HELLO (docs/operations.md, "Limits before
// HELLO"; decision 0014).
type limitFlags struct {
	streamsPerConn     int
	conns, connsPerSrc int
	handshakes         int
	handshakesPerSrc   int
	queueWait          time.Duration // the gRPC handshake queue (decision 0044)
	maxQueued          int
	handshakeTimeout   time.Duration
	connTimeout        time.Duration
	connIdle           time.Duration
	failedHelloRate    float64
	failedHelloBurst   int
}

// register declares the flags on fl with the package defaults.
func (l *limitFlags) register(fl *pflag.FlagSet) {
	d := grpcchannel.DefaultServerLimits()
	fl.IntVar(&l.streamsPerConn, "max-streams-per-connection", d.MaxConcurrentStreams, "HTTP/2 streams open at once on one connection; a connector needs 1 (negative: gRPC's default, no limit)")
	fl.IntVar(&l.conns, "max-connections", d.MaxConnections, "connections open at once on --grpc-addr, and apart on --ws-addr; more are refused at once with a retry hint (gRPC: RESOURCE_EXHAUSTED, retry after 5s; WebSocket: 503). Default: the file-descriptor limit read at start minus a reserve of max(256, 5%) for the management port, raft, gossip and files (negative: no limit)")
	fl.IntVar(&l.connsPerSrc, "max-connections-per-source", d.MaxConnectionsPerSource, "connections open at once from one IP address (IPv6: one /64) (negative: no limit)")
	fl.IntVar(&l.handshakes, "max-handshakes", d.MaxHandshakes, "channels not yet past HELLO at once; more are refused with RESOURCE_EXHAUSTED (WebSocket: 503) (negative: no limit)")
	fl.IntVar(&l.handshakesPerSrc, "max-handshakes-per-source", d.MaxHandshakesPerSource, "channels not yet past HELLO at once from one source (negative: no limit)")
	fl.DurationVar(&l.queueWait, "handshake-queue-wait", d.HandshakeQueueWait, "gRPC: a channel over --max-handshakes waits in line for a place, rather than being refused, if it should get one within this long at the rate places free up; refused when it has waited this long (negative: no queue, refuse at once)")
	fl.IntVar(&l.maxQueued, "max-queued-handshakes", d.MaxQueuedHandshakes, "gRPC: channels waiting in line for a handshake place at most (negative: bounded by --handshake-queue-wait only)")
	fl.DurationVar(&l.handshakeTimeout, "handshake-timeout", d.HandshakeTimeout, "a channel that has sent nothing (no HELLO) this long is closed (negative: never)")
	fl.DurationVar(&l.connTimeout, "connection-timeout", d.ConnectionTimeout, "bound on a new connection's TLS handshake and HTTP/2 preface (negative: gRPC's 120s)")
	fl.DurationVar(&l.connIdle, "max-connection-idle", d.MaxConnectionIdle, "a connection without any stream this long is closed with GOAWAY (negative: never)")
	fl.Float64Var(&l.failedHelloRate, "failed-hello-rate", controller.DefaultFailedHelloRate, "failed HELLOs allowed per second and source, sustained")
	fl.IntVar(&l.failedHelloBurst, "failed-hello-burst", controller.DefaultFailedHelloBurst, "failed HELLOs allowed at once from one source before it is refused without authentication (negative: no limit)")
}

// logCap logs, once at start, the file-descriptor limit and the connection
// cap, and warns when the cap leaves the rest of the process too few
// descriptors (docs/operations.md, "Connection cap").
func (l limitFlags) logCap(log *slog.Logger) {
	n, ok := grpcchannel.FDLimit()
	if !ok {
		log.Info("connection cap", "maxConnections", l.conns, "fdLimit", "unknown")
		return
	}
	log.Info("connection cap", "fdLimit", n, "maxConnections", l.conns, "derived", grpcchannel.ConnectionCapForFDLimit(n))
	if l.conns < 0 || uint64(l.conns) > n-grpcchannel.FDReserve(n) {
		log.Warn("--max-connections leaves fewer file descriptors than the reserve: connectors may starve the management port, raft and gossip",
			"fdLimit", n, "maxConnections", l.conns, "reserve", grpcchannel.FDReserve(n))
	}
}

// server returns the transport's limits.
func (l limitFlags) server() grpcchannel.ServerLimits {
	return grpcchannel.ServerLimits{
		MaxConcurrentStreams:    l.streamsPerConn,
		MaxConnections:          l.conns,
		MaxConnectionsPerSource: l.connsPerSrc,
		MaxHandshakes:           l.handshakes,
		MaxHandshakesPerSource:  l.handshakesPerSrc,
		HandshakeQueueWait:      l.queueWait,
		MaxQueuedHandshakes:     l.maxQueued,
		HandshakeTimeout:        l.handshakeTimeout,
		ConnectionTimeout:       l.connTimeout,
		MaxConnectionIdle:       l.connIdle,
	}
}

func newControllerCommand(stdout, stderr io.Writer) *cobra.Command {
	var f controllerFlags
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run a controller node (single node, or one of a cluster; durable state in --data-dir)",
		Long: `Run a controller: connectors connect to --grpc-addr, the management API and
Prometheus metrics are served on --http-addr, and the replicated state (channel
registry, primaries and their epochs, batches) is kept by raft in --data-dir,
so nothing acknowledged is lost on a crash or restart. --in-memory keeps
everything in memory instead.

With --cluster-token (and --bootstrap-expect N, --join HOST:PORT,...) the node
is one of a cluster: gossip on --gossip-addr, node-to-node links on the gRPC
port, everything advertised at --advertise-addr. Without any of these flags it
is a single node and binds no gossip port.

Without --management-token the management API listens on loopback only.
Connectors authenticate in HELLO with a token bound to connector ids and
targets (--tokens-file; --token is one unbound secret), and/or with a client
certificate from --tls-client-ca whose common name (--tls-identity) must be
the connector id. Without any of these every connector is accepted (a
warning says so).

A --tokens-file has one rule per line ('#' starts a comment line):

  TOKEN CONNECTOR-ID-PATTERN [TARGET-PATTERN...]
  cert:IDENTITY-PATTERN [TARGET-PATTERN...]

Patterns are globs ('*', '?', '[a-z]'; '*' does not match '/'); no target
pattern means any target. SIGHUP reads the file again (a malformed file keeps
the rules in force). See docs/operations.md, "Security".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.tlsIdentitySet = cmd.Flags().Changed("tls-identity")
			return runController(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	def := cluster.DefaultConfig()
	fl.StringVar(&f.nodeID, "node-id", "", "node id (default: stored in --data-dir, else the host name)")
	fl.StringVar(&f.dataDir, "data-dir", def.DataDir, "directory of the durable state (raft log, snapshots)")
	fl.StringVar(&f.grpcAddr, "grpc-addr", ":7400", "address connectors connect to (gRPC)")
	fl.StringVar(&f.wsAddr, "ws-addr", "", "address connectors may also connect to over WebSocket (paths /exchange/controller and the legacy /ws/controller/*, the reference system's V1 and LEGACY frames; TLS and mTLS as --grpc-addr); off when empty")
	fl.StringVar(&f.httpAddr, "http-addr", ":7480", "management API and /metrics address (loopback only without --management-token)")
	fl.StringVar(&f.raftAddr, "raft-addr", def.RaftAddr, "raft transport address")
	fl.StringVar(&f.gossipAddr, "gossip-addr", ":7402", "gossip (membership) address, for multi-node clusters")
	fl.StringSliceVar(&f.join, "join", nil, "gossip addresses of cluster members to join, HOST:PORT,...")
	fl.IntVar(&f.bootstrapExpect, "bootstrap-expect", 1, "number of nodes to wait for before bootstrapping a cluster")
	fl.StringVar(&f.clusterToken, "cluster-token", "", "secret shared by the nodes of a cluster: authenticates node-to-node links, encrypts gossip; setting it (or --join, or --bootstrap-expect > 1) turns clustering on")
	fl.BoolVar(&f.leaveOnStop, "leave-on-terminate", false, "leave the cluster on SIGINT/SIGTERM (the leader then removes this node from the voters); without it a stopped node stays a voter, as for a restart")
	fl.DurationVar(&f.isolation, "isolation-timeout", controller.DefaultIsolationTimeout, "how long a node may go without hearing the cluster's leader before it sends its connectors to other nodes (negative: never)")
	fl.DurationVar(&f.rebalance, "rebalance-delay", controller.DefaultRebalanceDelay, "after a node joins, how long the membership must stay grown before nodes over their fair share move connectors there (negative: never)")
	fl.IntVar(&f.maxChannels, "max-channels", controller.DefaultMaxChannels, "channels this node holds at most; beyond, new connections are refused retryably (negative: no bound)")
	fl.IntVar(&f.maxPerTarget, "max-channels-per-target", controller.DefaultMaxChannelsPerTarget, "channels one target has at most in the cluster; beyond, HELLO is refused with code 429 (negative: no bound)")
	fl.IntVar(&f.maxBatches, "max-unfinished-batches-per-target", batch.DefaultMaxUnfinishedPerTarget, "batches of one target not yet ended at most; beyond, creating one answers 429 (negative: no bound)")
	fl.StringVar(&f.advertise, "advertise-addr", "", "host or IP other nodes reach this node at (raft, gossip, gRPC); default: the bind host when specific, else this host's private IP")
	fl.BoolVar(&f.inMemory, "in-memory", false, "keep all state in memory (lost on exit)")
	fl.StringVar(&f.restore, "restore", "", "start from the snapshot in FILE (exchange ctl snapshot save): --data-dir must be empty; this node starts a new cluster alone, the others join it")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "server certificate (PEM) for TLS on --grpc-addr")
	fl.StringVar(&f.tlsKey, "tls-key", "", "server key (PEM)")
	fl.StringVar(&f.tlsClientCA, "tls-client-ca", "", "CA (PEM) whose client certificates are required (mutual TLS)")
	fl.StringSliceVar(&f.tokens, "token", nil, "token(s) connectors may present in HELLO, valid for any connector id and target (prefer --tokens-file)")
	fl.StringVar(&f.tokensFile, "tokens-file", "", "file of connector credentials: 'TOKEN CONNECTOR-ID-PATTERN [TARGET-PATTERN...]' and 'cert:IDENTITY-PATTERN [TARGET-PATTERN...]' lines, read at start and again on SIGHUP")
	fl.StringVar(&f.tlsIdentity, "tls-identity", "cn", "with --tls-client-ca, what the connector id must equal: cn (the client certificate's common name), san-uri (its only URI SAN), none (any certificate may claim any id)")
	fl.StringSliceVar(&f.mgmtTokens, "management-token", nil, "bearer token(s) for the management API and /metrics")
	fl.DurationVar(&f.healthInterval, "health-interval", controller.DefaultHealthInterval, "period of the HEALTH_CHECK of every channel")
	fl.DurationVar(&f.healthTimeout, "health-timeout", controller.DefaultHealthTimeout, "how long a channel has to answer a HEALTH_CHECK")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", controller.DefaultShutdownTimeout, "bound on saying GOOD_BYE to every connector and unregistering the channels on exit; connectors not told by then are disconnected")
	fl.IntVar(&f.batchMaxReply, "batch-max-reply-bytes", batch.DefaultMaxReplyPayload, "largest reply payload a batch stores per command; a larger reply fails its command")
	f.limits.register(fl)
	f.tracing.register(fl)
	fl.StringVar(&f.log.level, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.log.format, "log-format", "text", "log format: text or json")
	return cmd
}

// nodeCluster is what the controller command needs from either twin of the
// cluster: the controller's seam, readiness for /readyz.
type nodeCluster interface {
	controller.Cluster
	Ready() error
}

func runController(ctx context.Context, f controllerFlags, stdout, stderr io.Writer) error {
	log, err := f.log.logger(stderr)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	stopTracing, err := f.tracing.start(ctx, "exchange-controller", log)
	if err != nil {
		return err
	}
	defer stopTracing() // flushes the spans still buffered
	clustered := len(f.join) > 0 || f.bootstrapExpect > 1 || f.clusterToken != ""
	switch {
	case clustered && f.inMemory:
		return &exitError{code: 2, err: errors.New("--in-memory runs a single node: it cannot be combined with --join, --bootstrap-expect > 1 or --cluster-token")}
	case clustered && f.clusterToken == "":
		return &exitError{code: 2, err: errors.New("a cluster needs --cluster-token (the same secret on every node): it authenticates node-to-node links and encrypts the gossip")}
	case f.bootstrapExpect < 1:
		return &exitError{code: 2, err: fmt.Errorf("--bootstrap-expect %d: at least 1", f.bootstrapExpect)}
	case f.restore != "" && f.inMemory:
		return &exitError{code: 2, err: errors.New("--restore needs a --data-dir: it cannot be combined with --in-memory")}
	case f.restore != "" && (len(f.join) > 0 || f.bootstrapExpect > 1):
		return &exitError{code: 2, err: errors.New("--restore starts a new cluster from the snapshot on this node alone: start it without --join and --bootstrap-expect, then join the other nodes to it (or restore into a running cluster with exchange ctl snapshot restore)")}
	}
	var restoreData []byte
	if f.restore != "" {
		if restoreData, err = readRestoreFile(f.restore, f.dataDir); err != nil {
			return &exitError{code: 2, err: err}
		}
	}
	tlsCfg, err := serverTLS(f.tlsCert, f.tlsKey, f.tlsClientCA)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	auths, summary, err := connectorAuth(f)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if len(f.tokens) > 0 {
		log.Warn("--token is valid for any connector id and any target: whoever holds it can take over any connector; bind tokens with --tokens-file")
	}
	if f.tlsClientCA != "" && tlsIdentities[f.tlsIdentity] == controller.BindNone {
		log.Warn("--tls-identity none: any client certificate from --tls-client-ca may claim any connector id")
	}
	connAuth := &swappableAuth{}
	connAuth.cur.Store(controller.Chain(auths...))

	// Connectors' transport.
	f.limits.logCap(log)
	sopts := []grpcchannel.ServerOption{grpcchannel.WithLimits(f.limits.server())}
	if tlsCfg != nil {
		sopts = append(sopts, grpcchannel.WithTLS(tlsCfg))
	}
	srv := grpcchannel.NewServer(sopts...)
	gl, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", f.grpcAddr, err)
	}
	// The WebSocket transport, with --ws-addr: the controller accepts from
	// both (channel.MultiListener).
	var (
		connLis channel.Listener = srv
		ws      *wsTransport
	)
	if f.wsAddr != "" {
		if ws, err = listenWS(f, tlsCfg, log); err != nil {
			_ = gl.Close()
			return err
		}
		defer ws.lis.Close() // Serve closes it too; a second Close only reports
		connLis = channel.MultiListener(srv, ws.srv)
	}

	// The replicated state: raft on disk by default, or memory.
	var (
		store   nodeCluster
		node    *cluster.Node
		nodeID  = f.nodeID
		where   = "memory (--in-memory: nothing survives exit)"
		cluInfo func() controller.ClusterInfo
	)
	if f.inMemory {
		mem := standalone.New(f.nodeID)
		defer mem.Close()
		store, nodeID = mem, mem.NodeID()
	} else {
		ccfg := cluster.DefaultConfig()
		ccfg.NodeID, ccfg.DataDir, ccfg.RaftAddr, ccfg.Logger = f.nodeID, f.dataDir, f.raftAddr, log
		if clustered {
			if ccfg.Cluster, ccfg.RaftAdvertiseAddr, err = clusterConfig(f, srv, gl, tlsCfg); err != nil {
				_ = gl.Close()
				return &exitError{code: 2, err: err}
			}
		}
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		node, err = cluster.Open(octx, ccfg)
		cancel()
		if err != nil {
			_ = gl.Close()
			return fmt.Errorf("open state in %s: %w", f.dataDir, err)
		}
		defer func() {
			if f.leaveOnStop {
				lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				if err := node.Leave(lctx); err != nil {
					log.Error("leave the cluster", "err", err)
				}
				cancel()
			}
			if err := node.Close(); err != nil {
				log.Error("close state", "err", err)
			}
		}()
		if restoreData != nil {
			if err := restoreNode(ctx, node, f.restore, restoreData, stdout); err != nil {
				_ = gl.Close()
				return err
			}
		}
		store, nodeID = node, node.NodeID()
		where = fmt.Sprintf("%s (raft %s)", f.dataDir, node.RaftAddr())
		cluInfo = func() controller.ClusterInfo { return clusterInfo(node.Stats()) }
	}

	// Metrics: the controller's own plus Go runtime and process collectors.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	src := &lateSource{}
	m := metrics.NewController(reg, src)
	reg.MustRegister(transportCollector{srv}) // the gRPC transport's limits before HELLO (transport_metrics.go)

	cfg := controller.DefaultConfig()
	cfg.Logger = log
	cfg.Metrics = m
	cfg.OnEvent = m.OnEvent
	cfg.ClusterInfo = cluInfo
	cfg.HealthInterval = f.healthInterval
	cfg.HealthTimeout = f.healthTimeout
	cfg.IsolationTimeout = f.isolation
	cfg.RebalanceDelay = f.rebalance
	cfg.MaxChannels = f.maxChannels
	cfg.MaxChannelsPerTarget = f.maxPerTarget
	cfg.ShutdownTimeout = f.shutdownTimeout
	cfg.FailedHelloRate = f.limits.failedHelloRate
	cfg.FailedHelloBurst = f.limits.failedHelloBurst
	if len(auths) > 0 {
		cfg.Authenticator = connAuth
	}
	ctrl, err := controller.New(cfg, connLis, store)
	if err != nil {
		_ = gl.Close()
		return &exitError{code: 2, err: err}
	}

	bcfg := batch.DefaultConfig()
	bcfg.Logger = log
	bcfg.MaxReplyPayload = f.batchMaxReply
	bcfg.MaxUnfinishedPerTarget = f.maxBatches
	// Sends of the batch runner and of the management API are timed per
	// target (the dashboard's latency histograms).
	timed := metrics.TimedController{Controller: ctrl, Latency: metrics.NewTargetLatency(reg, 0)}
	runner, err := batch.NewRunner(bcfg, timed, state.NewBatchStore(store))
	if err != nil {
		_ = gl.Close()
		return &exitError{code: 2, err: err}
	}
	src.set(metrics.WithBatchCounts(ctrl, metrics.CountBatches(runner.ListBatches)), ctrl)

	mcfg := management.DefaultConfig()
	mcfg.Addr, mcfg.Tokens, mcfg.Logger = f.httpAddr, f.mgmtTokens, log
	mcfg.Ready = store.Ready // has a leader and has caught up
	mcfg.Events = store      // GET /exchange/events follows the replica
	if node != nil {
		mcfg.Snapshots = nodeSnapshots{node}
	}
	mgmt, err := management.New(mcfg, timed, runner, reg)
	if err != nil {
		_ = gl.Close()
		return &exitError{code: 2, err: err}
	}
	ml, err := mgmt.Listen()
	if err != nil {
		_ = gl.Close()
		return fmt.Errorf("listen %s: %w", f.httpAddr, err)
	}

	// SIGHUP reads the tokens file again; a bad file keeps the old rules.
	// Registered before the start lines, so a SIGHUP sent once they are
	// printed never meets the default action (exit).
	var hup chan os.Signal
	if f.tokensFile != "" {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}

	wsInfo := ""
	if ws != nil {
		wsInfo = " ws=" + ws.url()
	}
	fmt.Fprintf(stdout, "exchange controller node=%s grpc=%s http=http://%s%s state=%s\n",
		nodeID, gl.Addr(), ml.Addr(), wsInfo, where)
	if len(auths) == 0 {
		log.Warn("no --token, --tokens-file or --tls-client-ca: every connector is accepted")
	}
	if summary != "" {
		fmt.Fprintf(stdout, "connector credentials: %s\n", summary)
	}

	g, gctx := errgroup.WithContext(ctx)
	if hup != nil {
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-hup:
				}
				auths, summary, err := connectorAuth(f)
				if err != nil {
					log.Error("SIGHUP: tokens file not reloaded; the previous rules stay in force", "err", err)
					continue
				}
				connAuth.cur.Store(controller.Chain(auths...))
				fmt.Fprintf(stdout, "connector credentials reloaded: %s\n", summary)
			}
		})
	}
	g.Go(func() error {
		// A stop that comes before Serve has started (SIGTERM right
		// after start) makes Serve return ErrServerStopped: a clean stop.
		if err := srv.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc server: %w", err)
		}
		return nil
	})
	if ws != nil {
		g.Go(ws.serve)
	}
	g.Go(func() error { return ctrl.Run(gctx) })
	g.Go(func() error {
		// Only the leader runs batches: one runner per leadership term.
		return store.WhileLeader(gctx, func(term context.Context) {
			if err := runner.Run(term); err != nil && !errors.Is(err, batch.ErrClosed) {
				log.Error("batch runner stopped", "err", err)
			}
		})
	})
	g.Go(func() error { return mgmt.Serve(gctx, ml) })
	g.Go(func() error {
		<-gctx.Done()
		// Shut down in order: say GOOD_BYE to every connector and leave the
		// registry clean, stop the batch runner, then the transport.
		_ = ctrl.Close()
		_ = runner.Close()
		if node != nil && clustered {
			// Other nodes hold link streams on this gRPC server: closing
			// the node ends them, so the graceful stop below does not
			// wait its 5 s for them. (Close is idempotent; the deferred
			// one then only reports.)
			if err := node.Close(); err != nil {
				log.Error("close state", "err", err)
			}
		}
		if ws != nil {
			ws.shutdown(log)
		}
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-stopped:
		case <-t.C:
			srv.Stop()
			<-stopped
		}
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("controller stopped", "err", err)
	return err
}

// tlsIdentities maps --tls-identity to the certificate binding.
var tlsIdentities = map[string]controller.CertBinding{
	"cn":      controller.BindCommonName,
	"san-uri": controller.BindURISAN,
	"none":    controller.BindNone,
}

// connectorAuth builds the connectors' authenticators from --token,
// --tokens-file, --tls-client-ca and --tls-identity: tokens first (those of
// --token valid for any connector id and target), then the client
// certificate. It refuses a malformed or empty tokens file, cert: rules
// without mutual TLS, and an unknown --tls-identity. summary describes the
// tokens file's rules ("" without one).
func connectorAuth(f controllerFlags) (auths []controller.Authenticator, summary string, err error) {
	bind, ok := tlsIdentities[f.tlsIdentity]
	if !ok {
		return nil, "", fmt.Errorf("--tls-identity %q: want cn, san-uri or none", f.tlsIdentity)
	}
	if f.tlsIdentitySet && f.tlsClientCA == "" {
		return nil, "", errors.New("--tls-identity needs --tls-client-ca (mutual TLS)")
	}
	var creds controller.Credentials
	if f.tokensFile != "" {
		b, err := os.ReadFile(f.tokensFile)
		if err != nil {
			return nil, "", fmt.Errorf("--tokens-file: %w", err)
		}
		if creds, err = controller.ParseCredentials(bytes.NewReader(b)); err != nil {
			return nil, "", fmt.Errorf("--tokens-file %s: %w", f.tokensFile, err)
		}
		if len(creds.Tokens)+len(creds.Certs) == 0 {
			return nil, "", fmt.Errorf("--tokens-file %s holds no rules: it would refuse every connector", f.tokensFile)
		}
		if len(creds.Certs) > 0 && f.tlsClientCA == "" {
			return nil, "", fmt.Errorf("--tokens-file %s has %s lines: they need --tls-client-ca", f.tokensFile, controller.CertRulePrefix)
		}
		summary = fmt.Sprintf("%s: %d token rules, %d cert rules", f.tokensFile, len(creds.Tokens), len(creds.Certs))
	}
	rules := creds.Tokens
	for _, t := range f.tokens {
		rules = append(rules, controller.TokenRule{Token: t, Connector: "*"})
	}
	if len(rules) > 0 {
		a, err := controller.BoundTokens(rules...)
		if err != nil {
			return nil, "", fmt.Errorf("--token and --tokens-file: %w", err)
		}
		auths = append(auths, a)
	}
	if f.tlsClientCA != "" {
		auths = append(auths, controller.CertIdentity(bind, creds.Certs...))
	}
	return auths, summary, nil
}

// swappableAuth is the connectors' Authenticator, replaced whole when SIGHUP
// reloads the tokens file. HELLOs in progress finish with the rules they
// started with.
type swappableAuth struct {
	cur atomicValue[controller.Authenticator]
}

// Authenticate runs the current rules.
func (a *swappableAuth) Authenticate(ctx context.Context, req controller.HelloRequest) (string, error) {
	return a.cur.Load().Authenticate(ctx, req)
}

// lateSource lets the metrics read the controller that is built after them.
type lateSource struct {
	src     atomicValue[metrics.Source]
	counter atomicValue[metrics.Counter]
}

var _ metrics.Counter = (*lateSource)(nil)

func (l *lateSource) set(s metrics.Source, c metrics.Counter) {
	l.src.Store(s)
	l.counter.Store(c)
}

func (l *lateSource) Channels() []controller.ChannelInfo {
	if s := l.src.Load(); s != nil {
		return s.Channels()
	}
	return nil
}

func (l *lateSource) Targets() []controller.TargetInfo {
	if s := l.src.Load(); s != nil {
		return s.Targets()
	}
	return nil
}

// Counts forwards to the controller's counters, so that a scrape reads them
// instead of walking the registry (metrics.Counter); zero before set.
func (l *lateSource) Counts() controller.Counts {
	if c := l.counter.Load(); c != nil {
		return c.Counts()
	}
	return controller.Counts{}
}

// BatchCounts forwards to the wrapped source when it counts batches.
func (l *lateSource) BatchCounts() map[string]int {
	if bc, ok := l.src.Load().(metrics.BatchCounter); ok {
		return bc.BatchCounts()
	}
	return nil
}

// clusterInfo maps the raft node's view to the controller's: raft figures,
// and every node of the raft configuration or the gossip.
func clusterInfo(st cluster.Stats) controller.ClusterInfo {
	info := controller.ClusterInfo{NodeID: st.NodeID, LeaderID: st.LeaderID, State: st.State,
		Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastContact: st.LastContact}
	for _, m := range st.Members {
		state := m.GossipState
		switch {
		case state != "":
		case m.NodeID == st.NodeID:
			state = "alive" // this node answers; it does not gossip (a single node)
		default:
			state = "unknown" // a raft server the gossip does not know
		}
		suffrage := strings.ToLower(m.Suffrage)
		if suffrage == "" {
			suffrage = "none"
		}
		info.Members = append(info.Members, controller.MemberInfo{
			NodeID: m.NodeID, Address: m.GossipAddr, State: state, Leader: m.Leader,
			Suffrage: suffrage, RaftAddress: m.Address, GRPCAddress: m.GRPCAddr})
	}
	return info
}

// clusterConfig builds the clustering part of the node's configuration from
// the flags: gossip on --gossip-addr, links on the gRPC port, everything
// advertised at --advertise-addr (or the bind host, or this host's IP).
// It also returns the raft advertise address.
func clusterConfig(f controllerFlags, srv *grpcchannel.Server, gl net.Listener, tlsCfg *tls.Config) (cluster.ClusterConfig, string, error) {
	host := f.advertise
	if host == "" {
		h, _, err := net.SplitHostPort(f.grpcAddr)
		if err != nil {
			return cluster.ClusterConfig{}, "", fmt.Errorf("--grpc-addr %q: %w", f.grpcAddr, err)
		}
		if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
			h = cluster.HostIP()
		}
		host = h
	}
	at := func(flag, addr string, bound net.Addr) (string, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return "", fmt.Errorf("--%s %q: %w", flag, addr, err)
		}
		if bound != nil {
			_, port, _ = net.SplitHostPort(bound.String())
		}
		if port == "0" {
			return "", fmt.Errorf("--%s %q: a cluster node needs a fixed port", flag, addr)
		}
		return net.JoinHostPort(host, port), nil
	}
	grpcAdv, err := at("grpc-addr", f.grpcAddr, gl.Addr())
	if err != nil {
		return cluster.ClusterConfig{}, "", err
	}
	gossipAdv, err := at("gossip-addr", f.gossipAddr, nil)
	if err != nil {
		return cluster.ClusterConfig{}, "", err
	}
	raftAdv, err := at("raft-addr", f.raftAddr, nil)
	if err != nil {
		return cluster.ClusterConfig{}, "", err
	}
	dialOpts := []grpcchannel.DialOption{grpcchannel.WithInsecure()}
	if tlsCfg != nil {
		// Nodes dial each other with the node's own certificate, trusting
		// the client CA (mutual TLS) or the system roots.
		ct := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: tlsCfg.Certificates, RootCAs: tlsCfg.ClientCAs}
		dialOpts = []grpcchannel.DialOption{grpcchannel.WithTLS(ct)}
	}
	return cluster.ClusterConfig{
		GossipAddr:          f.gossipAddr,
		GossipAdvertiseAddr: gossipAdv,
		Join:                f.join,
		BootstrapExpect:     f.bootstrapExpect,
		GRPCAdvertiseAddr:   grpcAdv,
		Links:               grpcchannel.NewLinkTransport(srv, dialOpts...),
		Token:               f.clusterToken,
	}, raftAdv, nil
}
