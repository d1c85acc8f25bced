package management

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// auth requires a configured bearer token. With no token configured it lets
// everything through (the server is then bound to loopback).
func (s *Server) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(s.tokens) == 0 {
			return next(c)
		}
		if !s.validToken(c.Request().Header.Get(echo.HeaderAuthorization)) {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="exchange"`)
			return errUnauthorized
		}
		return next(c)
	}
}

// validToken reports whether header is "Bearer <token>" for one of the
// configured tokens. It compares SHA-256 digests in constant time against
// every token, so neither the match nor the tokens' lengths show in timing.
func (s *Server) validToken(header string) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	match := 0
	for _, want := range s.tokens {
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return match == 1
}

// limitBody rejects declared bodies over the limit (BodyLimit, or
// MaxSnapshotBytes for a snapshot upload) at once and caps the others; reading past the cap fails with *http.MaxBytesError (413).
func (s *Server) limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		limit := s.bodyLimit(c)
		if r.ContentLength > limit {
			return &http.MaxBytesError{Limit: limit}
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, limit)
		return next(c)
	}
}

// logRequests writes one debug line per request, after the error (if any)
// has been written, so that the status is the final one. It also turns a
// handler panic into a 500.
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("management: handler panicked", "method", c.Request().Method, "path", c.Request().URL.Path,
					"panic", p, "stack", string(debug.Stack()))
				err = fmt.Errorf("panic: %v", p)
			}
			if err != nil {
				c.Error(err)
			}
			r := c.Request()
			s.log.Debug("management: request", "method", r.Method, "path", r.URL.Path,
				"status", c.Response().Status, "duration", time.Since(start), "remote", r.RemoteAddr)
			err = nil
		}()
		return next(c)
	}
}
