package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/config"
)

// warmSlotBytes is what one warm slot holds: a template with numpy, pandas
// and matplotlib preloaded (~150 MB), two lean ones (~13 MB each) and their
// parked children's private pages. Measured by TestMemoryBudgetHolds.
const warmSlotBytes = 200 << 20

// memoryBudget is the server's memory budget: CODEEXEC_MEMORY_BUDGET_MB,
// else the memory limit of the cgroup the server runs in, else the
// machine's memory. Start fails when not even one execution fits.
func memoryBudget(cfg *config.Config, log *slog.Logger) (*admission.Budget, error) {
	total, source := cfg.MemoryBudgetMB<<20, "CODEEXEC_MEMORY_BUDGET_MB"
	if total == 0 {
		limit, file, err := admission.CgroupMemoryLimit("/sys/fs/cgroup", "/proc/self/cgroup")
		if err != nil {
			log.Warn("reading the cgroup's memory limit", "err", err)
		}
		total, source = limit, file
	}
	if total == 0 {
		total, source = memTotal(), "/proc/meminfo MemTotal"
	}
	reserve := cfg.MemoryReserveMB << 20
	b := admission.NewBudget(total, reserve)
	exec := cfg.MaxMemoryMB << 20
	if b.Available() < exec {
		return nil, fmt.Errorf("memory budget: %d MiB (%s) less CODEEXEC_MEMORY_RESERVE_MB=%d leaves %d MiB, less than one execution's CODEEXEC_MAX_MEMORY_MB=%d: give the server more memory or lower CODEEXEC_MAX_MEMORY_MB",
			total>>20, source, cfg.MemoryReserveMB, b.Available()>>20, cfg.MaxMemoryMB)
	}
	fits := b.Available() / exec
	log.Info("memory budget", "total_mb", total>>20, "source", source, "reserve_mb", cfg.MemoryReserveMB,
		"execution_mb", cfg.MaxMemoryMB, "executions_that_fit", fits)
	if want := int64(cfg.MaxConcurrency + cfg.MaxRuntimeSessions); fits < want {
		log.Warn("the memory budget holds fewer executions and stateful sessions than CODEEXEC_MAX_CONCURRENCY + CODEEXEC_MAX_RUNTIME_SESSIONS: beyond it runs wait, idle sessions are evicted first",
			"fit", fits, "configured", want)
	}
	return b, nil
}

// fitWarmPool takes the warm templates' share of the budget and returns how
// many warm slots it holds: the configured number, shrunk (and logged) so
// that one execution always fits beside them and, when the pool is left at
// its default, so that they take at most a quarter of the budget.
func fitWarmPool(b *admission.Budget, cfg *config.Config, n int, log *slog.Logger) int {
	if n <= 0 {
		return 0
	}
	fit := (b.Available() - cfg.MaxMemoryMB<<20) / warmSlotBytes
	why := "one execution must fit beside the templates"
	if q := b.Available() / 4 / warmSlotBytes; cfg.PoolDefault && q < fit {
		fit, why = q, "by default the templates take at most a quarter of the memory budget"
	}
	if int64(n) > fit {
		log.Warn("warm pool shrunk to fit the memory budget", "configured", n, "size", fit,
			"template_mb", warmSlotBytes>>20, "budget_mb", b.Available()>>20, "why", why)
		n = int(max(fit, 0))
	}
	if n > 0 {
		if _, ok := b.TryTake(admission.KindWarm, int64(n)*warmSlotBytes); !ok {
			return 0 // cannot happen: nothing else holds memory at start
		}
	}
	return n
}

// registerBudget exports the budget and its use.
func registerBudget(r *prometheus.Registry, b *admission.Budget) {
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "codeexec_memory_budget_bytes", Help: "The server's memory budget less its reserve: what executions, stateful sessions and warm templates may hold.",
	}, func() float64 { return float64(b.Available()) }))
	for _, kind := range []string{admission.KindExec, admission.KindSession, admission.KindWarm} {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "codeexec_memory_budget_held_bytes", Help: "Memory limits held against the budget, by kind.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(b.Stats().Held[kind]) }))
	}
}

// memTotal is the machine's memory, for a server whose cgroup has no limit.
func memTotal() int64 {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
