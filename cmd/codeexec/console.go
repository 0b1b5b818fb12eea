package main

import (
	"context"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/config"
	"github.com/codeexec/codeexec/internal/console"
	"github.com/codeexec/codeexec/internal/doctor"
	"github.com/codeexec/codeexec/internal/runtime"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/warm"
)

// newConsole gives the operator console what it reports: the sandbox's
// isolation, storage, admission's load, the limits and doctor's host
// checks (without its sandboxed run: this server's sandbox is the proof).
func newConsole(cfg *config.Config, box sandbox.Sandbox, adm *admission.Controller, live *runtime.Manager) *console.Console {
	storage := cfg.StorageBackend
	switch cfg.StorageBackend {
	case "local":
		storage += " " + cfg.StorageDir
	case "s3":
		storage += " " + cfg.S3Bucket
	case "gcs":
		storage += " " + cfg.GCSBucket
	}
	c := console.Config{
		Isolation: func() any { return box.Describe() },
		Storage:   storage,
		Load: func() map[string]any {
			st := adm.Stats()
			return map[string]any{"running": st.Running, "queued": st.Queued, "concurrency": st.Concurrency, "queue_cap": st.QueueCap}
		},
		Limits: map[string]any{
			"memory_mb": cfg.MaxMemoryMB, "cpu_seconds": cfg.MaxCPUSecs, "wall_seconds": cfg.MaxExecutionSeconds,
			"output_bytes": cfg.MaxOutputBytes, "disk_mb": cfg.MaxDiskMB, "file_mb": cfg.MaxFileMB,
			"pids": cfg.MaxPids, "upload_mb": cfg.MaxUploadMB, "network": !cfg.DisableNetwork,
			"sandbox": cfg.Sandbox, "warm_python_templates": cfg.PoolPython, "compile_cache_mb": cfg.CompileCacheMB,
		},
		Findings: func(ctx context.Context) []console.Finding {
			var out []console.Finding
			for _, c := range doctor.Run(ctx, doctor.Options{RunDir: cfg.RunDir, RootFS: cfg.RootFS, SkipRun: true, Network: cfg.NetworkMode, Sandbox: cfg.Sandbox,
				WarmCompiler: warm.Compiler}) {
				out = append(out, console.Finding{Name: c.Name, OK: c.OK, Required: c.Required, Detail: c.Detail, Fix: c.Fix})
			}
			return out
		},
	}
	if live != nil {
		c.RuntimeSessions = live.Len
	}
	return console.New(c)
}
