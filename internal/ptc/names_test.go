package ptc

import (
	"testing"

	"github.com/codeexec/codeexec/internal/lang"
)

// The identifiers are the client's: these pairs are what @librechat/agents
// 3.9.2's normalizeToPythonIdentifier and normalizeToBashIdentifier return
// (node, test/e2e/clients/v3.9.2).
func TestUnitToolIdents(t *testing.T) {
	py, _ := lang.Lookup("py")
	bash, _ := lang.Lookup("bash")
	for _, c := range []struct{ name, py, bash string }{
		{"get-weather", "get_weather", "get_weather"},
		{"my.tool", "mytool", "my_tool"},
		{"class", "class_tool", "class"},
		{"done", "done", "done_tool"},
		{"3d", "_3d", "_3d"},
		{"a b\tc", "a_b_c", "a_b_c"},
		{"héllo wörld", "hllo_wrld", "hllo_wrld"},
		{"import", "import_tool", "import"},
		{"x\u00a0y", "x_y", "x_y"},
		{"time", "time", "time_tool"},
		{"if", "if_tool", "if_tool"},
		{"ok_name", "ok_name", "ok_name"},
	} {
		if got := Ident(py.Ident, c.name); got != c.py {
			t.Errorf("python %q: %q, want %q", c.name, got, c.py)
		}
		if got := Ident(bash.Ident, c.name); got != c.bash {
			t.Errorf("bash %q: %q, want %q", c.name, got, c.bash)
		}
	}
	js, _ := lang.Lookup("js")
	if _, err := Tools(js, []string{"t"}); err == nil {
		t.Error("tools resolved for a language programmatic tool calling does not run")
	}
}
