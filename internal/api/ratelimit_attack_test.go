package api

import (
	"encoding/base64"
	"net/http"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
)

// TestAttackRateLimitRespelled: a caller's rate limit is keyed by who it
// is, not by the bytes of its credential. One API key sent as X-API-Key,
// Bearer, Basic user with any password (curl -u KEY:1, -u KEY:2) or Basic
// password, and one JWT subject's freshly minted tokens, each share one
// bucket; another key has its own. Fails with callerKey hashing the raw
// header again.
func TestAttackRateLimitRespelled(t *testing.T) {
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) {
		a.JWTSecret, a.Audience, a.Issuer = jwtSecret, "codeapi", "librechat"
		a.Keys = append(a.Keys, otherKey)
	})
	e.server().Rates.Exec = admission.NewLimiter(admission.RateLimit{N: 2, Window: time.Hour})
	basic := func(user, pass string) []string {
		return []string{"X-API-Key", "", "Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
	}
	run := func(status int, hdr ...string) {
		t.Helper()
		resp := e.post("/exec", map[string]any{"lang": "bash", "code": "echo ok"}, hdr...)
		if status == http.StatusTooManyRequests {
			if got := decode[map[string]any](t, resp, status); got["error"] != "rate_limited" {
				t.Fatalf("%v: %v", hdr, got)
			}
			return
		}
		assertOK(t, decode[execResult](t, resp, status))
	}
	run(200, basic(testKey, "1")...)
	run(200, basic(testKey, "2")...)
	for _, hdr := range [][]string{basic(testKey, "3"), basic("x", testKey), {"X-API-Key", testKey},
		{"X-API-Key", "", "Authorization", "Bearer " + testKey}} {
		run(http.StatusTooManyRequests, hdr...)
	}
	run(200, "X-API-Key", otherKey)
	// One JWT subject: every token it is given is the same caller.
	run(200, bearerClaims(t, map[string]any{"sub": "alice", "tenant_id": "t1", "jti": "1"})...)
	run(200, bearerClaims(t, map[string]any{"sub": "alice", "tenant_id": "t1", "jti": "2"})...)
	run(http.StatusTooManyRequests, bearerClaims(t, map[string]any{"sub": "alice", "tenant_id": "t1", "jti": "3"})...)
	run(200, bearer(t, "bob")...)
}
