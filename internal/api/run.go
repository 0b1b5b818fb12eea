package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/runtime"
	"github.com/codeexec/codeexec/internal/tracing"
)

// The one execution path of both APIs: LibreChat's /exec (exec.go) and
// /v1/sessions/{id}/execute (sessions.go) read their own bodies, then
// validate them here (runInput.request), run one-shot or in a stateful
// session here (Server.run) and answer in one shape (execResponse).

// runInput is what an execution body carries, as sent.
type runInput struct {
	Lang      string // language id or alias
	LangField string // its field's name in this API's body, for errors
	Code      *string
	Args      json.RawMessage
	Stdin     string
	Timeout   json.Number
	// TimeoutUnit is what Timeout counts: milliseconds in /exec, seconds
	// in /v1.
	TimeoutUnit time.Duration
}

// request validates in, answering 400 itself.
func (in runInput) request(w http.ResponseWriter, r *http.Request) (engine.Request, bool) {
	bad := func(msg string) (engine.Request, bool) {
		writeError(w, http.StatusBadRequest, msg)
		return engine.Request{}, false
	}
	if strings.TrimSpace(in.Lang) == "" {
		return bad(in.LangField + " is required")
	}
	l, found := lang.Lookup(in.Lang)
	if !found {
		return bad("Unsupported language: " + truncateString(in.Lang, 64))
	}
	if in.Code == nil {
		return bad("code is required")
	}
	args, err := parseArgs(in.Args)
	if err != nil {
		return bad(err.Error())
	}
	unit := "milliseconds"
	if in.TimeoutUnit == time.Second {
		unit = "seconds"
	}
	timeout, err := parseTimeout(in.Timeout, in.TimeoutUnit, unit)
	if err != nil {
		return bad(err.Error())
	}
	return engine.Request{Lang: l, Code: *in.Code, Args: args, Stdin: in.Stdin, Timeout: timeout, Owner: principalOf(r).ID}, true
}

// liveTarget is the stateful session a run goes to: caller is whose
// session quota it counts against (liveCaller), key the session.
type liveTarget struct{ caller, key string }

// run executes req, in the live session when live is set, under admission
// control, and records it (metrics, console). It answers errors itself.
func (s *Server) run(w http.ResponseWriter, r *http.Request, req engine.Request, live *liveTarget) (execResponse, bool) {
	release, ok := s.admit(w, r)
	if !ok {
		return execResponse{}, false
	}
	defer release()
	if s.Budget != nil && live == nil {
		// A live session's memory is held by the session itself
		// (runtime.Config.Memory) from its start to its end.
		_, span := tracing.Tracer().Start(r.Context(), "memory")
		free, err := s.Budget.Take(r.Context(), admission.KindExec, s.Engine.Limits().MemoryBytes, s.MemoryWait)
		span.End()
		if err != nil {
			s.engineError(w, r, err)
			return execResponse{}, false
		}
		defer free()
	}
	var res *engine.Result
	var out *runtime.Outcome
	var err error
	track := s.trackBegin(r, req.Lang.ID)
	defer func() { s.trackEnd(track, res, err) }() // even if Exec panics
	if live == nil {
		res, err = s.Engine.Exec(r.Context(), req)
	} else if out, err = s.Runtime.Exec(r.Context(), live.caller, live.key, req); out != nil {
		res = out.Result
	}
	if errors.Is(err, runtime.ErrUnsupported) {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "capability_mismatch", "message": err.Error()})
		return execResponse{}, false
	}
	if err != nil {
		if s.Metrics != nil && errors.Is(err, engine.ErrSandbox) {
			s.Metrics.SandboxFailures.Inc()
		}
		s.engineError(w, r, err)
		return execResponse{}, false
	}
	if s.Metrics != nil {
		s.Metrics.Executions.WithLabelValues(res.Language, string(res.Status)).Observe(res.WallTime.Seconds())
	}
	resp := execResponseOf(res)
	if out != nil {
		resp.RuntimeSessionID, resp.RuntimeStatus = out.RuntimeID, out.Status
	}
	return resp, true
}

// liveCaller is whose session quota a stateful session counts against:
// the JWT subject; or the API key with the LibreChat user it acts for (one
// LibreChat server holds one key for all its users).
func liveCaller(r *http.Request, userID string) string {
	if principalOf(r).Method == "jwt" {
		return callerKey(r)
	}
	return callerKey(r) + "\x00" + userID
}

// fileOut is a file of an /exec answer. session_id repeats
// storage_session_id for clients of the 3.1.x window, which read it.
type fileOut struct {
	ID               string       `json:"id"`
	Name             string       `json:"name"`
	Path             string       `json:"path"`
	StorageSessionID string       `json:"storage_session_id"`
	SessionID        string       `json:"session_id"`
	Size             int64        `json:"size"`
	ContentType      string       `json:"contentType,omitempty"`
	Inherited        bool         `json:"inherited,omitempty"`
	ModifiedFrom     *modifiedRef `json:"modified_from,omitempty"`
}

type modifiedRef struct {
	ID               string `json:"id"`
	StorageSessionID string `json:"storage_session_id"`
	SessionID        string `json:"session_id"`
}

type truncationOut struct {
	Code         string         `json:"code"`
	Reasons      map[string]int `json:"reasons"`
	Skipped      []string       `json:"skipped"`
	SkippedCount int            `json:"skipped_count"`
}

type execResponse struct {
	SessionID          string         `json:"session_id"`
	Stdout             string         `json:"stdout"`
	Stderr             string         `json:"stderr"`
	Files              []fileOut      `json:"files"`
	DeletedFiles       []string       `json:"deleted_files,omitempty"`
	ArtifactTruncation *truncationOut `json:"artifact_truncation,omitempty"`
	ExitCode           int            `json:"exit_code"`
	Code               int            `json:"code"`
	Signal             *string        `json:"signal"`
	Status             string         `json:"status"`
	WallTimeMS         int64          `json:"wall_time_ms"`
	CPUTimeMS          int64          `json:"cpu_time_ms"`
	MemoryPeakBytes    int64          `json:"memory_peak_bytes"`
	Language           string         `json:"language"`
	Version            string         `json:"version"`
	RuntimeSessionID   string         `json:"runtime_session_id,omitempty"`
	RuntimeStatus      string         `json:"runtime_status,omitempty"`
}

// parseArgs accepts an array of strings or, as older direct callers send, a
// single string split on white space.
func parseArgs(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		if len(list) > 1024 {
			return nil, fmt.Errorf("args: at most 1024 arguments")
		}
		for _, a := range list {
			if strings.IndexByte(a, 0) >= 0 {
				return nil, fmt.Errorf("args: NUL bytes are not allowed")
			}
		}
		return list, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return strings.Fields(one), nil
	}
	return nil, fmt.Errorf("args must be an array of strings")
}

// parseTimeout reads a request's timeout in unit; huge values are clamped
// (the server's own limit applies anyway), negative or non-numeric refused.
func parseTimeout(n json.Number, unit time.Duration, unitName string) (time.Duration, error) {
	if n == "" {
		return 0, nil
	}
	v, err := n.Float64()
	if err != nil || v < 0 {
		return 0, fmt.Errorf("timeout must be a non-negative number of %s", unitName)
	}
	if v*float64(unit) > float64(24*time.Hour) {
		return 24 * time.Hour, nil
	}
	return time.Duration(v * float64(unit)), nil
}

func truncateString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func execResponseOf(res *engine.Result) execResponse {
	out := execResponse{
		SessionID:       res.Session,
		Stdout:          res.Stdout,
		Stderr:          res.Stderr,
		Files:           make([]fileOut, 0, len(res.Files)),
		DeletedFiles:    res.DeletedFiles,
		ExitCode:        res.ExitCode,
		Code:            res.ExitCode,
		Status:          string(res.Status),
		WallTimeMS:      res.WallTime.Milliseconds(),
		CPUTimeMS:       res.CPUTime.Milliseconds(),
		MemoryPeakBytes: res.MemoryPeak,
		Language:        res.Language,
		Version:         res.Version,
	}
	if res.Signal != "" {
		out.Signal = &res.Signal
	}
	for _, f := range res.Files {
		fo := fileOut{
			ID: f.ID, Name: f.Name, Path: "/mnt/data/" + f.Name,
			StorageSessionID: f.Session, SessionID: f.Session,
			Size: f.Size, ContentType: f.ContentType, Inherited: f.Inherited,
		}
		if m := f.ModifiedFrom; m != nil {
			fo.ModifiedFrom = &modifiedRef{ID: m.ID, StorageSessionID: m.Session, SessionID: m.Session}
		}
		out.Files = append(out.Files, fo)
	}
	if t := res.Truncation; t != nil {
		out.ArtifactTruncation = &truncationOut{Code: "artifact_truncated", Reasons: t.Reasons, Skipped: t.Skipped, SkippedCount: t.Count}
	}
	return out
}
