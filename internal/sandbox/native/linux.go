//go:build linux

package native

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/cgroup"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/policy"
	"github.com/codeexec/codeexec/internal/sandbox/seccomp"
	"golang.org/x/sys/unix"
)

const (
	// InitThreads is headroom in pids.max for init's own Go threads, which
	// count against the limit like the code's processes and threads.
	InitThreads = 16
)

// Linux runs specs in Linux namespaces (user, mount, pid, ipc, uts, net)
// with cgroup limits, a private read-only root and a seccomp filter. It
// must run as root.
type Linux struct {
	*host.Host
	exe   *os.File // this binary, re-executed as the sandbox init
	slots chan int
	// mu is held shared by each Run and exclusively by Close, which so
	// waits for running runs.
	mu sync.RWMutex
}

var _ sandbox.Sandbox = (*Linux)(nil)

// New claims an instance number K (a host-wide lock), removes whatever
// a crashed predecessor with the same K left behind (processes, cgroups,
// workdir mounts), and prepares RunDir.
func New(cfg host.Config) (*Linux, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sandbox: the Linux backend must run as root")
	}
	if !seccomp.Available {
		return nil, seccomp.Load(false)
	}
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l := &Linux{Host: &host.Host{Cfg: cfg, Log: log}}
	lo, hi := l.InstanceRange(0), l.InstanceRange(cfg.MaxInstances)
	if err := host.CheckSubIDOverlap(lo, hi); err != nil {
		return nil, err
	}
	if err := l.Claim(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			l.Release()
		}
	}()
	cg, err := cgroup.NewTree(cfg.CgroupParent, l.Instance)
	if err == nil {
		err = cgroup.Usable(cg, host.MaxSlots-1)
	}
	switch {
	case err == nil:
		l.CG = cg
	case cfg.AllowDegraded:
		log.Warn("sandbox DEGRADED: no usable cgroups; limits fall back to rlimits and the warm pool is off", "err", err)
		l.CG, l.Degraded = cgroup.None{}, true
	default:
		return nil, fmt.Errorf("sandbox: no usable cgroups (%w); fix the host (codeexec doctor), or set CODEEXEC_SANDBOX_ALLOW_DEGRADED=true to run with rlimits only", err)
	}
	if err := l.Cleanup(); err != nil {
		return nil, fmt.Errorf("sandbox: cleaning up after a predecessor: %w", err)
	}
	if err := host.PrepareRunDir(cfg.RunDir, l.WorkRoot); err != nil {
		return nil, err
	}
	exe, err := nsinit.OpenSelf()
	if err != nil {
		return nil, err
	}
	l.exe = exe
	l.slots = make(chan int, cfg.Slots)
	for i := 0; i < cfg.Slots; i++ {
		l.slots <- i
	}
	ok = true
	log.Info("sandbox ready", "instance", l.Instance, "slots", cfg.Slots, "uid_base", l.HostID(0))
	return l, nil
}

// Describe reports the isolation in force.
func (l *Linux) Describe() sandbox.Isolation {
	rootfs := "host /usr and allowlisted /etc, read-only"
	if l.Cfg.RootFS != "" {
		rootfs = l.Cfg.RootFS + " (usr, allowlisted etc), read-only"
	}
	return sandbox.Isolation{
		Backend:    "linux",
		Instance:   l.Instance,
		Slots:      l.Cfg.Slots, // cold runs; a warm pool wrapping this backend adds its templates
		UIDBase:    l.HostID(0),
		UIDSpan:    host.IDRange,
		UserNS:     true,
		UIDMap:     fmt.Sprintf("inside 0-%d -> host %d + slot*%d; code runs as uid %d, no capabilities, no_new_privs", host.IDRange-1, l.HostID(0), host.IDRange, policy.UID),
		Namespaces: []string{"user", "mnt", "pid", "ipc", "uts", "net (a networked run's served by the egress policy)"},
		Cgroup:     l.CG.Describe(),
		Degraded:   l.Degraded,
		Seccomp:    "deny-list (mount, namespaces, ptrace, bpf, io_uring, keyrings, modules, ...); sockets AF_UNIX only without network, AF_UNIX/INET/INET6 with",
		Network:    "none unless Limits.Network; then its own namespace with one interface served by the server's egress policy",
		RootFS:     rootfs,
		CPUs:       l.Cfg.CPUs,
	}
}

// Close waits for running runs, then removes this instance's workdirs,
// cgroups and lock.
func (l *Linux) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Closed.Swap(true) {
		return nil
	}
	err := l.Cleanup()
	l.exe.Close()
	l.Release()
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

// Run executes spec in a fresh sandbox on a free slot.
func (l *Linux) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	if err := sandbox.ValidateSpec(spec); err != nil {
		return sandbox.Result{}, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.Closed.Load() {
		return sandbox.Result{}, errors.New("sandbox: closed")
	}
	slot, err := l.acquireSlot(ctx)
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("sandbox: waiting for a slot: %w", err)
	}
	defer func() { l.slots <- slot }()
	return l.run(ctx, spec, spec.Limits.WithDefaults(), slot)
}

func (l *Linux) run(ctx context.Context, spec sandbox.Spec, lim sandbox.Limits, slot int) (sandbox.Result, error) {
	var res sandbox.Result
	// Phase times, logged at debug level: where a run's overhead goes.
	var tCgroup, tStarted, tPlaced, tFirstStep, tExited time.Duration
	t0 := time.Now()
	hostID := l.HostID(slot)
	if err := host.ChownTree(spec.Workdir, int(hostID)+policy.UID); err != nil {
		return res, fmt.Errorf("sandbox: chown workdir: %w", err)
	}
	cg, err := l.CG.NewRun(slot, cgroup.Limits{Memory: lim.MemoryBytes, Pids: int64(lim.Pids + InitThreads), CPUs: l.Cfg.CPUs})
	if err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	defer func() {
		if err := cg.Empty(); err != nil {
			l.Log.Error("sandbox cgroup not empty", "err", err)
		}
		if err := cg.Recycle(); err != nil {
			l.Log.Error("sandbox cgroup not removed", "err", err)
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

	idMap := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(hostID), Size: host.IDRange}}
	cmd := nsinit.Command(l.exe, idMap, outW, errW, cg.FD(), cfgR, evW)
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
	abort := func(err error) (sandbox.Result, error) {
		cmd.Process.Kill()
		<-waitCh
		return res, err
	}
	tStarted = time.Since(t0)
	if err := cg.AddProc(cmd.Process.Pid); err != nil {
		return abort(fmt.Errorf("sandbox: cgroup: %w", err))
	}
	tPlaced = time.Since(t0)
	fz := cgroup.StartFreezer(spec, cg)
	defer fz.End()
	var nameserver string
	if lim.Network && spec.Net != nil {
		// init waits for its config: nothing of the code runs before the
		// namespace has its network.
		if err := spec.Net.Attach(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err != nil {
			return abort(fmt.Errorf("sandbox: %w", err))
		}
		nameserver = spec.Net.Nameserver()
	}
	steps := make([]nsinit.Step, len(spec.Steps))
	for i, st := range spec.Steps {
		steps[i] = nsinit.Step{Name: st.Name, Argv: st.Argv, Timeout: st.Timeout, Stdin: st.Stdin}
	}
	icfg := nsinit.Config{
		Workdir: spec.Workdir, RootFS: l.Cfg.RootFS, Etc: l.Cfg.Etc, Files: spec.Files, Env: spec.Env, Steps: steps,
		DiskBytes: lim.DiskBytes, FileBytes: lim.FileBytes, CPUTime: lim.CPUTime, Network: lim.Network,
		Nameserver: nameserver,
	}
	if l.Degraded {
		icfg.AddressSpace, icfg.Processes = uint64(lim.MemoryBytes), uint64(lim.Pids)
	}
	// init blocks on this config, so it starts only now that it is in its cgroup.
	if err := json.NewEncoder(cfgW).Encode(&icfg); err != nil {
		return abort(fmt.Errorf("sandbox: send config: %w", err))
	}
	cfgW.Close()

	sink := sandbox.NewOutputSink(lim.OutputBytes, spec.Stdout, spec.Stderr)
	sink.Start(outR, errR)
	evAll := make(chan nsinit.Event, 2*len(steps)+2)
	evCh := (<-chan nsinit.Event)(evAll)
	go func() {
		defer close(evAll)
		sc := bufio.NewScanner(evR)
		for sc.Scan() {
			var ev nsinit.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				evAll <- ev
			}
		}
	}()

	// pid 1 of the namespace: killing it kills everything in it.
	dog := sandbox.Watch(ctx, lim, sink.Overflow(), cg.CPUUsage, func() {
		cmd.Process.Kill()
		fz.End() // a frozen sandbox dies once thawed
	})
	var (
		events    []nsinit.Event
		lastStart = -1 // index of the last step that started
		waitErr   error
	)
	// handle records an event and says whether the last step starts.
	handle := func(ev nsinit.Event) bool {
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
				dog.ArmCPU()
			}
		case waitErr = <-waitCh:
			break loop
		}
	}
	v := dog.End()
	fz.End()
	res.WallTime = time.Since(start)
	tExited = time.Since(t0)
	defer func() {
		l.Log.Debug("sandbox run", "slot", slot, "status", res.Status, "cgroup", tCgroup, "started", tStarted,
			"placed", tPlaced, "first_step", tFirstStep, "exited", tExited, "done", time.Since(t0))
	}()
	// init is gone, so is its pid namespace: the pipes hit EOF now.
	for ev := range evAll { // what init wrote just before it exited
		if handle(ev) {
			v.CPUBase, _ = cg.CPUUsage()
			v.Armed = true
		}
	}
	sink.Drain(outR, errR)
	if err := cg.Empty(); err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	st, err := cg.Stats()
	if err != nil {
		return res, fmt.Errorf("sandbox: cgroup stats: %w", err)
	}
	res.CPUTime, res.MemoryPeak = st.CPU, st.MemPeak

	var exit *nsinit.Event
	for i := range events {
		switch events[i].Event {
		case "fatal":
			return res, fmt.Errorf("sandbox: setup failed: %s", events[i].Err)
		case "exit":
			exit = &events[i]
		}
	}
	e := sandbox.Ending{Verdict: v, OOMKills: st.OOMKills, CPUUsed: st.CPU}
	switch {
	case exit != nil && exit.Step == lastStart:
		res.ExitCode = exit.Exit
		if exit.Signal != 0 {
			e.Signal = syscall.Signal(exit.Signal)
			res.Signal = unix.SignalName(e.Signal)
		}
		e.Failed, e.TimedOut = exit.Exit != 0 || exit.TimedOut, exit.TimedOut
		if e.Failed {
			res.FailedStep = spec.Steps[exit.Step].Name
		}
	case lastStart >= 0:
		// Killed from outside (or init died) while a step ran.
		e.Failed = true
		res.ExitCode, res.Signal = 128+int(syscall.SIGKILL), "SIGKILL"
		res.FailedStep = spec.Steps[lastStart].Name
	default:
		e.Failed = true
	}
	res.Status = sandbox.Classify(e)
	if exit == nil && (res.Status == sandbox.StatusError || res.Status == sandbox.StatusOK) {
		return res, fmt.Errorf("sandbox: init died without a report: %v", waitErr)
	}
	return res, nil
}

// HostResources is the instance this backend holds, for a warm pool that wraps it
// (its templates take the slots above Config.Slots).
func (l *Linux) HostResources() *host.Host { return l.Host }

// InitBinary is this binary, opened for re-execution as the sandbox init.
func (l *Linux) InitBinary() *os.File { return l.exe }
