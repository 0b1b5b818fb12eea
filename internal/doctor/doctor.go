// Package doctor checks whether this host can run codeexec's sandbox and
// says, for each layer, what works, what is missing and how to fix it. It
// probes the host as it is and must not change it.
package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/host"
)

// Check is one finding.
type Check struct {
	Name     string
	OK       bool
	Required bool   // the native sandbox cannot start without it
	Detail   string // what was found
	Fix      string // how to get it, when missing
}

// Options says where the sandbox would live.
type Options struct {
	RunDir string
	RootFS string
	// SkipRun leaves out the end-to-end sandboxed run: for a server, whose
	// own sandbox (and /ready) already runs code.
	SkipRun bool
	// Network is CODEEXEC_NETWORK's mode ("" or "off": none) and Sandbox
	// the backend, for the network check.
	Network string
	Sandbox string
	// Open starts the native backend for the end-to-end run and
	// WarmCompiler finds the warm pool's C compiler: main passes native.New
	// and warm.Compiler (doctor knows no backend); nil reports them missing.
	Open         func(host.Config) (sandbox.Sandbox, error)
	WarmCompiler func() (string, error)
}

// Run performs every check. It needs root, like the server.
func Run(ctx context.Context, o Options) []Check {
	var cs []Check
	add := func(c Check) { cs = append(cs, c) }

	euid := os.Geteuid()
	add(Check{Name: "root", OK: euid == 0, Required: true, Detail: fmt.Sprintf("euid %d", euid),
		Fix: "run codeexec as root (in a container: root inside it, with the capabilities below)"})
	add(userns())
	add(cgroups())
	add(Check{Name: "seccomp", OK: seccompOK(), Required: true, Detail: seccompDetail(),
		Fix: "a kernel with CONFIG_SECCOMP_FILTER, and codeexec built with cgo and libseccomp (apt-get install libseccomp-dev)"})
	fs := filesystems()
	add(Check{Name: "tmpfs", OK: fs["tmpfs"], Required: true, Detail: "needed for /tmp and /mnt/data caps", Fix: "a kernel with tmpfs"})
	add(Check{Name: "overlay", OK: fs["overlay"], Detail: "not required (the sandbox binds the runtime root read-only)", Fix: "modprobe overlay"})
	add(Check{Name: "procfs", OK: fs["proc"], Required: true, Detail: "a private /proc per sandbox",
		Fix: "in Docker the image's entrypoint unmasks /proc; running the binary directly, add --security-opt systempaths=unconfined"})
	if path, err := exec.LookPath("runsc"); err == nil {
		add(Check{Name: "gvisor", OK: true, Detail: path})
	} else {
		add(Check{Name: "gvisor", OK: false, Detail: "runsc not found (optional second backend)", Fix: "apt-get install runsc"})
	}
	add(network(o))
	if cc, err := warmCompiler(o); err == nil {
		add(Check{Name: "warm pool", OK: true, Detail: "helper built with " + cc})
	} else {
		add(Check{Name: "warm pool", OK: false, Detail: "no C compiler to build the warm templates' helper: every run starts cold",
			Fix: "apt-get install gcc"})
	}
	for _, l := range lang.All() {
		ok, why := engine.Available(l)
		c := Check{Name: "lang " + l.ID, OK: ok, Detail: l.Name}
		if !ok {
			c.Fix = why
		}
		add(c)
	}
	if !o.SkipRun {
		add(endToEnd(ctx, o))
	}
	return cs
}

// Print writes the report; it returns false when a required check failed.
func Print(w io.Writer, cs []Check) bool {
	ok := true
	for _, c := range cs {
		mark := "ok  "
		switch {
		case !c.OK && c.Required:
			mark, ok = "FAIL", false
		case !c.OK:
			mark = "warn"
		}
		fmt.Fprintf(w, "[%s] %-14s %s\n", mark, c.Name, c.Detail)
		if !c.OK && c.Fix != "" {
			fmt.Fprintf(w, "       fix: %s\n", c.Fix)
		}
	}
	if ok {
		fmt.Fprintln(w, "\nThe native sandbox can run here.")
	} else {
		fmt.Fprintln(w, "\nThe native sandbox cannot run here. In Docker, the least privilege that works is:\n"+
			"  --cap-drop ALL --cap-add SYS_ADMIN --cap-add SETUID --cap-add SETGID --cap-add CHOWN --cap-add DAC_OVERRIDE\n"+
			"  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt no-new-privileges:true\n"+
			"(see infra/codeexec/docker-compose.snippet.yml for why each is needed).")
	}
	return ok
}

// userns tries to create the namespaces the sandbox uses, as it does.
func userns() Check {
	c := Check{Name: "namespaces", Required: true,
		Fix: "sysctl -w user.max_user_namespaces=15000 (and kernel.unprivileged_userns_clone=1 on Debian kernels); in Docker: --security-opt seccomp=unconfined --cap-add SYS_ADMIN"}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		c.Detail = "user.max_user_namespaces is 0"
		return c
	}
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0x7fff0000, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0x7fff0000, Size: 1}},
	}
	if err := cmd.Run(); err != nil {
		c.Detail = "creating user, mount, pid, net, ipc and uts namespaces failed: " + err.Error()
		return c
	}
	c.OK, c.Detail = true, "user, mount, pid, net, ipc, uts"
	return c
}

// cgroups reports the hierarchy and whether the needed controllers are
// writable.
func cgroups() Check {
	c := Check{Name: "cgroups", Required: true,
		Fix: "mount the cgroup controllers read-write; in Docker the image's entrypoint remounts the container's own cgroup read-write (needs --cap-add SYS_ADMIN)"}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	defer f.Close()
	v1 := map[string]string{}
	v2 := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) {
			continue
		}
		switch fields[sep+1] {
		case "cgroup2":
			if b, err := os.ReadFile(filepath.Join(fields[4], "cgroup.controllers")); err == nil && len(strings.TrimSpace(string(b))) > 0 {
				v2 = fields[4] + " (" + strings.TrimSpace(string(b)) + ")"
			}
		case "cgroup":
			for _, opt := range strings.Split(fields[sep+3], ",") {
				switch opt {
				case "memory", "pids", "cpu", "cpuacct":
					v1[opt] = fields[4]
				}
			}
		}
	}
	switch {
	case len(v1) >= 3:
		var parts []string
		for k, v := range v1 {
			parts = append(parts, k+"="+v)
		}
		c.Detail = "v1: " + strings.Join(parts, " ")
		c.OK = writable(v1["memory"]) && writable(v1["pids"])
		if !c.OK {
			c.Detail += " (not writable)"
		}
	case v2 != "":
		dir := strings.Fields(v2)[0]
		c.Detail = "v2: " + v2
		c.OK = writable(dir)
		if !c.OK {
			c.Detail += " (not writable)"
			break
		}
		// Every run needs memory, pids and cpu in its cgroup: they must be
		// offered here and enabled for sub-cgroups (or enable-able: a
		// cgroup with processes of its own cannot, under v2's rules).
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		sub, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		self, _ := os.ReadFile("/proc/self/cgroup")
		have, enabled := strings.Fields(string(b)), strings.Fields(string(sub))
		var missing, off []string
		for _, want := range []string{"memory", "pids", "cpu"} {
			if !slices.Contains(have, want) {
				missing = append(missing, want)
			} else if !slices.Contains(enabled, want) {
				off = append(off, want)
			}
		}
		c.Detail += "; enabled for sub-cgroups: " + strings.Join(enabled, " ")
		// The real root may have processes and still delegate; a
		// container's (namespace) root may not.
		atNSRoot := strings.TrimSpace(string(self)) == "0::/"
		switch {
		case len(missing) > 0:
			c.OK = false
			c.Detail += "; not delegated here: " + strings.Join(missing, " ")
			c.Fix = "delegate memory, pids and cpu to codeexec's cgroup: systemd Delegate=yes on its unit; Docker: cgroupns=private with the image's entrypoint"
		case len(off) > 0 && atNSRoot && len(bytes.TrimSpace(procs)) > 0:
			c.OK = false
			c.Detail += "; " + strings.Join(off, " ") + " cannot be enabled: this cgroup has processes"
			c.Fix = "move the processes of " + dir + " into a leaf (mkdir " + dir + "/init, write each pid into init/cgroup.procs), then echo '+memory +pids +cpu' > " + dir + "/cgroup.subtree_control; the image's entrypoint does this"
		}
	default:
		c.Detail = "no memory/pids controllers mounted"
	}
	return c
}

func writable(dir string) bool {
	if dir == "" {
		return false
	}
	probe := filepath.Join(dir, fmt.Sprintf("codeexec-doctor-%d", os.Getpid()))
	if err := os.Mkdir(probe, 0o755); err != nil {
		return false
	}
	os.Remove(probe)
	return true
}

func seccompOK() bool {
	b, err := os.ReadFile("/proc/self/status")
	return err == nil && strings.Contains(string(b), "Seccomp:")
}

func seccompDetail() string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Seccomp:") {
			mode := strings.TrimSpace(l[8:])
			if mode == "2" {
				return "available (this process is itself filtered: an outer filter may deny what the sandbox needs)"
			}
			return "available"
		}
	}
	return "not reported by the kernel"
}

func filesystems() map[string]bool {
	out := map[string]bool{}
	b, _ := os.ReadFile("/proc/filesystems")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out[f[len(f)-1]] = true
		}
	}
	return out
}

// endToEnd starts the real sandbox and runs a command in it.
func endToEnd(ctx context.Context, o Options) Check {
	c := Check{Name: "sandbox run", Required: true, Fix: "see the failures above"}
	runDir := o.RunDir
	if runDir == "" {
		runDir = "/run/codeexec"
	}
	if o.Open == nil {
		c.Detail = "no sandbox backend given"
		return c
	}
	box, err := o.Open(host.Config{RunDir: runDir, Slots: 1, RootFS: o.RootFS})
	if err != nil {
		c.Detail = "starting the sandbox: " + err.Error()
		return c
	}
	defer box.Close()
	dir, release, err := box.NewWorkdir(1 << 20)
	if err != nil {
		c.Detail = "working directory: " + err.Error()
		return c
	}
	defer release()
	var out strings.Builder
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := box.Run(ctx, sandbox.Spec{
		Workdir: dir, Env: engine.Env, Stdout: &out, Stderr: &out,
		Steps:  []sandbox.Step{{Name: "run", Argv: []string{"/bin/sh", "-c", "id -u; cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs|Seccomp):'"}}},
		Limits: sandbox.DefaultLimits,
	})
	if err != nil {
		c.Detail = "running: " + err.Error()
		return c
	}
	if res.Status != sandbox.StatusOK {
		c.Detail = fmt.Sprintf("status %s: %s", res.Status, strings.TrimSpace(out.String()))
		return c
	}
	c.OK = true
	c.Detail = fmt.Sprintf("ran as uid %s in %v", strings.Join(strings.Fields(out.String()), " "), res.WallTime.Round(time.Millisecond))
	return c
}

// network checks what a networked run needs: a TUN device the server can
// open (on every backend: gVisor drives the same per-run namespace).
func network(o Options) Check {
	c := Check{Name: "network"}
	if o.Network == "" || o.Network == "off" {
		c.OK, c.Detail = true, "off (CODEEXEC_NETWORK)"
		return c
	}
	c.Required = true
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		c.Detail = "each networked run needs a TUN device: " + err.Error()
		c.Fix = "modprobe tun; in a container: --device /dev/net/tun"
		return c
	}
	f.Close()
	c.OK, c.Detail = true, o.Network+": a network namespace per run, served by the server under the egress policy (/dev/net/tun opens)"
	return c
}

func warmCompiler(o Options) (string, error) {
	if o.WarmCompiler == nil {
		return "", errors.New("no warm pool")
	}
	return o.WarmCompiler()
}
