// Command skipcheck reads `go test -json` on stdin and prints what a plain
// `go test` would (each package's verdict, the output of failed tests and of
// failed builds). With CI=true it fails when a test skipped without being
// listed in test/skips.txt, so that no skip in CI goes unseen; it always
// lists the run's skips with their reasons.
//
//	set -o pipefail; go test -json ./... | go run ./internal/testenv/skipcheck
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/codeexec/codeexec/internal/testenv"
)

type event struct {
	Action     string
	Package    string
	ImportPath string
	Test       string
	Output     string
}

func main() {
	rules, err := testenv.Load(testenv.ListPath())
	if err != nil {
		fmt.Fprintln(os.Stderr, "skipcheck:", err)
		os.Exit(2)
	}
	out := map[string]*strings.Builder{} // package + test -> its output
	var skips []string
	failed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var ev event
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			fmt.Println(sc.Text()) // not an event: go test's own message
			continue
		}
		key := ev.Package + " " + ev.Test
		switch {
		case ev.Action == "build-output":
			fmt.Print(ev.Output)
		case ev.Action == "build-fail":
			failed = true
		case ev.Action == "output" && ev.Test == "":
			// Package-level lines: "ok", "FAIL", panics, TestMain's output.
			if !strings.HasPrefix(ev.Output, "=== ") && !strings.HasPrefix(ev.Output, "--- ") && ev.Output != "PASS\n" {
				fmt.Print(ev.Output)
			}
		case ev.Action == "output":
			b := out[key]
			if b == nil {
				b = &strings.Builder{}
				out[key] = b
			}
			if b.Len() < 4<<20 {
				b.WriteString(ev.Output)
			}
		case ev.Action == "fail" && ev.Test != "":
			failed = true
			if b := out[key]; b != nil {
				fmt.Print(b.String())
			}
			delete(out, key)
		case ev.Action == "fail":
			failed = true
		case ev.Action == "skip" && ev.Test != "":
			reason := skipReason(out[key])
			why, ok := testenv.Match(rules, ev.Test)
			switch {
			case ok:
				skips = append(skips, fmt.Sprintf("skipped (listed: %s): %s %s: %s", why, ev.Package, ev.Test, reason))
			case testenv.CI():
				failed = true
				skips = append(skips, fmt.Sprintf("UNLISTED SKIP under CI=true: %s %s: %s", ev.Package, ev.Test, reason))
			default:
				skips = append(skips, fmt.Sprintf("skipped: %s %s: %s", ev.Package, ev.Test, reason))
			}
			delete(out, key)
		case ev.Action == "pass":
			delete(out, key)
		}
	}
	sort.Strings(skips)
	for _, s := range skips {
		fmt.Println(s)
	}
	if failed {
		os.Exit(1)
	}
}

// skipReason is what a skipped test printed (t.Skip's message), without
// the framework's "=== RUN" and "--- SKIP" lines.
func skipReason(b *strings.Builder) string {
	if b == nil {
		return "(no reason printed)"
	}
	var kept []string
	for _, l := range strings.Split(b.String(), "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "=== ") && !strings.HasPrefix(t, "--- ") {
			kept = append(kept, t)
		}
	}
	return strings.Join(kept, " ")
}
