package batch

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of Config.
const (
	DefaultConcurrency    = 64
	DefaultBackoffBase    = time.Second
	DefaultBackoffMax     = 5 * time.Minute
	DefaultCommandTimeout = 60 * time.Second
	// DefaultRetention keeps a finished batch for a day: long enough for an
	// operator to look at last night's failures and for a caller that was
	// down for hours to read the outcome, short enough that the replicated
	// state (and every snapshot) stays small. The reference keeps 1 hour.
	DefaultRetention = 24 * time.Hour
	// DefaultMaxReplyPayload bounds the reply payload a batch stores for one
	// command: 1 MiB. Every stored byte is written to the raft log and to
	// every snapshot, on every node.
	DefaultMaxReplyPayload = 1 << 20
	// DefaultMaxUnfinishedPerTarget bounds the batches of one target that
	// have not ended: they run one at a time, so thousands queued for one
	// target are a runaway client, not work that will finish.
	DefaultMaxUnfinishedPerTarget = 1_000
	// maxErrorText bounds the error text stored for one command or batch.
	maxErrorText = 4 << 10
)

// Config tunes a Runner. The zero value of every field means its default.
type Config struct {
	// Concurrency bounds the targets whose batches run at the same time (one
	// batch per target at a time). Default 64.
	Concurrency int
	// MaxRetry is the retry budget of batches that do not set their own.
	// Default 5 (6 attempts), at most MaxRetryLimit. A batch can ask for
	// fewer, even new(0), or more, up to MaxRetryLimit.
	MaxRetry int
	// BackoffBase is the delay before the first retry; it doubles with every
	// retry, up to BackoffMax, with jitter (see Backoff). Default 1 s.
	BackoffBase time.Duration
	// BackoffMax caps the delay between attempts. It is also how long a batch
	// whose target had no channel waits before trying again if no channel
	// registers meanwhile (a registration wakes it at once). Default 5 min.
	BackoffMax time.Duration
	// CommandTimeout bounds the wait for each command's reply, and each store
	// write of the runner. Default 60 s.
	CommandTimeout time.Duration
	// Retention is how long a finished (SUCCEEDED or ERROR) batch is kept
	// after it ended before the runner deletes it. Default 24 h; negative
	// keeps finished batches forever.
	Retention time.Duration
	// MaxReplyPayload bounds the reply payload stored for one command. A
	// reply with a larger payload fails its command ("the reply's payload of
	// N bytes exceeds the M bytes a batch stores"), and the failure counts as
	// an attempt. Default 1 MiB.
	MaxReplyPayload int
	// MaxUnfinishedPerTarget bounds the batches of one target that have not
	// ended (CREATED, PENDING, IN_PROGRESS): ExecuteBatch refuses one more
	// with ErrTooMany. Default 1,000; negative: no bound.
	MaxUnfinishedPerTarget int
	// Logger receives the runner's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults spelled out.
func DefaultConfig() Config {
	return Config{
		Concurrency:            DefaultConcurrency,
		MaxRetry:               DefaultMaxRetry,
		BackoffBase:            DefaultBackoffBase,
		BackoffMax:             DefaultBackoffMax,
		CommandTimeout:         DefaultCommandTimeout,
		Retention:              DefaultRetention,
		MaxReplyPayload:        DefaultMaxReplyPayload,
		MaxUnfinishedPerTarget: DefaultMaxUnfinishedPerTarget,
	}
}

// Validate reports values that make no sense: negative counts or durations
// (Retention excepted), a MaxRetry over MaxRetryLimit, or a BackoffMax below
// BackoffBase.
func (c Config) Validate() error {
	var errs []error
	if c.Concurrency < 0 {
		errs = append(errs, errors.New("batch: config: Concurrency must not be negative"))
	}
	if c.MaxReplyPayload < 0 {
		errs = append(errs, errors.New("batch: config: MaxReplyPayload must not be negative"))
	}
	if c.MaxRetry < 0 || c.MaxRetry > MaxRetryLimit {
		errs = append(errs, fmt.Errorf("batch: config: MaxRetry must be between 0 and %d", MaxRetryLimit))
	}
	if c.BackoffBase < 0 || c.BackoffMax < 0 || c.CommandTimeout < 0 {
		errs = append(errs, errors.New("batch: config: BackoffBase, BackoffMax and CommandTimeout must not be negative"))
	}
	if c.BackoffBase > 0 && c.BackoffMax > 0 && c.BackoffMax < c.BackoffBase {
		errs = append(errs, errors.New("batch: config: BackoffMax must not be below BackoffBase"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Concurrency == 0 {
		c.Concurrency = d.Concurrency
	}
	if c.MaxRetry == 0 {
		c.MaxRetry = d.MaxRetry
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = d.BackoffBase
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(d.BackoffMax, c.BackoffBase)
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = d.CommandTimeout
	}
	if c.Retention == 0 {
		c.Retention = d.Retention
	}
	if c.MaxUnfinishedPerTarget == 0 {
		c.MaxUnfinishedPerTarget = d.MaxUnfinishedPerTarget
	}
	if c.MaxReplyPayload == 0 {
		c.MaxReplyPayload = d.MaxReplyPayload
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
