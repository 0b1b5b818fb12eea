// Package api is the HTTP transport: LibreChat's Code Interpreter API and
// the /v1/sessions API, both over the one execution engine. routes.go shows
// the whole surface. It owns the wire formats, status codes and who may
// touch which object; it must not know how code is isolated or run (the
// engine and the sandbox behind it) or where bytes are kept (the Store).
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/console"
	"github.com/codeexec/codeexec/internal/egress"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/metrics"
	"github.com/codeexec/codeexec/internal/ptc"
	"github.com/codeexec/codeexec/internal/runtime"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/storage"
	"github.com/codeexec/codeexec/internal/tracing"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Limits of the transport itself.
type Limits struct {
	MaxUploadBytes int64
	MaxJSONBytes   int64
	MaxBatchFiles  int
}

// Deps is what the server needs.
type Deps struct {
	Engine *engine.Engine
	Store  storage.Store
	Box    sandbox.Sandbox
	Auth   *auth.Authenticator
	Log    *slog.Logger
	Limits Limits
	// SessionTTL is how long unused files are kept (reported as expiry).
	SessionTTL time.Duration
	// Admission bounds concurrent executions; nil admits everything.
	Admission *admission.Controller
	// Budget is the server's memory budget: each one-shot execution takes
	// its memory limit's share, waiting at most MemoryWait (default 60 s);
	// nil counts nothing. Stateful sessions take theirs in the runtime.
	Budget     *admission.Budget
	MemoryWait time.Duration
	// Rates limits each caller; nil limiters allow everything.
	Rates Rates
	// Metrics are recorded when set; /metrics serves them when
	// MetricsRoute is also true (otherwise a separate listener does).
	Metrics      *metrics.Metrics
	MetricsRoute bool
	// ReadyTTL caches the /ready canary's verdict (default 5 s).
	ReadyTTL time.Duration
	// Runtime serves the stateful profile; nil refuses it with 409.
	Runtime *runtime.Manager
	// Console serves the operator console at /console and records
	// executions for it; nil turns it off.
	Console *console.Console
	// PTC serves programmatic tool calling; nil refuses it with 409.
	PTC *ptc.Manager
	// Quota is the storage quota Store goes through, if any: an upload
	// larger than a caller's whole quota is refused (413) before it is read.
	Quota *storage.Quota
	// MaxInFlight bounds each caller's requests in progress (0: no bound).
	MaxInFlight int
}

// Rates are the per-caller rate limits.
type Rates struct {
	Exec, Upload, Download *admission.Limiter
}

// Server is the API's HTTP handler.
type Server struct {
	Deps
	mux      *http.ServeMux
	handler  http.Handler
	patterns []string // every registered route, for the OpenAPI check
	draining atomic.Bool

	inFlightMu sync.Mutex
	inFlight   map[string]int // caller -> requests in progress

	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Drain makes the server answer new requests with 503 while in-flight ones
// finish; /ready fails so that load balancers stop sending traffic.
func (s *Server) Drain() { s.draining.Store(true) }

// NewServer returns the HTTP handler of the whole API.
func NewServer(d Deps) *Server {
	if d.Limits.MaxJSONBytes == 0 {
		d.Limits.MaxJSONBytes = 50 << 20
	}
	if d.SessionTTL == 0 {
		d.SessionTTL = 24 * time.Hour
	}
	if d.Limits.MaxBatchFiles == 0 {
		d.Limits.MaxBatchFiles = 200
	}
	if d.ReadyTTL == 0 {
		d.ReadyTTL = 5 * time.Second
	}
	if d.MemoryWait == 0 {
		d.MemoryWait = 60 * time.Second
	}
	s := &Server{Deps: d, mux: http.NewServeMux(), inFlight: map[string]int{}}
	s.routes()
	s.handler = s.recoverer(s.normalize(s.mux))
	return s
}

// routeKey carries the matched route pattern out to the request log and
// metrics, which run outside the mux.
type routeHolder struct{ pattern, auth string }

const routeKey ctxKey = 100

// handle registers h for pattern, recording the pattern for logs and metrics.
func (s *Server) handle(pattern string, h http.Handler) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rh, ok := r.Context().Value(routeKey).(*routeHolder); ok {
			rh.pattern = pattern
		}
		h.ServeHTTP(w, r)
	}))
}

type ctxKey int

const principalKey ctxKey = iota

func principalOf(r *http.Request) auth.Principal {
	p, _ := r.Context().Value(principalKey).(auth.Principal)
	return p
}

// authed wraps a handler with authentication.
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, span := tracing.Tracer().Start(r.Context(), "auth")
		p, err := s.Auth.Authenticate(r)
		span.SetAttributes(attribute.String("method", p.Method), attribute.Bool("ok", err == nil))
		span.End()
		if rh, ok := r.Context().Value(routeKey).(*routeHolder); ok {
			rh.auth = p.Method
		}
		if err != nil {
			var te *auth.TokenError
			if errors.As(err, &te) {
				writeError(w, http.StatusUnauthorized, "Unauthorized: "+te.Error())
				return
			}
			writeError(w, http.StatusUnauthorized, "Unauthorized: a valid API key (X-API-Key or Authorization: Bearer) is required")
			return
		}
		ctx := context.WithValue(r.Context(), principalKey, p)
		if p.Network != nil {
			pol, err := egress.ParseCaller(*p.Network)
			if err != nil {
				writeError(w, http.StatusUnauthorized, "Unauthorized: invalid JWT: codeexec_network claim: "+err.Error())
				return
			}
			ctx = egress.WithCaller(ctx, &pol)
		}
		r = r.WithContext(ctx)
		done, ok := s.enter(r)
		if !ok {
			s.tooMany(w, "caller_concurrency", fmt.Sprintf("Too many requests in progress for this caller (at most %d)", s.MaxInFlight), time.Second)
			return
		}
		defer done()
		h(w, r)
	})
}

// enter counts a request of its caller in progress, unless the caller has
// MaxInFlight already: one caller cannot hold every connection, queue place
// and upload stream of the server.
func (s *Server) enter(r *http.Request) (done func(), ok bool) {
	if s.MaxInFlight <= 0 {
		return func() {}, true
	}
	key := callerKey(r)
	s.inFlightMu.Lock()
	defer s.inFlightMu.Unlock()
	if s.inFlight[key] >= s.MaxInFlight {
		return nil, false
	}
	s.inFlight[key]++
	return func() {
		s.inFlightMu.Lock()
		defer s.inFlightMu.Unlock()
		if s.inFlight[key]--; s.inFlight[key] == 0 {
			delete(s.inFlight, key)
		}
	}, true
}

// normalize serves every route at / and under /v1, collapses duplicate
// slashes (old clients build "${base}/exec" from a base ending in "/"),
// and logs each request without its body.
func (s *Server) normalize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		p := r.URL.Path
		for strings.Contains(p, "//") {
			p = strings.ReplaceAll(p, "//", "/")
		}
		if p == "/v1" || strings.HasPrefix(p, "/v1/") {
			p = strings.TrimPrefix(p, "/v1")
			if p == "" {
				p = "/"
			}
		}
		if p != r.URL.Path {
			r2 := *r
			u := *r.URL
			u.Path, u.RawPath = p, ""
			r2.URL = &u
			r = &r2
		}
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 128 || strings.ContainsFunc(id, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
			var b [8]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		rh := &routeHolder{pattern: "unmatched"}
		ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracing.Tracer().Start(ctx, r.Method+" "+p, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		r = r.WithContext(context.WithValue(ctx, routeKey, rh))
		if s.draining.Load() && p != "/health" {
			w.Header().Set("Connection", "close")
			writeError(rec, http.StatusServiceUnavailable, "Service is shutting down")
		} else {
			next.ServeHTTP(rec, r)
		}
		if s.Metrics != nil {
			s.Metrics.Requests.WithLabelValues(rh.pattern, fmt.Sprint(rec.status)).Inc()
		}
		span.SetName(rh.pattern)
		span.SetAttributes(attribute.Int("http.response.status_code", rec.status), attribute.String("request.id", id))
		s.Log.Info("request", "id", id, "method", r.Method, "route", rh.pattern, "status", rec.status,
			"ms", time.Since(start).Milliseconds(), "auth", rh.auth)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.Log.Error("panic", "value", fmt.Sprint(v), "stack", string(debug.Stack()))
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeJSON reads a bounded JSON body into v, ignoring unknown fields.
// The body must arrive within jsonBodyTimeout of being asked for: a caller
// that trickles it cannot hold an execution slot for long.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(jsonBodyTimeout))
	defer rc.SetReadDeadline(time.Time{}) // executions may outlast it
	r.Body = http.MaxBytesReader(w, r.Body, s.Limits.MaxJSONBytes)
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var netErr net.Error
		switch {
		case errors.As(err, &netErr) && netErr.Timeout():
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestTimeout, fmt.Sprintf("request body not received within %s", jsonBodyTimeout))
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit))
		default:
			writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		}
		return false
	}
	return true
}

// Read deadlines of bodies (the server itself only bounds headers: an
// execution's answer can take minutes, and a deadline left on the
// connection would cancel it).
const (
	jsonBodyTimeout   = 2 * time.Minute
	uploadBodyTimeout = 30 * time.Minute // 150 MB at ~85 kB/s
)

// engineError maps an engine error to an HTTP answer.
func (s *Server) engineError(w http.ResponseWriter, r *http.Request, err error) {
	if b, busy := admission.IsBusy(err); busy {
		s.tooMany(w, "memory_budget", "Too many executions in progress ("+b.Reason+")", b.RetryAfter)
		return
	}
	if b := (*runtime.BusyError)(nil); errors.As(err, &b) {
		s.tooMany(w, "session_quota", "No stateful session can be started now: "+b.Reason+"; retry when one of them ends", time.Second)
		return
	}
	switch {
	case errors.Is(err, admission.ErrTooLarge):
		writeError(w, http.StatusServiceUnavailable, "Service misconfigured: "+err.Error())
	case errors.Is(err, storage.ErrQuota):
		s.storageFull(w, err)
	case errors.Is(err, engine.ErrUnauthorized):
		writeError(w, http.StatusForbidden, "Unauthorized file reference")
	case errors.Is(err, engine.ErrInvalid), errors.Is(err, engine.ErrUnavailable):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads this.
		writeError(w, 499, "client closed request")
	default:
		s.Log.Error("request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: the execution could not be carried out")
	}
}
