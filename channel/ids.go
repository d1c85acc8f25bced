package channel

import (
	crand "crypto/rand"
	"math/rand/v2"
	"sync"

	"github.com/exchangekit/exchange/command"
)

// idsPerSlab is how many command ids newCommandID makes at once.
const idsPerSlab = 8

// idLen is the length of a canonical UUID.
const idLen = 36

// idGen makes command ids: slabs of idsPerSlab ids in one string, handed out
// one substring at a time, from a ChaCha8 stream (math/rand/v2.ChaCha8, a
// cryptographically strong generator) seeded from crypto/rand. Reading
// crypto/rand for every id cost more than the rest of Send's bookkeeping.
type idGen struct {
	rng  *rand.ChaCha8
	ids  string
	next int
}

// idGens keeps a generator per P (sync.Pool), so that concurrent Sends do
// not contend. It holds plain memory only, so it may be process-wide
// (unlike the pools of a Channel, see newResultChan).
var idGens = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // crypto/rand.Read never fails (Go 1.24+).
	return &idGen{rng: rand.NewChaCha8(seed)}
}}

// newCommandID returns a fresh id for a command sent without one: a random
// (version 4) UUID in its canonical form, as command.NewID makes. An id
// shares its memory with the others of its slab, so it suits ids that live
// as long as their command, and nothing kept for long: a kept id keeps its
// slab (288 bytes) alive.
func newCommandID() string {
	g := idGens.Get().(*idGen)
	if g.next == 0 {
		var s [idsPerSlab * idLen]byte
		for i := range idsPerSlab {
			encodeID(s[i*idLen:(i+1)*idLen], g.rng)
		}
		g.ids = string(s[:])
	}
	id := g.ids[g.next*idLen : (g.next+1)*idLen]
	g.next = (g.next + 1) % idsPerSlab
	idGens.Put(g)
	return id
}

// encodeID writes a version 4 UUID drawn from rng into d (idLen bytes).
func encodeID(d []byte, rng *rand.ChaCha8) {
	var u [16]byte
	_, _ = rng.Read(u[:]) // never fails
	command.EncodeUUID(d, u)
}
