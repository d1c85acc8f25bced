package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

func init() { subcommands = append(subcommands, newConnectorCommand) }

// TypeEcho is the command `exchange connector` answers: it replies with the
// payload it was sent.
const TypeEcho command.Type = "ECHO"

type connectorFlags struct {
	controllers []string
	target      string
	id          string
	token       string
	tlsCA       string
	tlsCert     string
	tlsKey      string
	log         logFlags
	tracing     tracingFlags
}

func newConnectorCommand(stdout, stderr io.Writer) *cobra.Command {
	var f connectorFlags
	cmd := &cobra.Command{
		Use:   "connector --controller HOST:PORT[,HOST:PORT...] --target T",
		Short: "Run a connector: answers ECHO, reports PRIMARY changes",
		Long: `Run a connector that keeps a channel open to one of the given controllers
(failing over between them, with jittered exponential backoff), answers ECHO
commands with their payload, answers health checks, and prints a line whenever
it becomes or stops being its target's primary.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConnector(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.controllers, "controller", nil, "controller gRPC address(es), HOST:PORT, tried in order with failover")
	fl.StringVar(&f.target, "target", "", "target id this connector serves")
	fl.StringVar(&f.id, "id", "", "connector id (default: generated)")
	fl.StringVar(&f.token, "token", "", "token presented in HELLO")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "CA certificate (PEM) to verify the controller; enables TLS")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "client certificate (PEM) for mutual TLS")
	fl.StringVar(&f.tlsKey, "tls-key", "", "client key (PEM) for mutual TLS")
	fl.StringVar(&f.log.level, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.log.format, "log-format", "text", "log format: text or json")
	f.tracing.register(fl)
	return cmd
}

func runConnector(ctx context.Context, f connectorFlags, stdout, stderr io.Writer) error {
	if len(f.controllers) == 0 || f.target == "" {
		return &exitError{code: exitUsage, err: errors.New("connector needs --controller and --target")}
	}
	// Check every address before anything starts: a typo is an error at
	// once, not a connector retrying for ever.
	for _, addr := range f.controllers {
		if err := checkControllerAddr(strings.TrimSpace(addr)); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
	}
	log, err := f.log.logger(stderr)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	stopTracing, err := f.tracing.start(ctx, "exchange-connector", log)
	if err != nil {
		return err
	}
	defer stopTracing() // flushes the spans still buffered
	tlsCfg, err := clientTLS(f.tlsCA, f.tlsCert, f.tlsKey)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	var (
		dialers   []channel.Dialer
		endpoints []string // endpoints[i] is the address of dialers[i]
	)
	for _, addr := range f.controllers {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		var opts []grpcchannel.DialOption
		if tlsCfg != nil {
			opts = append(opts, grpcchannel.WithTLS(tlsCfg))
		} else {
			opts = append(opts, grpcchannel.WithInsecure())
		}
		d, err := grpcchannel.NewDialer(addr, opts...)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("controller %q: %w", addr, err)}
		}
		defer d.Close()
		dialers = append(dialers, d)
		endpoints = append(endpoints, addr)
	}

	mux := command.NewMux()
	mux.RegisterFunc(TypeEcho, func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return command.Succeeded(c, c.Payload)
	})

	var mu sync.Mutex // serialises lines on stdout
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, format+"\n", args...)
	}
	cfg := connector.DefaultConfig()
	cfg.ConnectorID = f.id
	cfg.TargetID = f.target
	cfg.Token = f.token
	cfg.Logger = log
	var c *connector.Connector
	cfg.OnPrimary = func(primary bool, epoch uint64) {
		if primary {
			say("PRIMARY connector=%s target=%s epoch=%d: this connector is now the primary", c.ConnectorID(), f.target, epoch)
		} else {
			say("REPLICA connector=%s target=%s epoch=%d: this connector is not the primary", c.ConnectorID(), f.target, epoch)
		}
	}
	cfg.OnState = func(s connector.StateChange) {
		log.Info("connection state", "state", s.State.String(), "endpoint", s.Endpoint, "err", s.Err)
		// Which controller holds the channel is worth a line: it changes
		// when a controller goes away and the connector fails over.
		switch {
		case s.State == connector.StateConnected:
			say("CONNECTED connector=%s target=%s controller=%s channel=%s", c.ConnectorID(), f.target, endpoints[s.Endpoint], s.ChannelID)
		case s.State == connector.StateDisconnected && s.ChannelID != "":
			say("DISCONNECTED connector=%s target=%s controller=%s: %v", c.ConnectorID(), f.target, endpoints[s.Endpoint], s.Err)
		}
	}
	c, err = connector.New(cfg, mux, dialers...)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	say("connector %s serving target %s via %s", c.ConnectorID(), f.target, strings.Join(f.controllers, ","))
	err = c.Run(ctx)
	_ = c.Close()
	switch {
	case err == nil || errors.Is(err, context.Canceled):
		return nil
	case errors.Is(err, channel.ErrHelloRejected):
		return &exitError{code: 4, err: err}
	case errors.Is(err, connector.ErrGoodBye):
		say("controller said GOOD_BYE without reconnect: stopping")
		return nil
	}
	return err
}

// checkControllerAddr checks one --controller address: the gRPC address of
// a controller, HOST:PORT, with no scheme and no path (not the management
// API's http://HOST:7480). Empty entries (a trailing comma) are skipped by
// the caller.
func checkControllerAddr(addr string) error {
	const example = "want HOST:PORT, the controller's gRPC address, such as 127.0.0.1:7400 or ctl-1.example.com:7400"
	if addr == "" {
		return nil
	}
	if strings.Contains(addr, "://") {
		return fmt.Errorf("--controller %q: no scheme: %s", addr, example)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--controller %q: %s", addr, example)
	}
	if host == "" || strings.ContainsAny(host, "/?#@") {
		return fmt.Errorf("--controller %q: bad host: %s", addr, example)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("--controller %q: bad port %q: %s", addr, port, example)
	}
	return nil
}
