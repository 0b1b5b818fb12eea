//go:build linux

package warm

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
	"syscall"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox/policy"
)

// zygoteHelperSource is the warm template's native half (fork loop, child
// setup, request handling); see zygote/zygote.c for why it is not Python.
//
//go:embed zygote/zygote.c
var zygoteHelperSource []byte

// reaperSource is pid 1 of every warm run's namespace (zygote/reaper.c).
//
//go:embed zygote/reaper.c
var reaperSource []byte

// zygoteHelper is what the server compiles for the templates.
type zygoteHelper struct {
	so     []byte // zygote.so, loaded by zygote.py
	reaper []byte // the reaper program
}

// buildZygoteHelper compiles the helper (a shared object) and the reaper
// (a program, static where the C library allows it) with the host's C
// compiler, cached in dir by the hash of their sources and the compiler's
// path (~0.4 s saved per start each), and returns their bytes. Instances
// sharing dir race harmlessly: each writes a temporary file and renames it
// into place. The templates get a copy of the bytes: nothing in a sandbox
// sees dir.
func buildZygoteHelper(ctx context.Context, dir string) (zygoteHelper, error) {
	cc, err := findCC()
	if err != nil {
		return zygoteHelper{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return zygoteHelper{}, err
	}
	so, err := ccBuild(ctx, cc, dir, "zygote", ".so", zygoteHelperSource, []string{"-O2", "-shared", "-fPIC"})
	if err != nil {
		return zygoteHelper{}, err
	}
	reaper, err := ccBuild(ctx, cc, dir, "reaper", "", reaperSource, []string{"-O2", "-static"}, []string{"-O2"})
	if err != nil {
		return zygoteHelper{}, err
	}
	return zygoteHelper{so: so, reaper: reaper}, nil
}

// ccBuild compiles src with the first of flagSets that works, cached in
// dir, and returns the output's bytes.
func ccBuild(ctx context.Context, cc, dir, name, ext string, src []byte, flagSets ...[]string) ([]byte, error) {
	src = append(policy.Header(), src...)
	sum := sha256.Sum256(append(append([]byte(cc), 0), src...))
	out := filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:8])+ext)
	// Only a cache file that is root's and read-only is trusted.
	if fi, err := os.Lstat(out); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o222 == 0 && fileUID(fi) == 0 {
		if b, err := os.ReadFile(out); err == nil && len(b) > 0 {
			return b, nil
		}
	}
	tmp, err := os.MkdirTemp(dir, "."+name+"-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	srcPath := filepath.Join(tmp, name+".c")
	if err := os.WriteFile(srcPath, src, 0o600); err != nil {
		return nil, err
	}
	bin := filepath.Join(tmp, name+ext)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	for _, flags := range flagSets {
		stderr.Reset()
		cmd := exec.CommandContext(ctx, cc, append(flags, "-o", bin, srcPath)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
		cmd.Stderr = &stderr
		if err = cmd.Run(); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v: %s", errNoHelper, cc, err, bytes.TrimSpace(stderr.Bytes()))
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(bin, 0o444); err != nil {
		return nil, err
	}
	if err := os.Rename(bin, out); err != nil {
		return nil, err
	}
	return b, nil
}

// errNoHelper: the helper cannot be built here; the sandbox then runs
// without its warm pool.
var errNoHelper = errors.New("cannot build the warm template's helper")

// Compiler is the C compiler the warm pool builds its templates'
// helper with (for codeexec doctor); an error means the pool stays off.
func Compiler() (string, error) { return findCC() }

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

func fileUID(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
