package membership

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/exchangekit/exchange/cluster/internal/logadapt"
)

// Profile names the memberlist preset a Config starts from, before its
// Timings are applied.
type Profile string

const (
	// ProfileLAN is memberlist.DefaultLANConfig: 1 s probes, 200 ms gossip,
	// 4x retransmits, 30 s push/pull.
	ProfileLAN Profile = "lan"
	// ProfileLocal is memberlist.DefaultLocalConfig (loopback). Its
	// RetransmitMult of 2 lets about one join in four take 16-26 s to reach
	// every node (ARCHITECTURE §10); set Timings.RetransmitMult to 4 with it.
	ProfileLocal Profile = "local"
	// ProfileWAN is memberlist.DefaultWANConfig: 5 s probes, 3 s probe
	// timeouts, 6x suspicion.
	ProfileWAN Profile = "wan"
)

// Timings override the Profile's failure-detection and gossip timings; a zero
// field keeps the profile's value. See memberlist.Config for each knob.
type Timings struct {
	// ProbeInterval is how often a node probes a random peer; ProbeTimeout
	// how long it waits for the direct ack before asking others to probe
	// indirectly. ProbeTimeout must be below ProbeInterval. Dead detection
	// takes about ProbeInterval·(1 + SuspicionMult·max(1, log10 n)).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// SuspicionMult scales how long a suspected node has to refute the
	// suspicion before it is declared dead.
	SuspicionMult int
	// GossipInterval and GossipNodes: every GossipInterval a node sends its
	// queued broadcasts to GossipNodes random peers.
	GossipInterval time.Duration
	GossipNodes    int
	// RetransmitMult scales how many times a broadcast (join, update,
	// leave, failure) is resent: RetransmitMult·ceil(log10(n+1)).
	RetransmitMult int
	// PushPullInterval is how often a node exchanges its full state with a
	// random peer (the anti-entropy that repairs lost broadcasts).
	PushPullInterval time.Duration
	// TCPTimeout bounds one TCP exchange (join, push/pull, TCP ping).
	TCPTimeout time.Duration
	// GossipToTheDeadTime is how long dead nodes keep getting gossip (so a
	// falsely declared one learns it and refutes), and how long memberlist
	// remembers them.
	GossipToTheDeadTime time.Duration
	// DeadNodeReclaimTime is how long a dead node's id stays bound to its
	// address: after it, a node with the same id at another address (a
	// restart on a new IP) is accepted instead of being a conflict.
	DeadNodeReclaimTime time.Duration
}

// Config configures a Membership. Start from DefaultConfig; the zero Config
// is not valid.
type Config struct {
	// NodeID is the node's identity and its memberlist name. Required.
	// Two live nodes must never share one (ErrNodeIDConflict).
	NodeID string
	// BindAddr is the gossip address (UDP and TCP), host:port. Default
	// ":7402". Port 0 picks a free port (tests): LocalNode().Addr tells
	// which.
	BindAddr string
	// AdvertiseAddr is the ip:port other nodes reach this node at; empty
	// means memberlist's choice: the bind address when specific, else this
	// host's first private IP, with the bound port.
	AdvertiseAddr string
	// Meta is gossiped to every node. Meta.NodeID may be empty (it is then
	// NodeID) and must otherwise equal NodeID. Encoded, it must fit
	// MetaMaxSize (ErrMetaTooLarge).
	Meta Meta
	// Join lists gossip addresses (host:port) of existing members. Start
	// retries them with backoff until one answers or its ctx ends. Empty:
	// the node starts alone and waits for others to join it.
	Join []string
	// JoinInBackground makes Start return as soon as the memberlist runs,
	// and join through Join on a goroutine that retries until one address
	// answers or Close. A node that is already a member of a cluster (it
	// holds raft state) must not wait for a peer to start: in a full
	// cluster restart, the nodes may come back one at a time.
	JoinInBackground bool
	// SecretKey turns on gossip encryption (AES-GCM) when set: 16, 24 or 32
	// bytes, the same on every node. Nodes with another key, or none, cannot
	// join.
	SecretKey []byte
	// Profile is the memberlist preset; default ProfileLAN. Timings override
	// single knobs of it; DefaultConfig's Timings are tuned for a LAN, so
	// reset them when choosing ProfileWAN.
	Profile Profile
	Timings Timings
	// LeaveTimeout bounds Leave when its ctx has no deadline. Default 5 s.
	LeaveTimeout time.Duration
	// DepartedTTL is how long Members keeps reporting nodes that left or
	// failed (for a leader that reconciles after a leadership change).
	// Default 24 h; zero forgets them at once (events still report them).
	DepartedTTL time.Duration
	// ReconnectInterval is how often the node tries to reach one member it
	// holds failed (a random one of those within DepartedTTL), with a state
	// exchange (memberlist Join): the way back after a partition heals.
	// Without it the two sides never hear of each other again on their own:
	// memberlist probes no dead member, stops gossiping to it once the
	// failure broadcasts are spent, and pushes/pulls only with live ones, so
	// a node that was cut off stays dead in the others' view (and its
	// channels are removed) until an unrelated push/pull reaches it. A
	// crashed member costs one failed dial per attempt. Zero disables it.
	// Default 1 s.
	ReconnectInterval time.Duration
	// Logger receives the membership's logs; nil discards them.
	// MemberlistLogLevel is the minimum level of memberlist's own logs
	// (default Warn: at Info it logs every suspicion and failure, which
	// Membership already logs as events).
	Logger             *slog.Logger
	MemberlistLogLevel slog.Level

	// WrapTransport, for tests and fault injection only, wraps the network
	// transport memberlist runs on (Start then builds memberlist's
	// NetTransport on BindAddr itself, as memberlist would). The wrapper
	// must forward every call it does not fail or drop, shut the wrapped
	// transport down in its Shutdown, and tolerate Shutdown being called
	// twice. Nil: memberlist's own NetTransport, built by memberlist.
	WrapTransport func(memberlist.Transport) memberlist.Transport
}

// DefaultConfig returns the production defaults: gossip on :7402, the LAN
// profile (RetransmitMult 4) with 200 ms probes and 100 ms gossip, and dead
// nodes' ids reclaimable after 1 s. Measured on loopback with 3 and 5 nodes
// (docs/benchmarks.md, "Membership (memberlist)"): a join reaches every node
// in about 100 ms (LAN: 200 ms), a stopped node is dead everywhere in
// 1.0-1.3 s (LAN: 5.8-6.8 s).
func DefaultConfig() Config {
	return Config{
		BindAddr: ":7402",
		Profile:  ProfileLAN,
		Timings: Timings{
			ProbeInterval:       200 * time.Millisecond,
			ProbeTimeout:        100 * time.Millisecond,
			GossipInterval:      100 * time.Millisecond,
			RetransmitMult:      4,
			DeadNodeReclaimTime: time.Second,
		},
		LeaveTimeout:       5 * time.Second,
		DepartedTTL:        24 * time.Hour,
		ReconnectInterval:  time.Second,
		MemberlistLogLevel: slog.LevelWarn,
	}
}

// Validate reports the first problem with c, wrapping ErrInvalidConfig (or
// ErrMetaTooLarge).
func (c Config) Validate() error {
	_, err := c.memberlistConfig()
	return err
}

// meta returns c.Meta with its NodeID filled in.
func (c Config) meta() Meta {
	m := c.Meta
	if m.NodeID == "" {
		m.NodeID = c.NodeID
	}
	return m
}

// memberlistConfig validates c and builds the memberlist configuration
// (without delegates).
func (c Config) memberlistConfig() (*memberlist.Config, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.NodeID == "" {
		return nil, bad("NodeID is empty")
	}
	if c.Meta.NodeID != "" && c.Meta.NodeID != c.NodeID {
		return nil, bad("Meta.NodeID %q differs from NodeID %q", c.Meta.NodeID, c.NodeID)
	}
	if _, err := encodeMeta(c.meta()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}

	var mc *memberlist.Config
	switch c.Profile {
	case ProfileLAN, "":
		mc = memberlist.DefaultLANConfig()
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
	case ProfileWAN:
		mc = memberlist.DefaultWANConfig()
	default:
		return nil, bad("Profile %q: want %q, %q or %q", c.Profile, ProfileLAN, ProfileLocal, ProfileWAN)
	}
	mc.Name = c.NodeID

	host, port, err := splitAddr(c.BindAddr)
	if err != nil {
		return nil, bad("BindAddr: %v", err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = host, port, port
	if c.AdvertiseAddr != "" {
		ahost, aport, err := splitAddr(c.AdvertiseAddr)
		if err != nil {
			return nil, bad("AdvertiseAddr: %v", err)
		}
		if ip := net.ParseIP(ahost); ip == nil || ip.IsUnspecified() || aport == 0 {
			return nil, bad("AdvertiseAddr %q: needs a specific IP and a port", c.AdvertiseAddr)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ahost, aport
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return nil, bad("Join address %q: %v", j, err)
		}
	}
	switch len(c.SecretKey) {
	case 0:
	case 16, 24, 32:
		mc.SecretKey = append([]byte(nil), c.SecretKey...)
	default:
		return nil, bad("SecretKey is %d bytes: want 16, 24 or 32", len(c.SecretKey))
	}

	t := c.Timings
	for _, d := range []struct {
		name string
		v    time.Duration
		dst  *time.Duration
	}{
		{"ProbeInterval", t.ProbeInterval, &mc.ProbeInterval},
		{"ProbeTimeout", t.ProbeTimeout, &mc.ProbeTimeout},
		{"GossipInterval", t.GossipInterval, &mc.GossipInterval},
		{"PushPullInterval", t.PushPullInterval, &mc.PushPullInterval},
		{"TCPTimeout", t.TCPTimeout, &mc.TCPTimeout},
		{"GossipToTheDeadTime", t.GossipToTheDeadTime, &mc.GossipToTheDeadTime},
		{"DeadNodeReclaimTime", t.DeadNodeReclaimTime, &mc.DeadNodeReclaimTime},
	} {
		if d.v < 0 {
			return nil, bad("Timings.%s %v is negative", d.name, d.v)
		}
		if d.v > 0 {
			*d.dst = d.v
		}
	}
	for _, n := range []struct {
		name string
		v    int
		dst  *int
	}{
		{"SuspicionMult", t.SuspicionMult, &mc.SuspicionMult},
		{"GossipNodes", t.GossipNodes, &mc.GossipNodes},
		{"RetransmitMult", t.RetransmitMult, &mc.RetransmitMult},
	} {
		if n.v < 0 {
			return nil, bad("Timings.%s %d is negative", n.name, n.v)
		}
		if n.v > 0 {
			*n.dst = n.v
		}
	}
	if mc.ProbeInterval < time.Millisecond || mc.GossipInterval < time.Millisecond {
		return nil, bad("ProbeInterval %v and GossipInterval %v must be at least 1ms", mc.ProbeInterval, mc.GossipInterval)
	}
	if mc.ProbeTimeout >= mc.ProbeInterval {
		return nil, bad("ProbeTimeout %v must be below ProbeInterval %v", mc.ProbeTimeout, mc.ProbeInterval)
	}
	if c.LeaveTimeout <= 0 {
		return nil, bad("LeaveTimeout %v must be positive", c.LeaveTimeout)
	}
	if c.ReconnectInterval < 0 {
		return nil, bad("ReconnectInterval %v is negative", c.ReconnectInterval)
	}
	if c.DepartedTTL < 0 {
		return nil, bad("DepartedTTL %v is negative", c.DepartedTTL)
	}
	mc.Logger = logadapt.StdLog(c.Logger, "memberlist", c.MemberlistLogLevel)
	return mc, nil
}

// splitAddr splits host:port with a numeric port (0 allowed).
func splitAddr(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", addr, err)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port: %w", addr, err)
	}
	return host, int(port), nil
}
