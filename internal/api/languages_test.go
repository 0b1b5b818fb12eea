package api

import (
	"bytes"
	"image/png"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
)

// langProgram is, per language: a program that computes 6*7, prints it
// with its first argument and its stdin, and writes out.txt to /mnt/data;
// a program that does not compile (compiled languages only); a program
// that fails at run time.
type langProgram struct {
	ok, compileError, runtimeError string
}

var programs = map[string]langProgram{
	"py": {ok: "import sys\nopen('out.txt','w').write('py')\nprint(6*7, sys.argv[1], sys.stdin.read())",
		runtimeError: "raise SystemExit(3)"},
	"js": {ok: "const fs=require('fs');fs.writeFileSync('out.txt','js');console.log(6*7, process.argv[2], fs.readFileSync(0,'utf8'))",
		runtimeError: "process.exit(3)"},
	"ts": {ok: "import * as fs from 'fs';\nconst n: number = 6*7;\nfs.writeFileSync('out.txt','ts');\nconsole.log(n, process.argv[2], require('fs').readFileSync(0,'utf8'));",
		runtimeError: "process.exit(3);"},
	"c": {ok: "#include <stdio.h>\n#include <math.h>\nint main(int c,char**v){char b[64]={0};fgets(b,64,stdin);FILE*f=fopen(\"out.txt\",\"w\");fputs(\"c\",f);fclose(f);printf(\"%d %s %s\\n\",(int)sqrt(42.0*42.0),v[1],b);return 0;}",
		compileError: "int main(){ return nope; }", runtimeError: "int main(){return 3;}"},
	"cpp": {ok: "#include <iostream>\n#include <fstream>\n#include <cmath>\n#include <string>\nint main(int c,char**v){std::string s;std::getline(std::cin,s);std::ofstream(\"out.txt\")<<\"cpp\";std::cout<<(int)std::sqrt(1764.0)<<' '<<v[1]<<' '<<s<<std::endl;}",
		compileError: "int main(){ undeclared(); }", runtimeError: "int main(){return 3;}"},
	"java": {ok: "import java.nio.file.*;\npublic class Answer {\n  public static void main(String[] a) throws Exception {\n    Files.writeString(Path.of(\"out.txt\"), \"java\");\n    String in = new String(System.in.readAllBytes());\n    System.out.println((6*7) + \" \" + a[0] + \" \" + in);\n  }\n}",
		compileError: "public class Broken { void f() { int x = \"s\"; } }", runtimeError: "public class Main { public static void main(String[] a) { System.exit(3); } }"},
	"php": {ok: "<?php\nfile_put_contents('out.txt','php');\necho 6*7, ' ', $argv[1], ' ', stream_get_contents(STDIN), \"\\n\";",
		runtimeError: "<?php exit(3);"},
	"rs": {ok: "use std::io::Read;\nfn main(){let a: Vec<String> = std::env::args().collect();let mut s=String::new();std::io::stdin().read_to_string(&mut s).unwrap();std::fs::write(\"out.txt\",\"rs\").unwrap();println!(\"{} {} {}\",6*7,a[1],s);}",
		compileError: "fn main(){ let x: i32 = \"s\"; }", runtimeError: "fn main(){ std::process::exit(3); }"},
	"go": {ok: "package main\nimport (\"fmt\";\"io\";\"os\")\nfunc main(){b,_:=io.ReadAll(os.Stdin);os.WriteFile(\"out.txt\",[]byte(\"go\"),0644);fmt.Println(6*7, os.Args[1], string(b))}",
		compileError: "package main\nfunc main(){ undefinedThing() }", runtimeError: "package main\nimport \"os\"\nfunc main(){ os.Exit(3) }"},
	"d": {ok: "import std.stdio;\nstatic import std.file;\nvoid main(string[] a){ std.file.write(\"out.txt\",\"d\"); auto s = readln(); writeln(6*7, \" \", a[1], \" \", s); }",
		compileError: "void main(){ int x = \"s\"; }", runtimeError: "import core.stdc.stdlib; void main(){ exit(3); }"},
	"f90": {ok: "program main\n  character(len=32) :: arg, line\n  call get_command_argument(1, arg)\n  read(*,'(A)') line\n  open(10, file='out.txt'); write(10,'(A)') 'f90'; close(10)\n  print '(I0,A,A,A,A)', 6*7, ' ', trim(arg), ' ', trim(line)\nend program main",
		compileError: "program main\n  x = = 1\nend program main", runtimeError: "program main\n  stop 3\nend program main"},
	"r": {ok: "a <- commandArgs(trailingOnly=TRUE)\nwriteLines('r', 'out.txt')\ns <- readLines(file('stdin'), n=1)\ncat(6*7, a[1], s, '\\n')",
		runtimeError: "quit(status=3)"},
	"bash": {ok: "echo -n bash > out.txt; read s; echo $((6*7)) $1 $s",
		runtimeError: "exit 3"},
}

// TestEveryLanguage runs each language's programs through POST /exec.
func TestEveryLanguage(t *testing.T) {
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30; l.Pids = 256 })
	for _, l := range lang.All() {
		t.Run(l.ID, func(t *testing.T) {
			p, ok := programs[l.ID]
			if !ok {
				t.Fatalf("no test programs for %s", l.ID)
			}
			if ok, why := engine.Available(l); !ok {
				if os.Getenv("CI") == "true" {
					t.Fatal(why)
				}
				t.Skip(why)
			}
			r := e.exec(map[string]any{"lang": l.ID, "code": p.ok, "args": []string{"arg1"}, "stdin": "in1\n"})
			out := strings.Join(strings.Fields(r.Stdout), " ")
			if r.Status != "ok" || r.ExitCode != 0 || out != "42 arg1 in1" {
				t.Fatalf("run: status %s exit %d stdout %q stderr %q", r.Status, r.ExitCode, r.Stdout, r.Stderr)
			}
			if len(r.Files) != 1 || r.Files[0].Name != "out.txt" {
				t.Fatalf("files: %+v (stderr %q)", r.Files, r.Stderr)
			}
			if got := strings.TrimSpace(string(e.download(r.SessionID, r.Files[0].ID))); got != l.ID {
				t.Fatalf("out.txt holds %q", got)
			}
			if r.Version == "" || r.Language != l.ID {
				t.Errorf("language %q version %q", r.Language, r.Version)
			}
			if p.compileError != "" {
				r := e.exec(map[string]any{"lang": l.ID, "code": p.compileError})
				if r.Status != "error" || r.ExitCode == 0 || r.Stderr == "" || r.Stdout != "" {
					t.Errorf("compile error: status %s exit %d stdout %q stderr %q", r.Status, r.ExitCode, r.Stdout, r.Stderr)
				}
			}
			r = e.exec(map[string]any{"lang": l.ID, "code": p.runtimeError})
			if r.Status != "error" || r.ExitCode != 3 {
				t.Errorf("runtime error: status %s exit %d stderr %q", r.Status, r.ExitCode, r.Stderr)
			}
		})
	}
}

func TestMatplotlibPNG(t *testing.T) {
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30 })
	r := e.exec(map[string]any{"lang": "py", "code": "import matplotlib.pyplot as plt\nplt.plot([1,2,3],[4,1,9])\nplt.title('t')\nplt.savefig('plot.png')\nprint('saved')"})
	// No stderr: warm templates once left children reading fonts from
	// descriptors they had closed (garbled text, "Bad file descriptor").
	if r.Stdout != "saved\n" || r.Stderr != "" || len(r.Files) != 1 || r.Files[0].Name != "plot.png" || !strings.HasPrefix(r.Files[0].ContentType, "image/png") {
		t.Fatalf("%+v", r)
	}
	img, err := png.Decode(bytes.NewReader(e.download(r.SessionID, r.Files[0].ID)))
	if err != nil || img.Bounds().Dx() < 100 {
		t.Fatalf("not a PNG: %v", err)
	}
}

func TestPandasReadsUploadedCSV(t *testing.T) {
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30 })
	up := decode[uploadResult](t, e.upload("/upload", map[string]string{"kind": "user", "id": "u1"}, part{"file", "sales.csv", []byte("region,amount\nnorth,10\nsouth,32\nnorth,5\n")}), 200)
	r := e.exec(map[string]any{"lang": "py", "files": []any{map[string]any{"id": up.Files[0].FileID, "storage_session_id": up.StorageSessionID, "name": "sales.csv", "kind": "user"}},
		"code": "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.groupby('region')['amount'].sum().to_dict())\ndf.describe().to_csv('summary.csv')"})
	if r.Stdout != "{'north': 15, 'south': 32}\n" || fileNamed(r.Files, "summary.csv") == nil {
		t.Fatalf("%+v", r)
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
