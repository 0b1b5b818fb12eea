// Package auth decides who is calling: a shared API key (X-API-Key, Bearer
// or HTTP Basic), a JWT minted by LibreChat, or nobody when the operator
// explicitly runs without authentication. It answers with a principal and
// must not know what the principal may do: routes and quotas decide that.
package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/codeexec/codeexec/internal/owner"
	"github.com/golang-jwt/jwt/v5"
)

// Principal is an authenticated caller.
type Principal struct {
	// ID is the caller's owner string (package owner): the JWT subject
	// within its tenant, the API key that matched (a digest, so two
	// spellings of one key are one caller), or anonymous. Never empty.
	ID string
	// Method is how the caller authenticated: "api-key", "jwt" or "none".
	Method string
	// Network is the caller's own egress policy, from a JWT's
	// codeexec_network claim or the policy configured for its API key
	// (Config.KeyNetwork): "off", "public" or an allowlist; nil when the
	// caller has none. It can only narrow the deployment's.
	Network *string
}

// ErrUnauthenticated is returned when credentials are missing or wrong.
var ErrUnauthenticated = errors.New("unauthorized")

// TokenError says what is wrong with a bearer token that is a JWT, for the
// operator who has to fix LibreChat's or this server's settings. It names
// only what the token itself carries and the server's public settings.
type TokenError struct{ Problem string }

func (e *TokenError) Error() string { return "invalid JWT: " + e.Problem }

func (e *TokenError) Unwrap() error { return ErrUnauthenticated }

// Config selects what is accepted.
type Config struct {
	Keys         []string
	None         bool   // anonymous requests allowed
	JWTPublicKey string // PEM, or a path to a PEM file
	JWTSecret    string // HS256
	Audience     string
	Issuer       string
	// KeyNetwork gives API keys a network policy of their own (carried in
	// Principal.Network): KeyID of the key -> policy, and "*" -> the
	// policy of every key not named. The IDs keep the keys themselves out
	// of this setting.
	KeyNetwork map[string]string
}

// KeyID names an API key without giving it away: the first 12 hex digits
// of its SHA-256 (printf %s "$KEY" | sha256sum | cut -c1-12).
func KeyID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:6])
}

// Authenticator checks requests. It is immutable and safe for concurrent use.
type Authenticator struct {
	keys [][32]byte // SHA-256 of each key: equal-length constant-time compares
	// keyNetwork[i] is key i's network policy (nil: none).
	keyNetwork []*string
	none       bool
	// audience and issuer are required of JWTs (for error messages).
	audience, issuer string
	verify           jwt.Keyfunc
	methods          []string
	parser           *jwt.Parser
}

// New builds an Authenticator, parsing any JWT key material up front.
func New(c Config) (*Authenticator, error) {
	a := &Authenticator{none: c.None, audience: c.Audience, issuer: c.Issuer}
	for _, k := range c.Keys {
		a.keys = append(a.keys, sha256.Sum256([]byte(k)))
	}
	if err := a.setKeyNetwork(c.KeyNetwork); err != nil {
		return nil, err
	}
	switch {
	case c.JWTPublicKey != "":
		pemText := c.JWTPublicKey
		if !strings.Contains(pemText, "-----BEGIN") {
			b, err := os.ReadFile(pemText)
			if err != nil {
				return nil, fmt.Errorf("JWT public key: %w", err)
			}
			pemText = string(b)
		}
		block, _ := pem.Decode([]byte(strings.ReplaceAll(pemText, `\n`, "\n")))
		if block == nil {
			return nil, errors.New("JWT public key: no PEM block found")
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("JWT public key: %w", err)
		}
		switch k := pub.(type) {
		case ed25519.PublicKey:
			a.methods = []string{"EdDSA"}
			a.verify = func(*jwt.Token) (any, error) { return k, nil }
		case *rsa.PublicKey:
			a.methods = []string{"RS256"}
			a.verify = func(*jwt.Token) (any, error) { return k, nil }
		default:
			return nil, fmt.Errorf("JWT public key: unsupported type %T (want Ed25519 or RSA)", pub)
		}
	case c.JWTSecret != "":
		secret := []byte(c.JWTSecret)
		a.methods = []string{"HS256"}
		a.verify = func(*jwt.Token) (any, error) { return secret, nil }
	}
	if a.verify != nil {
		opts := []jwt.ParserOption{
			jwt.WithValidMethods(a.methods),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(30 * time.Second),
		}
		if c.Audience != "" {
			opts = append(opts, jwt.WithAudience(c.Audience))
		}
		if c.Issuer != "" {
			opts = append(opts, jwt.WithIssuer(c.Issuer))
		}
		a.parser = jwt.NewParser(opts...)
	}
	return a, nil
}

// Open reports whether requests without credentials are accepted.
func (a *Authenticator) Open() bool { return a.none }

// JWT reports whether JWTs are verified.
func (a *Authenticator) JWT() bool { return a.parser != nil }

// Authenticate identifies the caller of r.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	if k := r.Header.Get("X-API-Key"); k != "" {
		if i := a.keyIndex(k); i >= 0 {
			return a.keyPrincipal(i), nil
		}
		if !a.none {
			return Principal{}, ErrUnauthenticated
		}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		cred = strings.TrimSpace(cred)
		switch strings.ToLower(scheme) {
		case "bearer":
			if i := a.keyIndex(cred); i >= 0 {
				return a.keyPrincipal(i), nil
			}
			p, err := a.parseJWT(cred)
			if err == nil {
				return p, nil
			}
			// A JWT this server verifies and rejects is refused even when
			// anonymous access is on: falling back to anonymous would let a
			// forged or expired token act as a different principal. With no
			// JWT key configured, tokens are not verified (nor trusted) and
			// the caller is anonymous.
			if _, isJWT := err.(*TokenError); isJWT && (!a.none || a.parser != nil) {
				return Principal{}, err
			}
		case "basic":
			// A base URL of https://KEY@host sends KEY as the user name.
			if user, pass, ok := r.BasicAuth(); ok {
				if i := a.keyIndex(user); i >= 0 {
					return a.keyPrincipal(i), nil
				}
				if i := a.keyIndex(pass); i >= 0 {
					return a.keyPrincipal(i), nil
				}
			}
		}
		if !a.none {
			return Principal{}, ErrUnauthenticated
		}
	}
	if a.none {
		return Principal{ID: owner.Anonymous, Method: "none"}, nil
	}
	return Principal{}, ErrUnauthenticated
}

// keyIndex returns which configured key k is, or -1. Every key is
// compared, in constant time, whichever matches.
func (a *Authenticator) keyIndex(k string) int {
	if k == "" {
		return -1
	}
	sum := sha256.Sum256([]byte(k))
	found := -1
	for i := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], a.keys[i][:]) == 1 {
			found = i
		}
	}
	return found
}

// keyPrincipal is the caller holding key i: named by a digest of the key's
// digest, so that neither the key nor its plain SHA-256 appears in storage
// metadata or logs.
func (a *Authenticator) keyPrincipal(i int) Principal {
	d := sha256.Sum256(append([]byte("codeexec-owner\x00"), a.keys[i][:]...))
	return Principal{ID: owner.Key(d[:12]), Method: "api-key", Network: a.keyNetwork[i]}
}

// setKeyNetwork gives each key its policy: its own, else "*"'s. An ID
// that names no key, or more than one, is refused (a typo would otherwise
// leave the key on the deployment's policy).
func (a *Authenticator) setKeyNetwork(m map[string]string) error {
	a.keyNetwork = make([]*string, len(a.keys))
	if def, ok := m["*"]; ok {
		for i := range a.keyNetwork {
			a.keyNetwork[i] = &def
		}
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		if id != "*" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		pol := m[id]
		found := -1
		for i, k := range a.keys {
			if hex.EncodeToString(k[:6]) == strings.ToLower(id) {
				if found >= 0 {
					return fmt.Errorf("network policy for key %s: the ID names two API keys", id)
				}
				found = i
			}
		}
		if found < 0 {
			return fmt.Errorf("network policy for key %s: no API key has this ID (KeyID: the first 12 hex digits of the key's SHA-256)", id)
		}
		a.keyNetwork[found] = &pol
	}
	return nil
}

// claims are the parts of LibreChat's token codeexec uses.
type claims struct {
	jwt.RegisteredClaims
	TenantID string  `json:"tenant_id"`
	Network  *string `json:"codeexec_network"`
}

func (a *Authenticator) parseJWT(tok string) (Principal, error) {
	if strings.Count(tok, ".") != 2 {
		return Principal{}, ErrUnauthenticated
	}
	if a.parser == nil {
		return Principal{}, &TokenError{"this server verifies no JWTs (set CODEEXEC_JWT_PUBLIC_KEY or CODEEXEC_JWT_SECRET), and the bearer value is not one of its API keys"}
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(tok, &c, a.verify); err != nil {
		return Principal{}, &TokenError{a.tokenProblem(tok, err, &c)}
	}
	if c.Subject == "" {
		return Principal{}, &TokenError{"the token has no sub claim (the user id)"}
	}
	tenant := c.TenantID
	if tenant == "" {
		tenant = "legacy"
	}
	return Principal{ID: owner.JWT(tenant, c.Subject), Method: "jwt", Network: c.Network}, nil
}

// tokenProblem words a verification error.
func (a *Authenticator) tokenProblem(tok string, err error, c *claims) string {
	if t, _, perr := jwt.NewParser().ParseUnverified(tok, &claims{}); perr == nil && !slices.Contains(a.methods, t.Method.Alg()) {
		return fmt.Sprintf("the token is signed with %s; this server accepts %s", t.Method.Alg(), strings.Join(a.methods, ", "))
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "the signature does not verify with this server's key (CODEEXEC_JWT_PUBLIC_KEY or CODEEXEC_JWT_SECRET must match the key LibreChat signs with)"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token is signed with an algorithm this server does not accept (it accepts " + strings.Join(a.methods, ", ") + ")"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the token has no exp claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		exp := "?"
		if c.ExpiresAt != nil {
			exp = c.ExpiresAt.UTC().Format(time.RFC3339)
		}
		return "the token expired at " + exp
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "the token is not valid yet (check the clocks)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fmt.Sprintf("the token's audience is %q; this server requires %q (CODEEXEC_JWT_AUDIENCE)", strings.Join(c.Audience, ","), a.audience)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fmt.Sprintf("the token's issuer is %q; this server requires %q (CODEEXEC_JWT_ISSUER)", c.Issuer, a.issuer)
	}
	return "the token does not verify"
}
