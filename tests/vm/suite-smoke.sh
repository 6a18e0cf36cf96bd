# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# Smoke suite: the module registers the "userspace" log type and its connector callback,
# refuses bad tables and a missing server at once with a clear error, and unloads cleanly.

TESTS="module_loads connector_callback_registered no_server_fails_at_once
too_few_arguments_rejected long_uuid_rejected module_unloads kmemleak_reports_nothing"

module_loads() {
	mark_dmesg
	load_module || fail "insmod failed"
	module_loaded || fail "module not in /proc/modules"
	new_dmesg | grep -q "version 1.3.0 loaded" || fail "no load message"
}

connector_callback_registered() {
	cat /proc/net/connector
	grep -q "dmlogusr.*7:1" /proc/net/connector || fail "connector id 7:1 (dmlogusr) not registered"
}

no_server_fails_at_once() {
	mark_dmesg
	start=$(date +%s)
	if timeout 60 dmsetup --noudevsync create smoke --table "$(mirror_table SMOKE-UUID-0001 clustered-core 1024)"; then
		dm remove smoke
		fail "mirror created without a log server"
	fi
	took=$(($(date +%s) - start))
	echo "dmsetup create failed after ${took}s"
	new_dmesg
	[ "$took" -lt 60 ] || fail "dmsetup create hung"
	new_dmesg | grep -q "Userspace log server not found" || fail "no 'server not found' message"
	dm info smoke >/dev/null 2>&1 && fail "device smoke exists"
	return 0
}

too_few_arguments_rejected() {
	mark_dmesg
	if dm create bad --table "0 16384 mirror userspace 2 SMOKE-UUID-0002 clustered-core 2 /dev/ram0 0 /dev/ram1 0"; then
		dm remove bad
		fail "table with two log arguments accepted"
	fi
	new_dmesg
	new_dmesg | grep -qi "too few arguments to userspace dirty log" || fail "no 'too few arguments' message"
}

long_uuid_rejected() {
	mark_dmesg
	uuid=$(printf 'U%.0s' $(seq 129))
	if dm create bad --table "$(mirror_table "$uuid" clustered-core 1024)"; then
		dm remove bad
		fail "129-character UUID accepted"
	fi
	new_dmesg
	new_dmesg | grep -qi "UUID argument too long" || fail "no 'UUID argument too long' message"
}

module_unloads() {
	unload_module || fail "rmmod failed"
	module_loaded && fail "module still loaded"
	grep -q "dmlogusr" /proc/net/connector && fail "connector callback still registered"
	return 0
}

