package management

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// Cross-site defences (docs/decisions/0015-management-cross-site.md). A web
// page the operator visits can make the browser send requests to the API on
// 127.0.0.1 (a "simple" text/plain or form POST needs no CORS preflight), or
// rebind its own host name to 127.0.0.1 and read the answers. crossSite
// refuses what only a browser driven by another site would send:
//
//   - without a token, a Host that is not a loopback name or address, nor
//     exactly an address the server listens on (DNS rebinding): 421;
//   - an Origin header that is not the Host's own origin, "null" included: 403;
//   - a write (POST, PUT, PATCH, DELETE) with a body that is not
//     Content-Type application/json: 415. Browsers cannot send
//     application/json cross-site without a CORS preflight, which the API
//     never answers.

// statusError is an error answered with its own status and message.
type statusError struct {
	code    int
	message string
}

func (e *statusError) Error() string { return e.message }

// crossSite is the middleware applying the rules above to every request.
func (s *Server) crossSite(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if len(s.tokens) == 0 && !hostAllowed(r) {
			return &statusError{http.StatusMisdirectedRequest, fmt.Sprintf(
				"Host %q is refused: without a management token the API answers only requests addressed to localhost, "+
					"a loopback address or the address it listens on (configure a management token to reach it under another name)", r.Host)}
		}
		if origin, ok := r.Header["Origin"]; ok && !sameOrigin(strings.Join(origin, ","), r.Host) {
			return &statusError{http.StatusForbidden, fmt.Sprintf(
				"cross-origin request refused: Origin %q is not the origin of this API (%s); the API is not meant to be called from web pages of other sites",
				strings.Join(origin, ","), r.Host)}
		}
		if isWrite(r.Method) && r.ContentLength != 0 && !s.acceptedType(c, r.Header.Get(echo.HeaderContentType)) {
			want := echo.MIMEApplicationJSON
			if c.Path() == snapshotPath {
				want = echo.MIMEOctetStream
			}
			return &statusError{http.StatusUnsupportedMediaType, fmt.Sprintf(
				"Content-Type %q is not supported: request bodies must be %s", r.Header.Get(echo.HeaderContentType), want)}
		}
		return next(c)
	}
}

func isWrite(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// acceptedType reports whether a write's Content-Type is the one its route
// takes: application/octet-stream for a snapshot upload, JSON elsewhere.
// Neither is one an HTML form can send without a CORS preflight.
func (s *Server) acceptedType(c echo.Context, contentType string) bool {
	if c.Path() == snapshotPath {
		mt, _, err := mime.ParseMediaType(contentType)
		return err == nil && mt == echo.MIMEOctetStream
	}
	return isJSON(contentType)
}

// isJSON reports whether a Content-Type is application/json, with or without
// parameters (charset=utf-8).
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == echo.MIMEApplicationJSON
}

// listenerKey is the context key of the address of the listener a request
// came in on (set by Serve).
type listenerKey struct{}

// hostAllowed reports whether a request's Host names this server without
// relying on DNS: localhost, a loopback address, or exactly the address of
// the listener the request came in on. Requests that came in on a listener
// that is not TCP (a unix socket) are accepted whatever their Host: no
// browser reaches them.
func hostAllowed(r *http.Request) bool {
	if a, ok := r.Context().Value(listenerKey{}).(net.Addr); ok {
		if _, tcp := a.(*net.TCPAddr); !tcp || r.Host == a.String() {
			return true
		}
	}
	host := r.Host
	if host == "" {
		return false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameOrigin reports whether origin (scheme://host[:port]) has the host and
// port of the request's Host. The scheme is not compared: behind a
// TLS-terminating proxy the browser's https origin reaches the API over
// http; the port written or implied by the origin's scheme must match.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return false // "null", "", garbage
	}
	defaultPort := "80"
	if u.Scheme == "https" {
		defaultPort = "443"
	}
	oHost, oPort := splitHostPortDefault(u.Host, defaultPort)
	rHost, rPort := splitHostPortDefault(host, defaultPort)
	return oHost != "" && strings.EqualFold(oHost, rHost) && oPort == rPort
}

// splitHostPortDefault splits host[:port], with port def when absent.
func splitHostPortDefault(hostport, def string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		if p == "" {
			p = def
		}
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), def
}
