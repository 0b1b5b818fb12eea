package warm

import "github.com/codeexec/codeexec/internal/sandbox"

// Config configures a warm pool (New): per pool slot, a long-lived template sandbox whose
// Python has already imported the data stack and keeps children forked,
// isolated and parked, each serving exactly one run: Python code in that
// interpreter, any other single-step run by exec'ing its program. Multi-step
// and networked specs, and every spec while the pool is empty, run cold.
type Config struct {
	// Python is the number of warm slots (0 disables the pool). Each runs
	// three templates, each with its own uid range: one with the preloaded
	// modules (~100-150 MB with numpy, pandas and matplotlib) and two lean
	// ones (~13 MB) for standard-library-only code and exec'd programs.
	Python int
	// Interpreter is the run step's argv[0] the pool runs in the template's
	// own interpreter (default /usr/bin/python3): [Interpreter, "-u", src,
	// args...] where src is one of the spec's Files and the environment is
	// Env; other specs' programs are exec'd.
	Interpreter string
	// Env is the exact environment of the specs the pool serves; the
	// template imports its modules under it.
	Env []string
	// Template is the name a spec's Spec.Warm carries when its code may
	// run in the template's own interpreter (default "python", the name
	// the language table gives Python).
	Template string
	// Preload is Python source run once in every preloaded template
	// (imports; main passes lang.PythonPreload); "": nothing preloaded.
	Preload string
	// ImportsBeyond reports whether code may import a module beyond the
	// interpreter's standard library (stdlib, as a template reports it):
	// such code runs in a preloaded template, other code in a lean one.
	// nil: every run of Python code takes a preloaded template.
	ImportsBeyond func(code []byte, stdlib map[string]bool) bool
	// Spares is how many isolated children each template keeps parked
	// (default 2): the next run finds one ready while another is prepared.
	Spares int
	// Limits are the limits the parked children are made with (their
	// cgroup; DiskBytes sizes their /tmp and /dev/shm); a run with other
	// limits re-homes its child, or remounts those, first (slower).
	Limits sandbox.Limits
}

const (
	// leanPerSlot lean templates run beside each preloaded one: a template
	// serves one run at a time and is busy until that run's namespace is
	// gone, and a lean one costs a fraction of a preloaded one per run
	// (~13 MB against ~94 MB to fork and tear down), so a second one keeps
	// back-to-back standard-library runs and exec'd programs off the
	// preloaded template.
	leanPerSlot = 2
	// TemplatesPerSlot is how many sandbox slots (uid ranges) each
	// warm slot takes.
	TemplatesPerSlot = 1 + leanPerSlot
)
