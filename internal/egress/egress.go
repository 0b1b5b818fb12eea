package egress

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/time/rate"
)

// Addresses of the run's side of the network. Inside, the run's interface
// has SandboxAddr; GatewayAddr, the server's netstack, is the default route
// and the nameserver. Both are private and never leave the run's namespace.
var (
	SandboxAddr = netip.MustParseAddr("10.0.2.100")
	GatewayAddr = netip.MustParseAddr("10.0.2.2")
)

const (
	// SandboxPrefixLen is the prefix length of SandboxAddr.
	SandboxPrefixLen = 24
	// MTU of the run's interface.
	MTU = 1500
	// maxNotes bounds the denial lines a run's answer carries.
	maxNotes = 8
	// dnsPerSec paces one run's DNS questions, maxDNSFlows bounds its
	// open DNS flows (a resolver opens one per lookup; each closes after
	// dnsIdle).
	dnsPerSec   = 50
	maxDNSFlows = 32
)

// Config is the deployment's egress setup.
type Config struct {
	Policy Policy
	// MaxConns is the most connections (TCP, and UDP flows) one run may
	// open; 0 means 64.
	MaxConns int
	// BytesPerSec caps one run's traffic, both directions together; 0
	// means 8 MiB/s.
	BytesPerSec int
	// Resolver answers the runs' DNS questions the policy allows; nil is
	// the host's resolver.
	Resolver *net.Resolver
	// Exempt takes ranges off the always-denied list. For tests, which
	// have no internet and stand in a "public" server on a reserved
	// range; no setting exposes it.
	Exempt []netip.Prefix
	// Denied is told the reason of each denied connection or lookup (a
	// metric).
	Denied func(reason string)
	Log    *slog.Logger
}

// Service hands out per-run networks under the deployment's policy.
type Service struct {
	cfg Config
}

// New returns a Service; its policy must be On.
func New(cfg Config) *Service {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	if cfg.BytesPerSec <= 0 {
		cfg.BytesPerSec = 8 << 20
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Denied == nil {
		cfg.Denied = func(string) {}
	}
	return &Service{cfg: cfg}
}

// Policy is the deployment's policy.
func (s *Service) Policy() Policy { return s.cfg.Policy }

// Describe reports the policy in force, for /health and doctor.
func (s *Service) Describe() map[string]any {
	return map[string]any{
		"mode": s.cfg.Policy.Mode, "domains": s.cfg.Policy.Domains, "cidrs": s.cfg.Policy.CIDRs,
		"max_connections": s.cfg.MaxConns, "bytes_per_second": s.cfg.BytesPerSec,
		"stack": "per-run network namespace, TUN device, netstack in the server; private, loopback, link-local and metadata addresses always denied",
	}
}

// Run is one run's network. Attach it to the run's namespace, and Close it
// when the run is over; Notes then says what was denied.
type Run struct {
	svc    *Service
	layers []Policy
	ctx    context.Context
	cancel context.CancelFunc
	lim    *rate.Limiter
	// dnsLim paces the run's DNS questions (each may cost an upstream
	// lookup); dnsFlows counts its open DNS flows against maxDNSFlows.
	dnsLim *rate.Limiter

	mu       sync.Mutex
	conns    int
	dnsFlows int
	resolved map[netip.Addr]string // answered addresses -> the name asked
	notes    []string
	dropped  int
	seen     map[string]bool
	closers  []func()
	closed   bool
	wg       sync.WaitGroup
}

// NewRun prepares one run's network under the deployment's policy narrowed
// by the caller's (nil: none).
func (s *Service) NewRun(caller *Policy) *Run {
	ctx, cancel := context.WithCancel(context.Background())
	burst := max(s.cfg.BytesPerSec, 64<<10)
	return &Run{
		svc: s, layers: Narrow(s.cfg.Policy, caller), ctx: ctx, cancel: cancel,
		lim:      rate.NewLimiter(rate.Limit(s.cfg.BytesPerSec), burst),
		dnsLim:   rate.NewLimiter(dnsPerSec, 2*dnsPerSec),
		resolved: map[netip.Addr]string{}, seen: map[string]bool{},
	}
}

// Nameserver is the address the run's /etc/resolv.conf names.
func (r *Run) Nameserver() string { return GatewayAddr.String() }

// allowsName reports whether every layer lets DNS answer for name.
func (r *Run) allowsName(name string) bool {
	for _, l := range r.layers {
		if !l.AllowsName(name) {
			return false
		}
	}
	return true
}

// exempt reports whether a test exemption covers a.
func (r *Run) exempt(a netip.Addr) bool {
	for _, p := range r.svc.cfg.Exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// fixedReason says why a is denied whatever the policy: an always-denied
// range or an address of this host (its listeners included).
func (r *Run) fixedReason(a netip.Addr) string {
	a = a.Unmap()
	if r.exempt(a) {
		return ""
	}
	if why := DeniedReason(a); why != "" {
		return why
	}
	if hostAddr(a) {
		return ReasonHost
	}
	return ""
}

// decide says why a connection to a is denied, or "".
func (r *Run) decide(a netip.Addr) string {
	a = a.Unmap()
	if why := r.fixedReason(a); why != "" {
		return why
	}
	r.mu.Lock()
	_, resolved := r.resolved[a]
	r.mu.Unlock()
	for _, l := range r.layers {
		if !l.allowsAddr(a, resolved) {
			return ReasonPolicy
		}
	}
	return ""
}

// takeConn counts a new connection against the run's cap.
func (r *Run) takeConn() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns >= r.svc.cfg.MaxConns {
		return false
	}
	r.conns++
	return true
}

// takeDNSFlow counts a new DNS flow; release it with dropDNSFlow.
func (r *Run) takeDNSFlow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dnsFlows >= maxDNSFlows {
		return false
	}
	r.dnsFlows++
	return true
}

func (r *Run) dropDNSFlow() {
	r.mu.Lock()
	r.dnsFlows--
	r.mu.Unlock()
}

// deny records a denial: a note for the run's answer (once per distinct
// line), the metric, and a log line without payload.
func (r *Run) deny(what, reason string) {
	r.svc.cfg.Denied(reason)
	r.svc.cfg.Log.Info("network: denied", "what", what, "reason", reason)
	line := fmt.Sprintf("codeexec: network: %s denied (%s)", what, reason)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[line] {
		return
	}
	r.seen[line] = true
	if len(r.notes) >= maxNotes {
		r.dropped++
		return
	}
	r.notes = append(r.notes, line)
}

// Notes are the lines to append to the run's stderr: one per distinct
// denial, "" when nothing was denied.
func (r *Run) Notes() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.notes) == 0 {
		return ""
	}
	var b strings.Builder
	for _, n := range r.notes {
		b.WriteString(n + "\n")
	}
	if r.dropped > 0 {
		fmt.Fprintf(&b, "codeexec: network: %d more denials\n", r.dropped)
	}
	return b.String()
}

// TakeNotes is Notes, for a run that answers many calls (a live session):
// the lines since the last TakeNotes, which it then forgets, so that each
// call's answer names what that call was denied.
func (r *Run) TakeNotes() string {
	s := r.Notes()
	r.mu.Lock()
	r.notes, r.dropped, r.seen = nil, 0, map[string]bool{}
	r.mu.Unlock()
	return s
}

// onClose registers cleanup run at Close; false when already closed.
func (r *Run) onClose(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.closers = append(r.closers, f)
	return true
}

// Close tears the run's network down: every connection, the stack, the
// device. Safe to call more than once.
func (r *Run) Close() {
	r.cancel()
	r.mu.Lock()
	closers := r.closers
	r.closers, r.closed = nil, true
	r.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	r.wg.Wait()
}

// hostAddr reports whether a is one of this host's interface addresses
// (where the server's own listeners are).
func hostAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // unknown: deny
	}
	for _, ad := range addrs {
		if n, ok := ad.(*net.IPNet); ok {
			if h, ok := netip.AddrFromSlice(n.IP); ok && h.Unmap() == a {
				return true
			}
		}
	}
	return false
}
