//go:build linux && cgo

package sandbox

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// seccompPrograms returns, as raw struct sock_filter arrays, the filters
// loadSeccomp installs: warm children are forked Python processes that load
// them themselves (prctl), so they run under the very same programs.
func seccompPrograms(network bool) ([][]byte, error) {
	f, err := newSeccompFilter(network)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	main, err := f.ExportBPFMem()
	if err != nil {
		return nil, err
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
