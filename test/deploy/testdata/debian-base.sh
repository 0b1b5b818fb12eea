#!/usr/bin/env bash
# debian-base.sh DIR TAG: build a stand-in for the debian:bookworm-slim image without a
# registry. debootstrap (minbase) into DIR from the Debian mirror the host already uses,
# slim it the way the official image is slimmed (no docs, man pages or locales; apt lists
# removed), and `docker import` it as TAG. Does nothing when TAG already exists.
# Used by TestImage (image_test.go): CI reaches no container registry.
set -euo pipefail

dir=${1:?usage: debian-base.sh DIR TAG}
tag=${2:?usage: debian-base.sh DIR TAG}
suite=bookworm

log() { printf 'debian-base: %s\n' "$*" >&2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
	log "$tag exists"
	exit 0
fi
command -v debootstrap >/dev/null || {
	log "installing debootstrap"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
}

# The host's mirror: the first URIs: (deb822) or deb line naming a /debian archive.
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/*[[:space:]]*$/\1/p' \
	/etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
if [[ -z $mirror ]]; then
	mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' \
		/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
log "debootstrap $suite from $mirror into $dir"

rm -rf "$dir"
mkdir -p "$dir"
# merged /usr like the official image (the sandbox binds only /usr and links /bin, /lib).
debootstrap --variant=minbase --merged-usr "$suite" "$dir" "$mirror" >&2

# apt sources: the same archives as the host (main, updates, security), in deb822 form
# like the official image's /etc/apt/sources.list.d/debian.sources.
rm -f "$dir/etc/apt/sources.list"
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
	cp /etc/apt/sources.list.d/debian.sources "$dir/etc/apt/sources.list.d/debian.sources"
else
	cat >"$dir/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror}-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

# What the official slim image configures (docker-library/debuerreotype).
cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' >"$dir/etc/apt/apt.conf.d/docker-no-languages"
find "$dir/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete 2>/dev/null || true
rm -rf "$dir"/usr/share/{man,info,groff,lintian,linda}/* "$dir"/var/lib/apt/lists/* \
	"$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/*.log
# Nothing of the host leaks in: resolv.conf and hostname are the container runtime's.
: >"$dir/etc/resolv.conf"
: >"$dir/etc/hostname"

log "docker import as $tag"
tar -C "$dir" --numeric-owner -c . | docker import \
	-c 'CMD ["bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	- "$tag" >&2
rm -rf "$dir"
