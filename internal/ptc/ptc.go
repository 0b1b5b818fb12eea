// Package ptc runs programmatic tool calling: code that calls the client's
// tools as functions. A run's sandbox stays alive, paused on each batch of
// tool calls, until the client posts the results under a single-use
// continuation token; the results resume the code where it stopped, so each
// tool is called once and nothing before it runs twice. Each pause is also
// recorded in storage, so that an instance that does not hold the live run
// can replay it from the start, feeding the recorded results (the fallback
// behind a round-robin balancer). The package knows nothing of HTTP or of
// how callers authenticate: a caller is an opaque key.
package ptc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/storage"
)

//go:embed runner.py
var runnerSource []byte

// Errors of Continue and Cancel.
var (
	// ErrNotFound: no such continuation for this caller (unknown, another
	// caller's, or ended).
	ErrNotFound = errors.New("continuation not found")
	// ErrUsed: the token was already used; each token resumes a run once.
	ErrUsed = errors.New("continuation token already used")
	// ErrExpired: the run waited longer than the pause limit and was ended.
	ErrExpired = errors.New("continuation expired")
)

// Config bounds programmatic runs.
type Config struct {
	// PauseTimeout is how long a run waits for its tool results before it
	// is ended (default 5 minutes).
	PauseTimeout time.Duration
	// MaxLifetime caps a run's sandbox, pauses included (default 30
	// minutes). The request's own timeout counts sandbox time only.
	MaxLifetime time.Duration
	Log         *slog.Logger
}

// Manager owns the live runs. It is safe for concurrent use.
type Manager struct {
	eng   *engine.Engine
	store storage.Store
	cfg   Config

	mu        sync.Mutex
	byToken   map[string]*run
	gone      map[string]goneToken // spent tokens, for a precise answer
	byRequest map[string]*run      // caller + "\x00" + request id
	endedReqs map[string]time.Time // request keys of ended runs, for Cancel
	runs      map[*run]bool
	live      sync.WaitGroup // runs whose sandbox may still be up
}

type goneToken struct {
	err error
	at  time.Time
}

// New returns a manager running code through eng and recording pauses in
// store.
func New(eng *engine.Engine, store storage.Store, cfg Config) *Manager {
	if cfg.PauseTimeout <= 0 {
		cfg.PauseTimeout = 5 * time.Minute
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = 30 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{eng: eng, store: store, cfg: cfg, byToken: map[string]*run{}, gone: map[string]goneToken{},
		byRequest: map[string]*run{}, endedReqs: map[string]time.Time{}, runs: map[*run]bool{}}
}

// Config reports the manager's bounds.
func (m *Manager) Config() Config { return m.cfg }

// Call is a tool call the code made.
type Call struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// ToolResult is the client's answer to one call.
type ToolResult struct {
	CallID  string          `json:"call_id"`
	Result  json.RawMessage `json:"result"`
	IsError bool            `json:"is_error"`
	Error   string          `json:"error_message,omitempty"`
}

// Answer is what a request gets: calls to make, or the run's end.
type Answer struct {
	Status string // "tool_call_required", "completed" or "error"
	Token  string
	Calls  []Call
	Result *engine.Result // completed and error: the run's output and files
	Error  string         // error: one of the strings the client knows
}

// Start describes a new run.
type Start struct {
	Req       engine.Request // Lang py or bash
	Tools     []string       // the tools' names as the client knows them
	Caller    string         // binds the run's tokens
	RequestID string         // for Cancel; "" when the client cannot cancel
	Release   func()         // called once when the run has ended
}

// Tools resolves tool names to the identifiers the code calls, refusing
// names that vanish or collide under the client's normalisation.
func Tools(l *lang.Language, names []string) ([]Tool, error) {
	if l.Ident == nil {
		return nil, fmt.Errorf("programmatic tool calling does not run %s", l.Name)
	}
	seen := map[string]string{}
	out := make([]Tool, 0, len(names))
	for _, n := range names {
		id := Ident(l.Ident, n)
		if id == "" {
			return nil, fmt.Errorf("tool name %q has no usable identifier", truncate(n, 64))
		}
		if prev, dup := seen[id]; dup {
			if prev == n {
				continue
			}
			return nil, fmt.Errorf("tools %q and %q are both called %s", truncate(prev, 64), truncate(n, 64), id)
		}
		seen[id] = n
		out = append(out, Tool{Name: n, Ident: id})
	}
	return out, nil
}

// Start runs new code and returns its first answer.
func (m *Manager) Start(ctx context.Context, st Start) (Answer, error) {
	tools, err := Tools(st.Req.Lang, st.Tools)
	if err != nil {
		st.Release()
		return Answer{}, fmt.Errorf("%w: %v", engine.ErrInvalid, err)
	}
	r := m.launch(st, tools, nil)
	return r.wait(ctx)
}

// recCall is a call with its result, as recorded for a replay.
type recCall struct {
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Input   json.RawMessage `json:"input"`
	Result  json.RawMessage `json:"result,omitempty"`
	IsError bool            `json:"is_error,omitempty"`
	Error   string          `json:"error,omitempty"`
	used    bool
}

// run is one live programmatic run.
type run struct {
	m      *Manager
	caller string
	req    engine.Request
	tools  []Tool
	names  map[string]bool
	stop   chan sandbox.Status
	cancel context.CancelFunc

	mu          sync.Mutex
	conn        net.Conn
	evq         []event
	notify      chan struct{}
	queued      []Call              // calls not yet sent to the client
	outstanding map[string]*pending // by call id: sent, awaiting results
	history     []recCall           // answered calls, in order
	replay      []*recCall          // recorded answers still to feed
	budget      time.Duration       // sandbox time left
	initial     time.Duration       // the whole budget
	token       string
	pauseTimer  *time.Timer
	ended       bool
	reqKeys     []string
}

type pending struct {
	runnerID string
	call     Call
}

type event struct {
	connected bool // the code has started: its clock starts
	calls     []wireCall
	res       *engine.Result
	err       error
	final     bool
}

type wireCall struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// launch starts a run's sandbox.
func (m *Manager) launch(st Start, tools []Tool, replay []*recCall) *run {
	budget := m.eng.Limits().WallTime
	if st.Req.Timeout > 0 && st.Req.Timeout < budget {
		budget = st.Req.Timeout
	}
	r := &run{
		m: m, caller: st.Caller, req: st.Req, tools: tools, names: map[string]bool{},
		stop: make(chan sandbox.Status, 1), notify: make(chan struct{}, 1),
		outstanding: map[string]*pending{}, replay: replay, budget: budget, initial: budget,
	}
	for _, t := range tools {
		r.names[t.Name] = true
	}
	m.mu.Lock()
	m.runs[r] = true
	m.mu.Unlock()
	r.addRequest(st.RequestID)
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.MaxLifetime+time.Minute)
	r.cancel = cancel
	var sdir string
	var ln *net.UnixListener
	hooks := &engine.Hooks{
		Stop: r.stop,
		Prepare: func(dir string, spec *sandbox.Spec) error {
			var err error
			sdir, ln, err = r.prepare(dir, spec)
			return err
		},
		AfterRun: func() {
			if ln != nil {
				ln.Close()
			}
			r.mu.Lock()
			if r.conn != nil {
				r.conn.Close()
			}
			r.mu.Unlock()
			if sdir != "" {
				os.RemoveAll(sdir)
			}
		},
	}
	m.live.Add(1)
	go func() {
		defer m.live.Done()
		defer cancel()
		res, err := m.eng.ExecWith(ctx, st.Req, hooks)
		r.push(event{final: true, res: res, err: err})
		m.ended(r)
		st.Release()
	}()
	return r
}

// sockDir holds the server's socket in the working directory until the
// runner has connected; then it is removed, leaving no trace in /mnt/data.
const sockDir = ".codeexec-ptc"

type runnerConfig struct {
	Sock  string   `json:"sock"`
	Lang  string   `json:"lang"`
	Src   string   `json:"src"`
	Argv  []string `json:"argv"`
	Args  []string `json:"args"`
	Tools []Tool   `json:"tools"`
}

// prepare listens on the run's socket and makes the runner the run step.
func (r *run) prepare(dir string, spec *sandbox.Spec) (string, *net.UnixListener, error) {
	sdir := filepath.Join(dir, sockDir)
	if err := os.Mkdir(sdir, 0o700); err != nil {
		return "", nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(sdir, "s"), Net: "unix"})
	if err != nil {
		return sdir, nil, err
	}
	ln.SetUnlinkOnClose(true)
	step := &spec.Steps[len(spec.Steps)-1]
	cfg, _ := json.Marshal(runnerConfig{
		Sock: "/mnt/data/" + sockDir + "/s", Lang: r.req.Lang.ID, Src: r.req.Lang.SourcePath(r.req.Code),
		Argv: step.Argv, Args: r.req.Args, Tools: r.tools,
	})
	spec.Files = append(spec.Files,
		sandbox.File{Path: "/tmp/.ptc/runner.py", Data: runnerSource},
		sandbox.File{Path: "/tmp/.ptc/config.json", Data: cfg})
	step.Argv = []string{"/usr/bin/python3", "-u", "/tmp/.ptc/runner.py"}
	spec.Cold = true
	// The request's timeout is enforced on sandbox time by wait; the
	// sandbox's own clock only caps the whole run, pauses included.
	spec.Limits.WallTime = r.m.cfg.MaxLifetime
	go r.accept(ln, sdir)
	return sdir, ln, nil
}

func (r *run) accept(ln *net.UnixListener, sdir string) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	ln.Close() // one runner per run: nothing else ever connects
	os.RemoveAll(sdir)
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		c.Close()
		return
	}
	r.conn = c
	r.mu.Unlock()
	r.push(event{connected: true})
	rd := bufio.NewReaderSize(c, 64<<10)
	for {
		line, err := readLine(rd, 16<<20)
		if err != nil {
			return
		}
		var msg struct {
			Calls []wireCall `json:"calls"`
		}
		if json.Unmarshal(line, &msg) != nil || len(msg.Calls) == 0 {
			continue
		}
		r.push(event{calls: msg.Calls})
	}
}

func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > max {
			return nil, errors.New("message too large")
		}
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

func (r *run) push(ev event) {
	r.mu.Lock()
	r.evq = append(r.evq, ev)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *run) halt(st sandbox.Status) {
	select {
	case r.stop <- st:
	default:
	}
}

// wait lets the code run until it needs tool results or ends, charging
// the time to the run's budget.
func (r *run) wait(ctx context.Context) (Answer, error) {
	start := time.Now()
	r.mu.Lock()
	budget := r.budget
	if r.conn == nil {
		// Staging and the sandbox's start are the server's time, not the
		// code's: the clock starts when the code does (bounded anyway).
		budget = startupLimit
	}
	r.mu.Unlock()
	timer := time.NewTimer(budget)
	defer timer.Stop()
	timedOut := false
	for {
		r.mu.Lock()
		evs := r.evq
		r.evq = nil
		r.mu.Unlock()
		for _, ev := range evs {
			if ev.connected {
				start = time.Now()
				r.mu.Lock()
				timer.Reset(r.budget)
				r.mu.Unlock()
				continue
			}
			if ev.final {
				r.charge(start)
				return r.finish(ev, timedOut)
			}
			r.take(ev.calls)
		}
		r.mu.Lock()
		ready := len(r.queued) > 0
		r.mu.Unlock()
		if ready && !timedOut {
			r.charge(start)
			return r.pause(ctx)
		}
		select {
		case <-r.notify:
		case <-timer.C:
			timedOut = true
			r.halt(sandbox.StatusTimeout)
		case <-ctx.Done():
			// The client left: nobody can continue this run.
			r.halt(sandbox.StatusKilled)
			return Answer{}, ctx.Err()
		}
	}
}

// startupLimit bounds the time from a request to the code's start (staging
// inputs, starting the sandbox and the runner).
const startupLimit = 2 * time.Minute

func (r *run) charge(start time.Time) {
	r.mu.Lock()
	r.budget -= time.Since(start)
	r.mu.Unlock()
}

// take files the calls of one batch: those a replay has answers for are
// answered at once, the others wait for the client.
func (r *run) take(calls []wireCall) {
	var now []map[string]any
	r.mu.Lock()
	for _, c := range calls {
		if !r.names[c.Name] {
			now = append(now, map[string]any{"id": c.ID, "ok": false, "error": "unknown tool " + truncate(c.Name, 64)})
			continue
		}
		if rc := r.recorded(c); rc != nil {
			now = append(now, runnerResult(c.ID, rc.Result, rc.IsError, rc.Error))
			r.history = append(r.history, recCall{ID: rc.ID, Name: rc.Name, Input: rc.Input, Result: rc.Result, IsError: rc.IsError, Error: rc.Error})
			continue
		}
		input := c.Input
		if len(input) == 0 {
			input = json.RawMessage("{}")
		}
		call := Call{ID: "call_" + storage.NewID(), Name: c.Name, Input: input}
		r.outstanding[call.ID] = &pending{runnerID: c.ID, call: call}
		r.queued = append(r.queued, call)
	}
	r.mu.Unlock()
	if len(now) > 0 {
		r.send(now)
	}
}

// recorded finds an unused recorded answer to the same call.
func (r *run) recorded(c wireCall) *recCall {
	for _, rc := range r.replay {
		if !rc.used && rc.Name == c.Name && jsonEqual(rc.Input, c.Input) {
			rc.used = true
			return rc
		}
	}
	return nil
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func runnerResult(id string, result json.RawMessage, isErr bool, msg string) map[string]any {
	if isErr {
		if msg == "" {
			msg = "Tool execution failed"
		}
		return map[string]any{"id": id, "ok": false, "error": msg}
	}
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	return map[string]any{"id": id, "ok": true, "result": result}
}

func (r *run) send(results []map[string]any) {
	b, err := json.Marshal(map[string]any{"results": results})
	if err != nil {
		return
	}
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if c == nil {
		return
	}
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(append(b, '\n')); err != nil {
		r.m.cfg.Log.Warn("programmatic run: handing results to the code", "err", err)
	}
}

// pause answers the queued calls under a fresh token and waits for the
// client, at most PauseTimeout.
func (r *run) pause(ctx context.Context) (Answer, error) {
	tok := newToken()
	r.mu.Lock()
	calls := r.queued
	r.queued = nil
	r.token = tok
	rec := r.recordLocked(time.Now().Add(r.m.cfg.PauseTimeout))
	r.mu.Unlock()
	// Recorded before the answer leaves: a continuation at another
	// instance finds it.
	if err := r.m.persist(ctx, tok, rec); err != nil {
		r.m.cfg.Log.Warn("programmatic run: recording a pause (no replay at other instances)", "err", err)
	}
	r.m.mu.Lock()
	r.m.byToken[tok] = r
	r.m.mu.Unlock()
	r.mu.Lock()
	r.pauseTimer = time.AfterFunc(r.m.cfg.PauseTimeout, func() { r.m.expire(r, tok) })
	r.mu.Unlock()
	go r.m.watchTakeover(r, tok)
	return Answer{Status: "tool_call_required", Token: tok, Calls: calls}, nil
}

func (r *run) finish(ev event, timedOut bool) (Answer, error) {
	if ev.err != nil {
		return Answer{}, ev.err
	}
	res := ev.res
	a := Answer{Status: "completed", Result: res}
	if timedOut && res.Status == sandbox.StatusKilled {
		res.Status = sandbox.StatusTimeout
	}
	// The run's time is its sandbox time: pauses for tool results are the
	// client's.
	r.mu.Lock()
	if active := r.initial - r.budget; active > 0 && active < res.WallTime {
		res.WallTime = active
	}
	r.mu.Unlock()
	switch res.Status {
	case sandbox.StatusTimeout:
		a.Status, a.Error = "error", "Time limit exceeded"
	case sandbox.StatusMemory:
		a.Status, a.Error = "error", "Out of memory"
	case sandbox.StatusOutputLimit:
		a.Status, a.Error = "error", "stdout length exceeded"
		if len(res.Stderr) > len(res.Stdout) {
			a.Error = "stderr length exceeded"
		}
	case sandbox.StatusKilled:
		a.Status, a.Error = "error", "Execution failed or timed out"
	}
	return a, nil
}

// Continue resumes the run of token with the client's results. A token this
// instance does not hold is looked up in storage and its run replayed from
// the recorded results; admit is then called for the replay's execution
// slot.
func (m *Manager) Continue(ctx context.Context, caller, token string, results []ToolResult, requestID string, admit func() (func(), error)) (Answer, error) {
	m.mu.Lock()
	r := m.byToken[token]
	if r == nil {
		g, spent := m.gone[token]
		m.mu.Unlock()
		if spent {
			return Answer{}, g.err
		}
		return m.resume(ctx, caller, token, results, requestID, admit)
	}
	if r.caller != caller {
		m.mu.Unlock()
		return Answer{}, ErrNotFound
	}
	delete(m.byToken, token)
	m.spend(token, ErrUsed)
	m.mu.Unlock()
	r.mu.Lock()
	r.token = ""
	t := r.pauseTimer
	r.mu.Unlock()
	if t != nil && !t.Stop() {
		return Answer{}, ErrExpired // the pause timer won: the run is ending
	}
	m.unpersist(token)
	r.addRequest(requestID)
	r.deliver(results)
	return r.wait(ctx)
}

// deliver hands the client's results to the code; calls left without a
// result fail in the code rather than hang it.
func (r *run) deliver(results []ToolResult) {
	r.mu.Lock()
	byID := map[string]ToolResult{}
	for _, res := range results {
		byID[res.CallID] = res
	}
	var out []map[string]any
	for id, p := range r.outstanding {
		res, ok := byID[id]
		if !ok {
			res = ToolResult{CallID: id, IsError: true, Error: "no result was returned for this tool call"}
		}
		out = append(out, runnerResult(p.runnerID, res.Result, res.IsError, res.Error))
		r.history = append(r.history, recCall{ID: id, Name: p.call.Name, Input: p.call.Input, Result: res.Result, IsError: res.IsError, Error: res.Error})
		delete(r.outstanding, id)
	}
	r.mu.Unlock()
	if len(out) > 0 {
		r.send(out)
	}
}

// Cancel ends the run a request of caller's belongs to. It reports whether
// the request is known: a run that already ended (the client's abort also
// closes its connection, which ends the run first) counts.
func (m *Manager) Cancel(caller, requestID string) bool {
	k := caller + "\x00" + requestID
	m.mu.Lock()
	r := m.byRequest[k]
	_, ended := m.endedReqs[k]
	m.mu.Unlock()
	if r == nil {
		return ended
	}
	r.mu.Lock()
	tok := r.token
	r.mu.Unlock()
	m.mu.Lock()
	if tok != "" && m.byToken[tok] == r {
		delete(m.byToken, tok)
		m.spend(tok, ErrNotFound)
		go m.unpersist(tok)
	}
	m.mu.Unlock()
	m.cfg.Log.Info("programmatic run cancelled by its client")
	r.halt(sandbox.StatusKilled)
	return true
}

func (r *run) addRequest(id string) {
	if id == "" || len(id) > 256 {
		return
	}
	k := r.caller + "\x00" + id
	r.m.mu.Lock()
	r.m.byRequest[k] = r
	r.m.mu.Unlock()
	r.mu.Lock()
	r.reqKeys = append(r.reqKeys, k)
	r.mu.Unlock()
}

// takeoverPoll is how often a paused run checks that its record is still
// there: another instance that resumed the run deleted it.
const takeoverPoll = time.Second

// watchTakeover ends a paused run once another instance has claimed its
// continuation, so that its sandbox and execution slot are not held until
// the pause limit.
func (m *Manager) watchTakeover(r *run, tok string) {
	if m.store == nil {
		return
	}
	t := time.NewTicker(takeoverPoll)
	defer t.Stop()
	for range t.C {
		m.mu.Lock()
		still := m.byToken[tok] == r
		m.mu.Unlock()
		if !still {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := m.store.Stat(ctx, recordKey(tok))
		cancel()
		if !errors.Is(err, storage.ErrNotFound) {
			continue
		}
		m.mu.Lock()
		taken := m.byToken[tok] == r
		if taken {
			delete(m.byToken, tok)
			m.spend(tok, ErrUsed)
		}
		m.mu.Unlock()
		if taken {
			r.mu.Lock()
			if r.pauseTimer != nil {
				r.pauseTimer.Stop()
			}
			r.mu.Unlock()
			m.cfg.Log.Info("programmatic run: continued at another instance; ending the paused sandbox here")
			r.halt(sandbox.StatusKilled)
		}
		return
	}
}

// expire ends a run whose client did not come back in time.
func (m *Manager) expire(r *run, tok string) {
	m.mu.Lock()
	if m.byToken[tok] == r {
		delete(m.byToken, tok)
		m.spend(tok, ErrExpired)
	}
	m.mu.Unlock()
	m.cfg.Log.Info("programmatic run: no tool results within the pause limit; ending it", "pause_limit", m.cfg.PauseTimeout)
	r.halt(sandbox.StatusTimeout)
	m.unpersist(tok)
}

// ended forgets a run whose sandbox is gone.
func (m *Manager) ended(r *run) {
	r.mu.Lock()
	r.ended = true
	keys := r.reqKeys
	tok := r.token
	if r.pauseTimer != nil {
		r.pauseTimer.Stop()
	}
	r.mu.Unlock()
	m.mu.Lock()
	now := time.Now()
	for _, k := range keys {
		if m.byRequest[k] == r {
			delete(m.byRequest, k)
		}
		m.endedReqs[k] = now
	}
	for k, at := range m.endedReqs {
		if now.Sub(at) > 10*time.Minute {
			delete(m.endedReqs, k)
		}
	}
	if tok != "" && m.byToken[tok] == r {
		delete(m.byToken, tok)
		m.spend(tok, ErrExpired)
	}
	delete(m.runs, r)
	m.mu.Unlock()
	if tok != "" {
		m.unpersist(tok)
	}
}

// spend remembers a token that can no longer be used, for an hour; m.mu held.
func (m *Manager) spend(tok string, err error) {
	now := time.Now()
	m.gone[tok] = goneToken{err: err, at: now}
	if len(m.gone)%64 == 0 {
		for k, g := range m.gone {
			if now.Sub(g.at) > time.Hour {
				delete(m.gone, k)
			}
		}
	}
}

// Close ends every run and waits (up to 30 s) for their sandboxes to be
// gone, so that the sandbox can be closed after it.
func (m *Manager) Close() {
	m.mu.Lock()
	runs := make([]*run, 0, len(m.runs))
	for r := range m.runs {
		runs = append(runs, r)
	}
	m.mu.Unlock()
	for _, r := range runs {
		r.halt(sandbox.StatusKilled)
	}
	done := make(chan struct{})
	go func() {
		m.live.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		m.cfg.Log.Warn("programmatic runs still ending at shutdown")
	}
}

// Len is the number of live runs.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.runs)
}

func newToken() string {
	var b [32]byte
	rand.Read(b[:])
	return "ptc_" + base64.RawURLEncoding.EncodeToString(b[:])
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// record is a paused run as another instance needs it to replay the run.
type record struct {
	Caller  string           `json:"caller"`
	Expires time.Time        `json:"expires"`
	Lang    string           `json:"lang"`
	Code    string           `json:"code"`
	Args    []string         `json:"args,omitempty"`
	Files   []engine.FileRef `json:"files,omitempty"`
	Timeout time.Duration    `json:"timeout"`
	Owner   string           `json:"owner,omitempty"`
	Tools   []string         `json:"tools"`
	History []recCall        `json:"history"`
	Pending []recCall        `json:"pending"`
}

func (r *run) recordLocked(expires time.Time) record {
	rec := record{
		Caller: r.caller, Expires: expires, Lang: r.req.Lang.ID, Code: r.req.Code, Args: r.req.Args,
		Files: r.req.Files, Timeout: r.req.Timeout, Owner: r.req.Owner, History: r.history,
	}
	for _, t := range r.tools {
		rec.Tools = append(rec.Tools, t.Name)
	}
	for id, p := range r.outstanding {
		rec.Pending = append(rec.Pending, recCall{ID: id, Name: p.call.Name, Input: p.call.Input})
	}
	return rec
}

// recordKey is where a token's record lives: a session id derived from the
// token, so only the token's holder can name it.
func recordKey(tok string) storage.Key {
	sum := sha256.Sum256([]byte("codeexec-ptc\x00" + tok))
	return storage.Key{Session: "ptc" + hex.EncodeToString(sum[:30]), ID: "state"}
}

func (m *Manager) persist(ctx context.Context, tok string, rec record) error {
	if m.store == nil {
		return nil
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, err = m.store.Put(ctx, recordKey(tok), bytes.NewReader(b), storage.Meta{Name: "state.json", ContentType: "application/json", Owner: rec.Owner})
	return err
}

func (m *Manager) unpersist(tok string) {
	if m.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.store.Delete(ctx, recordKey(tok)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		m.cfg.Log.Warn("programmatic run: removing a pause record", "err", err)
	}
}

// resume replays, from its record, a run another instance paused.
func (m *Manager) resume(ctx context.Context, caller, tok string, results []ToolResult, requestID string, admit func() (func(), error)) (Answer, error) {
	if m.store == nil {
		return Answer{}, ErrNotFound
	}
	key := recordKey(tok)
	rc, _, err := m.store.Open(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return Answer{}, ErrNotFound
	}
	if err != nil {
		return Answer{}, err
	}
	b, err := io.ReadAll(io.LimitReader(rc, 256<<20))
	rc.Close()
	if err != nil {
		return Answer{}, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Answer{}, fmt.Errorf("pause record: %w", err)
	}
	if rec.Caller != caller {
		return Answer{}, ErrNotFound
	}
	// Claim it: whoever deletes it first resumes the run.
	if err := m.store.Delete(ctx, key); errors.Is(err, storage.ErrNotFound) {
		return Answer{}, ErrUsed
	} else if err != nil {
		return Answer{}, err
	}
	m.mu.Lock()
	m.spend(tok, ErrUsed)
	m.mu.Unlock()
	if time.Now().After(rec.Expires) {
		return Answer{}, ErrExpired
	}
	l, ok := lang.Lookup(rec.Lang)
	if !ok {
		return Answer{}, fmt.Errorf("%w: pause record names language %q", engine.ErrInvalid, rec.Lang)
	}
	tools, err := Tools(l, rec.Tools)
	if err != nil {
		return Answer{}, fmt.Errorf("%w: %v", engine.ErrInvalid, err)
	}
	release, err := admit()
	if err != nil {
		return Answer{}, err
	}
	byID := map[string]ToolResult{}
	for _, res := range results {
		byID[res.CallID] = res
	}
	replay := make([]*recCall, 0, len(rec.History)+len(rec.Pending))
	for i := range rec.History {
		replay = append(replay, &rec.History[i])
	}
	for _, p := range rec.Pending {
		res, ok := byID[p.ID]
		if !ok {
			res = ToolResult{IsError: true, Error: "no result was returned for this tool call"}
		}
		p.Result, p.IsError, p.Error = res.Result, res.IsError, res.Error
		replay = append(replay, &p)
	}
	m.cfg.Log.Info("programmatic run: replaying a run paused at another instance", "recorded_calls", len(replay))
	req := engine.Request{Lang: l, Code: rec.Code, Args: rec.Args, Files: rec.Files, Timeout: rec.Timeout, Owner: rec.Owner}
	r := m.launch(Start{Req: req, Caller: caller, RequestID: requestID, Release: release}, tools, replay)
	return r.wait(ctx)
}
