package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/runtime"
)

// consoleRoutes serves the operator console (internal/console) when it is
// on: its files without a key (they hold no secret), its JSON behind the
// API's own authentication.
func (s *Server) consoleRoutes() {
	c := s.Console
	if c == nil {
		return
	}
	s.handle("GET /console", http.HandlerFunc(c.ServeRedirect))
	s.handle("GET /console/{file...}", http.HandlerFunc(c.ServeAsset))
	s.handle("GET /console/api/status", s.authed(c.ServeStatus))
	s.handle("GET /console/api/executions", s.authed(c.ServeExecutions))
}

// trackBegin tells the console an execution of lang started; 0 when the
// console is off.
func (s *Server) trackBegin(r *http.Request, lang string) uint64 {
	if s.Console == nil {
		return 0
	}
	return s.Console.Tracker().Begin(lang, callerKey(r))
}

// trackEnd records how execution id ended; deferred, so that a run never
// stays "running" in the console.
func (s *Server) trackEnd(id uint64, res *engine.Result, err error) {
	if id == 0 {
		return
	}
	t := s.Console.Tracker()
	switch {
	case err == nil && res == nil: // the execution panicked
		t.End(id, "failed", 0, 0)
	case err == nil:
		t.End(id, string(res.Status), res.WallTime, res.MemoryPeak)
	case errors.Is(err, context.Canceled):
		t.End(id, "cancelled", 0, 0)
	case errors.Is(err, engine.ErrInvalid), errors.Is(err, engine.ErrUnauthorized), errors.Is(err, engine.ErrUnavailable),
		errors.Is(err, runtime.ErrUnsupported):
		t.End(id, "refused", 0, 0)
	default:
		t.End(id, "failed", 0, 0)
	}
}
