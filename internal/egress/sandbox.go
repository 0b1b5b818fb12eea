package egress

import (
	"context"
	"io"

	"github.com/codeexec/codeexec/internal/sandbox"
)

type callerKey struct{}

// WithCaller attaches the caller's policy (from its JWT claim) to ctx; runs
// started with it are held to the deployment's policy narrowed by it.
func WithCaller(ctx context.Context, p *Policy) context.Context {
	if p == nil {
		return ctx
	}
	return context.WithValue(ctx, callerKey{}, p)
}

func callerFrom(ctx context.Context) *Policy {
	p, _ := ctx.Value(callerKey{}).(*Policy)
	return p
}

type notesKey struct{}

// WithNotes asks for a networked run's denials while it runs: give is
// called before the run starts with its Run's TakeNotes. For a live session,
// whose one run answers many calls, each with its own stderr.
func WithNotes(ctx context.Context, give func(take func() string)) context.Context {
	return context.WithValue(ctx, notesKey{}, give)
}

// Sandbox gives every networked run that a sandbox.Sandbox runs its own
// network under svc's policy, and appends what was denied to its stderr.
type Sandbox struct {
	sandbox.Sandbox
	svc *Service
}

// Wrap returns box with networked runs served by svc.
func Wrap(box sandbox.Sandbox, svc *Service) *Sandbox { return &Sandbox{Sandbox: box, svc: svc} }

// Run runs spec; a networked spec without its own Net gets one, unless the
// caller's policy is off, which takes the network away.
func (s *Sandbox) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	if !spec.Limits.Network || spec.Net != nil {
		return s.Sandbox.Run(ctx, spec)
	}
	caller := callerFrom(ctx)
	if caller != nil && !caller.On() {
		spec.Limits.Network = false
		return s.Sandbox.Run(ctx, spec)
	}
	run := s.svc.NewRun(caller)
	if give, ok := ctx.Value(notesKey{}).(func(func() string)); ok {
		give(run.TakeNotes)
	}
	spec.Net = run
	res, err := s.Sandbox.Run(ctx, spec)
	run.Close()
	if notes := run.Notes(); notes != "" && spec.Stderr != nil {
		io.WriteString(spec.Stderr, notes)
	}
	return res, err
}

// Describe adds the network policy to the sandbox's description.
func (s *Sandbox) Describe() sandbox.Isolation {
	d := s.Sandbox.Describe()
	d.Egress = s.svc.Describe()
	return d
}
