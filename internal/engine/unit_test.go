package engine

// Unit tests of the engine over the fake sandbox and the in-memory store:
// staging, collection, lineage, caps and the mapping of limits, without root
// or a real sandbox (`make unit`). What the kernel enforces is tested on the
// real backends (internal/sandbox, internal/api).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"github.com/codeexec/codeexec/internal/storage"
)

var unitLimits = Limits{
	WallTime: 5 * time.Second, CPUTime: 3 * time.Second, MemoryBytes: 64 << 20, Pids: 32,
	OutputBytes: 1 << 10, DiskBytes: 8 << 20, CollectFileBytes: 1 << 10, MaxOutputFiles: 4, MaxInputFiles: 3,
}

// unitLang is a language that needs nothing installed: the fake never runs
// its argv, and the engine treats it like any interpreted language.
var unitLang = &lang.Language{ID: "unit", Name: "Unit", Source: "main.u", Run: []string{"/bin/unit", "{src}"},
	Env: []string{"UNIT=1"}}

// unitEngine returns an engine over a fake running p and an in-memory
// store, and checks at the end that every workdir was released.
func unitEngine(t *testing.T, lim Limits, p sandboxtest.Program) (*Engine, *sandboxtest.Fake, storage.Store) {
	t.Helper()
	box := sandboxtest.New(p)
	store := storage.OpenMemory()
	t.Cleanup(func() {
		if err := box.Close(); err != nil {
			t.Error(err)
		}
		store.Close()
	})
	return New(store, box, lim, slog.New(slog.DiscardHandler)), box, store
}

func put(t *testing.T, s storage.Store, session, name, owner, data string) FileRef {
	t.Helper()
	obj, err := s.Put(context.Background(), storage.Key{Session: session, ID: storage.NewID()},
		strings.NewReader(data), storage.Meta{Name: name, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	return FileRef{Session: session, ID: obj.ID, Name: name}
}

func stored(t *testing.T, s storage.Store, session, id string) string {
	t.Helper()
	r, _, err := s.Open(context.Background(), storage.Key{Session: session, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

func byName(files []OutFile) map[string]OutFile {
	m := map[string]OutFile{}
	for _, f := range files {
		m[f.Name] = f
	}
	return m
}

// The inputs are in /mnt/data with their bytes when the code runs; the
// code's changes come back as new files with their lineage, unchanged
// inputs are echoed, deleted ones are named, and dot directories, links
// and fifos are never collected.
func TestUnitStageAndCollect(t *testing.T) {
	eng, box, store := unitEngine(t, unitLimits, func(ctx context.Context, r *sandboxtest.Run) (sandbox.Result, error) {
		for _, n := range []string{"keep.txt", "edit.txt", "dir/gone.csv"} {
			b, err := os.ReadFile(r.Path(n))
			if err != nil {
				return sandbox.Result{}, err
			}
			fmt.Fprintf(r.Stdout, "%s=%s;", n, b)
		}
		os.Remove(r.Path("dir/gone.csv"))
		r.WriteFile("edit.txt", []byte("edited"))
		r.WriteFile("out/new.txt", []byte("new"))
		r.WriteFile(".cache/hidden", []byte("x"))
		os.Symlink("/etc/passwd", r.Path("link"))
		return sandbox.Result{}, nil
	})
	in := []FileRef{
		put(t, store, "sessA", "keep.txt", "alice", "k"),
		put(t, store, "sessA", "edit.txt", "alice", "e"),
		put(t, store, "sessA", "dir/gone.csv", "alice", "g"),
	}
	res, err := eng.Exec(context.Background(), Request{Lang: unitLang, Code: "code", Files: in, Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != sandbox.StatusOK || res.Stdout != "keep.txt=k;edit.txt=e;dir/gone.csv=g;" || res.Stderr != "" {
		t.Fatalf("status %q stdout %q stderr %q", res.Status, res.Stdout, res.Stderr)
	}
	files := byName(res.Files)
	if len(files) != 3 {
		t.Fatalf("files %+v, want keep.txt, edit.txt, out/new.txt", res.Files)
	}
	if f := files["keep.txt"]; !f.Inherited || f.ID != in[0].ID || f.Session != "sessA" {
		t.Errorf("unchanged input not echoed as itself: %+v", f)
	}
	edit := files["edit.txt"]
	if edit.Inherited || edit.ID == in[1].ID || edit.ModifiedFrom == nil || *edit.ModifiedFrom != (storage.Key{Session: "sessA", ID: in[1].ID}) {
		t.Errorf("changed input: %+v", edit)
	}
	if got := stored(t, store, res.Session, edit.ID); got != "edited" {
		t.Errorf("changed input stored as %q", got)
	}
	nf := files["out/new.txt"]
	if got := stored(t, store, res.Session, nf.ID); got != "new" || nf.Size != 3 {
		t.Errorf("new file stored as %q (size %d)", got, nf.Size)
	}
	if !slices.Equal(res.DeletedFiles, []string{"dir/gone.csv"}) {
		t.Errorf("deleted %v", res.DeletedFiles)
	}
	// New files belong to the requester.
	if obj, _ := store.Stat(context.Background(), storage.Key{Session: res.Session, ID: nf.ID}); obj.Owner != "alice" {
		t.Errorf("output owner %q", obj.Owner)
	}
	if n := len(box.Runs()); n != 1 {
		t.Errorf("%d runs", n)
	}
}

// A bad reference is refused before anything runs, and with the error
// class the API maps to its status code.
func TestUnitRefusesBadReferences(t *testing.T) {
	eng, box, store := unitEngine(t, unitLimits, nil)
	bobs := put(t, store, "sessB", "b.txt", "bob", "secret")
	alices := put(t, store, "sessA", "a.txt", "alice", "mine")
	cases := []struct {
		name  string
		files []FileRef
		want  error
	}{
		{"another owner's file", []FileRef{bobs}, ErrUnauthorized},
		{"unknown id", []FileRef{{Session: "sessA", ID: "nope", Name: "x"}}, ErrUnauthorized},
		{"id with a slash", []FileRef{{Session: "sessA", ID: "../x", Name: "x"}}, ErrInvalid},
		{"name with ..", []FileRef{{Session: alices.Session, ID: alices.ID, Name: "../a.txt"}}, ErrInvalid},
		{"too many", []FileRef{alices, alices, alices, alices}, ErrInvalid},
		{"file and directory", []FileRef{{alices.Session, alices.ID, "d"}, {alices.Session, alices.ID, "d/x"}}, ErrInvalid},
	}
	for _, c := range cases {
		_, err := eng.Exec(context.Background(), Request{Lang: unitLang, Code: "x", Files: c.files, Owner: "alice"})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if n := len(box.Runs()); n != 0 {
		t.Errorf("the sandbox ran %d times for refused requests", n)
	}
	// A shared-key caller (no owner) reads an owned file: the API decides
	// who may present such a reference, not the engine.
	if _, err := eng.Exec(context.Background(), Request{Lang: unitLang, Code: "x", Files: []FileRef{bobs}}); err != nil {
		t.Errorf("ownerless request: %v", err)
	}
}

// The engine is the one place that maps its limits to the sandbox's: every
// field lands, the request's timeout can only shorten the wall time, and a
// compile step's allowance is added on top.
func TestUnitLimitsMapping(t *testing.T) {
	lim := unitLimits
	lim.Network = true
	eng, box, _ := unitEngine(t, lim, nil)
	compiled := &lang.Language{ID: "unitc", Source: "main.uc", Compile: []string{"/bin/ucc", "{src}"},
		Run: []string{"/bin/urun", "{src}"}, CompileTimeout: 7 * time.Second}
	reqs := []Request{
		{Lang: unitLang, Code: "a", Args: []string{"x", "y"}, Stdin: "in"},
		{Lang: unitLang, Code: "b", Timeout: time.Second},
		{Lang: unitLang, Code: "c", Timeout: time.Hour},
		{Lang: compiled, Code: "d"},
	}
	for _, r := range reqs {
		if _, err := eng.Exec(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	runs := box.Runs()
	want := sandbox.Limits{WallTime: lim.WallTime, CPUTime: lim.CPUTime, MemoryBytes: lim.MemoryBytes, Pids: lim.Pids,
		OutputBytes: lim.OutputBytes, DiskBytes: lim.DiskBytes, FileBytes: lim.DiskBytes, Network: true}
	if runs[0].Limits != want {
		t.Errorf("limits\n got %+v\nwant %+v", runs[0].Limits, want)
	}
	if got := runs[0].Steps; len(got) != 1 || !slices.Equal(got[0].Argv, []string{"/bin/unit", lang.CodeDir + "/main.u", "x", "y"}) || string(got[0].Stdin) != "in" {
		t.Errorf("steps %+v", got)
	}
	if f := runs[0].Files; len(f) != 1 || f[0].Path != lang.CodeDir+"/main.u" || string(f[0].Data) != "a" {
		t.Errorf("files %+v", f)
	}
	if !reflect.DeepEqual(runs[0].Env, StepEnv(unitLang)) || !slices.Contains(runs[0].Env, "UNIT=1") {
		t.Errorf("env %v", runs[0].Env)
	}
	if runs[1].Limits.WallTime != time.Second || runs[2].Limits.WallTime != lim.WallTime {
		t.Errorf("wall times %v, %v: a request may shorten, never lengthen", runs[1].Limits.WallTime, runs[2].Limits.WallTime)
	}
	if s := runs[3].Steps; len(s) != 2 || s[0].Name != "compile" || s[0].Timeout != 7*time.Second || runs[3].Limits.WallTime != lim.WallTime+7*time.Second {
		t.Errorf("compiled run: steps %+v wall %v", s, runs[3].Limits.WallTime)
	}
}

// A stateful kernel gets the run's kernel limits but the session's time:
// its wall and CPU time are the session's lifetime, its own stdout small.
func TestUnitLiveLimits(t *testing.T) {
	lim := unitLimits
	got := lim.Live(3 * time.Hour)
	want := sandbox.Limits{WallTime: 3 * time.Hour, CPUTime: 3 * time.Hour, MemoryBytes: lim.MemoryBytes, Pids: lim.Pids,
		OutputBytes: liveKernelOutput, DiskBytes: lim.DiskBytes, FileBytes: lim.DiskBytes}
	if got != want {
		t.Errorf("live limits\n got %+v\nwant %+v", got, want)
	}
	if got := lim.Sandbox(0); got.WallTime != lim.WallTime || got.FileBytes != lim.DiskBytes || got.FileBytes == lim.CollectFileBytes {
		t.Errorf("Sandbox(0) = %+v: the server's wall time, RLIMIT_FSIZE at the disk size", got)
	}
}

// Output files beyond the count, the per-file size or the run's byte
// budget are left out and reported, never stored.
func TestUnitOutputCaps(t *testing.T) {
	lim := unitLimits
	lim.CollectTotalBytes = 1500
	eng, _, store := unitEngine(t, lim, func(ctx context.Context, r *sandboxtest.Run) (sandbox.Result, error) {
		r.WriteFile("big.bin", bytes.Repeat([]byte("b"), 1025)) // over CollectFileBytes
		for i := range 6 {
			r.WriteFile(fmt.Sprintf("f%d.txt", i), bytes.Repeat([]byte("f"), 700))
		}
		return sandbox.Result{}, nil
	})
	res, err := eng.Exec(context.Background(), Request{Lang: unitLang, Code: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 2 {
		t.Fatalf("%d files stored, want 2 (1500 bytes of 700-byte files)", len(res.Files))
	}
	tr := res.Truncation
	if tr == nil || tr.Count != 5 || tr.Reasons["size"] != 1 || tr.Reasons["total_size"] != 4 {
		t.Fatalf("truncation %+v", tr)
	}
	objs, _ := store.List(context.Background(), res.Session)
	if len(objs) != 2 {
		t.Errorf("%d objects stored, want 2", len(objs))
	}

	lim.CollectTotalBytes = 0
	eng, _, _ = unitEngine(t, lim, func(ctx context.Context, r *sandboxtest.Run) (sandbox.Result, error) {
		for i := range 6 {
			r.WriteFile(fmt.Sprintf("f%d.txt", i), []byte("f"))
		}
		return sandbox.Result{}, nil
	})
	res, err = eng.Exec(context.Background(), Request{Lang: unitLang, Code: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 4 || res.Truncation == nil || res.Truncation.Reasons["max_files"] != 2 {
		t.Fatalf("files %d truncation %+v, want 4 and max_files 2", len(res.Files), res.Truncation)
	}
}

// A run the sandbox stopped says why in stderr, for a model that reads
// only stdout and stderr.
func TestUnitStatusNotes(t *testing.T) {
	eng, _, _ := unitEngine(t, unitLimits, func(ctx context.Context, r *sandboxtest.Run) (sandbox.Result, error) {
		switch r.Source(lang.CodeDir + "/main.u") {
		case "sleep":
			<-ctx.Done()
		case "flood":
			r.Stdout.Write(bytes.Repeat([]byte("x"), 4<<10))
		case "fail":
			fmt.Fprint(r.Stderr, "boom")
			return sandbox.Result{ExitCode: 3}, nil
		}
		return sandbox.Result{}, nil
	})
	cases := []struct {
		code   string
		status sandbox.Status
		exit   int
		stderr string
	}{
		{"sleep", sandbox.StatusTimeout, 137, "\n[codeexec] execution stopped: time limit exceeded\n"},
		{"flood", sandbox.StatusOutputLimit, 137, "\n[codeexec] output truncated: output limit exceeded\n"},
		{"fail", sandbox.StatusError, 3, "boom"},
	}
	for _, c := range cases {
		res, err := eng.Exec(context.Background(), Request{Lang: unitLang, Code: c.code, Timeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != c.status || res.ExitCode != c.exit || res.Stderr != c.stderr {
			t.Errorf("%s: status %q exit %d stderr %q", c.code, res.Status, res.ExitCode, res.Stderr)
		}
		if c.code == "flood" && len(res.Stdout) != int(unitLimits.OutputBytes) {
			t.Errorf("flood: %d bytes of stdout kept, want %d", len(res.Stdout), unitLimits.OutputBytes)
		}
	}
}

// The compile cache: the first request compiles in a run of its own and
// stores the program; the same code again runs the stored program without
// compiling.
func TestUnitCompileCache(t *testing.T) {
	compiled := &lang.Language{ID: "unitcc", Source: "main.uc", Compile: []string{"/bin/ucc", "{src}"},
		Run: []string{"{bin}"}, Version: []string{"/bin/echo", "ucc 1.0"}}
	eng, box, _ := unitEngine(t, unitLimits, func(ctx context.Context, r *sandboxtest.Run) (sandbox.Result, error) {
		last := r.Spec.Steps[len(r.Spec.Steps)-1]
		if last.Argv[0] == "/bin/cp" { // the compile-only run leaves the program for the engine
			return sandbox.Result{}, os.WriteFile(filepath.Join(r.Dir, ".codeexec-program"), []byte("PROGRAM:"+r.Source(lang.CodeDir+"/main.uc")), 0o755)
		}
		fmt.Fprint(r.Stdout, r.Source(lang.BuildDir+"/main"))
		return sandbox.Result{}, nil
	})
	cache, err := OpenCompileCache(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCompileCache(cache)
	for i := range 2 {
		res, err := eng.Exec(context.Background(), Request{Lang: compiled, Code: "src"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Stdout != "PROGRAM:src" || len(res.Files) != 0 {
			t.Fatalf("run %d: stdout %q files %+v", i, res.Stdout, res.Files)
		}
	}
	runs := box.Runs()
	if len(runs) != 3 || runs[0].Steps[0].Name != "compile" || len(runs[1].Steps) != 1 || len(runs[2].Steps) != 1 {
		t.Fatalf("runs: %d (want compile, run, run)", len(runs))
	}
	if runs[1].Limits.WallTime != unitLimits.WallTime {
		t.Errorf("the cached run keeps the compile allowance: wall %v", runs[1].Limits.WallTime)
	}
}
