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
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/codeexec/codeexec/internal/api"
	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/config"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/storage"
)

func main() {
	sandbox.MaybeInit() // the in-sandbox init re-executes this binary
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
				fmt.Fprint(stdout, "codeexec serve: settings, read from the environment:\n\n")
				config.PrintHelp(stdout)
				return nil
			}
		}
		if len(args) > 2 {
			return fmt.Errorf("serve: unexpected argument %q (settings are environment variables; see serve --help)", args[2])
		}
		return serve(ctx, getenv, stdout, stderr)
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
	})
	if err != nil {
		return err
	}

	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()

	box, err := sandbox.NewLinux(sandbox.LinuxConfig{
		RunDir: cfg.RunDir, Slots: cfg.MaxConcurrency, RootFS: cfg.RootFS, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	defer box.Close()

	eng := engine.New(store, box, engine.Limits{
		WallTime:       time.Duration(cfg.MaxExecutionSeconds) * time.Second,
		CPUTime:        time.Duration(cfg.MaxCPUSecs) * time.Second,
		MemoryBytes:    cfg.MaxMemoryMB << 20,
		Pids:           cfg.MaxPids,
		OutputBytes:    cfg.MaxOutputBytes,
		DiskBytes:      cfg.MaxDiskMB << 20,
		FileBytes:      cfg.MaxFileMB << 20,
		MaxOutputFiles: cfg.MaxOutputFiles,
		MaxInputFiles:  cfg.MaxInputFiles,
		Network:        !cfg.DisableNetwork,
	}, log)
	// Read toolchain versions now, not on the first request.
	go func() {
		for _, l := range lang.All() {
			eng.Version(l)
		}
	}()

	handler := api.NewServer(api.Deps{
		Engine: eng, Store: store, Box: box, Auth: authn, Log: log,
		Limits:     api.Limits{MaxUploadBytes: cfg.MaxUploadMB << 20},
		SessionTTL: cfg.SessionTTL,
	})
	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: an execution may legitimately take minutes.
	}
	go sweep(ctx, store, cfg.SessionTTL, log)

	log.Info("listening", "addr", ln.Addr().String(), "storage", cfg.StorageBackend,
		"auth", authMode(cfg), "isolation", box.Describe())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
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
		return storage.OpenLocal(cfg.StorageDir)
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
