#!/usr/bin/env bash
# entrypoint.sh: the container image's entrypoint (installed as /usr/local/bin/codeexec-entrypoint).
#
# codeexec's sandbox creates one cgroup per run under the cgroup it finds at /sys/fs/cgroup.
# Container runtimes mount the container's own cgroup there read-only. With CAP_SYS_ADMIN
# (which the sandbox needs anyway, for its tmpfs work directories) this script makes that
# mount writable, so that the per-run cgroups nest *inside the container's cgroup*: the
# container's own memory/pids limits still bound everything the sandbox runs, and no
# cgroup of the host is touched. (Never bind-mount the host's /sys/fs/cgroup into the
# container instead: the sandbox would then work at the host's cgroup root, beside any
# codeexec running on the host.)
#
#   cgroup v1 (hybrid/legacy hosts): remount memory, pids, cpu, cpuacct (and freezer, optional) read-write.
#   cgroup v2 with a private cgroup namespace (Docker's default on v2 hosts, Kubernetes'):
#     remount read-write, then move the container's processes into a leaf cgroup "init"
#     and delegate the controllers to sub-cgroups (the "no internal processes" rule of v2
#     forbids both in one cgroup; `docker exec` joins "init", runc does that on EBUSY).
#
# /proc: container runtimes mask parts of /proc (kcore, keys, sysrq-trigger, /proc/sys
# read-only, ...) with mounts on top of it. The kernel refuses a fresh proc mount in a new
# user namespace while the visible one is overmounted, and the sandbox needs one for each
# run's PID namespace. So the masks come off here, in the container's own mount namespace
# (CAP_SYS_ADMIN again) — the same as `docker run --security-opt systempaths=unconfined`,
# but working everywhere (Compose v1 and Kubernetes have no such option). The server is
# the only process that sees this /proc; the code sees its sandbox's own, which codeexec
# masks itself.
#
# Then it execs `codeexec "$@"`. It never fails the start: when something cannot be done
# the server itself reports what isolation is missing (and refuses to serve without it).
set -euo pipefail

cg=/sys/fs/cgroup

log() { printf '{"level":"INFO","msg":"entrypoint: %s"}\n' "$*" >&2; }
warn() { printf '{"level":"WARN","msg":"entrypoint: %s"}\n' "$*" >&2; }

# writable DIR: the directory is on a read-write mount (test -w sees EROFS as not writable).
writable() { [[ -w $1 ]]; }

setup_v1() {
	local c d
	# freezer: stateful sessions are frozen between calls (optional).
	for c in memory pids cpu cpuacct freezer; do
		d=$(readlink -f "$cg/$c" 2>/dev/null) || continue
		[[ -d $d ]] || continue
		writable "$d" && continue
		if mount -o remount,bind,rw "$d" 2>/dev/null; then
			log "cgroup v1 $c: remounted read-write"
		else
			warn "cgroup v1 $c at $d is read-only and cannot be remounted (needs CAP_SYS_ADMIN)"
		fi
	done
}

setup_v2() {
	if ! writable "$cg"; then
		if mount -o remount,rw "$cg" 2>/dev/null; then
			log "cgroup v2: remounted read-write"
		else
			warn "cgroup v2 at $cg is read-only and cannot be remounted (needs CAP_SYS_ADMIN)"
			return 0
		fi
	fi
	# Only at the root of a private cgroup namespace ("0::/"): with the host's namespace
	# the mount shows the host's tree, and the server must not rearrange it.
	[[ $(</proc/self/cgroup) == "0::/" ]] || {
		warn "cgroup v2: not in a private cgroup namespace ($(</proc/self/cgroup)); run with cgroupns=private"
		return 0
	}
	[[ -s $cg/cgroup.subtree_control ]] && return 0 # already delegated (a restart)
	mkdir -p "$cg/init"
	local pid
	# Move every process of the root (this shell, anything `docker exec` put there) into init.
	while read -r pid; do
		echo "$pid" >"$cg/init/cgroup.procs" 2>/dev/null || true
	done <"$cg/cgroup.procs"
	local c want=()
	for c in $(<"$cg/cgroup.controllers"); do
		case $c in memory | pids | cpu | cpuset | io) want+=("+$c") ;; esac
	done
	if ((${#want[@]})) && echo "${want[*]}" >"$cg/cgroup.subtree_control" 2>/dev/null; then
		log "cgroup v2: delegated ${want[*]} (server in /init)"
	else
		warn "cgroup v2: could not enable controllers ${want[*]} for sub-cgroups"
	fi
}

unmask_proc() {
	local mp n=0
	# Mount points below /proc, deepest first (field 5 of mountinfo).
	while read -r mp; do
		if umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null; then
			n=$((n + 1))
		else
			warn "cannot unmount $mp over /proc (needs CAP_SYS_ADMIN); the sandbox cannot mount its /proc"
			return 0
		fi
	done < <(awk '$5 ~ "^/proc/" {print $5}' /proc/self/mountinfo | sort -r)
	((n == 0)) || log "removed $n mask(s) over /proc"
}

if [[ ${1:-} == serve && $(id -u) == 0 && ${CODEEXEC_ENTRYPOINT_PROC:-1} != 0 ]]; then
	unmask_proc
fi

if [[ ${1:-} == serve && $(id -u) == 0 && ${CODEEXEC_ENTRYPOINT_CGROUPS:-1} != 0 ]]; then
	if [[ $(stat -fc %T "$cg" 2>/dev/null) == cgroup2fs ]]; then
		setup_v2
	elif [[ -d $cg/memory ]]; then
		setup_v1
	fi
fi

exec /usr/local/bin/codeexec "$@"
