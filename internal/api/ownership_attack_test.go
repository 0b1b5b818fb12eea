package api

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/owner"
	"github.com/codeexec/codeexec/internal/storage"
)

const otherKey = "second-key-abcdefghij"

// TestAttackOwnership: every kind of stored object (a user upload, a
// shared key's upload, a batch upload, a run's output, a /v1 session and
// its files) is its owner's only: another principal (a JWT subject,
// another API key, a JWT of another tenant whose old-style "<tenant>:<sub>"
// spelling collides) gets 404 on every route, and 403 when it names the
// file in /exec. Fails with owner.Visible answering true, or with uploads
// by a key left unowned. (Agent files: TestAttackSharedAgentFiles.)
func TestAttackOwnership(t *testing.T) {
	if !onBackends(t, cold) { // storage and routing: the backend plays no part
		return
	}
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) {
		a.JWTSecret, a.Audience, a.Issuer = jwtSecret, "codeapi", "librechat"
		a.Keys = append(a.Keys, otherKey)
	})
	key1 := []string{"X-API-Key", testKey}
	key2 := []string{"X-API-Key", otherKey}
	alice, bob := bearer(t, "alice"), bearer(t, "bob")
	// Tenant "t1" + sub "x:y" and tenant "t1:x" + sub "y" were one owner.
	collide := bearerIn(t, "t1:x", "y")

	type object struct{ what, sid, id, name, content string }
	var objs []object
	add := func(who []string, what string) {
		up := decode[uploadResult](t, e.uploadAs(who, "/upload", map[string]string{"kind": "user", "id": "user_1"}, part{"file", "a.txt", []byte(what)}), 200)
		objs = append(objs, object{what + " kind=user upload", up.StorageSessionID, up.Files[0].FileID, "a.txt", what})
		up = decode[uploadResult](t, e.uploadAs(who, "/upload/batch", nil, part{"file", "b.txt", []byte(what + "b")}), 200)
		objs = append(objs, object{what + " batch upload", up.StorageSessionID, up.Files[0].FileID, "b.txt", what + "b"})
		r := decode[execResult](t, e.post("/exec", map[string]any{"lang": "bash", "code": "printf '" + what + "o' > o.txt"}, who...), 200)
		assertOK(t, r)
		objs = append(objs, object{what + " output", r.SessionID, fileNamed(r.Files, "o.txt").ID, "o.txt", what + "o"})
	}
	add(key1, "key1")
	add(bearerIn(t, "t1", "x:y"), "xy")
	owners := map[string][]string{"key1": key1, "xy": bearerIn(t, "t1", "x:y")}
	others := map[string][][]string{"key1": {key2, alice}, "xy": {collide, alice, key1}}

	for _, o := range objs {
		own := owners[strings.Fields(o.what)[0]]
		for _, who := range others[strings.Fields(o.what)[0]] {
			decode[map[string]string](t, e.do("GET", "/download/"+o.sid+"/"+o.id, nil, who...), 404)
			decode[map[string]string](t, e.do("GET", "/sessions/"+o.sid+"/objects/"+o.id, nil, who...), 404)
			if l := decode[[]any](t, e.do("GET", "/files/"+o.sid+"?detail=full", nil, who...), 200); len(l) != 0 {
				t.Errorf("%s listed by another principal: %v", o.what, l)
			}
			decode[map[string]string](t, e.do("DELETE", "/files/"+o.sid+"/"+o.id, nil, who...), 404)
			decode[map[string]string](t, e.do("DELETE", "/sessions/"+o.sid+"/objects/"+o.id, nil, who...), 404)
			ref := map[string]any{"id": o.id, "storage_session_id": o.sid, "name": o.name}
			got := decode[map[string]string](t, e.post("/exec", map[string]any{"lang": "bash", "code": "cat " + o.name, "files": []any{ref}}, who...), 403)
			if got["error"] != "Unauthorized file reference" {
				t.Errorf("%s used by another principal: %v", o.what, got)
			}
		}
		resp := e.do("GET", "/download/"+o.sid+"/"+o.id, nil, own...)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != o.content {
			t.Errorf("%s for its owner: %d %q", o.what, resp.StatusCode, b)
		}
	}

	// A /v1 session made with a shared key is not every JWT subject's.
	s := decode[v1Session](t, e.post("/v1/sessions", `{"language":"bash"}`, key1...), http.StatusCreated)
	base := "/v1/sessions/" + s.SessionID
	decode[map[string]any](t, e.uploadAs(key1, base+"/files", nil, part{"file", "n.txt", []byte("keyed")}), 200)
	for _, who := range [][]string{alice, key2} {
		decode[map[string]string](t, e.do("GET", base, nil, who...), 404)
		decode[map[string]string](t, e.do("GET", base+"/files/n.txt", nil, who...), 404)
		decode[map[string]string](t, e.post(base+"/execute", `{"code":"cat n.txt"}`, who...), 404)
		decode[map[string]string](t, e.do("DELETE", base, nil, who...), 404)
	}
	if r := decode[execResult](t, e.post(base+"/execute", `{"code":"cat n.txt"}`, key1...), 200); r.Stdout != "keyed" {
		t.Errorf("the key's own session: %+v", r)
	}

	// Objects stored before owners were recorded: an unowned one is the
	// key and anonymous classes' (it was stored by one of them); an old
	// "<tenant>:<sub>" one is that subject's.
	put := func(ownerStr string) storage.Key {
		k := storage.Key{Session: storage.NewID(), ID: storage.NewID()}
		if _, err := e.store.Put(context.Background(), k, strings.NewReader("old"), storage.Meta{Name: "old.txt", Owner: ownerStr}); err != nil {
			t.Fatal(err)
		}
		return k
	}
	for _, tc := range []struct {
		owner    string
		may, not [][]string
	}{
		{"", [][]string{key1, key2}, [][]string{alice, bob}},
		{"t1:alice", [][]string{alice}, [][]string{bob, key1}},
	} {
		k := put(tc.owner)
		for _, who := range tc.may {
			if b := decodeBytes(t, e.do("GET", "/download/"+k.Session+"/"+k.ID, nil, who...), 200); b != "old" {
				t.Errorf("legacy %q: %q", tc.owner, b)
			}
		}
		for _, who := range tc.not {
			decode[map[string]string](t, e.do("GET", "/download/"+k.Session+"/"+k.ID, nil, who...), 404)
		}
	}
}

// TestAttackSharedAgentFiles: an agent's (or skill's) files are read by
// every user of the agent in the uploader's JWT tenant, as LibreChat shares
// them: another subject of that tenant downloads them, reads their
// metadata, lists them and runs code on them, but cannot delete them; a
// subject of another tenant (also one whose old "<tenant>:<sub>" spelling
// collides) and another API key get 404, and 403 on /exec; a user's own
// files stay its own in the same tenant; the bytes count against the
// uploader's quota only. Fails with uploads of kind=agent owned by the
// uploader alone (bob's reads), or with owner.Readable not checking the
// tenant (the other tenants' reads).
func TestAttackSharedAgentFiles(t *testing.T) {
	if !onBackends(t, cold) { // storage and routing: the backend plays no part
		return
	}
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) {
		a.JWTSecret, a.Audience, a.Issuer = jwtSecret, "codeapi", "librechat"
		a.Keys = append(a.Keys, otherKey)
	})
	alice, bob := bearerIn(t, "t1", "alice"), bearerIn(t, "t1", "bob")
	strangers := [][]string{bearerIn(t, "t2", "alice"), bearerIn(t, "t1:alice", "x"), bearerIn(t, "t", "1"),
		{"X-API-Key", testKey}, {"X-API-Key", otherKey}}
	type object struct{ sid, id, name, content string }
	upload := func(who []string, path string, fields map[string]string, name, content string) object {
		up := decode[uploadResult](t, e.uploadAs(who, path, fields, part{"file", name, []byte(content)}), 200)
		return object{up.StorageSessionID, up.Files[0].FileID, name, content}
	}
	shared := []object{
		upload(alice, "/upload", map[string]string{"kind": "agent", "id": "agent_1"}, "a.txt", "agent file"),
		upload(alice, "/upload/batch", map[string]string{"kind": "skill", "id": "skill_1", "version": "1"}, "SKILL.md", "skill file"),
	}
	private := upload(alice, "/upload", map[string]string{"kind": "user", "id": "alice"}, "mine.txt", "alice only")
	run := func(who []string, o object, status int) map[string]any {
		ref := map[string]any{"id": o.id, "storage_session_id": o.sid, "name": o.name, "kind": "agent", "resource_id": "agent_1"}
		return decode[map[string]any](t, e.post("/exec", map[string]any{"lang": "bash", "code": "cat " + o.name, "files": []any{ref}}, who...), status)
	}
	denied := func(who []string, o object) {
		t.Helper()
		decode[map[string]string](t, e.do("GET", "/download/"+o.sid+"/"+o.id, nil, who...), 404)
		decode[map[string]string](t, e.do("GET", "/sessions/"+o.sid+"/objects/"+o.id, nil, who...), 404)
		if l := decode[[]any](t, e.do("GET", "/files/"+o.sid+"?detail=full", nil, who...), 200); len(l) != 0 {
			t.Errorf("%s listed: %v", o.name, l)
		}
		decode[map[string]string](t, e.do("DELETE", "/files/"+o.sid+"/"+o.id, nil, who...), 404)
		if got := run(who, o, 403); got["error"] != "Unauthorized file reference" {
			t.Errorf("%s used: %v", o.name, got)
		}
	}
	for _, o := range shared {
		// bob, another user of alice's agent, reads it and runs code on it.
		if b := decodeBytes(t, e.do("GET", "/download/"+o.sid+"/"+o.id, nil, bob...), 200); b != o.content {
			t.Errorf("%s downloaded by bob: %q", o.name, b)
		}
		if m := decode[map[string]any](t, e.do("GET", "/sessions/"+o.sid+"/objects/"+o.id, nil, bob...), 200); m["originalFilename"] != o.name {
			t.Errorf("%s described to bob: %v", o.name, m)
		}
		if l := decode[[]map[string]any](t, e.do("GET", "/files/"+o.sid+"?detail=normalized", nil, bob...), 200); len(l) != 1 || l[0]["name"] != o.name {
			t.Errorf("%s listed to bob: %v", o.name, l)
		}
		if r := run(bob, o, 200); r["stdout"] != o.content {
			t.Errorf("%s used by bob: %v", o.name, r)
		}
		// Only its uploader deletes it.
		decode[map[string]string](t, e.do("DELETE", "/files/"+o.sid+"/"+o.id, nil, bob...), 404)
		decode[map[string]string](t, e.do("DELETE", "/sessions/"+o.sid+"/objects/"+o.id, nil, bob...), 404)
		for _, who := range strangers {
			denied(who, o)
		}
	}
	denied(bob, private)
	if b := decodeBytes(t, e.do("GET", "/download/"+private.sid+"/"+private.id, nil, alice...), 200); b != private.content {
		t.Errorf("alice's own file: %q", b)
	}
	// All of it is alice's to pay for, nothing bob's.
	want := int64(len("agent file") + len("skill file") + len("alice only"))
	if got := e.quota.UsedBy(owner.JWT("t1", "alice")); got != want {
		t.Errorf("alice's quota counts %d bytes, want %d", got, want)
	}
	if got := e.quota.UsedBy(owner.JWT("t1", "bob")); got != 0 {
		t.Errorf("bob's quota counts %d bytes of alice's files", got)
	}
	o := shared[0]
	decode[map[string]any](t, e.do("DELETE", "/files/"+o.sid+"/"+o.id, nil, alice...), 200)
	decode[map[string]string](t, e.do("GET", "/download/"+o.sid+"/"+o.id, nil, bob...), 404)
}

// TestAttackAuthNoneInvalidJWT: with CODEEXEC_AUTH=none and JWTs verified,
// a forged token is refused (401), not served as anonymous; anonymous
// callers do not see a JWT user's files. Fails with the anonymous fallback
// of auth.Authenticate restored.
func TestAttackAuthNoneInvalidJWT(t *testing.T) {
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) {
		a.JWTSecret, a.Audience, a.Issuer, a.None, a.Keys = jwtSecret, "codeapi", "librechat", true, nil
	})
	forged := strings.Replace(bearer(t, "alice")[3], "Bearer ", "", 1)
	forged = forged[:len(forged)-4] + "AAAA"
	got := decode[map[string]string](t, e.do("GET", "/languages", nil, "X-API-Key", "", "Authorization", "Bearer "+forged), 401)
	if !strings.HasPrefix(got["error"], "Unauthorized: invalid JWT:") {
		t.Fatalf("forged JWT under AUTH=none: %v", got)
	}
	up := decode[uploadResult](t, e.uploadAs(bearer(t, "alice"), "/upload", nil, part{"file", "a.txt", []byte("a")}), 200)
	decode[map[string]string](t, e.do("GET", "/download/"+up.StorageSessionID+"/"+up.Files[0].FileID, nil, "X-API-Key", ""), 404)
	decode[map[string]string](t, e.do("GET", "/download/"+up.StorageSessionID+"/"+up.Files[0].FileID, nil, "X-API-Key", "", "Authorization", "Bearer "+forged), 401)
	// Everyone is anonymous here: /health gives the verdict only.
	if h := decode[map[string]any](t, e.do("GET", "/health", nil, "X-API-Key", ""), 200); len(h) != 1 || h["status"] != "ok" {
		t.Fatalf("health under AUTH=none: %v", h)
	}
}

// bearerIn is bearer for a subject of tenant.
func bearerIn(t *testing.T, tenant, sub string) []string {
	return bearerClaims(t, map[string]any{"sub": sub, "tenant_id": tenant})
}

func decodeBytes(t *testing.T, resp *http.Response, status int) string {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	return string(b)
}

// TestAttackOutputNames: files the code names with newlines, terminal
// escape sequences, backslashes ("..\\x") or other control characters are
// not stored; each is reported, quoted, in artifact_truncation (reason
// path), and the well-named file beside them is returned. Fails with the
// output names left unchecked.
func TestAttackOutputNames(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t)
	r := e.ok(map[string]any{"lang": "bash", "code": `set -e
printf x > $'new\nline.txt'
printf x > $'\e[31mred.txt'
printf x > '..\evil.txt'
printf x > $'ctl\x01.txt'
mkdir $'dir\x7f'; printf x > $'dir\x7f/in.txt'
printf ok > ok.txt`})
	if len(r.Files) != 1 || r.Files[0].Name != "ok.txt" {
		t.Fatalf("files: %+v", r.Files)
	}
	tr := r.ArtifactTruncation
	if tr == nil || tr.Reasons["path"] != 5 || tr.SkippedCount != 5 {
		t.Fatalf("truncation: %+v", tr)
	}
	want := []string{`..\\evil.txt`, `ctl\x01.txt`, `dir\x7f/in.txt`, `new\nline.txt`, `\x1b[31mred.txt`}
	got := append([]string(nil), tr.Skipped...)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("skipped %q, want %q", got, want)
	}
	if l := decode[[]string](t, e.do("GET", "/files/"+r.SessionID, nil), 200); len(l) != 1 {
		t.Fatalf("stored: %v", l)
	}
}
