//go:build linux && cgo

package seccomp

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/codeexec/codeexec/internal/sandbox/policy"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

const Available = true

// allowedPersonalities are the personality(2) arguments Docker also allows:
// query, Linux, and ADDR_NO_RANDOMIZE / UNAME26 variants used by tools.
var allowedPersonalities = []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}

// Load installs the filter on every thread of the calling process
// (TSYNC) and sets no_new_privs; children inherit both.
func Load(network bool) error {
	f, err := newSeccompFilter(network)
	if err != nil {
		return err
	}
	defer f.Release()
	if err := f.Load(); err != nil {
		return err
	}
	return loadPersonalityFilter()
}

// newSeccompFilter builds (but does not load) the deny-list filter; the
// warm pool exports the same program as BPF for its forked children.
func newSeccompFilter(network bool) (*libseccomp.ScmpFilter, error) {
	f, err := libseccomp.NewFilter(libseccomp.ActAllow)
	if err != nil {
		return nil, err
	}
	if err := addSeccompRules(f, network); err != nil {
		f.Release()
		return nil, err
	}
	return f, nil
}

func addSeccompRules(f *libseccomp.ScmpFilter, network bool) error {
	eperm := libseccomp.ActErrno.SetReturnCode(int16(unix.EPERM))
	if err := f.SetNoNewPrivsBit(true); err != nil {
		return err
	}
	add := func(name string, act libseccomp.ScmpAction, conds ...libseccomp.ScmpCondition) error {
		sc, err := libseccomp.GetSyscallFromName(name)
		if err != nil {
			return nil // not on this architecture
		}
		if len(conds) == 0 {
			err = f.AddRule(sc, act)
		} else {
			err = f.AddRuleConditional(sc, act, conds)
		}
		if err != nil {
			return fmt.Errorf("seccomp rule %s: %w", name, err)
		}
		return nil
	}
	for _, name := range policy.DeniedSyscalls {
		if err := add(name, eperm); err != nil {
			return err
		}
	}
	// clone3 passes its flags in memory, which a filter cannot read: make it
	// look unimplemented so libc falls back to clone(2), which we can check.
	if err := add("clone3", libseccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS))); err != nil {
		return err
	}
	for _, flag := range policy.CloneNamespaceFlags {
		c, err := libseccomp.MakeCondition(0, libseccomp.CompareMaskedEqual, flag, flag)
		if err != nil {
			return err
		}
		if err := add("clone", eperm, c); err != nil {
			return err
		}
	}
	if network {
		// Only AF_UNIX, AF_INET and AF_INET6: no raw packet, netlink, vsock,
		// alg, bluetooth... libseccomp takes one check per argument and
		// rule, so the refused values are ranges, one rule each.
		noAF := libseccomp.ActErrno.SetReturnCode(int16(unix.EAFNOSUPPORT))
		var conds []libseccomp.ScmpCondition
		for af := uint64(0); af < unix.AF_INET6; af++ {
			if af == unix.AF_UNIX || af == unix.AF_INET {
				continue
			}
			c, err := libseccomp.MakeCondition(0, libseccomp.CompareEqual, af)
			if err != nil {
				return err
			}
			conds = append(conds, c)
		}
		// Above AF_INET6, on all 64 bits: junk in the upper half denies.
		gt, err := libseccomp.MakeCondition(0, libseccomp.CompareGreater, unix.AF_INET6)
		if err != nil {
			return err
		}
		conds = append(conds, gt)
		for _, name := range []string{"socket", "socketpair"} {
			for _, c := range conds {
				if err := add(name, noAF, c); err != nil {
					return err
				}
			}
		}
	}
	if !network {
		// Only AF_UNIX sockets: no TCP/UDP/raw/netlink/packet etc. The
		// comparison is on all 64 bits, so junk in the upper half denies.
		noAF := libseccomp.ActErrno.SetReturnCode(int16(unix.EAFNOSUPPORT))
		ne, err := libseccomp.MakeCondition(0, libseccomp.CompareNotEqual, unix.AF_UNIX)
		if err != nil {
			return err
		}
		for _, name := range []string{"socket", "socketpair"} {
			if err := add(name, noAF, ne); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadPersonalityFilter adds a second, hand-written filter: personality(2)
// only with an allowed argument. libseccomp cannot express "not any of
// these values" (it refuses two checks on one argument).
func loadPersonalityFilter() error {
	prog := personalityProg()
	if prog == nil {
		return nil // other architectures: personality stays unfiltered
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("personality filter: %w", errno)
	}
	return nil
}

// personalityProg is the personality(2) filter program, nil on
// architectures it does not cover.
func personalityProg() []unix.SockFilter {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return nil
	}
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	n := len(allowedPersonalities)
	allow := uint8(6 + n) // index of the final "allow"
	prog := []unix.SockFilter{
		{Code: ld, K: 4}, // seccomp_data.arch
		{Code: jeq, K: arch, Jt: 0, Jf: allow - 2},
		{Code: ld, K: 0}, // seccomp_data.nr
		{Code: jeq, K: unix.SYS_PERSONALITY, Jt: 0, Jf: allow - 4},
		{Code: ld, K: 16}, // low half of args[0] (little endian); the kernel takes an unsigned int
	}
	for i, v := range allowedPersonalities {
		prog = append(prog, unix.SockFilter{Code: jeq, K: uint32(v), Jt: allow - uint8(6+i), Jf: 0})
	}
	prog = append(prog,
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW})
	return prog
}
