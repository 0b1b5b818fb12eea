package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/owner"
	"github.com/codeexec/codeexec/internal/storage"
)

// The /v1/sessions API of the integration guide: a session is a storage
// prefix holding one file per path plus a record; executions run over the
// same engine as /exec, with the session's files as inputs and Persist set.

type sessionOut struct {
	SessionID  string `json:"session_id"`
	Language   string `json:"language"`
	Stateful   bool   `json:"stateful"`
	CreatedAt  string `json:"created_at"`
	LastUsedAt string `json:"last_used_at"`
	ExpiresAt  string `json:"expires_at"`
}

type sessionFile struct {
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	Modified string `json:"modified"`
	ID       string `json:"id"`
}

func (s *Server) sessionOf(rec storage.SessionRecord, used time.Time) sessionOut {
	return sessionOut{
		SessionID: rec.ID, Language: rec.Language, Stateful: rec.Stateful,
		CreatedAt: isoTime(rec.Created), LastUsedAt: isoTime(used), ExpiresAt: isoTime(used.Add(s.SessionTTL)),
	}
}

func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Language string `json:"language"`
		Lang     string `json:"lang"`
		Stateful bool   `json:"stateful"`
	}
	if !s.decodeJSON(w, r, &req) {
		return
	}
	id := req.Language
	if id == "" {
		id = req.Lang
	}
	l, ok := s.languageOf(w, id)
	if !ok {
		return
	}
	if req.Stateful && (s.Runtime == nil || !l.Live) {
		writeError(w, http.StatusBadRequest, "stateful sessions run py (and bash) on a server with the stateful runtime")
		return
	}
	rec := storage.SessionRecord{ID: storage.NewID(), Language: l.ID, Created: time.Now().UTC(), Owner: principalOf(r).ID, Stateful: req.Stateful}
	if err := s.Store.PutSession(r.Context(), rec); err != nil {
		s.storageError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sessionOf(rec, rec.Created))
}

// languageOf resolves a language id, answering 400 itself when unknown.
func (s *Server) languageOf(w http.ResponseWriter, id string) (*lang.Language, bool) {
	if id == "" {
		writeError(w, http.StatusBadRequest, "language is required")
		return nil, false
	}
	l, ok := lang.Lookup(id)
	if !ok {
		writeError(w, http.StatusBadRequest, "Unsupported language: "+truncateString(id, 64))
		return nil, false
	}
	return l, true
}

// session loads the path's session, answering 404 itself when it is missing
// or belongs to another principal.
func (s *Server) session(w http.ResponseWriter, r *http.Request) (storage.SessionRecord, time.Time, bool) {
	rec, used, err := s.Store.GetSession(r.Context(), r.PathValue("session_id"))
	if err == nil && !owner.Visible(rec.Owner, principalOf(r).ID) {
		err = storage.ErrNotFound
	}
	if errors.Is(err, storage.ErrNotFound) {
		writeError(w, http.StatusNotFound, "Session not found")
		return rec, used, false
	}
	if err != nil {
		s.storageError(w, err)
		return rec, used, false
	}
	return rec, used, true
}

func (s *Server) storageError(w http.ResponseWriter, err error) {
	s.Log.Error("storage", "err", err)
	writeError(w, http.StatusInternalServerError, "internal error: storage unavailable")
}

func (s *Server) handleGetSession(w http.ResponseWriter, r *http.Request) {
	rec, used, ok := s.session(w, r)
	if !ok {
		return
	}
	objs, err := s.Store.List(r.Context(), rec.ID)
	if err != nil {
		s.storageError(w, err)
		return
	}
	files := []sessionFile{}
	for _, o := range objs {
		files = append(files, sessionFile{Path: o.Name, Size: o.Size, Modified: isoTime(o.Modified), ID: o.ID})
	}
	writeJSON(w, http.StatusOK, struct {
		sessionOut
		Files []sessionFile `json:"files"`
	}{s.sessionOf(rec, used), files})
}

func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := s.session(w, r)
	if !ok {
		return
	}
	unlock := s.lockSession(rec.ID)
	defer unlock()
	if s.Runtime != nil && rec.Stateful {
		s.Runtime.Drop(liveKey(rec.ID))
	}
	if err := s.Store.DeleteSession(r.Context(), rec.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.storageError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"session_id": rec.ID, "deleted": true})
}

// sessionLocks serialises executions and uploads of one session on this
// instance, so that two runs do not both replace the same file.
var sessionLocks sync.Map // id -> *sync.Mutex

func (s *Server) lockSession(id string) func() {
	m, _ := sessionLocks.LoadOrStore(id, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

func (s *Server) handleSessionExecute(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := s.session(w, r)
	if !ok {
		return
	}
	r, release, ok := s.admitBeforeBody(w, r)
	if !ok {
		return
	}
	defer release()
	var req struct {
		Code     *string         `json:"code"`
		Stdin    string          `json:"stdin"`
		Language string          `json:"language"`
		Args     json.RawMessage `json:"args"`
		Timeout  json.Number     `json:"timeout"` // seconds
	}
	if !s.decodeJSON(w, r, &req) {
		return
	}
	langID := rec.Language
	if req.Language != "" {
		langID = req.Language
	}
	ereq, ok := runInput{Lang: langID, LangField: "language", Code: req.Code, Args: req.Args, Stdin: req.Stdin,
		Timeout: req.Timeout, TimeoutUnit: time.Second}.request(w, r)
	if !ok {
		return
	}

	unlock := s.lockSession(rec.ID)
	defer unlock()
	objs, err := s.Store.List(r.Context(), rec.ID)
	if err != nil {
		s.storageError(w, err)
		return
	}
	ereq.Files = make([]engine.FileRef, 0, len(objs))
	for _, o := range objs {
		ereq.Files = append(ereq.Files, engine.FileRef{Session: rec.ID, ID: o.ID, Name: o.Name})
	}
	ereq.Session, ereq.Persist = rec.ID, true
	var live *liveTarget
	if rec.Stateful && s.Runtime != nil {
		live = &liveTarget{caller: liveCaller(r, ""), key: liveKey(rec.ID)}
	}
	out, ok := s.run(w, r, ereq, live)
	if !ok {
		return
	}
	s.touch(r.Context(), rec)
	writeJSON(w, http.StatusOK, struct {
		execResponse
		DurationMS int64 `json:"duration_ms"`
	}{out, out.WallTimeMS})
}

// liveKey scopes a /v1 stateful session's interpreter to the session.
func liveKey(id string) string { return "v1-session\x00" + id }

// touch refreshes a session's record so that expiry counts from last use.
func (s *Server) touch(ctx context.Context, rec storage.SessionRecord) {
	if err := s.Store.PutSession(context.WithoutCancel(ctx), rec); err != nil {
		s.Log.Warn("refreshing session", "session", rec.ID, "err", err)
	}
}

func (s *Server) handleSessionUpload(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := s.session(w, r)
	if !ok {
		return
	}
	if s.rateLimited(w, r, s.Rates.Upload, "upload") {
		return
	}
	if !s.limitBody(w, r, s.Limits.MaxBatchFiles) {
		return
	}
	unlock := s.lockSession(rec.ID)
	defer unlock()
	existing, err := s.Store.List(r.Context(), rec.ID)
	if err != nil {
		s.storageError(w, err)
		return
	}
	byName := map[string]string{}
	for _, o := range existing {
		byName[o.Name] = o.ID
	}
	saved := []sessionFile{}
	status, err := s.readUploads(w, r, rec.ID, s.Limits.MaxBatchFiles, func(name string, obj storage.Object, err error) error {
		if err != nil {
			return err
		}
		// One file per path: an upload replaces the previous one.
		if old, ok := byName[name]; ok && old != obj.ID {
			if err := s.Store.Delete(r.Context(), storage.Key{Session: rec.ID, ID: old}); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("replacing %q: %w", name, err)
			}
		}
		byName[name] = obj.ID
		saved = append(saved, sessionFile{Path: name, Size: obj.Size, Modified: isoTime(obj.Modified), ID: obj.ID})
		return nil
	})
	if err == nil && len(saved) == 0 {
		status, err = http.StatusBadRequest, errors.New("no file in the request (form field \"file\" or \"files\")")
	}
	if err != nil {
		s.uploadError(w, status, err)
		return
	}
	s.touch(r.Context(), rec)
	writeJSON(w, http.StatusOK, map[string]any{"session_id": rec.ID, "files": saved})
}

func (s *Server) handleSessionDownload(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := s.session(w, r)
	if !ok || s.rateLimited(w, r, s.Rates.Download, "download") {
		return
	}
	name, err := engine.CleanName(r.PathValue("path"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	objs, err := s.Store.List(r.Context(), rec.ID)
	if err != nil {
		s.storageError(w, err)
		return
	}
	for _, o := range objs {
		if o.Name == name {
			s.sendFile(w, r, o.Key)
			return
		}
	}
	writeError(w, http.StatusNotFound, "File not found")
}
