package api

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/testenv"
)

// langProgram is, per language: a program that computes 6*7, prints it
// with its first argument and its stdin, and writes out.txt to /mnt/data,
// with its exact stdout; a program that does not compile (compiled
// languages only) and what its compiler must say; a program that exits 3,
// with its exact stderr.
type langProgram struct {
	ok, compileError, runtimeError     string
	stdout, compileSays, runtimeStderr string
}

var programs = map[string]langProgram{
	// numpy: Python must reach a preloaded template on the warm backend.
	"py": {ok: "import sys\nimport numpy as np\nopen('out.txt','w').write('py')\nprint(int(np.sqrt(np.float64(1764))), sys.argv[1], sys.stdin.read())",
		runtimeError: "raise SystemExit(3)",
		stdout:       "42 arg1 in1\n\n"},
	"js": {ok: "const fs=require('fs');fs.writeFileSync('out.txt','js');console.log(6*7, process.argv[2], fs.readFileSync(0,'utf8'))",
		runtimeError: "process.exit(3)",
		stdout:       "42 arg1 in1\n\n"},
	"ts": {ok: "import * as fs from 'fs';\nconst n: number = 6*7;\nfs.writeFileSync('out.txt','ts');\nconsole.log(n, process.argv[2], require('fs').readFileSync(0,'utf8'));",
		runtimeError: "process.exit(3);",
		stdout:       "42 arg1 in1\n\n"},
	"c": {ok: "#include <stdio.h>\n#include <math.h>\nint main(int c,char**v){char b[64]={0};fgets(b,64,stdin);FILE*f=fopen(\"out.txt\",\"w\");fputs(\"c\",f);fclose(f);printf(\"%d %s %s\\n\",(int)sqrt(42.0*42.0),v[1],b);return 0;}",
		compileError: "int main(){ return nope; }", runtimeError: "int main(){return 3;}",
		stdout: "42 arg1 in1\n\n", compileSays: "‘nope’ undeclared"},
	"cpp": {ok: "#include <iostream>\n#include <fstream>\n#include <cmath>\n#include <string>\nint main(int c,char**v){std::string s;std::getline(std::cin,s);std::ofstream(\"out.txt\")<<\"cpp\";std::cout<<(int)std::sqrt(1764.0)<<' '<<v[1]<<' '<<s<<std::endl;}",
		compileError: "int main(){ undeclared(); }", runtimeError: "int main(){return 3;}",
		stdout: "42 arg1 in1\n", compileSays: "‘undeclared’ was not declared in this scope"},
	"java": {ok: "import java.nio.file.*;\npublic class Answer {\n  public static void main(String[] a) throws Exception {\n    Files.writeString(Path.of(\"out.txt\"), \"java\");\n    String in = new String(System.in.readAllBytes());\n    System.out.println((6*7) + \" \" + a[0] + \" \" + in);\n  }\n}",
		compileError: "public class Broken { void f() { int x = \"s\"; } }", runtimeError: "public class Main { public static void main(String[] a) { System.exit(3); } }",
		stdout: "42 arg1 in1\n\n", compileSays: "incompatible types"},
	"php": {ok: "<?php\nfile_put_contents('out.txt','php');\necho 6*7, ' ', $argv[1], ' ', stream_get_contents(STDIN), \"\\n\";",
		runtimeError: "<?php exit(3);",
		stdout:       "42 arg1 in1\n\n"},
	"rs": {ok: "use std::io::Read;\nfn main(){let a: Vec<String> = std::env::args().collect();let mut s=String::new();std::io::stdin().read_to_string(&mut s).unwrap();std::fs::write(\"out.txt\",\"rs\").unwrap();println!(\"{} {} {}\",6*7,a[1],s);}",
		compileError: "fn main(){ let x: i32 = \"s\"; }", runtimeError: "fn main(){ std::process::exit(3); }",
		stdout: "42 arg1 in1\n\n", compileSays: "mismatched types"},
	"go": {ok: "package main\nimport (\"fmt\";\"io\";\"os\")\nfunc main(){b,_:=io.ReadAll(os.Stdin);os.WriteFile(\"out.txt\",[]byte(\"go\"),0644);fmt.Println(6*7, os.Args[1], string(b))}",
		compileError: "package main\nfunc main(){ undefinedThing() }", runtimeError: "package main\nimport \"os\"\nfunc main(){ os.Exit(3) }",
		stdout: "42 arg1 in1\n\n", compileSays: "undefined: undefinedThing"},
	"d": {ok: "import std.stdio;\nstatic import std.file;\nvoid main(string[] a){ std.file.write(\"out.txt\",\"d\"); auto s = readln(); writeln(6*7, \" \", a[1], \" \", s); }",
		compileError: "void main(){ int x = \"s\"; }", runtimeError: "import core.stdc.stdlib; void main(){ exit(3); }",
		stdout: "42 arg1 in1\n\n", compileSays: "cannot implicitly convert"},
	"f90": {ok: "program main\n  character(len=32) :: arg, line\n  call get_command_argument(1, arg)\n  read(*,'(A)') line\n  open(10, file='out.txt'); write(10,'(A)') 'f90'; close(10)\n  print '(I0,A,A,A,A)', 6*7, ' ', trim(arg), ' ', trim(line)\nend program main",
		compileError: "program main\n  x = = 1\nend program main", runtimeError: "program main\n  stop 3\nend program main",
		stdout: "42 arg1 in1\n", compileSays: "Error:", runtimeStderr: "STOP 3\n"},
	"r": {ok: "a <- commandArgs(trailingOnly=TRUE)\nwriteLines('r', 'out.txt')\ns <- readLines(file('stdin'), n=1)\ncat(6*7, a[1], s, '\\n')",
		runtimeError: "quit(status=3)",
		stdout:       "42 arg1 in1 \n"},
	"bash": {ok: "echo -n bash > out.txt; read s; echo $((6*7)) $1 $s",
		runtimeError: "exit 3",
		stdout:       "42 arg1 in1\n"},
}

// TestEveryLanguage runs each language's programs through POST /exec.
func TestEveryLanguage(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30; l.Pids = 256 })
	for _, l := range lang.All() {
		t.Run(l.ID, func(t *testing.T) {
			p, ok := programs[l.ID]
			if !ok {
				t.Fatalf("no test programs for %s", l.ID)
			}
			if ok, why := engine.Available(l); !ok {
				testenv.Skip(t, why)
			}
			r := e.okIn(t, map[string]any{"lang": l.ID, "code": p.ok, "args": []string{"arg1"}, "stdin": "in1\n"})
			if r.Stdout != p.stdout {
				t.Fatalf("stdout %q, want %q", r.Stdout, p.stdout)
			}
			if len(r.Files) != 1 || r.Files[0].Name != "out.txt" {
				t.Fatalf("files: %+v", r.Files)
			}
			if got := strings.TrimSpace(string(e.downloadIn(t, r.SessionID, r.Files[0].ID))); got != l.ID {
				t.Fatalf("out.txt holds %q", got)
			}
			if r.Version == "" || r.Language != l.ID {
				t.Errorf("language %q version %q", r.Language, r.Version)
			}
			if p.compileError != "" {
				r := decode[execResult](t, e.postIn(t, "/exec", map[string]any{"lang": l.ID, "code": p.compileError}), 200)
				if r.Status != "error" || r.ExitCode == 0 || !strings.Contains(r.Stderr, p.compileSays) || r.Stdout != "" || len(r.Files) != 0 {
					t.Errorf("compile error: status %s exit %d stdout %q files %v stderr %q (want it to contain %q)", r.Status, r.ExitCode, r.Stdout, r.Files, r.Stderr, p.compileSays)
				}
			}
			r = decode[execResult](t, e.postIn(t, "/exec", map[string]any{"lang": l.ID, "code": p.runtimeError}), 200)
			if r.Status != "error" || r.ExitCode != 3 || r.Stderr != p.runtimeStderr || r.Stdout != "" {
				t.Errorf("runtime error: status %s exit %d stdout %q stderr %q, want stderr %q", r.Status, r.ExitCode, r.Stdout, r.Stderr, p.runtimeStderr)
			}
		})
	}
}

// chartScript draws a line chart with a title and text tick labels, saves
// it as chart.png and prints the title's box in image pixels (origin top
// left) as "x0 y0 x1 y1".
const chartScript = `import matplotlib
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
ax.plot([1, 2, 3], [4, 1, 9])
ax.set_title('Quarterly revenue TITLECOLOR', color='TITLECOLOR', fontsize=14)
ax.set_xticks([1, 2, 3], ['Q1', 'Q2', 'Q3'])
fig.savefig('chart.png', metadata={'Software': None})
fig.canvas.draw()
b = ax.title.get_window_extent()
h = fig.get_size_inches()[1] * fig.dpi
print(int(b.x0), int(h - b.y1), int(b.x1) + 1, int(h - b.y0) + 1)
`

func chartCode(titleColor string) string {
	return strings.ReplaceAll(chartScript, "TITLECOLOR", titleColor)
}

// referenceChart runs code with the host's python3 and matplotlib, outside
// the server, and returns the PNG and what the code printed.
func referenceChart(t *testing.T, code string) ([]byte, string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("/usr/bin/python3", "-c", code) // the interpreter the sandbox runs
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "MPLCONFIGDIR=" + filepath.Join(dir, ".mpl"), "MPLBACKEND=Agg"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("reference rendering: %v\n%s", err, stderr.Bytes())
	}
	png, err := os.ReadFile(filepath.Join(dir, "chart.png"))
	if err != nil {
		t.Fatal(err)
	}
	return png, string(out)
}

// samePixels reports where two PNGs first differ ("" when they do not).
func samePixels(a, b []byte) string {
	ia, err := png.Decode(bytes.NewReader(a))
	if err != nil {
		return "first: " + err.Error()
	}
	ib, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return "second: " + err.Error()
	}
	if ia.Bounds() != ib.Bounds() {
		return fmt.Sprintf("sizes %v and %v", ia.Bounds(), ib.Bounds())
	}
	diff, first := 0, ""
	for y := ia.Bounds().Min.Y; y < ia.Bounds().Max.Y; y++ {
		for x := ia.Bounds().Min.X; x < ia.Bounds().Max.X; x++ {
			if color.RGBAModel.Convert(ia.At(x, y)) != color.RGBAModel.Convert(ib.At(x, y)) {
				if diff++; first == "" {
					first = fmt.Sprintf("(%d,%d)", x, y)
				}
			}
		}
	}
	if diff > 0 {
		return fmt.Sprintf("%d pixels differ, the first at %s", diff, first)
	}
	return ""
}

// inkIn counts the dark pixels of a PNG inside a box "x0 y0 x1 y1".
func inkIn(t *testing.T, data []byte, box string) int {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var r image.Rectangle
	if _, err := fmt.Sscanf(box, "%d %d %d %d", &r.Min.X, &r.Min.Y, &r.Max.X, &r.Max.Y); err != nil || r.Dx() < 20 || r.Dy() < 5 {
		t.Fatalf("title box %q: %v", box, err)
	}
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if c := color.GrayModel.Convert(img.At(x, y)).(color.Gray); c.Y < 128 {
				n++
			}
		}
	}
	return n
}

// TestMatplotlibPNG renders a chart through the API and checks its content:
// pixel for pixel the chart the same matplotlib draws outside the server,
// with the title's text really inked. A chart drawn with broken fonts
// (boxes, a fallback font, no text) or with warnings in stderr fails.
func TestMatplotlibPNG(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	want, box := referenceChart(t, chartCode("black"))
	// The content check itself can fail: the same chart with its title
	// drawn white (no visible text) has no ink where the title is.
	blank, _ := referenceChart(t, chartCode("white"))
	if n := inkIn(t, want, box); n < 100 {
		t.Fatalf("the reference title has only %d dark pixels in %s", n, box)
	}
	if n := inkIn(t, blank, box); n != 0 || samePixels(want, blank) == "" {
		t.Fatalf("the content check cannot tell a blank title: %d dark pixels", n)
	}

	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30 })
	r := e.ok(map[string]any{"lang": "py", "code": chartCode("black")})
	if r.Stdout != box || len(r.Files) != 1 || r.Files[0].Name != "chart.png" || r.Files[0].ContentType != "image/png" {
		t.Fatalf("stdout %q (reference %q), files %+v", r.Stdout, box, r.Files)
	}
	got := e.download(r.SessionID, r.Files[0].ID)
	if d := samePixels(want, got); d != "" {
		os.WriteFile(filepath.Join(os.TempDir(), "codeexec-chart-api.png"), got, 0o644)
		os.WriteFile(filepath.Join(os.TempDir(), "codeexec-chart-reference.png"), want, 0o644)
		t.Fatalf("the API's chart differs from the reference rendering: %s (both written to %s)", d, os.TempDir())
	}
	if int64(len(got)) != r.Files[0].Size {
		t.Fatalf("size %d, downloaded %d bytes", r.Files[0].Size, len(got))
	}
}

// TestPandasReadsUploadedCSV: an uploaded CSV read by pandas, a CSV written
// back, downloaded and compared.
func TestPandasReadsUploadedCSV(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30 })
	up := decode[uploadResult](t, e.upload("/upload", map[string]string{"kind": "user", "id": "u1"}, part{"file", "sales.csv", []byte("region,amount\nnorth,10\nsouth,32\nnorth,5\n")}), 200)
	r := e.ok(map[string]any{"lang": "py", "files": []any{map[string]any{"id": up.Files[0].FileID, "storage_session_id": up.StorageSessionID, "name": "sales.csv", "kind": "user"}},
		"code": "import pandas as pd\ndf = pd.read_csv('sales.csv')\ntotals = df.groupby('region')['amount'].sum()\nprint(totals.to_dict())\ntotals.to_csv('totals.csv')"})
	if r.Stdout != "{'north': 15, 'south': 32}\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	f := fileNamed(r.Files, "totals.csv")
	if f == nil || len(r.Files) != 2 || !fileNamed(r.Files, "sales.csv").Inherited {
		t.Fatalf("files %+v", r.Files)
	}
	if got := string(e.download(r.SessionID, f.ID)); got != "region,amount\nnorth,15\nsouth,32\n" {
		t.Fatalf("totals.csv holds %q", got)
	}
}

func TestUnavailableLanguageNamesThePackage(t *testing.T) {
	e := newEnv(t)
	l := &lang.Language{ID: "zz", Name: "Zed", Requires: []string{"/nonexistent/zed"}, Packages: []string{"zed-lang"}, Run: []string{"/nonexistent/zed"}, Source: "main.zz"}
	_, err := e.srv.Config.Handler.(*Server).Engine.Exec(t.Context(), engine.Request{Lang: l, Code: "x"})
	if err == nil || !strings.Contains(err.Error(), "zed-lang") {
		t.Fatalf("err %v", err)
	}
}

// BenchmarkHelloViaExec times each language's hello world through POST
// /exec on a real server (compile + run for compiled languages) and reports
// the median: go test -run '^$' -bench HelloViaExec ./internal/api/
func BenchmarkHelloViaExec(b *testing.B) {
	hello := map[string]string{
		"py": "print('hi')", "js": "console.log('hi')", "ts": "const s: string = 'hi'; console.log(s)",
		"c": "#include <stdio.h>\nint main(){puts(\"hi\");}", "cpp": "#include <iostream>\nint main(){std::cout<<\"hi\\n\";}",
		"java": "public class Main { public static void main(String[] a) { System.out.println(\"hi\"); } }",
		"php":  "<?php echo \"hi\\n\";", "rs": "fn main(){println!(\"hi\");}", "go": "package main\nimport \"fmt\"\nfunc main(){fmt.Println(\"hi\")}",
		"d": "import std.stdio; void main(){ writeln(\"hi\"); }", "f90": "program hi\n  print '(A)', 'hi'\nend program hi",
		"r": "cat('hi\\n')", "bash": "echo hi",
	}
	e := newEnv(b, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30; l.Pids = 256 })
	for _, l := range lang.All() {
		if ok, _ := engine.Available(l); !ok {
			continue
		}
		b.Run(l.ID, func(b *testing.B) {
			var times []time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				r := e.exec(map[string]any{"lang": l.ID, "code": hello[l.ID]})
				times = append(times, time.Since(t0))
				if r.Stdout != "hi\n" {
					b.Fatalf("%s: %+v", l.ID, r)
				}
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
		})
	}
}
