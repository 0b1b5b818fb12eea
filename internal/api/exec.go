package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
)

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
	if profile == "stateful" {
		if strings.TrimSpace(req.RuntimeSessionHint) == "" || len(req.RuntimeSessionHint) > 256 || len(req.UserID) > 256 {
			writeError(w, http.StatusBadRequest, "runtime_session_hint (at most 256 bytes) is required with the stateful profile")
			return
		}
		// Scoped to the caller: the same hint from another key, JWT subject
		// or LibreChat user never reaches this session.
		key := callerKey(r) + "\x00" + req.UserID + "\x00" + req.RuntimeSessionHint
		s.executeLive(w, r, liveCaller(r, req.UserID), key, ereq)
		return
	}
	res, ok := s.execute(w, r, ereq)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, execResponseOf(res))
}

// execRequestOf validates the transport-level fields of an /exec body.
func (s *Server) execRequestOf(w http.ResponseWriter, r *http.Request, req execRequest) (engine.Request, bool) {
	id := req.Lang
	if id == "" {
		id = req.Language
	}
	if strings.TrimSpace(id) == "" {
		writeError(w, http.StatusBadRequest, "lang is required")
		return engine.Request{}, false
	}
	l, found := lang.Lookup(id)
	if !found {
		writeError(w, http.StatusBadRequest, "Unsupported language: "+truncateString(id, 64))
		return engine.Request{}, false
	}
	if req.Code == nil {
		writeError(w, http.StatusBadRequest, "code is required")
		return engine.Request{}, false
	}
	args, err := parseArgs(req.Args)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return engine.Request{}, false
	}
	timeout, err := parseTimeout(req.Timeout, time.Millisecond, "milliseconds")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return engine.Request{}, false
	}
	files := make([]engine.FileRef, 0, len(req.Files))
	for _, f := range req.Files {
		sid := f.StorageSessionID
		if sid == "" {
			sid = f.SessionID
		}
		files = append(files, engine.FileRef{Session: sid, ID: f.ID, Name: f.Name})
	}
	return engine.Request{
		Lang:    l,
		Code:    *req.Code,
		Args:    args,
		Stdin:   req.Stdin,
		Files:   files,
		Timeout: timeout,
		Owner:   principalOf(r).ID,
	}, true
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
