package api

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/console"
	"github.com/codeexec/codeexec/internal/metrics"
)

// TestOpenAPIMatchesRoutes checks the served document against the routes
// the server really registers, both ways.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := newEnv(t)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	resp := e.do("GET", "/openapi.json", nil, "X-API-Key", "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("decoding: %v %q", err, doc.OpenAPI)
	}
	resp.Body.Close()
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	// A server with every optional route on.
	s := NewServer(Deps{Engine: nil, Store: e.store, Box: e.box, Log: nil,
		Admission: admission.New(1, 1, 1), Metrics: metrics.New(func() float64 { return 0 }, func() float64 { return 0 }, func() float64 { return 0 }), MetricsRoute: true,
		Console: console.New(console.Config{})})
	wild := regexp.MustCompile(`\{(\w+)\.\.\.\}`)
	registered := map[string]bool{}
	for _, p := range s.patterns {
		if p == "/" {
			continue
		}
		p = wild.ReplaceAllString(p, "{$1}")
		registered[p] = true
		if !documented[p] {
			t.Errorf("route %q is not in openapi.json", p)
		}
	}
	var extra []string
	for d := range documented {
		if !registered[d] {
			extra = append(extra, d)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("documented but not served: %v", extra)
	}
}
