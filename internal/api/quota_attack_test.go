package api

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
)

// TestAttackStorageQuota: a caller cannot store more than its quota, by
// upload, batch upload, /v1 session upload or run outputs (sparse files
// included): uploads past it answer 507 and keep nothing, a body larger
// than the whole quota is 413 before it is read, outputs past it are
// reported in artifact_truncation (reason quota) and not stored; another
// caller is unaffected; deleting frees room. Fails with the quota wrapper
// taken out of the store (every write then succeeds).
func TestAttackStorageQuota(t *testing.T) {
	if !onBackends(t, cold) { // storage accounting: the backend plays no part
		return
	}
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) { a.Keys = append(a.Keys, otherKey) })
	const quota = 3 << 20
	e.quota.SetLimits(quota, 0)
	key1 := []string{"X-API-Key", testKey}
	mib := func(n float64) []byte { return bytes.Repeat([]byte("q"), int(n*(1<<20))) }

	first := decode[uploadResult](t, e.uploadAs(key1, "/upload", nil, part{"file", "a.bin", mib(2)}), 200)
	got := decode[map[string]string](t, e.uploadAs(key1, "/upload", nil, part{"file", "b.bin", mib(1.5)}), http.StatusInsufficientStorage)
	want := fmt.Sprintf("Storage quota exceeded: this caller's files may take at most %d bytes", quota)
	if got["error"] != want {
		t.Fatalf("upload past the quota: %q, want %q", got["error"], want)
	}
	// A batch that crosses the quota half way keeps nothing.
	before := e.quota.Used()
	got = decode[map[string]string](t, e.uploadAs(key1, "/upload/batch", nil,
		part{"file", "c1.bin", mib(0.5)}, part{"file", "c2.bin", mib(0.75)}), http.StatusInsufficientStorage)
	if got["error"] != want || e.quota.Used() != before {
		t.Fatalf("batch past the quota: %v; stored %d bytes more", got, e.quota.Used()-before)
	}
	// A body larger than the whole quota is refused before it is read.
	got = decode[map[string]string](t, e.uploadAs(key1, "/upload/batch", nil,
		part{"file", "d1.bin", mib(2.5)}, part{"file", "d2.bin", mib(2.5)}), http.StatusRequestEntityTooLarge)
	if want413 := "is larger than this caller's storage quota (3145728 bytes)"; !bytes.Contains([]byte(got["error"]), []byte(want413)) {
		t.Fatalf("body over the quota: %v", got)
	}
	// /v1 session uploads count too.
	s := decode[v1Session](t, e.post("/v1/sessions", `{"language":"bash"}`, key1...), http.StatusCreated)
	decode[map[string]string](t, e.uploadAs(key1, "/v1/sessions/"+s.SessionID+"/files", nil, part{"file", "s.bin", mib(1.5)}), http.StatusInsufficientStorage)

	// Outputs: sparse files cost the run nothing, and are stored only as
	// far as the quota goes (0.9 MiB are left: one of the two fits).
	r := decode[execResult](t, e.post("/exec", map[string]any{"lang": "bash",
		"code": "truncate -s 600K o1.bin; truncate -s 600K o2.bin"}, key1...), 200)
	assertOK(t, r)
	if len(r.Files) != 1 || r.ArtifactTruncation == nil || r.ArtifactTruncation.Reasons["quota"] != 1 || r.ArtifactTruncation.SkippedCount != 1 {
		t.Fatalf("outputs past the quota: files %+v, truncation %+v", r.Files, r.ArtifactTruncation)
	}
	if u := e.quota.Used(); u > quota {
		t.Fatalf("stored %d bytes, quota %d", u, quota)
	}

	// Another caller has its own room.
	decode[uploadResult](t, e.uploadAs([]string{"X-API-Key", otherKey}, "/upload", nil, part{"file", "b.bin", mib(2)}), 200)
	// Deleting frees the caller's room.
	decode[map[string]string](t, e.do("DELETE", "/files/"+first.StorageSessionID+"/"+first.Files[0].FileID, nil, key1...), 200)
	decode[uploadResult](t, e.uploadAs(key1, "/upload", nil, part{"file", "b.bin", mib(1.5)}), 200)
}
