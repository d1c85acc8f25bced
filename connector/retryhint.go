package connector

import (
	"errors"
	"time"

	"github.com/exchangekit/exchange/channel"
)

// maxRetryHint bounds the retry hint a connector honours: a controller (or
// anything posing as one) cannot park a connector for longer than this.
const maxRetryHint = time.Minute

// hintedDelay returns how long to wait after err when err is a refusal that
// carries the server's retry hint (a *channel.LimitError: too many handshakes
// in flight, the connection cap): the hint, jittered uniformly over
// [hint/2, 3·hint/2) so that the refused do not come back together, and true.
// Such a refusal says the server is busy, not down: it does not grow the
// connector's backoff (decision 0039). The next attempt goes to the next
// endpoint, as after any failure: another node may have room.
// Otherwise it returns false.
func hintedDelay(err error, int64n func(int64) int64) (time.Duration, bool) {
	var le *channel.LimitError
	if !errors.As(err, &le) || le.RetryAfter <= 0 {
		return 0, false
	}
	hint := min(le.RetryAfter, maxRetryHint)
	return hint/2 + time.Duration(int64n(int64(hint))), true
}
