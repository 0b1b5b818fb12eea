package api

// routes lists the whole API. Every path is also served under /v1 and with
// duplicate slashes collapsed (see normalize).
func (s *server) routes() {
	m := s.mux
	m.HandleFunc("GET /health", s.handleHealth)
	m.Handle("GET /languages", s.authed(s.handleLanguages))

	// LibreChat's Code Interpreter API (both client generations).
	m.Handle("POST /exec", s.authed(s.handleExec))
	m.Handle("POST /upload", s.authed(s.handleUpload))
	m.Handle("POST /upload/batch", s.authed(s.handleUploadBatch))
	m.Handle("GET /download/{session_id}/{file_id}", s.authed(s.handleDownload))
	m.Handle("GET /files/{session_id}", s.authed(s.handleListFiles))
	m.Handle("DELETE /files/{session_id}/{file_id}", s.authed(s.handleDeleteFile))
	m.Handle("GET /sessions/{session_id}/objects/{file_id}", s.authed(s.handleObjectInfo))
	m.Handle("DELETE /sessions/{session_id}/objects/{file_id}", s.authed(s.handleDeleteFile))

	// The /v1/sessions API of the integration guide.
	m.Handle("POST /sessions", s.authed(s.handleCreateSession))
	m.Handle("GET /sessions/{session_id}", s.authed(s.handleGetSession))
	m.Handle("DELETE /sessions/{session_id}", s.authed(s.handleDeleteSession))
	m.Handle("POST /sessions/{session_id}/execute", s.authed(s.handleSessionExecute))
	m.Handle("POST /sessions/{session_id}/files", s.authed(s.handleSessionUpload))
	m.Handle("GET /sessions/{session_id}/files/{path...}", s.authed(s.handleSessionDownload))

	m.HandleFunc("/", s.handleNotFound)
}
