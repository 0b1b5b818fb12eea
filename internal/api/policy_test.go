package api

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"testing"

	warmpool "github.com/codeexec/codeexec/internal/sandbox/warm"
)

// policyProbe reports what the code sees of its sandbox's policy: who it
// runs as, its rlimits, the root, /etc and /dev it is given, the masked
// /proc files, and the errno of every syscall the policy denies (called
// with arguments that would fail differently, or succeed, if allowed).
const policyProbe = `
import ctypes, json, os, resource
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return 0 if r == 0 else ctypes.get_errno()
# x86_64 numbers
denied = {"mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "fsopen": 430, "open_tree": 428, "ptrace": 101, "process_vm_readv": 310, "kcmp": 312, "pidfd_getfd": 438,
    "keyctl": 250, "add_key": 248, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "init_module": 175, "kexec_load": 246, "io_uring_setup": 425, "swapon": 167, "acct": 163,
    "open_by_handle_at": 304, "syslog": 103, "iopl": 172, "settimeofday": 164, "clock_settime": 227,
    "fanotify_init": 300}
errnos = {name: call(nr, 0, 0, 0, 0, 0) for name, nr in denied.items()}
# unshare(CLONE_NEWUSER) and clone(CLONE_NEWNET): no namespaces inside.
errnos["unshare(CLONE_NEWUSER)"] = call(272, 0x10000000)
def masked(p):
    try:
        return os.stat(p).st_size == 0 and open(p, "rb").read(16) == b""
    except OSError:
        return True
print(json.dumps({
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())],
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "core": resource.getrlimit(resource.RLIMIT_CORE),
    "root_dirs": sorted(n for n in ["usr", "bin", "sbin", "lib", "lib64"] if os.path.exists("/" + n)),
    "etc": sorted(n for n in ["passwd", "group", "hosts", "ssl", "shadow", "sudoers", "machine-id", "fstab", "crontab",
                              "R", "php", "python3", "perl", "matplotlibrc", "ldc2.conf"]
                  if os.path.exists("/etc/" + n)),
    "passwd_me": [l.split(":")[0] for l in open("/etc/passwd") if l.split(":")[2] == str(os.getuid())],
    "dev": sorted(n for n in ["null", "zero", "full", "random", "urandom", "tty", "shm", "pts", "mem", "kmsg", "sda", "vda"]
                  if os.path.exists("/dev/" + n)),
    "proc_masked": {p: masked("/proc/" + p) for p in ["kcore", "keys", "timer_list", "sysrq-trigger", "kallsyms"]},
    "denied": errnos,
}, sort_keys=True))
`

// TestPolicyOnEveryBackend runs the probe on the native backend, the warm
// pool and gVisor, and asks that the code see one policy, the one
// policy_linux.go defines: the three renderings of it agree.
func TestPolicyOnEveryBackend(t *testing.T) {
	if backendChosen() {
		t.Skip("compares all backends itself, in one process")
	}
	type probe struct {
		IDs        []any           `json:"ids"`
		NoFile     []int           `json:"nofile"`
		Core       []int           `json:"core"`
		RootDirs   []string        `json:"root_dirs"`
		Etc        []string        `json:"etc"`
		PasswdMe   []string        `json:"passwd_me"`
		Dev        []string        `json:"dev"`
		ProcMasked map[string]bool `json:"proc_masked"`
		Denied     map[string]int  `json:"denied"`
	}
	got := map[backend]probe{}
	for _, b := range allBackends {
		e := newEnvOn(t, b)
		var before int64
		if b == warm {
			before = e.box.(*warmpool.Pool).Served()
		}
		r := e.ok(map[string]any{"lang": "py", "code": policyProbe})
		if b == warm && e.box.(*warmpool.Pool).Served() != before+1 {
			t.Fatal("the probe was not served by the warm pool")
		}
		var p probe
		if err := json.Unmarshal([]byte(r.Stdout), &p); err != nil {
			t.Fatalf("%s: %v: %s", b, err, r.Stdout)
		}
		got[b] = p
		t.Logf("%s: %s", b, r.Stdout)
	}
	c := got[cold]
	// What the policy says, as the code sees it.
	const eperm = 1
	for name, errno := range c.Denied {
		if errno != eperm {
			t.Errorf("cold: %s gave errno %d, want EPERM", name, errno)
		}
	}
	if !reflect.DeepEqual(c.IDs, []any{1000.0, 1000.0, 1000.0, 1000.0, []any{}}) || !slices.Equal(c.NoFile, []int{4096, 4096}) ||
		!slices.Equal(c.Core, []int{0, 0}) || !slices.Equal(c.PasswdMe, []string{"sandbox"}) {
		t.Errorf("cold: ids %v nofile %v core %v passwd %v", c.IDs, c.NoFile, c.Core, c.PasswdMe)
	}
	if slices.ContainsFunc(c.Etc, func(n string) bool { return n == "shadow" || n == "sudoers" || n == "machine-id" }) ||
		slices.ContainsFunc(c.Dev, func(n string) bool { return n == "mem" || n == "kmsg" || n == "sda" || n == "vda" }) {
		t.Errorf("cold: host files visible: etc %v dev %v", c.Etc, c.Dev)
	}
	// The languages' own /etc entries (lang.Etc), where the host has them.
	for _, n := range []string{"R", "php", "python3", "perl", "matplotlibrc", "ldc2.conf"} {
		if _, err := os.Stat("/etc/" + n); err == nil && !slices.Contains(c.Etc, n) {
			t.Errorf("cold: /etc/%s, which a language needs, is not visible: %v", n, c.Etc)
		}
	}
	for p, m := range c.ProcMasked {
		if !m {
			t.Errorf("cold: /proc/%s is readable", p)
		}
	}
	// gVisor does not implement pidfd_getfd, and runsc drops the names its
	// table lacks from the OCI filter: ENOSYS there denies as surely.
	if g := got[gvisor]; g.Denied["pidfd_getfd"] == 38 {
		g.Denied["pidfd_getfd"] = eperm
	}
	// And the same on the other two.
	for _, b := range []backend{warm, gvisor} {
		if !reflect.DeepEqual(got[b], c) {
			t.Errorf("%s sees another policy than cold:\n%s: %+v\ncold: %+v", b, b, got[b], c)
		}
	}
}
