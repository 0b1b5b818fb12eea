//go:build linux

package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const Root = "/sys/fs/cgroup"

// Limits are the kernel-enforced bounds of one run's cgroup.
type Limits struct {
	Memory int64 // bytes, swap included
	Pids   int64
	CPUs   float64
}

// Stats are what a run's cgroup accounted.
type Stats struct {
	CPU      time.Duration
	MemPeak  int64
	OOMKills uint64
}

// Tree manages the cgroups of one instance: <parent>/<K>/s<slot>,
// created fresh for each run so that no charge or peak of an earlier run
// leaks into the next.
type Tree interface {
	NewRun(slot int, lim Limits) (Run, error)
	// purge kills every process of the instance's tree and removes it; used
	// on start (a crashed predecessor's leftovers) and on Close.
	Purge() error
	Describe() sandbox.CgroupReport
}

type Run interface {
	// addProc moves pid in; a no-op when the process was cloned into the
	// cgroup (cgroupFD).
	AddProc(pid int) error
	// cgroupFD returns a directory fd for CLONE_INTO_CGROUP, or -1.
	FD() int
	CPUUsage() (time.Duration, error)
	Stats() (Stats, error)
	// empty kills whatever is still inside and waits until nothing is.
	Empty() error
	Destroy() error
	// setFrozen freezes (true) or thaws every process of the cgroup and
	// returns once the kernel reports it done, or fails after freezeWait.
	SetFrozen(frozen bool) error
	// recycle is destroy for a cgroup whose slot will be used again: the
	// tree may keep it, emptied and with its counters reset, for the next
	// newRun of the slot (creating and removing cgroups costs the server
	// and the kernel's cgroup workers ~10 ms of CPU per run on cgroup v1).
	Recycle() error
}

func NewTree(parent string, instance int) (Tree, error) {
	base := "/" + strings.Trim(parent, "/") + "/" + strconv.Itoa(instance)
	switch cgroups.Mode() {
	case cgroups.Unified:
		t := &cg2Tree{base: base}
		if err := t.delegate(); err != nil {
			return nil, err
		}
		_, err := os.Stat(filepath.Join(Root, "memory.peak"))
		if err != nil { // the root has none: look at a child's
			_, err = os.Stat(filepath.Join(Root, strings.Trim(parent, "/"), "memory.peak"))
		}
		t.samplePeak = err != nil
		return t, nil
	case cgroups.Legacy, cgroups.Hybrid:
		t := &cg1Tree{base: base}
		for _, c := range []string{"memory", "pids", "cpu", "cpuacct"} {
			if _, err := os.Stat(filepath.Join(Root, c, "cgroup.procs")); err != nil {
				return nil, fmt.Errorf("cgroup v1 controller %s not mounted at %s/%s", c, Root, c)
			}
		}
		_, err := os.Stat(filepath.Join(Root, "memory", "memory.memsw.limit_in_bytes"))
		t.memsw = err == nil
		// Optional: without it stateful sessions run unfrozen between calls
		// (Describe says so). Mounted read-only (a container whose
		// entrypoint could not remount it) counts as absent: the other
		// hierarchies must not be refused for it.
		_, err = os.Stat(filepath.Join(Root, "freezer", "cgroup.procs"))
		t.freezer = err == nil && unix.Access(filepath.Join(Root, "freezer"), unix.W_OK) == nil
		return t, nil
	default:
		return nil, errors.New("no cgroup filesystem mounted at " + Root)
	}
}

// ---- cgroup v1 ----

type cg1Tree struct {
	base    string
	memsw   bool // swap accounting on: memory.memsw.* bounds memory+swap
	freezer bool // the freezer hierarchy is mounted: runs join it too

	mu   sync.Mutex
	idle map[int]*cg1Run // recycled cgroups by slot
}

// reuseCharge is the most unreclaimable memory (anonymous, tmpfs: a
// workdir not yet unmounted) a recycled cgroup may still have charged to be
// reused: above it the next run would get less than its limit, so a fresh
// cgroup is made instead.
const reuseCharge = 4 << 20

func (t *cg1Tree) hierarchy() ([]cgroup1.Subsystem, error) {
	subs := []cgroup1.Subsystem{
		cgroup1.NewMemory(Root), cgroup1.NewPids(Root),
		cgroup1.NewCpu(Root), cgroup1.NewCpuacct(Root),
	}
	if t.freezer {
		subs = append(subs, cgroup1.NewFreezer(Root))
	}
	return subs, nil
}

// controllers are the v1 hierarchies a run's cgroup lives in.
func (t *cg1Tree) controllers() []string {
	c := []string{"memory", "pids", "cpu", "cpuacct"}
	if t.freezer {
		c = append(c, "freezer")
	}
	return c
}

func (t *cg1Tree) Describe() sandbox.CgroupReport {
	return sandbox.CgroupReport{Version: 1, Path: t.base,
		Controllers: t.controllers(), MemSW: t.memsw, Freezer: t.freezer}
}

func (t *cg1Tree) NewRun(slot int, lim Limits) (Run, error) {
	t.mu.Lock()
	r := t.idle[slot]
	delete(t.idle, slot)
	t.mu.Unlock()
	if r != nil {
		if r.reuse(lim) == nil {
			return r, nil
		}
		_ = r.Destroy()
	}
	path := fmt.Sprintf("%s/s%d", t.base, slot)
	// A leftover of a run whose cleanup failed: empty and drop it first.
	if _, err := os.Stat(filepath.Join(Root, "memory", path)); err == nil {
		old := &cg1Run{path: path, tree: t}
		if cg, err := cgroup1.Load(cgroup1.StaticPath(path), cgroup1.WithHierarchy(t.hierarchy)); err == nil {
			old.cg = cg
			_ = old.Empty()
			_ = old.Destroy()
		}
	}
	cg, err := cgroup1.New(cgroup1.StaticPath(path), t.resources(lim), cgroup1.WithHierarchy(t.hierarchy))
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", path, err)
	}
	fresh := &cg1Run{cg: cg, path: path, tree: t, slot: slot, lim: lim}
	if t.freezer {
		// A freezer cgroup of that name left frozen (by a predecessor that
		// did not know of the freezer, say) would freeze the run's init.
		if err := writeFreezerState(fresh.file("freezer", "freezer.state"), false); err != nil {
			_ = fresh.Destroy()
			return nil, fmt.Errorf("cgroup %s: %w", path, err)
		}
	}
	return fresh, nil
}

func (t *cg1Tree) resources(lim Limits) *specs.LinuxResources {
	period := uint64(100000)
	quota := int64(lim.CPUs * float64(period))
	res := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &lim.Memory},
		Pids:   &specs.LinuxPids{Limit: &lim.Pids},
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
	}
	if t.memsw {
		res.Memory.Swap = &lim.Memory
	}
	return res
}

func (t *cg1Tree) Purge() error {
	t.mu.Lock()
	t.idle = nil
	t.mu.Unlock()
	var errs []error
	// The freezer first: a frozen leftover's processes die once thawed,
	// which leaves the other hierarchies' cgroups empty for their rmdir.
	ctrls := t.controllers()
	slices.Reverse(ctrls)
	for _, c := range ctrls {
		dir := filepath.Join(Root, c, t.base)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		errs = append(errs, RemoveTree(dir, KillAndThaw)...)
	}
	return errors.Join(errs...)
}

// RemoveTree empties (with empty, given a cgroup.procs path) and
// removes dir and every cgroup below it, children first: rmdir only works
// on leaves.
func RemoveTree(dir string, empty func(procs string) error) []error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var out []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := empty(filepath.Join(dirs[i], "cgroup.procs")); err != nil {
			out = append(out, err)
		}
		if err := rmdirRetry(dirs[i]); err != nil {
			out = append(out, err)
		}
	}
	return out
}

type cg1Run struct {
	cg   cgroup1.Cgroup
	path string
	tree *cg1Tree
	slot int
	lim  Limits
	// oomBase is memory.oom_control's oom_kill when the cgroup was last
	// reused: that counter cannot be reset.
	oomBase uint64

	// Open counter files, by ctrl/name: a run reads and resets ~10 of
	// them, and each open of a cgroup file walks its path (~0.1 ms here);
	// the descriptors live as long as the cgroup is recycled.
	fmu   sync.Mutex
	files map[string]*os.File
}

// counter returns the open file ctrl/name of r (read-write when the file
// allows it).
func (r *cg1Run) counter(ctrl, name string) (*os.File, error) {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	key := ctrl + "/" + name
	if f := r.files[key]; f != nil {
		return f, nil
	}
	p := r.file(ctrl, name)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		f, err = os.Open(p)
	}
	if err != nil {
		return nil, err
	}
	if r.files == nil {
		r.files = map[string]*os.File{}
	}
	r.files[key] = f
	return f, nil
}

// readCounter reads ctrl/name whole from offset 0 (these files
// regenerate their content on each read from the start; not so
// cgroup.procs, see isEmpty).
func (r *cg1Run) readCounter(ctrl, name string) ([]byte, error) {
	f, err := r.counter(ctrl, name)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 8192)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

func (r *cg1Run) readUint(ctrl, name string) (uint64, error) {
	b, err := r.readCounter(ctrl, name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

func (r *cg1Run) readKV(ctrl, name string) (map[string]uint64, error) {
	b, err := r.readCounter(ctrl, name)
	if err != nil {
		return nil, err
	}
	return parseKV(b), nil
}

func (r *cg1Run) writeCounter(ctrl, name, value string) error {
	f, err := r.counter(ctrl, name)
	if err != nil {
		return err
	}
	_, err = f.WriteAt([]byte(value), 0)
	return err
}

func (r *cg1Run) closeCounters() {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	for _, f := range r.files {
		f.Close()
	}
	r.files = nil
}

func (r *cg1Run) file(ctrl, name string) string {
	return filepath.Join(Root, ctrl, r.path, name)
}

func (r *cg1Run) AddProc(pid int) error { return r.cg.AddProc(uint64(pid)) }
func (r *cg1Run) FD() int               { return -1 }

func (r *cg1Run) CPUUsage() (time.Duration, error) {
	n, err := r.readUint("cpuacct", "cpuacct.usage")
	return time.Duration(n), err
}

func (r *cg1Run) Stats() (Stats, error) {
	var s Stats
	var err error
	s.CPU, err = r.CPUUsage()
	if err != nil {
		return s, err
	}
	peak, err := r.readUint("memory", "memory.max_usage_in_bytes")
	if err != nil {
		return s, err
	}
	s.MemPeak = int64(peak)
	kv, err := r.readKV("memory", "memory.oom_control")
	if err != nil {
		return s, err
	}
	s.OOMKills = kv["oom_kill"] - min(kv["oom_kill"], r.oomBase)
	return s, nil
}

func (r *cg1Run) Recycle() error {
	if r.cg == nil || r.tree == nil || !r.isEmpty() {
		return r.Destroy()
	}
	r.tree.mu.Lock()
	if r.tree.idle == nil {
		r.tree.idle = map[int]*cg1Run{}
	}
	old := r.tree.idle[r.slot]
	r.tree.idle[r.slot] = r
	r.tree.mu.Unlock()
	if old != nil && old != r {
		return old.Destroy()
	}
	return nil
}

func (r *cg1Run) isEmpty() bool {
	// Opened afresh: an open cgroup.procs (v1) keeps serving the pid list
	// it loaded for up to a second.
	data, err := os.ReadFile(r.file("pids", "cgroup.procs"))
	return err == nil && len(bytes.TrimSpace(data)) == 0
}

// setLimits changes a cgroup's limits. With swap accounting the kernel
// keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every
// step, so a raise sets memsw first and a cut sets it last.
func (r *cg1Run) setLimits(lim Limits) error {
	res := r.tree.resources(lim)
	mem := []string{"memory.limit_in_bytes"}
	if r.tree.memsw {
		mem = append(mem, "memory.memsw.limit_in_bytes")
		if lim.Memory > r.lim.Memory {
			slices.Reverse(mem)
		}
	}
	for _, f := range mem {
		if err := os.WriteFile(r.file("memory", f), []byte(strconv.FormatInt(lim.Memory, 10)), 0); err != nil {
			return err
		}
	}
	res.Memory = nil
	return r.cg.Update(res)
}

// reuse readies a recycled cgroup (empty: recycle only keeps empty ones,
// and nothing enters it until newRun returns it) for a new run with lim:
// little memory still charged, limits set, usage and peak counters reset.
func (r *cg1Run) reuse(lim Limits) error {
	// Clean page cache the last run pulled in stays charged but is
	// reclaimed under pressure; anonymous and tmpfs memory is not.
	st, err := r.readKV("memory", "memory.stat")
	if err != nil || st["rss"]+st["shmem"] > reuseCharge {
		return errors.New("cgroup still charged")
	}
	if lim != r.lim {
		if err := r.setLimits(lim); err != nil {
			return err
		}
		r.lim = lim
	}
	resets := [][2]string{{"cpuacct", "cpuacct.usage"}, {"memory", "memory.max_usage_in_bytes"}}
	if r.tree.memsw {
		resets = append(resets, [2]string{"memory", "memory.memsw.max_usage_in_bytes"})
	}
	for _, f := range resets {
		if err := r.writeCounter(f[0], f[1], "0"); err != nil {
			return err
		}
	}
	kv, err := r.readKV("memory", "memory.oom_control")
	if err != nil {
		return err
	}
	r.oomBase = kv["oom_kill"]
	return nil
}

// empty kills, then thaws (a v1 freezer holds a SIGKILL pending until
// the task is thawed; killed first, a task leaves the freezer straight to
// its death, without returning to its code), then waits.
func (r *cg1Run) Empty() error {
	if r.tree != nil && r.tree.freezer {
		_ = KillProcs(r.file("pids", "cgroup.procs"))
		_ = writeFreezerState(r.file("freezer", "freezer.state"), false)
	}
	return EmptyProcs(r.file("pids", "cgroup.procs"))
}

func (r *cg1Run) SetFrozen(frozen bool) error {
	if r.tree == nil || !r.tree.freezer {
		return errNoFreezer
	}
	state := r.file("freezer", "freezer.state")
	want := map[bool]string{true: "FROZEN", false: "THAWED"}[frozen]
	return waitFreezer(func() (bool, error) {
		// Written again on every round: a v1 freeze that found a task it
		// could not stop yet (FREEZING) tries again.
		if err := writeFreezerState(state, frozen); err != nil {
			return false, err
		}
		b, err := os.ReadFile(state)
		return strings.TrimSpace(string(b)) == want, err
	})
}

func (r *cg1Run) Destroy() error {
	r.closeCounters()
	if r.cg == nil {
		return nil
	}
	return r.cg.Delete()
}

// ---- cgroup v2 ----

// cg2Tree is the unified-hierarchy variant (most Docker hosts). Runs are
// cloned straight into their cgroup (CLONE_INTO_CGROUP), which avoids the
// migration cost entirely.
type cg2Tree struct {
	base string
	// samplePeak: no memory.peak (Linux < 5.19); a run's peak is then the
	// highest memory.current seen by the parent's CPU poll (every
	// cpuPoll), a lower bound of the real one.
	samplePeak bool
}

// cg2Needed are the controllers every run's cgroup must have; io is
// enabled too where the host offers it, not required.
var cg2Needed = []string{"memory", "pids", "cpu"}

// delegate enables the controllers runs need in every cgroup from the
// root of the mount down to the instance's, and says how to fix the host
// when it cannot: a v2 host (or container) that keeps memory or pids to
// itself would have every run unlimited.
func (t *cg2Tree) delegate() error {
	dir := Root
	parts := strings.Split(strings.Trim(t.base, "/"), "/")
	for i := 0; i <= len(parts); i++ {
		if i > 0 {
			dir = filepath.Join(dir, parts[i-1])
			if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("cgroup v2: cannot create %s (%w): mount /sys/fs/cgroup read-write (in a container: CAP_SYS_ADMIN, cgroupns=private and the image's entrypoint)", dir, err)
			}
		}
		if i == len(parts) {
			break
		}
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		if err != nil {
			return fmt.Errorf("cgroup v2: %w", err)
		}
		have := strings.Fields(string(b))
		var missing []string
		for _, c := range cg2Needed {
			if !slices.Contains(have, c) {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("cgroup v2: the %s controller(s) are not delegated to %s (it has: %s); "+
				"delegate them to codeexec's cgroup: with systemd, Delegate=yes on codeexec's unit; in Docker, run the image with cgroupns=private (its entrypoint delegates); "+
				"by hand, echo '+memory +pids +cpu' into cgroup.subtree_control of each cgroup above it",
				strings.Join(missing, ", "), dir, strings.Join(have, " "))
		}
		enable := []string{"+memory", "+pids", "+cpu"}
		if slices.Contains(have, "io") {
			enable = append(enable, "+io")
		}
		sub := filepath.Join(dir, "cgroup.subtree_control")
		if cur, err := os.ReadFile(sub); err == nil && subset(cg2Needed, strings.Fields(string(cur))) {
			continue
		}
		if err := os.WriteFile(sub, []byte(strings.Join(enable, " ")), 0); err != nil {
			hint := "mount /sys/fs/cgroup read-write"
			if errors.Is(err, syscall.EBUSY) {
				hint = "this cgroup has processes of its own, which cgroup v2 forbids alongside sub-cgroups with controllers: move them into a leaf first " +
					"(mkdir " + filepath.Join(dir, "init") + " and write each pid of its cgroup.procs into init/cgroup.procs; the image's entrypoint does this)"
			}
			return fmt.Errorf("cgroup v2: cannot enable %s for the sub-cgroups of %s (%w): %s", strings.Join(enable, " "), dir, err, hint)
		}
	}
	return nil
}

// subset reports whether every element of want is in have.
func subset(want, have []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func (t *cg2Tree) Describe() sandbox.CgroupReport {
	// What the instance's cgroup (made and removed with its runs) may
	// hand to them: its parent's delegation.
	b, _ := os.ReadFile(filepath.Join(Root, path.Dir(t.base), "cgroup.subtree_control"))
	peak := "memory.peak"
	if t.samplePeak {
		peak = "memory.current sampled every " + sandbox.CPUPoll.String() + " (no memory.peak before Linux 5.19)"
	}
	return sandbox.CgroupReport{Version: 2, Path: t.base,
		Controllers: strings.Fields(string(b)), MemoryPeak: peak}
}

func (t *cg2Tree) NewRun(slot int, lim Limits) (Run, error) {
	group := fmt.Sprintf("%s/s%d", t.base, slot)
	dir := filepath.Join(Root, group)
	if _, err := os.Stat(dir); err == nil {
		_ = EmptyProcs(filepath.Join(dir, "cgroup.procs"))
		_ = rmdirRetry(dir)
	}
	period := uint64(100000)
	quota := int64(lim.CPUs * float64(period))
	zero := int64(0)
	res := &cgroup2.Resources{
		Memory: &cgroup2.Memory{Max: &lim.Memory, Swap: &zero},
		Pids:   &cgroup2.Pids{Max: lim.Pids},
		CPU:    &cgroup2.CPU{Max: cgroup2.NewCPUMax(&quota, &period)},
	}
	m, err := cgroup2.NewManager(Root, group, res)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", group, err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = m.Delete()
		return nil, err
	}
	return &cg2Run{m: m, dir: dir, fd: fd, samplePeak: t.samplePeak}, nil
}

func (t *cg2Tree) Purge() error {
	dir := filepath.Join(Root, t.base)
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.WriteFile(filepath.Join(dirs[i], "cgroup.kill"), []byte("1"), 0)
		_ = os.WriteFile(filepath.Join(dirs[i], "cgroup.freeze"), []byte("0"), 0)
		if err := EmptyProcs(filepath.Join(dirs[i], "cgroup.procs")); err != nil {
			errs = append(errs, err)
		}
		if err := rmdirRetry(dirs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type cg2Run struct {
	m   *cgroup2.Manager
	dir string
	fd  int

	samplePeak bool         // see cg2Tree
	sampled    atomic.Int64 // highest memory.current seen, when samplePeak
}

// addProc moves a process that was not cloned into the cgroup (a warm
// child forked by its template) in: on v2 a write of its pid, as seen
// from this pid namespace, to cgroup.procs. Memory the process already
// touched stays charged where it was; what it allocates from now on, its
// threads and its children are the new cgroup's.
func (r *cg2Run) AddProc(pid int) error {
	return os.WriteFile(filepath.Join(r.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

func (r *cg2Run) FD() int { return r.fd }

func (r *cg2Run) CPUUsage() (time.Duration, error) {
	if r.samplePeak {
		r.samplePeakNow()
	}
	kv, err := readKV(filepath.Join(r.dir, "cpu.stat"))
	return time.Duration(kv["usage_usec"]) * time.Microsecond, err
}

func (r *cg2Run) samplePeakNow() {
	if cur, err := readUintFile(filepath.Join(r.dir, "memory.current")); err == nil {
		for {
			old := r.sampled.Load()
			if int64(cur) <= old || r.sampled.CompareAndSwap(old, int64(cur)) {
				break
			}
		}
	}
}

func (r *cg2Run) Stats() (Stats, error) {
	var s Stats
	var err error
	if s.CPU, err = r.CPUUsage(); err != nil {
		return s, err
	}
	if r.samplePeak { // Linux < 5.19
		r.samplePeakNow()
		s.MemPeak = r.sampled.Load()
	} else if peak, err := readUintFile(filepath.Join(r.dir, "memory.peak")); err == nil {
		s.MemPeak = int64(peak)
	}
	kv, err := readKV(filepath.Join(r.dir, "memory.events"))
	if err != nil {
		return s, err
	}
	s.OOMKills = kv["oom_kill"]
	return s, nil
}

func (r *cg2Run) Empty() error {
	// SIGKILL ends a task frozen by the v2 freezer; the thaw is for a
	// kernel without cgroup.kill, whose fallback kill is per process.
	_ = os.WriteFile(filepath.Join(r.dir, "cgroup.kill"), []byte("1"), 0)
	_ = os.WriteFile(filepath.Join(r.dir, "cgroup.freeze"), []byte("0"), 0)
	return EmptyProcs(filepath.Join(r.dir, "cgroup.procs"))
}

func (r *cg2Run) SetFrozen(frozen bool) error {
	v := map[bool]string{true: "1", false: "0"}[frozen]
	if err := os.WriteFile(filepath.Join(r.dir, "cgroup.freeze"), []byte(v), 0); err != nil {
		return err
	}
	return waitFreezer(func() (bool, error) {
		kv, err := readKV(filepath.Join(r.dir, "cgroup.events"))
		n, ok := kv["frozen"]
		if err == nil && !ok {
			return false, errNoFreezer
		}
		return n == map[bool]uint64{true: 1, false: 0}[frozen], err
	})
}

func (r *cg2Run) Recycle() error { return r.Destroy() }

// destroy removes the cgroup; one already gone (a purge of the whole tree
// on Close got there first) is no error.
func (r *cg2Run) Destroy() error {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
	return rmdirRetry(r.dir)
}

// ---- helpers ----

// freezeWait bounds a freeze or thaw: a task in an uninterruptible sleep
// (a v1 freezer cannot stop it there) may hold the change up.
const freezeWait = 5 * time.Second

var errNoFreezer = errors.New("no cgroup freezer")

// waitFreezer polls done until it reports the freezer's change complete.
func waitFreezer(done func() (bool, error)) error {
	deadline := time.Now().Add(freezeWait)
	for pause := 100 * time.Microsecond; ; pause = min(2*pause, 10*time.Millisecond) {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup freezer: not settled after %s", freezeWait)
		}
		time.Sleep(pause)
	}
}

func writeFreezerState(file string, frozen bool) error {
	return os.WriteFile(file, []byte(map[bool]string{true: "FROZEN", false: "THAWED"}[frozen]), 0)
}

// KillAndThaw SIGKILLs every process of a cgroup (given its cgroup.procs)
// and, in a v1 freezer hierarchy, thaws it so that they die.
func KillAndThaw(procs string) error {
	err := KillProcs(procs)
	if st := filepath.Join(filepath.Dir(procs), "freezer.state"); fileExists(st) {
		_ = writeFreezerState(st, false)
	}
	return err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// KillProcs SIGKILLs every process listed in a cgroup.procs file.
func KillProcs(procs string) error {
	data, err := os.ReadFile(procs)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	return nil
}

// EmptyProcs kills until the cgroup has no process left (a fork racing
// the kill shows up in the next round), for up to 5 s.
func EmptyProcs(procs string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(procs)
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still has processes: %s", filepath.Dir(procs), bytes.TrimSpace(data))
		}
		_ = KillProcs(procs)
		time.Sleep(2 * time.Millisecond)
	}
}

func rmdirRetry(dir string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.EAGAIN) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("rmdir %s: %w", dir, err)
}

func readUintFile(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// readKV parses "key value" lines (memory.oom_control, memory.events, cpu.stat).
func readKV(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseKV(b), nil
}

func parseKV(b []byte) map[string]uint64 {
	kv := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			kv[k] = n
		}
	}
	return kv
}

// None stands in for cgroups on a host that has none writable, when
// the operator allowed a degraded sandbox: the init then bounds each
// sandbox with rlimits (RLIMIT_AS for memory, RLIMIT_NPROC for processes:
// the sandbox's uid is its own, so the count is the sandbox's) and
// RLIMIT_CPU per process; nothing accounts peak memory or OOM kills.
type None struct{}

func (None) NewRun(int, Limits) (Run, error) { return None{}, nil }
func (None) Purge() error                    { return nil }
func (None) Describe() sandbox.CgroupReport {
	return sandbox.CgroupReport{Instead: "RLIMIT_AS for memory, RLIMIT_NPROC per sandbox uid for processes, RLIMIT_CPU per process"}
}
func (None) AddProc(int) error                { return nil }
func (None) FD() int                          { return -1 }
func (None) CPUUsage() (time.Duration, error) { return 0, errors.New("no cgroups") }
func (None) Stats() (Stats, error)            { return Stats{}, nil }
func (None) Empty() error                     { return nil }
func (None) Destroy() error                   { return nil }
func (None) Recycle() error                   { return nil }
func (None) SetFrozen(bool) error             { return errNoFreezer }

// Usable creates and removes a probe cgroup: a mounted but read-only
// hierarchy (a container without the right to write it) fails here. The
// probe takes the name of slot probeSlot, which must be free.
func Usable(t Tree, probeSlot int) error {
	probe, err := t.NewRun(probeSlot, Limits{Memory: 64 << 20, Pids: 64, CPUs: 1})
	if err != nil {
		return err
	}
	return probe.Destroy()
}
