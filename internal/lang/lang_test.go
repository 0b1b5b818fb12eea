package lang

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/testenv"
)

// The order LibreChat's tool enumerates its languages in.
var libreChatOrder = []string{"py", "js", "ts", "c", "cpp", "java", "php", "rs", "go", "d", "f90", "r", "bash"}

func TestTableOrderAndLookup(t *testing.T) {
	var ids []string
	for _, l := range All() {
		ids = append(ids, l.ID)
	}
	if !slices.Equal(ids, libreChatOrder) {
		t.Fatalf("ids = %v, want %v", ids, libreChatOrder)
	}
	for alias, id := range map[string]string{
		"python": "py", "JavaScript": "js", "node": "js", "typescript": "ts", "c++": "cpp",
		"rust": "rs", "fortran": "f90", "sh": "bash", " R ": "r", "Go": "go",
	} {
		l, ok := Lookup(alias)
		if !ok || l.ID != id {
			t.Errorf("Lookup(%q) = %v, %v; want %s", alias, l, ok, id)
		}
	}
	if _, ok := Lookup("cobol"); ok {
		t.Error("Lookup(cobol) succeeded")
	}
	// The stateful kernel (runtime/kernel.py) runs Python in its namespace
	// and Bash as its child: no other language may claim it.
	var live []string
	for _, l := range All() {
		if l.Live {
			live = append(live, l.ID)
		}
	}
	if !slices.Equal(live, []string{"py", "bash"}) {
		t.Errorf("live languages %v, want [py bash]", live)
	}
	seen := map[string]string{}
	for _, l := range All() {
		for _, k := range append([]string{l.ID}, l.Aliases...) {
			if prev, dup := seen[k]; dup {
				t.Errorf("%q names both %s and %s", k, prev, l.ID)
			}
			seen[k] = l.ID
		}
		if l.Source == "" || len(l.Run) == 0 || len(l.Version) == 0 || len(l.Requires) == 0 || len(l.Packages) == 0 {
			t.Errorf("%s: incomplete entry", l.ID)
		}
		for _, p := range append(append([]string{}, l.Requires...), l.Run[0], l.Version[0]) {
			if !strings.HasPrefix(p, "/usr/") && !strings.HasPrefix(p, "/bin/") && p != "{bin}" {
				t.Errorf("%s: %s is not an absolute path under /usr or /bin", l.ID, p)
			}
		}
	}
}

func TestJavaNames(t *testing.T) {
	for _, c := range []struct{ code, file, class string }{
		{"public class Main { public static void main(String[] a) {} }", "Main.java", "Main"},
		{"public class Greeter {\n public static void main(String[] args) {}\n}", "Greeter.java", "Greeter"},
		{"// public class Fake {}\n/* public class Fake2 {} */\nclass Helper {}\npublic final class Real {\n  static String s = \"public class Str {\";\n  public static void main(String... a) {}\n}",
			"Real.java", "Real"},
		{"package com.example.app;\nimport java.util.*;\npublic class App { static class Inner { } public static void main(String[] a) {} }",
			"App.java", "com.example.app.App"},
		{"class Solution {\n  public static void main(String[] a) { }\n}", "Solution.java", "Solution"},
		{"public interface Shape { double area(); }\nclass Runner { public static void main(String[] a) {} }", "Shape.java", "Runner"},
		{"public record Point(int x, int y) { public static void main(String[] a) { char c = '{'; } }", "Point.java", "Point"},
		{"public class A { public static class B { } }\nclass C { public static void main(String[] a) {} }", "A.java", "C"},
		{"String s = \"\"\"\n public class Nope {\n\"\"\";", "Main.java", "Main"},
		{"garbage", "Main.java", "Main"},
		{"", "Main.java", "Main"},
	} {
		got := javaNames(c.code)
		if got.file != c.file || got.class != c.class {
			t.Errorf("javaNames(%q) = %+v, want file %s class %s", c.code, got, c.file, c.class)
		}
	}
	l, _ := Lookup("java")
	if got := l.Expand(l.Run, "package p;\npublic class Hi { public static void main(String[] a) {} }"); got[len(got)-1] != "p.Hi" {
		t.Errorf("java run argv = %v", got)
	}
	if got := l.SourcePath("public class Hi {}"); got != CodeDir+"/Hi.java" {
		t.Errorf("java source path = %s", got)
	}
}

// A program per language that prints "hello <argv[1]> <first line of stdin>",
// one that does not compile (or parse), and one that fails at run time.
type sample struct{ hello, bad, crash string }

var samples = map[string]sample{
	"py": {
		hello: "import sys\nprint('hello', sys.argv[1], sys.stdin.readline().strip())\n",
		bad:   "print(\n",
		crash: "print(1/0)\n",
	},
	"js": {
		hello: "const line = require('fs').readFileSync(0, 'utf8').split('\\n')[0];\nconsole.log('hello', process.argv[2], line);\n",
		bad:   "console.log(\n",
		crash: "throw new Error('boom');\n",
	},
	"ts": {
		hello: "import * as fs from 'fs';\nconst line: string = fs.readFileSync(0, 'utf8').split('\\n')[0];\nconst args: string[] = process.argv.slice(2);\nconsole.log('hello', args[0], line);\n",
		bad:   "let x: number = ;\n",
		crash: "function f(n: number): number {\n  throw new Error('boom ' + n);\n}\nf(1);\n",
	},
	"c": {
		hello: "#include <stdio.h>\n#include <math.h>\nint main(int argc, char **argv) {\n  char line[100] = \"\";\n  volatile double two = 2.0;\n  if (scanf(\"%99s\", line) != 1 || sqrt(two) < 1.4) return 1;\n  printf(\"hello %s %s\\n\", argv[1], line);\n  return 0;\n}\n",
		bad:   "int main( {\n",
		crash: "#include <stdlib.h>\nint main(void) { abort(); }\n",
	},
	"cpp": {
		hello: "#include <iostream>\n#include <string>\n#include <vector>\n#include <cmath>\nint main(int argc, char **argv) {\n  std::vector<std::string> a(argv + 1, argv + argc);\n  std::string line;\n  std::getline(std::cin, line);\n  volatile double two = 2.0;\n  if (std::sqrt(two) < 1.4) return 1;\n  std::cout << \"hello \" << a.at(0) << \" \" << line << \"\\n\";\n}\n",
		bad:   "int main( {\n",
		crash: "#include <stdexcept>\nint main() { throw std::runtime_error(\"boom\"); }\n",
	},
	"java": {
		hello: "import java.io.*;\n\n// Not named Main on purpose.\npublic class Greeter {\n  public static void main(String[] args) throws IOException {\n    BufferedReader r = new BufferedReader(new InputStreamReader(System.in));\n    System.out.println(\"hello \" + args[0] + \" \" + r.readLine());\n  }\n}\n",
		bad:   "public class Main { public static void main(String[] a) { int x = } }\n",
		crash: "public class Main { public static void main(String[] a) { throw new RuntimeException(\"boom\"); } }\n",
	},
	"php": {
		hello: "<?php\n$line = trim(fgets(STDIN));\necho \"hello {$argv[1]} $line\\n\";\n",
		bad:   "<?php echo 'x' +;\n",
		crash: "<?php\nthrow new Exception('boom');\n",
	},
	"rs": {
		hello: "use std::io::BufRead;\n\nfn main() {\n    let args: Vec<String> = std::env::args().collect();\n    let mut line = String::new();\n    std::io::stdin().lock().read_line(&mut line).unwrap();\n    println!(\"hello {} {}\", args[1], line.trim());\n}\n",
		bad:   "fn main() { let x: i32 = \"s\"; }\n",
		crash: "fn main() { panic!(\"boom\"); }\n",
	},
	"go": {
		hello: "package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"os\"\n\t\"strings\"\n)\n\nfunc main() {\n\tline, _ := bufio.NewReader(os.Stdin).ReadString('\\n')\n\tfmt.Println(\"hello\", os.Args[1], strings.TrimSpace(line))\n}\n",
		bad:   "package main\n\nfunc main() { x := 1 }\n",
		crash: "package main\n\nfunc main() { panic(\"boom\") }\n",
	},
	"d": {
		hello: "import std.stdio, std.string;\n\nvoid main(string[] args) {\n    auto line = readln().strip();\n    writeln(\"hello \", args[1], \" \", line);\n}\n",
		bad:   "void main() { int x = \"s\"; }\n",
		crash: "void main() { throw new Exception(\"boom\"); }\n",
	},
	"f90": {
		hello: "program main\n  implicit none\n  character(len=100) :: arg, line\n  call get_command_argument(1, arg)\n  read(*, '(A)') line\n  print '(A)', 'hello ' // trim(arg) // ' ' // trim(line)\nend program main\n",
		bad:   "program main\n  x = \nend program main\n",
		crash: "program main\n  error stop 3\nend program main\n",
	},
	"r": {
		hello: "args <- commandArgs(trailingOnly = TRUE)\nline <- readLines(file('stdin'), n = 1)\ncat('hello', args[1], line, '\\n')\n",
		bad:   "x <- (\n",
		crash: "stop('boom')\n",
	},
	"bash": {
		hello: "read -r line\necho \"hello $1 $line\"\n",
		bad:   "if then fi\n",
		crash: "false\nexit 3\n",
	},
}

// Further programs that exercise what users of a language run into.
var extras = []struct {
	lang, name, code, want string
	files                  []string // must exist in the working directory afterwards
}{
	{"py", "data-stack", `import numpy, pandas, scipy, matplotlib, seaborn, sklearn, statsmodels.api, sympy, networkx
import PIL, openpyxl, xlrd, docx, reportlab, pypdf, bs4, lxml, tabulate, xlsxwriter
import matplotlib.pyplot as plt
plt.plot([1, 2, 3]); plt.savefig('plot.png')
print('stack ok', matplotlib.get_backend())
`, "stack ok agg", []string{"plot.png"}},
	{"js", "globals", "console.log(typeof require, typeof module, __filename.endsWith('main.js'))\n", "function object true", nil},
	{"ts", "node-globals", `const os = require('os');
const fs = require('fs');
async function main(): Promise<void> {
  await new Promise((r) => setTimeout(r, 1));
  fs.writeFileSync('out.txt', 'x');
  console.log('ts ok', typeof os.cpus, typeof __dirname, typeof __filename, typeof exports);
}
const v: number = await Promise.resolve(1);
if (require.main === module) {
  main();
}
`, "ts ok function string string object", []string{"out.txt"}},
	{"ts", "own-require", "function require(x: string) { return x + '!'; }\nexport {};\nconsole.log(require('own'));\n", "own!", nil},
	{"java", "package", "package com.example;\n\nimport java.util.*;\n\npublic class App {\n  public static void main(String[] args) {\n    List<Integer> l = new ArrayList<>(List.of(3, 1, 2));\n    Collections.sort(l);\n    System.out.println(\"java \" + l);\n  }\n}\n", "java [1, 2, 3]", nil},
	{"go", "std", "package main\n\nimport (\n\t\"encoding/json\"\n\t\"fmt\"\n\t\"math\"\n\t\"net/http\"\n\t\"os\"\n)\n\nfunc main() {\n\tb, _ := json.Marshal(map[string]int{\"ok\": http.StatusOK})\n\tos.WriteFile(\"out.json\", b, 0o644)\n\tfmt.Println(string(b), math.Sqrt(4))\n}\n",
		`{"ok":200} 2`, []string{"out.json"}},
	{"r", "plots", "suppressPackageStartupMessages({library(ggplot2); library(dplyr); library(data.table)})\npng('base.png'); plot(1:10); invisible(dev.off())\ng <- ggplot(data.frame(x = 1:3, y = c(2, 1, 3)), aes(x, y)) + geom_line()\nggsave('gg.png', g, width = 4, height = 3)\ndt <- data.table(a = 1:3)\ncat('r ok', getOption('bitmapType'), nrow(dt %>% filter(a > 1)), '\\n')\n",
		"r ok cairo 2", []string{"base.png", "gg.png"}},
	{"bash", "python3", "python3 -c 'import sys; print(sys.executable)'\n", "/usr/bin/python3", nil},
}

// run is one execution of a language's steps as ordinary processes, with the
// sandbox's fixed environment and, when the test runs as root, uid 1000.
type run struct {
	root string
	dirs Dirs
	work string
}

func newRun(t testing.TB) *run {
	t.Helper()
	root, err := os.MkdirTemp("", "codeexec-lang-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	r := &run{root: root, dirs: Dirs{Code: root + "/code", Build: root + "/build"}, work: root + "/data"}
	for _, d := range []string{root, r.dirs.Code, r.work, root + "/home"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		r.own(t, d)
	}
	return r
}

const sandboxUID = 1000

func (r *run) own(t testing.TB, path string) {
	if os.Getuid() == 0 {
		if err := os.Chown(path, sandboxUID, sandboxUID); err != nil {
			t.Fatal(err)
		}
	}
}

type result struct {
	stdout, stderr string
	code           int
	failedStep     string
}

func (r *run) exec(t testing.TB, l *Language, code string, args []string, stdin string) result {
	t.Helper()
	src := l.SourcePathIn(r.dirs, code)
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	r.own(t, src)
	env := append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + r.root + "/home", "TMPDIR=" + r.root,
		"LANG=C.UTF-8", "LC_ALL=C.UTF-8", "USER=sandbox", "LOGNAME=sandbox", "SHELL=/bin/bash", "TERM=dumb"}, l.Env...)
	type step struct {
		name  string
		argv  []string
		stdin string
	}
	var steps []step
	if len(l.Compile) > 0 {
		steps = append(steps, step{"compile", l.ExpandIn(r.dirs, l.Compile, code), ""})
	}
	steps = append(steps, step{"run", append(l.ExpandIn(r.dirs, l.Run, code), args...), stdin})
	var res result
	for _, s := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, s.argv[0], s.argv[1:]...)
		cmd.Env, cmd.Dir = env, r.work
		cmd.Stdin = strings.NewReader(s.stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if os.Getuid() == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: sandboxUID, Gid: sandboxUID}}
		}
		err := cmd.Run()
		cancel()
		res.stdout += stdout.String()
		res.stderr += stderr.String()
		var ee *exec.ExitError
		switch {
		case err == nil:
			continue
		case errors.As(err, &ee):
			res.code, res.failedStep = ee.ExitCode(), s.name
			if res.code < 0 {
				res.code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
			}
			return res
		default:
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	return res
}

func requireToolchain(t testing.TB, l *Language) {
	t.Helper()
	for _, p := range l.Requires {
		if _, err := os.Stat(p); err != nil {
			testenv.Skipf(t, "%s is not installed (%s missing): install %s (scripts/install-deps.sh)",
				l.Name, p, strings.Join(l.Packages, ", "))
		}
	}
}

func TestLanguagesOnHost(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles and runs every language")
	}
	for _, l := range All() {
		s, ok := samples[l.ID]
		if !ok {
			t.Errorf("%s: no sample programs", l.ID)
			continue
		}
		t.Run(l.ID, func(t *testing.T) {
			t.Parallel()
			requireToolchain(t, l)
			t.Run("hello", func(t *testing.T) {
				res := newRun(t).exec(t, l, s.hello, []string{"world"}, "from-stdin\n")
				if res.code != 0 || strings.TrimSpace(res.stdout) != "hello world from-stdin" {
					t.Errorf("exit %d in %s, stdout %q, stderr %q", res.code, res.failedStep, res.stdout, res.stderr)
				}
			})
			t.Run("compile-error", func(t *testing.T) {
				res := newRun(t).exec(t, l, s.bad, nil, "")
				wantStep := "run"
				if len(l.Compile) > 0 {
					wantStep = "compile"
				}
				if res.code == 0 || res.failedStep != wantStep || strings.TrimSpace(res.stderr) == "" {
					t.Errorf("exit %d in %q (want failure in %s with a message), stdout %q, stderr %q",
						res.code, res.failedStep, wantStep, res.stdout, res.stderr)
				}
			})
			t.Run("runtime-error", func(t *testing.T) {
				res := newRun(t).exec(t, l, s.crash, nil, "")
				if res.code == 0 || res.failedStep != "run" {
					t.Errorf("exit %d in %q (want failure in run), stdout %q, stderr %q", res.code, res.failedStep, res.stdout, res.stderr)
				}
				if l.ID == "ts" && !strings.Contains(res.stderr, "main.ts:2") {
					t.Errorf("TypeScript stack trace does not point into main.ts: %q", res.stderr)
				}
			})
			for _, x := range extras {
				if x.lang != l.ID {
					continue
				}
				t.Run(x.name, func(t *testing.T) {
					r := newRun(t)
					res := r.exec(t, l, x.code, nil, "")
					if res.code != 0 || strings.TrimSpace(res.stdout) != x.want {
						t.Errorf("exit %d in %s, stdout %q (want %q), stderr %q", res.code, res.failedStep, res.stdout, x.want, res.stderr)
					}
					for _, f := range x.files {
						if _, err := os.Stat(filepath.Join(r.work, f)); err != nil {
							t.Errorf("no %s in the working directory: %v", f, err)
						}
					}
					if names, _ := filepath.Glob(r.work + "/*"); len(names) != len(x.files) {
						t.Errorf("working directory holds %v, want only %v", names, x.files)
					}
				})
			}
		})
	}
}

func TestVersions(t *testing.T) {
	for _, l := range All() {
		t.Run(l.ID, func(t *testing.T) {
			requireToolchain(t, l)
			cmd := exec.Command(l.Version[0], l.Version[1:]...)
			cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}, l.Env...)
			out, err := cmd.CombinedOutput()
			first := strings.TrimSpace(strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0])
			if err != nil || first == "" || !strings.ContainsAny(first, "0123456789") {
				t.Errorf("%v: %v, first line %q", l.Version, err, first)
			}
			t.Logf("%s", first)
		})
	}
}

// BenchmarkHello measures compile + run of each language's hello world, as
// ordinary processes (no sandbox). It reports the median as ms/median.
func BenchmarkHello(b *testing.B) {
	for _, l := range All() {
		b.Run(l.ID, func(b *testing.B) {
			requireToolchain(b, l)
			r := newRun(b)
			code := samples[l.ID].hello
			var times []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				res := r.exec(b, l, code, []string{"world"}, "from-stdin\n")
				times = append(times, time.Since(start))
				if res.code != 0 {
					b.Fatalf("exit %d: %s", res.code, res.stderr)
				}
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms/median")
		})
	}
}
