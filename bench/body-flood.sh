#!/usr/bin/env bash
# Measures the server's memory under a queued flood of large /exec bodies
# (issue #18): one slot, held by a sleeping run, and N concurrent requests
# of SIZE_MB each waiting for it. Prints the server's VmRSS before and its
# peak (VmHWM) after the flood is queued. Needs root (the sandbox).
# Measured 2026-12-04 (N=64, SIZE_MB=49, 2 vCPU): before #18 peak RSS 4.9 GB;
# after, 53 MB with all 64 queued (46 MB idle).
# Usage: bench/body-flood.sh [path/to/codeexec] (default: builds ./cmd/codeexec)
set -euo pipefail
N=${N:-64}
SIZE_MB=${SIZE_MB:-50}
bin=${1:-}
work=$(mktemp -d)
chmod 711 "$work" # the sandbox's init, an unprivileged uid, traverses it
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
if [ -z "$bin" ]; then
  go build -o "$work/codeexec" ./cmd/codeexec
  bin=$work/codeexec
fi
port=$((20000 + RANDOM % 20000))
key=flood-key-0123456789
python3 - "$work/body.json" "$SIZE_MB" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write('{"lang":"bash","code":"echo ran","padding":"')
    f.write("x" * (int(sys.argv[2]) << 20))
    f.write('"}')
PY
CODEEXEC_PORT=$port CODEEXEC_API_KEY=$key CODEEXEC_MAX_CONCURRENCY=1 CODEEXEC_MAX_QUEUE=$N \
  CODEEXEC_QUEUE_TIMEOUT_SECONDS=120 CODEEXEC_POOL_PYTHON=0 CODEEXEC_MAX_REQUESTS_PER_CALLER=$((N + 8)) \
  CODEEXEC_MAX_RUNTIME_SESSIONS=0 CODEEXEC_STORAGE_DIR=$work/store CODEEXEC_RUN_DIR=$work/run \
  CODEEXEC_CONSOLE=false CODEEXEC_LOG_LEVEL=error "$bin" serve >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs "localhost:$port/health" >/dev/null && break; sleep 0.1; done
rss() { awk -v k="$1:" '$1==k {print $2}' /proc/$pid/status; }
curl -s -H "X-API-Key: $key" -H 'Content-Type: application/json' -d '{"lang":"bash","code":"sleep 40"}' "localhost:$port/exec" >/dev/null &
hold=$!
sleep 1
before=$(rss VmRSS)
for _ in $(seq "$N"); do
  curl -s -o /dev/null -H "X-API-Key: $key" -H 'Content-Type: application/json' --data-binary @"$work/body.json" "localhost:$port/exec" &
done
# Wait until every request is queued (the queue depth metric), then a little.
for _ in $(seq 300); do
  q=$(curl -s -H "X-API-Key: $key" "localhost:$port/metrics" | awk '$1=="codeexec_queue_depth" {print $2}')
  [ "${q:-0}" -ge "$N" ] && break
  sleep 0.1
done
sleep 3
curl -s -H "X-API-Key: $key" "localhost:$port/metrics" | grep -E "^codeexec_(queue_depth|executions_running|rejected)" >&2 || true
echo "queued=${q:-?} N=$N size=${SIZE_MB}MiB rss_before=${before}kB rss_now=$(rss VmRSS)kB rss_peak=$(rss VmHWM)kB"
kill $hold 2>/dev/null || true
