package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
)

// TestWrongMethodIs405 asks known paths with methods they do not serve.
func TestWrongMethodIs405(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ method, path, allow string }{
		{"GET", "/exec", "POST"},
		{"PUT", "/v1/exec", "POST"},
		{"POST", "/health", "GET, HEAD"},
		{"POST", "/files/abc", "GET, HEAD"},
		{"PATCH", "/sessions/abc", "GET, HEAD, DELETE"},
	} {
		resp := e.do(tc.method, tc.path, nil)
		got := decode[map[string]string](t, resp, http.StatusMethodNotAllowed)
		want := "method " + tc.method + " not allowed on " + stripV1(tc.path) + "; allowed: " + tc.allow
		if resp.Header.Get("Allow") != tc.allow || got["error"] != want {
			t.Errorf("%s %s: Allow %q, %v", tc.method, tc.path, resp.Header.Get("Allow"), got)
		}
	}
	got := decode[map[string]string](t, e.do("GET", "/nothing/here", nil), http.StatusNotFound)
	if got["error"] != "no such endpoint: GET /nothing/here" {
		t.Errorf("unknown path: %v", got)
	}
}

func stripV1(p string) string {
	if len(p) > 3 && p[:4] == "/v1/" {
		return p[3:]
	}
	return p
}

// TestJWTErrorsSayWhatIsWrong: a LibreChat operator with a wrong audience
// or secret learns which from the 401.
func TestJWTErrorsSayWhatIsWrong(t *testing.T) {
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) {
		a.JWTSecret, a.Audience, a.Issuer = "s3cret", "codeapi", "librechat"
	})
	tok := func(secret, aud string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "u1", "aud": aud, "iss": "librechat", "exp": time.Now().Add(time.Minute).Unix(),
		}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct{ tok, want string }{
		{tok("s3cret", "other"), `Unauthorized: invalid JWT: the token's audience is "other"; this server requires "codeapi" (CODEEXEC_JWT_AUDIENCE)`},
		{tok("wrong", "codeapi"), "Unauthorized: invalid JWT: the signature does not verify with this server's key (CODEEXEC_JWT_PUBLIC_KEY or CODEEXEC_JWT_SECRET must match the key LibreChat signs with)"},
		{"not-a-key", "Unauthorized: a valid API key (X-API-Key or Authorization: Bearer) is required"},
	} {
		got := decode[map[string]string](t, e.do("GET", "/languages", nil, "X-API-Key", "", "Authorization", "Bearer "+tc.tok), http.StatusUnauthorized)
		if got["error"] != tc.want {
			t.Errorf("got %q, want %q", got["error"], tc.want)
		}
	}
	decode[[]languageOut](t, e.do("GET", "/languages", nil, "X-API-Key", "", "Authorization", "Bearer "+tok("s3cret", "codeapi")), http.StatusOK)
}

// TestHealthStaysUpWhileDraining: /health is liveness (200, draining
// said), /ready and the API answer 503.
func TestHealthStaysUpWhileDraining(t *testing.T) {
	e := newEnv(t)
	e.srv.Config.Handler.(*Server).Drain()
	h := decode[map[string]any](t, e.do("GET", "/health", nil), http.StatusOK)
	if h["status"] != "ok" || h["draining"] != true {
		t.Fatalf("health while draining: %v", h)
	}
	decode[map[string]string](t, e.do("GET", "/ready", nil), http.StatusServiceUnavailable)
	if got := decode[map[string]string](t, e.do("POST", "/exec", nil), http.StatusServiceUnavailable); got["error"] != "Service is shutting down" {
		t.Fatalf("exec while draining: %v", got)
	}
}
