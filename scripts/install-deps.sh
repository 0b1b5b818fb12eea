#!/usr/bin/env bash
# install-deps.sh: install what codeexec needs on Debian 12 (bookworm), idempotently.
#
#   1. Debian packages of scripts/packages.txt that are missing (apt-get, --no-install-recommends).
#   2. Go in /usr/local/go when it is missing or older than go.mod's version, from the Go
#      module proxy's toolchain zip (the only network this needs besides apt and npm).
#   3. npm tools of scripts/npm-packages.txt under /usr/local/lib/codeexec/npm (inside /usr,
#      which the sandbox binds read-only; /root, /opt and friends are invisible there).
#   4. The Go language's sandbox assets: the standard library, compiled once (prepare_go_assets).
#
# When everything is present it only checks and exits (well under a second). Used by
# `make run`, `make test`, CI and the container image. Needs root (or sudo).
#
# Environment:
#   CODEEXEC_GO_VERSION  Go to install when needed (default below; must be >= go.mod's).
#   CODEEXEC_GO_SHA256   sha256 of the toolchain zip, required for versions/arches not pinned here.
#   CODEEXEC_GOPROXY     module proxy to fetch Go from (default https://proxy.golang.org).
#   CODEEXEC_SKIP_APT=1  skip step 1 (e.g. when the image already has the packages).
#   CODEEXEC_DEPS_TEST=1 also the packages only the test suite needs (scripts/packages-test.txt:
#                        a browser, a VM for cgroup v2), never in the image or the sandbox's
#                        view of a production host.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
prefix=/usr/local/lib/codeexec # the sandbox sees /usr only
goroot=/usr/local/go
go_version=${CODEEXEC_GO_VERSION:-1.26.11}
goproxy=${CODEEXEC_GOPROXY:-https://proxy.golang.org}

# sha256 of golang.org/toolchain@v0.0.1-go<version>.linux-<arch>.zip as served by the proxy.
declare -A go_sha256=(
	[1.26.11-amd64]=e1edb778de0aa08c8e827f5a873b35a46afe680fb241482c531725b2355e470d
)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || die "run as root (or install sudo)"
	sudo=(sudo)
fi
as_root() { "${sudo[@]}" "$@"; }

# list FILE: the entries of a package list, without comments and blanks.
list() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$1"; }

# ---------------------------------------------------------------------------------------
# 1. Debian packages
install_packages() {
	[[ ${CODEEXEC_SKIP_APT:-0} == 1 ]] && return
	local -a want missing=()
	mapfile -t want < <(list "$here/packages.txt")
	if [[ ${CODEEXEC_DEPS_TEST:-0} == 1 ]]; then
		mapfile -t -O "${#want[@]}" want < <(list "$here/packages-test.txt")
	fi
	# Debian's nodejs ships without npm (NodeSource's bundles it): add Debian's npm only
	# when there is no npm at all, so NodeSource installs are left alone.
	if ! command -v npm >/dev/null && [[ ! -x /usr/bin/npm ]]; then
		want+=(npm)
	fi
	# One dpkg-query for all; unknown names only print to stderr.
	local -A ok=()
	local p status
	while read -r p status; do
		[[ $status == ii ]] && ok[${p%%:*}]=1
	done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${want[@]}" 2>/dev/null || true)
	for p in "${want[@]}"; do
		[[ -n ${ok[$p]:-} ]] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	log "installing ${#missing[@]} Debian package(s): ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------------------------------
# 2. Go
go_arch() {
	case $(uname -m) in
	x86_64) echo amd64 ;;
	aarch64 | arm64) echo arm64 ;;
	*) die "unsupported machine $(uname -m) for Go" ;;
	esac
}

# version_ge A B: A >= B for versions like 1.26.0.
version_ge() { [[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1) == "$2" ]]; }

install_go() {
	local need have=""
	need=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$repo/go.mod")
	[[ -n $need ]] || die "no go directive in $repo/go.mod"
	if [[ -x $goroot/bin/go ]]; then
		have=$(GOTOOLCHAIN=local "$goroot/bin/go" env GOVERSION 2>/dev/null || true)
		have=${have#go}
		if [[ -n $have ]] && version_ge "$have" "$need"; then
			return 0
		fi
	fi
	version_ge "$go_version" "$need" || die "CODEEXEC_GO_VERSION=$go_version is older than go.mod's go $need"
	local arch mod sum tmp
	arch=$(go_arch)
	mod="v0.0.1-go${go_version}.linux-${arch}"
	sum=${CODEEXEC_GO_SHA256:-${go_sha256[${go_version}-${arch}]:-}}
	[[ -n $sum ]] || die "no pinned sha256 for Go ${go_version} linux-${arch}; set CODEEXEC_GO_SHA256"
	log "installing Go ${go_version} (have: ${have:-none}, go.mod needs ${need}) into $goroot"
	tmp=$(mktemp -d)
	# shellcheck disable=SC2064 # expand $tmp now
	trap "rm -rf '$tmp'" EXIT
	curl -fsSL --retry 3 -o "$tmp/go.zip" "$goproxy/golang.org/toolchain/@v/${mod}.zip"
	echo "$sum  $tmp/go.zip" | sha256sum -c --quiet - || die "checksum mismatch for $mod.zip"
	# The module zip nests everything under golang.org/toolchain@<version>/.
	unzip -q "$tmp/go.zip" -d "$tmp/x"
	local top="$tmp/x/golang.org/toolchain@${mod}"
	[[ -x $top/bin/go ]] || die "unexpected layout of $mod.zip"
	# Module zips need not keep exec bits; the go command restores them the same way.
	chmod -R a+rX "$top"
	chmod a+x "$top"/bin/* "$top"/pkg/tool/*/*
	as_root rm -rf "$goroot.new" "$goroot.old"
	as_root mv "$top" "$goroot.new"
	as_root chown -R root:root "$goroot.new"
	if [[ -e $goroot ]]; then as_root mv "$goroot" "$goroot.old"; fi
	as_root mv "$goroot.new" "$goroot"
	as_root rm -rf "$goroot.old"
	"$goroot/bin/go" version >&2
}

# ---------------------------------------------------------------------------------------
# 3. npm tools
install_npm_tools() {
	local -a pkgs
	mapfile -t pkgs < <(list "$here/npm-packages.txt")
	local npmdir=$prefix/npm p name ver todo=()
	for p in "${pkgs[@]}"; do
		name=${p%@*} ver=${p##*@}
		[[ -f $npmdir/lib/node_modules/$name/package.json ]] &&
			grep -q "\"version\": *\"$ver\"" "$npmdir/lib/node_modules/$name/package.json" &&
			continue
		todo+=("$p")
	done
	if ((${#todo[@]})); then
		command -v npm >/dev/null || die "npm is missing (apt-get install npm)"
		log "installing npm package(s) into $npmdir: ${todo[*]}"
		# --ignore-scripts: nothing needs an install script (esbuild's only swaps its JS shim
		# for the native binary, which we link to directly below).
		as_root npm install --global --prefix "$npmdir" \
			--ignore-scripts --no-audit --no-fund --loglevel=error "${todo[@]}"
	fi
	# esbuild's native binary, at a fixed path (no node wrapper: ~5 ms instead of ~40).
	local bin
	bin=$(find "$npmdir/lib/node_modules" -path '*/@esbuild/linux-*/bin/esbuild' -type f 2>/dev/null | head -n1)
	[[ -n $bin ]] || die "esbuild's native binary is missing under $npmdir"
	if [[ $(readlink "$prefix/bin/esbuild" 2>/dev/null) != "$bin" ]]; then
		as_root mkdir -p "$prefix/bin"
		as_root ln -sfn "$bin" "$prefix/bin/esbuild"
	fi
	as_root chmod -R a+rX "$npmdir"
}

# ---------------------------------------------------------------------------------------
# 4. Go's sandbox assets
#
# A Go hello world with an empty build cache takes ~11 s (it compiles the standard library).
# The sandbox's /usr is read-only and every run starts with an empty /tmp, so the standard
# library is compiled once, here, into a build cache under /usr. Measured options (hello
# world, compile + link, uid 1000, median of 10 on the 2-vCPU dev VM):
#  - `go build` with GOCACHE pointing at the read-only cache: works (the go command treats
#    failures to write, touch and trim cache entries as non-fatal): 390 ms, 250 ms with
#    -ldflags='-s -w'.
#  - the compiler and linker run directly (`compile -importcfg` then `link -importcfg`)
#    against the cached std archives, listed in an importcfg file written here: 285 ms,
#    150 ms with -s -w. No go command (package loading, hashing GOROOT's sources, cache and
#    telemetry writes), nothing written outside /tmp. This is what internal/lang uses.
#  - copying the cache (~170 MB) to /tmp per run: far too slow. An overlay over it needs the
#    sandbox's cooperation and is no faster than the read-only cache.
# The archives must come from the same toolchain as the compiler: all of it is rebuilt when
# `go version` changes.
godir=$prefix/go         # compile, link (symlinks into GOROOT) and importcfg
gocache=$prefix/gocache  # the build cache holding the std archives importcfg names

prepare_go_assets() {
	local goenv=(env -i PATH="$goroot/bin:/usr/bin:/bin" HOME=/tmp GOENV=off GOTOOLCHAIN=local
		GOPROXY=off GOFLAGS= CGO_ENABLED=0 GOCACHE="$gocache" GOPATH=/tmp/codeexec-gopath)
	local want stamp=$godir/stamp
	want="$("$goroot/bin/go" version) CGO_ENABLED=0 v2"
	if [[ -f $stamp && $(<"$stamp") == "$want" && -s $godir/importcfg ]]; then
		return 0
	fi
	log "building Go's standard library into $gocache (a minute or two, once)"
	as_root rm -rf "$gocache" "$godir"
	as_root mkdir -p "$gocache" "$godir"
	local tooldir cfg
	tooldir=$("${goenv[@]}" "$goroot/bin/go" env GOTOOLDIR)
	# `go list -export` compiles every std package into the cache and names its archive.
	cfg=$(as_root "${goenv[@]}" "$goroot/bin/go" list -export \
		-f '{{if .Export}}packagefile {{.ImportPath}}={{.Export}}{{end}}' std)
	printf '%s\n' "$cfg" | as_root tee "$godir/importcfg" >/dev/null
	as_root ln -sfn "$tooldir/compile" "$godir/compile"
	as_root ln -sfn "$tooldir/link" "$godir/link"
	as_root rm -rf /tmp/codeexec-gopath
	as_root chmod -R a+rX,go-w "$gocache" "$godir"
	# Check it the way internal/lang's Go entry builds (as the caller, cache untouched).
	local tmp
	tmp=$(mktemp -d)
	printf 'package main\n\nimport (\n\t"fmt"\n\t"net/http"\n)\n\nfunc main() { fmt.Println(http.StatusOK) }\n' >"$tmp/main.go"
	"$godir/compile" -p main -complete -nolocalimports -pack -importcfg "$godir/importcfg" -o "$tmp/main.a" "$tmp/main.go"
	"$godir/link" -s -w -importcfg "$godir/importcfg" -o "$tmp/main" "$tmp/main.a"
	[[ $("$tmp/main") == 200 ]] || die "Go's sandbox assets do not work"
	rm -rf "$tmp"
	echo "$want" | as_root tee "$stamp" >/dev/null
}

install_packages
install_go
install_npm_tools
prepare_go_assets
