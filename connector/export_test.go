package connector

// White-box hooks for the external tests.

// SetBackoffRand replaces the backoff's random source (before Run).
func SetBackoffRand(c *Connector, int64n func(int64) int64) { c.int64n = int64n }

// WindowLen returns how many completed commands the dedup window remembers.
func WindowLen(c *Connector) int {
	if c.window == nil {
		return 0
	}
	return c.window.len()
}

// GoodByeLinger is how long the connector waits for the controller to close
// after answering GOOD_BYE.
const GoodByeLinger = goodByeLinger
