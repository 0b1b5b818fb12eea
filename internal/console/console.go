// Package console is the operator console served at /console: a static,
// embedded page (no external assets, a strict Content-Security-Policy) and
// the JSON it reads — the server's status and the executions the Tracker
// saw. The page calls the existing API (languages, upload, exec, download)
// with the key the operator types.
//
// It must not know how the API authenticates (the api package wraps the
// JSON handlers with its own check), how executions run, or which sandbox
// or storage backend is in use: the server hands it functions that report
// them.
package console

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// Finding is one of doctor's host checks.
type Finding struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`
	Detail   string `json:"detail"`
	Fix      string `json:"fix,omitempty"`
}

// Config is what the console reports. Every function may be nil.
type Config struct {
	Tracker *Tracker
	// Isolation is the sandbox's report of the isolation in force, shown
	// as the JSON it encodes to.
	Isolation func() any
	// Storage names the storage backend (e.g. "local /tmp/codeexec").
	Storage string
	// Load reports admission's figures (running, queued, capacity).
	Load func() map[string]any
	// Limits are the per-execution limits, shown as they are.
	Limits map[string]any
	// Findings runs doctor's cheap host checks; the console caches them.
	Findings func(context.Context) []Finding
	// RuntimeSessions counts live stateful sessions.
	RuntimeSessions func() int
}

// Console serves the page and its JSON.
type Console struct {
	cfg     Config
	started time.Time
	files   map[string]asset

	findMu   sync.Mutex
	findAt   time.Time
	findings []Finding
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// findingsTTL is how long doctor's findings are reused: they describe the
// host, which rarely changes, and cost a namespace probe.
const findingsTTL = time.Minute

// CSP allows nothing but this server's own files: no inline script or
// style, no other origin, no framing. Images may be blob: URLs (output
// files fetched with the key).
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"

// New returns the console.
func New(cfg Config) *Console {
	if cfg.Tracker == nil {
		cfg.Tracker = NewTracker()
	}
	c := &Console{cfg: cfg, started: time.Now(), files: map[string]asset{}}
	for name, ct := range map[string]string{
		"index.html":  "text/html; charset=utf-8",
		"console.js":  "text/javascript; charset=utf-8",
		"console.css": "text/css; charset=utf-8",
	} {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			panic("console: missing embedded asset " + name)
		}
		sum := sha256.Sum256(b)
		c.files[name] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return c
}

// Tracker is the tracker the execution path feeds.
func (c *Console) Tracker() *Tracker { return c.cfg.Tracker }

func secure(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// ServeAsset serves the page's files; they hold no secret, so they need no
// key (the page asks for one before it calls anything else).
func (c *Console) ServeAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "" {
		name = "index.html"
	}
	a, ok := c.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	secure(w.Header())
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("ETag", a.etag)
	w.Header().Set("Cache-Control", "no-cache")
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(a.body)
}

// ServeRedirect sends /console to /console/, where relative URLs resolve.
func (c *Console) ServeRedirect(w http.ResponseWriter, r *http.Request) {
	// Relative, so that /v1/console stays under /v1 (the API rewrote the
	// path the handler sees).
	w.Header().Set("Location", "console/")
	w.WriteHeader(http.StatusMovedPermanently)
}

// ServeStatus answers the status view: isolation, storage, load, limits
// and doctor's findings.
func (c *Console) ServeStatus(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{
		"status":         "ok",
		"uptime_seconds": int64(time.Since(c.started).Seconds()),
		"storage":        c.cfg.Storage,
		"limits":         c.cfg.Limits,
	}
	if f := c.cfg.Isolation; f != nil {
		out["isolation"] = f()
	}
	if f := c.cfg.Load; f != nil {
		out["load"] = f()
	}
	if f := c.cfg.RuntimeSessions; f != nil {
		out["runtime_sessions"] = f()
	}
	if c.cfg.Findings != nil {
		out["doctor"] = c.doctor(r.Context())
	}
	writeJSON(w, out)
}

func (c *Console) doctor(ctx context.Context) []Finding {
	c.findMu.Lock()
	defer c.findMu.Unlock()
	if c.findings == nil || time.Since(c.findAt) > findingsTTL {
		c.findings = c.cfg.Findings(ctx)
		c.findAt = time.Now()
	}
	return c.findings
}

// ServeExecutions answers the live and history views.
func (c *Console) ServeExecutions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, c.cfg.Tracker.Snapshot(50))
}

func writeJSON(w http.ResponseWriter, v any) {
	secure(w.Header())
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
