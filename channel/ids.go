package channel

import (
	crand "crypto/rand"
	"encoding/hex"
	"math/rand/v2"
	"sync"
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
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	hex.Encode(d[0:8], u[0:4])
	d[8] = '-'
	hex.Encode(d[9:13], u[4:6])
	d[13] = '-'
	hex.Encode(d[14:18], u[6:8])
	d[18] = '-'
	hex.Encode(d[19:23], u[8:10])
	d[23] = '-'
	hex.Encode(d[24:36], u[10:16])
}
