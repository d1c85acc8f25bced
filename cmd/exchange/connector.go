package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/net/http/httpguts"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/channel/wschannel"
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
	headers     []string
	reconnect   reconnectFlags
	log         logFlags
	tracing     tracingFlags
}

func newConnectorCommand(stdout, stderr io.Writer) *cobra.Command {
	var f connectorFlags
	cmd := &cobra.Command{
		Use:   "connector --controller HOST:PORT|URL[,...] --target T",
		Short: "Run a connector: answers ECHO, reports PRIMARY changes",
		Long: `Run a connector that keeps a channel open to one of the given controllers
(failing over between them, with jittered exponential backoff), answers ECHO
commands with their payload, answers health checks, and prints a line whenever
it becomes or stops being its target's primary.

Each --controller endpoint is a controller's gRPC address, HOST:PORT, or the
URL of its WebSocket endpoint (exchange controller --ws-addr): ws://HOST:PORT
or wss://HOST:PORT (http:// and https:// are the same), to which the path
/exchange/controller is added unless the URL ends with it. Both kinds may be
mixed. --tls-ca, --tls-cert and --tls-key apply to gRPC and to wss://.

--header 'Name: value' (repeatable; EXCHANGE_HEADER holds one per line) adds
a header to the WebSocket upgrade requests, for a proxy or a load balancer
that wants one, or a controller that authenticates the upgrade
("Authorization: Bearer ..."). WebSocket endpoints go through the proxy the
environment names (HTTPS_PROXY for wss://, HTTP_PROXY for ws://, except the
hosts in NO_PROXY; never for localhost or a loopback address), always as a
CONNECT tunnel.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConnector(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.controllers, "controller", nil, "controller endpoint(s), tried in order with failover: HOST:PORT (gRPC) or ws(s)://HOST:PORT[/PATH] (WebSocket)")
	fl.StringVar(&f.target, "target", "", "target id this connector serves")
	fl.StringVar(&f.id, "id", "", "connector id (default: generated)")
	fl.StringVar(&f.token, "token", "", "token presented in HELLO")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "CA certificate (PEM) to verify the controller; enables TLS")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "client certificate (PEM) for mutual TLS")
	fl.StringVar(&f.tlsKey, "tls-key", "", "client key (PEM) for mutual TLS")
	fl.StringArrayVar(&f.headers, "header", nil, "extra header 'Name: value' of the WebSocket upgrade requests (repeatable)")
	_ = fl.SetAnnotation("header", envSepAnnotation, []string{"\n"})
	fl.StringVar(&f.log.level, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.log.format, "log-format", "text", "log format: text or json")
	f.tracing.register(fl)
	f.reconnect.register(fl)
	return cmd
}

func runConnector(ctx context.Context, f connectorFlags, stdout, stderr io.Writer) error {
	if len(f.controllers) == 0 || f.target == "" {
		return &exitError{code: exitUsage, err: errors.New("connector needs --controller and --target")}
	}
	// Check every address before anything starts: a typo is an error at
	// once, not a connector retrying for ever.
	tlsFlags := f.tlsCA != "" || f.tlsCert != "" || f.tlsKey != ""
	for _, addr := range f.controllers {
		addr = strings.TrimSpace(addr)
		if err := checkControllerAddr(addr); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		// The scheme of a URL decides TLS: a plain one with TLS flags is a
		// mistake that would send the token in clear.
		if tlsFlags && (strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "http://")) {
			return &exitError{code: exitUsage, err: fmt.Errorf("--controller %q: --tls-ca, --tls-cert and --tls-key need wss:// or https://", addr)}
		}
	}
	header, err := parseHeaders(f.headers)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if len(header) > 0 && !slices.ContainsFunc(f.controllers, func(a string) bool { return isWebSocketEndpoint(strings.TrimSpace(a)) }) {
		return &exitError{code: exitUsage, err: errors.New("--header applies to WebSocket endpoints (ws://, wss://, http://, https://); --controller names none")}
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
		if isWebSocketEndpoint(addr) {
			dialers = append(dialers, &wschannel.Dialer{URL: addr, TLSConfig: tlsCfg, Header: header})
			endpoints = append(endpoints, addr)
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
	f.reconnect.apply(&cfg)
	var c *connector.Connector
	cfg.OnPrimary = onPrimary(say, log, func() string { return c.ConnectorID() }, f.target)
	cfg.OnState = func(s connector.StateChange) {
		log.Info("connection state", "state", s.State.String(), "endpoint", endpoints[s.Endpoint], "err", s.Err)
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

// checkControllerAddr checks one --controller endpoint: the gRPC address of
// a controller, HOST:PORT, with no scheme and no path (not the management
// API's http://HOST:7480), or the URL of its WebSocket endpoint (--ws-addr):
// ws://, wss://, http:// or https://, a host, an optional port and path
// prefix, no user, query or fragment. Empty entries (a trailing comma) are
// skipped by the caller.
func checkControllerAddr(addr string) error {
	const example = "want HOST:PORT, the controller's gRPC address, such as 127.0.0.1:7400, " +
		"or the URL of its WebSocket endpoint, ws://, wss://, http:// or https://, such as wss://ctl-1.example.com:7410"
	if addr == "" {
		return nil
	}
	if strings.Contains(addr, "://") {
		return checkControllerURL(addr, example)
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

// isWebSocketEndpoint reports whether a --controller endpoint is a URL (the
// WebSocket transport) rather than HOST:PORT (gRPC).
func isWebSocketEndpoint(addr string) bool { return strings.Contains(addr, "://") }

// checkControllerURL checks a WebSocket --controller URL.
func checkControllerURL(addr, example string) error {
	u, err := url.Parse(addr)
	if err != nil {
		return fmt.Errorf("--controller %q: not a URL: %s", addr, example)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return fmt.Errorf("--controller %q: scheme %q: %s", addr, u.Scheme, example)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("--controller %q: no user, query or fragment: %s", addr, example)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("--controller %q: bad host: %s", addr, example)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("--controller %q: bad port %q: %s", addr, p, example)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return fmt.Errorf("--controller %q: empty port: %s", addr, example)
	}
	return nil
}

// parseHeaders reads --header values, "Name: value" each. Empty entries (a
// blank line in EXCHANGE_HEADER) are skipped. The headers the WebSocket
// handshake owns (Host, Connection, Upgrade, Sec-WebSocket-*) and the
// protocol header (always v1) cannot be set.
func parseHeaders(vals []string) (http.Header, error) {
	h := http.Header{}
	for _, v := range vals {
		if strings.TrimSpace(v) == "" {
			continue
		}
		name, value, ok := strings.Cut(v, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch {
		case !ok || !httpguts.ValidHeaderFieldName(name):
			return nil, fmt.Errorf("--header %q: want 'Name: value', Name a header name", v)
		case !httpguts.ValidHeaderFieldValue(value):
			return nil, fmt.Errorf("--header %q: the value holds a character a header cannot", v)
		}
		switch c := http.CanonicalHeaderKey(name); {
		case c == "Host", c == "Connection", c == "Upgrade", strings.HasPrefix(c, "Sec-Websocket-"),
			strings.EqualFold(c, wschannel.ProtocolHeader):
			return nil, fmt.Errorf("--header %q: %s is set by the WebSocket handshake itself", v, c)
		}
		h.Add(name, value)
	}
	return h, nil
}

// reconnectFlags shape the reconnect backoff (docs/operations.md,
// "Reconnect backoff"; decision 0028).
type reconnectFlags struct {
	base, max time.Duration
}

func (r *reconnectFlags) register(fl *pflag.FlagSet) {
	fl.DurationVar(&r.base, "reconnect-base", connector.DefaultBackoffBase, "first reconnect delay's ceiling; the n-th waits uniformly in [0, min(--reconnect-max, base·2ⁿ))")
	fl.DurationVar(&r.max, "reconnect-max", connector.DefaultBackoffMax, "cap of the reconnect delay: after an outage every connector tries again within this of the controller's return")
}

func (r reconnectFlags) apply(cfg *connector.Config) {
	cfg.BackoffBase, cfg.BackoffMax = r.base, r.max
}
