package vm

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// guestPackages are the Debian packages whose installed files the guest
// gets from this host: bash, coreutils, grep, sed and the C.UTF-8 locale
// for the tests' shell steps, mount for the image's entrypoint, Python for
// py runs and the warm templates, util-linux's prlimit, and the C
// compiler the warm pool builds its helper with.
var guestPackages = []string{
	"bash", "dash", "coreutils", "util-linux", "mount", "grep", "sed", "findutils", "libc-bin",
	"python3-minimal", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
	"gcc", "gcc-12", "cpp-12", "libgcc-12-dev", "binutils", "binutils-x86-64-linux-gnu",
	"libc6", "libc6-dev", "linux-libc-dev", "libcrypt-dev",
}

// skipFile drops what no guest test uses (documentation, test suites,
// sanitizers, static libraries other than the ones every link needs).
var skipFile = regexp.MustCompile(`^/usr/share/(doc|man|info|locale|lintian|bash-completion)/|/(test|tests|idlelib|tkinter|ensurepip)/|(asan|tsan|lsan|ubsan|hwasan)|/lto1$|lto-dump|/gconv/|\.a$`)

var keepStatic = map[string]bool{"libc_nonshared.a": true, "libgcc.a": true, "libgcc_eh.a": true}

// guestEtc are host configuration files the guest's programs read.
var guestEtc = []string{"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/ld.so.cache", "/etc/ld.so.conf"}

// libDirs are where DT_NEEDED libraries are looked up (Debian multiarch).
var libDirs = []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"}

type entry struct {
	mode       uint32 // type and permission bits, as cpio wants them
	src        string // host file, for regular files from disk
	data       []byte // content, for generated files
	link       string // symlink target
	rmaj, rmin uint32 // device numbers
}

// tree is the guest's file system as paths (merged /usr: /bin, /lib,
// /lib64 and /sbin are links into /usr) to entries.
type tree struct {
	files map[string]*entry
	elfs  []string // guest paths whose libraries are still to add
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

func newTree() *tree {
	t := &tree{files: map[string]*entry{}}
	for _, d := range []string{"bin", "lib", "lib64", "sbin"} {
		t.files["/"+d] = &entry{mode: sIFLNK | 0o777, link: "usr/" + d}
	}
	for _, d := range []string{"/usr/bin", "/usr/lib", "/usr/lib64", "/usr/sbin", "/etc", "/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/var/tmp"} {
		t.addDir(d)
	}
	return t
}

// canon maps a host path to its /usr form.
func canon(p string) string {
	p = path.Clean(p)
	for _, d := range []string{"/bin", "/lib", "/lib64", "/sbin"} {
		if p == d || strings.HasPrefix(p, d+"/") {
			return "/usr" + p
		}
	}
	return p
}

func (t *tree) addDir(p string) {
	p = canon(p)
	for q := p; q != "/" && q != "."; q = path.Dir(q) {
		if _, ok := t.files[q]; ok {
			if q != p {
				break
			}
			continue
		}
		t.files[q] = &entry{mode: sIFDIR | 0o755}
	}
	if p == "/tmp" || p == "/var/tmp" {
		t.files[p].mode = sIFDIR | 0o1777
	}
}

func (t *tree) addData(p string, data []byte, perm uint32) {
	t.addDir(path.Dir(p))
	t.files[p] = &entry{mode: sIFREG | perm, data: data}
}

func (t *tree) addFile(p, src string, perm uint32) {
	t.addDir(path.Dir(p))
	t.files[p] = &entry{mode: sIFREG | perm, src: src}
}

func (t *tree) addDev(p string, perm, maj, min uint32) {
	t.addDir(path.Dir(p))
	t.files[p] = &entry{mode: sIFCHR | perm, rmaj: maj, rmin: min}
}

// addELF adds host file src at guest path p and queues its libraries.
func (t *tree) addELF(p, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	t.addFile(p, src, uint32(fi.Mode().Perm()))
	t.elfs = append(t.elfs, p)
	return nil
}

// addHost adds the host path p (following symlinks, each link kept as a
// link) at the same place in the guest.
func (t *tree) addHost(p string) error {
	for hops := 0; hops < 16; hops++ {
		g := canon(p)
		if _, ok := t.files[g]; ok {
			return nil
		}
		fi, err := os.Lstat(g)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(g)
			if err != nil {
				return err
			}
			t.addDir(path.Dir(g))
			t.files[g] = &entry{mode: sIFLNK | 0o777, link: target}
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(g), target)
			}
			p = target
			continue
		case fi.IsDir():
			t.addDir(g)
		case fi.Mode().IsRegular():
			t.addFile(g, g, uint32(fi.Mode().Perm()))
			if isELF(g) {
				t.elfs = append(t.elfs, g)
			}
		}
		return nil
	}
	return fmt.Errorf("%s: too many symlinks", p)
}

// addPackages adds the installed files of pkgs (dpkg -L), filtered by
// skipFile.
func (t *tree) addPackages(pkgs []string) error {
	out, err := exec.Command("dpkg", append([]string{"-L"}, pkgs...)...).Output()
	if err != nil {
		return fmt.Errorf("dpkg -L %v: %w (is each package installed?)", pkgs, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		p := sc.Text()
		if !strings.HasPrefix(p, "/") || (skipFile.MatchString(p) && !keepStatic[path.Base(p)]) {
			continue
		}
		if fi, err := os.Lstat(p); err != nil || fi.IsDir() {
			continue // directories come with their files
		}
		if err := t.addHost(p); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == "\x7fELF"
}

// closeLibs adds every shared library the queued ELF files need,
// transitively, and their program interpreter.
func (t *tree) closeLibs() error {
	for len(t.elfs) > 0 {
		p := t.elfs[len(t.elfs)-1]
		t.elfs = t.elfs[:len(t.elfs)-1]
		e := t.files[p]
		f, err := elf.Open(e.src)
		if err != nil {
			continue // not an ELF file after all (a linker script)
		}
		libs, _ := f.ImportedLibraries()
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				b := make([]byte, prog.Filesz)
				if _, err := prog.ReadAt(b, 0); err == nil {
					if err := t.addHost(strings.TrimRight(string(b), "\x00")); err != nil {
						f.Close()
						return err
					}
				}
			}
		}
		f.Close()
		for _, lib := range libs {
			found := false
			// $ORIGIN first: some libraries find their siblings so.
			for _, d := range append([]string{filepath.Dir(e.src)}, libDirs...) {
				if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
					if err := t.addHost(filepath.Join(d, lib)); err != nil {
						return err
					}
					found = true
					break
				}
			}
			if !found {
				return fmt.Errorf("%s needs %s, not found in %v", p, lib, libDirs)
			}
		}
	}
	return nil
}

// writeCpio writes the tree as a newc cpio archive, parents first.
func (t *tree) writeCpio(out string) error {
	names := make([]string, 0, len(t.files))
	for p := range t.files {
		names = append(names, p)
	}
	sort.Strings(names) // a parent sorts before its children
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	ino := uint32(1)
	for _, p := range names {
		e := t.files[p]
		var data []byte
		var src *os.File
		var size int64
		switch e.mode &^ 0o7777 {
		case sIFREG:
			if e.src != "" {
				if src, err = os.Open(e.src); err != nil {
					return err
				}
				fi, err := src.Stat()
				if err != nil {
					return err
				}
				size = fi.Size()
			} else {
				data, size = e.data, int64(len(e.data))
			}
		case sIFLNK:
			data, size = []byte(e.link), int64(len(e.link))
		}
		if err := cpioHeader(w, ino, e, strings.TrimPrefix(p, "/"), size); err != nil {
			return err
		}
		ino++
		if src != nil {
			n, err := io.Copy(w, src)
			src.Close()
			if err != nil {
				return err
			}
			if n != size {
				return fmt.Errorf("%s changed while read", e.src)
			}
		} else if _, err := w.Write(data); err != nil {
			return err
		}
		if _, err := w.Write(make([]byte, pad4(size))); err != nil {
			return err
		}
	}
	if err := cpioHeader(w, 0, &entry{}, "TRAILER!!!", 0); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}

func pad4(n int64) int64 { return (4 - n%4) % 4 }

func cpioHeader(w io.Writer, ino uint32, e *entry, name string, size int64) error {
	nlink := 1
	if e.mode&^0o7777 == sIFDIR {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.mode, 0, 0, nlink, 0, size, 0, 0, e.rmaj, e.rmin, len(name)+1, 0)
	hdr += name + "\x00"
	hdr += strings.Repeat("\x00", int(pad4(int64(len(hdr)))))
	_, err := io.WriteString(w, hdr)
	return err
}
