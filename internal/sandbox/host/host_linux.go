//go:build linux

package host

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/codeexec/codeexec/internal/sandbox/cgroup"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"golang.org/x/sys/unix"
)

// Host is what one backend holds on this machine while it lives: an
// instance number K, claimed with a host-wide lock, and what K names: a
// band of host uids, a cgroup subtree, tmpfs workdirs under RunDir/i<K>;
// and the removal of whatever a crashed predecessor with the same K left.
// The native backend and gVisor each hold one; it knows nothing of how
// either runs code.
type Host struct {
	Cfg      Config
	Log      *slog.Logger
	Instance int
	lock     *os.File // flock on InstanceDir/K.lock, held while alive
	WorkRoot string   // RunDir/i<K>
	CG       cgroup.Tree
	// Degraded: no usable cgroups, rlimits instead (Config.AllowDegraded).
	Degraded bool
	wdSeq    atomic.Uint64
	Closed   atomic.Bool // no new workdirs
}

// Release gives K back (the lock dies with the process anyway).
func (l *Host) Release() { l.lock.Close() }

// HostID is the host uid (and gid) that root of slot slot maps to.
func (l *Host) HostID(slot int) uint32 {
	return l.Cfg.UIDBase + uint32((l.Instance*MaxSlots+slot)*IDRange)
}

// InstanceRange is the first host id of instance k's range.
func (l *Host) InstanceRange(k int) uint32 {
	return l.Cfg.UIDBase + uint32(k*MaxSlots*IDRange)
}

func (l *Host) mountTag() string { return "codeexec-i" + strconv.Itoa(l.Instance) }

// Claim takes the first free K.lock. flock dies with its owner, so a
// crashed server's K becomes free again, to be cleaned by its successor.
func (l *Host) Claim() error {
	if err := os.MkdirAll(l.Cfg.InstanceDir, 0o755); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	for k := 0; k < l.Cfg.MaxInstances; k++ {
		f, err := os.OpenFile(filepath.Join(l.Cfg.InstanceDir, strconv.Itoa(k)+".lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			l.Instance, l.lock = k, f
			l.WorkRoot = filepath.Join(l.Cfg.RunDir, "i"+strconv.Itoa(k))
			return nil
		}
		f.Close()
	}
	return fmt.Errorf("sandbox: all %d instance slots in %s are taken", l.Cfg.MaxInstances, l.Cfg.InstanceDir)
}

// Cleanup removes everything instance K may have left: processes running
// as any of its host uids, its cgroups (and what more purge finds of
// them: gVisor's runsc makes cgroups of its own), its workdir mounts and
// RunDir/i<K>.
func (l *Host) Cleanup(purge ...func() error) error {
	killUIDRange(l.InstanceRange(l.Instance), l.InstanceRange(l.Instance+1))
	var errs []error
	if err := l.CG.Purge(); err != nil {
		errs = append(errs, err)
	}
	for _, p := range purge {
		if err := p(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountTagged(l.mountTag()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(l.WorkRoot); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killUIDRange SIGKILLs every process whose owner is in [lo, hi). A dead
// sandbox init takes its whole pid namespace with it.
func killUIDRange(lo, hi uint32) {
	for pid := range ProcsInRange(lo, hi) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// ProcsInRange lists the host's processes whose owner uid is in [lo, hi),
// with that uid.
func ProcsInRange(lo, hi uint32) map[int]uint32 {
	out := map[int]uint32{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name(), &st) == nil && st.Uid >= lo && st.Uid < hi {
			out[pid] = st.Uid
		}
	}
	return out
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
		mp := nsinit.UnescapeMountinfo(f[4])
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

// PrepareRunDir creates RunDir and RunDir/i<K> traversable (0711) but not
// listable by others: the init, an unprivileged host uid, must walk to the
// workdir to bind it.
func PrepareRunDir(runDir, workRoot string) error {
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

// NewWorkdir mounts a tmpfs of maxBytes on a fresh directory under
// RunDir/i<K>. The mount source names the instance, so a successor finds
// and removes it after a crash.
func (l *Host) NewWorkdir(maxBytes int64) (string, func() error, error) {
	if l.Closed.Load() {
		return "", nil, errors.New("sandbox: closed")
	}
	if maxBytes <= 0 {
		return "", nil, errors.New("sandbox: workdir size must be positive")
	}
	dir := filepath.Join(l.WorkRoot, "w"+strconv.FormatUint(l.wdSeq.Add(1), 10))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", nil, err
	}
	// 0700: on a multi-user host nobody but the run's uid (the run chowns
	// it) and root reads a run's files.
	opts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700", maxBytes, nsinit.InodesFor(maxBytes))
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

// CheckSubIDOverlap refuses a uid range that /etc/subuid or /etc/subgid
// hands out to rootless containers.
func CheckSubIDOverlap(lo, hi uint32) error {
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

// ChownTree gives the workdir to the code's host uid, never following a
// symlink (WalkDir and Lchown both work on the links themselves).
func ChownTree(root string, id int) error {
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, id, id)
	})
}
