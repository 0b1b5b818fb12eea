//go:build linux

package nsinit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/policy"
	"github.com/codeexec/codeexec/internal/sandbox/seccomp"
	"golang.org/x/sys/unix"
)

// The sandbox init is this same binary, re-executed by Run with argv[0] =
// Arg0 inside fresh namespaces. It is pid 1 there; it reads its
// Config from fd ConfigFD, reports initEvents on fd EventFD,
// builds the root, drops privileges and runs the steps.
const (
	Arg0     = "codeexec-sandbox-init"
	ConfigFD = 3
	EventFD  = 4

	prlimitBin = "/usr/bin/prlimit" // util-linux: rlimits for a step without cgroups
	newRootDir = "/tmp"
)

type Config struct {
	Workdir   string   // host path, bind-mounted at /mnt/data
	RootFS    string   // "" means the host's /
	Etc       []string // /etc entries (globs) beyond policy.EtcAllowlist
	Files     []sandbox.File
	Env       []string
	Steps     []Step
	DiskBytes int64
	FileBytes int64
	CPUTime   time.Duration // RLIMIT_CPU of the last step
	Network   bool
	// Nameserver goes to /etc/resolv.conf of a networked run ("" : none).
	Nameserver string
	Template   bool // a warm pool's template: see runTemplate
	// Without cgroups (degraded): RLIMIT_AS and RLIMIT_NPROC, 0 = unset.
	AddressSpace uint64
	Processes    uint64
}

type Step struct {
	Name    string
	Argv    []string
	Timeout time.Duration
	Stdin   []byte
}

// Event is one line of init's report: "start" and "exit" per step, or
// "fatal" when the sandbox could not be set up.
type Event struct {
	Event    string `json:"event"`
	Step     int    `json:"step"`
	Exit     int    `json:"exit,omitempty"`
	Signal   int    `json:"signal,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Err      string `json:"err,omitempty"`
}

// MaybeInit must be the first thing main (and TestMain) does: when this
// process is a sandbox init it runs the sandbox and exits, otherwise it
// returns at once.
func MaybeInit() {
	if len(os.Args) != 1 || os.Args[0] != Arg0 || os.Getpid() != 1 {
		return
	}
	// Bounding set, and so the steps' exec, is per thread: keep everything
	// on this one thread.
	runtime.LockOSThread()
	// Name it in ps (else it shows as the fd number it was exec'd from).
	_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&[]byte("codeexec-init\x00")[0])), 0, 0, 0)
	os.Exit(runInit())
}

type initReporter struct{ w *bufio.Writer }

func (r initReporter) send(ev Event) {
	b, _ := json.Marshal(ev)
	r.w.Write(append(b, '\n'))
	r.w.Flush()
}

func runInit() int {
	// No descriptor of init reaches the steps: neither the report channel
	// (they could forge it) nor anything the server inherited without
	// O_CLOEXEC from whoever started it.
	closeOnExecFrom(ConfigFD)
	rep := initReporter{bufio.NewWriter(os.NewFile(EventFD, "events"))}
	fatal := func(err error) int {
		rep.send(Event{Event: "fatal", Err: err.Error()})
		return 1
	}
	cf := os.NewFile(ConfigFD, "config")
	var cfg Config
	// The parent writes the config only once this process is in its cgroup.
	if err := json.NewDecoder(cf).Decode(&cfg); err != nil {
		return fatal(fmt.Errorf("read config: %w", err))
	}
	cf.Close()
	// Its own cgroup namespace, rooted at the run's cgroup (where it is by
	// now): the code sees "/" for its cgroup, never the host's paths. Not
	// a template's: its children enter their own (zygote.c, child_enter).
	if !cfg.Template {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fatal(fmt.Errorf("cgroup namespace: %w", err))
		}
	}
	syscall.Umask(0o022)
	if err := buildRoot(&cfg); err != nil {
		return fatal(err)
	}
	if err := unix.Sethostname([]byte("sandbox")); err != nil {
		return fatal(fmt.Errorf("sethostname: %w", err))
	}
	if err := writeFiles(cfg.Files); err != nil {
		return fatal(err)
	}
	if cfg.Template {
		return runTemplate(cfg, rep)
	}
	stdins := make([]int, len(cfg.Steps))
	for i, st := range cfg.Steps {
		fd, err := StdinFD(st.Stdin)
		if err != nil {
			return fatal(err)
		}
		stdins[i] = fd
	}
	if err := dropBoundingSet(); err != nil {
		return fatal(err)
	}
	if err := setRlimits(cfg); err != nil {
		return fatal(err)
	}
	if err := seccomp.Load(cfg.Network); err != nil {
		return fatal(fmt.Errorf("seccomp: %w", err))
	}
	runSteps(cfg, stdins, rep)
	return 0
}

func closeOnExecFrom(first int) {
	if unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	ents, _ := os.ReadDir("/proc/self/fd") // kernels before 5.11
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= first {
			syscall.CloseOnExec(fd)
		}
	}
}

// ---- root filesystem ----

func buildRoot(cfg *Config) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	base := cfg.RootFS
	if base == "" {
		base = "/"
	}
	// Sources are reached through fds opened before the new root covers
	// newRootDir, in case they live below it.
	baseFD, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open rootfs %s: %w", base, err)
	}
	workFD, err := unix.Open(cfg.Workdir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open workdir: %w", err)
	}
	defer unix.Close(baseFD)
	defer unix.Close(workFD)
	src := fmt.Sprintf("/proc/self/fd/%d", baseFD)
	var resolv []byte
	if cfg.Network && cfg.Nameserver != "" {
		resolv = []byte("nameserver " + cfg.Nameserver + "\noptions timeout:2 attempts:2\n")
	}

	r := newRootDir
	if err := unix.Mount("codeexec-root", r, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,nr_inodes=4096,mode=0755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	for _, name := range policy.RootDirs {
		if err := mirror(filepath.Join(src, name), filepath.Join(r, name)); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(r, "etc"), 0o755); err != nil {
		return err
	}
	for _, pat := range policy.Etc(cfg.Etc) {
		matches, _ := filepath.Glob(filepath.Join(src, "etc", pat))
		for _, m := range matches {
			if err := mirror(m, filepath.Join(r, "etc", filepath.Base(m))); err != nil {
				return err
			}
		}
	}
	synthetic := map[string]string{
		"passwd":   "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:1000:1000:sandbox:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":    "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n",
		"hosts":    "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"hostname": "sandbox\n",
	}
	if resolv != nil {
		synthetic["resolv.conf"] = string(resolv)
	}
	for name, content := range synthetic {
		p := filepath.Join(r, "etc", name)
		_ = os.Remove(p)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, d := range []string{"proc", "dev", "tmp", "mnt/data", "var"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Symlink("../tmp", filepath.Join(r, "var/tmp")); err != nil {
		return err
	}
	tmpOpts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=1777", cfg.DiskBytes, InodesFor(cfg.DiskBytes))
	if err := unix.Mount("tmpfs", filepath.Join(r, "tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, tmpOpts); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	if err := bind(fmt.Sprintf("/proc/self/fd/%d", workFD), filepath.Join(r, "mnt/data"), false, unix.MS_NOSUID|unix.MS_NODEV); err != nil {
		return fmt.Errorf("bind workdir: %w", err)
	}
	if err := buildDev(r, cfg.DiskBytes); err != nil {
		return err
	}
	if err := unix.Mount("proc", filepath.Join(r, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, name := range policy.ProcMasked {
		p := filepath.Join(r, "proc", name)
		if _, err := os.Lstat(p); err == nil {
			if err := bind(filepath.Join(r, "dev/null"), p, true, 0); err != nil {
				return fmt.Errorf("mask /proc/%s: %w", name, err)
			}
		}
	}
	if err := bind(filepath.Join(r, "proc/sys"), filepath.Join(r, "proc/sys"), true, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC); err != nil {
		return fmt.Errorf("read-only /proc/sys: %w", err)
	}

	// pivot_root(".", ".") stacks the old root on top of the new one; the
	// detach then drops it (and every host mount with it).
	if err := unix.Chdir(r); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := remountRO("/", unix.MS_NOSUID|unix.MS_NODEV); err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	return verifyReadOnly()
}

// InodesFor bounds a tmpfs's inode count in proportion to its size, so
// empty-file floods hit a limit too.
func InodesFor(size int64) int64 {
	n := size / 4096
	if n < 1024 {
		n = 1024
	}
	return n
}

func buildDev(r string, shmBytes int64) error {
	dev := filepath.Join(r, "dev")
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, name := range policy.HostDevices {
		p := filepath.Join(dev, name)
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			return err
		}
		// Device binds keep their "dev" flag: adding nodev would break them.
		if err := unix.Mount("/dev/"+name, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", name, err)
		}
	}
	links := map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	shmOpts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=1777", shmBytes, InodesFor(shmBytes))
	if err := unix.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, shmOpts); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	return remountRO(dev, unix.MS_NOSUID|unix.MS_NOEXEC)
}

// mirror recreates src at dst: a symlink as the same symlink, a directory
// or file as a read-only bind. Missing sources are skipped.
func mirror(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return nil
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case fi.IsDir():
		if err := os.Mkdir(dst, 0o755); err != nil {
			return err
		}
	case fi.Mode().IsRegular():
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			return err
		}
	default:
		return nil
	}
	if err := bind(src, dst, true, unix.MS_NOSUID|unix.MS_NODEV); err != nil {
		return fmt.Errorf("bind %s: %w", strings.TrimPrefix(dst, newRootDir), err)
	}
	return nil
}

// bind bind-mounts src on dst (recursively), read-only if ro. Flags the
// kernel locked on the source (nosuid, nodev, noexec, atime: a user
// namespace may not clear them) are carried into the remount, else it
// fails with EPERM.
func bind(src, dst string, ro bool, extra uintptr) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if !ro && extra == 0 {
		return nil
	}
	if ro {
		extra |= unix.MS_RDONLY
	}
	return remount(dst, extra)
}

func remountRO(p string, extra uintptr) error { return remount(p, extra|unix.MS_RDONLY) }

func remount(p string, flags uintptr) error {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return err
	}
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
		{unix.ST_RDONLY, unix.MS_RDONLY},
	} {
		if uintptr(st.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	return unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_BIND|flags, "")
}

// writableMounts are the only mount points the code may write to.
var writableMounts = map[string]bool{
	"/tmp": true, "/mnt/data": true, "/dev/shm": true, "/dev/pts": true, "/proc": true,
	"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true,
	"/dev/urandom": true, "/dev/tty": true,
}

// verifyReadOnly checks every mount of the finished root: anything not
// meant to be writable must be mounted read-only (this also catches
// submounts that a recursive bind brought along rw).
func verifyReadOnly() error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		mp := UnescapeMountinfo(f[4])
		if writableMounts[mp] || strings.HasPrefix(mp, "/proc/") {
			continue
		}
		if hasOpt(f[5], "ro") {
			continue
		}
		if err := remountRO(mp, 0); err != nil {
			return fmt.Errorf("mount %s is writable and cannot be made read-only: %w", mp, err)
		}
	}
	return nil
}

func hasOpt(opts, opt string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// UnescapeMountinfo undoes the octal escapes (\040 etc.) of mountinfo.
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ---- files, limits, privileges ----

func writeFiles(files []sandbox.File) error {
	for _, f := range files {
		p := path.Clean(f.Path)
		if !strings.HasPrefix(p, "/tmp/") || p != f.Path {
			return fmt.Errorf("file %q: must be a clean absolute path under /tmp", f.Path)
		}
		if err := mkdirAllOwned(path.Dir(p)); err != nil {
			return err
		}
		mode := os.FileMode(f.Mode & 0o7777)
		if mode == 0 {
			mode = 0o644
		}
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("file %s: %w", p, err)
		}
		file := os.NewFile(uintptr(fd), p)
		_, err = file.Write(f.Data)
		if err == nil {
			err = file.Chown(policy.UID, policy.UID)
		}
		if err == nil {
			err = file.Chmod(mode &^ (os.ModeSetuid | os.ModeSetgid) & 0o777)
		}
		if cerr := file.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("file %s: %w", p, err)
		}
	}
	return nil
}

func mkdirAllOwned(dir string) error {
	if dir == "/tmp" {
		return nil
	}
	if err := mkdirAllOwned(path.Dir(dir)); err != nil {
		return err
	}
	if err := unix.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	}
	return unix.Lchown(dir, policy.UID, policy.UID)
}

// StdinFD returns a read-only fd with the step's stdin: a memfd, so no
// pipe writer has to outlive the step; /dev/null when there is none.
func StdinFD(data []byte) (int, error) {
	if len(data) == 0 {
		return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	fd, err := unix.MemfdCreate("stdin", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, err
	}
	for b := data; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err != nil {
			return -1, err
		}
		b = b[n:]
	}
	// Reopen read-only so the step cannot rewrite its own input.
	ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	unix.Close(fd)
	return ro, err
}

// dropBoundingSet empties the capability bounding set of this thread, which
// the steps inherit: no exec can regain a capability.
func dropBoundingSet() error {
	for c := 0; c <= 63; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return nil // past CAP_LAST_CAP
			}
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

func setRlimits(cfg Config) error {
	set := func(res int, soft, hard uint64) error {
		// syscall.Setrlimit (not unix.) so Go's exec stops restoring its
		// own saved RLIMIT_NOFILE in children.
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: soft, Max: hard}); err != nil {
			return fmt.Errorf("setrlimit %d: %w", res, err)
		}
		return nil
	}
	if err := set(unix.RLIMIT_CORE, 0, 0); err != nil {
		return err
	}
	if err := set(unix.RLIMIT_NOFILE, policy.NoFile, policy.NoFile); err != nil {
		return err
	}
	return set(unix.RLIMIT_FSIZE, uint64(cfg.FileBytes), uint64(cfg.FileBytes))
}

// ---- steps ----

func runSteps(cfg Config, stdins []int, rep initReporter) {
	pathEnv := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range cfg.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	for i, st := range cfg.Steps {
		last := i == len(cfg.Steps)-1
		rep.send(Event{Event: "start", Step: i})
		bin, err := lookPath(st.Argv[0], pathEnv)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", st.Argv[0], err)
			rep.send(Event{Event: "exit", Step: i, Exit: 127})
			return
		}
		argv := st.Argv
		if cfg.AddressSpace > 0 || cfg.Processes > 0 {
			// Degraded (no cgroups): the step, not init (whose Go runtime
			// needs its threads and address space), gets the rlimits.
			argv = append([]string{prlimitBin, fmt.Sprintf("--as=%d", cfg.AddressSpace),
				fmt.Sprintf("--nproc=%d", cfg.Processes), "--", bin}, st.Argv[1:]...)
			bin = prlimitBin
		}
		if last {
			// RLIMIT_CPU counts each process's own CPU time from zero, so
			// setting it on init (whose own use is tiny) bounds the step;
			// the hard limit one second later turns SIGXCPU into SIGKILL.
			secs := uint64((cfg.CPUTime + time.Second - 1) / time.Second)
			if err := syscall.Setrlimit(unix.RLIMIT_CPU, &syscall.Rlimit{Cur: secs, Max: secs + 1}); err != nil {
				rep.send(Event{Event: "fatal", Step: i, Err: err.Error()})
				return
			}
		}
		pid, err := syscall.ForkExec(bin, argv, &syscall.ProcAttr{
			Dir:   "/mnt/data",
			Env:   cfg.Env,
			Files: []uintptr{uintptr(stdins[i]), 1, 2},
			Sys: &syscall.SysProcAttr{
				Credential: &syscall.Credential{Uid: policy.UID, Gid: policy.UID, Groups: []uint32{}},
				Setsid:     true,
			},
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", st.Argv[0], err)
			rep.send(Event{Event: "exit", Step: i, Exit: 126})
			return
		}
		ws, timedOut := waitStep(pid, st.Timeout)
		ev := Event{Event: "exit", Step: i, TimedOut: timedOut}
		if ws.Signaled() {
			ev.Signal = int(ws.Signal())
			ev.Exit = 128 + ev.Signal
		} else {
			ev.Exit = ws.ExitStatus()
		}
		rep.send(ev)
		if ev.Exit != 0 || timedOut {
			return
		}
	}
}

// waitStep reaps children (pid 1 inherits every orphan) until pid exits.
// On timeout it kills every other process of the namespace.
func waitStep(pid int, timeout time.Duration) (syscall.WaitStatus, bool) {
	done := make(chan syscall.WaitStatus, 1)
	go func() {
		for {
			var ws syscall.WaitStatus
			wpid, err := syscall.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil || wpid == pid {
				done <- ws
				return
			}
		}
	}()
	if timeout <= 0 {
		return <-done, false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ws := <-done:
		return ws, false
	case <-t.C:
		_ = syscall.Kill(-1, syscall.SIGKILL)
		return <-done, true
	}
}

// lookPath resolves argv[0] on the sandbox's PATH.
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join("/mnt/data", dir) // the steps' cwd
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("command not found")
}

// OpenSelf opens this binary for re-execution through /proc/self/fd/N:
// the init starts as an unprivileged host uid that may not be able to
// reach the binary's path (go test binaries sit in 0700 directories). The
// fd is moved above 100 so that no ExtraFiles slot of a child overwrites
// it before the exec.
func OpenSelf() (*os.File, error) {
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

// Command is the init, ready to start in fresh user, mount, pid, ipc, uts
// and net namespaces (a network namespace of its own always: a networked
// run's is served by the server, never the host's) as uid 0 of idMap,
// with nothing of the server's environment. extra are its descriptors
// from ConfigFD on (ConfigFD, EventFD, and a template's TemplateCtrlFD);
// cgroupFD >= 0 clones it straight into that cgroup. It dies with the
// thread that starts it.
func Command(exe *os.File, idMap []syscall.SysProcIDMap, stdout, stderr *os.File, cgroupFD int, extra ...*os.File) *exec.Cmd {
	cmd := &exec.Cmd{
		Path: fmt.Sprintf("/proc/self/fd/%d", exe.Fd()),
		Args: []string{Arg0},
		// Nothing of the server's environment. The one variable only
		// matters in -race builds, whose exit otherwise sleeps a second.
		Env:        []string{"GORACE=atexit_sleep_ms=0"},
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWNET,
			UidMappings: idMap,
			GidMappings: idMap,
			// init drops the server's supplementary groups (setgroups([]))
			// and later sets the steps' to none: it needs setgroups.
			GidMappingsEnableSetgroups: true,
			Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
			Pdeathsig:                  syscall.SIGKILL,
		},
	}
	if cgroupFD >= 0 {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, cgroupFD
	}
	return cmd
}
