//go:build linux

package egress

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/gvisor"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/native"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
)

func TestMain(m *testing.M) {
	nsinit.MaybeInit() // the benchmark's sandboxes re-execute this binary
	os.Exit(m.Run())
}

// BenchmarkRunStart is what network costs a run's start: the same trivial
// run (/bin/true) without network, and with its own network (TUN device,
// addresses, netstack, torn down after).
func BenchmarkRunStart(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the sandbox needs root")
	}
	box, err := native.New(host.Config{RunDir: fmt.Sprintf("/run/codeexec-bench-%d", os.Getpid()), Slots: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer box.Close()
	benchRunStart(b, box)
}

// BenchmarkRunStartGVisor is the same on the gVisor backend, where the
// network is the same namespace driven by gVisor's netstack.
func BenchmarkRunStartGVisor(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the sandbox needs root")
	}
	box, err := gvisor.New(gvisor.Config{Config: host.Config{RunDir: fmt.Sprintf("/run/codeexec-bench-%d", os.Getpid()), Slots: 2}})
	if err != nil {
		b.Skip("no gVisor backend here: ", err)
	}
	defer box.Close()
	benchRunStart(b, box)
}

func benchRunStart(b *testing.B, box sandbox.Sandbox) {
	svc := New(Config{Policy: Policy{Mode: ModePublic}})
	for _, networked := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "network"}[networked], func(b *testing.B) {
			for b.Loop() {
				dir, release, err := box.NewWorkdir(1 << 20)
				if err != nil {
					b.Fatal(err)
				}
				var out bytes.Buffer
				spec := sandbox.Spec{Workdir: dir, Steps: []sandbox.Step{{Name: "run", Argv: []string{"/bin/true"}}},
					Stdout: &out, Stderr: &out, Limits: sandbox.Limits{Network: networked}}
				var run *Run
				if networked {
					run = svc.NewRun(nil)
					spec.Net = run
				}
				res, err := box.Run(context.Background(), spec)
				if run != nil {
					run.Close()
				}
				release()
				if err != nil || res.Status != sandbox.StatusOK {
					b.Fatalf("%v %+v %s", err, res, out.Bytes())
				}
			}
		})
	}
}
