// Package metrics holds codeexec's Prometheus collectors, registered on a
// registry of their own so that tests can create as many as they like. It
// must not know what it counts: callers record, it exposes.
package metrics

import (
	"net/http"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the server's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // route, code
	Executions      *prometheus.HistogramVec // language, status: seconds
	QueueWait       prometheus.Histogram     // seconds
	Rejected        *prometheus.CounterVec   // reason: queue_full, rate_limited
	SandboxFailures prometheus.Counter
	BytesStored     prometheus.Counter
	StorageErrors   prometheus.Counter
	// StorageRefused counts writes refused by a quota, by reason: owner,
	// total, disk (never by principal: the label set stays bounded).
	StorageRefused *prometheus.CounterVec
	NetworkDenied  *prometheus.CounterVec // reason
}

// New creates and registers the collectors. running and queued report the
// admission controller's current numbers, live the sandboxes in use.
func New(running, queued, live func() float64) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_http_requests_total", Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		Executions: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "codeexec_execution_duration_seconds", Help: "Wall time of executions by language and status.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"language", "status"}),
		QueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "codeexec_queue_wait_seconds", Help: "Time executions waited for a slot.",
			Buckets: []float64{.001, .01, .05, .1, .5, 1, 5, 10, 30, 60},
		}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_rejected_total", Help: "Requests turned away with 429, by reason.",
		}, []string{"reason"}),
		SandboxFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "codeexec_sandbox_failures_total", Help: "Executions the sandbox itself failed to carry out.",
		}),
		BytesStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "codeexec_stored_bytes_total", Help: "Bytes written to storage (uploads and outputs).",
		}),
		StorageErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "codeexec_storage_errors_total", Help: "Storage operations that failed.",
		}),
		StorageRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_storage_refused_total", Help: "Writes refused by a storage quota or the disk's free-space floor, by reason (owner, total, disk).",
		}, []string{"reason"}),
		NetworkDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_network_denied_total", Help: "Connections and DNS lookups of runs denied by the egress policy, by reason.",
		}, []string{"reason"}),
	}
	r.MustRegister(m.StorageRefused, m.NetworkDenied)
	r.MustRegister(m.Requests, m.Executions, m.QueueWait, m.Rejected, m.SandboxFailures, m.BytesStored, m.StorageErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "codeexec_executions_running", Help: "Executions running now."}, running),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "codeexec_queue_depth", Help: "Executions waiting for a slot."}, queued),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "codeexec_sandboxes_live", Help: "Sandboxes alive now."}, live),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	return m
}

func buildInfo() prometheus.Collector {
	version, goVersion := "devel", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				version = s.Value[:12]
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "codeexec_build_info", Help: "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
