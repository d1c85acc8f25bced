package state

import (
	"errors"

	"github.com/exchangekit/exchange/batch"
)

// ErrorCode classifies the failure of one op. Codes are plain strings, so an
// OpError can cross a wire (forwarded Applies, the raft FSM's response) and
// keep its meaning.
type ErrorCode string

// Error codes.
const (
	// CodeNotFound: the op names a channel, target or batch that does not
	// exist (ErrNotFound, batch.ErrNotFound).
	CodeNotFound ErrorCode = "not_found"
	// CodeExists: the op creates something whose id is taken (ErrExists,
	// batch.ErrExists).
	CodeExists ErrorCode = "exists"
	// CodeInvalid: the op is malformed (ErrInvalid, batch.ErrInvalid).
	CodeInvalid ErrorCode = "invalid"
	// CodeConflict: the op does not match the current state of its batch
	// (batch.ErrConflict); it changed nothing.
	CodeConflict ErrorCode = "conflict"
	// CodeSuperseded: a registration of a stale connection attempt
	// (ErrSuperseded); it changed nothing.
	CodeSuperseded ErrorCode = "superseded"
	// CodeInternal: any other failure.
	CodeInternal ErrorCode = "internal"
)

// OpError is the failure of one op, as plain data: it encodes to JSON and
// decodes back with its meaning intact. errors.Is matches it against the
// sentinels of its code: ErrNotFound and batch.ErrNotFound for CodeNotFound,
// and likewise for CodeExists, CodeInvalid, CodeConflict and CodeSuperseded.
type OpError struct {
	Code ErrorCode `json:"code"`
	// Op names the kind of op that failed: "register", "unregister",
	// "setPrimary", "removeNodeChannels", "batch" (or, for a failure that
	// is not one op's, what failed).
	Op string `json:"op,omitempty"`
	// Message is the error's text.
	Message string `json:"message"`
}

// NewOpError classifies err, the failure of an op of kind op, by the
// sentinels it wraps.
func NewOpError(op string, err error) *OpError {
	code := CodeInternal
	switch {
	case errors.Is(err, ErrNotFound) || errors.Is(err, batch.ErrNotFound):
		code = CodeNotFound
	case errors.Is(err, ErrExists) || errors.Is(err, batch.ErrExists):
		code = CodeExists
	case errors.Is(err, ErrInvalid) || errors.Is(err, batch.ErrInvalid):
		code = CodeInvalid
	case errors.Is(err, batch.ErrConflict):
		code = CodeConflict
	case errors.Is(err, ErrSuperseded):
		code = CodeSuperseded
	}
	return &OpError{Code: code, Op: op, Message: err.Error()}
}

// Error returns the message.
func (e *OpError) Error() string { return e.Message }

// Is reports whether target is a sentinel of e's code.
func (e *OpError) Is(target error) bool {
	switch e.Code {
	case CodeNotFound:
		return target == ErrNotFound || target == batch.ErrNotFound
	case CodeExists:
		return target == ErrExists || target == batch.ErrExists
	case CodeInvalid:
		return target == ErrInvalid || target == batch.ErrInvalid
	case CodeConflict:
		return target == batch.ErrConflict
	case CodeSuperseded:
		return target == ErrSuperseded
	}
	return false
}

// Result is the outcome of one op of an Apply: Err is nil when the op was
// applied. It is plain data, JSON-encodable.
type Result struct {
	Err *OpError `json:"err,omitempty"`
}

// OK reports whether the op was applied.
func (r Result) OK() bool { return r.Err == nil }

// ResultsErr joins the failures of rs (nil when every op was applied), for
// callers that do not care which op failed. errors.Is works on the result as
// on each OpError.
func ResultsErr(rs []Result) error {
	var errs []error
	for _, r := range rs {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return errors.Join(errs...)
}

// Err turns what a store's Apply returned into one error: err when the
// Apply failed as a whole, else the joined failures of the ops (ResultsErr),
// nil when every op was applied. Use it as state.Err(store.Apply(ctx, ops...))
// where which op failed does not matter.
func Err(rs []Result, err error) error {
	if err != nil {
		return err
	}
	return ResultsErr(rs)
}

// opKind names the kind of op, for OpError.Op.
func opKind(op Op) string {
	switch {
	case op.Register != nil:
		return "register"
	case op.Unregister != nil:
		return "unregister"
	case op.SetPrimary != nil:
		return "setPrimary"
	case op.RemoveNodeChannels != nil:
		return "removeNodeChannels"
	case op.Batch != nil:
		return "batch"
	}
	return ""
}
