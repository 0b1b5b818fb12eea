package main

import (
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/codeexec/codeexec/internal/testenv"
)

// TestNetworkSettingsRefused: settings that cannot be honoured stop the
// start with what is wrong, rather than run with another network.
func TestNetworkSettingsRefused(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"CODEEXEC_NETWORK": "allowlist"},
			"configuration: CODEEXEC_NETWORK=allowlist needs CODEEXEC_NETWORK_ALLOW (domains and CIDRs, comma-separated)"},
		{map[string]string{"CODEEXEC_NETWORK": "on"},
			`configuration: CODEEXEC_NETWORK: want off, public or allowlist, got "on"`},
		{map[string]string{"CODEEXEC_NETWORK": "allowlist", "CODEEXEC_NETWORK_ALLOW": "pypi.org,bad name"},
			`configuration: CODEEXEC_NETWORK_ALLOW: network allowlist entry "bad name": not a domain name, *.domain, CIDR or address`},
		{map[string]string{"CODEEXEC_NETWORK": "public", "CODEEXEC_NETWORK_KEYS": "*=off;3f9a1c2b0d1=public"},
			"configuration: CODEEXEC_NETWORK_KEYS: entry 2: the ID is the key's first 12 hex digits of SHA-256, or *"},
		{map[string]string{"CODEEXEC_NETWORK": "public", "CODEEXEC_NETWORK_KEYS": "3f9a1c2b0d11 public"},
			"configuration: CODEEXEC_NETWORK_KEYS: entry 1: want ID=POLICY"},
		{map[string]string{"CODEEXEC_NETWORK_KEYS": "*=public"},
			"configuration: CODEEXEC_NETWORK_KEYS narrows the deployment's policy: it needs CODEEXEC_NETWORK public or allowlist"},
		{map[string]string{"CODEEXEC_NETWORK": "public", "CODEEXEC_NETWORK_KEYS": "*=pypi.org,bad name"},
			`configuration: CODEEXEC_NETWORK_KEYS: *: network allowlist entry "bad name": not a domain name, *.domain, CIDR or address`},
		// The key's ID is 2c26b46b68ff ("foo"); a typo leaves no key on the
		// deployment's policy by mistake.
		{map[string]string{"CODEEXEC_API_KEY": "foo", "CODEEXEC_NETWORK": "public", "CODEEXEC_NETWORK_KEYS": "2c26b46b68fe=off"},
			"network policy for key 2c26b46b68fe: no API key has this ID (KeyID: the first 12 hex digits of the key's SHA-256)"},
	} {
		env := c.env
		err := run(context.Background(), []string{"codeexec", "serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || err.Error() != c.want {
			t.Errorf("%v: got %v\nwant %s", env, err, c.want)
		}
	}
}

// TestNetworkServed: with network on, the served binary gives a run its
// own network under the policy, on either backend: a private address is
// denied, said in the answer's stderr and counted in /metrics by reason.
func TestNetworkServed(t *testing.T) {
	t.Run("native", func(t *testing.T) { testNetworkServed(t) })
	t.Run("gvisor", func(t *testing.T) {
		if _, err := exec.LookPath("runsc"); err != nil {
			testenv.Skip(t, "runsc is not installed (Debian package runsc, scripts/packages.txt)")
		}
		testNetworkServed(t, "CODEEXEC_SANDBOX=gvisor")
	})
}

func testNetworkServed(t *testing.T, env ...string) {
	s := startServer(t, append([]string{"CODEEXEC_NETWORK=allowlist", "CODEEXEC_NETWORK_ALLOW=pypi.org", "CODEEXEC_POOL_PYTHON=0"}, env...)...)
	code := `import socket\ns = socket.socket(); s.settimeout(5)\ntry:\n    s.connect(('10.0.0.5', 80)); print('open')\nexcept OSError as e:\n    print(type(e).__name__)`
	status, b := s.request("POST", "/exec", `{"lang":"py","code":"`+code+`"}`)
	body := string(b)
	if status != 200 || !strings.Contains(body, `"stdout":"ConnectionRefusedError\n"`) ||
		!strings.Contains(body, `"stderr":"codeexec: network: connection to 10.0.0.5:80 denied (private address)\n"`) {
		t.Fatalf("%d %s", status, body)
	}
	_, m := s.request("GET", "/metrics", "")
	metrics := string(m)
	if !strings.Contains(metrics, `codeexec_network_denied_total{reason="private address"} 1`) {
		t.Fatalf("metrics:\n%s", metrics)
	}
}
