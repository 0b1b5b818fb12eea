// Package testenv decides whether a test may skip. Outside CI any skip is
// allowed; with CI=true a skip is a failure unless the test is listed, with
// its reason, in test/skips.txt, the one place where CI's skips are
// accepted. It must not know what any test checks.
package testenv

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// CI reports whether this is a CI run (CI=true, as .ci/run sets it).
func CI() bool { return os.Getenv("CI") == "true" }

// Skip skips t with reason, except in CI where the skip must be listed in
// test/skips.txt: an unlisted skip there fails the test, reason included.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if CI() {
		if why, ok := Allowed(t.Name()); !ok {
			t.Fatalf("CI=true and %s is not listed in test/skips.txt: %s", t.Name(), reason)
		} else {
			t.Skipf("%s (allowed in CI: %s)", reason, why)
		}
	}
	t.Skip(reason)
}

// Skipf is Skip with a format.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	Skip(t, fmt.Sprintf(format, args...))
}

// Rule is one line of test/skips.txt: a test name pattern (path.Match
// syntax, matched against the full name, subtests included) and why it may
// skip in CI.
type Rule struct{ Pattern, Reason string }

var (
	loadOnce sync.Once
	rules    []Rule
	loadErr  error
)

// Allowed reports whether the test named name may skip in CI, and why.
func Allowed(name string) (string, bool) {
	loadOnce.Do(func() { rules, loadErr = Load(ListPath()) })
	if loadErr != nil {
		return "", false
	}
	return Match(rules, name)
}

// Match finds the first rule whose pattern matches name.
func Match(rules []Rule, name string) (string, bool) {
	for _, r := range rules {
		if ok, _ := path.Match(r.Pattern, name); ok {
			return r.Reason, true
		}
	}
	return "", false
}

// ListPath is test/skips.txt at the module's root (found from the working
// directory upwards: go test runs in the package's directory).
func ListPath() string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "test", "skips.txt")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return filepath.Join("test", "skips.txt")
		}
		dir = parent
	}
}

// Load reads a skip list: "PATTERN REASON..." per line, # comments. A rule
// without a reason is an error: every allowed skip says why.
func Load(file string) ([]Rule, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Rule
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pat, reason, _ := strings.Cut(line, " ")
		reason = strings.TrimSpace(reason)
		if reason == "" {
			return nil, fmt.Errorf("%s:%d: %q has no reason", file, n, pat)
		}
		if _, err := path.Match(pat, ""); err != nil {
			return nil, fmt.Errorf("%s:%d: bad pattern %q: %v", file, n, pat, err)
		}
		out = append(out, Rule{pat, reason})
	}
	return out, sc.Err()
}
