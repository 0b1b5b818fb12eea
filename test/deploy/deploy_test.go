// Package deploy tests the deployment files: the Dockerfile (built and run for real in
// image_test.go), the Compose files, the Cloud Run script, the Helm chart and every shell
// script of the repository.
//
// Tools the tests need are installed when missing (as root, like scripts/install-deps.sh):
// shellcheck and docker-compose from Debian's packages, helm from the Go module proxy.
// With CI=true nothing is skipped: a missing tool that cannot be installed fails the test.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var ci = os.Getenv("CI") == "true"

// The least privilege the sandbox needs in a Docker container, measured on a real
// container (see docs/integration.md, "Privileges"). docker-compose.yml, the Compose
// snippet and TestImage must all use exactly this.
var (
	leastCaps         = []string{"CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID", "SYS_ADMIN"}
	leastSecurityOpts = []string{"apparmor=unconfined", "no-new-privileges:true", "seccomp=unconfined"}
)

// toolsDir keeps tools the tests build (helm) between runs on the same machine.
const toolsDir = "/var/cache/codeexec-tools"

// helmVersion is the helm built from the Go module proxy when none is installed.
const helmVersion = "v3.17.3"

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found from %s: %v", wd, err)
	}
	return root
}

// cmdResult runs a command and returns its combined output.
type cmdSpec struct {
	dir     string
	env     []string // added to os.Environ()
	stdin   string
	timeout time.Duration
}

func runCmd(t *testing.T, spec cmdSpec, name string, args ...string) (string, error) {
	t.Helper()
	if spec.timeout == 0 {
		spec.timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), spec.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = spec.dir
	cmd.Env = append(os.Environ(), spec.env...)
	if spec.stdin != "" {
		cmd.Stdin = strings.NewReader(spec.stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

func mustRun(t *testing.T, spec cmdSpec, name string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, spec, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out, 6000))
	}
	return out
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

var aptUpdate sync.Once

// aptInstall installs Debian packages (root only).
func aptInstall(t *testing.T, pkgs ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("need root to install %v (or install them yourself)", pkgs)
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	aptUpdate.Do(func() {
		out, err := runCmd(t, cmdSpec{env: env, timeout: 5 * time.Minute}, "apt-get", "update", "-q")
		if err != nil {
			t.Logf("apt-get update: %v\n%s", err, tail(out, 2000))
		}
	})
	mustRun(t, cmdSpec{env: env, timeout: 15 * time.Minute},
		"apt-get", append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)...)
}

// needTool returns the path of a command, installing Debian package pkg when it is missing.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Logf("%s missing: installing Debian package %s", name, pkg)
	aptInstall(t, pkg)
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s still missing after installing %s", name, pkg)
	}
	return p
}

func goBin() string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}

var helmOnce struct {
	sync.Once
	path string
	err  string
}

// helmBin returns helm: on PATH, cached in toolsDir, or built from the Go module proxy.
func helmBin(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		if p, err := exec.LookPath("helm"); err == nil {
			helmOnce.path = p
			return
		}
		bin := filepath.Join(toolsDir, "bin")
		p := filepath.Join(bin, "helm")
		if _, err := os.Stat(p); err == nil {
			helmOnce.path = p
			return
		}
		t.Logf("building helm %s from the Go module proxy into %s (once per machine)", helmVersion, bin)
		start := time.Now()
		out, err := runCmd(t, cmdSpec{env: []string{"GOBIN=" + bin, "GOFLAGS=", "CGO_ENABLED=0"}, timeout: 20 * time.Minute},
			goBin(), "install", "helm.sh/helm/v3/cmd/helm@"+helmVersion)
		if err != nil {
			helmOnce.err = "go install helm: " + err.Error() + "\n" + tail(out, 3000)
			return
		}
		t.Logf("helm built in %s", time.Since(start).Round(time.Second))
		helmOnce.path = p
	})
	if helmOnce.path == "" {
		t.Fatal(helmOnce.err)
	}
	return helmOnce.path
}

// yamlDocs parses a YAML stream into JSON-like values (with python3's yaml module,
// Debian's python3-yaml, which docker-compose depends on).
func yamlDocs(t *testing.T, data string) []map[string]any {
	t.Helper()
	needTool(t, "python3", "python3")
	if _, err := runCmd(t, cmdSpec{}, "python3", "-c", "import yaml"); err != nil {
		aptInstall(t, "python3-yaml")
	}
	out, err := runCmd(t, cmdSpec{stdin: data}, "python3", "-c",
		`import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)`)
	if err != nil {
		t.Fatalf("parse YAML: %v\n%s\n--- input:\n%s", err, out, tail(data, 3000))
	}
	var docs []map[string]any
	if err := json.Unmarshal([]byte(out), &docs); err != nil {
		t.Fatalf("parse YAML (json): %v", err)
	}
	return docs
}

// get walks a path of map keys and list indexes in parsed YAML/JSON.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func strList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func sorted(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

func equalSets(a, b []string) bool {
	a, b = sorted(a), sorted(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var execLook = exec.LookPath
