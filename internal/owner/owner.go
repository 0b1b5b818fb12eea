// Package owner names the principals that own stored objects and decides
// who may see an object. It knows nothing of HTTP, tokens or storage
// backends: owners are opaque strings to everything else.
//
// Encodings (none contains ':', so none can be mistaken for the legacy
// "<tenant>:<sub>" owners written before ownership was unambiguous):
//
//	jwt.<base64url(tenant)>.<base64url(sub)>  a JWT subject within its tenant
//	key.<hex>                                  one configured API key
//	anon                                       every caller under CODEEXEC_AUTH=none
package owner

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Anonymous owns what callers store under CODEEXEC_AUTH=none.
const Anonymous = "anon"

var b64 = base64.RawURLEncoding

// JWT is the owner of a JWT subject of tenant.
func JWT(tenant, sub string) string {
	return "jwt." + b64.EncodeToString([]byte(tenant)) + "." + b64.EncodeToString([]byte(sub))
}

// Key is the owner of an API key, from a digest of the key (never the key).
func Key(digest []byte) string { return "key." + hex.EncodeToString(digest) }

// Class is the kind of credential an owner stands for: "jwt", "key" or
// "none" ("" for anything else).
func Class(o string) string {
	switch {
	case strings.HasPrefix(o, "jwt."):
		return "jwt"
	case strings.HasPrefix(o, "key."):
		return "key"
	case o == Anonymous:
		return "none"
	}
	return ""
}

// legacy returns the "<tenant>:<sub>" string the server wrote for a JWT
// owner before this encoding, when that string is unambiguous (neither part
// contains ':').
func legacy(o string) (string, bool) {
	rest, ok := strings.CutPrefix(o, "jwt.")
	if !ok {
		return "", false
	}
	t, s, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	tenant, err1 := b64.DecodeString(t)
	sub, err2 := b64.DecodeString(s)
	if err1 != nil || err2 != nil || strings.ContainsRune(string(tenant), ':') || strings.ContainsRune(string(sub), ':') {
		return "", false
	}
	return string(tenant) + ":" + string(sub), true
}

// Visible reports whether caller may list, read or delete an object owned
// by obj. The server's own work (caller "") sees everything. Objects
// stored before owners were recorded follow their credential class: an
// unowned one was stored with an API key or without authentication and is
// visible to those classes only; a "<tenant>:<sub>" one only to that JWT
// subject (and only when that spelling is unambiguous).
func Visible(obj, caller string) bool {
	switch {
	case caller == "":
		return true
	case obj == caller:
		return true
	case obj == "":
		c := Class(caller)
		return c == "key" || c == "none"
	case strings.ContainsRune(obj, ':'):
		l, ok := legacy(caller)
		return ok && l == obj
	}
	return false
}
