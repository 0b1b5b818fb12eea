package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentilesAndSeries(t *testing.T) {
	tr := NewTracker()
	// py: 1..100 ms; bash: one failure.
	for i := 1; i <= 100; i++ {
		id := tr.Begin("py", "key:a")
		tr.End(id, "ok", time.Duration(i)*time.Millisecond, int64(i)<<20)
	}
	id := tr.Begin("bash", "key:b")
	tr.End(id, "timeout", 2*time.Second, 0)
	s := tr.Snapshot(5)
	if len(s.Running) != 0 || s.Total != 101 {
		t.Fatalf("running %v total %d", s.Running, s.Total)
	}
	if len(s.Languages) != 2 || s.Languages[0].Language != "bash" || s.Languages[1].Language != "py" {
		t.Fatalf("languages %+v", s.Languages)
	}
	py := s.Languages[1]
	if py.Count != 100 || py.P50MS != 50 || py.P90MS != 90 || py.P99MS != 99 || py.MaxMS != 100 || py.Statuses["ok"] != 100 {
		t.Errorf("py stats %+v", py)
	}
	if len(py.Series) != 100 || py.Series[0] != 1 || py.Series[99] != 100 {
		t.Errorf("py series %v", py.Series)
	}
	b := s.Languages[0]
	if b.Count != 1 || b.P50MS != 2000 || b.P99MS != 2000 || b.Statuses["timeout"] != 1 {
		t.Errorf("bash stats %+v", b)
	}
	if len(s.Recent) != 5 || s.Recent[0].Language != "bash" || s.Recent[0].Caller != "key:b" || s.Recent[1].WallMS != 100 || s.Recent[1].MemoryPeak != 100<<20 {
		t.Errorf("recent %+v", s.Recent)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	tr := NewTracker()
	for i := range HistorySize + 300 {
		tr.End(tr.Begin("py", ""), "ok", time.Duration(i+1)*time.Millisecond, 0)
	}
	s := tr.Snapshot(HistorySize * 2)
	if s.Total != HistorySize+300 || len(s.Recent) != HistorySize || s.Languages[0].Count != HistorySize {
		t.Fatalf("total %d recent %d count %d", s.Total, len(s.Recent), s.Languages[0].Count)
	}
	// Newest first; the oldest 300 are gone.
	if s.Recent[0].WallMS != HistorySize+300 || s.Recent[HistorySize-1].WallMS != 301 {
		t.Errorf("recent spans %v..%v", s.Recent[0].WallMS, s.Recent[HistorySize-1].WallMS)
	}
	if n := len(s.Languages[0].Series); n != SeriesLen || s.Languages[0].Series[n-1] != HistorySize+300 {
		t.Errorf("series of %d ending %v", n, s.Languages[0].Series[n-1])
	}
}

func TestRunningUntilEnd(t *testing.T) {
	tr := NewTracker()
	a := tr.Begin("py", "key:a")
	b := tr.Begin("r", "sub:alice")
	s := tr.Snapshot(10)
	if len(s.Running) != 2 || s.Running[0].Language != "py" || s.Running[1].Caller != "sub:alice" || s.Running[0].ElapsedMS < 0 {
		t.Fatalf("running %+v", s.Running)
	}
	tr.End(a, "ok", 0, 0) // no sandbox figure: the time since Begin
	tr.End(a, "ok", 0, 0) // a second End is ignored
	s = tr.Snapshot(10)
	if len(s.Running) != 1 || s.Running[0].ID != b || s.Total != 1 || s.Recent[0].WallMS < 0 {
		t.Fatalf("after End: %+v", s)
	}
}

func TestTrackerConcurrent(t *testing.T) {
	tr := NewTracker()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				id := tr.Begin(fmt.Sprint("l", g), "c")
				if i%50 == 0 {
					tr.Snapshot(10)
				}
				tr.End(id, "ok", time.Millisecond, 1)
			}
		}()
	}
	wg.Wait()
	if s := tr.Snapshot(0); s.Total != 800 || len(s.Running) != 0 || len(s.Languages) != 8 {
		t.Fatalf("total %d running %d languages %d", s.Total, len(s.Running), len(s.Languages))
	}
}

// serve routes like the API does (without its authentication).
func serve(c *Console) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console", c.ServeRedirect)
	mux.HandleFunc("GET /console/{file...}", c.ServeAsset)
	mux.HandleFunc("GET /console/api/status", c.ServeStatus)
	mux.HandleFunc("GET /console/api/executions", c.ServeExecutions)
	return mux
}

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAssetsAreSelfContained(t *testing.T) {
	h := serve(New(Config{}))
	page := get(t, h, "/console/")
	if page.Code != 200 || page.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("page: %d %q", page.Code, page.Header().Get("Content-Type"))
	}
	for path, ct := range map[string]string{"/console/": "text/html", "/console/console.js": "text/javascript", "/console/console.css": "text/css"} {
		w := get(t, h, path)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ct) {
			t.Errorf("%s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
		if w.Header().Get("Content-Security-Policy") != CSP || w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", path, w.Header())
		}
		// Nothing from another origin, no inline script or handler, no
		// inline style (the CSP would block them: they must not exist).
		body := w.Body.String()
		for _, tag := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAllString(body, -1) {
			if !strings.Contains(tag, `src="`) {
				t.Errorf("%s: inline script %q", path, tag)
			}
		}
		for _, bad := range []*regexp.Regexp{
			regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`),
			regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]`),
			regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
			regexp.MustCompile(`(?i)style\s*=|<style`),
			regexp.MustCompile(`(?i)innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`),
		} {
			if m := bad.FindString(body); m != "" {
				t.Errorf("%s contains %q", path, m)
			}
		}
	}
	if w := get(t, h, "/console/../api/status"); w.Code == 200 && strings.Contains(w.Body.String(), "isolation") {
		t.Error("path traversal served JSON as an asset")
	}
	if w := get(t, h, "/console/other.js"); w.Code != 404 {
		t.Errorf("unknown asset: %d", w.Code)
	}
	if w := get(t, h, "/console"); w.Code != 301 || w.Header().Get("Location") != "console/" {
		t.Errorf("redirect: %d %q", w.Code, w.Header().Get("Location"))
	}
	etag := page.Header().Get("ETag")
	if w := get(t, h, "/console/", "If-None-Match", etag); etag == "" || w.Code != 304 {
		t.Errorf("revalidation with %q: %d", etag, w.Code)
	}
}

func TestStatusReportsSourcesAndCachesDoctor(t *testing.T) {
	calls := 0
	tr := NewTracker()
	c := New(Config{
		Tracker: tr,
		Isolation: func() any {
			return map[string]any{"backend": "linux", "cgroup": map[string]any{"version": 2}}
		},
		Storage:         "local /srv",
		Load:            func() map[string]any { return map[string]any{"running": 1} },
		Findings:        func(context.Context) []Finding { calls++; return []Finding{{Name: "cgroups", OK: true, Detail: "v2"}} },
		RuntimeSessions: func() int { return 3 },
	})
	h := serve(c)
	var st struct {
		Isolation struct {
			Backend string
			Cgroup  struct{ Version int }
		}
		Storage         string
		Load            map[string]int
		RuntimeSessions int `json:"runtime_sessions"`
		Doctor          []Finding
	}
	for range 3 {
		w := get(t, h, "/console/api/status")
		if w.Code != 200 || w.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("status: %d %v", w.Code, w.Header())
		}
		if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
			t.Fatal(err)
		}
	}
	if st.Isolation.Backend != "linux" || st.Isolation.Cgroup.Version != 2 || st.Storage != "local /srv" || st.Load["running"] != 1 ||
		st.RuntimeSessions != 3 || len(st.Doctor) != 1 || st.Doctor[0].Detail != "v2" {
		t.Errorf("status %+v", st)
	}
	if calls != 1 {
		t.Errorf("doctor ran %d times for 3 status requests", calls)
	}
	tr.Begin("py", "key:x")
	var ex Snapshot
	if err := json.Unmarshal(get(t, h, "/console/api/executions").Body.Bytes(), &ex); err != nil || len(ex.Running) != 1 || ex.Running[0].Caller != "key:x" {
		t.Errorf("executions %+v %v", ex, err)
	}
}

// BenchmarkBeginEnd is what the console adds to each execution.
func BenchmarkBeginEnd(b *testing.B) {
	tr := NewTracker()
	b.ReportAllocs()
	for b.Loop() {
		tr.End(tr.Begin("py", "key:0123456789abcdef"), "ok", 10*time.Millisecond, 1<<20)
	}
}

// BenchmarkBeginEndParallel is the same under contention (every CPU).
func BenchmarkBeginEndParallel(b *testing.B) {
	tr := NewTracker()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tr.End(tr.Begin("py", "key:0123456789abcdef"), "ok", 10*time.Millisecond, 1<<20)
		}
	})
}
