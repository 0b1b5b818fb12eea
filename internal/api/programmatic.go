package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/ptc"
)

// Programmatic tool calling (@librechat/agents' run_tools_with_code and
// run_tools_with_bash): POST /exec/programmatic starts code that calls the
// client's tools, or continues it with their results; internal/ptc keeps the
// paused runs.

type programmaticRequest struct {
	Code    *string            `json:"code"`
	Lang    string             `json:"lang"`
	Tools   []programmaticTool `json:"tools"`
	Timeout json.Number        `json:"timeout"` // milliseconds
	Files   []fileRef          `json:"files"`
	Args    json.RawMessage    `json:"args"`
	// An attached workspace (the bash tool's workspace_instance_id) is not
	// something codeexec provides: refused as a capability.
	WorkspaceInstanceID string           `json:"workspace_instance_id"`
	ContinuationToken   string           `json:"continuation_token"`
	ToolResults         []ptc.ToolResult `json:"tool_results"`
	// session_id and runtime_session_hint are accepted and not used: a
	// programmatic run is one-shot, like /exec, and answers a new session.
}

// programmaticTool is a tool definition; description and parameters are
// the model's business, not the sandbox's.
type programmaticTool struct {
	Name string `json:"name"`
}

type toolCallOut struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

type programmaticPause struct {
	Status            string        `json:"status"`
	ContinuationToken string        `json:"continuation_token"`
	ToolCalls         []toolCallOut `json:"tool_calls"`
}

type programmaticDone struct {
	execResponse
	Status    string `json:"status"` // "completed"
	RunStatus string `json:"run_status"`
}

type programmaticError struct {
	Status string `json:"status"` // "error"
	Error  string `json:"error"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

const workspaceHeader = "X-LibreChat-Code-Workspace-ID"

// unsupported answers a recognised request for something codeexec does not
// provide, in the form the client reports as a permanent capability
// mismatch (never a 404 or 5xx, which it would retry).
func unsupported(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusConflict, map[string]string{"error": msg, "code": "unsupported_capability"})
}

func (s *Server) handleProgrammatic(w http.ResponseWriter, r *http.Request) {
	if s.PTC == nil {
		unsupported(w, "programmatic tool calling is not enabled on this server")
		return
	}
	if r.Header.Get(workspaceHeader) != "" {
		unsupported(w, "attached workspaces are not supported by codeexec")
		return
	}
	switch p := strings.ToLower(r.Header.Get(profileHeader)); p {
	case "", "default", "stateful":
		// A programmatic run is one-shot under either profile.
		w.Header().Set("X-CodeAPI-Execution-Profile", "default")
	default:
		writeJSON(w, http.StatusConflict, map[string]string{
			"error": "execution_profile_mismatch", "code": "execution_profile_mismatch",
			"message": "this server does not serve the " + truncateString(p, 64) + " execution profile",
		})
		return
	}
	// A new run's body is read past its first 64 KiB only once the run has
	// its execution slot, as /exec's is. A continuation's is not queued
	// (its paused run holds a slot already: waiting for another could wait
	// on that very run); it is read at once, bounded by MaxJSONBytes, the
	// read deadline and the caller's bound on requests in progress.
	r, head, ok := s.readHead(w, r)
	if !ok {
		return
	}
	var held func() // the slot taken before the body was read
	defer func() {
		if held != nil {
			held()
		}
	}()
	continuation := continuationIn(head)
	if !continuation {
		if r, held, ok = s.admitNow(w, r); !ok {
			return
		}
	}
	var req programmaticRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	if continuation && req.ContinuationToken == "" {
		writeError(w, http.StatusBadRequest, "continuation_token is empty")
		return
	}
	if req.WorkspaceInstanceID != "" {
		unsupported(w, "attached workspaces are not supported by codeexec")
		return
	}
	caller := callerKey(r)
	requestID := r.Header.Get("X-LibreChat-Code-Request-ID")
	if req.ContinuationToken != "" {
		if held != nil { // its token came late in its body: its run's slot serves it
			held()
			held = nil
		}
		if len(req.ContinuationToken) > 256 || len(req.ToolResults) > 10000 {
			writeError(w, http.StatusBadRequest, "invalid continuation")
			return
		}
		admit := func() (func(), error) {
			if s.Admission == nil {
				return func() {}, nil
			}
			release, _, err := s.Admission.Acquire(r.Context())
			return release, err
		}
		ans, err := s.PTC.Continue(r.Context(), caller, req.ContinuationToken, req.ToolResults, requestID, admit)
		s.answerProgrammatic(w, r, ans, err)
		return
	}
	lang := req.Lang
	if lang == "" {
		lang = "py"
	}
	if req.Code == nil || strings.TrimSpace(*req.Code) == "" {
		writeError(w, http.StatusBadRequest, "code is required (or continuation_token with tool_results)")
		return
	}
	names := make([]string, 0, len(req.Tools))
	for _, t := range req.Tools {
		if t.Name == "" || len(t.Name) > 256 {
			writeError(w, http.StatusBadRequest, "every tool needs a name of at most 256 bytes")
			return
		}
		names = append(names, t.Name)
	}
	if len(names) > 1000 {
		writeError(w, http.StatusBadRequest, "at most 1000 tools")
		return
	}
	ereq, ok := s.execRequestOf(w, r, execRequest{Lang: lang, Code: req.Code, Args: req.Args, Files: req.Files, Timeout: req.Timeout})
	if !ok {
		return
	}
	if !ereq.Lang.Live {
		unsupported(w, "programmatic tool calling runs py and bash only, not "+ereq.Lang.ID)
		return
	}
	if ok, why := engine.Available(ereq.Lang); !ok {
		writeError(w, http.StatusBadRequest, why)
		return
	}
	release := held // now the run's, until it ends
	held = nil
	ans, err := s.PTC.Start(r.Context(), ptc.Start{Req: ereq, Tools: names, Caller: caller, RequestID: requestID, Release: release})
	s.answerProgrammatic(w, r, ans, err)
}

// continuationIn reports whether head, the start of a JSON body, shows a
// top-level "continuation_token" member (matched as encoding/json matches
// it, ignoring case). LibreChat sends the token first.
func continuationIn(head []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(head))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return false
		}
		if name, _ := k.(string); strings.EqualFold(name, "continuation_token") {
			return true
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
	}
	return false
}

func (s *Server) answerProgrammatic(w http.ResponseWriter, r *http.Request, ans ptc.Answer, err error) {
	switch {
	case errors.Is(err, ptc.ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "Continuation not found: the token is unknown, belongs to another caller, or its run has ended", "code": "continuation_not_found"})
		return
	case errors.Is(err, ptc.ErrUsed):
		writeJSON(w, http.StatusGone, map[string]string{"error": "Continuation token already used: each token continues a run once", "code": "continuation_used"})
		return
	case errors.Is(err, ptc.ErrExpired):
		writeJSON(w, http.StatusGone, map[string]string{"error": "Continuation expired: the run waited longer than the pause limit for tool results and was ended", "code": "continuation_expired"})
		return
	case err != nil:
		if s.Metrics != nil && errors.Is(err, engine.ErrSandbox) {
			s.Metrics.SandboxFailures.Inc()
		}
		s.engineError(w, r, err)
		return
	}
	if res := ans.Result; res != nil && s.Metrics != nil {
		s.Metrics.Executions.WithLabelValues(res.Language, string(res.Status)).Observe(res.WallTime.Seconds())
	}
	switch ans.Status {
	case "tool_call_required":
		out := programmaticPause{Status: ans.Status, ContinuationToken: ans.Token, ToolCalls: make([]toolCallOut, 0, len(ans.Calls))}
		for _, c := range ans.Calls {
			out.ToolCalls = append(out.ToolCalls, toolCallOut{ID: c.ID, Name: c.Name, Input: c.Input})
		}
		writeJSON(w, http.StatusOK, out)
	case "completed":
		writeJSON(w, http.StatusOK, programmaticDone{execResponse: execResponseOf(ans.Result), Status: "completed", RunStatus: string(ans.Result.Status)})
	default:
		writeJSON(w, http.StatusOK, programmaticError{Status: "error", Error: ans.Error, Stdout: ans.Result.Stdout, Stderr: ans.Result.Stderr})
	}
}

func (s *Server) handleProgrammaticCancel(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RequestID string `json:"request_id"`
	}
	if !s.decodeJSON(w, r, &req) {
		return
	}
	if req.RequestID == "" || len(req.RequestID) > 256 {
		writeError(w, http.StatusBadRequest, "request_id is required")
		return
	}
	if s.PTC == nil || !s.PTC.Cancel(callerKey(r), req.RequestID) {
		writeError(w, http.StatusNotFound, "no programmatic run of this caller has that request_id")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"cancelled": true, "request_id": req.RequestID})
}
