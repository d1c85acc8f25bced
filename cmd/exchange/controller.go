package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/exchangekit/exchange/batch"
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
	httpAddr        string
	raftAddr        string
	gossipAddr      string
	join            []string
	bootstrapExpect int
	clusterToken    string
	advertise       string
	inMemory        bool
	tlsCert         string
	tlsKey          string
	tlsClientCA     string
	tokens          []string
	mgmtTokens      []string
	healthInterval  time.Duration
	healthTimeout   time.Duration
	batchMaxReply   int
	log             logFlags
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
Without --token or --tls-client-ca every connector is accepted (a warning says so).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runController(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	def := cluster.DefaultConfig()
	fl.StringVar(&f.nodeID, "node-id", "", "node id (default: stored in --data-dir, else the host name)")
	fl.StringVar(&f.dataDir, "data-dir", def.DataDir, "directory of the durable state (raft log, snapshots)")
	fl.StringVar(&f.grpcAddr, "grpc-addr", ":7400", "address connectors connect to (gRPC)")
	fl.StringVar(&f.httpAddr, "http-addr", ":7480", "management API and /metrics address (loopback only without --management-token)")
	fl.StringVar(&f.raftAddr, "raft-addr", def.RaftAddr, "raft transport address")
	fl.StringVar(&f.gossipAddr, "gossip-addr", ":7402", "gossip (membership) address, for multi-node clusters")
	fl.StringSliceVar(&f.join, "join", nil, "gossip addresses of cluster members to join, HOST:PORT,...")
	fl.IntVar(&f.bootstrapExpect, "bootstrap-expect", 1, "number of nodes to wait for before bootstrapping a cluster")
	fl.StringVar(&f.clusterToken, "cluster-token", "", "secret shared by the nodes of a cluster: authenticates node-to-node links, encrypts gossip; setting it (or --join, or --bootstrap-expect > 1) turns clustering on")
	fl.StringVar(&f.advertise, "advertise-addr", "", "host or IP other nodes reach this node at (raft, gossip, gRPC); default: the bind host when specific, else this host's private IP")
	fl.BoolVar(&f.inMemory, "in-memory", false, "keep all state in memory (lost on exit)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "server certificate (PEM) for TLS on --grpc-addr")
	fl.StringVar(&f.tlsKey, "tls-key", "", "server key (PEM)")
	fl.StringVar(&f.tlsClientCA, "tls-client-ca", "", "CA (PEM) whose client certificates are required (mutual TLS)")
	fl.StringSliceVar(&f.tokens, "token", nil, "token(s) connectors must present in HELLO")
	fl.StringSliceVar(&f.mgmtTokens, "management-token", nil, "bearer token(s) for the management API and /metrics")
	fl.DurationVar(&f.healthInterval, "health-interval", controller.DefaultHealthInterval, "period of the HEALTH_CHECK of every channel")
	fl.DurationVar(&f.healthTimeout, "health-timeout", controller.DefaultHealthTimeout, "how long a channel has to answer a HEALTH_CHECK")
	fl.IntVar(&f.batchMaxReply, "batch-max-reply-bytes", batch.DefaultMaxReplyPayload, "largest reply payload a batch stores per command; a larger reply fails its command")
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
	clustered := len(f.join) > 0 || f.bootstrapExpect > 1 || f.clusterToken != ""
	switch {
	case clustered && f.inMemory:
		return &exitError{code: 2, err: errors.New("--in-memory runs a single node: it cannot be combined with --join, --bootstrap-expect > 1 or --cluster-token")}
	case clustered && f.clusterToken == "":
		return &exitError{code: 2, err: errors.New("a cluster needs --cluster-token (the same secret on every node): it authenticates node-to-node links and encrypts the gossip")}
	case f.bootstrapExpect < 1:
		return &exitError{code: 2, err: fmt.Errorf("--bootstrap-expect %d: at least 1", f.bootstrapExpect)}
	}
	tlsCfg, err := serverTLS(f.tlsCert, f.tlsKey, f.tlsClientCA)
	if err != nil {
		return &exitError{code: 2, err: err}
	}

	// Connectors' transport.
	var sopts []grpcchannel.ServerOption
	if tlsCfg != nil {
		sopts = append(sopts, grpcchannel.WithTLS(tlsCfg))
	}
	srv := grpcchannel.NewServer(sopts...)
	gl, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", f.grpcAddr, err)
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
			if err := node.Close(); err != nil {
				log.Error("close state", "err", err)
			}
		}()
		store, nodeID = node, node.NodeID()
		where = fmt.Sprintf("%s (raft %s)", f.dataDir, node.RaftAddr())
		cluInfo = func() controller.ClusterInfo { return clusterInfo(node.Stats()) }
	}

	// Metrics: the controller's own plus Go runtime and process collectors.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	src := &lateSource{}
	m := metrics.NewController(reg, src)

	cfg := controller.DefaultConfig()
	cfg.Logger = log
	cfg.Metrics = m
	cfg.OnEvent = m.OnEvent
	cfg.ClusterInfo = cluInfo
	cfg.HealthInterval = f.healthInterval
	cfg.HealthTimeout = f.healthTimeout
	var auths []controller.Authenticator
	if len(f.tokens) > 0 {
		auths = append(auths, controller.StaticTokens(f.tokens...))
	}
	if f.tlsClientCA != "" {
		auths = append(auths, controller.CertIdentity(controller.BindNone))
	}
	if len(auths) > 0 {
		cfg.Authenticator = controller.Chain(auths...)
	}
	ctrl, err := controller.New(cfg, srv, store)
	if err != nil {
		_ = gl.Close()
		return &exitError{code: 2, err: err}
	}

	bcfg := batch.DefaultConfig()
	bcfg.Logger = log
	bcfg.MaxReplyPayload = f.batchMaxReply
	runner, err := batch.NewRunner(bcfg, ctrl, state.NewBatchStore(store))
	if err != nil {
		_ = gl.Close()
		return &exitError{code: 2, err: err}
	}
	src.set(metrics.WithBatchCounts(ctrl, metrics.CountBatches(runner.ListBatches)))

	mcfg := management.DefaultConfig()
	mcfg.Addr, mcfg.Tokens, mcfg.Logger = f.httpAddr, f.mgmtTokens, log
	mcfg.Ready = store.Ready // has a leader and has caught up
	mgmt, err := management.New(mcfg, ctrl, runner, reg)
	if err != nil {
		_ = gl.Close()
		return &exitError{code: 2, err: err}
	}
	ml, err := mgmt.Listen()
	if err != nil {
		_ = gl.Close()
		return fmt.Errorf("listen %s: %w", f.httpAddr, err)
	}

	fmt.Fprintf(stdout, "exchange controller node=%s grpc=%s http=http://%s state=%s\n",
		nodeID, gl.Addr(), ml.Addr(), where)
	if len(auths) == 0 {
		log.Warn("no --token and no --tls-client-ca: every connector is accepted")
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// A stop that comes before Serve has started (SIGTERM right
		// after start) makes Serve return ErrServerStopped: a clean stop.
		if err := srv.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc server: %w", err)
		}
		return nil
	})
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

// lateSource lets the metrics read the controller that is built after them.
type lateSource struct {
	src atomicValue[metrics.Source]
}

func (l *lateSource) set(s metrics.Source) { l.src.Store(s) }

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

// BatchCounts forwards to the wrapped source when it counts batches.
func (l *lateSource) BatchCounts() map[string]int {
	if bc, ok := l.src.Load().(metrics.BatchCounter); ok {
		return bc.BatchCounts()
	}
	return nil
}

// clusterInfo maps the raft node's view to the controller's.
func clusterInfo(st cluster.Stats) controller.ClusterInfo {
	info := controller.ClusterInfo{NodeID: st.NodeID, LeaderID: st.LeaderID, State: st.State}
	for _, m := range st.Members {
		info.Members = append(info.Members, controller.MemberInfo{
			NodeID: m.NodeID, Address: m.Address, State: m.Gossip, Leader: m.Leader})
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
