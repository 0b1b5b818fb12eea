//go:build linux

package sandbox

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// templateCtrlFD is the init's end of a warm template's control socket;
// the template (Python) receives it as fd 3.
const templateCtrlFD = 5

// runTemplate is the init's template mode: the root is built as for any
// run, but the one step (the zygote) runs as root of the user namespace,
// with its capabilities and without seccomp, because it must create
// namespaces and mounts for its children. It never runs submitted code:
// every child drops all of that before the code starts (zygote.py).
func runTemplate(cfg initConfig, rep initReporter) int {
	fatal := func(err error) int {
		rep.send(initEvent{Event: "fatal", Err: err.Error()})
		return 1
	}
	if len(cfg.Steps) != 1 {
		return fatal(fmt.Errorf("template: want 1 step, got %d", len(cfg.Steps)))
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
	rep.send(initEvent{Event: "start"})
	pid, err := syscall.ForkExec(bin, st.Argv, &syscall.ProcAttr{
		Dir:   "/tmp",
		Env:   cfg.Env,
		Files: []uintptr{uintptr(devnull), 1, 2, templateCtrlFD},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "template: %v\n", err)
		rep.send(initEvent{Event: "exit", Exit: 126})
		return 1
	}
	ws, _ := waitStep(pid, 0)
	ev := initEvent{Event: "exit", Exit: ws.ExitStatus()}
	if ws.Signaled() {
		ev.Signal = int(ws.Signal())
		ev.Exit = 128 + ev.Signal
	}
	rep.send(ev)
	return 0
}
