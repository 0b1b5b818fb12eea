#!/usr/bin/env bash
# docker-serve.sh serve: stands in for the codeexec binary, running `codeexec serve` in the
# image under test instead. TestImage uses it for its own checks and hands it to the
# LibreChat client end-to-end test (test/e2e) as CODEEXEC_E2E_BIN, so that test drives the
# container exactly as it drives a binary: the CODEEXEC_* settings it exports are passed to
# the container (but its host paths for run and storage directories: the image's own are
# used), SIGTERM reaches the server (docker run forwards signals) and the exit status is
# the server's.
#
# Settings (not CODEEXEC_*: the e2e test strips those from what it passes on):
#   DEPLOYTEST_DOCKER          docker CLI (default: docker)
#   DEPLOYTEST_IMAGE           image to run (required)
#   DEPLOYTEST_CAPS            capabilities to add after --cap-drop ALL (space-separated)
#   DEPLOYTEST_SECURITY_OPTS   --security-opt values (space-separated)
#   DEPLOYTEST_EXTRA_ARGS      more docker run arguments (space-separated)
#   DOCKER_HOST                the daemon
set -euo pipefail

[[ ${1:-} == serve ]] || {
	echo "usage: docker-serve.sh serve" >&2
	exit 2
}
shift
docker=${DEPLOYTEST_DOCKER:-docker}
image=${DEPLOYTEST_IMAGE:?DEPLOYTEST_IMAGE is not set}
name=codeexec-deploytest-$$-$RANDOM

# Host networking only: the daemon runs without a bridge, and the server listens on the
# loopback port the caller chose (CODEEXEC_PORT).
args=(run --rm --name "$name" --label codeexec-deploytest=1 --network host --cap-drop ALL)
for c in ${DEPLOYTEST_CAPS:-}; do
	args+=(--cap-add "$c")
done
for o in ${DEPLOYTEST_SECURITY_OPTS:-}; do
	args+=(--security-opt "$o")
done
# shellcheck disable=SC2206 # word splitting wanted
args+=(${DEPLOYTEST_EXTRA_ARGS:-})
while IFS= read -r v; do
	case $v in
	CODEEXEC_RUN_DIR | CODEEXEC_STORAGE_DIR | CODEEXEC_ROOTFS) ;; # host paths
	CODEEXEC_* | CODE_API_KEY | PORT) args+=(-e "$v") ;;          # value from this environment
	esac
done < <(compgen -e)
exec "$docker" "${args[@]}" "$image" serve "$@"
