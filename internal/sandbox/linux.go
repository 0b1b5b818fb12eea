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
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	idRange = 65536 // uids/gids mapped into one sandbox
	// initThreads is headroom in pids.max for init's own Go threads, which
	// count against the limit like the code's processes and threads.
	initThreads = 16
	// cpuPoll is how often the parent checks the cgroup's CPU usage, which
	// also catches CPU spread over many processes (RLIMIT_CPU is per process).
	cpuPoll = 50 * time.Millisecond
)

// Linux runs specs in Linux namespaces (user, mount, pid, ipc, uts, net)
// with cgroup limits, a private read-only root and a seccomp filter. It
// must run as root.
type Linux struct {
	cfg      LinuxConfig
	log      *slog.Logger
	instance int
	lock     *os.File // flock on InstanceDir/K.lock, held while alive
	exe      *os.File // this binary, re-executed as the sandbox init
	workRoot string   // RunDir/i<K>
	slots    chan int
	cg       cgroupTree
	wdSeq    atomic.Uint64
	// mu is held shared by each Run and exclusively by Close, which so
	// waits for running runs.
	mu     sync.RWMutex
	closed atomic.Bool
	warm   *warmPool // nil when LinuxConfig.Warm.Python is 0
	// degraded: no usable cgroups, rlimits instead (LinuxConfig.AllowDegraded).
	degraded bool
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
	l := &Linux{cfg: cfg, log: log}
	lo, hi := l.instanceRange(0), l.instanceRange(cfg.MaxInstances)
	if err := checkSubIDOverlap(lo, hi); err != nil {
		return nil, err
	}
	if err := l.acquireInstance(); err != nil {
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
	l.workRoot = filepath.Join(cfg.RunDir, "i"+strconv.Itoa(l.instance))
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

func (l *Linux) hostID(slot int) uint32 {
	return l.cfg.UIDBase + uint32((l.instance*MaxSlots+slot)*idRange)
}

// instanceRange is the first host id of instance k's range.
func (l *Linux) instanceRange(k int) uint32 {
	return l.cfg.UIDBase + uint32(k*MaxSlots*idRange)
}

func (l *Linux) mountTag() string { return "codeexec-i" + strconv.Itoa(l.instance) }

// acquireInstance takes the first free K.lock. flock dies with its owner, so
// a crashed server's K becomes free again, to be cleaned by its successor.
func (l *Linux) acquireInstance() error {
	if err := os.MkdirAll(l.cfg.InstanceDir, 0o755); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	for k := 0; k < l.cfg.MaxInstances; k++ {
		f, err := os.OpenFile(filepath.Join(l.cfg.InstanceDir, strconv.Itoa(k)+".lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			l.instance, l.lock = k, f
			return nil
		}
		f.Close()
	}
	return fmt.Errorf("sandbox: all %d instance slots in %s are taken", l.cfg.MaxInstances, l.cfg.InstanceDir)
}

// cleanup removes everything instance K may have left: processes running
// as any of its host uids, its cgroups, its workdir mounts and RunDir/i<K>.
func (l *Linux) cleanup() error {
	killUIDRange(l.instanceRange(l.instance), l.instanceRange(l.instance+1))
	var errs []error
	if err := l.cg.purge(); err != nil {
		errs = append(errs, err)
	}
	if err := unmountTagged(l.mountTag()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(l.workRoot); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killUIDRange SIGKILLs every process whose owner is in [lo, hi). A dead
// sandbox init takes its whole pid namespace with it.
func killUIDRange(lo, hi uint32) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name(), &st) == nil && st.Uid >= lo && st.Uid < hi {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// unmountTagged detaches every tmpfs whose source is tag (our workdirs) and
// removes its mount point.
func unmountTagged(tag string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(string(data), "\n") {
		_, after, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(line), strings.Fields(after)
		if !ok || len(f) < 5 || len(g) < 2 || g[1] != tag {
			continue
		}
		mp := unescapeMountinfo(f[4])
		// EINVAL, ENOENT: gone since mountinfo was read (a predecessor
		// still shutting down released it), which is the end wanted.
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
			continue
		}
		_ = os.Remove(mp)
	}
	return errors.Join(errs...)
}

// prepareRunDir creates RunDir and RunDir/i<K> traversable (0711) but not
// listable by others: the init, an unprivileged host uid, must walk to the
// workdir to bind it.
func prepareRunDir(runDir, workRoot string) error {
	if err := os.MkdirAll(runDir, 0o711); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	for p := runDir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if p != runDir {
				return fmt.Errorf("sandbox: %s (an ancestor of RunDir) is not searchable by others (o+x)", p)
			}
			if err := os.Chmod(p, fi.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("sandbox: %w", err)
			}
		}
		if p == "/" {
			break
		}
	}
	if err := os.Mkdir(workRoot, 0o711); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
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

// NewWorkdir mounts a tmpfs of maxBytes on a fresh directory under
// RunDir/i<K>. The mount source names the instance, so a successor finds
// and removes it after a crash.
func (l *Linux) NewWorkdir(maxBytes int64) (string, func() error, error) {
	if l.closed.Load() {
		return "", nil, errors.New("sandbox: closed")
	}
	if maxBytes <= 0 {
		return "", nil, errors.New("sandbox: workdir size must be positive")
	}
	dir := filepath.Join(l.workRoot, "w"+strconv.FormatUint(l.wdSeq.Add(1), 10))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", nil, err
	}
	opts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0755", maxBytes, inodesFor(maxBytes))
	if err := unix.Mount(l.mountTag(), dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("sandbox: mount workdir: %w", err)
	}
	var once sync.Once
	var rerr error
	release := func() error {
		once.Do(func() {
			// ENOENT/EINVAL: Close (or a successor's cleanup) got there first.
			err := unix.Unmount(dir, unix.MNT_DETACH)
			if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
				rerr = fmt.Errorf("sandbox: unmount %s: %w", dir, err)
				return
			}
			if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
				rerr = err
			}
		})
		return rerr
	}
	return dir, release, nil
}

// Describe reports the isolation in force.
func (l *Linux) Describe() map[string]any {
	rootfs := "host /usr and allowlisted /etc, read-only"
	if l.cfg.RootFS != "" {
		rootfs = l.cfg.RootFS + " (usr, allowlisted etc), read-only"
	}
	return map[string]any{
		"backend":    "linux",
		"instance":   l.instance,
		"slots":      l.cfg.Slots + WarmTemplatesPerSlot*l.cfg.Warm.Python, // cold, then warm (preloaded and lean)
		"userns":     true,
		"uid_map":    fmt.Sprintf("inside 0-%d -> host %d + slot*%d; code runs as uid %d, no capabilities, no_new_privs", idRange-1, l.hostID(0), idRange, sandboxUID),
		"namespaces": []string{"user", "mnt", "pid", "ipc", "uts", "net (a networked run's served by the egress policy)"},
		"cgroup":     l.cg.describe(),
		"degraded":   l.degraded,
		"seccomp":    "deny-list (mount, namespaces, ptrace, bpf, io_uring, keyrings, modules, ...); sockets AF_UNIX only without network, AF_UNIX/INET/INET6 with",
		"network":    "none unless Limits.Network; then its own namespace with one interface served by the server's egress policy",
		"rootfs":     rootfs,
		"cpus":       l.cfg.CPUs,
		"warm":       l.warmDescribe(),
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
	l.lock.Close()
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
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); sink.pump(outR, 0) }()
	go func() { defer pumps.Done(); sink.pump(errR, 1) }()
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

	wall := time.NewTimer(lim.WallTime)
	defer wall.Stop()
	tick := time.NewTicker(cpuPoll)
	defer tick.Stop()
	var (
		reason     Status // why the parent killed the sandbox, if it did
		events     []initEvent
		lastStart  = -1 // index of the last step that started
		cpuAtStart time.Duration
		cpuKilled  bool
		ctxDone    = ctx.Done()
		wallC      = wall.C
		overflow   = sink.overflow
		waitErr    error
	)
	handle := func(ev initEvent) {
		events = append(events, ev)
		if ev.Event == "start" {
			lastStart = ev.Step
			if ev.Step == 0 {
				tFirstStep = time.Since(t0)
			}
			if ev.Step == len(steps)-1 {
				cpuAtStart, _ = cg.cpuUsage()
			}
		}
	}
	kill := func(r Status) {
		if reason == "" {
			reason = r
			cmd.Process.Kill() // pid 1 of the namespace: everything in it dies
		}
	}
loop:
	for {
		select {
		case <-ctxDone:
			ctxDone = nil
			kill(StatusKilled)
		case <-wallC:
			wallC = nil
			kill(StatusTimeout)
		case <-overflow:
			overflow = nil
			kill(StatusOutputLimit)
		case ev, ok := <-evCh:
			if !ok {
				evCh = nil
				continue
			}
			handle(ev)
		case <-tick.C:
			if lastStart == len(steps)-1 {
				if u, err := cg.cpuUsage(); err == nil && u-cpuAtStart > lim.CPUTime {
					cpuKilled = true
					kill(StatusTimeout)
				}
			}
		case waitErr = <-waitCh:
			break loop
		}
	}
	res.WallTime = time.Since(start)
	tExited = time.Since(t0)
	defer func() {
		l.log.Debug("sandbox run", "slot", slot, "status", res.Status, "cgroup", tCgroup, "started", tStarted,
			"placed", tPlaced, "first_step", tFirstStep, "exited", tExited, "done", time.Since(t0))
	}()
	// init is gone, so is its pid namespace: the pipes hit EOF now.
	for ev := range evAll { // what init wrote just before it exited
		handle(ev)
	}
	pumpsDone := make(chan struct{})
	go func() { pumps.Wait(); close(pumpsDone) }()
	select {
	case <-pumpsDone:
	case <-time.After(5 * time.Second):
		outR.Close()
		errR.Close()
		<-pumpsDone
	}
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
	failed := false
	switch {
	case exit != nil && exit.Step == lastStart:
		res.ExitCode = exit.Exit
		if exit.Signal != 0 {
			res.Signal = unix.SignalName(syscall.Signal(exit.Signal))
		}
		failed = exit.Exit != 0 || exit.TimedOut
		if failed {
			res.FailedStep = spec.Steps[exit.Step].Name
		}
	case lastStart >= 0:
		// Killed from outside (or init died) while a step ran.
		failed = true
		res.ExitCode, res.Signal = 128+int(syscall.SIGKILL), "SIGKILL"
		res.FailedStep = spec.Steps[lastStart].Name
	default:
		failed = true
	}
	lastStepCPU := lastStart == len(steps)-1 && st.cpu-cpuAtStart >= lim.CPUTime
	switch {
	case reason == StatusKilled || reason == StatusOutputLimit:
		res.Status = reason
	case failed && st.oomKills > 0:
		res.Status = StatusMemory
	case reason == StatusTimeout || cpuKilled:
		res.Status = StatusTimeout
	case exit != nil && (exit.TimedOut || exit.Signal == int(syscall.SIGXCPU) || (exit.Signal == int(syscall.SIGKILL) && lastStepCPU)):
		res.Status = StatusTimeout
	case exit == nil:
		return res, fmt.Errorf("sandbox: init died without a report: %v", waitErr)
	case failed:
		res.Status = StatusError
	default:
		res.Status = StatusOK
	}
	return res, nil
}

// outputSink copies stdout and stderr to their writers under one shared
// byte budget; past it, it signals overflow and discards.
type outputSink struct {
	mu       sync.Mutex
	left     int64
	w        [2]io.Writer
	overflow chan struct{}
	over     bool
}

func newOutputSink(limit int64, stdout, stderr io.Writer) *outputSink {
	return &outputSink{left: limit, w: [2]io.Writer{stdout, stderr}, overflow: make(chan struct{})}
}

func (s *outputSink) pump(r io.Reader, which int) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.write(buf[:n], which)
		}
		if err != nil {
			return
		}
	}
}

func (s *outputSink) write(b []byte, which int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.over {
		return
	}
	n := int64(len(b))
	if n > s.left {
		n = s.left
		s.over = true
		close(s.overflow)
	}
	s.left -= n
	if w := s.w[which]; w != nil && n > 0 {
		_, _ = w.Write(b[:n])
	}
}
