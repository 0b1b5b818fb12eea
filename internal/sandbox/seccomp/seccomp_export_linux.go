//go:build linux && cgo

package seccomp

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Programs returns, as raw struct sock_filter arrays, the filters
// Load installs: warm children are forked Python processes that load
// them themselves (prctl), so they run under the very same programs.
func Programs(network bool) ([][]byte, error) {
	f, err := newSeccompFilter(network)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	// ExportBPFMem needs libseccomp 2.6; a memfd works with every version.
	fd, err := unix.MemfdCreate("seccomp-bpf", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	mf := os.NewFile(uintptr(fd), "seccomp-bpf")
	defer mf.Close()
	if err := f.ExportBPF(mf); err != nil {
		return nil, err
	}
	main, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return nil, err
	}
	if len(main) == 0 || len(main)%8 != 0 {
		return nil, fmt.Errorf("seccomp export: %d bytes", len(main))
	}
	progs := [][]byte{main}
	if p := personalityProg(); p != nil {
		progs = append(progs, encodeSockFilters(p))
	}
	return progs, nil
}

func encodeSockFilters(prog []unix.SockFilter) []byte {
	b := make([]byte, 0, 8*len(prog))
	for _, ins := range prog {
		b = binary.NativeEndian.AppendUint16(b, ins.Code)
		b = append(b, ins.Jt, ins.Jf)
		b = binary.NativeEndian.AppendUint32(b, ins.K)
	}
	return b
}
