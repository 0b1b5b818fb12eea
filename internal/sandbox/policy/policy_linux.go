//go:build linux

package policy

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The policy: what the inside of every sandbox is, defined once, as data.
// Each way of running code renders it: the native init applies it
// (nsinit, seccomp), the warm pool's C helper is compiled
// with it (Header; its children load the seccomp programs the Go side
// exports) and gVisor's OCI bundle spells it (gvisor).
// TestPolicyOnEveryBackend (internal/api) checks that the code sees the
// same sandbox on each.

const (
	UID    = 1000 // the code's uid and gid inside
	NoFile = 4096 // RLIMIT_NOFILE, soft and hard
)

// DeniedSyscalls fail with EPERM: namespace and mount manipulation, kernel
// attack surface (bpf, io_uring, userfaultfd, perf, keyrings), other
// processes' memory, and host administration. Names unknown on this
// architecture are skipped.
var DeniedSyscalls = []string{
	"mount", "umount", "umount2", "pivot_root", "chroot",
	"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
	"unshare", "setns",
	"ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
	"keyctl", "add_key", "request_key",
	"bpf", "perf_event_open", "userfaultfd",
	"init_module", "finit_module", "delete_module", "create_module",
	"kexec_load", "kexec_file_load", "reboot",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
	"open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "syslog",
	"vhangup", "iopl", "ioperm", "uselib", "nfsservctl", "_sysctl",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"fanotify_init",
}

// CloneNamespaceFlags are refused in clone(2): no new namespaces inside.
var CloneNamespaceFlags = []uint64{
	unix.CLONE_NEWNS, unix.CLONE_NEWUTS, unix.CLONE_NEWIPC, unix.CLONE_NEWUSER,
	unix.CLONE_NEWPID, unix.CLONE_NEWNET, unix.CLONE_NEWCGROUP,
}

// EtcAllowlist are the /etc entries (globs) every sandbox gets, whatever
// runs in it (the dynamic linker, certificates, fonts, name service, time
// zone); a language's own needs come from its table entry (lang.Etc, given
// to the backends as host.Config.Etc). Everything else in /etc stays
// invisible. passwd, group, hosts and hostname are synthetic.
var EtcAllowlist = []string{
	"alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
	"ca-certificates", "ca-certificates.conf", "ssl", "fonts",
	"mime.types", "magic", "magic.mime", "localtime", "timezone",
	"nsswitch.conf", "host.conf", "gai.conf", "protocols", "services",
	"os-release", "debian_version", "environment",
}

// Etc is the /etc a sandbox shows: EtcAllowlist and the languages' extra
// entries.
func Etc(extra []string) []string {
	return append(append([]string(nil), EtcAllowlist...), extra...)
}

// RootDirs are the top-level entries of the root taken from the base tree:
// symlinks (merged /usr) are recreated, directories bound read-only.
var RootDirs = []string{"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"}

var HostDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// ProcMasked are /proc files hidden behind /dev/null (kernel internals
// that help nobody's code but help exploits).
var ProcMasked = []string{"kcore", "keys", "timer_list", "sched_debug", "sysrq-trigger", "kallsyms"}

// Header is the policy as C, compiled into the warm pool's helper
// and reaper ahead of their sources.
func Header() []byte {
	return fmt.Appendf(nil, "#define SANDBOX_UID %d\n#define SANDBOX_NOFILE %d\n#line 1\n", UID, NoFile)
}
