package api

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	warmpool "github.com/codeexec/codeexec/internal/sandbox/warm"
)

// diffCase is one everyday program of the differential suite: it must give
// the same answer, byte for byte, served by the warm pool as run cold.
type diffCase struct {
	name, lang, code, stdin string
	// random: the program prints randomness; its output must differ
	// between any two runs, on either path, instead of being equal.
	random bool
}

// The programs LibreChat users ask for, and the process properties a
// forked run could get wrong. Nothing here prints what differs between two
// cold runs anyway (addresses, times, set order of strings).
var diffCorpus = []diffCase{
	{name: "hello", lang: "py", code: "print('hello')"},
	{name: "issue-chart", lang: "py", code: `import pandas as pd, matplotlib.pyplot as plt
plt.plot(pd.Series([1, 2, 3])); plt.title("hello"); plt.savefig("/mnt/data/p.png")`},
	{name: "chart-title-legend-labels", lang: "py", code: `import matplotlib.pyplot as plt
import numpy as np
x = np.linspace(0, 10, 50)
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(x, np.sin(x), label="sin")
ax.plot(x, np.cos(x), "--", label="cos")
ax.set_title("Waves"); ax.set_xlabel("time (s)"); ax.set_ylabel("amplitude")
ax.legend(); ax.grid(True)
fig.savefig("waves.png", dpi=80)
print("saved")`},
	{name: "chart-unicode", lang: "py", code: `import matplotlib.pyplot as plt
plt.bar(["café", "naïve", "Ωmega", "straße"], [3, 1, 4, 1])
plt.title("Übersicht — größte Werte ±5 %")
plt.savefig("u.png", dpi=60)`},
	{name: "several-figures", lang: "py", code: `import matplotlib
import matplotlib.pyplot as plt
for i in range(3):
    fig = plt.figure(figsize=(3, 2))
    plt.hist([1, 2, 2, 3, 3, 3][: i + 4], bins=3)
    plt.title(f"figure {i}")
    fig.savefig(f"fig{i}.png", dpi=50)
    plt.close(fig)
print(matplotlib.get_backend(), len(plt.get_fignums()))`},
	{name: "chart-svg-pdf", lang: "py", code: `import matplotlib
matplotlib.rcParams["svg.hashsalt"] = "fixed"
import matplotlib.pyplot as plt
plt.scatter([1, 2, 3], [3, 1, 2]); plt.title("formats")
plt.savefig("s.svg", metadata={"Date": None}); plt.savefig("s.pdf", metadata={"CreationDate": None})`},
	{name: "seaborn", lang: "py", code: `import seaborn as sns, pandas as pd, matplotlib.pyplot as plt
df = pd.DataFrame({"g": list("aabbcc"), "v": [1, 3, 2, 5, 4, 6]})
ax = sns.barplot(data=df, x="g", y="v", errorbar=None)
ax.set_title("seaborn bars")
plt.savefig("sns.png", dpi=50)
print(df.groupby("g").v.mean().to_dict())`},
	{name: "pil-truetype", lang: "py", code: `from PIL import Image, ImageDraw, ImageFont
img = Image.new("RGB", (240, 60), "white")
d = ImageDraw.Draw(img)
f = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 20)
d.text((10, 15), "Hello, Wörld", font=f, fill="black")
img.save("pil.png")
print(img.getbbox(), d.textbbox((10, 15), "Hello, Wörld", font=f))`},
	{name: "pil-default-font", lang: "py", code: `from PIL import Image, ImageDraw, ImageFont
img = Image.new("L", (120, 30), 255)
ImageDraw.Draw(img).text((5, 5), "default font", font=ImageFont.load_default(), fill=0)
img.save("pild.png")
print(sum(img.getdata()))`},
	{name: "pandas-csv", lang: "py", code: `import pandas as pd
df = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"], "t": [3.5, 19.25, 31.0]})
df.to_csv("cities.csv", index=False)
print(df.describe().round(3).to_string())
print(pd.read_csv("cities.csv").equals(df))`},
	{name: "pandas-excel", lang: "py", code: `import pandas as pd
df = pd.DataFrame({"a": range(5), "b": [x * 1.5 for x in range(5)]})
df.to_excel("t.xlsx", index=False, sheet_name="data")
print(pd.read_excel("t.xlsx").sum().to_dict())`},
	{name: "reportlab-pdf", lang: "py", code: `from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
c = canvas.Canvas("r.pdf", pagesize=A4, invariant=1)
c.setFont("Helvetica", 14); c.drawString(72, 760, "Quarterly report")
c.line(72, 750, 300, 750); c.showPage(); c.save()
print("pdf done")`},
	{name: "python-docx", lang: "py", code: `from docx import Document
d = Document()
d.add_heading("Minutes", 1)
d.add_paragraph("Attendees: Ana, Bo")
t = d.add_table(rows=2, cols=2)
t.cell(0, 0).text = "k"; t.cell(1, 1).text = "v"
d.save("m.docx")
print(len(d.paragraphs))`},
	{name: "sklearn", lang: "py", code: `from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
X, y = load_iris(return_X_y=True)
a, b, c, d = train_test_split(X, y, random_state=0)
m = LogisticRegression(max_iter=500).fit(a, c)
print(round(m.score(b, d), 4))`},
	{name: "scipy", lang: "py", code: `from scipy import optimize, stats, integrate
r = optimize.minimize_scalar(lambda x: (x - 2) ** 2 + 1)
print(round(r.x, 6), round(stats.norm.cdf(1.96), 6), round(integrate.quad(lambda x: x * x, 0, 3)[0], 6))`},
	{name: "sympy", lang: "py", code: `import sympy as sp
x = sp.symbols("x")
print(sp.solve(x**2 - 5*x + 6, x), sp.integrate(sp.sin(x)**2, x), sp.latex(sp.Rational(3, 4) * x))`},
	{name: "numpy-linalg", lang: "py", code: `import numpy as np
a = np.arange(1, 10, dtype=float).reshape(3, 3) + np.eye(3)
print(np.round(np.linalg.inv(a), 6)); print(np.round(np.linalg.svd(a)[1], 6))
print(np.__version__, np.dtype(int), np.get_printoptions()["precision"])`},
	{name: "subprocess", lang: "py", code: `import subprocess, os
print(subprocess.run(["echo", "from a child"], capture_output=True, text=True).stdout, end="")
print(subprocess.run("[ $PPID = %d ] && echo child of the code; exit 7" % os.getpid(), shell=True).returncode)
open("in.txt", "w").write("x")
print(sorted(os.listdir(".")))`},
	{name: "threads", lang: "py", code: `from concurrent.futures import ThreadPoolExecutor
import threading
with ThreadPoolExecutor(4) as ex:
    print(sum(ex.map(lambda n: n * n, range(100))))
print(threading.active_count(), threading.current_thread().name)`},
	{name: "multiprocessing", lang: "py", code: `import multiprocessing as mp
def sq(x):
    return x * x
if __name__ == "__main__":
    with mp.Pool(2) as p:
        print(p.map(sq, range(8)))
    print(mp.get_start_method(), mp.current_process().name, mp.parent_process())`},
	{name: "sigterm-self", lang: "py", code: `import os, signal, sys
print("before", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
print("after")`},
	{name: "signal-handler", lang: "py", code: `import os, signal
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
os.kill(os.getpid(), signal.SIGUSR1)
print(got, signal.getsignal(signal.SIGPIPE), signal.getsignal(signal.SIGINT) is signal.default_int_handler)`},
	{name: "sigint-keyboardinterrupt", lang: "py", code: `import os, signal
try:
    os.kill(os.getpid(), signal.SIGINT)
    import time; time.sleep(1)
except KeyboardInterrupt:
    print("interrupted")`},
	{name: "atexit", lang: "py", code: `import atexit, sys
atexit.register(lambda: print("bye from atexit"))
atexit.register(lambda: sys.stderr.write("err from atexit\n"))
print("main done")`},
	{name: "exit-code", lang: "py", code: "import sys\nprint('partial')\nsys.exit(3)"},
	{name: "exit-message", lang: "py", code: "import sys\nsys.exit('fatal: bad input')"},
	{name: "os-exit", lang: "py", code: "import os\nprint('x', flush=True)\nos._exit(9)"},
	{name: "traceback", lang: "py", code: "def f(x):\n    return 1 / x\n\nprint('start')\nf(0)"},
	{name: "syntax-error", lang: "py", code: "print('a')\nif True print('b')"},
	{name: "warnings", lang: "py", code: `import warnings
warnings.warn("deprecated thing", DeprecationWarning)
warnings.warn("careful")
import numpy as np
print(np.float64(1) / 0)`},
	{name: "stdin", lang: "py", stdin: "alpha\nbeta\n\u00e9t\u00e9\n", code: `import sys
first = input()
rest = sys.stdin.read()
print(repr(first), repr(rest), sys.stdin.encoding)`},
	{name: "large-output", lang: "py", code: "for i in range(20000):\n    print(i, 'x' * 20)"},
	{name: "unicode-output", lang: "py", code: "print('héllo wörld ✓ 🚀 中文')\nimport sys\nsys.stderr.write('stderr ✓\\n')\nprint('\\udcff'.encode('utf-8', 'surrogateescape'))"},
	{name: "random-py", lang: "py", random: true, code: "import random, os, uuid\nprint(random.random(), random.getrandbits(64), os.urandom(8).hex(), uuid.uuid4())"},
	{name: "random-numpy", lang: "py", random: true, code: "import numpy as np\nprint(np.random.rand(3), np.random.default_rng().integers(1 << 40), np.random.randn())"},
	{name: "process-identity", lang: "py", code: `import os, sys
# The code's pid itself differs: a cold run's init is a Go program whose
# threads take pids 2-5 (README, "Warm and cold runs").
print(os.getpid() > 1, os.getppid(), os.getuid(), os.getgid(), os.getgroups(), os.getcwd())
print(sys.argv, sys.orig_argv, __file__, __name__, sys.executable, sys.path[0])
print(open("/proc/1/cmdline", "rb").read())
print(os.getpgrp() == os.getsid(0), os.umask(0o22))`},
	{name: "process-status", lang: "py", code: `import re
keep = ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "SigBlk", "SigIgn", "SigCgt", "PPid", "Threads")
for line in open("/proc/self/status"):
    if line.split(":")[0] in keep:
        print(line, end="")`},
	{name: "descriptors", lang: "py", code: `import os
fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
print(fds)
for fd in fds[:3]:
    print(fd, os.readlink(f"/proc/self/fd/{fd}").split(":")[0])`},
	{name: "environment", lang: "py", code: "import os\nfor k in sorted(os.environ):\n    print(k, os.environ[k])"},
	{name: "rlimits", lang: "py", code: `import resource
for n in sorted(x for x in dir(resource) if x.startswith("RLIMIT_")):
    print(n, resource.getrlimit(getattr(resource, n)))`},
	{name: "stdio-setup", lang: "py", code: `import sys, locale
for s in (sys.stdin, sys.stdout, sys.stderr):
    print(repr(s), repr(s.buffer), s.line_buffering, s.write_through, s.errors, s.encoding)
print(locale.getlocale(), locale.getpreferredencoding(), sys.getfilesystemencoding(), sys.flags.unbuffered)
import __main__
print(type(__main__.__loader__).__name__, __main__.__spec__, __main__.__cached__, __builtins__.__name__)`},
	{name: "mounts-and-tmp", lang: "py", code: `import os
print(sorted(os.listdir("/tmp")), sorted(os.listdir("/mnt/data")))
# The order of the mount table differs (README, "Warm and cold runs").
# (uid= and gid= name the host's ids of the run's slot, whichever it is.)
import re
for line in sorted(open("/proc/self/mountinfo"), key=lambda l: l.split()[4]):
    f, post = line.split(), line.split(" - ")[1].split()
    print(f[4], f[5], post[0], re.sub(r"\b([ug]id)=\d+", r"\1=N", post[2]))`},
	{name: "hostname-namespaces", lang: "py", code: `import os, socket
print(socket.gethostname(), os.uname().nodename)
print(sorted(os.listdir("/proc"))[:0], len([p for p in os.listdir("/proc") if p.isdigit()]))`},
	{name: "gc-and-flags", lang: "py", code: "import gc, sys\nprint(gc.isenabled(), gc.get_threshold(), sys.flags.optimize, sys.dont_write_bytecode, sys.getrecursionlimit())"},
	{name: "write-files", lang: "py", code: `import os, json
os.makedirs("out/nested", exist_ok=True)
json.dump({"k": [1, 2]}, open("out/nested/d.json", "w"))
open("bin.dat", "wb").write(bytes(range(256)))
print(os.stat("bin.dat").st_size, oct(os.stat("bin.dat").st_mode & 0o777))`},
	// Other languages the warm templates serve by exec.
	{name: "bash-identity", lang: "bash", code: "[ $$ -gt 1 ] && echo $PPID; id; ulimit -a | sort; trap -p; umask; pwd; echo \"$0\""},
	{name: "bash-sigterm", lang: "bash", code: "echo before; kill -TERM $$; echo after"},
	{name: "bash-exit", lang: "bash", code: "echo out; echo err >&2; exit 4"},
	{name: "bash-background", lang: "bash", code: "(sleep 0.2; echo late) & echo early; wait; echo done"},
	{name: "bash-python", lang: "bash", code: "python3 -c 'import os; print(os.getppid() > 0)'; ls /proc/self/fd | wc -l"},
	{name: "node", lang: "js", code: "console.log(process.pid > 1, process.ppid, process.argv.length, process.env.HOME, process.cwd());\nprocess.on('exit', c => console.log('exit', c));\nconsole.error('to stderr');"},
	{name: "node-signal", lang: "js", code: "console.log('x'); process.kill(process.pid, 'SIGTERM'); setTimeout(() => console.log('after'), 100);"},
	{name: "php", lang: "php", code: "<?php echo getmypid() > 1, ' ', posix_getppid(), ' ', php_sapi_name(), \"\\n\"; fwrite(STDERR, \"e\\n\"); exit(2);"},
	{name: "r-plot", lang: "r", code: `png("r.png", width = 300, height = 200)
plot(1:10, main = "R chart", xlab = "x axis")
invisible(dev.off())
cat(Sys.getpid() > 0, "\n")`},
	{name: "c-cached", lang: "c", code: "#include <stdio.h>\n#include <unistd.h>\n#include <signal.h>\nint main(int c, char **v){printf(\"%d %d %d\\n\", getpid() > 1, getppid(), c); fflush(stdout); raise(SIGTERM); return 0;}"},
}

// TestWarmMatchesCold runs every program of the corpus on a server whose
// runs all start cold and on one whose warm pool serves them, and compares
// status, exit code, stdout, stderr and every output file byte for byte.
// Normalised: the creation and modification stamps that xlsx and docx
// files carry (zip entry times, docProps/core.xml dates).
func TestWarmMatchesCold(t *testing.T) {
	if backendChosen() {
		return // it compares two backends itself: once per test run
	}
	// Room for a cold start of the data stack on a loaded machine.
	big := func(l *engine.Limits, _ *auth.Config) {
		l.MemoryBytes, l.Pids, l.WallTime, l.CPUTime = 1<<30, 128, 90*time.Second, 60*time.Second
	}
	coldEnv := newEnvOn(t, cold, big)
	warmEnv := newEnvOn(t, warm, big)
	// A compiled program's second run comes from the compile cache: one
	// step, which the warm pool serves.
	for _, e := range []*env{coldEnv, warmEnv} {
		cc, err := engine.OpenCompileCache(t.TempDir(), 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		e.srv.Config.Handler.(*Server).Engine.SetCompileCache(cc)
	}
	wbox := warmEnv.box.(*warmpool.Pool)
	for _, c := range diffCorpus {
		if l, ok := lang.Lookup(c.lang); !ok {
			t.Fatalf("%s: unknown language %s", c.name, c.lang)
		} else if ok, _ := engine.Available(l); !ok {
			t.Fatalf("%s: %s toolchain missing", c.name, c.lang)
		}
		t.Run(c.name, func(t *testing.T) {
			runs := 1
			if c.random || c.lang == "c" {
				runs = 2 // c: the second run is served from the compile cache
			}
			var cr, wr []diffRun
			for i := 0; i < runs; i++ {
				cr = append(cr, runDiff(t, coldEnv, c))
				before := wbox.Served()
				wr = append(wr, runDiff(t, warmEnv, c))
				if c.lang != "c" || i > 0 { // a first compile is two steps: cold
					if wbox.Served() != before+1 {
						t.Fatalf("run %d was not served by the warm pool", i)
					}
				}
			}
			if c.random {
				all := append(cr, wr...)
				for i := range all {
					for j := i + 1; j < len(all); j++ {
						if all[i].stdout == all[j].stdout {
							t.Fatalf("two runs printed the same randomness: %q", all[i].stdout)
						}
					}
					if all[i].status != "ok" || all[i].stderr != "" {
						t.Fatalf("run %d: status %s, stderr %q", i, all[i].status, all[i].stderr)
					}
				}
				return
			}
			for i := range cr {
				if d := cr[i].diff(wr[i]); d != "" {
					t.Errorf("%s: warm differs from cold: %s", c.name, d)
				}
			}
		})
	}
}

// diffRun is what a run gave, outputs downloaded and normalised.
type diffRun struct {
	status         string
	exitCode       int
	stdout, stderr string
	files          map[string][]byte
}

func runDiff(t *testing.T, e *env, c diffCase) diffRun {
	t.Helper()
	body := map[string]any{"lang": c.lang, "code": c.code}
	if c.stdin != "" {
		body["stdin"] = c.stdin
	}
	r := e.exec(body)
	d := diffRun{status: r.Status, exitCode: r.ExitCode, stdout: r.Stdout, stderr: r.Stderr, files: map[string][]byte{}}
	for _, f := range r.Files {
		d.files[f.Name] = normaliseOutput(t, f.Name, e.download(f.StorageSessionID, f.ID))
	}
	return d
}

// diff names the first difference between a (cold) and b (warm).
func (a diffRun) diff(b diffRun) string {
	switch {
	case a.status != b.status:
		return fmt.Sprintf("status %q, warm %q (stderr %q / %q)", a.status, b.status, clip(a.stderr), clip(b.stderr))
	case a.exitCode != b.exitCode:
		return fmt.Sprintf("exit code %d, warm %d", a.exitCode, b.exitCode)
	case a.stdout != b.stdout:
		return "stdout: " + firstDiff(a.stdout, b.stdout)
	case a.stderr != b.stderr:
		return "stderr: " + firstDiff(a.stderr, b.stderr)
	}
	var names []string
	for n := range a.files {
		names = append(names, n)
	}
	for n := range b.files {
		if _, ok := a.files[n]; !ok {
			return fmt.Sprintf("file %s only in the warm run", n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		bf, ok := b.files[n]
		if !ok {
			return fmt.Sprintf("file %s missing from the warm run", n)
		}
		if !bytes.Equal(a.files[n], bf) {
			return fmt.Sprintf("file %s (%d bytes, warm %d): %s", n, len(a.files[n]), len(bf), firstDiff(string(a.files[n]), string(bf)))
		}
	}
	return ""
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// firstDiff shows where two texts first differ, with a little context.
func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lo := max(0, i-60)
	return fmt.Sprintf("at byte %d: cold %q, warm %q", i, a[lo:min(len(a), i+80)], b[lo:min(len(b), i+80)])
}

var coreDates = regexp.MustCompile(`(<dcterms:(?:created|modified)[^>]*>)[^<]*(<)`)

// normaliseOutput removes what a format stamps with the time of writing:
// Office files (zip) are compared entry by entry, names and contents, with
// the dates of docProps/core.xml blanked. Everything else is compared as is.
func normaliseOutput(t *testing.T, name string, b []byte) []byte {
	if !strings.HasSuffix(name, ".xlsx") && !strings.HasSuffix(name, ".docx") {
		return b
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var out bytes.Buffer
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		if f.Name == "docProps/core.xml" {
			data = coreDates.ReplaceAll(data, []byte("${1}DATE${2}"))
		}
		fmt.Fprintf(&out, "== %s %d\n", f.Name, len(data))
		out.Write(data)
	}
	return out.Bytes()
}
