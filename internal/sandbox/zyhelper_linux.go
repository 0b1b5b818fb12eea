//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// zygoteHelperSource is the warm template's native half (fork loop, child
// setup, request handling); see zygote/zygote.c for why it is not Python.
//
//go:embed zygote/zygote.c
var zygoteHelperSource []byte

// buildZygoteHelper compiles the helper with the host's C compiler into a
// shared object, cached in dir by the hash of its source and the
// compiler's path (~0.4 s saved per start), and returns its bytes.
// Instances sharing dir race harmlessly: each writes a temporary file and
// renames it into place. The templates get a copy of the bytes: nothing
// in a sandbox sees dir.
func buildZygoteHelper(ctx context.Context, dir string) ([]byte, error) {
	cc, err := findCC()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append(append([]byte(cc), 0), zygoteHelperSource...))
	out := filepath.Join(dir, "zygote-"+hex.EncodeToString(sum[:8])+".so")
	if b, err := os.ReadFile(out); err == nil && len(b) > 0 {
		return b, nil
	}
	tmp, err := os.MkdirTemp(dir, ".zygote-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "zygote.c")
	if err := os.WriteFile(src, zygoteHelperSource, 0o600); err != nil {
		return nil, err
	}
	so := filepath.Join(tmp, "zygote.so")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cc, "-O2", "-shared", "-fPIC", "-o", so, src)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v: %s", errNoHelper, cc, err, bytes.TrimSpace(stderr.Bytes()))
	}
	b, err := os.ReadFile(so)
	if err != nil {
		return nil, err
	}
	if err := os.Rename(so, out); err != nil {
		return nil, err
	}
	return b, nil
}

// errNoHelper: the helper cannot be built here; the sandbox then runs
// without its warm pool.
var errNoHelper = errors.New("cannot build the warm template's helper")

// WarmCompiler is the C compiler the warm pool builds its templates'
// helper with (for codeexec doctor); an error means the pool stays off.
func WarmCompiler() (string, error) { return findCC() }

// ccCandidates are the compilers findCC tries, in order.
var ccCandidates = []string{"/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"}

func findCC() (string, error) {
	for _, name := range ccCandidates {
		if fi, err := os.Stat(name); err == nil && fi.Mode().IsRegular() {
			return name, nil
		}
	}
	return "", fmt.Errorf("%w: no C compiler (/usr/bin/cc, gcc or clang) ", errNoHelper)
}

// maxWarmFrame bounds a request: its frame and every length in it are
// 32-bit.
var maxWarmFrame = math.MaxUint32

// marshal encodes the request as zygote.c's parse_request reads it: all
// integers big-endian; strings and file data length-prefixed. A request
// that does not fit the 32-bit lengths is an error, never a wrapped one.
func (r *warmRequest) marshal() ([]byte, error) {
	size := 64
	for _, s := range r.Argv {
		size += 4 + len(s)
	}
	for _, s := range r.Env {
		size += 4 + len(s)
	}
	for _, f := range r.Files {
		size += 12 + len(f.Path) + len(f.Data)
	}
	if size > maxWarmFrame {
		return nil, fmt.Errorf("sandbox: warm request of %d bytes exceeds %d", size, maxWarmFrame)
	}
	b := make([]byte, 0, size)
	exec := uint32(0)
	if r.Exec {
		exec = 1
	}
	b = binary.BigEndian.AppendUint32(b, warmRequestVersion)
	b = binary.BigEndian.AppendUint32(b, exec)
	b = binary.BigEndian.AppendUint64(b, uint64(max(r.Disk, 0)))
	b = binary.BigEndian.AppendUint64(b, uint64(max(r.FSize, 0)))
	b = binary.BigEndian.AppendUint64(b, uint64(max(r.CPUSecs, 0)))
	strs := func(v []string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		for _, s := range v {
			b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
			b = append(b, s...)
		}
	}
	strs(r.Argv)
	strs(r.Env)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Files)))
	for _, f := range r.Files {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.Path)))
		b = append(b, f.Path...)
		b = binary.BigEndian.AppendUint32(b, f.Mode)
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.Data)))
		b = append(b, f.Data...)
	}
	return b, nil
}

// warmRequestVersion is REQUEST_VERSION in zygote.c.
const warmRequestVersion = 1
