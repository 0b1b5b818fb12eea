// Package owner names the principals that own stored objects and decides
// who may see an object. It knows nothing of HTTP, tokens or storage
// backends: owners are opaque strings to everything else.
//
// Encodings (none contains ':', so none can be mistaken for the legacy
// "<tenant>:<sub>" owners written before ownership was unambiguous):
//
//	jwt.<base64url(tenant)>.<base64url(sub)>         a JWT subject within its tenant
//	jwt.<base64url(tenant)>.<base64url(sub)>.tenant  the same subject's file that its whole tenant may read
//	key.<hex>                                         one configured API key
//	anon                                              every caller under CODEEXEC_AUTH=none
//
// base64url has no '.', so the parts of a JWT owner are never confused.
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

// tenantSuffix marks a JWT owner whose file its whole tenant may read.
const tenantSuffix = ".tenant"

// Shared is the owner of a file uploaded by uploader that every caller of
// the uploader's tenant may read: agent and skill files, which LibreChat
// shares between the users of an agent (its official service scopes them
// by "<tenant>:<kind>:<resource_id>"). An API key or anonymous caller
// shares them with whoever uses the same credential, as every file it
// stores already is: their owner is unchanged.
func Shared(uploader string) string {
	if _, _, ok := jwtParts(uploader); !ok {
		return uploader
	}
	return uploader + tenantSuffix
}

// Payer is the principal whose quota a file of owner o is charged to: the
// uploader, for a shared file.
func Payer(o string) string {
	if p, ok := strings.CutSuffix(o, tenantSuffix); ok {
		if _, _, ok := jwtParts(p); ok {
			return p
		}
	}
	return o
}

// jwtParts splits a JWT subject's owner into its encoded tenant and
// subject; ok is false for anything else (a shared owner included).
func jwtParts(o string) (tenant, sub string, ok bool) {
	rest, ok := strings.CutPrefix(o, "jwt.")
	if !ok {
		return "", "", false
	}
	tenant, sub, ok = strings.Cut(rest, ".")
	if !ok || strings.ContainsRune(sub, '.') {
		return "", "", false
	}
	return tenant, sub, true
}

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
// by obj: its owner's own (a shared file is its uploader's). The server's
// own work (caller "") sees everything. Objects
// stored before owners were recorded follow their credential class: an
// unowned one was stored with an API key or without authentication and is
// visible to those classes only; a "<tenant>:<sub>" one only to that JWT
// subject (and only when that spelling is unambiguous).
func Visible(obj, caller string) bool {
	switch {
	case caller == "":
		return true
	case obj == caller, Payer(obj) == caller:
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

// Readable reports whether caller may read (list, download, describe, use
// as an input) an object owned by obj: what Visible allows, and a shared
// file of the caller's own tenant to any JWT subject of that tenant. Only
// its uploader may delete it (Visible).
func Readable(obj, caller string) bool {
	if Visible(obj, caller) {
		return true
	}
	p := Payer(obj)
	if p == obj {
		return false
	}
	ot, _, ok1 := jwtParts(p)
	ct, _, ok2 := jwtParts(caller)
	return ok1 && ok2 && ot == ct
}
