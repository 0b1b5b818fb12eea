package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/tracing"
)

// Admission: who the caller is for per-caller bounds (callerKey), rate
// limits, and the wait for an execution slot, taken before a request's
// body is read whole (admitBeforeBody).

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
