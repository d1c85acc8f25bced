package controller

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxFailureSources bounds the sources whose failed HELLOs are remembered.
// Past it, sources whose bucket has refilled are forgotten first (they are
// indistinguishable from new ones), then arbitrary ones.
const maxFailureSources = 10000

// failureLimiter is a token bucket of failed HELLOs per source: every failed
// HELLO takes a token, and while a source's bucket is empty its connections
// are refused before their HELLO is read, so the authenticator does not run.
// A successful HELLO takes nothing, so a burst of well-behaved connectors
// behind one address is never slowed by it. The zero rate (burst < 0) turns
// it off. It is safe for concurrent use.
type failureLimiter struct {
	limit rate.Limit
	burst int

	mu  sync.Mutex
	src map[string]*rate.Limiter // only sources that failed recently
}

func newFailureLimiter(perSecond float64, burst int) *failureLimiter {
	return &failureLimiter{limit: rate.Limit(perSecond), burst: burst, src: map[string]*rate.Limiter{}}
}

func (f *failureLimiter) off() bool { return f == nil || f.burst < 0 }

// blocked reports whether src has no failed HELLO left to spend at now.
func (f *failureLimiter) blocked(src string, now time.Time) bool {
	if f.off() {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.src[src]
	return ok && l.TokensAt(now) < 1
}

// fail records a failed HELLO from src at now.
func (f *failureLimiter) fail(src string, now time.Time) {
	if f.off() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.src[src]
	if !ok {
		if len(f.src) >= maxFailureSources {
			f.forget(now)
		}
		l = rate.NewLimiter(f.limit, f.burst)
		f.src[src] = l
	}
	l.AllowN(now, 1) // takes a token if one is left; an empty bucket stays empty
}

// forget drops the sources whose bucket is full again, and then, if that is
// not enough, arbitrary ones until there is room. f.mu is held.
func (f *failureLimiter) forget(now time.Time) {
	for s, l := range f.src {
		if l.TokensAt(now) >= float64(f.burst) {
			delete(f.src, s)
		}
	}
	for s := range f.src {
		if len(f.src) < maxFailureSources {
			break
		}
		delete(f.src, s)
	}
}
