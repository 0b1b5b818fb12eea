//go:build linux

package warm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/cgroup"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/policy"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"golang.org/x/sys/unix"
)

// TestFreezer: a run frozen through Spec.Started uses no CPU at all, even
// with a busy loop in it; thawed, the loop runs again; killed while
// frozen, the run ends at once and leaves nothing. Cold and served warm,
// on cgroup v1 (freezer.state) and v2 (cgroup.freeze; test/vm).
func TestFreezer(t *testing.T) {
	for _, c := range []struct {
		name string
		box  func(*testing.T) *Pool
	}{{"cold", sb}, {"warm", wb}} {
		t.Run(c.name, func(t *testing.T) {
			s := c.box(t)
			served := s.Served()
			sandboxtest.CheckFreezer(t, s, 5*time.Millisecond, func(fz sandbox.Freezer) time.Duration {
				u, err := cgroup.FrozenCgroup(fz.(*cgroup.RunFreezer)).CPUUsage()
				if err != nil {
					t.Fatal(err)
				}
				return u
			})
			if c.name == "warm" {
				if s.Served() == served {
					t.Fatal("the run was not served warm")
				}
				if p := warmSlotProcesses(t, s); len(p) > 0 {
					t.Fatalf("processes left: %v", p)
				}
			}
		})
	}
}

// TestWarmTemplateFilesSealed: a warm template's own files (helper
// library, reaper, code, config) and their directory belong to the
// template's root, not to the uid the code runs as, and are read-only; so
// are the compiled helpers cached on the host.
func TestWarmTemplateFilesSealed(t *testing.T) {
	s := wb(t)
	checked := 0
	for _, tm := range s.warm.tmpls {
		tm.procMu.Lock()
		pid := 0
		if tm.cmd != nil && tm.cmd.Process != nil {
			pid = tm.cmd.Process.Pid
		}
		tm.procMu.Unlock()
		if pid == 0 {
			continue
		}
		root := uint32(templateRootUID(s.HostResources(), tm.slot))
		for _, name := range []string{"", "zygote.so", "reaper", "zygote.py", "config.json"} {
			p := fmt.Sprintf("/proc/%d/root%s/%s", pid, zygoteDir, name)
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if st.Uid != root || st.Gid != root {
				t.Errorf("%s is owned by host %d:%d, want the template's root %d (the code runs as %d)", p, st.Uid, st.Gid, root, s.HostResources().HostID(tm.slot)+policy.UID)
			}
			if name != "" && st.Mode&0o222 != 0 {
				t.Errorf("%s is writable: mode %o", p, st.Mode&0o7777)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no live template to check")
	}
	ents, err := os.ReadDir(filepath.Join(s.HostResources().Cfg.RunDir, "helper"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if fi.Mode().Perm()&0o222 != 0 || fileUID(fi) != 0 {
			t.Errorf("cached helper %s: mode %v uid %d, want root's and read-only", e.Name(), fi.Mode(), fileUID(fi))
		}
	}
}

// TestWorkdirPrivate: a run's working directory is 0700 and the run's uid's
// on the host (no other user of the host lists or reads it), and the code
// still uses it. Cold and served warm.
func TestWorkdirPrivate(t *testing.T) {
	for _, c := range []struct {
		name string
		box  func(*testing.T) *Pool
		spec sandbox.Spec
	}{{"cold", sb, sandbox.Spec{Steps: sh("echo x > f && ls && stat -c '%a %u' /mnt/data")}},
		{"warm", wb, warmSpec("import os\nopen('f','w').write('x')\nprint(os.listdir('.')[0])\nst = os.stat('/mnt/data')\nprint('%o %d' % (st.st_mode & 0o777, st.st_uid))")}} {
		t.Run(c.name, func(t *testing.T) {
			s := c.box(t)
			r := run(t, s, c.spec)
			wantStatus(t, r, sandbox.StatusOK)
			if r.Stdout != "f\n700 1000\n" {
				t.Fatalf("inside: %q", r.Stdout)
			}
			var st unix.Stat_t
			if err := unix.Stat(r.Workdir, &st); err != nil {
				t.Fatal(err)
			}
			lo, hi := s.HostResources().HostID(0), s.HostResources().HostID(host.MaxSlots)
			if st.Mode&0o777 != 0o700 || st.Uid < lo || st.Uid >= hi || (st.Uid-lo)%host.IDRange != policy.UID {
				t.Fatalf("host side of the workdir: mode %o uid %d, want 0700 and a run's uid", st.Mode&0o777, st.Uid)
			}
		})
	}
}

// TestCgroupNamespace: a run has a cgroup namespace of its own, rooted at
// its cgroup: the code sees "/" for each hierarchy, no host path, and a
// namespace other than the host's. Cold and served warm; cgroup v1 here,
// v2 in test/vm.
func TestCgroupNamespace(t *testing.T) {
	host, err := os.Readlink("/proc/self/ns/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		box  func(*testing.T) *Pool
		spec sandbox.Spec
	}{{"cold", sb, sandbox.Spec{Steps: sh("readlink /proc/self/ns/cgroup; cat /proc/self/cgroup /proc/1/cgroup")}},
		{"warm", wb, warmSpec("import os\nprint(os.readlink('/proc/self/ns/cgroup'))\nprint(open('/proc/self/cgroup').read() + open('/proc/1/cgroup').read(), end='')")}} {
		t.Run(c.name, func(t *testing.T) {
			s := c.box(t)
			served := s.Served()
			r := run(t, s, c.spec)
			wantStatus(t, r, sandbox.StatusOK)
			if c.name == "warm" && s.Served() == served {
				t.Fatal("not served warm")
			}
			ns, lines, _ := strings.Cut(r.Stdout, "\n")
			if ns == host || !strings.HasPrefix(ns, "cgroup:[") {
				t.Errorf("the run's cgroup namespace %q, the host's %q: want one of its own", ns, host)
			}
			for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
				if !strings.HasSuffix(l, ":/") {
					t.Errorf("the code sees the cgroup line %q, want / (the root of its namespace)", l)
				}
			}
		})
	}
}
