package ptc

import (
	"regexp"
	"strings"
)

// Tool is one tool the code may call: Name as the client knows it, Ident
// as the code calls it.
type Tool struct {
	Name  string `json:"name"`
	Ident string `json:"ident"`
}

var pyKeywords = set("False None True and as assert async await break class continue def del elif else except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield")

var bashReserved = set("if then else elif fi case esac for while until do done in function select time coproc declare typeset local readonly export unset")

func set(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

var (
	pySep    = regexp.MustCompile(`[-\s\v\p{Z}\x{FEFF}]`) // JavaScript's \s
	bashSep  = regexp.MustCompile(`[-\s\v\p{Z}\x{FEFF}.]`)
	nonIdent = regexp.MustCompile(`[^a-zA-Z0-9_]`)
)

// Ident is the identifier the client tells the model to call a tool by
// (@librechat/agents' normalizeToPythonIdentifier / normalizeToBashIdentifier):
// separators become '_', other characters are dropped, a leading digit gets
// '_', a reserved word gets "_tool".
func Ident(lang, name string) string {
	sep, reserved := pySep, pyKeywords
	if lang == "bash" {
		sep, reserved = bashSep, bashReserved
	}
	n := nonIdent.ReplaceAllString(sep.ReplaceAllString(name, "_"), "")
	if n != "" && n[0] >= '0' && n[0] <= '9' {
		n = "_" + n
	}
	if reserved[n] {
		n += "_tool"
	}
	return n
}
