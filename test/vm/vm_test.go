package vm

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

var ci = os.Getenv("CI") == "true"

//go:embed guest-init.sh
var guestInit []byte

// initramfsInit is the initramfs's /init: pivot_root (which the sandbox
// needs) refuses the initramfs itself, so the tree is copied into a tmpfs
// and the real init runs from there.
const initramfsInit = `#!/vm/busybox sh
bb=/vm/busybox
$bb mount -t tmpfs -o mode=755 root /newroot
for d in /*; do
	case $d in /newroot|/init|/dev) ;; *) $bb cp -a "$d" /newroot/ ;; esac
done
$bb mkdir -p /newroot/dev /newroot/proc /newroot/sys
exec $bb switch_root /newroot /vm/init
`

// defaultTests are the guest's test binaries and arguments, one line each:
// the cgroup v2 tests of the sandbox (cold, warm, stateful runs) and the
// version-agnostic limit tests that must hold on v2 as well.
var defaultTests = []guestTest{{
	pkg: "./internal/sandbox/native",
	// Not the tests that bound how long a kill takes (TestCPULimit,
	// TestWallTimeout, TestForkBombContained, TestAttackCPUSpin): under
	// TCG everything runs ~10 times slower, a sandbox's setup takes
	// seconds of CPU, and their bounds, right on a real host, would fail
	// or flake here. The host runs them; cpu.stat and the pids limit have
	// v2 tests of their own.
	run: "^(TestEchoAndExitCode|TestMemoryBomb|TestKillMinusOneStaysInside)$",
}, {
	// The cgroup v2 tests (cold and served warm: they compare the two
	// paths, so they live with the warm pool), the freezer and the cgroup
	// namespace.
	pkg: "./internal/sandbox/warm",
	run: "^(TestCgroupV2.*|TestFreezer|TestCgroupNamespace)$",
}, {
	// The attacks of the attack suite that concern limits, and the
	// stateful runtime's, through the API: cold, and served warm (the
	// tests' own backend matrix runs them warm in a child process). The
	// guest has no runsc: not on gVisor.
	pkg:  "./internal/api",
	run:  "^(TestAttack(ForkBomb|MemoryBomb|Daemon|FillDisk|KillAll)|TestStatefulMemoryBombKillsOnlyItsSession)$",
	skip: "/gvisor$",
}, {
	// Served warm: ~70 s each under TCG (a fresh warm pool per test), so
	// only with CODEEXEC_VM_FULL=1; TestCgroupV2Warm checks the warm
	// path's cgroup, memory, pids and CPU on every run of this test.
	pkg:  "./internal/api",
	env:  "CODEEXEC_TEST_WARM=1",
	run:  "^TestAttack(ForkBomb|MemoryBomb|Daemon|FillDisk|KillAll)$",
	also: true,
	full: true,
}, {
	// The image's entrypoint and serve on a v2 "container" (guest_test.go).
	pkg: "./test/vm",
	run: "^TestGuest",
}}

type guestTest struct {
	pkg, run, skip string
	env            string // NAME=VALUE ... for the binary
	also           bool   // the binary of an earlier line: not built again
	full           bool   // only with CODEEXEC_VM_FULL=1
}

// TestCgroupV2VM boots the cgroup v2 guest and fails when any guest test
// fails. CODEEXEC_VM_RUN replaces the -test.run pattern of every guest
// test binary (e.g. '^TestCgroupV2Warm$' runs the warm checks alone) and
// CODEEXEC_VM_SKIP sets their -test.skip; CODEEXEC_VM_FULL=1 adds the
// limit attacks served warm (minutes more). Without qemu it skips, except
// with CI=true.
func TestCgroupV2VM(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the VM harness boots an amd64 Debian kernel")
	}
	if os.Getenv("CODEEXEC_SKIP_VM_TEST") == "1" {
		if !ci {
			t.Skip("CODEEXEC_SKIP_VM_TEST=1 (never skipped when CI=true)")
		}
		t.Log("CODEEXEC_SKIP_VM_TEST=1 is ignored because CI=true")
	}
	for _, bin := range []string{"qemu-system-x86_64", "dpkg-deb", "apt-get"} {
		if _, err := exec.LookPath(bin); err != nil {
			if !ci {
				t.Skipf("%s missing (make deps installs it)", bin)
			}
			t.Fatalf("%s missing: scripts/packages-test.txt lists qemu-system-x86 (make test-deps)", bin)
		}
	}
	var tests []guestTest
	for _, gt := range defaultTests {
		if !gt.full || os.Getenv("CODEEXEC_VM_FULL") == "1" {
			tests = append(tests, gt)
		}
	}
	if p := os.Getenv("CODEEXEC_VM_RUN"); p != "" {
		for i := range tests {
			tests[i].run = p
		}
	}
	if p := os.Getenv("CODEEXEC_VM_SKIP"); p != "" {
		for i := range tests {
			tests[i].skip = p
		}
	}

	root := repoRoot(t)
	cache := filepath.Join(root, ".cache", "vm")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	kernel := fetchKernel(t, cache)
	t.Logf("kernel %s ready after %s", filepath.Base(kernel), time.Since(t0).Round(time.Millisecond))

	t1 := time.Now()
	initrd := filepath.Join(cache, "initrd.cpio")
	buildInitrd(t, root, initrd, tests)
	fi, _ := os.Stat(initrd)
	t.Logf("initramfs (%d MB) built after %s", fi.Size()>>20, time.Since(t1).Round(time.Millisecond))

	t2 := time.Now()
	rc := boot(t, kernel, initrd, 10*time.Minute)
	t.Logf("VM stage: %s (boot and guest tests), %s in all", time.Since(t2).Round(time.Second), time.Since(t0).Round(time.Second))
	if rc != 0 {
		t.Fatalf("guest tests failed (rc=%d); the console is above", rc)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// fetchKernel returns the path of Debian's cloud kernel (6.1 in Debian
// 12: cgroup v2 with cpu, io, memory and pids; 9p absent, virtio as
// modules, which is why the guest's root is an initramfs), downloaded once
// with apt-get download and unpacked into cache (never installed: the
// host's boot configuration is left alone).
func fetchKernel(t *testing.T, cache string) string {
	t.Helper()
	dir := filepath.Join(cache, "kernel")
	resolve := func() (string, error) {
		out, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").Output()
		if m := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*-cloud-amd64)`).FindSubmatch(out); err == nil && m != nil {
			return string(m[1]), nil
		}
		return "", fmt.Errorf("apt-cache depends linux-image-cloud-amd64: %v", err)
	}
	pkg, err := resolve()
	if err != nil {
		// A host whose package lists were never fetched (or were cleaned).
		if out, uerr := exec.Command("apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			t.Logf("apt-get update: %v\n%s", uerr, out)
		}
		pkg, err = resolve()
	}
	if pkg == "" {
		// No package index (offline): whatever kernel is cached.
		if ks, _ := filepath.Glob(filepath.Join(dir, "*", "boot", "vmlinuz-*")); len(ks) > 0 {
			return ks[len(ks)-1]
		}
		t.Fatalf("cannot resolve linux-image-cloud-amd64: %v", err)
	}
	pdir := filepath.Join(dir, pkg)
	if ks, _ := filepath.Glob(filepath.Join(pdir, "boot", "vmlinuz-*")); len(ks) == 1 {
		return ks[0]
	}
	dl, err := os.MkdirTemp(cache, ".dl-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dl)
	// _apt cannot write a private directory: let apt fetch as root.
	run(t, dl, "apt-get", "download", "-o", "APT::Sandbox::User=root", pkg)
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("apt-get download %s: got %v", pkg, debs)
	}
	tmp := filepath.Join(dl, "x")
	run(t, dl, "dpkg-deb", "-x", debs[0], tmp)
	// The guest needs no module (its root is the initramfs): keep the
	// kernel alone.
	if err := os.RemoveAll(filepath.Join(tmp, "lib")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(pdir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil { // a fresh clone has no cache yet
		t.Fatal(err)
	}
	if err := os.Rename(tmp, pdir); err != nil {
		t.Fatal(err)
	}
	ks, _ := filepath.Glob(filepath.Join(pdir, "boot", "vmlinuz-*"))
	if len(ks) != 1 {
		t.Fatalf("%s has no single vmlinuz: %v", pkg, ks)
	}
	return ks[0]
}

func run(t *testing.T, dir string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// buildInitrd writes the guest: the host files of guestPackages, the test
// binaries, busybox and the two inits, as an uncompressed cpio (TCG
// decompresses slowly).
func buildInitrd(t *testing.T, root, out string, tests []guestTest) {
	t.Helper()
	tree := newTree()
	if err := tree.addPackages(guestPackages); err != nil {
		t.Fatal(err)
	}
	for _, f := range guestEtc {
		if err := tree.addHost(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox missing: scripts/packages-test.txt lists busybox-static (make test-deps)")
	}
	tree.addFile("/vm/busybox", bb, 0o755)
	tree.addData("/init", []byte(initramfsInit), 0o755)
	tree.addData("/vm/init", guestInit, 0o755)
	tree.addDir("/newroot")
	tree.addDev("/dev/console", 0o600, 5, 1)

	bindir, err := os.MkdirTemp(filepath.Dir(out), ".bin-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bindir)
	var list strings.Builder
	for _, gt := range tests {
		name := strings.ReplaceAll(strings.Trim(gt.pkg, "./"), "/", "_") + ".test"
		bin := filepath.Join(bindir, name)
		if !gt.also {
			// No -race (under TCG it would multiply the guest's time), no
			// symbol tables (a smaller initramfs to copy at boot).
			cmd := exec.Command("go", "test", "-c", "-ldflags=-s -w", "-o", bin, gt.pkg)
			cmd.Dir = root
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go test -c %s: %v\n%s", gt.pkg, err, b)
			}
			if err := tree.addELF("/vm/bin/"+name, bin); err != nil {
				t.Fatal(err)
			}
		}
		if gt.env != "" {
			list.WriteString(gt.env + " ")
		}
		fmt.Fprintf(&list, "%s -test.v -test.count=1 -test.timeout=8m -test.run %s", name, gt.run)
		if gt.skip != "" {
			fmt.Fprintf(&list, " -test.skip %s", gt.skip)
		}
		list.WriteString("\n")
	}
	tree.addData("/vm/tests", []byte(list.String()), 0o644)
	// The server and the entrypoint where the image has them.
	server := filepath.Join(bindir, "codeexec")
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", server, "./cmd/codeexec")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/codeexec: %v\n%s", err, b)
	}
	if err := tree.addELF("/usr/local/bin/codeexec", server); err != nil {
		t.Fatal(err)
	}
	tree.addFile("/usr/local/bin/codeexec-entrypoint", filepath.Join(root, "infra/codeexec/entrypoint.sh"), 0o755)
	if err := tree.closeLibs(); err != nil {
		t.Fatal(err)
	}
	if err := tree.writeCpio(out); err != nil {
		t.Fatal(err)
	}
}

// boot runs the guest until it powers off (or limit passes), streams its
// console into the test log and returns the guest's result code.
func boot(t *testing.T, kernel, initrd string, limit time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cpus := min(runtime.NumCPU(), 4)
	appendLine := "console=ttyS0 panic=-1 quiet rdinit=/init"
	if ci {
		appendLine += " CI=true" // init's environment
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-accel", "tcg,thread=multi", "-cpu", "max", "-smp", strconv.Itoa(cpus), "-m", "3072",
		"-kernel", kernel, "-initrd", initrd, "-append", appendLine,
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-nic", "none", "-no-reboot")
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rc := -1
	marker := regexp.MustCompile(`^VM-RESULT rc=(\d+)`)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		t.Log(line)
		if m := marker.FindStringSubmatch(line); m != nil {
			rc, _ = strconv.Atoi(m[1])
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the VM did not power off within %s", limit)
	}
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, stderr.Bytes())
	}
	if rc < 0 {
		t.Fatalf("the guest powered off without a result marker\n%s", stderr.Bytes())
	}
	return rc
}
