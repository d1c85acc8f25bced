package management

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"

	"github.com/labstack/echo/v4"
)

// The dashboard: static files embedded in the binary, served under /ui/.
// They hold no data and are the same for every installation, so they are
// served without the bearer token (a browser cannot send one when it
// navigates); everything they show is read from /exchange/* with the token,
// which the page asks for (docs/decisions/0029-dashboard-auth.md).
//
//go:embed ui
var uiFiles embed.FS

// uiCSP keeps the page to its own files: no inline script or style, no
// other origin, no framing.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'none'; base-uri 'none'; frame-ancestors 'none'"

func (s *Server) uiRoutes() {
	e := s.echo
	e.GET("/ui", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, "/ui/") })
	e.GET("/ui/", func(c echo.Context) error { return serveUI(c, "index.html") })
	e.GET("/ui/:file", func(c echo.Context) error { return serveUI(c, c.Param("file")) })
}

// serveUI writes one embedded file, or 404.
func serveUI(c echo.Context, name string) error {
	if name != path.Base(name) || name == "." || name == ".." {
		return &notFoundError{"No such file"}
	}
	data, err := fs.ReadFile(uiFiles, "ui/"+name)
	if err != nil {
		return &notFoundError{"No such file"}
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set(echo.HeaderCacheControl, "no-cache")
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = echo.MIMEOctetStream
	}
	return c.Blob(http.StatusOK, ct, data)
}
