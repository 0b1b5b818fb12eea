package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/owner"
	"github.com/codeexec/codeexec/internal/storage"
)

// LibreChat's file routes: /upload, /upload/batch, /download, /files and
// the object routes (metadata, deletes). Every stored object has an owner
// and every route checks it (owner.Readable to read, owner.Visible to
// delete: ownerReadable, lookup).

// ownerReadable reports whether the caller may read obj: its owner's own
// objects, and the agent and skill files of its JWT tenant (package owner
// has the rules, also for objects stored before owners were recorded).
func ownerReadable(r *http.Request, obj storage.Object) bool {
	return owner.Readable(obj.Owner, principalOf(r).ID)
}

// --- upload ---

type uploadFields struct {
	kind     string
	readOnly bool
}

type uploadedFile struct {
	FileID   string `json:"fileId"`
	Filename string `json:"filename"`
	Status   string `json:"status,omitempty"`
	Error    string `json:"error,omitempty"`
}

// readUploads streams every file part of a multipart body into storage under
// session, calling each with the outcome. Form fields that precede the files
// (kind, id, entity_id, read_only) apply to them, as LibreChat sends them.
func (s *Server) readUploads(w http.ResponseWriter, r *http.Request, session string, maxFiles int,
	each func(name string, obj storage.Object, err error) error) (int, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return http.StatusBadRequest, errors.New("expected a multipart/form-data body")
	}
	var f uploadFields
	files := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return 0, nil
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return http.StatusRequestEntityTooLarge, errors.New("File size limit exceeded")
			}
			return http.StatusBadRequest, fmt.Errorf("malformed multipart body: %v", err)
		}
		field := part.FormName()
		filename, isFile := rawFilename(part)
		if !isFile {
			val, _ := io.ReadAll(io.LimitReader(part, 4096))
			switch field {
			case "kind":
				f.kind = strings.TrimSpace(string(val))
			case "read_only":
				f.readOnly, _ = strconv.ParseBool(strings.TrimSpace(string(val)))
			}
			part.Close()
			continue
		}
		if field != "file" && field != "files" {
			part.Close()
			continue
		}
		files++
		if files > maxFiles {
			part.Close()
			return http.StatusBadRequest, fmt.Errorf("at most %d files per request", maxFiles)
		}
		status, err := s.storeUpload(r, session, part, filename, f, each)
		part.Close()
		if err != nil {
			return status, err
		}
	}
}

// storeUpload stores one file part; client errors about that file are passed
// to each, transport failures are returned.
func (s *Server) storeUpload(r *http.Request, session string, part *multipart.Part, filename string, f uploadFields,
	each func(string, storage.Object, error) error) (int, error) {
	name, err := engine.CleanName(filename)
	if err != nil {
		return 0, each(filename, storage.Object{}, err)
	}
	// Every upload belongs to the principal that sent it (and counts
	// against its quota); agent and skill files, which LibreChat shares
	// between the users of an agent, are readable by its whole tenant.
	own := principalOf(r).ID
	if f.kind == "agent" || f.kind == "skill" {
		own = owner.Shared(own)
	}
	limit := s.Limits.MaxUploadBytes
	lr := &limitedReader{r: part, left: limit}
	obj, err := s.Store.Put(r.Context(), storage.Key{Session: session, ID: storage.NewID()}, lr,
		storage.Meta{Name: name, ReadOnly: f.readOnly, Owner: own, ContentType: partType(part, name)})
	if lr.exceeded {
		return http.StatusRequestEntityTooLarge, errors.New("File size limit exceeded")
	}
	if lr.err != nil { // the client's body broke off or was malformed
		var tooBig *http.MaxBytesError
		if errors.As(lr.err, &tooBig) {
			return http.StatusRequestEntityTooLarge, errors.New("File size limit exceeded")
		}
		return http.StatusBadRequest, fmt.Errorf("malformed multipart body: %v", lr.err)
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, errors.New("File size limit exceeded")
		}
		var full *storage.QuotaError
		if errors.As(err, &full) {
			return http.StatusInsufficientStorage, full
		}
		return http.StatusInternalServerError, fmt.Errorf("storing upload: %w", err)
	}
	return 0, each(name, obj, nil)
}

func partType(p *multipart.Part, name string) string {
	if t := p.Header.Get("Content-Type"); t != "" && t != "application/octet-stream" {
		if mt, _, err := mime.ParseMediaType(t); err == nil {
			return mt
		}
	}
	return storage.ContentType(name)
}

// rawFilename returns the part's filename with its directories kept
// (multipart.Part.FileName strips them; LibreChat sends nested paths).
func rawFilename(p *multipart.Part) (string, bool) {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return "", false
	}
	name, ok := params["filename"]
	return name, ok
}

// limitedReader fails once more than left bytes are read, and remembers
// the reader's own errors (a broken request body, not a storage failure).
type limitedReader struct {
	r        io.Reader
	left     int64
	exceeded bool
	err      error
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		l.exceeded = true
		return 0, errors.New("file size limit exceeded")
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if err != nil && err != io.EOF {
		l.err = err
	}
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return n, errors.New("file size limit exceeded")
	}
	return n, err
}

// limitBody bounds an upload's body, answering 413 itself (and returning
// false) when its declared length alone is more than the caller may store.
func (s *Server) limitBody(w http.ResponseWriter, r *http.Request, files int) bool {
	if s.Quota != nil {
		if q := s.Quota.Limits().PerOwner; q > 0 && r.ContentLength > q+1<<20 {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is larger than this caller's storage quota (%d bytes)", r.ContentLength, q))
			return false
		}
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadBodyTimeout))
	// Room for every file at the cap plus multipart overhead.
	r.Body = http.MaxBytesReader(w, r.Body, int64(files)*s.Limits.MaxUploadBytes+1<<20)
	return true
}

// discard deletes what a failed upload request stored: the client was told
// it failed and holds no id of it, and it must not count against a quota.
func (s *Server) discard(r *http.Request, keys []storage.Key) {
	for _, k := range keys {
		if err := s.Store.Delete(context.WithoutCancel(r.Context()), k); err != nil && !errors.Is(err, storage.ErrNotFound) {
			s.Log.Warn("discarding a failed upload's file", "err", err)
		}
	}
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	if s.rateLimited(w, r, s.Rates.Upload, "upload") {
		return
	}
	if !s.limitBody(w, r, 1) {
		return
	}
	session := storage.NewID()
	var files []uploadedFile
	var stored []storage.Key
	status, err := s.readUploads(w, r, session, 1, func(name string, obj storage.Object, err error) error {
		if err != nil {
			return err
		}
		stored = append(stored, obj.Key)
		files = append(files, uploadedFile{FileID: obj.ID, Filename: name})
		return nil
	})
	if err == nil && len(files) == 0 {
		status, err = http.StatusBadRequest, errors.New("no file in the request (form field \"file\")")
	}
	if err != nil {
		s.discard(r, stored)
		s.uploadError(w, status, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"message": "success", "session_id": session, "storage_session_id": session, "files": files,
	})
}

func (s *Server) handleUploadBatch(w http.ResponseWriter, r *http.Request) {
	if s.rateLimited(w, r, s.Rates.Upload, "upload") {
		return
	}
	if !s.limitBody(w, r, s.Limits.MaxBatchFiles) {
		return
	}
	session := storage.NewID()
	files := []uploadedFile{}
	var stored []storage.Key
	ok, failed := 0, 0
	status, err := s.readUploads(w, r, session, s.Limits.MaxBatchFiles, func(name string, obj storage.Object, err error) error {
		if err != nil {
			failed++
			files = append(files, uploadedFile{Filename: name, Status: "error", Error: err.Error()})
			return nil
		}
		ok++
		stored = append(stored, obj.Key)
		files = append(files, uploadedFile{FileID: obj.ID, Filename: name, Status: "success"})
		return nil
	})
	if err != nil {
		// A quota filled mid-batch fails the whole batch: the client
		// learns no ids, so nothing it cannot see is left counting.
		s.discard(r, stored)
		s.uploadError(w, status, err)
		return
	}
	msg, code := "success", http.StatusOK
	switch {
	case ok == 0:
		msg, code = "error", http.StatusBadRequest
	case failed > 0:
		msg = "partial_success"
	}
	writeJSON(w, code, map[string]any{
		"message": msg, "session_id": session, "storage_session_id": session,
		"files": files, "succeeded": ok, "failed": failed,
	})
}

func (s *Server) uploadError(w http.ResponseWriter, status int, err error) {
	switch {
	case errors.Is(err, engine.ErrInvalid):
		status = http.StatusBadRequest
	case status == 0:
		status = http.StatusInternalServerError
	case errors.Is(err, storage.ErrQuota):
		s.storageFull(w, err)
		return
	}
	if status >= 500 {
		s.Log.Error("upload failed", "err", err)
		writeError(w, status, "internal error: the upload could not be stored")
		return
	}
	writeError(w, status, err.Error())
}

// storageFull answers 507 for a write a storage quota refused.
func (s *Server) storageFull(w http.ResponseWriter, err error) {
	writeError(w, http.StatusInsufficientStorage, strings.ToUpper(err.Error()[:1])+err.Error()[1:])
}

// --- download, list, info, delete ---

// lookup finds the path's file, answering 404 itself when it is missing or
// the caller may not see it (may reports whether it may: owner.Readable
// to read, owner.Visible to delete).
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, may func(obj, caller string) bool) (storage.Key, storage.Object, bool) {
	key := storage.Key{Session: r.PathValue("session_id"), ID: r.PathValue("file_id")}
	obj, err := s.Store.Stat(r.Context(), key)
	if err == nil && !may(obj.Owner, principalOf(r).ID) {
		err = storage.ErrNotFound
	}
	if errors.Is(err, storage.ErrNotFound) {
		writeError(w, http.StatusNotFound, "File not found")
		return key, obj, false
	}
	if err != nil {
		s.Log.Error("storage", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: storage unavailable")
		return key, obj, false
	}
	return key, obj, true
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	if s.rateLimited(w, r, s.Rates.Download, "download") {
		return
	}
	key, _, ok := s.lookup(w, r, owner.Readable)
	if !ok {
		return
	}
	s.sendFile(w, r, key)
}

// sendFile streams a stored file.
func (s *Server) sendFile(w http.ResponseWriter, r *http.Request, key storage.Key) {
	rc, obj, err := s.Store.Open(r.Context(), key)
	if errors.Is(err, storage.ErrNotFound) {
		writeError(w, http.StatusNotFound, "File not found")
		return
	}
	if err != nil {
		s.Log.Error("storage", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: storage unavailable")
		return
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", obj.ContentType)
	h.Set("Content-Length", strconv.FormatInt(obj.Size, 10))
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(obj.Name)}))
	h.Set("X-Content-Type-Options", "nosniff")
	if obj.ETag != "" {
		h.Set("ETag", `"`+obj.ETag+`"`)
	}
	h.Set("Last-Modified", obj.Modified.UTC().Format(http.TimeFormat))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.Log.Warn("download interrupted", "err", err)
	}
}

// storedName is the official service's object name: "<session>/<id><.ext>".
func storedName(o storage.Object) string {
	return o.Session + "/" + o.ID + path.Ext(o.Name)
}

func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (s *Server) handleListFiles(w http.ResponseWriter, r *http.Request) {
	session := r.PathValue("session_id")
	objs, err := s.Store.List(r.Context(), session)
	if err != nil {
		s.Log.Error("storage", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: storage unavailable")
		return
	}
	visible := objs[:0]
	for _, o := range objs {
		if ownerReadable(r, o) {
			visible = append(visible, o)
		}
	}
	detail := r.URL.Query().Get("detail")
	out := make([]any, 0, len(visible))
	for _, o := range visible {
		switch detail {
		case "summary":
			out = append(out, map[string]any{"name": storedName(o), "size": o.Size, "lastModified": isoTime(o.Modified), "etag": o.ETag})
		case "full":
			out = append(out, map[string]any{
				"name": storedName(o), "id": o.ID, "size": o.Size, "lastModified": isoTime(o.Modified), "etag": o.ETag,
				"metadata":    map[string]string{"content-type": o.ContentType, "original-filename": o.Name},
				"versionId":   "null",
				"contentType": o.ContentType,
			})
		case "normalized":
			m := map[string]any{"id": o.ID, "name": o.Name, "storage_session_id": o.Session, "session_id": o.Session,
				"size": o.Size, "contentType": o.ContentType, "lastModified": isoTime(o.Modified)}
			if o.ReadOnly {
				m["read_only"] = true
			}
			out = append(out, m)
		default: // "simple" and unspecified
			out = append(out, storedName(o))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleObjectInfo(w http.ResponseWriter, r *http.Request) {
	_, o, ok := s.lookup(w, r, owner.Readable)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": storedName(o), "id": o.ID, "session_id": o.Session, "storage_session_id": o.Session,
		"originalFilename": o.Name, "size": o.Size, "lastModified": isoTime(o.Modified),
		"etag": o.ETag, "contentType": o.ContentType, "readOnly": o.ReadOnly,
	})
}

func (s *Server) handleDeleteFile(w http.ResponseWriter, r *http.Request) {
	// Only the uploader deletes a file its tenant shares.
	key, _, ok := s.lookup(w, r, owner.Visible)
	if !ok {
		return
	}
	if err := s.Store.Delete(r.Context(), key); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			writeError(w, http.StatusNotFound, "File not found")
			return
		}
		s.Log.Error("storage", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: storage unavailable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "File deleted successfully", "session_id": key.Session, "fileId": key.ID})
}
