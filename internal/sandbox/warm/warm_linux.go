//go:build linux

package warm

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/policy"
	"github.com/codeexec/codeexec/internal/sandbox/seccomp"
	"golang.org/x/sys/unix"
)

//go:embed zygote.py
var zygoteSource []byte

const (
	zygoteDir = "/tmp/.zygote"
	// warmWait is how long a run waits for a busy template to free up
	// before it runs cold instead.
	warmWait = 250 * time.Millisecond
	// templateMemory bounds a template's own cgroup (the interpreter with
	// its preloaded modules, plus children until they are moved out).
	templateMemory = 1 << 30
	templatePids   = 64
)

// warmPool keeps, per template slot, a warm Python template with parked,
// isolated children (see zygote.py). A run takes a parked child of an idle
// template: the child is already in fresh namespaces and its own cgroup,
// so what is left on the request path is mounting /tmp and /mnt/data,
// writing the code, dropping privileges and running it.
type warmPool struct {
	l       *host.Host // the wrapped backend's instance: uid bands, cgroups, workdirs
	exe     *os.File   // the init binary templates start as
	cfg     Config
	seccomp [][]byte
	helper  zygoteHelper // the templates' native half and their runs' pid 1
	tmpls   []*template
	stop    chan struct{}
	wg      sync.WaitGroup

	served atomic.Int64 // runs served warm, for Describe and tests

	mu      sync.Mutex // guards the fields below and every template's spares/busy/alive
	changed chan struct{}
	limits  sandbox.Limits  // limits new spares' cgroups are made with
	stdlib  map[string]bool // the interpreter's standard-library modules, from a template
}

// template is one template slot's state.
type template struct {
	p    *warmPool
	slot int
	// lean templates import nothing: forking one, and tearing its copy
	// down, costs a fraction of a preloaded one (~10 MB against ~100 MB of
	// page tables to copy and pages to fault). They exec programs and run
	// Python code that imports only the standard library.
	lean bool

	// Guarded by p.mu.
	spares []*spare
	busy   bool // a run is using one of its children
	alive  bool // the template is up and has finished its preload
	// reseedInPython: generators its children reseed in Python (see
	// templateMsg.ReseedInPython).
	reseedInPython []string
	pinned         int // pages pinned for copy at fork (see templateMsg.Pinned)

	wake chan struct{} // a spare was taken: fork another

	// Valid while the template process lives.
	procMu  sync.Mutex // guards cmd against kill from close
	cmd     *exec.Cmd
	ctrl    *net.UnixConn
	cg      cgroup.Run
	release func() error // its workdir
	ready   chan templateMsg
	forked  chan int
	dead    chan struct{}
	forkMu  sync.Mutex
	exitsMu sync.Mutex
	exits   map[int]chan syscall.WaitStatus // by pid in the template's namespace
	cgIDs   []bool                          // child cgroup ids in use
}

// spare is a parked child: a run's pid 1 (the reaper) and pid 2 (the
// process that will run the code), isolated, in their own cgroup, waiting
// for code.
type spare struct {
	t    *template
	tpid int // pid 1, in the template's namespace
	// pidfd is pid 1's: killing it ends the whole pid namespace. runPidfd
	// is pid 2's, for moving it to another cgroup.
	pidfd    int
	runPidfd int
	conn     *net.UnixConn
	cg       cgroup.Run
	cgID     int
	limits   sandbox.Limits
	exit     chan syscall.WaitStatus
	reaped   bool // exec took the template's report from exit
	destroy  sync.Once
}

type templateMsg struct {
	Ready   bool `json:"ready"`
	Threads int  `json:"threads"`
	// StrayFDs are descriptors the template holds beyond its own, as
	// "fd -> target" (zygote.py, audit_descriptors).
	StrayFDs     []string `json:"stray_fds"`
	PreloadError string   `json:"preload_error"`
	Forked       int      `json:"forked"`
	Exit         int      `json:"exit"`
	Status       uint32   `json:"status"`
	Error        string   `json:"error"`
	Stdlib       []string `json:"stdlib"`
	// ReseedInPython names the generators the template could not locate
	// for native reseeding (zygote.py, prepare_reseed).
	ReseedInPython []string `json:"reseed_in_python"`
	// Pinned is how many of its pages the template pinned (zygote.py,
	// learn_and_pin; negative: the errno that prevented it).
	Pinned int `json:"pinned"`
}

// warmRequest is what a parked child receives (with its four descriptors:
// workdir mount, stdin, stdout, stderr), encoded by marshal.
type warmRequest struct {
	Argv    []string
	Env     []string
	Files   []sandbox.File
	Disk    int64
	FSize   int64
	CPUSecs int64
	// Exec has the child exec argv[0] (any program of the sandbox's root
	// or among Files) instead of running Python code itself.
	Exec bool
}

// warmCgroupID names the cgroups of template slot slot: k == 0 is the
// template's own, k >= 1 its children's. The ids sit far above real slot
// numbers, so the tree's per-slot naming keeps them apart.
func warmCgroupID(slot, k int) int { return 1000*(slot+1) + k }

// templateRootUID is the host uid of root inside template slot slot. It
// lies above every instance's range (UIDBase + MaxInstances*MaxSlots*65536,
// one uid per instance and slot), so that the instance's ranges only ever
// hold processes of executions: leftover checks and the startup sweep of a
// range never meet a live template. Templates need no sweep: they die with
// their init, which dies with the server (Pdeathsig).
func templateRootUID(l *host.Host, slot int) uint32 {
	return l.InstanceRange(l.Cfg.MaxInstances) + uint32(l.Instance*host.MaxSlots+slot)
}

func newWarmPool(l *host.Host, exe *os.File, cfg Config) (*warmPool, error) {
	if cfg.Interpreter == "" {
		cfg.Interpreter = "/usr/bin/python3"
	}
	if cfg.Template == "" {
		cfg.Template = "python"
	}
	if cfg.Spares <= 0 {
		cfg.Spares = 2
	}
	if l.Cfg.Slots+TemplatesPerSlot*cfg.Python > host.MaxSlots {
		return nil, fmt.Errorf("sandbox: %d slots and %d warm slots (%d templates each) exceed %d",
			l.Cfg.Slots, cfg.Python, TemplatesPerSlot, host.MaxSlots)
	}
	if uint64(l.InstanceRange(l.Cfg.MaxInstances))+uint64(l.Cfg.MaxInstances*host.MaxSlots) > 1<<32-2 {
		return nil, errors.New("sandbox: UIDBase too high for the warm templates' uids")
	}
	lo := l.InstanceRange(l.Cfg.MaxInstances)
	if err := host.CheckSubIDOverlap(lo, lo+uint32(l.Cfg.MaxInstances*host.MaxSlots)); err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.Interpreter); err != nil {
		return nil, fmt.Errorf("sandbox: warm pool: %w", err)
	}
	progs, err := seccomp.Programs(false)
	if err != nil {
		return nil, fmt.Errorf("sandbox: warm pool seccomp: %w", err)
	}
	helper, err := buildZygoteHelper(context.Background(), filepath.Join(l.Cfg.RunDir, "helper"))
	if err != nil {
		return nil, err
	}
	p := &warmPool{l: l, exe: exe, cfg: cfg, seccomp: progs, helper: helper, stop: make(chan struct{}), changed: make(chan struct{}),
		limits: cfg.Limits.WithDefaults()}
	// Per warm slot a preloaded template and leanPerSlot lean ones.
	for i := 0; i < TemplatesPerSlot*cfg.Python; i++ {
		t := &template{p: p, slot: l.Cfg.Slots + i, lean: i >= cfg.Python, wake: make(chan struct{}, 1)}
		p.tmpls = append(p.tmpls, t)
		p.wg.Add(1)
		go t.loop()
	}
	return p, nil
}

func (p *warmPool) close() {
	close(p.stop)
	for _, t := range p.tmpls {
		t.kill()
	}
	p.wg.Wait()
}

// broadcast wakes runs waiting for a template; p.mu must be held.
func (p *warmPool) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *warmPool) describe() *sandbox.WarmReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	ready := 0
	pinned := make([]int, 0, len(p.tmpls))
	for _, t := range p.tmpls {
		if t.alive {
			ready++
		}
		pinned = append(pinned, t.pinned)
	}
	return &sandbox.WarmReport{Python: sandbox.WarmPython{Templates: len(p.tmpls), Ready: ready, Spares: p.cfg.Spares,
		Preloaded: p.cfg.Python, Lean: leanPerSlot * p.cfg.Python,
		Interpreter: p.cfg.Interpreter,
		Isolation: "per run: forked child, pid 2 under a reaper in fresh pid/mnt/ipc/uts namespaces, own cgroup, uid 1000, no capabilities, no_new_privs, the same seccomp programs; used once. " +
			"Network: the template's namespace (no interface up, AF_UNIX only), one run at a time, after the previous run's processes are gone",
		Serves:      "Python code (pre-imported interpreter); any other single-step run is exec'd by a warm child",
		Served:      p.served.Load(),
		PinnedPages: pinned}}
}

// serves reports whether the pool can serve spec as a cold run would, and
// how: as Python code run by the template's interpreter itself (a spec
// that names the template in Spec.Warm, in the environment the template
// imported under, as [Interpreter, "-u", src, args...] with src among
// Files; code is src's content), or, for any other single step, by exec'ing argv[0]
// in a warm child (the program is pid 2 under pid 1, as in a cold run).
// Multi-step specs (compile and run) and networked runs run cold.
func (p *warmPool) serves(spec sandbox.Spec, lim sandbox.Limits) (ok, execProgram bool, code []byte) {
	if len(spec.Steps) != 1 || lim.Network || spec.Cold {
		return false, false, nil
	}
	argv := spec.Steps[0].Argv
	if spec.Warm == p.cfg.Template && len(argv) >= 3 && argv[0] == p.cfg.Interpreter && argv[1] == "-u" && slices.Equal(spec.Env, p.cfg.Env) {
		if i := slices.IndexFunc(spec.Files, func(f sandbox.File) bool { return f.Path == argv[2] }); i >= 0 {
			return true, false, spec.Files[i].Data
		}
	}
	return len(argv) >= 1 && filepath.IsAbs(argv[0]), true, nil
}

// acquire takes a parked child of an idle template, waiting up to warmWait
// for one; nil means "run cold". Lean templates are tried first unless the
// run needs the preloaded modules (then only preloaded ones serve it).
func (p *warmPool) acquire(ctx context.Context, needsPreload bool) *spare {
	timer := time.NewTimer(warmWait)
	defer timer.Stop()
	order := make([]*template, 0, len(p.tmpls))
	for _, lean := range []bool{true, false} {
		for _, t := range p.tmpls {
			if t.lean == lean && !(lean && needsPreload) {
				order = append(order, t)
			}
		}
	}
	for {
		p.mu.Lock()
		anyAlive := false
		for _, t := range order {
			anyAlive = anyAlive || t.alive
			if t.alive && !t.busy && len(t.spares) > 0 {
				sp := t.spares[0]
				t.spares = t.spares[1:]
				t.busy = true
				p.mu.Unlock()
				return sp
			}
		}
		ch := p.changed
		p.mu.Unlock()
		if !anyAlive {
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// release frees t for the next run and has it fork a new spare: only now,
// so that the fork does not compete for the CPU with the run it replaces.
func (p *warmPool) release(t *template) {
	p.mu.Lock()
	t.busy = false
	p.broadcast()
	p.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// ---- template lifecycle ----

// loop keeps the template up: start, keep spares parked, restart with
// backoff when it dies, until the pool stops.
func (t *template) loop() {
	defer t.p.wg.Done()
	backoff := time.Second
	for {
		err := t.start()
		if err == nil {
			backoff = time.Second
			err = t.fill()
		}
		t.teardown()
		select {
		case <-t.p.stop:
			return
		default:
		}
		t.p.l.Log.Warn("warm template restarting", "slot", t.slot, "err", err, "backoff", backoff)
		select {
		case <-t.p.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (t *template) start() error {
	l, p := t.p.l, t.p
	t.ready, t.forked, t.dead = make(chan templateMsg, 1), make(chan int, 1), make(chan struct{})
	t.exits = map[int]chan syscall.WaitStatus{}
	t.cgIDs = make([]bool, 2*p.cfg.Spares+2)
	// The template's /mnt/data is an empty, read-only-to-it directory (no
	// mount: every child replaces it with its request's workdir).
	dir := filepath.Join(l.WorkRoot, "t"+strconv.Itoa(t.slot))
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return err
	}
	t.release = func() error { return os.Remove(dir) }
	cg, err := l.CG.NewRun(warmCgroupID(t.slot, 0), cgroup.Limits{Memory: templateMemory, Pids: templatePids, CPUs: l.Cfg.CPUs})
	if err != nil {
		return err
	}
	t.cg = cg
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ctrlInit := os.NewFile(uintptr(pair[1]), "template-ctrl")
	defer ctrlInit.Close()
	if t.ctrl, err = fileConn(pair[0]); err != nil {
		return err
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer cfgR.Close()
	defer cfgW.Close()
	evR, evW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer evW.Close()
	logR, logW, err := os.Pipe()
	if err != nil {
		evR.Close()
		return err
	}
	defer logW.Close()
	go t.logOutput(logR)
	go t.logEvents(evR)

	inside := int(l.HostID(t.slot))
	uidMap := []syscall.SysProcIDMap{
		{ContainerID: 0, HostID: int(templateRootUID(l, t.slot)), Size: 1},
		{ContainerID: 1, HostID: inside + 1, Size: host.IDRange - 1},
	}
	cmd := nsinit.Command(p.exe, uidMap, logW, logW, cg.FD(), cfgR, evW, ctrlInit)
	// Start under procMu: kill (the pool closing) reads cmd.Process.
	t.procMu.Lock()
	t.cmd = cmd
	err = cmd.Start()
	if err != nil {
		t.cmd = nil
	}
	t.procMu.Unlock()
	if err != nil {
		return fmt.Errorf("start template init: %w", err)
	}
	// The init has its own copies. Holding the config pipe's read end
	// here would block the config write below (over a megabyte with the
	// helpers) forever once the init is killed before it read it.
	for _, f := range []*os.File{cfgR, evW, logW, ctrlInit} {
		f.Close()
	}
	ctrl := t.ctrl
	go func() {
		_ = cmd.Wait()
		ctrl.Close() // wakes the reader, which marks the template dead
	}()
	go t.read()
	if err := cg.AddProc(cmd.Process.Pid); err != nil {
		return err
	}
	p.mu.Lock()
	disk := p.limits.DiskBytes
	p.mu.Unlock()
	preload := p.cfg.Preload
	if t.lean {
		preload = ""
	}
	zcfg, err := json.Marshal(map[string]any{"seccomp": p.seccomp, "preload": preload,
		"env": p.cfg.Env, "disk": disk})
	if err != nil {
		return err
	}
	env := append(slices.Clone(p.cfg.Env),
		// The template must stay single-threaded to fork safely.
		"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1")
	icfg := nsinit.Config{
		Workdir: dir, RootFS: l.Cfg.RootFS, Etc: l.Cfg.Etc, Env: env, Template: true,
		Files: []sandbox.File{
			{Path: zygoteDir + "/zygote.py", Data: zygoteSource},
			{Path: zygoteDir + "/zygote.so", Data: p.helper.so, Mode: 0o755},
			{Path: zygoteDir + "/reaper", Data: p.helper.reaper, Mode: 0o755},
			{Path: zygoteDir + "/config.json", Data: zcfg},
		},
		Steps: []nsinit.Step{{Name: "template", Argv: []string{p.cfg.Interpreter, "-u", zygoteDir + "/zygote.py"}}},
		// No file-size cap on the template: its children set their own
		// (they may lower a limit, never raise it).
		DiskBytes: 64 << 20, FileBytes: math.MaxInt64,
	}
	if err := json.NewEncoder(cfgW).Encode(&icfg); err != nil {
		return fmt.Errorf("send template config: %w", err)
	}
	cfgW.Close()
	select {
	case m := <-t.ready:
		if m.Threads != 1 {
			return fmt.Errorf("template has %d threads after its preload; refusing to fork it", m.Threads)
		}
		if len(m.StrayFDs) > 0 {
			return fmt.Errorf("template holds descriptors after its preload that its children would find closed: %s",
				strings.Join(m.StrayFDs, ", "))
		}
		if m.PreloadError != "" {
			l.Log.Warn("warm template preload failed", "slot", t.slot, "err", m.PreloadError)
		}
		if len(m.ReseedInPython) > 0 {
			l.Log.Info("warm template reseeds generators in Python (slower)", "slot", t.slot, "generators", m.ReseedInPython)
		}
		switch {
		case m.Pinned == -int(unix.ENOMEM):
			l.Log.Info("warm template could not pin its pages (slower runs): RLIMIT_MEMLOCK too low; in Docker give the container --ulimit memlock=8388608",
				"slot", t.slot)
		case m.Pinned < 0:
			l.Log.Info("warm template could not pin its pages (slower runs)", "slot", t.slot, "err", unix.Errno(-m.Pinned).Error())
		}
		p.mu.Lock()
		t.reseedInPython, t.pinned = m.ReseedInPython, m.Pinned
		p.mu.Unlock()
	case <-t.dead:
		return errors.New("template died during its preload")
	case <-time.After(5 * time.Minute):
		return errors.New("template preload timed out")
	case <-p.stop:
		return errors.New("stopping")
	}
	p.mu.Lock()
	t.alive = true
	p.mu.Unlock()
	return nil
}

// read dispatches the template's messages until its socket closes.
func (t *template) read() {
	defer func() {
		t.exitsMu.Lock()
		for pid, ch := range t.exits {
			close(ch)
			delete(t.exits, pid)
		}
		t.exitsMu.Unlock()
		close(t.dead)
	}()
	buf := make([]byte, 1<<16)
	for {
		n, err := t.ctrl.Read(buf)
		if err != nil || n == 0 {
			return
		}
		var m templateMsg
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			t.p.l.Log.Error("warm template: bad message", "slot", t.slot, "err", err)
			return
		}
		switch {
		case m.Ready:
			if len(m.Stdlib) > 0 {
				set := make(map[string]bool, len(m.Stdlib))
				for _, n := range m.Stdlib {
					set[n] = true
				}
				t.p.mu.Lock()
				t.p.stdlib = set
				t.p.mu.Unlock()
			}
			t.ready <- m
		case m.Forked > 0:
			t.exitsMu.Lock()
			t.exits[m.Forked] = make(chan syscall.WaitStatus, 1)
			t.exitsMu.Unlock()
			t.forked <- m.Forked
		case m.Exit > 0:
			t.exitsMu.Lock()
			ch := t.exits[m.Exit]
			delete(t.exits, m.Exit)
			t.exitsMu.Unlock()
			if ch != nil {
				ch <- syscall.WaitStatus(m.Status)
			}
		case m.Error != "":
			t.p.l.Log.Error("warm template", "slot", t.slot, "err", m.Error)
			t.forked <- -1
		}
	}
}

func (t *template) logOutput(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	for sc.Scan() {
		t.p.l.Log.Warn("warm template output", "slot", t.slot, "line", sc.Text())
	}
	_, _ = io.Copy(io.Discard, r)
}

func (t *template) logEvents(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var ev nsinit.Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil && (ev.Event == "fatal" || ev.Event == "exit") {
			t.p.l.Log.Warn("warm template init", "slot", t.slot, "event", ev.Event, "err", ev.Err, "exit", ev.Exit)
		}
	}
}

// fill keeps Spares children parked until the template dies or the pool stops.
func (t *template) fill() error {
	p := t.p
	for {
		p.mu.Lock()
		need := len(t.spares) < p.cfg.Spares
		p.mu.Unlock()
		if need {
			sp, err := t.forkSpare()
			if err != nil {
				return err
			}
			p.mu.Lock()
			t.spares = append(t.spares, sp)
			p.broadcast()
			p.mu.Unlock()
			continue
		}
		select {
		case <-t.wake:
		case <-t.dead:
			return errors.New("template died")
		case <-p.stop:
			return nil
		}
	}
}

// forkSpare has the template fork a child, waits for it to be isolated and
// parked, and moves it into a fresh cgroup of its own: the cgroup v1
// migration stall is paid here, off the request path.
func (t *template) forkSpare() (_ *spare, err error) {
	p := t.p
	p.mu.Lock()
	lim := p.limits
	p.mu.Unlock()
	sp := &spare{t: t, pidfd: -1, runPidfd: -1, cgID: -1, limits: lim}
	defer func() {
		if err != nil {
			sp.close()
		}
	}()
	if sp.cgID, sp.cg, err = t.newChildCgroup(lim); err != nil {
		return nil, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(pair[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(pair[0])
		unix.Close(pair[1])
		return nil, err
	}
	if sp.conn, err = fileConn(pair[0]); err != nil {
		unix.Close(pair[1])
		return nil, err
	}
	t.forkMu.Lock()
	_, _, err = t.ctrl.WriteMsgUnix([]byte(`{"op":"fork"}`), unix.UnixRights(pair[1]), nil)
	unix.Close(pair[1])
	if err == nil {
		select {
		case sp.tpid = <-t.forked:
		case <-t.dead:
			err = errors.New("template died")
		case <-time.After(10 * time.Second):
			err = errors.New("template did not fork")
		}
	}
	t.forkMu.Unlock()
	if err != nil {
		return nil, err
	}
	if sp.tpid <= 0 {
		return nil, errors.New("template failed to fork")
	}
	t.exitsMu.Lock()
	sp.exit = t.exits[sp.tpid]
	t.exitsMu.Unlock()
	if sp.exit == nil { // the template died meanwhile
		return nil, errors.New("template died")
	}
	// The kernel stamps the child's message with its pid as seen here.
	_ = sp.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	msg, pid, err := readFrame(sp.conn, true)
	_ = sp.conn.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, fmt.Errorf("warm child: %w", err)
	}
	var m struct {
		Ready bool   `json:"ready"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(msg, &m); err != nil || !m.Ready || pid <= 0 {
		return nil, fmt.Errorf("warm child setup failed: %s (pid %d)", m.Error, pid)
	}
	// pid 2 is blocked reading its socket, so pid is still it, and its
	// parent is its namespace's pid 1 for as long as it lives.
	if sp.runPidfd, err = unix.PidfdOpen(pid, 0); err != nil {
		return nil, err
	}
	ppid, err := parentPid(pid)
	if err != nil {
		return nil, err
	}
	if sp.pidfd, err = unix.PidfdOpen(ppid, 0); err != nil {
		return nil, err
	}
	if again, err := parentPid(pid); err != nil || again != ppid {
		return nil, fmt.Errorf("warm child: pid 1 changed while parked (%d, %d, %v)", ppid, again, err)
	}
	if err := sp.moveTo(sp.cg); err != nil {
		return nil, fmt.Errorf("warm child cgroup: %w", err)
	}
	return sp, nil
}

// moveTo moves the run's two processes into cg, pid 1 first: what either
// starts afterwards is born there.
func (sp *spare) moveTo(cg cgroup.Run) error {
	for _, fd := range []int{sp.pidfd, sp.runPidfd} {
		pid, err := pidOfPidfd(fd)
		if err == nil {
			err = cg.AddProc(pid)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parentPid reads a process's parent from /proc.
func parentPid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold anything but ends at the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return strconv.Atoi(f[1])
}

func (t *template) newChildCgroup(lim sandbox.Limits) (int, cgroup.Run, error) {
	t.p.mu.Lock()
	id := slices.Index(t.cgIDs, false)
	if id >= 0 {
		t.cgIDs[id] = true
	}
	t.p.mu.Unlock()
	if id < 0 {
		return -1, nil, errors.New("no free child cgroup id")
	}
	cg, err := t.p.l.CG.NewRun(warmCgroupID(t.slot, id+1), childLimits(t.p.l, lim))
	if err != nil {
		t.freeCgID(id)
		return -1, nil, err
	}
	return id, cg, nil
}

func (t *template) freeCgID(id int) {
	t.p.mu.Lock()
	if id >= 0 && id < len(t.cgIDs) {
		t.cgIDs[id] = false
	}
	t.p.mu.Unlock()
}

func childLimits(l *host.Host, lim sandbox.Limits) cgroup.Limits {
	return cgroup.Limits{Memory: lim.MemoryBytes, Pids: int64(lim.Pids), CPUs: l.Cfg.CPUs}
}

func (t *template) kill() {
	t.procMu.Lock()
	defer t.procMu.Unlock()
	if t.cmd != nil && t.cmd.Process != nil {
		_ = t.cmd.Process.Kill()
	}
}

// teardown kills the template (its pid namespace takes every parked child
// along) and removes its cgroups and workdir.
func (t *template) teardown() {
	p := t.p
	p.mu.Lock()
	t.alive = false
	spares := t.spares
	t.spares = nil
	p.broadcast()
	p.mu.Unlock()
	t.kill()
	if t.cmd != nil && t.cmd.Process != nil {
		<-t.dead
	}
	for _, sp := range spares {
		sp.close()
	}
	// A run may still hold a child of this template: wait for it.
	for {
		p.mu.Lock()
		busy := t.busy
		ch := p.changed
		p.mu.Unlock()
		if !busy {
			break
		}
		<-ch
	}
	if t.cg != nil {
		_ = t.cg.Empty()
		_ = t.cg.Destroy()
		t.cg = nil
	}
	if t.release != nil {
		_ = t.release()
		t.release = nil
	}
	t.procMu.Lock()
	t.cmd = nil
	t.procMu.Unlock()
	if t.ctrl != nil {
		t.ctrl.Close()
		t.ctrl = nil
	}
}

// close kills the child (if still there) and removes its cgroup.
func (sp *spare) close() {
	sp.destroy.Do(func() {
		if sp.pidfd >= 0 {
			_ = unix.PidfdSendSignal(sp.pidfd, unix.SIGKILL, nil, 0)
			unix.Close(sp.pidfd)
		}
		if sp.runPidfd >= 0 {
			unix.Close(sp.runPidfd)
		}
		if sp.conn != nil {
			sp.conn.Close()
		}
		if sp.cg != nil {
			if err := sp.cg.Empty(); err != nil {
				sp.t.p.l.Log.Error("warm cgroup not empty", "err", err)
			}
			if err := sp.cg.Recycle(); err != nil {
				sp.t.p.l.Log.Error("warm cgroup not removed", "err", err)
			}
		}
		sp.t.freeCgID(sp.cgID)
	})
}

// rehome moves the child into a fresh cgroup made with lim (a run whose
// limits differ from those the spare was parked with).
func (sp *spare) rehome(lim sandbox.Limits) error {
	id, cg, err := sp.t.newChildCgroup(lim)
	if err != nil {
		return err
	}
	if err := sp.moveTo(cg); err != nil {
		_ = cg.Destroy()
		sp.t.freeCgID(id)
		return err
	}
	_ = sp.cg.Recycle()
	sp.t.freeCgID(sp.cgID)
	sp.cg, sp.cgID, sp.limits = cg, id, lim
	return nil
}

// pidOfPidfd reads the pid a pidfd refers to (its fdinfo's Pid line).
func pidOfPidfd(fd int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var pid int
		if n, _ := fmt.Sscanf(sc.Text(), "Pid:\t%d", &pid); n == 1 && pid > 0 {
			return pid, nil
		}
	}
	return 0, errors.New("pidfd: process gone")
}

// ---- a run ----

// run serves spec from the pool. ok false means "run it cold": the pool
// does not serve this spec, has no child ready, or the child failed before
// the code started.
func (p *warmPool) run(ctx context.Context, spec sandbox.Spec, lim sandbox.Limits) (res sandbox.Result, ok bool, err error) {
	serves, execProgram, code := p.serves(spec, lim)
	if !serves {
		return res, false, nil
	}
	sp := p.acquire(ctx, !execProgram && p.needsPreload(code))
	if sp == nil {
		return res, false, nil
	}
	defer func() { go p.retire(sp) }()
	res, started, err := p.exec(ctx, spec, lim, sp, execProgram)
	if !started && ctx.Err() == nil {
		p.l.Log.Warn("warm child failed before the code started; running cold", "slot", sp.t.slot, "err", err)
		return sandbox.Result{}, false, nil
	}
	p.served.Add(1)
	return res, true, err
}

// needsPreload reports whether Python code may import more than the
// standard library (then a preloaded template serves it), as
// Config.ImportsBeyond judges; any code before the lean template has
// reported its standard library counts.
func (p *warmPool) needsPreload(code []byte) bool {
	p.mu.Lock()
	stdlib := p.stdlib
	p.mu.Unlock()
	return stdlib == nil || p.cfg.ImportsBeyond == nil || p.cfg.ImportsBeyond(code, stdlib)
}

// retire waits, off the request path, until the child's whole namespace is
// gone (a child that reported its status early may still be tearing down),
// removes its cgroup and frees its template for the next run.
func (p *warmPool) retire(sp *spare) {
	defer p.release(sp.t)
	_ = unix.PidfdSendSignal(sp.pidfd, unix.SIGKILL, nil, 0)
	if !sp.reaped {
		select {
		case <-sp.exit:
		case <-time.After(time.Minute):
			p.l.Log.Error("warm child not reaped", "slot", sp.t.slot)
		}
	}
	sp.close()
}

func (p *warmPool) exec(ctx context.Context, spec sandbox.Spec, lim sandbox.Limits, sp *spare, execProgram bool) (res sandbox.Result, started bool, err error) {
	l := p.l
	if lim.MemoryBytes != sp.limits.MemoryBytes || lim.Pids != sp.limits.Pids {
		if err := sp.rehome(lim); err != nil {
			return res, false, err
		}
		p.mu.Lock()
		p.limits = lim // park the next ones with these
		p.mu.Unlock()
	}
	if err := host.ChownTree(spec.Workdir, int(l.HostID(sp.t.slot))+policy.UID); err != nil {
		return res, false, fmt.Errorf("sandbox: chown workdir: %w", err)
	}
	wd, err := unix.OpenTree(unix.AT_FDCWD, spec.Workdir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return res, false, fmt.Errorf("sandbox: clone workdir mount: %w", err)
	}
	defer unix.Close(wd)
	st := spec.Steps[0]
	stdin, err := nsinit.StdinFD(st.Stdin)
	if err != nil {
		return res, false, err
	}
	defer unix.Close(stdin)
	outR, outW, err := os.Pipe()
	if err != nil {
		return res, false, err
	}
	defer outR.Close()
	defer outW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		return res, false, err
	}
	defer errR.Close()
	defer errW.Close()

	req := warmRequest{
		Argv: st.Argv, Env: spec.Env, Files: spec.Files, Disk: lim.DiskBytes, FSize: lim.FileBytes,
		CPUSecs: int64((lim.CPUTime + time.Second - 1) / time.Second), Exec: execProgram,
	}
	body, err := req.marshal()
	if err != nil {
		return res, false, err
	}
	fz := cgroup.StartFreezer(spec, sp.cg)
	defer fz.End()
	wl := lim
	if st.Timeout > 0 && st.Timeout < wl.WallTime {
		wl.WallTime = st.Timeout
	}
	sink := sandbox.NewOutputSink(lim.OutputBytes, spec.Stdout, spec.Stderr)
	start := time.Now()
	// pid 1 of the run's namespace: killing it kills everything in it.
	dog := sandbox.Watch(ctx, wl, sink.Overflow(), sp.cg.CPUUsage, func() {
		_ = unix.PidfdSendSignal(sp.pidfd, unix.SIGKILL, nil, 0)
		fz.End() // a frozen sandbox dies once thawed
	})
	dog.ArmCPU() // one step: the CPU limit counts from the start
	var v sandbox.Verdict
	ended := false
	endDog := func() {
		if !ended {
			v, ended = dog.End(), true
		}
	}
	defer endDog()
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	rights := unix.UnixRights(wd, stdin, int(outW.Fd()), int(errW.Fd()))
	if _, _, err := sp.conn.WriteMsgUnix(frame, rights, nil); err != nil {
		return res, false, fmt.Errorf("sandbox: warm child: %w", err)
	}
	if _, err := sp.conn.Write(body); err != nil {
		return res, false, fmt.Errorf("sandbox: warm child: %w", err)
	}
	outW.Close()
	errW.Close()

	sink.Start(outR, errR)
	// The child reports "started" (or its setup error), then, if the code
	// ran to its end, its exit status just before it exits. The code runs
	// in that process and may write anything to the socket: anything but
	// one well-formed status is ignored, and the run waits for the real exit.
	report := make(chan string, 1)
	early := make(chan syscall.WaitStatus, 1) // as wait(2) encodes it
	go func() {
		msg, _, err := readFrame(sp.conn, false)
		var m struct {
			Started bool   `json:"started"`
			Error   string `json:"error"`
		}
		switch {
		case err != nil:
			report <- "no report: " + err.Error()
			return
		case json.Unmarshal(msg, &m) != nil || !m.Started:
			report <- "setup failed: " + m.Error
			return
		default:
			report <- ""
		}
		msg, _, err = readFrame(sp.conn, false)
		var e struct {
			Exit   *int `json:"exit"`
			Signal *int `json:"signal"`
		}
		switch {
		case err != nil || json.Unmarshal(msg, &e) != nil:
		case e.Exit != nil && *e.Exit >= 0 && *e.Exit <= 255:
			early <- syscall.WaitStatus(*e.Exit << 8)
		case e.Signal != nil && *e.Signal > 0 && *e.Signal < 65:
			early <- syscall.WaitStatus(*e.Signal)
		}
	}()

	var (
		ws           syscall.WaitStatus
		exited       bool
		exitReported bool // ws is what the child reported before exiting
		setupErr     = "no report"
		reported     bool
		tStarted     time.Duration
	)
loop:
	for {
		select {
		case s := <-report:
			tStarted = time.Since(start)
			setupErr, reported = s, true
			started = s == ""
			report = nil
		case s := <-early:
			// Its namespace dies with it: no process of the run survives
			// to change the workdir while it is collected.
			_ = unix.PidfdSendSignal(sp.pidfd, unix.SIGKILL, nil, 0)
			ws, exited, exitReported = s, true, true
			break loop
		case s, ok := <-sp.exit:
			ws, exited = s, ok
			sp.reaped = true
			break loop
		}
	}
	endDog()
	fz.End()
	res.WallTime = time.Since(start)
	tExit := res.WallTime
	defer func() {
		p.l.Log.Debug("warm run", "slot", sp.t.slot, "started", tStarted, "exit", tExit, "done", time.Since(start))
	}()
	if !reported {
		select {
		case s := <-report:
			setupErr, started = s, s == ""
		case <-time.After(time.Second):
		}
	}
	sink.Drain(outR, errR)
	if !exitReported {
		if err := sp.cg.Empty(); err != nil {
			return res, started, fmt.Errorf("sandbox: %w", err)
		}
	}
	stats, err := sp.cg.Stats()
	if err != nil {
		return res, started, fmt.Errorf("sandbox: cgroup stats: %w", err)
	}
	res.CPUTime, res.MemoryPeak = stats.CPU, stats.MemPeak
	if !started {
		if v.Reason != "" { // stopped from outside while setting up
			res.Status, res.ExitCode, res.Signal, res.FailedStep = v.Reason, 128+int(syscall.SIGKILL), "SIGKILL", st.Name
			return res, v.Reason == sandbox.StatusKilled || v.Reason == sandbox.StatusTimeout, nil
		}
		return res, false, fmt.Errorf("sandbox: warm child %s", setupErr)
	}
	if !exited {
		return res, true, errors.New("sandbox: warm template died during the run")
	}
	e := sandbox.Ending{Verdict: v, OOMKills: stats.OOMKills, CPUUsed: stats.CPU}
	switch {
	case ws.Signaled():
		e.Signal = ws.Signal()
		res.Signal = unix.SignalName(ws.Signal())
		res.ExitCode = 128 + int(ws.Signal())
	default:
		res.ExitCode = ws.ExitStatus()
	}
	e.Failed = res.ExitCode != 0
	if e.Failed {
		res.FailedStep = st.Name
	}
	res.Status = sandbox.Classify(e)
	return res, true, nil
}

// readFrame reads one length-prefixed frame; with creds it also returns the
// sender's pid from SCM_CREDENTIALS (SO_PASSCRED must be set).
func readFrame(c *net.UnixConn, creds bool) ([]byte, int, error) {
	var head [4]byte
	pid := 0
	got := 0
	if creds {
		oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
		n, oobn, _, _, err := c.ReadMsgUnix(head[:], oob)
		if err != nil {
			return nil, 0, err
		}
		got = n
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for i := range msgs {
				if uc, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
					pid = int(uc.Pid)
				}
			}
		}
	}
	if _, err := io.ReadFull(c, head[got:]); err != nil {
		return nil, 0, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > 1<<20 {
		return nil, 0, errors.New("frame too large")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, 0, err
	}
	return body, pid, nil
}

// fileConn wraps a socket fd (taking ownership) as a *net.UnixConn, so
// reads go through the poller and Close wakes them.
func fileConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("not a unix socket")
	}
	return uc, nil
}

// Base is the backend a Pool wraps: it runs every spec the pool does not
// serve, and lends the pool its instance (the templates take the slots
// above Config.Slots, in its uid bands and cgroup tree) and its init.
type Base interface {
	sandbox.Sandbox
	HostResources() *host.Host
	InitBinary() *os.File
}

// Pool is a Sandbox that serves what it can from warm templates and
// hands everything else to its base backend.
type Pool struct {
	base Base
	warm *warmPool // nil: off (no Python slots, no compiler, degraded host)
	// mu is held shared by each Run and exclusively by Close, which so
	// waits for running runs.
	mu     sync.RWMutex
	closed atomic.Bool
}

var _ sandbox.Sandbox = (*Pool)(nil)

// New starts cfg.Python warm slots over base. A host without usable
// cgroups or without a C compiler gets a pool that is off: every run
// goes to base, and Describe says so (no Warm report).
func New(base Base, cfg Config) (*Pool, error) {
	p := &Pool{base: base}
	h := base.HostResources()
	switch {
	case cfg.Python <= 0:
		return p, nil
	case h.Degraded:
		h.Log.Warn("warm pool off: no usable cgroups (degraded sandbox)")
		return p, nil
	}
	w, err := newWarmPool(h, base.InitBinary(), cfg)
	switch {
	case errors.Is(err, errNoHelper):
		h.Log.Warn("warm pool off: every run starts cold", "err", err)
	case err != nil:
		return nil, err
	}
	p.warm = w
	return p, nil
}

// NewWorkdir is the base backend's.
func (p *Pool) NewWorkdir(maxBytes int64) (string, func() error, error) {
	return p.base.NewWorkdir(maxBytes)
}

// Run serves spec from a warm template when the pool serves it and one is
// ready, from the base backend otherwise.
func (p *Pool) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	if err := sandbox.ValidateSpec(spec); err != nil {
		return sandbox.Result{}, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed.Load() {
		return sandbox.Result{}, errors.New("sandbox: closed")
	}
	if p.warm != nil {
		if res, ok, err := p.warm.run(ctx, spec, spec.Limits.WithDefaults()); ok {
			return res, err
		}
	}
	return p.base.Run(ctx, spec)
}

// Describe is the base backend's report with the pool's templates added.
func (p *Pool) Describe() sandbox.Isolation {
	d := p.base.Describe()
	if p.warm != nil {
		d.Slots += TemplatesPerSlot * p.warm.cfg.Python // cold, then warm (preloaded and lean)
		d.Warm = p.warm.describe()
	}
	return d
}

// Close waits for running runs, stops the templates, then closes the base.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Swap(true) {
		return nil
	}
	if p.warm != nil {
		p.warm.close()
	}
	return p.base.Close()
}

// Served is the number of runs the warm pool has served (the others
// ran cold).
func (p *Pool) Served() int64 {
	if p.warm == nil {
		return 0
	}
	return p.warm.served.Load()
}

// WaitWarm blocks until every warm template has a parked child (or ctx
// ends): for tests and benchmarks that must exercise the warm path.
func (p *Pool) WaitWarm(ctx context.Context) error {
	if p.warm == nil {
		return nil
	}
	for {
		p.warm.mu.Lock()
		ready := true
		for _, t := range p.warm.tmpls {
			ready = ready && t.alive && len(t.spares) > 0
		}
		ch := p.warm.changed
		p.warm.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("sandbox: warm pool not ready: %w", ctx.Err())
		}
	}
}

// HostResources is the base backend's instance.
func (p *Pool) HostResources() *host.Host { return p.base.HostResources() }
