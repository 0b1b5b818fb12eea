//go:build linux

package gvisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/cgroup"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/policy"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// gVisor's host side of one sandbox (gofer, sentry and, on the ptrace
// platform, a stub process per address space with a stub thread per sentry
// thread that entered it) needs many host tasks: a 64-process fork bomb
// peaked at 826. The code's own process count is bounded inside gVisor by
// RLIMIT_NPROC = Limits.Pids; the host pids.max is a backstop sized so
// that the sentry never hits it (if it does, the whole sandbox dies).
const (
	gvisorPidsBase    = 128
	gvisorPidsPerTask = 16
)

// GVisor runs each step in a fresh gVisor sandbox (`runsc run` with an OCI
// bundle generated per run): gVisor's user-space kernel is the boundary
// the code talks to; the host sees a gofer (root) and a sentry (nobody)
// inside a per-run cgroup that bounds memory, pids and CPU.
type GVisor struct {
	cfg     Config
	log     *slog.Logger
	base    *host.Host // instance lock, cgroup tree, workdirs
	rootfs  string     // workRoot/rootfs: the read-only root, built at start
	version string
	slots   chan int
	seq     atomic.Uint64
	mu      sync.RWMutex
	closed  atomic.Bool
}

var _ sandbox.Sandbox = (*GVisor)(nil)

// New claims an instance number like native.New (same lock directory),
// removes what a crashed predecessor left (processes, cgroups, mounts,
// directories) and builds the sandbox root.
func New(cfg Config) (*GVisor, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sandbox: the gVisor backend must run as root")
	}
	if cfg.Runsc == "" {
		cfg.Runsc = "runsc"
	}
	runsc, err := exec.LookPath(cfg.Runsc)
	if err != nil {
		return nil, fmt.Errorf("sandbox: runsc not found (install the Debian package runsc): %w", err)
	}
	cfg.Runsc = runsc
	if cfg.Platform == "" {
		cfg.Platform = "ptrace"
	}
	out, err := exec.Command(runsc, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("sandbox: %s --version: %w", runsc, err)
	}
	version, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")

	lc := cfg.Config
	if err := lc.Normalize(); err != nil {
		return nil, err
	}
	src := "/"
	if lc.RootFS != "" {
		src = lc.RootFS
	}
	log := lc.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg.Config = lc
	b := &host.Host{Cfg: lc, Log: log}
	if err := b.Claim(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			b.Release()
		}
	}()
	if b.CG, err = cgroup.NewTree(lc.CgroupParent, b.Instance); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	g := &GVisor{cfg: cfg, log: log, base: b, rootfs: filepath.Join(b.WorkRoot, "rootfs"), version: version}
	if err := g.cleanup(); err != nil {
		return nil, fmt.Errorf("sandbox: cleaning up after a predecessor: %w", err)
	}
	if err := host.PrepareRunDir(lc.RunDir, b.WorkRoot); err != nil {
		return nil, err
	}
	// Only root (runsc, its gofer) walks in here: not even the uid the
	// code runs as (1000, which may be a real user on the host) may reach
	// the workdirs it owns.
	if err := os.Chmod(b.WorkRoot, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := buildGVisorRoot(src, g.rootfs, lc.Etc); err != nil {
		_ = g.cleanup()
		return nil, fmt.Errorf("sandbox: building the gVisor root: %w", err)
	}
	g.slots = make(chan int, lc.Slots)
	for i := 0; i < lc.Slots; i++ {
		g.slots <- i
	}
	ok = true
	log.Info("sandbox ready", "backend", "gvisor", "instance", b.Instance, "slots", lc.Slots, "runsc", version)
	return g, nil
}

// cleanup removes everything the instance may have left: processes in its
// cgroups (gofers, sentries, stubs) and the cgroups (also those runsc
// itself made in other v1 controllers), processes of a native predecessor,
// workdir mounts and the run directory.
func (g *GVisor) cleanup() error {
	rel := "/" + strings.Trim(g.cfg.CgroupParent, "/") + "/" + strconv.Itoa(g.base.Instance)
	return g.base.Cleanup(func() error { return purgeCgroupDirs(rel) })
}

// purgeCgroupDirs kills and removes rel in every cgroup v1 hierarchy: runsc
// creates the controllers missing from a pre-made cgroup (cpuset, blkio,
// devices, ...) and only removes them when it is not killed first.
func purgeCgroupDirs(rel string) error {
	if _, err := os.Stat(filepath.Join(cgroup.Root, "memory")); err != nil {
		return nil // cgroup v2: runsc uses the one directory we made
	}
	ents, _ := os.ReadDir(cgroup.Root)
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || e.Name() == "unified" {
			continue
		}
		dir := filepath.Join(cgroup.Root, e.Name(), rel)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		errs = append(errs, cgroup.RemoveTree(dir, cgroup.EmptyProcs)...)
	}
	return errors.Join(errs...)
}

// buildGVisorRoot makes the sandbox's root directory: rootDirs as the same
// symlinks (merged /usr) or as mount points for read-only binds, the
// allowlisted /etc entries copied (world-readable files only), synthetic
// passwd/group/hosts/hostname, and empty mount points. Copying /etc once
// keeps the per-run bundle at a handful of mounts, each of which costs
// gVisor a gofer connection.
func buildGVisorRoot(src, dst string, etcExtra []string) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, name := range policy.RootDirs {
		fi, err := os.Lstat(filepath.Join(src, name))
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(src, name))
			if err != nil {
				return err
			}
			if err := os.Symlink(target, filepath.Join(dst, name)); err != nil {
				return err
			}
		case fi.IsDir():
			if err := os.Mkdir(filepath.Join(dst, name), 0o755); err != nil {
				return err
			}
		}
	}
	etc := filepath.Join(dst, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		return err
	}
	for _, pat := range policy.Etc(etcExtra) {
		matches, _ := filepath.Glob(filepath.Join(src, "etc", pat))
		for _, m := range matches {
			if err := copyReadable(m, filepath.Join(etc, filepath.Base(m))); err != nil {
				return err
			}
		}
	}
	synthetic := map[string]string{
		"passwd":   "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:1000:1000:sandbox:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":    "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n",
		"hosts":    "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"hostname": "sandbox\n",
		// A mount point for the host's, bound when Limits.Network.
		"resolv.conf": "",
	}
	for name, content := range synthetic {
		p := filepath.Join(etc, name)
		_ = os.RemoveAll(p)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, d := range []string{"proc", "dev", "sys", "tmp", "mnt/data", "var"} {
		if err := os.MkdirAll(filepath.Join(dst, d), 0o755); err != nil {
			return err
		}
	}
	return os.Symlink("../tmp", filepath.Join(dst, "var/tmp"))
}

// copyReadable copies a file, symlink or tree; regular files that others
// cannot read (keys) are left out, as the code could not read them anyway.
func copyReadable(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case fi.IsDir():
			if fi.Mode().Perm()&0o005 != 0o005 {
				return filepath.SkipDir
			}
			return os.Mkdir(to, fi.Mode().Perm())
		case fi.Mode().IsRegular() && fi.Mode().Perm()&0o004 != 0:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, data, fi.Mode().Perm())
		}
		return nil
	})
}

// NewWorkdir mounts a size-capped tmpfs, like the native backend's.
func (g *GVisor) NewWorkdir(maxBytes int64) (string, func() error, error) {
	return g.base.NewWorkdir(maxBytes)
}

// Describe reports the isolation in force.
func (g *GVisor) Describe() sandbox.Isolation {
	rootfs := "host /usr and allowlisted /etc (copied at start), read-only"
	if g.cfg.RootFS != "" {
		rootfs = g.cfg.RootFS + " (usr, allowlisted etc), read-only"
	}
	return sandbox.Isolation{
		Backend:  "gvisor",
		Runsc:    g.cfg.Runsc + " (" + g.version + ")",
		Platform: g.cfg.Platform,
		Instance: g.base.Instance,
		Slots:    g.cfg.Slots,
		UIDBase:  g.base.HostID(0),
		Kernel:   "gVisor sentry (user-space kernel); one sandbox per step",
		User:     fmt.Sprintf("code runs as uid %d inside gVisor, no capabilities, no_new_privs; host side: gofer (root), sentry (nobody)", policy.UID),
		Cgroup:   g.base.CG.Describe(),
		Network:  "none; a networked run's last step: a network namespace of its own prepared by the server (its egress policy), which gVisor's netstack drives (--network sandbox), never the host's",
		RootFS:   rootfs,
		CPUs:     g.cfg.CPUs,
	}
}

// Close waits for running runs, then removes this instance's sandboxes,
// workdirs, cgroups and lock.
func (g *GVisor) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Swap(true) {
		return nil
	}
	g.base.Closed.Store(true)
	err := g.cleanup()
	g.base.Release()
	return err
}

// Run executes spec, each step in its own gVisor sandbox sharing the run's
// /mnt/data, /tmp and cgroup.
func (g *GVisor) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	if err := sandbox.ValidateSpec(spec); err != nil {
		return sandbox.Result{}, err
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed.Load() {
		return sandbox.Result{}, errors.New("sandbox: closed")
	}
	var slot int
	select {
	case slot = <-g.slots:
	case <-ctx.Done():
		return sandbox.Result{}, fmt.Errorf("sandbox: waiting for a slot: %w", ctx.Err())
	}
	defer func() { g.slots <- slot }()
	return g.run(ctx, spec, spec.Limits.WithDefaults(), slot)
}

func (g *GVisor) run(ctx context.Context, spec sandbox.Spec, lim sandbox.Limits, slot int) (res sandbox.Result, err error) {
	t0 := time.Now()
	seq := g.seq.Add(1)
	runDir := filepath.Join(g.base.WorkRoot, "r"+strconv.FormatUint(seq, 10))
	if err := os.Mkdir(runDir, 0o700); err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(runDir); rerr != nil && err == nil {
			err = fmt.Errorf("sandbox: %w", rerr)
		}
	}()
	// /tmp is a host tmpfs too: size-capped by the kernel, and the files
	// are written before the sandbox starts.
	tmpDir, releaseTmp, err := g.base.NewWorkdir(lim.DiskBytes)
	if err != nil {
		return res, err
	}
	defer func() {
		if rerr := releaseTmp(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err := os.Chmod(tmpDir, 0o1777); err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	if err := writeHostFiles(tmpDir, spec.Files); err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	if err := host.ChownTree(spec.Workdir, policy.UID); err != nil {
		return res, fmt.Errorf("sandbox: chown workdir: %w", err)
	}
	hostPids := int64(gvisorPidsBase + gvisorPidsPerTask*lim.Pids)
	cg, err := g.base.CG.NewRun(slot, cgroup.Limits{Memory: lim.MemoryBytes, Pids: hostPids, CPUs: g.cfg.CPUs})
	if err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	cgPath := "/" + strings.Trim(g.cfg.CgroupParent, "/") + "/" + strconv.Itoa(g.base.Instance) + "/s" + strconv.Itoa(slot)
	defer func() {
		if err := cg.Empty(); err != nil {
			g.log.Error("sandbox cgroup not empty", "err", err)
		}
		if err := purgeCgroupDirs(cgPath); err != nil {
			g.log.Error("sandbox cgroup not removed", "err", err)
		}
		if err := cg.Destroy(); err != nil {
			g.log.Error("sandbox cgroup not removed", "err", err)
		}
	}()

	outR, outW, err := os.Pipe()
	if err != nil {
		return res, err
	}
	defer outR.Close()
	defer outW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		return res, err
	}
	defer errR.Close()
	defer errW.Close()
	sink := sandbox.NewOutputSink(lim.OutputBytes, spec.Stdout, spec.Stderr)
	sink.Start(outR, errR)

	// A networked run's last step (the code's) gets a network namespace of
	// its own, served by spec.Net; runsc removes the addresses it copies
	// into gVisor, so earlier steps (compilers) run without network.
	var netNS, resolv string
	if lim.Network && spec.Net != nil {
		ns, err := newNetNS()
		if err != nil {
			return res, fmt.Errorf("sandbox: network namespace: %w", err)
		}
		defer ns.Close()
		netNS = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())
		if err := spec.Net.Attach(netNS); err != nil {
			return res, fmt.Errorf("sandbox: %w", err)
		}
		resolv = filepath.Join(runDir, "resolv.conf")
		if err := os.WriteFile(resolv, []byte("nameserver "+spec.Net.Nameserver()+"\noptions timeout:2 attempts:2\n"), 0o644); err != nil {
			return res, fmt.Errorf("sandbox: %w", err)
		}
	}

	// Each step is a runsc process of its own; the watchdog kills the
	// current one and whatever of the sandbox outlives it in the cgroup.
	var (
		curMu sync.Mutex
		cur   *exec.Cmd
	)
	fz := startRunscFreezer(spec, g.cfg.Runsc, filepath.Join(runDir, "state"))
	defer fz.end()
	dog := sandbox.Watch(ctx, lim, sink.Overflow(), cg.CPUUsage, func() {
		curMu.Lock()
		if cur != nil {
			_ = cur.Process.Kill()
		}
		curMu.Unlock()
		_ = cgroup.KillProcs(filepath.Join(cgroup.Root, "pids", cgPath, "cgroup.procs"))
		fz.end() // after the kill: a pause in progress must not delay it
	})
	var (
		v        sandbox.Verdict
		ended    bool
		lastExit = -1 // exit code of the last step that ran
		lastStep = -1
		tStart   time.Duration
	)
	endDog := func() {
		if !ended {
			v, ended = dog.End(), true
		}
	}
	defer endDog()
	start := time.Now()
	for i, st := range spec.Steps {
		last := i == len(spec.Steps)-1
		bundle := filepath.Join(runDir, "b"+strconv.Itoa(i))
		stepNS, stepResolv, network := "", "", "none"
		if last && netNS != "" {
			stepNS, stepResolv, network = netNS, resolv, "sandbox"
		}
		stdin, err := g.writeBundle(bundle, spec, lim, i, tmpDir, cgPath, stepNS, stepResolv)
		if err != nil {
			return res, fmt.Errorf("sandbox: bundle: %w", err)
		}
		pidFile := filepath.Join(bundle, "pid")
		// No GSO: the namespace's device is a TUN device without offloads.
		args := []string{"--root", filepath.Join(runDir, "state"), "--platform", g.cfg.Platform, "--oci-seccomp",
			"--network", network, "--gso=false", "--software-gso=false"}
		if fz != nil || spec.Cold {
			// A live sandbox (and a programmatic run: Spec.Cold) talks to
			// the server over the Unix socket the server made in its
			// workdir: gVisor lets it connect to host sockets in its
			// mounts (its private tmpfs, read-only system dirs), never
			// create them.
			args = append(args, "--host-uds", "open")
		}
		id := fmt.Sprintf("codeexec-%d-%d-%d", g.base.Instance, seq, i)
		args = append(args, "run", "--bundle", bundle, "--pid-file", pidFile, id)
		fz.step(id)
		cmd := exec.Command(g.cfg.Runsc, args...)
		// Nothing of the server's environment reaches runsc or its children.
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, outW, errW
		// The sentry runs --attached: it dies with this runsc process,
		// which dies with the server.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		if last {
			dog.ArmCPU()
		}
		lastStep = i
		release := func() {}
		curMu.Lock()
		if stepNS != "" {
			release, err = startRunscNetworked(cmd)
		} else {
			err = cmd.Start()
		}
		if err == nil {
			cur = cmd
		}
		curMu.Unlock()
		stdin.Close()
		if err != nil {
			return res, fmt.Errorf("sandbox: start runsc: %w", err)
		}
		if i == 0 {
			tStart = time.Since(t0)
		}
		dog.StepLimit(st.Timeout)
		cmd.Wait()
		release()
		dog.StepLimit(0)
		curMu.Lock()
		cur = nil
		curMu.Unlock()
		// The sandbox's processes outlive runsc by a few milliseconds.
		if err := cg.Empty(); err != nil {
			return res, fmt.Errorf("sandbox: %w", err)
		}
		lastExit = cmd.ProcessState.ExitCode()
		if dog.HasKilled() {
			break
		}
		if lastExit != 0 {
			if _, err := os.Stat(pidFile); err != nil {
				// runsc failed before the step's process existed.
				return res, fmt.Errorf("sandbox: runsc run failed (%v) for step %q", cmd.ProcessState, st.Name)
			}
			break
		}
	}
	endDog()
	fz.end()
	res.WallTime = time.Since(start)
	outW.Close()
	errW.Close()
	sink.Drain(outR, errR)
	stats, err := cg.Stats()
	if err != nil {
		return res, fmt.Errorf("sandbox: cgroup stats: %w", err)
	}
	res.CPUTime, res.MemoryPeak = stats.CPU, stats.MemPeak
	defer func() {
		g.log.Debug("sandbox run", "backend", "gvisor", "slot", slot, "status", res.Status,
			"first_start", tStart, "done", time.Since(t0))
	}()

	e := sandbox.Ending{Verdict: v, Failed: v.Reason != "" || lastExit != 0, OOMKills: stats.OOMKills, CPUUsed: stats.CPU}
	if e.Failed && lastStep >= 0 {
		res.FailedStep = spec.Steps[lastStep].Name
	}
	switch {
	case v.Reason != "":
		res.ExitCode, res.Signal = 128+int(syscall.SIGKILL), "SIGKILL"
	default:
		// runsc reports a signal death of the step as 128+signal, like a shell.
		res.ExitCode = lastExit
		if lastExit > 128 && lastExit <= 128+64 {
			e.Signal = syscall.Signal(lastExit - 128)
			res.Signal = unix.SignalName(e.Signal)
		}
	}
	res.Status = sandbox.Classify(e)
	return res, nil
}

func gvisorSeccomp() *specs.LinuxSeccomp {
	sc := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchAARCH64},
		Syscalls:      []specs.LinuxSyscall{{Names: policy.DeniedSyscalls, Action: specs.ActErrno}},
	}
	for _, flag := range policy.CloneNamespaceFlags {
		sc.Syscalls = append(sc.Syscalls, specs.LinuxSyscall{Names: []string{"clone"}, Action: specs.ActErrno,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: flag, ValueTwo: flag, Op: specs.OpMaskedEqual}}})
	}
	return sc
}

// writeHostFiles writes spec.Files into the host directory that becomes
// /tmp, owned by the code's uid, never following a link.
func writeHostFiles(tmpDir string, files []sandbox.File) error {
	root, err := os.OpenRoot(tmpDir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, f := range files {
		rel := strings.TrimPrefix(f.Path, "/tmp/")
		parts := strings.Split(rel, "/")
		for j := 1; j < len(parts); j++ {
			d := strings.Join(parts[:j], "/")
			if err := root.Mkdir(d, 0o755); err == nil {
				if err := root.Lchown(d, policy.UID, policy.UID); err != nil {
					return err
				}
			} else if !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("file %s: %w", f.Path, err)
			}
		}
		mode := os.FileMode(f.Mode & 0o777)
		if mode == 0 {
			mode = 0o644
		}
		w, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		_, err = w.Write(f.Data)
		if err == nil {
			err = w.Chown(policy.UID, policy.UID)
		}
		if err == nil {
			err = w.Chmod(mode)
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
	}
	return nil
}

// writeBundle writes the OCI bundle of step i and opens its stdin.
// netNS, when set, is the network namespace the step's sandbox joins, and
// resolv the file bound to its /etc/resolv.conf.
func (g *GVisor) writeBundle(dir string, spec sandbox.Spec, lim sandbox.Limits, i int, tmpDir, cgPath, netNS, resolv string) (*os.File, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	st := spec.Steps[i]
	var stdin *os.File
	var err error
	if len(st.Stdin) == 0 {
		stdin, err = os.Open(os.DevNull)
	} else {
		p := filepath.Join(dir, "stdin")
		if err = os.WriteFile(p, st.Stdin, 0o600); err == nil {
			stdin, err = os.Open(p)
		}
	}
	if err != nil {
		return nil, err
	}
	rlimit := func(typ string, n uint64) specs.POSIXRlimit {
		return specs.POSIXRlimit{Type: typ, Soft: n, Hard: n}
	}
	rlimits := []specs.POSIXRlimit{
		rlimit("RLIMIT_CORE", 0),
		rlimit("RLIMIT_NOFILE", policy.NoFile),
		rlimit("RLIMIT_FSIZE", uint64(lim.FileBytes)),
		// gVisor counts the sandbox's tasks against it (all run as one uid).
		rlimit("RLIMIT_NPROC", uint64(lim.Pids)),
	}
	if i == len(spec.Steps)-1 {
		// As in the native backend: SIGXCPU at the limit, SIGKILL a second later.
		secs := uint64((lim.CPUTime + time.Second - 1) / time.Second)
		rlimits = append(rlimits, specs.POSIXRlimit{Type: "RLIMIT_CPU", Soft: secs, Hard: secs + 1})
	}
	noCaps := &specs.LinuxCapabilities{Bounding: []string{}, Effective: []string{}, Inheritable: []string{}, Permitted: []string{}, Ambient: []string{}}
	env := spec.Env
	if env == nil {
		env = []string{}
	}
	// env resolves argv[0] on the sandbox PATH (127 when not found, as
	// natively) and execs it in place. gVisor adds HOME from passwd to an
	// environment without one: env -i resets it to exactly spec.Env, in
	// order (unless argv[0] looks like an assignment itself).
	args := []string{"/usr/bin/env"}
	switch {
	case !strings.Contains(st.Argv[0], "="):
		args = append(append(args, "-i", "--"), env...)
	case !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "HOME=") }):
		args = append(args, "-u", "HOME", "--")
	default:
		args = append(args, "--")
	}
	args = append(args, st.Argv...)
	ro := []string{"rbind", "ro", "nosuid", "nodev"}
	base := g.cfg.RootFS
	if base == "" {
		base = "/"
	}
	var mounts []specs.Mount
	for _, name := range policy.RootDirs {
		if fi, err := os.Lstat(filepath.Join(g.rootfs, name)); err == nil && fi.IsDir() {
			mounts = append(mounts, specs.Mount{Destination: "/" + name, Type: "bind", Source: filepath.Join(base, name), Options: ro})
		}
	}
	mounts = append(mounts,
		specs.Mount{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "nodev", "noexec"}},
		// gVisor's own sysfs would be mounted otherwise: none at all, as natively.
		specs.Mount{Destination: "/sys", Type: "tmpfs", Source: "tmpfs", Options: []string{"ro", "nosuid", "nodev", "noexec", "size=4k", "mode=0555"}},
		specs.Mount{Destination: "/tmp", Type: "bind", Source: tmpDir, Options: []string{"rbind", "rw", "nosuid", "nodev"}},
		specs.Mount{Destination: "/mnt/data", Type: "bind", Source: spec.Workdir, Options: []string{"rbind", "rw", "nosuid", "nodev"}},
	)
	if resolv != "" {
		mounts = append(mounts, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: resolv, Options: ro})
	}
	s := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User:            specs.User{UID: policy.UID, GID: policy.UID, AdditionalGids: []uint32{}},
			Args:            args,
			Env:             env,
			Cwd:             "/mnt/data",
			Capabilities:    noCaps,
			Rlimits:         rlimits,
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: g.rootfs, Readonly: true},
		Hostname: "sandbox",
		Mounts:   mounts,
		Linux: &specs.Linux{
			CgroupsPath: cgPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
		},
	}
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netNS})
	s.Linux.Seccomp = gvisorSeccomp()
	if netNS != "" {
		gvisorSocketFamilies(s.Linux.Seccomp)
	}
	data, err := json.Marshal(&s)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600)
	}
	if err != nil {
		stdin.Close()
		return nil, err
	}
	return stdin, nil
}

// gvisorSocketFamilies limits a networked step's sockets to AF_UNIX,
// AF_INET and AF_INET6, as natively: no netlink, packet, vsock or alg
// socket, whatever gVisor implements. The errno is EPERM where runsc
// ignores errnoRet, as Debian's 20221219 does.
func gvisorSocketFamilies(sc *specs.LinuxSeccomp) {
	noAF := uint(unix.EAFNOSUPPORT)
	deny := func(op specs.LinuxSeccompOperator, af uint64) {
		sc.Syscalls = append(sc.Syscalls, specs.LinuxSyscall{Names: []string{"socket"}, Action: specs.ActErrno, ErrnoRet: &noAF,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: af, Op: op}}})
	}
	for af := uint64(0); af < unix.AF_INET6; af++ {
		if af != unix.AF_UNIX && af != unix.AF_INET {
			deny(specs.OpEqualTo, af)
		}
	}
	deny(specs.OpGreaterThan, unix.AF_INET6)
}

// newNetNS makes an empty network namespace and returns a handle to it; the
// namespace lives as long as something holds it (the handle, a sandbox).
func newNetNS() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer self.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the goroutine ends locked and its thread is destroyed
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

// startRunscNetworked starts cmd (runsc, whose bundle names a prepared
// network namespace) from a thread of its own in a private mount namespace
// where /proc/sys/net is hidden. runsc up to at least 20221219 takes any
// namespace with /proc/sys/net/core/rmem_default for the host's and refuses
// it; since Linux 6.x every namespace has the file. Nothing else of runsc
// or gVisor reads /proc/sys/net with --network sandbox. The thread lives
// until release is called after cmd.Wait: cmd's Pdeathsig fires when the
// thread that started it ends.
func startRunscNetworked(cmd *exec.Cmd) (release func(), err error) {
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is thrown away with its namespace.
		runtime.LockOSThread()
		err := unix.Unshare(unix.CLONE_NEWNS)
		if err == nil {
			err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
		}
		if err == nil {
			err = unix.Mount("tmpfs", "/proc/sys/net", "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=0555")
		}
		if err == nil {
			err = cmd.Start()
		}
		started <- err
		if err == nil {
			<-done
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return func() { close(done) }, nil
}
