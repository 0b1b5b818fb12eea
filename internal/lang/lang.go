// Package lang is the table of languages codeexec runs: ids, source file,
// compile and run steps, and how to read a toolchain's version, and what
// each can do (Live: the stateful kernel runs it). Adding a language is one
// entry in table.go plus its toolchain in scripts/packages.txt. It is data:
// it must not know how or where the steps run.
package lang

import (
	"strings"
	"time"
)

// Paths inside the sandbox that argv templates may refer to.
const (
	CodeDir  = "/tmp/code"  // where the source file is written
	BuildDir = "/tmp/build" // where compiled programs go
	DataDir  = "/mnt/data"  // the working directory with the session's files
)

// Language is one entry of the table. Argv templates may use {src} (the
// source file's path), {dir} (CodeDir), {build} (BuildDir), {bin}
// (BuildDir + "/main") and {class} (see Class); Args of the request are
// appended to Run. Compile steps create BuildDir themselves when they need it.
type Language struct {
	ID       string   // canonical id, as LibreChat sends it ("py")
	Aliases  []string // other accepted ids ("python")
	Name     string   // human name ("Python")
	Source   string   // source file name, e.g. "main.py"
	Compile  []string // optional compile step
	Run      []string // run step
	Version  []string // prints the toolchain version (first non-empty line is used)
	Requires []string // absolute paths that must exist for the language to be available
	Packages []string // Debian packages that provide it, named in "not installed" errors
	Env      []string // extra environment for every step (KEY=VALUE)
	// CompileTimeout bounds the compile step; 0 means DefaultCompileTimeout.
	CompileTimeout time.Duration
	// SourceName, if set, derives the source file name from the code
	// (Java's public class name must match its file).
	SourceName func(code string) string
	// Live: the stateful runtime's kernel runs this language's calls in a
	// session that outlives them (Python in its namespace, Bash as a
	// child of it); programmatic tool calling serves the same languages.
	Live bool
	// Ident is how the client names a tool the code calls in this
	// language (programmatic tool calling): set for the Live languages.
	Ident *IdentRule
	// Class, if set, derives {class} from the code (Java's fully qualified
	// main class); otherwise {class} is the source file name without its
	// extension.
	Class func(code string) string
	// Etc are the /etc entries (globs) its toolchain reads; the sandbox
	// shows them (lang.Etc, the union) and hides the rest of /etc.
	Etc []string
	// Warm names the warm pool's template that runs this language's code
	// in its own interpreter ("python": the pool's templates are Python
	// with PythonPreload imported); "": none.
	Warm string
}

// Dirs places the directories that argv templates refer to. The sandbox
// uses SandboxDirs; tests that run the templates outside a sandbox use
// directories of their own.
type Dirs struct {
	Code  string // {dir}, the directory of {src}
	Build string // {build}; {bin} is Build + "/main"
}

// SandboxDirs are the directories inside the sandbox.
var SandboxDirs = Dirs{Code: CodeDir, Build: BuildDir}

// DefaultCompileTimeout bounds compile steps that do not set their own.
const DefaultCompileTimeout = 30 * time.Second

// Lookup finds a language by id or alias, case-insensitively.
func Lookup(id string) (*Language, bool) {
	l, ok := index[strings.ToLower(strings.TrimSpace(id))]
	return l, ok
}

// All returns the table in its canonical order.
func All() []*Language { return table }

var index = func() map[string]*Language {
	m := map[string]*Language{}
	for _, l := range table {
		m[l.ID] = l
		for _, a := range l.Aliases {
			m[a] = l
		}
	}
	return m
}()

// SourcePath is where the code is written for this language and code.
func (l *Language) SourcePath(code string) string { return l.SourcePathIn(SandboxDirs, code) }

// SourcePathIn is SourcePath with the directories d.
func (l *Language) SourcePathIn(d Dirs, code string) string {
	name := l.Source
	if l.SourceName != nil {
		if n := l.SourceName(code); n != "" {
			name = n
		}
	}
	return d.Code + "/" + name
}

// Expand fills an argv template.
func (l *Language) Expand(tmpl []string, code string) []string {
	return l.ExpandIn(SandboxDirs, tmpl, code)
}

// ExpandIn fills an argv template with the directories d.
func (l *Language) ExpandIn(d Dirs, tmpl []string, code string) []string {
	src := l.SourcePathIn(d, code)
	class := src[strings.LastIndex(src, "/")+1:]
	if i := strings.LastIndex(class, "."); i > 0 {
		class = class[:i]
	}
	if l.Class != nil {
		if c := l.Class(code); c != "" {
			class = c
		}
	}
	r := strings.NewReplacer("{src}", src, "{dir}", d.Code, "{build}", d.Build,
		"{bin}", d.Build+"/main", "{class}", class)
	out := make([]string, len(tmpl))
	for i, a := range tmpl {
		out[i] = r.Replace(a)
	}
	return out
}

// IdentRule is a language's rule for turning a tool's name into the
// identifier the code calls it by, as @librechat/agents' normalizers do:
// white space, '-' and the characters of Separators become '_', other
// characters that are not [A-Za-z0-9_] are dropped, a leading digit gets
// '_', and a Reserved word gets "_tool".
type IdentRule struct {
	Separators string
	Reserved   []string
}

var pyIdent = &IdentRule{Reserved: strings.Fields("False None True and as assert async await break class continue def del elif else except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield")}

var bashIdent = &IdentRule{Separators: ".", Reserved: strings.Fields("if then else elif fi case esac for while until do done in function select time coproc declare typeset local readonly export unset")}

// WarmLanguage is the language whose code the warm template named name
// runs in its own interpreter (Language.Warm).
func WarmLanguage(name string) (*Language, bool) {
	for _, l := range table {
		if name != "" && l.Warm == name {
			return l, true
		}
	}
	return nil, false
}

// Etc is what every language's toolchain needs of /etc (Language.Etc), in
// table order without repeats: the sandbox shows these.
func Etc() []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range table {
		for _, e := range l.Etc {
			if !seen[e] {
				seen[e] = true
				out = append(out, e)
			}
		}
	}
	return out
}
