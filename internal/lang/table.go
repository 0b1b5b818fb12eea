package lang

import "time"

// Toolchains come from Debian 12's packages (scripts/packages.txt), Go from
// /usr/local/go and esbuild from npm, all installed by scripts/install-deps.sh
// under /usr, the only part of the host the sandbox sees. Paths are absolute so
// that nothing depends on PATH.
//
// Hello world (reading argv and stdin), compile + run, median in ms on the
// 2-vCPU dev VM under load from other work (go test -bench Hello ./internal/lang):
// bash 2, py 20, php 23, js 38, ts 61, c 72, f90 118, go 186, r 253, d 327,
// rs 352, cpp 484, java 868.

// Fixed locations prepared by scripts/install-deps.sh.
const (
	libDir  = "/usr/local/lib/codeexec"
	esbuild = libDir + "/bin/esbuild"
	goDir   = libDir + "/go" // compile, link (links into GOROOT) and importcfg
	javaBin = "/usr/lib/jvm/default-java/bin"
)

// inBuild runs a compiler after creating {build}: gcc, rustc and Go's tools do
// not create their output directory (javac, ldc2 and esbuild do). One dash
// start, ~1 ms.
func inBuild(argv ...string) []string {
	return append([]string{"/bin/sh", "-c", `mkdir -p {build} && exec "$0" "$@"`}, argv...)
}

// JVM flags for short programs: C1 only, the serial collector and no perf
// data file start javac and java ~25 % faster; class data sharing stays on.
var jvmFlags = []string{"-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xshare:auto"}

func javacFlags() []string {
	var out []string
	for _, f := range jvmFlags {
		out = append(out, "-J"+f)
	}
	return out
}

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// tsBanner gives the ES module esbuild emits CommonJS's require, module,
// exports, __filename and __dirname (wired with --define, which only replaces
// references the code does not declare itself), so that TypeScript may use
// both import and require, and top-level await.
const tsBanner = `import{createRequire as __ceCR}from"module";import{fileURLToPath as __ceFU}from"url";` +
	`const __ceR=__ceCR(import.meta.url),__ceM={exports:{}},__ceF=__ceFU(import.meta.url),` +
	`__ceD=__ceF.slice(0,__ceF.lastIndexOf("/"));__ceR.main=__ceM;`

// table lists every language in the order LibreChat's tool names them.
var table = []*Language{
	{
		// Debian's interpreter, not whatever python3 comes first on a PATH,
		// with the python3-* packages of the data-science stack.
		ID: "py", Aliases: []string{"python", "python3"}, Name: "Python",
		Source:   "main.py",
		Run:      []string{"/usr/bin/python3", "-u", "{src}"},
		Version:  []string{"/usr/bin/python3", "--version"},
		Requires: []string{"/usr/bin/python3"},
		Packages: []string{"python3"},
		Env:      []string{"MPLBACKEND=Agg", "PYTHONPATH=/mnt/data", "PYTHONDONTWRITEBYTECODE=1"},
		Live:     true,
		Ident:    pyIdent,
		Warm:     "python",
		Etc:      []string{"python3", "python3.*", "matplotlibrc"},
	},
	{
		// CommonJS, as `node main.js` runs it (Debian's Node 18 or NodeSource's).
		ID: "js", Aliases: []string{"javascript", "node", "nodejs"}, Name: "JavaScript",
		Source:   "main.js",
		Run:      []string{"/usr/bin/node", "{src}"},
		Version:  []string{"/bin/sh", "-c", `echo "Node.js $(/usr/bin/node --version)"`},
		Requires: []string{"/usr/bin/node"},
		Packages: []string{"nodejs"},
	},
	{
		// Transpile-only with esbuild (~5 ms; tsc 7 --noCheck ~100 ms, with its
		// type check ~500 ms, tsc 5 ~2 s): types are not checked, as with
		// ts-node --transpile-only or bun. Output is an ES module with
		// CommonJS's globals (tsBanner), run by node with source maps so that
		// stack traces point into main.ts.
		ID: "ts", Aliases: []string{"typescript"}, Name: "TypeScript",
		Source: "main.ts",
		Compile: []string{esbuild, "{src}", "--outfile={bin}.mjs", "--format=esm", "--platform=node",
			"--target=node18", "--sourcemap=inline", "--log-level=error", "--banner:js=" + tsBanner,
			"--define:require=__ceR", "--define:module=__ceM", "--define:exports=__ceM.exports",
			"--define:__filename=__ceF", "--define:__dirname=__ceD"},
		Run:      []string{"/usr/bin/node", "--enable-source-maps", "{bin}.mjs"},
		Version:  []string{"/bin/sh", "-c", `echo "TypeScript (esbuild $(` + esbuild + ` --version)), Node.js $(/usr/bin/node --version)"`},
		Requires: []string{"/usr/bin/node", esbuild},
		Packages: []string{"nodejs", "esbuild (npm; scripts/install-deps.sh)"},
	},
	{
		ID: "c", Name: "C",
		Source:   "main.c",
		Compile:  inBuild("/usr/bin/gcc", "-O2", "-pipe", "-o", "{bin}", "{src}", "-lm"),
		Run:      []string{"{bin}"},
		Version:  []string{"/usr/bin/gcc", "--version"},
		Requires: []string{"/usr/bin/gcc"},
		Packages: []string{"gcc", "libc6-dev"},
	},
	{
		// g++ 12 defaults to gnu++17.
		ID: "cpp", Aliases: []string{"c++", "cxx"}, Name: "C++",
		Source:   "main.cpp",
		Compile:  inBuild("/usr/bin/g++", "-O2", "-pipe", "-o", "{bin}", "{src}", "-lm"),
		Run:      []string{"{bin}"},
		Version:  []string{"/usr/bin/g++", "--version"},
		Requires: []string{"/usr/bin/g++"},
		Packages: []string{"g++"},
	},
	{
		// OpenJDK 17 through default-java (not /etc/alternatives, which may
		// name another JDK). The file is named after the public class and
		// the main class may sit in a package: see javaNames.
		ID: "java", Name: "Java",
		Source:     "Main.java",
		SourceName: func(code string) string { return javaNames(code).file },
		Class:      func(code string) string { return javaNames(code).class },
		Compile: join([]string{javaBin + "/javac"}, javacFlags(),
			[]string{"-proc:none", "-encoding", "UTF-8", "-d", "{build}", "{src}"}),
		Run:            join([]string{javaBin + "/java"}, jvmFlags, []string{"-cp", "{build}", "{class}"}),
		Version:        []string{javaBin + "/java", "-version"},
		Requires:       []string{javaBin + "/javac", javaBin + "/java"},
		Packages:       []string{"default-jdk-headless"},
		Etc:            []string{"java-*"},
		CompileTimeout: 45 * time.Second,
	},
	{
		// PHP 8.2 CLI; fatal errors go to stderr ("PHP Fatal error: ...", exit 255).
		ID: "php", Name: "PHP",
		Source:   "main.php",
		Run:      []string{"/usr/bin/php", "{src}"},
		Version:  []string{"/usr/bin/php", "--version"},
		Requires: []string{"/usr/bin/php"},
		Packages: []string{"php-cli"},
		Etc:      []string{"php"},
	},
	{
		// Debian's rustc 1.63, edition 2021, unoptimised (-O costs ~+40 % for
		// hello world and far more for real programs), linked against the
		// shared libstd in /usr/lib/<triplet> (half the compile time of a
		// static link: 200 against 410 ms).
		ID: "rs", Aliases: []string{"rust"}, Name: "Rust",
		Source:   "main.rs",
		Compile:  inBuild("/usr/bin/rustc", "--edition=2021", "-C", "prefer-dynamic", "-C", "linker=/usr/bin/gcc", "-o", "{bin}", "{src}"),
		Run:      []string{"{bin}"},
		Version:  []string{"/usr/bin/rustc", "--version"},
		Requires: []string{"/usr/bin/rustc"},
		Packages: []string{"rustc"},
	},
	{
		// The Go compiler and linker run directly against the standard
		// library archives that install-deps.sh built into a read-only
		// build cache (listed in goDir/importcfg): no go command, no cache
		// writes, ~40 % faster than `go build` with the same cache; -s -w
		// skip DWARF (panics still show file:line).
		ID: "go", Aliases: []string{"golang"}, Name: "Go",
		Source: "main.go",
		// The compiler reports errors on stdout; they belong in stderr.
		Compile: []string{"/bin/sh", "-c", "exec >&2 && mkdir -p {build} && " +
			goDir + "/compile -p main -complete -nolocalimports -pack -importcfg " + goDir + "/importcfg -o {build}/main.a {src} && " +
			"exec " + goDir + "/link -s -w -importcfg " + goDir + "/importcfg -o {bin} {build}/main.a"},
		Run:      []string{"{bin}"},
		Version:  []string{"/usr/local/go/bin/go", "version"},
		Requires: []string{"/usr/local/go/bin/go", goDir + "/compile", goDir + "/link", goDir + "/importcfg"},
		Packages: []string{"golang (scripts/install-deps.sh installs Go into /usr/local/go)"},
		Env:      []string{"GOROOT=/usr/local/go", "CGO_ENABLED=0"},
	},
	{
		// LDC (LLVM) compiles hello world in about half the time of gdc.
		ID: "d", Aliases: []string{"dlang"}, Name: "D",
		Source:   "main.d",
		Compile:  []string{"/usr/bin/ldc2", "-od={build}", "-of={bin}", "{src}"},
		Run:      []string{"{bin}"},
		Version:  []string{"/usr/bin/ldc2", "--version"},
		Requires: []string{"/usr/bin/ldc2"},
		Packages: []string{"ldc"},
		Etc:      []string{"ldc2.conf"},
	},
	{
		ID: "f90", Aliases: []string{"fortran", "f95"}, Name: "Fortran",
		Source:   "main.f90",
		Compile:  inBuild("/usr/bin/gfortran", "-O2", "-pipe", "-o", "{bin}", "{src}"),
		Run:      []string{"{bin}"},
		Version:  []string{"/usr/bin/gfortran", "--version"},
		Requires: []string{"/usr/bin/gfortran"},
		Packages: []string{"gfortran"},
	},
	{
		// R 4.2 with ggplot2, dplyr and data.table. Without X11, png() and
		// ggsave() use Cairo by themselves (bitmapType "cairo"); plots not
		// sent to a file land in Rplots.pdf in the working directory. args
		// are commandArgs(trailingOnly = TRUE).
		ID: "r", Aliases: []string{"rscript"}, Name: "R",
		Source:   "main.R",
		Run:      []string{"/usr/bin/Rscript", "{src}"},
		Version:  []string{"/usr/bin/Rscript", "--version"},
		Requires: []string{"/usr/bin/Rscript"},
		Packages: []string{"r-base-core"},
		Etc:      []string{"R"},
	},
	{
		// LibreChat's own helpers run `python3 - <<'PY'` here: PATH reaches
		// Debian's python3, with the same plotting backend as py.
		ID: "bash", Aliases: []string{"sh", "shell"}, Name: "Bash",
		Source:   "main.sh",
		Run:      []string{"/bin/bash", "{src}"},
		Version:  []string{"/bin/bash", "-c", "echo ${BASH_VERSION}"},
		Requires: []string{"/bin/bash"},
		Packages: []string{"bash"},
		Env:      []string{"MPLBACKEND=Agg"},
		Live:     true,
		Ident:    bashIdent,
		// Python as py has it, and what scripts call most (perl, convert).
		Etc: []string{"python3", "python3.*", "matplotlibrc", "perl", "ImageMagick-*"},
	},
}
