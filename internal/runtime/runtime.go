// Package runtime keeps stateful sessions: one long-lived sandbox per
// session holding a Python interpreter that runs each call's code in one
// persistent namespace, so variables, imports and loaded data survive from
// call to call. Files move in and out through the engine exactly as for a
// one-shot execution. It must not know HTTP or who the callers are: a
// session is named by an opaque key.
package runtime

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/codeexec/codeexec/internal/egress"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/storage"
)

//go:embed kernel.py
var kernelSource []byte

// ErrUnsupported is returned for a language the stateful runtime does not
// keep alive (only Python, and Bash commands run inside the same sandbox).
var ErrUnsupported = errors.New("the stateful profile runs py and bash only")

// Config bounds the live sessions.
type Config struct {
	IdleTimeout time.Duration // a session unused this long is closed
	MaxSessions int           // beyond, the least recently used is evicted
	// PerCaller bounds one caller's live sessions (default: half of
	// MaxSessions, at least 1): past it, the caller's own least recently
	// used session makes room, never another caller's.
	PerCaller   int
	MaxLifetime time.Duration // no session lives longer
	Log         *slog.Logger
	// Memory, when set, is the server's memory budget: a session takes its
	// memory limit's share before it starts (waiting at most MemoryWait)
	// and holds it until it is closed, idle or not.
	Memory     MemoryBudget
	MemoryWait time.Duration
}

// MemoryBudget is the part of the server's memory budget a session uses.
type MemoryBudget interface {
	Take(ctx context.Context, kind string, n int64, wait time.Duration) (release func(), err error)
}

// Manager owns the live sessions. It is safe for concurrent use.
type Manager struct {
	eng *engine.Engine
	cfg Config

	mu       sync.Mutex
	live     map[string]*session // by scope key
	starting map[string]int      // sessions being started, by caller
	closed   bool
	stop     chan struct{}
}

// New starts a manager and its idle reaper.
func New(eng *engine.Engine, cfg Config) *Manager {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 20 * time.Minute
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 8
	}
	if cfg.PerCaller <= 0 {
		cfg.PerCaller = max(1, cfg.MaxSessions/2)
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = 12 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{eng: eng, cfg: cfg, live: map[string]*session{}, starting: map[string]int{}, stop: make(chan struct{})}
	go m.reap()
	return m
}

// session is one live sandbox.
type session struct {
	id        string
	key       string
	caller    string // whose quota it counts against
	ws        *engine.Workspace
	cancel    context.CancelFunc
	done      chan struct{}
	result    sandbox.Result // valid after done
	runErr    error
	conn      net.Conn
	rd        *bufio.Reader
	calls     sync.Mutex // one call at a time
	closeOnce sync.Once
	release   func() // gives the session's memory share back
	// fz freezes the session's sandbox between calls: nothing of it runs
	// (a background loop left by a call, say) unless a call is running.
	// Nil when the sandbox cannot freeze.
	fz sandbox.Freezer
	// netNotes takes what the session's network denied since it was last
	// called (nil: no network), for the call's stderr.
	netNotes func() string
	seq      int
	lastUsed time.Time // guarded by Manager.mu
	dead     bool      // guarded by Manager.mu
	// inCall counts the calls that hold the session (running or waiting
	// for its turn), guarded by Manager.mu: such a session is never evicted.
	inCall int
}

// BusyError: no session can be started now because every session that
// could make room is in a call. It is the caller's own doing when Own.
type BusyError struct {
	Own    bool
	Reason string
}

func (e *BusyError) Error() string { return e.Reason }

// Len is the number of live sessions.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// Outcome is a call's result plus what happened to its session.
type Outcome struct {
	*engine.Result
	RuntimeID string
	Status    string // "new" or "reused"
}

// Exec runs req in the live session of key, starting one when there is
// none (or it died, or was evicted): the caller is told through Status. A
// new session counts against caller's quota (Config.PerCaller).
func (m *Manager) Exec(ctx context.Context, caller, key string, req engine.Request) (*Outcome, error) {
	if req.Lang == nil || !req.Lang.Live {
		return nil, ErrUnsupported
	}
	s, status, err := m.acquire(ctx, caller, key)
	if err != nil {
		return nil, err
	}
	s.calls.Lock()
	defer s.calls.Unlock()
	res, err := m.call(ctx, s, req)
	m.mu.Lock()
	s.inCall--
	s.lastUsed = time.Now()
	dead := s.dead
	if dead && m.live[key] == s {
		delete(m.live, key)
	}
	m.mu.Unlock()
	if dead {
		m.close(s) // the session died in the call: release its sandbox and workspace
	}
	if err != nil {
		return nil, err
	}
	return &Outcome{Result: res, RuntimeID: s.id, Status: status}, nil
}

// Drop closes key's session, if any.
func (m *Manager) Drop(key string) {
	m.mu.Lock()
	s := m.live[key]
	delete(m.live, key)
	m.mu.Unlock()
	if s != nil {
		m.close(s)
	}
}

// Close ends every session.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	close(m.stop)
	all := m.live
	m.live = map[string]*session{}
	m.mu.Unlock()
	for _, s := range all {
		m.close(s)
	}
}

// acquire returns key's live session, held for a call (inCall), starting
// one when needed. Room for a new one is made by evicting a session that
// is not in a call: the caller's own least recently used first; another
// caller's only when the caller is within its quota and the server is full.
func (m *Manager) acquire(ctx context.Context, caller, key string) (*session, string, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, "", errors.New("runtime manager closed")
	}
	if s := m.live[key]; s != nil && !s.dead {
		s.lastUsed = time.Now()
		s.inCall++
		m.mu.Unlock()
		return s, "reused", nil
	}
	delete(m.live, key)
	var evicted []*session
	evict := func(s *session) {
		delete(m.live, s.key)
		evicted = append(evicted, s)
	}
	own, total := m.starting[caller], 0
	for _, n := range m.starting {
		total += n
	}
	for _, s := range m.live {
		if s.caller == caller {
			own++
		}
	}
	var busy error
	if own >= m.cfg.PerCaller {
		if v := m.lruIdle(caller); v != nil {
			evict(v)
		} else {
			busy = &BusyError{Own: true, Reason: fmt.Sprintf("all %d of this caller's live sessions are in a call", m.cfg.PerCaller)}
		}
	}
	if busy == nil && len(m.live)+total >= m.cfg.MaxSessions {
		v := m.lruIdle(caller)
		if v == nil {
			v = m.lruIdle("")
		}
		if v != nil {
			evict(v)
		} else {
			busy = &BusyError{Reason: fmt.Sprintf("all %d live sessions of the server are in a call", m.cfg.MaxSessions)}
		}
	}
	if busy == nil {
		m.starting[caller]++
	}
	m.mu.Unlock()
	for _, v := range evicted {
		m.cfg.Log.Info("evicting least recently used runtime session", "runtime_session", v.id, "own", v.caller == caller)
		m.close(v)
	}
	if busy != nil {
		return nil, "", busy
	}
	started := func() {
		m.starting[caller]--
		if m.starting[caller] == 0 {
			delete(m.starting, caller)
		}
	}
	release := func() {}
	if m.cfg.Memory != nil {
		var err error
		release, err = m.cfg.Memory.Take(ctx, "session", m.eng.Limits().MemoryBytes, m.cfg.MemoryWait)
		if err != nil {
			m.mu.Lock()
			started()
			m.mu.Unlock()
			return nil, "", err
		}
	}
	s, err := m.start(ctx, key)
	m.mu.Lock()
	defer m.mu.Unlock()
	started()
	if err != nil {
		release()
		return nil, "", err
	}
	s.release = release
	s.caller = caller
	if old := m.live[key]; old != nil && !old.dead {
		// Another call for the same key started one meanwhile: use it.
		old.inCall++
		go m.close(s)
		return old, "reused", nil
	}
	s.inCall = 1
	m.live[key] = s
	return s, "new", nil
}

// lruIdle is the least recently used live session not in a call, of
// caller ("": of anyone). m.mu is held.
func (m *Manager) lruIdle(caller string) *session {
	var v *session
	for _, s := range m.live {
		if s.inCall == 0 && (caller == "" || s.caller == caller) && (v == nil || s.lastUsed.Before(v.lastUsed)) {
			v = s
		}
	}
	return v
}

const sockDir = ".codeexec"

// start creates the session's sandbox and waits for its kernel to connect.
func (m *Manager) start(ctx context.Context, key string) (*session, error) {
	ws, err := m.eng.NewWorkspace()
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			ws.Close()
		}
	}()
	dir := filepath.Join(ws.Dir, sockDir)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "k.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	// The listener is removed as soon as the kernel is in: nothing else can
	// ever connect to it.
	ln.SetUnlinkOnClose(true)

	lim := m.eng.Limits()
	py, _ := lang.Lookup("py")
	s := &session{id: storage.NewID(), key: key, ws: ws, done: make(chan struct{}), lastUsed: time.Now()}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.MaxLifetime)
	s.cancel = cancel
	fzc := make(chan sandbox.Freezer, 1)
	netc := make(chan func() string, 1)
	rctx = egress.WithNotes(rctx, func(take func() string) { netc <- take })
	spec := sandbox.Spec{
		Started: func(f sandbox.Freezer) { fzc <- f },
		Steps: []sandbox.Step{{Name: "kernel", Argv: []string{"/usr/bin/python3", "-u", "/tmp/code/kernel.py",
			"/mnt/data/" + sockDir + "/k.sock", strconv.FormatInt(lim.OutputBytes, 10)}}},
		Files:  []sandbox.File{{Path: "/tmp/code/kernel.py", Data: kernelSource}},
		Env:    append(append([]string{}, engine.Env...), py.Env...),
		Limits: lim.Live(m.cfg.MaxLifetime),
	}
	go func() {
		s.result, s.runErr = m.eng.RunLive(rctx, ws, spec)
		close(s.done)
	}()
	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 1)
	ln.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		c, err := ln.Accept()
		acc <- accepted{c, err}
	}()
	var a accepted
	select {
	case a = <-acc:
	case <-s.done:
		a.err = fmt.Errorf("the kernel exited before connecting: %s %v", s.result.Status, s.runErr)
	}
	if a.err == nil {
		os.Remove(dir) // the socket is unlinked already; leave no trace in /mnt/data
		s.conn = a.c
		s.rd = bufio.NewReaderSize(a.c, 64<<10)
		a.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var hello struct{ Ready bool }
		line, err := s.rd.ReadSlice('\n')
		if err != nil || json.Unmarshal(line, &hello) != nil || !hello.Ready {
			a.err = fmt.Errorf("the kernel did not say ready: %v", err)
		}
	}
	if a.err == nil {
		// The network (if any) was made before the kernel started.
		select {
		case s.netNotes = <-netc:
		default:
		}
		// Started ran before the kernel did, so the freezer (if any) is here.
		select {
		case s.fz = <-fzc:
			a.err = s.fz.Freeze()
		default:
			m.cfg.Log.Warn("runtime session not frozen between calls: the sandbox has no cgroup freezer", "runtime_session", s.id)
		}
	}
	if a.err != nil {
		cancel()
		<-s.done
		if s.conn != nil {
			s.conn.Close()
		}
		return nil, fmt.Errorf("%w: starting a runtime session: %v", engine.ErrSandbox, a.err)
	}
	ok = true
	m.cfg.Log.Info("runtime session started", "runtime_session", s.id)
	return s, nil
}

func (m *Manager) close(s *session) {
	m.mu.Lock()
	s.dead = true
	m.mu.Unlock()
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		if s.conn != nil {
			s.conn.Close()
		}
		if err := s.ws.Close(); err != nil {
			m.cfg.Log.Error("releasing a runtime session's workspace", "err", err)
		}
		if s.release != nil {
			s.release()
		}
	})
}

// EvictIdle closes the least recently used session that is not in a call,
// giving its memory back (its files are in storage already: every call
// harvests them). It reports whether it closed one. The memory budget
// calls it before it makes a new run wait.
func (m *Manager) EvictIdle() bool {
	m.mu.Lock()
	victim := m.lruIdle("")
	if victim != nil {
		delete(m.live, victim.key)
	}
	m.mu.Unlock()
	if victim == nil {
		return false
	}
	m.cfg.Log.Info("evicting an idle runtime session: the memory budget is full", "runtime_session", victim.id)
	m.close(victim)
	return true
}

// answer is the kernel's reply to one call.
type answer struct {
	ID       int    `json:"id"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
	Status   string `json:"status"`
	WallMS   int64  `json:"wall_ms"`
	CPUMS    int64  `json:"cpu_ms"`
}

// grace is how long past its time limit a call may take to yield to the
// interrupt before its session is killed.
const grace = 3 * time.Second

func (m *Manager) call(ctx context.Context, s *session, req engine.Request) (*engine.Result, error) {
	if err := m.eng.Stage(ctx, s.ws, req); err != nil {
		return nil, err
	}
	lim := m.eng.Limits()
	timeout := lim.WallTime
	if req.Timeout > 0 && req.Timeout < timeout {
		timeout = req.Timeout
	}
	if s.fz != nil {
		if err := s.fz.Thaw(); err != nil {
			m.kill(s)
			return nil, fmt.Errorf("%w: thawing the runtime session: %v", engine.ErrSandbox, err)
		}
	}
	s.seq++
	msg, _ := json.Marshal(map[string]any{
		"id": s.seq, "lang": req.Lang.ID, "code": req.Code, "args": req.Args, "stdin": req.Stdin,
		"timeout_ms": timeout.Milliseconds(),
	})
	start := time.Now()
	s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, werr := s.conn.Write(append(msg, '\n'))

	// Bounded read: the answer carries at most twice the output cap.
	var a answer
	var rerr error
	if werr == nil {
		stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Now()) })
		s.conn.SetReadDeadline(time.Now().Add(timeout + grace))
		var line []byte
		line, rerr = readLine(s.rd, 2*lim.OutputBytes+64<<10)
		stop()
		if rerr == nil {
			rerr = json.Unmarshal(line, &a)
		}
	}
	res := &engine.Result{
		Session: req.Session, Language: req.Lang.ID, Version: m.eng.Version(req.Lang),
	}
	if res.Session == "" {
		res.Session = storage.NewID()
	}
	if werr != nil || rerr != nil || a.ID != s.seq {
		// The kernel died, did not yield to the interrupt, or the client
		// left: the session is gone; its files are harvested all the same.
		m.mu.Lock()
		s.dead = true
		m.mu.Unlock()
		if errors.Is(rerr, io.EOF) {
			// The kernel died by itself (OOM kill, exit): let the sandbox
			// report why before anything else ends it.
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
			}
		}
		s.cancel()
		<-s.done
		res.WallTime = time.Since(start)
		res.ExitCode = 137
		switch {
		case ctx.Err() != nil:
			res.Status = sandbox.StatusKilled
		case s.result.Status == sandbox.StatusMemory:
			res.Status = sandbox.StatusMemory
		case s.result.Status == sandbox.StatusOK || s.result.Status == sandbox.StatusError:
			res.Status = sandbox.StatusError
			res.ExitCode = s.result.ExitCode
		default:
			res.Status = sandbox.StatusTimeout
		}
		res.Stderr = s.takeNetNotes() + fmt.Sprintf("[codeexec] the runtime session ended (%s); its variables are lost, its files are kept\n", res.Status)
		m.cfg.Log.Warn("runtime session ended during a call", "runtime_session", s.id, "status", res.Status, "write", werr, "read", rerr)
	} else {
		// Frozen before its files are collected: nothing it left running
		// changes them meanwhile, or runs until the next call.
		var note string
		if s.fz != nil {
			if err := s.fz.Freeze(); err != nil {
				m.cfg.Log.Error("freezing a runtime session failed: ending it", "runtime_session", s.id, "err", err)
				m.kill(s)
				note = "\n[codeexec] the runtime session could not be paused after this call and was ended; its variables are lost, its files are kept\n"
			}
		}
		res.Stdout, res.Stderr, res.ExitCode = a.Stdout, a.Stderr+s.takeNetNotes()+note, a.ExitCode
		res.Status = sandbox.Status(a.Status)
		res.WallTime = time.Duration(a.WallMS) * time.Millisecond
		res.CPUTime = time.Duration(a.CPUMS) * time.Millisecond
		switch res.Status {
		case sandbox.StatusTimeout:
			res.Stderr += "\n[codeexec] execution stopped: time limit exceeded (variables defined before are kept)\n"
		case sandbox.StatusOutputLimit:
			res.Stderr += "\n[codeexec] output truncated: output limit exceeded\n"
		}
	}
	if err := m.eng.Harvest(context.WithoutCancel(ctx), s.ws, req, res.Session, res); err != nil {
		return nil, err
	}
	return res, nil
}

// takeNetNotes is what the session's network denied since the last call.
func (s *session) takeNetNotes() string {
	if s.netNotes == nil {
		return ""
	}
	return s.netNotes()
}

// kill ends a session's sandbox now (it is closed by the caller of Exec,
// which sees it dead).
func (m *Manager) kill(s *session) {
	m.mu.Lock()
	s.dead = true
	m.mu.Unlock()
	s.cancel()
	<-s.done
}

func readLine(r *bufio.Reader, max int64) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if int64(len(buf)) > max {
			return nil, errors.New("kernel answer too large")
		}
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// reap closes idle sessions and sessions whose sandbox ended.
func (m *Manager) reap() {
	t := time.NewTicker(min(m.cfg.IdleTimeout/4, 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		var idle []*session
		m.mu.Lock()
		for k, s := range m.live {
			ended := false
			select {
			case <-s.done:
				ended = true
			default:
			}
			if (ended || time.Since(s.lastUsed) > m.cfg.IdleTimeout) && s.inCall == 0 {
				delete(m.live, k)
				idle = append(idle, s)
			}
		}
		m.mu.Unlock()
		for _, s := range idle {
			m.cfg.Log.Info("closing idle runtime session", "runtime_session", s.id)
			m.close(s)
		}
	}
}
