package lang

import (
	"regexp"
	"strings"
)

// What the warm pool needs to know of Python (main passes it in): the
// modules its preloaded templates import, and which code needs them.

// PythonPreload is the Python the warm pool runs once in its preloaded
// templates: it imports numpy, pandas and matplotlib (Agg) and exercises
// their lazily loaded parts once; a module that is missing is skipped.
const PythonPreload = `
import importlib
for _m in ("numpy", "pandas", "matplotlib", "matplotlib.pyplot"):
    try:
        importlib.import_module(_m)
    except Exception:
        pass
try:
    import io, pandas, matplotlib.pyplot as plt
    pandas.DataFrame({"a": [1, 2]}).describe()
    _fig = plt.figure()
    plt.plot([0, 1])
    _fig.savefig(io.BytesIO(), format="png")
    plt.close("all")
except Exception:
    pass
`

var (
	importStmt = regexp.MustCompile(`(?m)^[ \t]*(?:from[ \t]+(\S+)[ \t]+import\b|import[ \t]+([^#;\n]+))`)
	dynImport  = regexp.MustCompile(`__import__|importlib|\bimport_module\b|\bexec\(|\beval\(|\brunpy\b`)
)

// PythonImportsBeyond reports whether Python source may import a module
// that is not in stdlib (the interpreter's standard-library modules): the
// warm pool then serves it from a template with PythonPreload imported.
// Conservative: any import of a module not in stdlib, any relative or
// dynamic import counts.
func PythonImportsBeyond(src []byte, stdlib map[string]bool) bool {
	if dynImport.Match(src) {
		return true
	}
	for _, m := range importStmt.FindAllSubmatch(src, -1) {
		names := []string{string(m[1])}
		if len(m[2]) > 0 {
			names = strings.Split(strings.TrimRight(string(m[2]), "\\ \t\r("), ",")
		}
		for _, n := range names {
			n = strings.TrimSpace(n)
			if i := strings.IndexAny(n, " \t"); i >= 0 { // "x as y"
				n = n[:i]
			}
			top, _, _ := strings.Cut(n, ".")
			if top == "" || !stdlib[top] {
				return true
			}
		}
	}
	return false
}
