package doctor

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/native"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/warm"
)

func TestMain(m *testing.M) {
	nsinit.MaybeInit()
	os.Exit(m.Run())
}

// TestThisHost: the machine the suite runs on can run the sandbox, and the
// report says so layer by layer.
func TestThisHost(t *testing.T) {
	dir, _ := os.MkdirTemp("", "codeexec-doctor-")
	os.Chmod(dir, 0o711)
	defer os.RemoveAll(dir)
	cs := Run(context.Background(), Options{RunDir: dir, WarmCompiler: warm.Compiler,
		Open: func(c host.Config) (sandbox.Sandbox, error) { return native.New(c) }})
	var out strings.Builder
	if !Print(&out, cs) {
		t.Fatalf("doctor says this host cannot run the sandbox:\n%s", out.String())
	}
	for _, want := range []string{"namespaces", "cgroups", "seccomp", "sandbox run", "lang py"} {
		if !strings.Contains(out.String(), "[ok  ] "+want) {
			t.Errorf("no passing %q check in:\n%s", want, out.String())
		}
	}
	if !strings.Contains(out.String(), "ran as uid 1000 CapEff: 0000000000000000 NoNewPrivs: 1 Seccomp: 2") {
		t.Errorf("end-to-end check did not see the sandboxed identity:\n%s", out.String())
	}
}

func TestPrintFailsOnMissingRequiredLayer(t *testing.T) {
	var out strings.Builder
	if Print(&out, []Check{{Name: "cgroups", Required: true, Detail: "none", Fix: "mount them"}, {Name: "overlay", Detail: "no"}}) {
		t.Fatal("a missing required layer passed")
	}
	if !strings.Contains(out.String(), "fix: mount them") || !strings.Contains(out.String(), "--cap-add SYS_ADMIN") || !strings.Contains(out.String(), "--cap-add SETUID") {
		t.Fatalf("report lacks the fixes:\n%s", out.String())
	}
}

// TestNetworkCheck: network off needs nothing; on, on either backend, it
// needs a TUN device the server can open.
func TestNetworkCheck(t *testing.T) {
	if c := network(Options{Network: "off"}); !c.OK || c.Required || c.Detail != "off (CODEEXEC_NETWORK)" {
		t.Errorf("off: %+v", c)
	}
	_, err := os.Stat("/dev/net/tun")
	for _, sb := range []string{"native", "gvisor"} {
		if c := network(Options{Network: "allowlist", Sandbox: sb}); c.OK != (err == nil && os.Geteuid() == 0) || !c.Required {
			t.Errorf("%s (tun: %v): %+v", sb, err, c)
		}
	}
}
