package ptc

import (
	"regexp"
	"slices"

	"github.com/codeexec/codeexec/internal/lang"
)

// Tool is one tool the code may call: Name as the client knows it, Ident
// as the code calls it.
type Tool struct {
	Name  string `json:"name"`
	Ident string `json:"ident"`
}

var nonIdent = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// Ident is the identifier the client tells the model to call a tool by in
// the language of rule (lang.IdentRule): separators become '_', other
// characters are dropped, a leading digit gets '_', a reserved word gets
// "_tool".
func Ident(rule *lang.IdentRule, name string) string {
	sep := regexp.MustCompile(`[-\s\v\p{Z}\x{FEFF}` + regexp.QuoteMeta(rule.Separators) + `]`) // JavaScript's \s
	n := nonIdent.ReplaceAllString(sep.ReplaceAllString(name, "_"), "")
	if n != "" && n[0] >= '0' && n[0] <= '9' {
		n = "_" + n
	}
	if slices.Contains(rule.Reserved, n) {
		n += "_tool"
	}
	return n
}
