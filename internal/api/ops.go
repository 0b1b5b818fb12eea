package api

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/runtime"
	"github.com/codeexec/codeexec/internal/storage"
	"github.com/codeexec/codeexec/internal/tracing"
)

// callerKey identifies the caller for rate limits and per-caller bounds:
// the authenticated principal (never the raw credential bytes, which a
// caller can respell at will), and for anonymous callers also the client
// address.
func callerKey(r *http.Request) string {
	p := principalOf(r)
	if p.Method != "none" {
		return p.ID
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return p.ID + "@" + host
}

// tooMany answers 429 in the shape LibreChat's client parses.
func (s *Server) tooMany(w http.ResponseWriter, reason, msg string, retry time.Duration) {
	secs := int(math.Ceil(retry.Seconds()))
	secs = max(secs, 1)
	if s.Metrics != nil {
		s.Metrics.Rejected.WithLabelValues(reason).Inc()
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeJSON(w, http.StatusTooManyRequests, map[string]any{
		"error":               "rate_limited",
		"message":             fmt.Sprintf("%s. Please retry in %d seconds.", msg, secs),
		"retry_after_seconds": secs,
	})
}

// rateLimited applies a per-caller limit, answering 429 itself.
func (s *Server) rateLimited(w http.ResponseWriter, r *http.Request, l *admission.Limiter, what string) bool {
	ok, wait := l.Allow(callerKey(r), time.Now())
	if !ok {
		s.tooMany(w, "rate_limited", "Too many "+what+" requests", wait)
	}
	return !ok
}

// admit waits for an execution slot. It answers 429 itself when the queue is
// full and returns ok=false; the caller must call release when done.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	if r.Context().Value(admittedKey) != nil {
		return func() {}, true // admitted before its body was read
	}
	if s.rateLimited(w, r, s.Rates.Exec, "execution") {
		return nil, false
	}
	if s.Admission == nil {
		return func() {}, true
	}
	_, span := tracing.Tracer().Start(r.Context(), "queue")
	release, waited, err := s.Admission.Acquire(r.Context())
	span.End()
	if s.Metrics != nil && err == nil {
		s.Metrics.QueueWait.Observe(waited.Seconds())
	}
	if b, busy := admission.IsBusy(err); busy {
		s.tooMany(w, "queue_full", "Too many executions in progress ("+b.Reason+")", b.RetryAfter)
		return nil, false
	}
	if err != nil { // the client went away while queued
		writeError(w, 499, "client closed request")
		return nil, false
	}
	return release, true
}

const admittedKey ctxKey = 101

// preAdmitBytes is how much of a body is read before the request is
// admitted: all of an ordinary request, so that the server watches its
// connection and a client that gives up leaves the queue at once.
const preAdmitBytes = 64 << 10

// admitBeforeBody takes the request's execution slot having read at most
// preAdmitBytes of its body: a queued request holds that and the kernel's
// socket buffers, not a decoded body of up to MaxJSONBytes (64 queued
// 50 MiB bodies were ~3 GiB of heap). The returned request carries the
// admission, so the execution does not queue again; release must be called
// when done.
func (s *Server) admitBeforeBody(w http.ResponseWriter, r *http.Request) (*http.Request, func(), bool) {
	r, _, ok := s.readHead(w, r)
	if !ok {
		return r, nil, false
	}
	return s.admitNow(w, r)
}

// readHead reads at most preAdmitBytes of the request's body (answering
// itself, and returning false, for a body declared over MaxJSONBytes or
// one that breaks off) and returns them; the returned request's body
// still reads whole.
func (s *Server) readHead(w http.ResponseWriter, r *http.Request) (*http.Request, []byte, bool) {
	if r.ContentLength > s.Limits.MaxJSONBytes {
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", s.Limits.MaxJSONBytes))
		return r, nil, false
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(jsonBodyTimeout))
	head := make([]byte, preAdmitBytes)
	n, err := io.ReadFull(r.Body, head)
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		writeError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
		return r, nil, false
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head[:n]), r.Body), r.Body}
	return r, head[:n], true
}

// admitNow takes the request's execution slot; the returned request
// carries the admission, so the execution does not queue again.
func (s *Server) admitNow(w http.ResponseWriter, r *http.Request) (*http.Request, func(), bool) {
	release, ok := s.admit(w, r)
	if !ok {
		return r, nil, false
	}
	return r.WithContext(context.WithValue(r.Context(), admittedKey, true)), release, true
}

// execute runs an engine request under admission control and records it.
func (s *Server) execute(w http.ResponseWriter, r *http.Request, req engine.Request) (*engine.Result, bool) {
	release, ok := s.admit(w, r)
	if !ok {
		return nil, false
	}
	defer release()
	if s.Budget != nil {
		_, span := tracing.Tracer().Start(r.Context(), "memory")
		free, err := s.Budget.Take(r.Context(), admission.KindExec, s.Engine.Limits().MemoryBytes, s.MemoryWait)
		span.End()
		if err != nil {
			s.engineError(w, r, err)
			return nil, false
		}
		defer free()
	}
	var res *engine.Result
	var err error
	track := s.trackBegin(r, req.Lang.ID)
	defer func() { s.trackEnd(track, res, err) }() // even if Exec panics
	res, err = s.Engine.Exec(r.Context(), req)
	if err != nil {
		if s.Metrics != nil && errors.Is(err, engine.ErrSandbox) {
			s.Metrics.SandboxFailures.Inc()
		}
		s.engineError(w, r, err)
		return nil, false
	}
	if s.Metrics != nil {
		s.Metrics.Executions.WithLabelValues(res.Language, string(res.Status)).Observe(res.WallTime.Seconds())
	}
	return res, true
}

// executeLive runs a request in the caller's live runtime session under
// admission control and answers it.
// liveCaller is whose session quota a stateful session counts against:
// the JWT subject; or the API key with the LibreChat user it acts for (one
// LibreChat server holds one key for all its users).
func liveCaller(r *http.Request, userID string) string {
	if principalOf(r).Method == "jwt" {
		return callerKey(r)
	}
	return callerKey(r) + "\x00" + userID
}

func (s *Server) executeLive(w http.ResponseWriter, r *http.Request, caller, key string, req engine.Request) {
	release, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer release()
	var out *runtime.Outcome
	var err error
	track := s.trackBegin(r, req.Lang.ID)
	defer func() { s.trackEnd(track, liveResult(out), err) }() // even if Exec panics
	out, err = s.Runtime.Exec(r.Context(), caller, key, req)
	if errors.Is(err, runtime.ErrUnsupported) {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "capability_mismatch", "message": err.Error()})
		return
	}
	if err != nil {
		if s.Metrics != nil && errors.Is(err, engine.ErrSandbox) {
			s.Metrics.SandboxFailures.Inc()
		}
		s.engineError(w, r, err)
		return
	}
	if s.Metrics != nil {
		s.Metrics.Executions.WithLabelValues(out.Language, string(out.Status)).Observe(out.WallTime.Seconds())
	}
	resp := execResponseOf(out.Result)
	resp.RuntimeSessionID, resp.RuntimeStatus = out.RuntimeID, out.Status
	writeJSON(w, http.StatusOK, resp)
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
