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
