// Command codeexec is a self-hosted code-execution service that serves
// LibreChat's Code Interpreter API. `codeexec serve` runs the server.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/api"
	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/config"
	"github.com/codeexec/codeexec/internal/console"
	"github.com/codeexec/codeexec/internal/doctor"
	"github.com/codeexec/codeexec/internal/egress"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/metrics"
	"github.com/codeexec/codeexec/internal/ptc"
	"github.com/codeexec/codeexec/internal/runtime"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/gvisor"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/native"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/warm"
	"github.com/codeexec/codeexec/internal/storage"
	"github.com/codeexec/codeexec/internal/tracing"
)

func main() {
	nsinit.MaybeInit() // the in-sandbox init re-executes this binary
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "codeexec:", err)
		os.Exit(1)
	}
}

const usage = `codeexec: a sandboxed code-execution service for LibreChat

Usage:
  codeexec serve     run the HTTP server (settings from CODEEXEC_* variables)
  codeexec doctor    check that this host can run the sandbox, and how to fix it
  codeexec help      this text; "codeexec serve --help" lists the settings
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	switch args[1] {
	case "serve":
		for _, a := range args[2:] {
			if a == "-h" || a == "--help" || a == "help" {
				if slices.Contains(args[2:], "--markdown") { // the README's table
					config.PrintMarkdown(stdout)
					return nil
				}
				fmt.Fprint(stdout, "codeexec serve: settings, read from the environment:\n\n")
				config.PrintHelp(stdout)
				return nil
			}
		}
		if len(args) > 2 {
			return fmt.Errorf("serve: unexpected argument %q (settings are environment variables; see serve --help)", args[2])
		}
		return serve(ctx, getenv, stdout, stderr)
	case "doctor":
		cfg, err := config.Load(getenv)
		if err != nil {
			return err
		}
		if !doctor.Print(stdout, doctor.Run(ctx, doctor.Options{RunDir: cfg.RunDir, RootFS: cfg.RootFS, Network: cfg.NetworkMode, Sandbox: cfg.Sandbox,
			Open: openNative, WarmCompiler: warm.Compiler})) {
			return errors.New("doctor: a required layer is missing")
		}
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[1])
	}
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

func serve(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	netPolicy, err := networkPolicy(cfg)
	if err != nil {
		return err
	}
	budget, err := memoryBudget(cfg, log)
	if err != nil {
		return err
	}
	shutdownTracing, err := tracing.Setup(ctx, getenv, "codeexec")
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownTracing(fctx)
	}()

	if len(cfg.APIKeys) == 0 && !cfg.AuthNone && cfg.JWTPublicKey == "" && cfg.JWTSecret == "" {
		var b [24]byte
		rand.Read(b[:])
		key := base64.RawURLEncoding.EncodeToString(b[:])
		cfg.APIKeys = []string{key}
		fmt.Fprintf(stdout, "\nNo CODEEXEC_API_KEY set: generated one for this run.\n  CODEEXEC_API_KEY=%s\nPut it in LibreChat's .env as LIBRECHAT_CODE_API_KEY.\n\n", key)
	}
	if cfg.AuthNone {
		log.Warn("CODEEXEC_AUTH=none: requests without credentials are accepted; expose this server only on a private network")
	}
	authn, err := auth.New(auth.Config{
		Keys: cfg.APIKeys, None: cfg.AuthNone,
		JWTPublicKey: cfg.JWTPublicKey, JWTSecret: cfg.JWTSecret,
		Audience: cfg.JWTAudience, Issuer: cfg.JWTIssuer,
		KeyNetwork: cfg.NetworkKeys,
	})
	if err != nil {
		return err
	}

	adm := admission.New(cfg.MaxConcurrency, cfg.MaxQueue, cfg.QueueTimeout)
	running := func() float64 { return float64(adm.Stats().Running) }
	mets := metrics.New(running, func() float64 { return float64(adm.Stats().Queued) }, running)

	backend, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer backend.Close()
	// Quotas count every write of the server (uploads, outputs, records);
	// usage is counted from the store by the first sweep, just below.
	quota := storage.NewQuota(backend, storage.QuotaConfig{
		PerOwner: cfg.QuotaPerCallerBytes, Total: cfg.QuotaTotalBytes,
		Refused: func(reason string) { mets.StorageRefused.WithLabelValues(reason).Inc() },
	})
	mets.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "codeexec_storage_used_bytes", Help: "Bytes of stored files (all callers), as the quotas count them.",
	}, func() float64 { return float64(quota.Used()) }))
	var store storage.Store = quota

	lc := host.Config{
		// Beside the admitted executions: the readiness canary and every
		// live stateful session hold a slot of their own.
		RunDir: cfg.RunDir, Slots: min(cfg.MaxConcurrency+1+cfg.MaxRuntimeSessions, host.MaxSlots), RootFS: cfg.RootFS, Logger: log,
		AllowDegraded: cfg.AllowDegraded, UIDBase: cfg.UIDBase, Etc: lang.Etc(),
	}
	registerBudget(mets.Registry, budget)
	var wc warm.Config
	if cfg.Sandbox != "gvisor" {
		wc = warmConfig(cfg, lc.Slots)
		wc.Python = fitWarmPool(budget, cfg, wc.Python, log)
	}
	box, err := newSandbox(cfg.Sandbox, lc, wc)
	if err != nil {
		return fmt.Errorf("sandbox: %w (run `codeexec doctor` to see what this host lacks)", err)
	}
	defer box.Close()
	if !cfg.DisableNetwork {
		box = egress.Wrap(box, newEgress(cfg, netPolicy, mets, log))
	}

	eng := engine.New(mets.Store(store), box, engineLimits(cfg), log)
	if cfg.CompileCacheMB > 0 {
		// Per process (instances may share RunDir), removed on shutdown.
		if err := os.MkdirAll(cfg.RunDir, 0o711); err != nil {
			return err
		}
		ccDir, err := os.MkdirTemp(cfg.RunDir, "compile-cache-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(ccDir)
		cc, err := engine.OpenCompileCache(ccDir, cfg.CompileCacheMB<<20)
		if err != nil {
			return err
		}
		eng.SetCompileCache(cc)
	}
	// Read toolchain versions now, not on the first request.
	go func() {
		for _, l := range lang.All() {
			eng.Version(l)
		}
	}()

	var live *runtime.Manager
	if cfg.MaxRuntimeSessions > 0 {
		live = runtime.New(eng, runtime.Config{IdleTimeout: cfg.RuntimeIdle, MaxSessions: cfg.MaxRuntimeSessions,
			PerCaller: cfg.RuntimeSessionsPerCaller, Log: log,
			Memory: budget, MemoryWait: cfg.QueueTimeout})
		defer live.Close()
		// An idle session is closed (its files are kept) before a new run waits.
		budget.SetEvictor(live.EvictIdle)
		mets.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "codeexec_runtime_sessions_live", Help: "Live stateful sessions.",
		}, func() float64 { return float64(live.Len()) }))
	}
	progs := ptc.New(eng, store, ptc.Config{PauseTimeout: cfg.PTCPause, MaxLifetime: cfg.PTCLifetime, Log: log})
	defer progs.Close()
	rate := func(r config.RateLimit) *admission.Limiter {
		return admission.NewLimiter(admission.RateLimit{N: r.N, Window: r.Window})
	}
	var cons *console.Console
	if cfg.Console {
		cons = newConsole(cfg, box, adm, live)
	}
	handler := api.NewServer(api.Deps{
		Engine: eng, Store: mets.Store(store), Box: box, Auth: authn, Log: log,
		Limits:     api.Limits{MaxUploadBytes: cfg.MaxUploadMB << 20},
		SessionTTL: cfg.SessionTTL,
		Admission:  adm,
		Budget:     budget, MemoryWait: cfg.QueueTimeout,
		Quota:       quota,
		MaxInFlight: cfg.MaxRequestsPerCaller,
		Rates:       api.Rates{Exec: rate(cfg.RateExec), Upload: rate(cfg.RateUpload), Download: rate(cfg.RateDownload)},
		Metrics:     mets, MetricsRoute: cfg.MetricsAddr == "",
		Runtime: live,
		Console: cons,
		PTC:     progs,
	})
	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return err
	}
	// Requests' contexts derive from base: cancelling it after the grace
	// period kills executions still running at shutdown.
	base, killInFlight := context.WithCancel(context.WithoutCancel(ctx))
	defer killInFlight()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		// No ReadTimeout: a deadline left on the connection cancels the
		// request's context when it passes, mid-execution. Bodies get
		// their own deadlines from the handlers (JSON 2 min, uploads 30).
		IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return base },
		// No WriteTimeout: an execution may legitimately take minutes.
	}
	var msrv *http.Server
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		if host, _, _ := net.SplitHostPort(cfg.MetricsAddr); host == "" || net.ParseIP(host).IsUnspecified() {
			log.Warn("CODEEXEC_METRICS_ADDR listens on every interface and /metrics there has no authentication; bind it to a private address (e.g. 127.0.0.1:9090) or keep the port off public networks", "addr", cfg.MetricsAddr)
		}
		msrv = &http.Server{Handler: mets.Handler(), ReadHeaderTimeout: 10 * time.Second}
		log.Info("metrics listening", "addr", mln.Addr().String())
		go msrv.Serve(mln)
		defer msrv.Close()
	}
	go sweep(ctx, store, cfg.SessionTTL, log)

	log.Info("listening", "addr", ln.Addr().String(), "storage", cfg.StorageBackend,
		"auth", authMode(cfg), "concurrency", cfg.MaxConcurrency, "isolation", box.Describe())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}

	// Drain: new requests get 503 while in-flight executions have the grace
	// period; then whatever still runs is killed and every sandbox cleaned.
	log.Info("shutting down", "grace", cfg.ShutdownGrace.String())
	handler.Drain()
	deadline := time.Now().Add(cfg.ShutdownGrace)
	for st := adm.Stats(); st.Running+st.Queued > 0 && time.Now().Before(deadline); st = adm.Stats() {
		time.Sleep(50 * time.Millisecond)
	}
	if st := adm.Stats(); st.Running+st.Queued > 0 {
		log.Warn("grace period over: killing in-flight executions", "running", st.Running, "queued", st.Queued)
	}
	killInFlight()
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	log.Info("stopped")
	return nil
}

func authMode(cfg *config.Config) string {
	var m []string
	if len(cfg.APIKeys) > 0 {
		m = append(m, "api-key")
	}
	if cfg.JWTPublicKey != "" || cfg.JWTSecret != "" {
		m = append(m, "jwt")
	}
	if cfg.AuthNone {
		m = append(m, "none")
	}
	return strings.Join(m, "+")
}

func openStore(ctx context.Context, cfg *config.Config) (storage.Store, error) {
	switch cfg.StorageBackend {
	case "local":
		return storage.OpenLocalWith(cfg.StorageDir, cfg.StorageMinFreeBytes)
	default:
		return storage.OpenBucket(ctx, storage.BucketConfig{
			Backend: cfg.StorageBackend, S3Bucket: cfg.S3Bucket, S3Endpoint: cfg.S3Endpoint,
			S3Region: cfg.S3Region, GCSBucket: cfg.GCSBucket,
		})
	}
}

// sweep deletes expired session files periodically.
func sweep(ctx context.Context, store storage.Store, ttl time.Duration, log *slog.Logger) {
	t := time.NewTicker(min(ttl/4, 10*time.Minute))
	defer t.Stop()
	for {
		if n, err := store.Sweep(ctx, time.Now().Add(-ttl)); err != nil && ctx.Err() == nil {
			log.Warn("sweeping expired files", "err", err)
		} else if n > 0 {
			log.Info("swept expired files", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// newSandbox builds the CODEEXEC_SANDBOX backend: "gvisor" runs the code
// under runsc, anything else (config allows only "native") natively, wrapped
// by the warm pool (which wc may leave off).
func newSandbox(backend string, lc host.Config, wc warm.Config) (sandbox.Sandbox, error) {
	if backend == "gvisor" {
		g, err := gvisor.New(gvisor.Config{Config: lc})
		if err != nil {
			return nil, err
		}
		return g, nil
	}
	l, err := native.New(lc)
	if err != nil {
		return nil, err
	}
	p, err := warm.New(l, wc)
	if err != nil {
		l.Close()
		return nil, err
	}
	return p, nil
}

// openNative starts the native backend alone, for doctor's end-to-end run.
func openNative(lc host.Config) (sandbox.Sandbox, error) { return native.New(lc) }

// warmConfig is the warm Python pool: its templates serve the specs the
// engine makes for the language the table gives the "python" template
// (its interpreter, its environment, lang's preload and import scan).
func warmConfig(cfg *config.Config, slots int) warm.Config {
	py, ok := lang.WarmLanguage("python")
	n := min(cfg.PoolPython, (host.MaxSlots-slots)/warm.TemplatesPerSlot)
	if !ok || n <= 0 {
		return warm.Config{}
	}
	return warm.Config{
		Python: n, Template: py.Warm, Interpreter: py.Run[0], Env: engine.StepEnv(py),
		Preload: lang.PythonPreload, ImportsBeyond: lang.PythonImportsBeyond,
		// The engine's limits: parked children are made with them (a
		// cgroup, /tmp sized for the disk limit) and need no change per run.
		Limits: engineLimits(cfg).Sandbox(0),
	}
}

// engineLimits are the configured limits of every execution; the engine
// maps them to the sandbox's (engine.Limits.Sandbox).
func engineLimits(cfg *config.Config) engine.Limits {
	return engine.Limits{
		WallTime:         time.Duration(cfg.MaxExecutionSeconds) * time.Second,
		CPUTime:          time.Duration(cfg.MaxCPUSecs) * time.Second,
		MemoryBytes:      cfg.MaxMemoryMB << 20,
		Pids:             cfg.MaxPids,
		OutputBytes:      cfg.MaxOutputBytes,
		DiskBytes:        cfg.MaxDiskMB << 20,
		CollectFileBytes: cfg.MaxFileMB << 20,
		MaxOutputFiles:   cfg.MaxOutputFiles,
		MaxInputFiles:    cfg.MaxInputFiles,
		Network:          !cfg.DisableNetwork,
	}
}

// networkPolicy is the deployment's egress policy.
func networkPolicy(cfg *config.Config) (egress.Policy, error) {
	pol, err := egress.ParsePolicy(cfg.NetworkMode, cfg.NetworkAllow)
	if err != nil {
		return pol, fmt.Errorf("configuration: CODEEXEC_NETWORK_ALLOW: %w", err)
	}
	for _, id := range slices.Sorted(maps.Keys(cfg.NetworkKeys)) {
		if _, err := egress.ParseCaller(cfg.NetworkKeys[id]); err != nil {
			return pol, fmt.Errorf("configuration: CODEEXEC_NETWORK_KEYS: %s: %w", id, err)
		}
	}
	return pol, nil
}

// newEgress is the per-run network service under the deployment's policy.
func newEgress(cfg *config.Config, pol egress.Policy, mets *metrics.Metrics, log *slog.Logger) *egress.Service {
	var res *net.Resolver
	if cfg.NetworkDNS != "" {
		addr := cfg.NetworkDNS
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "53")
		}
		res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	log.Info("network on: each run gets its own network under the egress policy", "mode", pol.Mode, "allow", cfg.NetworkAllow,
		"max_connections", cfg.NetworkMaxConns, "kbps", cfg.NetworkKBps, "key_policies", len(cfg.NetworkKeys))
	return egress.New(egress.Config{
		Policy: pol, MaxConns: cfg.NetworkMaxConns, BytesPerSec: cfg.NetworkKBps << 10, Resolver: res,
		Denied: func(reason string) { mets.NetworkDenied.WithLabelValues(reason).Inc() }, Log: log,
	})
}
