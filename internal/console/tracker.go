package console

import (
	"math"
	"sort"
	"sync"
	"time"
)

// HistorySize is how many finished executions the tracker keeps.
const HistorySize = 1024

// Tracker records executions for the console: those running now, and a
// bounded ring of recent ones. It sits on the execution path, so Begin and
// End only take a mutex and write fixed-size values; every aggregation is
// done when the console asks.
type Tracker struct {
	mu      sync.Mutex
	next    uint64
	running map[uint64]liveExec
	ring    [HistorySize]Record
	total   int // executions recorded since start; ring[total%HistorySize] is next
}

type liveExec struct {
	lang, caller string
	start        time.Time
}

// Record is one finished execution.
type Record struct {
	At         time.Time `json:"at"` // when it finished
	Language   string    `json:"language"`
	Caller     string    `json:"caller"`
	Status     string    `json:"status"`
	WallMS     float64   `json:"wall_ms"`
	MemoryPeak int64     `json:"memory_peak_bytes"`
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{running: make(map[uint64]liveExec, 16)}
}

// Begin records that an execution of lang by caller started; End must be
// called with the returned id once it is over.
func (t *Tracker) Begin(lang, caller string) uint64 {
	now := time.Now()
	t.mu.Lock()
	t.next++
	id := t.next
	t.running[id] = liveExec{lang: lang, caller: caller, start: now}
	t.mu.Unlock()
	return id
}

// End records the outcome of execution id. wall is the sandbox's own
// measure when the run produced a result; zero means "since Begin" (a run
// that failed before or inside the sandbox).
func (t *Tracker) End(id uint64, status string, wall time.Duration, memPeak int64) {
	now := time.Now()
	t.mu.Lock()
	e, ok := t.running[id]
	if ok {
		delete(t.running, id)
		if wall <= 0 {
			wall = now.Sub(e.start)
		}
		t.ring[t.total%HistorySize] = Record{At: now, Language: e.lang, Caller: e.caller, Status: status,
			WallMS: float64(wall.Microseconds()) / 1000, MemoryPeak: memPeak}
		t.total++
	}
	t.mu.Unlock()
}

// Running is an execution in progress.
type Running struct {
	ID        uint64    `json:"id"`
	Language  string    `json:"language"`
	Caller    string    `json:"caller"`
	Started   time.Time `json:"started"`
	ElapsedMS int64     `json:"elapsed_ms"`
}

// LangStats summarises the recent executions of one language.
type LangStats struct {
	Language string         `json:"language"`
	Count    int            `json:"count"`
	P50MS    float64        `json:"p50_ms"`
	P90MS    float64        `json:"p90_ms"`
	P99MS    float64        `json:"p99_ms"`
	MaxMS    float64        `json:"max_ms"`
	Statuses map[string]int `json:"statuses"`
	// Series is the wall time of each recent execution, oldest first
	// (at most SeriesLen), for the page's chart.
	Series []float64 `json:"series"`
}

// SeriesLen bounds each language's chart series.
const SeriesLen = 120

// Snapshot is what the console's live and history views show.
type Snapshot struct {
	Now       time.Time   `json:"now"`
	Running   []Running   `json:"running"`
	Recent    []Record    `json:"recent"` // newest first
	Languages []LangStats `json:"languages"`
	Total     int         `json:"total"` // executions since start
}

// Snapshot copies the tracker's state (under the lock) and aggregates it
// (outside it). recent bounds the Recent list.
func (t *Tracker) Snapshot(recent int) Snapshot {
	now := time.Now()
	t.mu.Lock()
	run := make([]Running, 0, len(t.running))
	for id, e := range t.running {
		run = append(run, Running{ID: id, Language: e.lang, Caller: e.caller, Started: e.start, ElapsedMS: now.Sub(e.start).Milliseconds()})
	}
	n := min(t.total, HistorySize)
	hist := make([]Record, n) // oldest first
	for i := range n {
		hist[i] = t.ring[(t.total-n+i)%HistorySize]
	}
	total := t.total
	t.mu.Unlock()

	sort.Slice(run, func(i, j int) bool { return run[i].ID < run[j].ID })
	s := Snapshot{Now: now, Running: run, Total: total, Recent: make([]Record, 0, min(recent, n)), Languages: []LangStats{}}
	for i := n - 1; i >= 0 && len(s.Recent) < recent; i-- {
		s.Recent = append(s.Recent, hist[i])
	}
	byLang := map[string][]Record{}
	for _, r := range hist {
		byLang[r.Language] = append(byLang[r.Language], r)
	}
	for l, rs := range byLang {
		st := LangStats{Language: l, Count: len(rs), Statuses: map[string]int{}}
		walls := make([]float64, len(rs))
		for i, r := range rs {
			walls[i] = r.WallMS
			st.Statuses[r.Status]++
		}
		st.Series = append([]float64(nil), walls[max(0, len(walls)-SeriesLen):]...)
		sort.Float64s(walls)
		st.P50MS, st.P90MS, st.P99MS = quantile(walls, 0.5), quantile(walls, 0.9), quantile(walls, 0.99)
		st.MaxMS = walls[len(walls)-1]
		s.Languages = append(s.Languages, st)
	}
	sort.Slice(s.Languages, func(i, j int) bool { return s.Languages[i].Language < s.Languages[j].Language })
	return s
}

// quantile is the nearest-rank q-quantile of sorted values.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
