package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/owner"
	"github.com/golang-jwt/jwt/v5"
)

func check(t *testing.T, a *Authenticator, wantOK bool, wantSubject string, headers ...string) {
	t.Helper()
	r := httptest.NewRequest("POST", "/exec", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	p, err := a.Authenticate(r)
	if (err == nil) != wantOK {
		t.Fatalf("headers %v: err=%v, want ok=%v", headers, err, wantOK)
	}
	if err == nil && wantSubject != "" && p.ID != wantSubject {
		t.Fatalf("headers %v: principal %q, want %q", headers, p.ID, wantSubject)
	}
}

func TestAPIKeys(t *testing.T) {
	a, err := New(Config{Keys: []string{"k1", "second-key"}})
	if err != nil {
		t.Fatal(err)
	}
	check(t, a, true, "", "X-API-Key", "k1")
	check(t, a, true, "", "x-api-key", "second-key")
	check(t, a, true, "", "Authorization", "Bearer k1")
	check(t, a, true, "", "Authorization", "bearer second-key")
	check(t, a, true, "", "Authorization", "Basic azE6") // k1:
	check(t, a, false, "")
	check(t, a, false, "", "X-API-Key", "k2")
	check(t, a, false, "", "X-API-Key", "k1x")
	check(t, a, false, "", "X-API-Key", "")
	check(t, a, false, "", "Authorization", "Bearer ")
	check(t, a, false, "", "Authorization", "Bearer wrong")
	check(t, a, false, "", "Authorization", "Basic d3Jvbmc6") // wrong:
	// A wrong key is not rescued by a right one elsewhere: ambiguity is refused.
	check(t, a, false, "", "X-API-Key", "wrong", "Authorization", "Bearer k1")
}

func TestNone(t *testing.T) {
	a, _ := New(Config{None: true})
	check(t, a, true, owner.Anonymous)
	// Legacy LibreChat still sends its old key; with auth off it is ignored.
	check(t, a, true, "", "X-API-Key", "whatever")
	check(t, a, true, "", "Authorization", "Bearer not-a-jwt")
	if !a.Open() {
		t.Fatal("Open() false")
	}
}

func mint(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func libreChatClaims(mod func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": "librechat", "aud": "codeapi", "sub": "65f0aa0000000000000000a1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"jti": "j1", "tenant_id": "legacy", "role": "USER", "principal_source": "librechat_jwt",
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func pemOf(t *testing.T, pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestJWTEdDSA(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	a, err := New(Config{JWTPublicKey: pemOf(t, pub), Audience: "codeapi", Issuer: "librechat", Keys: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	ok := mint(t, jwt.SigningMethodEdDSA, priv, libreChatClaims(nil))
	check(t, a, true, owner.JWT("legacy", "65f0aa0000000000000000a1"), "Authorization", "Bearer "+ok)
	check(t, a, true, "", "X-API-Key", "k") // keys still work beside JWTs

	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	// Each is refused, saying what is wrong with the token.
	bad := map[string]struct{ tok, want string }{
		"wrong key": {mint(t, jwt.SigningMethodEdDSA, otherPriv, libreChatClaims(nil)),
			"invalid JWT: the signature does not verify with this server's key (CODEEXEC_JWT_PUBLIC_KEY or CODEEXEC_JWT_SECRET must match the key LibreChat signs with)"},
		"expired": {mint(t, jwt.SigningMethodEdDSA, priv, libreChatClaims(func(c jwt.MapClaims) { c["exp"] = int64(1700000000) })),
			"invalid JWT: the token expired at 2023-11-14T22:13:20Z"},
		"no exp": {mint(t, jwt.SigningMethodEdDSA, priv, libreChatClaims(func(c jwt.MapClaims) { delete(c, "exp") })),
			"invalid JWT: the token has no exp claim"},
		"wrong audience": {mint(t, jwt.SigningMethodEdDSA, priv, libreChatClaims(func(c jwt.MapClaims) { c["aud"] = "other" })),
			`invalid JWT: the token's audience is "other"; this server requires "codeapi" (CODEEXEC_JWT_AUDIENCE)`},
		"wrong issuer": {mint(t, jwt.SigningMethodEdDSA, priv, libreChatClaims(func(c jwt.MapClaims) { c["iss"] = "evil" })),
			`invalid JWT: the token's issuer is "evil"; this server requires "librechat" (CODEEXEC_JWT_ISSUER)`},
		"no subject": {mint(t, jwt.SigningMethodEdDSA, priv, libreChatClaims(func(c jwt.MapClaims) { delete(c, "sub") })),
			"invalid JWT: the token has no sub claim (the user id)"},
		"alg none": {mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, libreChatClaims(nil)),
			"invalid JWT: the token is signed with none; this server accepts EdDSA"},
		"HS256 with public key as secret": {mint(t, jwt.SigningMethodHS256, []byte(pemOf(t, pub)), libreChatClaims(nil)),
			"invalid JWT: the token is signed with HS256; this server accepts EdDSA"},
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			check(t, a, false, "", "Authorization", "Bearer "+b.tok)
			r := httptest.NewRequest("POST", "/exec", nil)
			r.Header.Set("Authorization", "Bearer "+b.tok)
			_, err := a.Authenticate(r)
			if err == nil || err.Error() != b.want || !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("got %v, want %q", err, b.want)
			}
		})
	}
	// A server without JWT settings says so to a JWT that is no key.
	k, _ := New(Config{Keys: []string{"k"}})
	r := httptest.NewRequest("POST", "/exec", nil)
	r.Header.Set("Authorization", "Bearer "+bad["expired"].tok)
	if _, err := k.Authenticate(r); err == nil || err.Error() != "invalid JWT: this server verifies no JWTs (set CODEEXEC_JWT_PUBLIC_KEY or CODEEXEC_JWT_SECRET), and the bearer value is not one of its API keys" {
		t.Fatalf("JWT to a key-only server: %v", err)
	}
}

func TestJWTRS256AndHS256(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	a, err := New(Config{JWTPublicKey: pemOf(t, &rk.PublicKey), Audience: "codeapi", Issuer: "librechat"})
	if err != nil {
		t.Fatal(err)
	}
	check(t, a, true, owner.JWT("t1", "u"), "Authorization", "Bearer "+mint(t, jwt.SigningMethodRS256, rk, libreChatClaims(func(c jwt.MapClaims) {
		c["tenant_id"], c["sub"] = "t1", "u"
	})))

	h, _ := New(Config{JWTSecret: "s3cret", Audience: "codeapi", Issuer: "librechat"})
	check(t, h, true, owner.JWT("legacy", "65f0aa0000000000000000a1"), "Authorization", "Bearer "+mint(t, jwt.SigningMethodHS256, []byte("s3cret"), libreChatClaims(nil)))
	check(t, h, false, "", "Authorization", "Bearer "+mint(t, jwt.SigningMethodHS256, []byte("other"), libreChatClaims(nil)))
	check(t, h, false, "")
}

// Every spelling of one key is one principal (rate limits and quotas are
// keyed by it): the header that carried it, or Basic's user and password
// fields, change nothing; another key is another principal.
func TestKeyPrincipal(t *testing.T) {
	a, _ := New(Config{Keys: []string{"k1", "k2"}})
	id := func(h ...string) string {
		r := httptest.NewRequest("POST", "/exec", nil)
		for i := 0; i+1 < len(h); i += 2 {
			r.Header.Set(h[i], h[i+1])
		}
		p, err := a.Authenticate(r)
		if err != nil {
			t.Fatalf("%v: %v", h, err)
		}
		return p.ID
	}
	k1 := id("X-API-Key", "k1")
	for _, h := range [][]string{{"Authorization", "Bearer k1"}, {"Authorization", "Basic azE6MQ=="}, // k1:1
		{"Authorization", "Basic azE6Mg=="}, {"Authorization", "Basic eDprMQ=="}} { // k1:2, x:k1
		if got := id(h...); got != k1 {
			t.Fatalf("%v: principal %q, want %q", h, got, k1)
		}
	}
	if k2 := id("X-API-Key", "k2"); k2 == k1 || owner.Class(k2) != "key" {
		t.Fatalf("k2's principal %q (k1's %q)", k2, k1)
	}
}

// Under CODEEXEC_AUTH=none a JWT the server verifies and rejects is 401, not
// anonymous access.
func TestNoneRejectsInvalidJWT(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	a, err := New(Config{None: true, JWTPublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), Audience: "codeapi", Issuer: "librechat"})
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	check(t, a, false, "", "Authorization", "Bearer "+mint(t, jwt.SigningMethodEdDSA, other, libreChatClaims(nil)))
	check(t, a, false, "", "Authorization", "Bearer "+mint(t, jwt.SigningMethodEdDSA, priv, libreChatClaims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })))
	check(t, a, true, owner.JWT("legacy", "65f0aa0000000000000000a1"), "Authorization", "Bearer "+mint(t, jwt.SigningMethodEdDSA, priv, libreChatClaims(nil)))
	check(t, a, true, owner.Anonymous)
}
