package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/codeexec/codeexec/internal/engine"
)

// LibreChat's POST /exec: its body (both client generations), the
// execution profile header and the stateful profile's session hint. The
// execution itself is run.go's, shared with /v1.

// execRequest is the body of POST /exec. Fields LibreChat also sends
// (user_id, codeSessionKey, LIBRECHAT_CODE_API_KEY, entity_id, ...) are
// deliberately not decoded: unknown fields are ignored and never echoed.
type execRequest struct {
	Lang     string          `json:"lang"`
	Language string          `json:"language"`
	Code     *string         `json:"code"`
	Args     json.RawMessage `json:"args"`
	Stdin    string          `json:"stdin"`
	Files    []fileRef       `json:"files"`
	Timeout  json.Number     `json:"timeout"` // milliseconds
	// The stateful profile: the live session to use, scoped to the caller.
	RuntimeSessionHint string `json:"runtime_session_hint"`
	UserID             string `json:"user_id"`
}

// fileRef accepts both generations: legacy {id, session_id, name} and
// current {id, resource_id, storage_session_id, name, kind, version}.
type fileRef struct {
	ID               string `json:"id"`
	SessionID        string `json:"session_id"`
	StorageSessionID string `json:"storage_session_id"`
	Name             string `json:"name"`
}

const profileHeader = "X-CodeAPI-Expected-Profile"

func (s *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	profile := strings.ToLower(r.Header.Get(profileHeader))
	switch {
	case profile == "" || profile == "default":
		profile = "default"
	case profile == "stateful" && s.Runtime != nil:
	default:
		writeJSON(w, http.StatusConflict, map[string]string{
			"error":   "execution_profile_mismatch",
			"message": fmt.Sprintf("this server does not serve the %q execution profile", profile),
		})
		return
	}
	w.Header().Set("X-CodeAPI-Execution-Profile", profile)

	r, release, ok := s.admitBeforeBody(w, r)
	if !ok {
		return
	}
	defer release()
	var req execRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	ereq, ok := s.execRequestOf(w, r, req)
	if !ok {
		return
	}
	var live *liveTarget
	if profile == "stateful" {
		if strings.TrimSpace(req.RuntimeSessionHint) == "" || len(req.RuntimeSessionHint) > 256 || len(req.UserID) > 256 {
			writeError(w, http.StatusBadRequest, "runtime_session_hint (at most 256 bytes) is required with the stateful profile")
			return
		}
		// Scoped to the caller: the same hint from another key, JWT subject
		// or LibreChat user never reaches this session.
		live = &liveTarget{caller: liveCaller(r, req.UserID), key: callerKey(r) + "\x00" + req.UserID + "\x00" + req.RuntimeSessionHint}
	}
	if resp, ok := s.run(w, r, ereq, live); ok {
		writeJSON(w, http.StatusOK, resp)
	}
}

// execRequestOf validates an /exec body (the fields /v1 shares with it in
// runInput.request, the file references here).
func (s *Server) execRequestOf(w http.ResponseWriter, r *http.Request, req execRequest) (engine.Request, bool) {
	id := req.Lang
	if id == "" {
		id = req.Language
	}
	ereq, ok := runInput{Lang: id, LangField: "lang", Code: req.Code, Args: req.Args, Stdin: req.Stdin,
		Timeout: req.Timeout, TimeoutUnit: time.Millisecond}.request(w, r)
	if !ok {
		return ereq, false
	}
	ereq.Files = make([]engine.FileRef, 0, len(req.Files))
	for _, f := range req.Files {
		sid := f.StorageSessionID
		if sid == "" {
			sid = f.SessionID
		}
		ereq.Files = append(ereq.Files, engine.FileRef{Session: sid, ID: f.ID, Name: f.Name})
	}
	return ereq, true
}
