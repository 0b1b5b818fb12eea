//go:build linux

package nsinit

import (
	"fmt"
	"os"
	"path"
	"syscall"

	"github.com/codeexec/codeexec/internal/sandbox"
	"golang.org/x/sys/unix"
)

// TemplateCtrlFD is the init's end of a warm template's control socket;
// the template (Python) receives it as fd 3.
const TemplateCtrlFD = 5

// runTemplate is the init's template mode: the root is built as for any
// run, but the one step (the zygote) runs as root of the user namespace,
// with its capabilities and without seccomp, because it must create
// namespaces and mounts for its children. It never runs submitted code:
// every child drops all of that before the code starts (zygote.py).
func runTemplate(cfg Config, rep initReporter) int {
	fatal := func(err error) int {
		rep.send(Event{Event: "fatal", Err: err.Error()})
		return 1
	}
	if len(cfg.Steps) != 1 {
		return fatal(fmt.Errorf("template: want 1 step, got %d", len(cfg.Steps)))
	}
	if err := sealFiles(cfg.Files); err != nil {
		return fatal(err)
	}
	if err := setRlimits(cfg); err != nil {
		return fatal(err)
	}
	st := cfg.Steps[0]
	bin, err := lookPath(st.Argv[0], "/usr/bin:/bin")
	if err != nil {
		return fatal(fmt.Errorf("template %s: %w", st.Argv[0], err))
	}
	devnull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fatal(err)
	}
	rep.send(Event{Event: "start"})
	pid, err := syscall.ForkExec(bin, st.Argv, &syscall.ProcAttr{
		Dir:   "/tmp",
		Env:   cfg.Env,
		Files: []uintptr{uintptr(devnull), 1, 2, TemplateCtrlFD},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "template: %v\n", err)
		rep.send(Event{Event: "exit", Exit: 126})
		return 1
	}
	ws, _ := waitStep(pid, 0)
	ev := Event{Event: "exit", Exit: ws.ExitStatus()}
	if ws.Signaled() {
		ev.Signal = int(ws.Signal())
		ev.Exit = 128 + ev.Signal
	}
	rep.send(ev)
	return 0
}

// sealFiles gives the template's own files (its helper library, reaper,
// code and config, written like a run's files for the code's uid) and
// their directories to root, read-only: no process of the code's uid
// changes what the template and every later child load.
func sealFiles(files []sandbox.File) error {
	dirs := map[string]bool{}
	for _, f := range files {
		if err := unix.Lchown(f.Path, 0, 0); err != nil {
			return fmt.Errorf("seal %s: %w", f.Path, err)
		}
		mode := f.Mode & 0o555
		if f.Mode == 0 {
			mode = 0o444
		}
		if err := unix.Chmod(f.Path, mode); err != nil {
			return fmt.Errorf("seal %s: %w", f.Path, err)
		}
		for d := path.Dir(f.Path); d != "/tmp" && d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			if err := unix.Lchown(d, 0, 0); err != nil {
				return fmt.Errorf("seal %s: %w", d, err)
			}
			if err := unix.Chmod(d, 0o755); err != nil {
				return fmt.Errorf("seal %s: %w", d, err)
			}
		}
	}
	return nil
}
