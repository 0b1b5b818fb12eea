// Package config reads codeexec's settings from CODEEXEC_* environment
// variables once, at start, into a Config the rest of the program is given.
// It must not know what the settings do: main maps them onto each package's
// own configuration.
package config

import (
	"encoding/hex"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Config is every setting of the server. Zero values are never used: Load
// fills defaults.
type Config struct {
	Port string

	// Auth.
	APIKeys      []string // accepted as X-API-Key, Bearer or Basic
	AuthNone     bool     // CODEEXEC_AUTH=none: no credentials required
	JWTPublicKey string   // PEM (EdDSA or RSA) for LibreChat-minted JWTs
	JWTSecret    string   // HS256 secret for JWTs
	JWTAudience  string
	JWTIssuer    string

	// Limits.
	MaxMemoryMB         int64
	MaxCPUSecs          int
	MaxExecutionSeconds int
	MaxOutputBytes      int64
	MaxDiskMB           int64
	MaxFileMB           int64 // per collected output file
	MaxOutputFiles      int
	MaxPids             int
	MaxUploadMB         int64
	MaxInputFiles       int
	DisableNetwork      bool
	MaxConcurrency      int
	MaxQueue            int
	QueueTimeout        time.Duration
	RateExec            RateLimit
	RateUpload          RateLimit
	RateDownload        RateLimit
	MetricsAddr         string
	RuntimeIdle         time.Duration
	MaxRuntimeSessions  int
	ShutdownGrace       time.Duration
	// MemoryBudgetMB is the server's whole memory (0: its cgroup's limit,
	// else the machine's); MemoryReserveMB of it stay with the server.
	MemoryBudgetMB  int64
	MemoryReserveMB int64
	PTCPause        time.Duration // programmatic tool calling: longest wait for tool results
	PTCLifetime     time.Duration // programmatic tool calling: longest run, pauses included

	// RuntimeSessionsPerCaller bounds one caller's live stateful sessions
	// (0: half of MaxRuntimeSessions).
	RuntimeSessionsPerCaller int

	// Storage.
	StorageBackend string // local, s3, gcs
	StorageDir     string
	S3Bucket       string
	S3Endpoint     string
	S3Region       string
	GCSBucket      string
	SessionTTL     time.Duration
	// Storage quotas (bytes; 0: none) and the local disk's free-space floor.
	QuotaPerCallerBytes int64
	QuotaTotalBytes     int64
	StorageMinFreeBytes int64
	// MaxRequestsPerCaller bounds one principal's requests in progress.
	MaxRequestsPerCaller int

	// Sandbox.
	Sandbox       string // native or gvisor
	AllowDegraded bool
	RunDir        string
	UIDBase       uint32 // 0: the sandbox's default
	RootFS        string
	// PoolPython is the number of warm Python templates (0: no warm pool);
	// PoolDefault is set when it was not configured.
	PoolPython  int
	PoolDefault bool
	// CompileCacheMB bounds the compiled-program cache (0: no cache).
	CompileCacheMB int64

	LogLevel string

	// Console serves the operator console at /console.
	Console bool

	// Network egress (CODEEXEC_NETWORK*): the mode (off, public,
	// allowlist; DisableNetwork is its "off"), the allowlist as written,
	// per-run caps, and the resolver the runs' DNS goes to ("": the host's).
	NetworkMode     string
	NetworkAllow    string
	NetworkMaxConns int
	NetworkKBps     int
	NetworkDNS      string
	// NetworkKeys is the network policy of particular API keys: key ID
	// (auth.KeyID) or "*" (every other key) -> policy as written.
	NetworkKeys map[string]string
}

// RateLimit is N requests per Window per caller; N == 0 means no limit.
type RateLimit struct {
	N      int
	Window time.Duration
}

// parseRate reads "N/window" (e.g. "20/30s"); "" or "0" is no limit.
func parseRate(v string) (RateLimit, error) {
	if v == "" || v == "0" {
		return RateLimit{}, nil
	}
	n, w, ok := strings.Cut(v, "/")
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || count < 0 {
		return RateLimit{}, fmt.Errorf("want N/window such as 20/30s, got %q", v)
	}
	window, err := time.ParseDuration(strings.TrimSpace(w))
	if err != nil || window <= 0 {
		return RateLimit{}, fmt.Errorf("want N/window such as 20/30s, got %q", v)
	}
	return RateLimit{N: count, Window: window}, nil
}

// setting describes one variable for Load and for `serve --help`.
type setting struct {
	name, def, help string
	aliases         []string
}

var settings = []setting{
	{name: "CODEEXEC_PORT", def: "8080", help: "listen port (else PORT, else 8080)", aliases: []string{"PORT"}},
	{name: "CODEEXEC_API_KEY", def: "", help: "API key(s), comma-separated; accepted as X-API-Key, Authorization: Bearer or HTTP Basic (http://KEY@host), compared in constant time (with no credential configured one is generated and printed at start)", aliases: []string{"CODE_API_KEY"}},
	{name: "CODEEXEC_AUTH", def: "", help: "none: serve without credentials (private networks only; a warning is logged); any other value is refused at start"},
	{name: "CODEEXEC_JWT_PUBLIC_KEY", def: "", help: "PEM public key (Ed25519 or RSA), or a path to one, verifying LibreChat's JWTs"},
	{name: "CODEEXEC_JWT_SECRET", def: "", help: "HS256 secret verifying JWTs"},
	{name: "CODEEXEC_JWT_AUDIENCE", def: "codeapi", help: "required JWT audience"},
	{name: "CODEEXEC_JWT_ISSUER", def: "librechat", help: "required JWT issuer"},
	{name: "CODEEXEC_MAX_MEMORY_MB", def: "512", help: "memory per execution (whole sandbox, no swap)"},
	{name: "CODEEXEC_MAX_CPU_SECS", def: "30", help: "CPU seconds per execution"},
	{name: "CODEEXEC_MAX_EXECUTION_SECONDS", def: "120", help: "wall-clock seconds per execution (cap of a request's timeout)"},
	{name: "CODEEXEC_MAX_OUTPUT_BYTES", def: "1048576", help: "stdout+stderr bytes per execution; more ends it with status output_limit"},
	{name: "CODEEXEC_MAX_DISK_MB", def: "256", help: "size of /mnt/data and of /tmp inside the sandbox"},
	{name: "CODEEXEC_MAX_FILE_MB", def: "50", help: "largest output file collected back"},
	{name: "CODEEXEC_MAX_OUTPUT_FILES", def: "50", help: "most output files collected back per execution"},
	{name: "CODEEXEC_MAX_PIDS", def: "128", help: "processes and threads per execution"},
	{name: "CODEEXEC_MAX_UPLOAD_MB", def: "150", help: "largest upload (LibreChat's own limit is 150)"},
	{name: "CODEEXEC_MAX_INPUT_FILES", def: "256", help: "most file refs per execution"},
	{name: "CODEEXEC_DISABLE_NETWORK", def: "true", help: "no network in the sandbox (loopback only, down); false without CODEEXEC_NETWORK means CODEEXEC_NETWORK=public"},
	{name: "CODEEXEC_NETWORK", def: "", help: "egress of the runs: off (default), public (any public address) or allowlist (CODEEXEC_NETWORK_ALLOW only); each networked run has its own network namespace served by the server, and loopback, private, link-local, metadata and this host's addresses are never reachable"},
	{name: "CODEEXEC_NETWORK_ALLOW", def: "", help: "with allowlist: comma-separated domains (pypi.org, *.pythonhosted.org: subdomains) and CIDRs or addresses; domains are matched on the runs' DNS questions and on TLS server names"},
	{name: "CODEEXEC_NETWORK_MAX_CONNECTIONS", def: "64", help: "connections (TCP, and UDP flows) one run may open; more are refused"},
	{name: "CODEEXEC_NETWORK_KBPS", def: "8192", help: "bandwidth of one run, KiB/s, both directions together"},
	{name: "CODEEXEC_NETWORK_DNS", def: "", help: "DNS server (host:port) answering the runs' allowed names (default: the host's resolver)"},
	{name: "CODEEXEC_NETWORK_KEYS", def: "", help: "network policy per API key, narrowing CODEEXEC_NETWORK: ID=POLICY entries separated by ';', ID being the key's first 12 hex digits of SHA-256 (printf %s \"$KEY\" | sha256sum | cut -c1-12) or * for every key not named, POLICY off, public or a comma-separated allowlist (e.g. *=off;3f9a1c2b0d11=public;77e0c1aa5b2f=pypi.org,files.pythonhosted.org)"},
	{name: "CODEEXEC_MAX_CONCURRENCY", def: "", help: "executions at once (default: number of CPUs)"},
	{name: "CODEEXEC_MAX_QUEUE", def: "64", help: "executions that may wait for a slot; more get 429"},
	{name: "CODEEXEC_QUEUE_TIMEOUT_SECONDS", def: "60", help: "longest wait for a slot before 429"},
	{name: "CODEEXEC_RATE_LIMIT_EXEC", def: "", help: "executions per caller, e.g. 20/30s (default: no limit)"},
	{name: "CODEEXEC_RATE_LIMIT_UPLOAD", def: "", help: "uploads per caller, e.g. 30/5m (default: no limit)"},
	{name: "CODEEXEC_RATE_LIMIT_DOWNLOAD", def: "", help: "downloads per caller, e.g. 60/1m (default: no limit)"},
	{name: "CODEEXEC_METRICS_ADDR", def: "", help: "separate listener for /metrics, without authentication (e.g. 127.0.0.1:9090; an address on every interface such as :9090 logs a warning); unset: /metrics on the main port, behind the API key"},
	{name: "CODEEXEC_SHUTDOWN_GRACE_SECONDS", def: "30", help: "on SIGTERM, how long in-flight executions may finish before they are killed"},
	{name: "CODEEXEC_MEMORY_BUDGET_MB", def: "", help: "memory of the whole server: executions, live stateful sessions and warm templates are admitted so that their limits never add up to more (default: the limit of the server's cgroup, else the machine's memory)"},
	{name: "CODEEXEC_MEMORY_RESERVE_MB", def: "256", help: "part of the memory budget kept for the server itself (heap, uploads, files it stages for runs)"},
	{name: "CODEEXEC_MAX_RUNTIME_SESSIONS", def: "8", help: "live stateful Python sessions (least recently used evicted beyond); 0 turns the stateful profile off"},
	{name: "CODEEXEC_MAX_RUNTIME_SESSIONS_PER_CALLER", def: "0", help: "live stateful sessions of one caller (JWT subject, or API key and LibreChat user); beyond, the caller's own least recently used one is evicted, never another caller's; 0 is half of CODEEXEC_MAX_RUNTIME_SESSIONS"},
	{name: "CODEEXEC_RUNTIME_IDLE_SECONDS", def: "1200", help: "a stateful session unused this long is closed (its files stay)"},
	{name: "CODEEXEC_PTC_PAUSE_SECONDS", def: "300", help: "programmatic tool calling: how long a run waits for tool results before it is ended"},
	{name: "CODEEXEC_PTC_MAX_LIFETIME_SECONDS", def: "1800", help: "programmatic tool calling: longest run, pauses included (the request's timeout counts sandbox time only)"},
	{name: "CODEEXEC_STORAGE_BACKEND", def: "local", help: "local, s3 or gcs"},
	{name: "CODEEXEC_STORAGE_DIR", def: "/tmp/codeexec", help: "directory of the local backend"},
	{name: "CODEEXEC_S3_BUCKET", def: "", help: "bucket of the s3 backend"},
	{name: "CODEEXEC_S3_ENDPOINT", def: "", help: "endpoint of an S3-compatible server (path-style)"},
	{name: "CODEEXEC_S3_REGION", def: "us-east-1", help: "region of the s3 backend"},
	{name: "CODEEXEC_GCS_BUCKET", def: "", help: "bucket of the gcs backend (Application Default Credentials)"},
	{name: "CODEEXEC_SESSION_TTL", def: "24h", help: "how long unused session files are kept"},
	{name: "CODEEXEC_QUOTA_PER_CALLER_MB", def: "5120", help: "storage one caller (a JWT subject, an API key, or all anonymous callers together) may fill with uploads and outputs until its files expire; beyond it uploads answer 507 and outputs are reported in artifact_truncation (reason quota); 0: no limit"},
	{name: "CODEEXEC_QUOTA_TOTAL_MB", def: "0", help: "storage all callers together may fill; 0: no limit (the local backend still keeps CODEEXEC_STORAGE_MIN_FREE_MB free)"},
	{name: "CODEEXEC_STORAGE_MIN_FREE_MB", def: "1024", help: "local backend: writes that would leave less free space on CODEEXEC_STORAGE_DIR's file system are refused (507); 0: no floor"},
	{name: "CODEEXEC_MAX_REQUESTS_PER_CALLER", def: "64", help: "requests one caller may have in progress at once (queued ones included); more get 429"},
	{name: "CODEEXEC_SANDBOX_ALLOW_DEGRADED", def: "false", help: "start even without usable cgroups (limits fall back to rlimits; /health says degraded)"},
	{name: "CODEEXEC_SANDBOX", def: "native", help: "sandbox backend: native (Linux namespaces) or gvisor (runsc, a user-space kernel)"},
	{name: "CODEEXEC_POOL_PYTHON", def: "", help: "warm sandboxes: Python with numpy, pandas and matplotlib imported, ~150 MB each, which also run every other single-step run (default: CODEEXEC_MAX_CONCURRENCY; the pool is shrunk at start, with a log line, to fit the memory budget; 0 disables)"},
	{name: "CODEEXEC_COMPILE_CACHE_MB", def: "256", help: "size of the cache of compiled programs (same source and toolchain: compiled once), under CODEEXEC_RUN_DIR; 0 disables"},
	{name: "CODEEXEC_RUN_DIR", def: "/run/codeexec", help: "runtime state: per-execution working directories"},
	{name: "CODEEXEC_UID_BASE", def: "", help: "first host uid of the sandboxes' uid ranges (default 0x70000000); give each container on one host its own, 0x4000000 apart"},
	{name: "CODEEXEC_ROOTFS", def: "", help: "runtime root for the sandbox (default: the host's /usr and /etc)"},
	{name: "CODEEXEC_LOG_LEVEL", def: "info", help: "debug, info, warn or error"},
	{name: "CODEEXEC_CONSOLE", def: "true", help: "serve the operator console at /console (its data behind the API key); false turns it off"},
	// Read by the container image's entrypoint (infra/codeexec/entrypoint.sh), not the server.
	{name: "CODEEXEC_ENTRYPOINT_PROC", def: "1", help: "container entrypoint: 0 keeps the runtime's masks over /proc (the sandbox then cannot mount its own /proc)"},
	{name: "CODEEXEC_ENTRYPOINT_CGROUPS", def: "1", help: "container entrypoint: 0 leaves the container's cgroup mount read-only (no per-run cgroups unless the runtime delegates them)"},
}

// Load reads the configuration through getenv.
func Load(getenv func(string) string) (*Config, error) {
	v := map[string]string{}
	for _, s := range settings {
		val := getenv(s.name)
		for _, a := range s.aliases {
			if val == "" {
				val = getenv(a)
			}
		}
		if val == "" {
			val = s.def
		}
		v[s.name] = strings.TrimSpace(val)
	}
	c := &Config{
		Port:           v["CODEEXEC_PORT"],
		JWTPublicKey:   v["CODEEXEC_JWT_PUBLIC_KEY"],
		JWTSecret:      v["CODEEXEC_JWT_SECRET"],
		JWTAudience:    v["CODEEXEC_JWT_AUDIENCE"],
		JWTIssuer:      v["CODEEXEC_JWT_ISSUER"],
		StorageBackend: strings.ToLower(v["CODEEXEC_STORAGE_BACKEND"]),
		StorageDir:     v["CODEEXEC_STORAGE_DIR"],
		S3Bucket:       v["CODEEXEC_S3_BUCKET"],
		S3Endpoint:     v["CODEEXEC_S3_ENDPOINT"],
		S3Region:       v["CODEEXEC_S3_REGION"],
		GCSBucket:      v["CODEEXEC_GCS_BUCKET"],
		Sandbox:        strings.ToLower(v["CODEEXEC_SANDBOX"]),
		RunDir:         v["CODEEXEC_RUN_DIR"],
		RootFS:         v["CODEEXEC_ROOTFS"],
		LogLevel:       v["CODEEXEC_LOG_LEVEL"],
	}
	for _, k := range strings.Split(v["CODEEXEC_API_KEY"], ",") {
		if k = strings.TrimSpace(k); k != "" {
			c.APIKeys = append(c.APIKeys, k)
		}
	}
	switch a := v["CODEEXEC_AUTH"]; a {
	case "":
	case "none":
		c.AuthNone = true
	default:
		return nil, fmt.Errorf("CODEEXEC_AUTH: unknown value %q: the only value is none (serve without credentials); leave it unset to require an API key or a JWT", a)
	}

	var errs []string
	num := func(name string, dst *int64, min int64) {
		n, err := strconv.ParseInt(v[name], 10, 64)
		if err != nil || n < min {
			errs = append(errs, fmt.Sprintf("%s: want an integer >= %d, got %q", name, min, v[name]))
			return
		}
		*dst = n
	}
	small := func(name string, dst *int, min int64) {
		var n int64
		num(name, &n, min)
		*dst = int(n)
	}
	boolean := func(name string, dst *bool) {
		b, err := strconv.ParseBool(v[name])
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: want true or false, got %q", name, v[name]))
			return
		}
		*dst = b
	}
	num("CODEEXEC_MAX_MEMORY_MB", &c.MaxMemoryMB, 16)
	small("CODEEXEC_MAX_CPU_SECS", &c.MaxCPUSecs, 1)
	small("CODEEXEC_MAX_EXECUTION_SECONDS", &c.MaxExecutionSeconds, 1)
	num("CODEEXEC_MAX_OUTPUT_BYTES", &c.MaxOutputBytes, 1024)
	num("CODEEXEC_MAX_DISK_MB", &c.MaxDiskMB, 1)
	num("CODEEXEC_MAX_FILE_MB", &c.MaxFileMB, 1)
	small("CODEEXEC_MAX_OUTPUT_FILES", &c.MaxOutputFiles, 1)
	small("CODEEXEC_MAX_PIDS", &c.MaxPids, 8)
	num("CODEEXEC_MAX_UPLOAD_MB", &c.MaxUploadMB, 1)
	small("CODEEXEC_MAX_INPUT_FILES", &c.MaxInputFiles, 1)
	boolean("CODEEXEC_DISABLE_NETWORK", &c.DisableNetwork)
	c.NetworkMode, c.NetworkAllow, c.NetworkDNS = strings.ToLower(v["CODEEXEC_NETWORK"]), v["CODEEXEC_NETWORK_ALLOW"], v["CODEEXEC_NETWORK_DNS"]
	switch c.NetworkMode {
	case "":
		c.NetworkMode = "off"
		if !c.DisableNetwork {
			c.NetworkMode = "public"
		}
	case "off", "public", "allowlist":
	default:
		errs = append(errs, fmt.Sprintf("CODEEXEC_NETWORK: want off, public or allowlist, got %q", v["CODEEXEC_NETWORK"]))
	}
	c.DisableNetwork = c.NetworkMode == "off"
	if c.NetworkMode == "allowlist" && strings.TrimSpace(c.NetworkAllow) == "" {
		errs = append(errs, "CODEEXEC_NETWORK=allowlist needs CODEEXEC_NETWORK_ALLOW (domains and CIDRs, comma-separated)")
	}
	if keys, err := parseNetworkKeys(v["CODEEXEC_NETWORK_KEYS"]); err != nil {
		errs = append(errs, "CODEEXEC_NETWORK_KEYS: "+err.Error())
	} else if len(keys) > 0 && c.NetworkMode == "off" {
		errs = append(errs, "CODEEXEC_NETWORK_KEYS narrows the deployment's policy: it needs CODEEXEC_NETWORK public or allowlist")
	} else {
		c.NetworkKeys = keys
	}
	small("CODEEXEC_NETWORK_MAX_CONNECTIONS", &c.NetworkMaxConns, 1)
	small("CODEEXEC_NETWORK_KBPS", &c.NetworkKBps, 1)
	boolean("CODEEXEC_SANDBOX_ALLOW_DEGRADED", &c.AllowDegraded)
	boolean("CODEEXEC_CONSOLE", &c.Console)
	if v["CODEEXEC_MAX_CONCURRENCY"] == "" {
		c.MaxConcurrency = runtime.NumCPU()
	} else {
		small("CODEEXEC_MAX_CONCURRENCY", &c.MaxConcurrency, 1)
	}
	if v["CODEEXEC_POOL_PYTHON"] == "" {
		c.PoolPython, c.PoolDefault = c.MaxConcurrency, true
	} else {
		small("CODEEXEC_POOL_PYTHON", &c.PoolPython, 0)
	}
	num("CODEEXEC_COMPILE_CACHE_MB", &c.CompileCacheMB, 0)
	for name, dst := range map[string]*int64{"CODEEXEC_QUOTA_PER_CALLER_MB": &c.QuotaPerCallerBytes,
		"CODEEXEC_QUOTA_TOTAL_MB": &c.QuotaTotalBytes, "CODEEXEC_STORAGE_MIN_FREE_MB": &c.StorageMinFreeBytes} {
		num(name, dst, 0)
		*dst <<= 20
	}
	small("CODEEXEC_MAX_REQUESTS_PER_CALLER", &c.MaxRequestsPerCaller, 1)
	small("CODEEXEC_MAX_QUEUE", &c.MaxQueue, 0)
	var secs int
	small("CODEEXEC_QUEUE_TIMEOUT_SECONDS", &secs, 1)
	c.QueueTimeout = time.Duration(secs) * time.Second
	small("CODEEXEC_SHUTDOWN_GRACE_SECONDS", &secs, 0)
	c.ShutdownGrace = time.Duration(secs) * time.Second
	for name, dst := range map[string]*RateLimit{"CODEEXEC_RATE_LIMIT_EXEC": &c.RateExec, "CODEEXEC_RATE_LIMIT_UPLOAD": &c.RateUpload, "CODEEXEC_RATE_LIMIT_DOWNLOAD": &c.RateDownload} {
		r, err := parseRate(v[name])
		if err != nil {
			errs = append(errs, name+": "+err.Error())
		}
		*dst = r
	}
	c.MetricsAddr = v["CODEEXEC_METRICS_ADDR"]
	if u := v["CODEEXEC_UID_BASE"]; u != "" {
		n, err := strconv.ParseUint(u, 0, 32)
		if err != nil || n < 0x10000000 {
			errs = append(errs, fmt.Sprintf("CODEEXEC_UID_BASE: want a uid of at least 0x10000000 (above every real user), got %q", u))
		}
		c.UIDBase = uint32(n)
	}
	if v["CODEEXEC_MEMORY_BUDGET_MB"] != "" {
		num("CODEEXEC_MEMORY_BUDGET_MB", &c.MemoryBudgetMB, 64)
	}
	num("CODEEXEC_MEMORY_RESERVE_MB", &c.MemoryReserveMB, 0)
	small("CODEEXEC_MAX_RUNTIME_SESSIONS", &c.MaxRuntimeSessions, 0)
	small("CODEEXEC_MAX_RUNTIME_SESSIONS_PER_CALLER", &c.RuntimeSessionsPerCaller, 0)
	small("CODEEXEC_RUNTIME_IDLE_SECONDS", &secs, 1)
	c.RuntimeIdle = time.Duration(secs) * time.Second
	small("CODEEXEC_PTC_PAUSE_SECONDS", &secs, 1)
	c.PTCPause = time.Duration(secs) * time.Second
	small("CODEEXEC_PTC_MAX_LIFETIME_SECONDS", &secs, 10)
	c.PTCLifetime = time.Duration(secs) * time.Second
	ttl, err := time.ParseDuration(v["CODEEXEC_SESSION_TTL"])
	if err != nil || ttl < time.Minute {
		errs = append(errs, fmt.Sprintf("CODEEXEC_SESSION_TTL: want a duration of at least 1m (e.g. 24h), got %q", v["CODEEXEC_SESSION_TTL"]))
	}
	c.SessionTTL = ttl
	if p, err := strconv.Atoi(c.Port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, fmt.Sprintf("CODEEXEC_PORT: want a port number, got %q", c.Port))
	}
	switch c.StorageBackend {
	case "local":
		if c.StorageDir == "" {
			errs = append(errs, "CODEEXEC_STORAGE_DIR must not be empty")
		}
	case "s3":
		if c.S3Bucket == "" {
			errs = append(errs, "CODEEXEC_S3_BUCKET is required with CODEEXEC_STORAGE_BACKEND=s3")
		}
	case "gcs":
		if c.GCSBucket == "" {
			errs = append(errs, "CODEEXEC_GCS_BUCKET is required with CODEEXEC_STORAGE_BACKEND=gcs")
		}
	default:
		errs = append(errs, fmt.Sprintf("CODEEXEC_STORAGE_BACKEND: want local, s3 or gcs, got %q", c.StorageBackend))
	}
	if c.Sandbox != "native" && c.Sandbox != "gvisor" {
		errs = append(errs, fmt.Sprintf("CODEEXEC_SANDBOX: want native or gvisor, got %q", c.Sandbox))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("configuration: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// PrintHelp writes the table of settings.
func PrintHelp(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	for _, s := range settings {
		name := s.name
		if len(s.aliases) > 0 {
			name += " (" + strings.Join(s.aliases, ", ") + ")"
		}
		def := s.def
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, def, s.help)
	}
	tw.Flush()
}

// PrintMarkdown writes the same table as PrintHelp in Markdown: the
// README's configuration table is this output (a test keeps them equal).
func PrintMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| Variable | Default | Meaning |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, s := range settings {
		name := "`" + s.name + "`"
		for _, a := range s.aliases {
			name += " (`" + a + "`)"
		}
		def := s.def
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", name, def, strings.ReplaceAll(s.help, "|", "\\|"))
	}
}

// parseNetworkKeys reads CODEEXEC_NETWORK_KEYS: ID=POLICY entries separated
// by ';'. The policies are checked by the network layer.
func parseNetworkKeys(v string) (map[string]string, error) {
	m := map[string]string{}
	for i, e := range strings.Split(v, ";") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		id, pol, ok := strings.Cut(e, "=")
		id, pol = strings.ToLower(strings.TrimSpace(id)), strings.TrimSpace(pol)
		if !ok || pol == "" {
			return nil, fmt.Errorf("entry %d: want ID=POLICY", i+1)
		}
		if id != "*" {
			if _, err := hex.DecodeString(id); err != nil || len(id) != 12 {
				return nil, fmt.Errorf("entry %d: the ID is the key's first 12 hex digits of SHA-256, or *", i+1)
			}
		}
		if _, dup := m[id]; dup {
			return nil, fmt.Errorf("entry %d: %s is given twice", i+1, id)
		}
		m[id] = pol
	}
	return m, nil
}
