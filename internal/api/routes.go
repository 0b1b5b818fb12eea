package api

import "net/http"

// routes lists the whole API. Every path is also served under /v1 and with
// duplicate slashes collapsed (see normalize).
func (s *Server) routes() {
	s.handle("GET /health", http.HandlerFunc(s.handleHealth))
	s.handle("GET /ready", http.HandlerFunc(s.handleReady))
	s.handle("GET /openapi.json", http.HandlerFunc(handleOpenAPI))
	if s.Metrics != nil && s.MetricsRoute {
		s.handle("GET /metrics", s.authed(func(w http.ResponseWriter, r *http.Request) { s.Metrics.Handler().ServeHTTP(w, r) }))
	}
	s.handle("GET /languages", s.authed(s.handleLanguages))

	// LibreChat's Code Interpreter API (both client generations).
	s.handle("POST /exec", s.authed(s.handleExec))
	s.handle("POST /exec/programmatic", s.authed(s.handleProgrammatic))
	s.handle("POST /exec/programmatic/cancel", s.authed(s.handleProgrammaticCancel))
	s.handle("POST /upload", s.authed(s.handleUpload))
	s.handle("POST /upload/batch", s.authed(s.handleUploadBatch))
	s.handle("GET /download/{session_id}/{file_id}", s.authed(s.handleDownload))
	s.handle("GET /files/{session_id}", s.authed(s.handleListFiles))
	s.handle("DELETE /files/{session_id}/{file_id}", s.authed(s.handleDeleteFile))
	s.handle("GET /sessions/{session_id}/objects/{file_id}", s.authed(s.handleObjectInfo))
	s.handle("DELETE /sessions/{session_id}/objects/{file_id}", s.authed(s.handleDeleteFile))

	// The /v1/sessions API of the integration guide.
	s.handle("POST /sessions", s.authed(s.handleCreateSession))
	s.handle("GET /sessions/{session_id}", s.authed(s.handleGetSession))
	s.handle("DELETE /sessions/{session_id}", s.authed(s.handleDeleteSession))
	s.handle("POST /sessions/{session_id}/execute", s.authed(s.handleSessionExecute))
	s.handle("POST /sessions/{session_id}/files", s.authed(s.handleSessionUpload))
	s.handle("GET /sessions/{session_id}/files/{path...}", s.authed(s.handleSessionDownload))

	// The operator console, when on (console.go).
	s.consoleRoutes()

	s.handle("/", http.HandlerFunc(s.handleNotFound))
}
