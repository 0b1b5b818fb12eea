package api

import (
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/storage"
)

// The operational surface: health, readiness, the language list, the
// OpenAPI document and the answer to unknown routes.

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	iso := s.Box.Describe()
	status := "ok"
	if iso.Degraded {
		status = "degraded"
	}
	// Without a credential, only the verdict: the details (uid ranges,
	// cgroup paths, memory figures) help an attacker more than a probe.
	if p, err := s.Auth.Authenticate(r); err != nil || p.Method == "none" {
		writeJSON(w, http.StatusOK, map[string]string{"status": status})
		return
	}
	h := map[string]any{"status": status, "isolation": iso}
	if s.Runtime != nil {
		h["runtime_sessions"] = s.Runtime.Len()
	}
	if s.Budget != nil {
		st := s.Budget.Stats()
		h["memory_budget"] = map[string]any{
			"total_bytes": st.Total, "reserve_bytes": st.Reserve, "available_bytes": st.Available,
			"used_bytes": st.Used, "executions_bytes": st.Held[admission.KindExec],
			"sessions_bytes": st.Held[admission.KindSession], "warm_bytes": st.Held[admission.KindWarm],
		}
	}
	// Liveness: /health stays 200 while draining (the process is fine and
	// finishing its work); /ready is what turns 503.
	if s.draining.Load() {
		h["draining"] = true
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	// The catch-all matches every method, so the mux never answers 405
	// itself: a known path asked with another method gets it here.
	var allow []string
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, pattern := s.mux.Handler(r2); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method "+truncateString(r.Method, 20)+" not allowed on "+truncateString(r.URL.Path, 200)+"; allowed: "+strings.Join(allow, ", "))
		return
	}
	writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+truncateString(r.URL.Path, 200))
}

type languageOut struct {
	ID        string   `json:"id"`
	Aliases   []string `json:"aliases"`
	Name      string   `json:"name"`
	Version   string   `json:"version"`
	Available bool     `json:"available"`
	Missing   string   `json:"missing,omitempty"`
}

func (s *Server) handleLanguages(w http.ResponseWriter, r *http.Request) {
	out := []languageOut{}
	for _, l := range lang.All() {
		ok, why := engine.Available(l)
		lo := languageOut{ID: l.ID, Aliases: l.Aliases, Name: l.Name, Available: ok, Missing: why}
		if ok {
			lo.Version = s.Engine.Version(l)
		}
		out = append(out, lo)
	}
	writeJSON(w, http.StatusOK, out)
}

// handleReady runs a real execution and a storage round trip, at most once
// per ReadyTTL: health that stays green while every execution fails is worse
// than none.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining", "error": "Service is shutting down"})
		return
	}
	s.readyMu.Lock()
	if time.Since(s.readyAt) > s.ReadyTTL {
		s.readyErr = s.canary(r.Context())
		s.readyAt = time.Now()
		if s.readyErr != nil {
			s.Log.Error("readiness canary failed", "err", s.readyErr)
		}
	}
	err := s.readyErr
	s.readyMu.Unlock()
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) canary(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	key := storage.Key{Session: "readiness-canary", ID: storage.NewID()}
	if _, err := s.Store.Put(ctx, key, strings.NewReader("ok"), storage.Meta{Name: "canary.txt"}); err != nil {
		return fmt.Errorf("storage write: %w", err)
	}
	defer s.Store.Delete(context.WithoutCancel(ctx), key)
	if s.Budget != nil {
		// The canary's sandbox counts like any run's; when the budget
		// stays full the server is busy, not broken: storage was checked.
		free, err := s.Budget.Take(ctx, admission.KindExec, s.Engine.Limits().MemoryBytes, 10*time.Second)
		if _, busy := admission.IsBusy(err); busy {
			return nil
		}
		if err != nil {
			return fmt.Errorf("memory budget: %w", err)
		}
		defer free()
	}
	l, _ := lang.Lookup("bash")
	res, err := s.Engine.Exec(ctx, engine.Request{
		Lang: l, Code: "cat canary.txt", Timeout: 20 * time.Second,
		Files: []engine.FileRef{{Session: key.Session, ID: key.ID, Name: "canary.txt"}},
	})
	if err != nil {
		return fmt.Errorf("execution: %w", err)
	}
	if res.Stdout != "ok" || res.Status != "ok" {
		return fmt.Errorf("execution: status %s, stdout %q, stderr %q", res.Status, truncateString(res.Stdout, 100), truncateString(res.Stderr, 200))
	}
	return nil
}

//go:embed openapi.json
var openAPI []byte

// handleOpenAPI serves the OpenAPI 3 document of both APIs.
func handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}
