# shellcheck shell=sh
# Helpers for the in-guest suites: KTAP output (kselftest conventions: exit 0 pass, 4 skip,
# anything else fail) and the module/mirror operations the tests share.

KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4
ktap_n=0

ktap_header() {
	echo "KTAP version 1"
	echo "1..$1"
}

# ktap_run NAME CMD...: runs one test, its output shown as KTAP diagnostics.
ktap_run() {
	name=$1
	shift
	ktap_n=$((ktap_n + 1))
	("$@") >/tmp/test.out 2>&1
	rc=$?
	sed 's/^/# /' /tmp/test.out
	case $rc in
	0) echo "ok $ktap_n $name" ;;
	4) echo "ok $ktap_n $name # SKIP $(tail -n 1 /tmp/test.out)" ;;
	*) echo "not ok $ktap_n $name" ;;
	esac
}

# Ends the current test (each runs in a subshell) as failed.
fail() {
	echo "FAIL: $*"
	exit 1
}

VARIANT=$(cat /modules/VARIANT)
MODULE=/modules/dm_log_userspace.ko

load_module() { insmod "$MODULE"; }
unload_module() { rmmod dm_log_userspace; }
module_loaded() { grep -q '^dm_log_userspace ' /proc/modules; }

# Kernel messages since the last mark_dmesg.
mark_dmesg() { dmesg | wc -l >/tmp/dmesg.mark; }
new_dmesg() { dmesg | tail -n +$(($(cat /tmp/dmesg.mark 2>/dev/null || echo 0) + 1)); }

dm() { dmsetup --noudevsync "$@"; }

# A mirror table over two RAM disks with a userspace log: mirror_table UUID [LOG ARGS...]
mirror_table() {
	uuid=$1
	shift
	set -- "$uuid" "$@"
	echo "0 16384 mirror userspace $# $* 2 /dev/ram0 0 /dev/ram1 0"
}

# The project's log server, in the background, logging to /tmp/dm-ulogd.log.
start_server() {
	dm-ulogd --foreground --log "${DMULOGD_LOG:-info}" >>/tmp/dm-ulogd.log 2>&1 &
	echo $! >/tmp/dm-ulogd.pid
	# Ready once it has joined the connector group.
	for _ in $(seq 50); do
		grep -q "listening" /tmp/dm-ulogd.log 2>/dev/null && return 0
		sleep 0.1
	done
	cat /tmp/dm-ulogd.log
	return 1
}

stop_server() {
	[ -f /tmp/dm-ulogd.pid ] || return 0
	kill "$(cat /tmp/dm-ulogd.pid)" 2>/dev/null
	wait "$(cat /tmp/dm-ulogd.pid)" 2>/dev/null
	rm -f /tmp/dm-ulogd.pid
}

# create_mirror NAME UUID LOGARGS...: creates the device and its node.
create_mirror() {
	name=$1
	shift
	dm create "$name" --table "$(mirror_table "$@")" || return 1
	dm mknodes "$name"
	[ -b "/dev/mapper/$name" ] || { echo "/dev/mapper/$name is not a block device"; return 1; }
}

# Waits until the mirror reports every region in sync (at most $2 seconds, default 60).
wait_in_sync() {
	for _ in $(seq $((${2:-60} * 10))); do
		ratio=$(dm status "$1" | awk '{ print $7 }')
		[ "${ratio%/*}" = "${ratio#*/}" ] && return 0
		sleep 0.1
	done
	echo "not in sync after ${2:-60}s: $(dm status "$1")"
	return 1
}

# Both legs hold the same first $1 MiB.
legs_identical() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	a=$(dd if=/dev/ram0 bs=1M count="$1" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
	b=$(dd if=/dev/ram1 bs=1M count="$1" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
	echo "leg 0: $a"
	echo "leg 1: $b"
	[ "$a" = "$b" ]
}
