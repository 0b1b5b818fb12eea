#!/usr/bin/env bash
# Runs `codeexec serve` for `make run`. Without any credentials configured it
# creates an API key once (kept in .codeexec/api-key) and prints it, so that
# LibreChat's .env can be written before the server is restarted.
set -euo pipefail
bin=${1:-bin/codeexec}
if [[ -z "${CODEEXEC_API_KEY:-}${CODE_API_KEY:-}${CODEEXEC_JWT_PUBLIC_KEY:-}${CODEEXEC_JWT_SECRET:-}" && "${CODEEXEC_AUTH:-}" != none ]]; then
  mkdir -p .codeexec
  if [[ ! -s .codeexec/api-key ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > .codeexec/api-key)
  fi
  CODEEXEC_API_KEY=$(cat .codeexec/api-key)
  export CODEEXEC_API_KEY
  port=${CODEEXEC_PORT:-${PORT:-8080}}
  cat <<MSG
codeexec API key (kept in .codeexec/api-key):

  $CODEEXEC_API_KEY

LibreChat .env:
  LIBRECHAT_CODE_API_KEY=$CODEEXEC_API_KEY
  LIBRECHAT_CODE_BASEURL=http://localhost:$port

Try it:
  curl -s -H "X-API-Key: $CODEEXEC_API_KEY" -H 'Content-Type: application/json' \\
    -d '{"lang":"py","code":"print(6*7)"}' http://localhost:$port/exec

MSG
fi
exec "$bin" serve
