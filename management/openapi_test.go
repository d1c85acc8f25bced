package management

import (
	"bufio"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const openAPIPath = "../docs/openapi.yaml"

var (
	openAPIPathLine   = regexp.MustCompile(`^  (/\S*):\s*$`)
	openAPIMethodLine = regexp.MustCompile(`^    (get|put|post|delete|patch|head|options|trace):\s*$`)
	openAPIParam      = regexp.MustCompile(`\{([^}]+)\}`)
)

// openAPIRoutes scans the paths section of the OpenAPI document: path keys
// are indented by two spaces, their operations by four. It returns
// "METHOD /path" with {param} written :param, as echo does.
func openAPIRoutes(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(openAPIPath)
	if err != nil {
		t.Fatalf("open %s: %v", openAPIPath, err)
	}
	defer f.Close()
	var routes []string
	inPaths, path := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if !strings.HasPrefix(line, " ") { // a top-level key
			inPaths = strings.HasPrefix(line, "paths:")
			continue
		}
		if !inPaths {
			continue
		}
		if m := openAPIPathLine.FindStringSubmatch(line); m != nil {
			path = openAPIParam.ReplaceAllString(m[1], ":$1")
			continue
		}
		if m := openAPIMethodLine.FindStringSubmatch(line); m != nil && path != "" {
			routes = append(routes, strings.ToUpper(m[1])+" "+path)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", openAPIPath, err)
	}
	slices.Sort(routes)
	return routes
}

// TestOpenAPIMatchesRoutes checks that docs/openapi.yaml documents every
// route the server registers, and no route it does not.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	s := newServer(t, Config{}, newFakeExchange(), newFakeBatches())
	var served []string
	for _, r := range s.echo.Routes() {
		switch r.Method {
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch:
			served = append(served, r.Method+" "+r.Path)
		}
	}
	slices.Sort(served)
	served = slices.Compact(served)
	documented := openAPIRoutes(t)
	if len(documented) == 0 {
		t.Fatalf("no route found in the paths section of %s", openAPIPath)
	}
	if diff := cmp.Diff(served, documented); diff != "" {
		t.Errorf("routes (-served +documented in %s):\n%s", openAPIPath, diff)
	}
}
