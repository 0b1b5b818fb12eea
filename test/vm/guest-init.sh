#!/bin/bash
# PID 1 of the cgroup v2 VM (test/vm), after the initramfs switched to a
# tmpfs root. Sets up the host the way systemd would on a cgroup v2 machine
# (cgroup2 at /sys/fs/cgroup, controllers delegated, init in a leaf), runs
# the test binaries listed in /vm/tests, and reports on the serial console.
# It must not know what the tests check: the host parses the markers.
bb=/vm/busybox
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root LANG=C.UTF-8 CI="${CI:-}" CODEEXEC_VM_GUEST=1

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mkdir -p /dev/pts /dev/shm /tmp /run /root /var/tmp
$bb mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
$bb mount -t tmpfs -o mode=1777 shm /dev/shm
$bb mount -t tmpfs -o mode=1777 tmp /tmp
$bb mount -t tmpfs -o mode=755 run /run
$bb mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
$bb ip link set lo up

# The no-internal-process rule: move ourselves to a leaf, then delegate.
$bb mkdir /sys/fs/cgroup/init.scope
echo $$ >/sys/fs/cgroup/init.scope/cgroup.procs
echo "+cpu +memory +pids +io" >/sys/fs/cgroup/cgroup.subtree_control

echo "VM: kernel $($bb uname -r), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
echo "VM: booted in $(cut -d' ' -f1 /proc/uptime) s"

set -f # the -test.run patterns are not globs
rc=0
# Each line: [NAME=VALUE ...] BINARY ARGS...
while read -r line; do
	# shellcheck disable=SC2086 # a word list on purpose
	set -- $line
	envs=()
	while [ $# -gt 0 ] && [[ $1 == *=* ]]; do
		envs+=("$1")
		shift
	done
	[ $# -gt 0 ] || continue
	bin=$1
	shift
	echo "VM: run $line"
	start=$(cut -d' ' -f1 /proc/uptime)
	(cd /tmp && env "${envs[@]}" "/vm/bin/$bin" "$@" 2>&1)
	r=$?
	echo "VM: $bin exit $r at $(cut -d' ' -f1 /proc/uptime) s (started at $start s)"
	[ $r -eq 0 ] || rc=$r
done </vm/tests

echo "VM-RESULT rc=$rc"
$bb sync
$bb poweroff -f
