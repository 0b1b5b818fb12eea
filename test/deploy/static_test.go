package deploy

import (
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ---------------------------------------------------------------------------
// shellcheck on every script of the repository.

func TestShellcheck(t *testing.T) {
	root := repoRoot(t)
	sc := needTool(t, "shellcheck", "shellcheck")
	var scripts []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", ".cache", ".npm", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".sh") {
			scripts = append(scripts, p)
			return nil
		}
		// Extension-less scripts with a shell shebang (e.g. .ci/run).
		if filepath.Ext(p) == "" && d.Type().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return nil
			}
			head := make([]byte, 64)
			n, _ := f.Read(head)
			f.Close()
			if regexp.MustCompile(`^#!\s*/(usr/)?bin/(env\s+)?(ba)?sh\b`).Match(head[:n]) {
				scripts = append(scripts, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"infra/codeexec/deploy_gcr.sh", "infra/codeexec/entrypoint.sh", "scripts/install-deps.sh"} {
		found := false
		for _, s := range scripts {
			found = found || strings.HasSuffix(s, want)
		}
		if !found {
			t.Errorf("script %s not found", want)
		}
	}
	for _, s := range scripts {
		rel, _ := filepath.Rel(root, s)
		t.Run(rel, func(t *testing.T) {
			out, err := runCmd(t, cmdSpec{dir: filepath.Dir(s)}, sc, "-x", "-S", "style", filepath.Base(s))
			if err != nil {
				t.Errorf("shellcheck %s:\n%s", rel, out)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// The Dockerfile: one install script and one package list, health check, entrypoint.

func TestDockerfileStatic(t *testing.T) {
	root := repoRoot(t)
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(df)
	for _, want := range []string{
		"ARG BASE_IMAGE=debian:bookworm-slim",
		"FROM ${BASE_IMAGE} AS deps",
		"bash /src/scripts/install-deps.sh",
		"COPY scripts/install-deps.sh scripts/packages.txt scripts/npm-packages.txt",
		"FROM deps AS build",
		"FROM deps AS runtime",
		"HEALTHCHECK",
		"/health",
		"${CODEEXEC_PORT:-${PORT:-8080}}",
		`ENTRYPOINT ["/usr/local/bin/codeexec-entrypoint"]`,
		`CMD ["serve"]`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// One package list: the Dockerfile installs nothing by name itself.
	if regexp.MustCompile(`apt-get\s+install`).MatchString(s) {
		t.Error("Dockerfile runs apt-get install itself: packages belong in scripts/packages.txt")
	}
	// The image must not pin the port: Cloud Run's PORT has to win.
	if regexp.MustCompile(`(?m)^\s*ENV[^\n]*CODEEXEC_PORT=`).MatchString(s) {
		t.Error("Dockerfile sets CODEEXEC_PORT: PORT (Cloud Run) would be ignored")
	}
	di, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"!go.mod", "!go.sum", "!cmd/", "!internal/", "!scripts/install-deps.sh",
		"!scripts/packages.txt", "!scripts/npm-packages.txt", "!infra/codeexec/entrypoint.sh"} {
		if !strings.Contains(string(di), want+"\n") {
			t.Errorf(".dockerignore does not let %s into the build context", want)
		}
	}
}

// ---------------------------------------------------------------------------
// Compose: `docker-compose config` on both files, and the settings they must carry.

func composeCmds(t *testing.T) [][]string {
	t.Helper()
	var cmds [][]string
	cmds = append(cmds, []string{needTool(t, "docker-compose", "docker-compose")})
	// The compose plugin too, where the docker CLI has it.
	if d, err := execLook("docker"); err == nil {
		if out, err := runCmd(t, cmdSpec{}, d, "compose", "version"); err == nil && strings.Contains(out, "version") {
			cmds = append(cmds, []string{d, "compose"})
		}
	}
	return cmds
}

func TestCompose(t *testing.T) {
	root := repoRoot(t)
	files := map[string]struct {
		path    string
		snippet bool
	}{
		"standalone": {filepath.Join(root, "docker-compose.yml"), false},
		"snippet":    {filepath.Join(root, "infra/codeexec/docker-compose.snippet.yml"), true},
	}
	for _, compose := range composeCmds(t) {
		for name, f := range files {
			t.Run(filepath.Base(compose[0])+"/"+name, func(t *testing.T) {
				env := []string{"LIBRECHAT_CODE_API_KEY=test-key-123", "CODEEXEC_SOURCE_DIR=" + root,
					"COMPOSE_PROJECT_NAME=codeexectest"}
				args := append(compose[1:], "-f", f.path, "config")
				out := mustRun(t, cmdSpec{dir: filepath.Dir(f.path), env: env}, compose[0], args...)
				docs := yamlDocs(t, out)
				if len(docs) != 1 {
					t.Fatalf("config printed %d documents", len(docs))
				}
				svc := get(docs[0], "services", "codeexec")
				if svc == nil {
					t.Fatalf("no services.codeexec in:\n%s", out)
				}
				checkComposeService(t, svc, f.snippet)
			})
		}
		t.Run(filepath.Base(compose[0])+"/snippet-needs-key", func(t *testing.T) {
			path := files["snippet"].path
			env := []string{"LIBRECHAT_CODE_API_KEY=", "CODEEXEC_SOURCE_DIR=" + root}
			args := append(compose[1:], "-f", path, "config")
			out, err := runCmd(t, cmdSpec{dir: filepath.Dir(path), env: env}, compose[0], args...)
			if err == nil || !strings.Contains(out, "LIBRECHAT_CODE_API_KEY") {
				t.Errorf("config without LIBRECHAT_CODE_API_KEY: err=%v, want an error naming it:\n%s", err, out)
			}
		})
	}
	// The snippet is pasted under LibreChat's `services:`: everything after that line must
	// be indented (so it nests under the key it is pasted below).
	data, err := os.ReadFile(files["snippet"].path)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), "\nservices:\n")
	if !ok {
		t.Fatal("snippet has no services: line")
	}
	for _, line := range strings.Split(after, "\n") {
		if line != "" && !strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "#") {
			t.Errorf("snippet line not indented under services: %q", line)
		}
	}
}

func checkComposeService(t *testing.T, svc any, snippet bool) {
	t.Helper()
	if p := get(svc, "privileged"); p == true {
		t.Error("privileged: true; the least-privilege settings are enough")
	}
	if got := strList(get(svc, "cap_drop")); !equalSets(got, []string{"ALL"}) {
		t.Errorf("cap_drop = %v, want [ALL]", got)
	}
	if got := strList(get(svc, "cap_add")); !equalSets(got, leastCaps) {
		t.Errorf("cap_add = %v, want %v", got, leastCaps)
	}
	if got := strList(get(svc, "security_opt")); !equalSets(got, leastSecurityOpts) {
		t.Errorf("security_opt = %v, want %v", got, leastSecurityOpts)
	}
	env, _ := get(svc, "environment").(map[string]any)
	for k, want := range map[string]string{
		"CODEEXEC_MAX_MEMORY_MB":         "2048",
		"CODEEXEC_MAX_EXECUTION_SECONDS": "120",
		"CODEEXEC_STORAGE_DIR":           "/tmp/codeexec",
		"CODEEXEC_PORT":                  "8080",
		"CODEEXEC_DISABLE_NETWORK":       "true",
	} {
		if got := fmt.Sprint(env[k]); got != want {
			t.Errorf("environment %s = %q, want %q", k, got, want)
		}
	}
	if snippet {
		if got := fmt.Sprint(env["CODEEXEC_API_KEY"]); got != "test-key-123" {
			t.Errorf("CODEEXEC_API_KEY = %q, want LibreChat's LIBRECHAT_CODE_API_KEY", got)
		}
		if get(svc, "ports") != nil {
			t.Error("the snippet publishes ports: codeexec should be reachable on the Compose network only")
		}
	}
	vols := fmt.Sprint(get(svc, "volumes"))
	if !strings.Contains(vols, "/tmp/codeexec") {
		t.Errorf("no volume at /tmp/codeexec: %s", vols)
	}
	// Containers on one host take distinct uid bands under locks in one host directory.
	if !strings.Contains(vols, "/run/codeexec-instances") {
		t.Errorf("no host directory for instance locks at /run/codeexec-instances: %s", vols)
	}
	if strings.Contains(vols, "/sys/fs/cgroup") {
		t.Errorf("the host's cgroup tree is mounted: %s", vols)
	}
	if hc := fmt.Sprint(get(svc, "healthcheck", "test")); !strings.Contains(hc, "/health") {
		t.Errorf("healthcheck = %s, want /health", hc)
	}
	if ml := fmt.Sprint(get(svc, "mem_limit")); ml == "<nil>" || ml == "" {
		t.Error("no mem_limit")
	}
}

// ---------------------------------------------------------------------------
// deploy_gcr.sh against a stub gcloud that records its arguments.

const stubGcloud = `#!/usr/bin/env bash
# Records each call (one line of NUL-free, tab-separated arguments) and its stdin.
log=${GCLOUD_STUB_LOG:?}
n=$(wc -l <"$log" 2>/dev/null || echo 0)
printf '%s\t' "$@" >>"$log"
echo >>"$log"
args=" $* "
case $args in
*" versions add "*) cat >"$GCLOUD_STUB_LOG.stdin.$n" ;;
esac
case $args in
*" describe "*"--format=get(status.url)"*) echo "$GCLOUD_STUB_URL" ;;
*" artifacts repositories describe "* | *" iam service-accounts describe "* | *" storage buckets describe "* | *" secrets describe "*)
	# Resources do not exist yet: the script must create them.
	exit "${GCLOUD_STUB_DESCRIBE_RC:-1}" ;;
esac
exit 0
`

type gcloudStub struct {
	dir, log string
}

func newGcloudStub(t *testing.T) gcloudStub {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gcloud"), []byte(stubGcloud), 0o755); err != nil {
		t.Fatal(err)
	}
	return gcloudStub{dir: dir, log: filepath.Join(dir, "calls.log")}
}

func (g gcloudStub) calls(t *testing.T) [][]string {
	t.Helper()
	data, err := os.ReadFile(g.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		out = append(out, strings.Split(strings.TrimSuffix(line, "\t"), "\t"))
	}
	return out
}

// findCall returns the first call whose arguments contain all of words (in order, as
// whole arguments), and its index.
func findCall(calls [][]string, words ...string) (int, []string) {
	for i, c := range calls {
		j := 0
		for _, a := range c {
			if j < len(words) && a == words[j] {
				j++
			}
		}
		if j == len(words) {
			return i, c
		}
	}
	return -1, nil
}

func hasArg(call []string, prefix string) (string, bool) {
	for _, a := range call {
		if strings.HasPrefix(a, prefix) {
			return strings.TrimPrefix(a, prefix), true
		}
	}
	return "", false
}

func TestDeployGCR(t *testing.T) {
	root := repoRoot(t)
	script := filepath.Join(root, "infra/codeexec/deploy_gcr.sh")
	const key = "k3y-that-must-never-show-up-in-argv"
	baseEnv := []string{
		"PROJECT_ID=my-proj", "REGION=europe-west1", "SERVICE_NAME=codeexec", "REPO=codeexec",
		"CODEEXEC_API_KEY=" + key, "CODEEXEC_GCS_BUCKET=my-bucket", "IMAGE_TAG=t1",
	}
	// The health check at the end talks to this loopback server, never to the internet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healthHits := 0
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			healthHits++
			fmt.Fprint(w, `{"status":"ok"}`)
			return
		}
		http.NotFound(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String()

	withStub := func(g gcloudStub, extra ...string) []string {
		return append(append([]string{"PATH=" + g.dir + ":" + os.Getenv("PATH"), "GCLOUD_STUB_LOG=" + g.log,
			"GCLOUD_STUB_URL=" + url}, baseEnv...), extra...)
	}

	t.Run("dry-run", func(t *testing.T) {
		g := newGcloudStub(t)
		out := mustRun(t, cmdSpec{env: withStub(g)}, "bash", script, "--dry-run")
		if c := g.calls(t); len(c) != 0 {
			t.Errorf("--dry-run ran gcloud %d times: %v", len(c), c)
		}
		if strings.Contains(out, key) {
			t.Error("--dry-run printed the API key")
		}
		for _, want := range []string{
			"+ gcloud --project=my-proj --quiet services enable run.googleapis.com",
			"artifacts repositories create codeexec --location=europe-west1 --repository-format=docker",
			"secrets versions add codeexec-api-key --data-file=-",
			"builds submit " + root + " --tag=europe-west1-docker.pkg.dev/my-proj/codeexec/codeexec:t1",
			"run deploy codeexec --region=europe-west1 --image=europe-west1-docker.pkg.dev/my-proj/codeexec/codeexec:t1 --execution-environment=gen2",
			"--set-secrets=CODEEXEC_API_KEY=codeexec-api-key:latest",
			`CODEEXEC_STORAGE_BACKEND=gcs\,CODEEXEC_GCS_BUCKET=my-bucket`,
			"run services describe codeexec --region=europe-west1",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("--dry-run output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("deploy", func(t *testing.T) {
		g := newGcloudStub(t)
		out := mustRun(t, cmdSpec{env: withStub(g)}, "bash", script)
		calls := g.calls(t)
		for _, c := range calls {
			if c[0] != "--project=my-proj" || c[1] != "--quiet" {
				t.Errorf("gcloud call without --project=my-proj --quiet first: %v", c)
			}
			for _, a := range c {
				if strings.Contains(a, key) {
					t.Errorf("the API key is in gcloud's arguments: %v", c)
				}
			}
		}
		order := [][]string{
			{"services", "enable", "run.googleapis.com", "artifactregistry.googleapis.com", "secretmanager.googleapis.com"},
			{"artifacts", "repositories", "describe", "codeexec"},
			{"artifacts", "repositories", "create", "codeexec", "--location=europe-west1", "--repository-format=docker"},
			{"iam", "service-accounts", "create", "codeexec-run"},
			{"storage", "buckets", "create", "gs://my-bucket"},
			{"storage", "buckets", "add-iam-policy-binding", "gs://my-bucket", "--member=serviceAccount:codeexec-run@my-proj.iam.gserviceaccount.com", "--role=roles/storage.objectAdmin"},
			{"secrets", "create", "codeexec-api-key"},
			{"secrets", "versions", "add", "codeexec-api-key", "--data-file=-"},
			{"secrets", "add-iam-policy-binding", "codeexec-api-key", "--role=roles/secretmanager.secretAccessor"},
			{"builds", "submit", root, "--tag=europe-west1-docker.pkg.dev/my-proj/codeexec/codeexec:t1"},
			{"run", "deploy", "codeexec"},
			{"run", "services", "describe", "codeexec"},
		}
		last := -1
		for _, words := range order {
			i, _ := findCall(calls, words...)
			if i < 0 {
				t.Errorf("no gcloud call %v; calls:\n%v", words, calls)
				continue
			}
			if i < last {
				t.Errorf("gcloud %v ran out of order", words)
			}
			last = i
		}
		// The key went to Secret Manager through stdin.
		i, _ := findCall(calls, "secrets", "versions", "add")
		if i >= 0 {
			got, err := os.ReadFile(fmt.Sprintf("%s.stdin.%d", g.log, i))
			if err != nil || string(got) != key {
				t.Errorf("secrets versions add got stdin %q (%v), want the API key", got, err)
			}
		}
		_, deploy := findCall(calls, "run", "deploy", "codeexec")
		for prefix, want := range map[string]string{
			"--execution-environment=": "gen2",
			"--region=":                "europe-west1",
			"--image=":                 "europe-west1-docker.pkg.dev/my-proj/codeexec/codeexec:t1",
			"--set-secrets=":           "CODEEXEC_API_KEY=codeexec-api-key:latest",
			"--service-account=":       "codeexec-run@my-proj.iam.gserviceaccount.com",
			"--port=":                  "8080",
		} {
			if got, ok := hasArg(deploy, prefix); !ok || got != want {
				t.Errorf("run deploy %s%q, want %q (%v)", prefix, got, want, deploy)
			}
		}
		envs, _ := hasArg(deploy, "--set-env-vars=")
		for _, want := range []string{"CODEEXEC_STORAGE_BACKEND=gcs", "CODEEXEC_GCS_BUCKET=my-bucket",
			"CODEEXEC_MAX_MEMORY_MB=2048", "CODEEXEC_MAX_EXECUTION_SECONDS=120"} {
			if !strings.Contains(","+envs+",", ","+want+",") {
				t.Errorf("--set-env-vars=%s lacks %s", envs, want)
			}
		}
		if strings.Contains(envs, "CODEEXEC_API_KEY") || strings.Contains(envs, "CODEEXEC_PORT") {
			t.Errorf("--set-env-vars=%s: the key belongs in --set-secrets, the port is Cloud Run's PORT", envs)
		}
		if !strings.Contains(out, "LIBRECHAT_CODE_BASEURL="+url) {
			t.Errorf("output lacks the LibreChat .env line:\n%s", out)
		}
		if healthHits == 0 {
			t.Error("the script did not check /health of the deployed URL")
		}
	})

	t.Run("existing-resources", func(t *testing.T) {
		g := newGcloudStub(t)
		mustRun(t, cmdSpec{env: withStub(g, "GCLOUD_STUB_DESCRIBE_RC=0")}, "bash", script)
		calls := g.calls(t)
		for _, words := range [][]string{{"artifacts", "repositories", "create"}, {"secrets", "create"},
			{"storage", "buckets", "create"}, {"iam", "service-accounts", "create"}} {
			if i, _ := findCall(calls, words...); i >= 0 {
				t.Errorf("gcloud %v ran although the resource exists", words)
			}
		}
	})

	t.Run("missing-variables", func(t *testing.T) {
		g := newGcloudStub(t)
		out, err := runCmd(t, cmdSpec{env: withStub(g, "PROJECT_ID=", "CODEEXEC_GCS_BUCKET=")}, "bash", script, "--dry-run")
		if err == nil || !strings.Contains(out, "PROJECT_ID") || !strings.Contains(out, "CODEEXEC_GCS_BUCKET") {
			t.Errorf("want a failure naming PROJECT_ID and CODEEXEC_GCS_BUCKET, got err=%v:\n%s", err, out)
		}
		if len(g.calls(t)) != 0 {
			t.Error("gcloud ran despite missing variables")
		}
	})

	t.Run("missing-gcloud", func(t *testing.T) {
		// A PATH with the script's tools but no gcloud.
		bin := t.TempDir()
		for _, tool := range []string{"bash", "dirname", "sed", "cat", "date", "git", "env"} {
			p, err := execLook(tool)
			if err != nil {
				continue
			}
			if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
				t.Fatal(err)
			}
		}
		out, err := runCmd(t, cmdSpec{env: append([]string{"PATH=" + bin}, baseEnv...)}, filepath.Join(bin, "bash"), script, "--dry-run")
		if err == nil || !strings.Contains(out, "gcloud is not installed") {
			t.Errorf("want 'gcloud is not installed', got err=%v:\n%s", err, out)
		}
	})

	t.Run("bad-argument", func(t *testing.T) {
		out, err := runCmd(t, cmdSpec{env: baseEnv}, "bash", script, "--frobnicate")
		if err == nil || !strings.Contains(out, "unknown argument") {
			t.Errorf("want 'unknown argument', got err=%v:\n%s", err, out)
		}
	})
}

// ---------------------------------------------------------------------------
// Helm: lint, template, and the rendered objects.

func TestHelmChart(t *testing.T) {
	root := repoRoot(t)
	helm := helmBin(t)
	chart := filepath.Join(root, "deploy/helm/codeexec")
	home := t.TempDir() // helm's config and cache stay out of $HOME
	env := []string{"HELM_CACHE_HOME=" + home + "/cache", "HELM_CONFIG_HOME=" + home + "/config", "HELM_DATA_HOME=" + home + "/data"}

	out := mustRun(t, cmdSpec{env: env}, helm, "lint", "--strict", chart, "--set", "auth.existingSecret=codeexec-auth")
	if !strings.Contains(out, "0 chart(s) failed") {
		t.Errorf("helm lint:\n%s", out)
	}

	render := func(t *testing.T, sets ...string) map[string]map[string]any {
		t.Helper()
		args := []string{"template", "ce", chart, "--namespace", "ai"}
		for _, s := range sets {
			args = append(args, "--set", s)
		}
		out := mustRun(t, cmdSpec{env: env}, helm, args...)
		objs := map[string]map[string]any{}
		for _, d := range yamlDocs(t, out) {
			objs[fmt.Sprint(d["kind"])] = d
		}
		return objs
	}
	container := func(objs map[string]map[string]any) any {
		return get(objs["Deployment"], "spec", "template", "spec", "containers", 0)
	}
	envOf := func(c any) map[string]any {
		m := map[string]any{}
		for _, e := range get(c, "env").([]any) {
			em := e.(map[string]any)
			if v, ok := em["value"]; ok {
				m[em["name"].(string)] = v
			} else {
				m[em["name"].(string)] = em["valueFrom"]
			}
		}
		return m
	}

	t.Run("defaults", func(t *testing.T) {
		objs := render(t, "auth.existingSecret=codeexec-auth")
		for _, kind := range []string{"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount"} {
			if objs[kind] == nil {
				t.Errorf("no %s rendered", kind)
			}
		}
		if objs["HorizontalPodAutoscaler"] != nil || objs["Secret"] != nil {
			t.Error("HPA or Secret rendered by default")
		}
		c := container(objs)
		if got := get(c, "image"); got != "codeexec:0.1.0" {
			t.Errorf("image = %v", got)
		}
		for probe, path := range map[string]string{"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"} {
			if got := get(c, probe, "httpGet", "path"); got != path {
				t.Errorf("%s path = %v, want %s", probe, got, path)
			}
		}
		if get(c, "resources", "limits", "memory") == nil || get(c, "resources", "limits", "cpu") == nil {
			t.Error("no resource limits")
		}
		if get(c, "securityContext", "privileged") != false || fmt.Sprint(get(c, "securityContext", "runAsUser")) != "0" {
			t.Errorf("securityContext = %v", get(c, "securityContext"))
		}
		if got := strList(get(c, "securityContext", "capabilities", "add")); !equalSets(got, leastCaps) {
			t.Errorf("capabilities.add = %v, want %v", got, leastCaps)
		}
		if got := strList(get(c, "securityContext", "capabilities", "drop")); !equalSets(got, []string{"ALL"}) {
			t.Errorf("capabilities.drop = %v, want [ALL]", got)
		}
		if get(c, "securityContext", "appArmorProfile", "type") != "Unconfined" {
			t.Error("appArmorProfile is not Unconfined")
		}
		if get(c, "securityContext", "seccompProfile", "type") != "Unconfined" {
			t.Error("seccompProfile is not Unconfined")
		}
		e := envOf(c)
		if got := get(e["CODEEXEC_API_KEY"], "secretKeyRef", "name"); got != "codeexec-auth" {
			t.Errorf("CODEEXEC_API_KEY from %v, want Secret codeexec-auth", e["CODEEXEC_API_KEY"])
		}
		for k, want := range map[string]string{"CODEEXEC_MAX_MEMORY_MB": "2048", "CODEEXEC_MAX_EXECUTION_SECONDS": "120",
			"CODEEXEC_STORAGE_BACKEND": "local", "CODEEXEC_STORAGE_DIR": "/tmp/codeexec", "CODEEXEC_PORT": "8080"} {
			if fmt.Sprint(e[k]) != want {
				t.Errorf("env %s = %v, want %s", k, e[k], want)
			}
		}
		// The node-wide instance locks that give each pod of a node its own
		// uid band.
		locks := ""
		for _, v := range get(objs["Deployment"], "spec", "template", "spec", "volumes").([]any) {
			if get(v, "name") == "instance-locks" {
				locks = fmt.Sprint(get(v, "hostPath", "path"), " ", get(v, "hostPath", "type"))
			}
		}
		mounted := false
		for _, m := range get(c, "volumeMounts").([]any) {
			mounted = mounted || get(m, "name") == "instance-locks" && get(m, "mountPath") == "/run/codeexec-instances"
		}
		if locks != "/run/codeexec-instances DirectoryOrCreate" || !mounted {
			t.Errorf("instance locks: volume %q, mounted at /run/codeexec-instances %v", locks, mounted)
		}
		if got := get(objs["Deployment"], "spec", "strategy", "type"); got != "Recreate" {
			t.Errorf("local storage: strategy %v, want Recreate", got)
		}
		if got := get(objs["Service"], "spec", "ports", 0, "port"); fmt.Sprint(got) != "8080" {
			t.Errorf("service port %v", got)
		}
		sel := fmt.Sprint(get(objs["PodDisruptionBudget"], "spec", "selector", "matchLabels"))
		if !strings.Contains(sel, "app.kubernetes.io/name:codeexec") {
			t.Errorf("PDB selector %s", sel)
		}
	})

	t.Run("privileged-fallback", func(t *testing.T) {
		c := container(render(t, "auth.existingSecret=x", "sandbox.privileged=true"))
		if get(c, "securityContext", "privileged") != true || get(c, "securityContext", "capabilities") != nil {
			t.Errorf("securityContext = %v", get(c, "securityContext"))
		}
	})

	t.Run("s3-autoscaling", func(t *testing.T) {
		objs := render(t, "auth.existingSecret=codeexec-auth", "storage.backend=s3", "storage.s3.bucket=sessions",
			"storage.s3.endpoint=https://minio.internal:9000", "storage.s3.credentialsSecret=s3-creds", "autoscaling.enabled=true")
		hpa := objs["HorizontalPodAutoscaler"]
		if hpa == nil {
			t.Fatal("no HPA")
		}
		if get(hpa, "spec", "scaleTargetRef", "name") != get(objs["Deployment"], "metadata", "name") {
			t.Error("HPA does not target the Deployment")
		}
		if get(objs["Deployment"], "spec", "replicas") != nil {
			t.Error("replicas set although the HPA owns them")
		}
		c := container(objs)
		e := envOf(c)
		for k, want := range map[string]string{"CODEEXEC_STORAGE_BACKEND": "s3", "CODEEXEC_S3_BUCKET": "sessions",
			"CODEEXEC_S3_ENDPOINT": "https://minio.internal:9000"} {
			if fmt.Sprint(e[k]) != want {
				t.Errorf("env %s = %v, want %s", k, e[k], want)
			}
		}
		if _, ok := e["CODEEXEC_STORAGE_DIR"]; ok {
			t.Error("CODEEXEC_STORAGE_DIR set with s3")
		}
		if get(c, "envFrom", 0, "secretRef", "name") != "s3-creds" {
			t.Errorf("envFrom = %v", get(c, "envFrom"))
		}
	})

	t.Run("gcs-jwt", func(t *testing.T) {
		objs := render(t, "auth.existingSecret=lc", "auth.mode=jwt", "auth.jwtPublicKeyKey=jwt.pem",
			"storage.backend=gcs", "storage.gcs.bucket=b", "storage.gcs.credentialsSecret=gcs-key", "replicaCount=3")
		c := container(objs)
		e := envOf(c)
		if get(e["CODEEXEC_JWT_PUBLIC_KEY"], "secretKeyRef", "key") != "jwt.pem" {
			t.Errorf("CODEEXEC_JWT_PUBLIC_KEY = %v", e["CODEEXEC_JWT_PUBLIC_KEY"])
		}
		if get(e["CODEEXEC_API_KEY"], "secretKeyRef", "optional") != true {
			t.Error("with jwt the API key must be optional")
		}
		if fmt.Sprint(e["CODEEXEC_GCS_BUCKET"]) != "b" || !strings.HasPrefix(fmt.Sprint(e["GOOGLE_APPLICATION_CREDENTIALS"]), "/var/run/secrets/codeexec-gcs/") {
			t.Errorf("gcs env: %v", e)
		}
		if fmt.Sprint(get(objs["Deployment"], "spec", "replicas")) != "3" {
			t.Error("replicas != 3")
		}
	})

	t.Run("noauth-created-secret", func(t *testing.T) {
		objs := render(t, "auth.mode=none", "networkPolicy.enabled=true")
		e := envOf(container(objs))
		if e["CODEEXEC_AUTH"] != "none" || e["CODEEXEC_API_KEY"] != nil {
			t.Errorf("auth none: env %v", e)
		}
		if objs["NetworkPolicy"] == nil {
			t.Error("no NetworkPolicy")
		}
		objs = render(t, "auth.createSecret=true", "auth.apiKey=abc")
		if get(objs["Secret"], "stringData", "api-key") != "abc" {
			t.Errorf("Secret = %v", objs["Secret"])
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, c := range []struct {
			sets []string
			want string
		}{
			{nil, "auth.existingSecret"},
			{[]string{"auth.existingSecret=x", "autoscaling.enabled=true"}, "storage.backend=local"},
			{[]string{"auth.existingSecret=x", "replicaCount=2"}, "storage.backend=local"},
			{[]string{"auth.existingSecret=x", "storage.backend=s3"}, "storage.s3.bucket"},
			{[]string{"auth.existingSecret=x", "storage.backend=azure"}, "storage.backend must be"},
		} {
			args := []string{"template", "ce", chart}
			for _, s := range c.sets {
				args = append(args, "--set", s)
			}
			out, err := runCmd(t, cmdSpec{env: env}, helm, args...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("helm template %v: err=%v, want an error mentioning %q:\n%s", c.sets, err, c.want, tail(out, 500))
			}
		}
	})
}
