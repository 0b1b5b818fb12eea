#!/usr/bin/env bash
# install-test-servers.sh: build the servers the storage tests run against, idempotently.
#
#   versitygw        an S3-compatible gateway (posix backend), for the s3 backend's tests
#   fake-gcs-server  the Google Cloud Storage emulator, for the gcs backend's tests
#
# Both are built from source through the Go module proxy (`go install module/cmd@version`,
# pinned below) into .cache/bin of the repository (ignored by git). A binary already built at
# the pinned version is kept: when everything is present this only checks and exits (well
# under a second). internal/storage's tests run this script themselves when needed.
#
# Environment:
#   CODEEXEC_TEST_BIN  where to install (default: <repo>/.cache/bin)
#   GO                 the go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
bindir=${CODEEXEC_TEST_BIN:-$repo/.cache/bin}

# name  package  version (the version is the package's module's)
servers=(
	"versitygw github.com/versity/versitygw/cmd/versitygw v1.8.0"
	"fake-gcs-server github.com/fsouza/fake-gcs-server v1.56.1"
)

log() { printf 'install-test-servers: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

go=${GO:-}
if [[ -z $go ]]; then
	if command -v go >/dev/null; then
		go=go
	elif [[ -x /usr/local/go/bin/go ]]; then
		go=/usr/local/go/bin/go
	else
		die "no go command (run scripts/install-deps.sh first, or set GO)"
	fi
fi

# built_version BIN prints the version of the main module BIN was built from, if any.
built_version() {
	[[ -x $1 ]] || return 0
	"$go" version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'
}

mkdir -p "$bindir"
# One install at a time: concurrent test runs may call this script together.
exec 9>"$bindir/.install.lock"
if command -v flock >/dev/null; then
	flock 9
fi

for entry in "${servers[@]}"; do
	read -r name pkg version <<<"$entry"
	if [[ $(built_version "$bindir/$name") == "$version" ]]; then
		continue
	fi
	log "building $name $version (go install $pkg@$version)"
	start=$SECONDS
	# Build into a scratch directory and rename into place, so an interrupted build never
	# leaves a binary behind that looks installed.
	tmp=$(mktemp -d "$bindir/.build.XXXXXX")
	if ! GOBIN=$tmp CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
		"$go" install -trimpath -ldflags='-s -w' "$pkg@$version"; then
		rm -rf "$tmp"
		die "building $name $version failed"
	fi
	mv -f "$tmp/$name" "$bindir/$name"
	rm -rf "$tmp"
	log "built $name $version in $((SECONDS - start))s"
done
