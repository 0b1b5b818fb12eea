//go:build linux

package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	idRange = 65536 // uids/gids mapped into one sandbox
	// initThreads is headroom in pids.max for init's own Go threads, which
	// count against the limit like the code's processes and threads.
	initThreads = 16
)

// Linux runs specs in Linux namespaces (user, mount, pid, ipc, uts, net)
// with cgroup limits, a private read-only root and a seccomp filter. It
// must run as root.
type Linux struct {
	*host
	exe   *os.File // this binary, re-executed as the sandbox init
	slots chan int
	// mu is held shared by each Run and exclusively by Close, which so
	// waits for running runs.
	mu   sync.RWMutex
	warm *warmPool // nil when LinuxConfig.Warm.Python is 0
}

var _ Sandbox = (*Linux)(nil)

// NewLinux claims an instance number K (a host-wide lock), removes whatever
// a crashed predecessor with the same K left behind (processes, cgroups,
// workdir mounts), and prepares RunDir.
func NewLinux(cfg LinuxConfig) (*Linux, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sandbox: the Linux backend must run as root")
	}
	if !seccompAvailable {
		return nil, loadSeccomp(false)
	}
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l := &Linux{host: &host{cfg: cfg, log: log}}
	lo, hi := l.instanceRange(0), l.instanceRange(cfg.MaxInstances)
	if err := checkSubIDOverlap(lo, hi); err != nil {
		return nil, err
	}
	if err := l.claim(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			l.lock.Close()
		}
	}()
	cg, err := newCgroupTree(cfg.CgroupParent, l.instance)
	if err == nil {
		err = usable(cg)
	}
	switch {
	case err == nil:
		l.cg = cg
	case cfg.AllowDegraded:
		log.Warn("sandbox DEGRADED: no usable cgroups; limits fall back to rlimits and the warm pool is off", "err", err)
		l.cg, l.degraded = noCgroups{}, true
		cfg.Warm = WarmConfig{}
		l.cfg.Warm = WarmConfig{}
	default:
		return nil, fmt.Errorf("sandbox: no usable cgroups (%w); fix the host (codeexec doctor), or set CODEEXEC_SANDBOX_ALLOW_DEGRADED=true to run with rlimits only", err)
	}
	if err := l.cleanup(); err != nil {
		return nil, fmt.Errorf("sandbox: cleaning up after a predecessor: %w", err)
	}
	if err := prepareRunDir(cfg.RunDir, l.workRoot); err != nil {
		return nil, err
	}
	exe, err := openSelf()
	if err != nil {
		return nil, err
	}
	l.exe = exe
	l.slots = make(chan int, cfg.Slots)
	for i := 0; i < cfg.Slots; i++ {
		l.slots <- i
	}
	if cfg.Warm.Python > 0 {
		l.warm, err = newWarmPool(l, cfg.Warm)
		switch {
		case errors.Is(err, errNoHelper):
			log.Warn("warm pool off: every run starts cold", "err", err)
			l.cfg.Warm = WarmConfig{}
		case err != nil:
			l.exe.Close()
			return nil, err
		}
	}
	ok = true
	log.Info("sandbox ready", "instance", l.instance, "slots", cfg.Slots, "uid_base", l.hostID(0))
	return l, nil
}

// normalize fills LinuxConfig's defaults and checks it; both backends
// share it.
func (cfg *LinuxConfig) normalize() error {
	if cfg.RunDir == "" || !filepath.IsAbs(cfg.RunDir) {
		return fmt.Errorf("sandbox: RunDir must be an absolute path, got %q", cfg.RunDir)
	}
	cfg.RunDir = filepath.Clean(cfg.RunDir)
	if cfg.Slots <= 0 {
		cfg.Slots = 2
	}
	if cfg.Slots > MaxSlots {
		return fmt.Errorf("sandbox: at most %d slots", MaxSlots)
	}
	if cfg.InstanceDir == "" {
		cfg.InstanceDir = "/run/codeexec-instances"
	}
	if cfg.MaxInstances <= 0 || cfg.MaxInstances > 16 {
		cfg.MaxInstances = 16
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = 0x70000000
	}
	if uint64(cfg.UIDBase)+uint64(cfg.MaxInstances*MaxSlots*idRange) > 1<<32-2 {
		return errors.New("sandbox: UIDBase too high for the uid ranges")
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "codeexec"
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = 1
	}
	if cfg.RootFS != "" {
		if fi, err := os.Stat(filepath.Join(cfg.RootFS, "usr")); err != nil || !fi.IsDir() {
			return fmt.Errorf("sandbox: RootFS %s has no usr directory", cfg.RootFS)
		}
	}
	return nil
}

// openSelf opens this binary for re-execution through /proc/self/fd/N:
// the init starts as an unprivileged host uid that may not be able to
// reach the binary's path (go test binaries sit in 0700 directories). The
// fd is moved above 100 so that no ExtraFiles slot of a child overwrites
// it before the exec.
func openSelf() (*os.File, error) {
	fd, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: open own binary: %w", err)
	}
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 100)
	unix.Close(fd)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(high), "self-exe"), nil
}

// checkSubIDOverlap refuses a uid range that /etc/subuid or /etc/subgid
// hands out to rootless containers.
func checkSubIDOverlap(lo, hi uint32) error {
	for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(strings.TrimSpace(line), ":")
			if len(f) != 3 {
				continue
			}
			start, err1 := strconv.ParseUint(f[1], 10, 32)
			n, err2 := strconv.ParseUint(f[2], 10, 32)
			if err1 != nil || err2 != nil {
				continue
			}
			if start < uint64(hi) && start+n > uint64(lo) {
				return fmt.Errorf("sandbox: uid range [%d,%d) overlaps %s entry %q; set UIDBase", lo, hi, file, line)
			}
		}
	}
	return nil
}

// Describe reports the isolation in force.
func (l *Linux) Describe() Isolation {
	rootfs := "host /usr and allowlisted /etc, read-only"
	if l.cfg.RootFS != "" {
		rootfs = l.cfg.RootFS + " (usr, allowlisted etc), read-only"
	}
	return Isolation{
		Backend:    "linux",
		Instance:   l.instance,
		Slots:      l.cfg.Slots + WarmTemplatesPerSlot*l.cfg.Warm.Python, // cold, then warm (preloaded and lean)
		UIDBase:    l.hostID(0),
		UIDSpan:    idRange,
		UserNS:     true,
		UIDMap:     fmt.Sprintf("inside 0-%d -> host %d + slot*%d; code runs as uid %d, no capabilities, no_new_privs", idRange-1, l.hostID(0), idRange, sandboxUID),
		Namespaces: []string{"user", "mnt", "pid", "ipc", "uts", "net (a networked run's served by the egress policy)"},
		Cgroup:     l.cg.describe(),
		Degraded:   l.degraded,
		Seccomp:    "deny-list (mount, namespaces, ptrace, bpf, io_uring, keyrings, modules, ...); sockets AF_UNIX only without network, AF_UNIX/INET/INET6 with",
		Network:    "none unless Limits.Network; then its own namespace with one interface served by the server's egress policy",
		RootFS:     rootfs,
		CPUs:       l.cfg.CPUs,
		Warm:       l.warmDescribe(),
	}
}

// Close waits for running runs, then removes this instance's workdirs,
// cgroups and lock.
func (l *Linux) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Swap(true) {
		return nil
	}
	if l.warm != nil {
		l.warm.close()
	}
	err := l.cleanup()
	l.exe.Close()
	l.release()
	return err
}

func (l *Linux) acquireSlot(ctx context.Context) (int, error) {
	select {
	case s := <-l.slots:
		return s, nil
	default:
	}
	select {
	case s := <-l.slots:
		return s, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func validateSpec(spec Spec) error {
	if !filepath.IsAbs(spec.Workdir) {
		return fmt.Errorf("sandbox: workdir %q is not absolute", spec.Workdir)
	}
	fi, err := os.Lstat(spec.Workdir)
	if err != nil {
		return fmt.Errorf("sandbox: workdir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("sandbox: workdir %s is not a directory", spec.Workdir)
	}
	if len(spec.Steps) == 0 {
		return errors.New("sandbox: no steps")
	}
	for _, st := range spec.Steps {
		if len(st.Argv) == 0 || st.Argv[0] == "" {
			return fmt.Errorf("sandbox: step %q has no argv", st.Name)
		}
	}
	for _, f := range spec.Files {
		if p := path.Clean(f.Path); p != f.Path || !strings.HasPrefix(p, "/tmp/") {
			return fmt.Errorf("sandbox: file %q must be a clean absolute path under /tmp", f.Path)
		}
	}
	for _, kv := range spec.Env {
		if !strings.Contains(kv, "=") || strings.ContainsRune(kv, 0) {
			return fmt.Errorf("sandbox: bad env entry %q", kv)
		}
	}
	return nil
}

// chownTree gives the workdir to the code's host uid, never following a
// symlink (WalkDir and Lchown both work on the links themselves).
func chownTree(root string, id int) error {
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, id, id)
	})
}

// Run executes spec in a fresh sandbox on a free slot.
func (l *Linux) Run(ctx context.Context, spec Spec) (Result, error) {
	if err := validateSpec(spec); err != nil {
		return Result{}, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed.Load() {
		return Result{}, errors.New("sandbox: closed")
	}
	if l.warm != nil {
		if res, ok, err := l.warm.run(ctx, spec, spec.Limits.WithDefaults()); ok {
			return res, err
		}
	}
	slot, err := l.acquireSlot(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("sandbox: waiting for a slot: %w", err)
	}
	defer func() { l.slots <- slot }()
	return l.run(ctx, spec, spec.Limits.WithDefaults(), slot)
}

func (l *Linux) run(ctx context.Context, spec Spec, lim Limits, slot int) (Result, error) {
	var res Result
	// Phase times, logged at debug level: where a run's overhead goes.
	var tCgroup, tStarted, tPlaced, tFirstStep, tExited time.Duration
	t0 := time.Now()
	hostID := l.hostID(slot)
	if err := chownTree(spec.Workdir, int(hostID)+sandboxUID); err != nil {
		return res, fmt.Errorf("sandbox: chown workdir: %w", err)
	}
	cg, err := l.cg.newRun(slot, cgroupLimits{memory: lim.MemoryBytes, pids: int64(lim.Pids + initThreads), cpus: l.cfg.CPUs})
	if err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	defer func() {
		if err := cg.empty(); err != nil {
			l.log.Error("sandbox cgroup not empty", "err", err)
		}
		if err := cg.recycle(); err != nil {
			l.log.Error("sandbox cgroup not removed", "err", err)
		}
	}()

	var pipes []*os.File
	pipe := func() (r, w *os.File) {
		if err == nil {
			r, w, err = os.Pipe()
			pipes = append(pipes, r, w)
		}
		return r, w
	}
	defer func() {
		for _, p := range pipes {
			p.Close()
		}
	}()
	cfgR, cfgW := pipe()
	evR, evW := pipe()
	outR, outW := pipe()
	errR, errW := pipe()
	if err != nil {
		return res, err
	}

	// A network namespace of its own always, networked or not: a networked
	// run's is served by spec.Net, never the host's.
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWNET)
	idMap := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(hostID), Size: idRange}}
	cmd := &exec.Cmd{
		Path: fmt.Sprintf("/proc/self/fd/%d", l.exe.Fd()),
		Args: []string{initArg0},
		// Nothing of the server's environment. The one variable only
		// matters in -race builds, whose exit otherwise sleeps a second.
		Env:        []string{"GORACE=atexit_sleep_ms=0"},
		Stdout:     outW,
		Stderr:     errW,
		ExtraFiles: []*os.File{cfgR, evW}, // initConfigFD, initEventFD
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  flags,
			UidMappings: idMap,
			GidMappings: idMap,
			// init drops the server's supplementary groups (setgroups([]))
			// and later sets the steps' to none: it needs setgroups.
			GidMappingsEnableSetgroups: true,
			Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
			Pdeathsig:                  syscall.SIGKILL,
		},
	}
	if fd := cg.cgroupFD(); fd >= 0 {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	}
	tCgroup = time.Since(t0)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("sandbox: start init: %w", err)
	}
	for _, f := range []*os.File{cfgR, evW, outW, errW} {
		f.Close()
	}
	waitCh := make(chan error, 1)
	go func() { waitCh <- cmd.Wait() }()
	abort := func(err error) (Result, error) {
		cmd.Process.Kill()
		<-waitCh
		return res, err
	}
	tStarted = time.Since(t0)
	if err := cg.addProc(cmd.Process.Pid); err != nil {
		return abort(fmt.Errorf("sandbox: cgroup: %w", err))
	}
	tPlaced = time.Since(t0)
	fz := startFreezer(spec, cg)
	defer fz.end()
	var nameserver string
	if lim.Network && spec.Net != nil {
		// init waits for its config: nothing of the code runs before the
		// namespace has its network.
		if err := spec.Net.Attach(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err != nil {
			return abort(fmt.Errorf("sandbox: %w", err))
		}
		nameserver = spec.Net.Nameserver()
	}
	steps := make([]initStep, len(spec.Steps))
	for i, st := range spec.Steps {
		steps[i] = initStep{Name: st.Name, Argv: st.Argv, Timeout: st.Timeout, Stdin: st.Stdin}
	}
	icfg := initConfig{
		Workdir: spec.Workdir, RootFS: l.cfg.RootFS, Files: spec.Files, Env: spec.Env, Steps: steps,
		DiskBytes: lim.DiskBytes, FileBytes: lim.FileBytes, CPUTime: lim.CPUTime, Network: lim.Network,
		Nameserver: nameserver,
	}
	if l.degraded {
		icfg.AddressSpace, icfg.Processes = uint64(lim.MemoryBytes), uint64(lim.Pids)
	}
	// init blocks on this config, so it starts only now that it is in its cgroup.
	if err := json.NewEncoder(cfgW).Encode(&icfg); err != nil {
		return abort(fmt.Errorf("sandbox: send config: %w", err))
	}
	cfgW.Close()

	sink := newOutputSink(lim.OutputBytes, spec.Stdout, spec.Stderr)
	sink.start(outR, errR)
	evAll := make(chan initEvent, 2*len(steps)+2)
	evCh := (<-chan initEvent)(evAll)
	go func() {
		defer close(evAll)
		sc := bufio.NewScanner(evR)
		for sc.Scan() {
			var ev initEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				evAll <- ev
			}
		}
	}()

	// pid 1 of the namespace: killing it kills everything in it.
	dog := watch(ctx, lim, sink.overflow, cg.cpuUsage, func() {
		cmd.Process.Kill()
		fz.end() // a frozen sandbox dies once thawed
	})
	var (
		events    []initEvent
		lastStart = -1 // index of the last step that started
		waitErr   error
	)
	// handle records an event and says whether the last step starts.
	handle := func(ev initEvent) bool {
		events = append(events, ev)
		if ev.Event != "start" {
			return false
		}
		lastStart = ev.Step
		if ev.Step == 0 {
			tFirstStep = time.Since(t0)
		}
		return ev.Step == len(steps)-1
	}
loop:
	for {
		select {
		case ev, ok := <-evCh:
			if !ok {
				evCh = nil
				continue
			}
			if handle(ev) {
				dog.armCPU()
			}
		case waitErr = <-waitCh:
			break loop
		}
	}
	v := dog.end()
	fz.end()
	res.WallTime = time.Since(start)
	tExited = time.Since(t0)
	defer func() {
		l.log.Debug("sandbox run", "slot", slot, "status", res.Status, "cgroup", tCgroup, "started", tStarted,
			"placed", tPlaced, "first_step", tFirstStep, "exited", tExited, "done", time.Since(t0))
	}()
	// init is gone, so is its pid namespace: the pipes hit EOF now.
	for ev := range evAll { // what init wrote just before it exited
		if handle(ev) {
			v.cpuBase, _ = cg.cpuUsage()
			v.armed = true
		}
	}
	sink.drain(outR, errR)
	if err := cg.empty(); err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	st, err := cg.stats()
	if err != nil {
		return res, fmt.Errorf("sandbox: cgroup stats: %w", err)
	}
	res.CPUTime, res.MemoryPeak = st.cpu, st.memPeak

	var exit *initEvent
	for i := range events {
		switch events[i].Event {
		case "fatal":
			return res, fmt.Errorf("sandbox: setup failed: %s", events[i].Err)
		case "exit":
			exit = &events[i]
		}
	}
	e := ending{verdict: v, oomKills: st.oomKills, cpuUsed: st.cpu}
	switch {
	case exit != nil && exit.Step == lastStart:
		res.ExitCode = exit.Exit
		if exit.Signal != 0 {
			e.signal = syscall.Signal(exit.Signal)
			res.Signal = unix.SignalName(e.signal)
		}
		e.failed, e.timedOut = exit.Exit != 0 || exit.TimedOut, exit.TimedOut
		if e.failed {
			res.FailedStep = spec.Steps[exit.Step].Name
		}
	case lastStart >= 0:
		// Killed from outside (or init died) while a step ran.
		e.failed = true
		res.ExitCode, res.Signal = 128+int(syscall.SIGKILL), "SIGKILL"
		res.FailedStep = spec.Steps[lastStart].Name
	default:
		e.failed = true
	}
	res.Status = classify(e)
	if exit == nil && (res.Status == StatusError || res.Status == StatusOK) {
		return res, fmt.Errorf("sandbox: init died without a report: %v", waitErr)
	}
	return res, nil
}
