package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadAndMatch(t *testing.T) {
	f := filepath.Join(t.TempDir(), "skips.txt")
	os.WriteFile(f, []byte("# comment\n\nTestA needs a GPU\nTestLang/* toolchains vary\n"), 0o644)
	rules, err := Load(f)
	if err != nil || len(rules) != 2 {
		t.Fatalf("%v %v", rules, err)
	}
	for name, want := range map[string]string{"TestA": "needs a GPU", "TestLang/py": "toolchains vary", "TestB": "", "TestAB": ""} {
		if got, ok := Match(rules, name); got != want || ok != (want != "") {
			t.Errorf("%s: %q %v, want %q", name, got, ok, want)
		}
	}
	os.WriteFile(f, []byte("TestNoReason\n"), 0o644)
	if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "no reason") {
		t.Fatalf("a rule without a reason was accepted: %v", err)
	}
}

// The repository's own list loads (a malformed one would make every CI
// skip a failure with a confusing message).
func TestRepositoryListLoads(t *testing.T) {
	if _, err := Load(ListPath()); err != nil {
		t.Fatal(err)
	}
}

// TestSkipFailsInCIUnlessListed runs a skipping test in a child process
// with CI=true: unlisted, the skip is a failure naming the list.
func TestSkipFailsInCIUnlessListed(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		Skip(t, "the reason given")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSkipFailsInCIUnlessListed$", "-test.v")
	cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", "CI=true")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not listed in test/skips.txt: the reason given") {
		t.Fatalf("unlisted skip under CI=true: err %v\n%s", err, out)
	}
	cmd = exec.Command(os.Args[0], "-test.run=^TestSkipFailsInCIUnlessListed$", "-test.v")
	cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", "CI=")
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("skip outside CI: err %v\n%s", err, out)
	}
}
