# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# The demo: a mirror whose region log is kept by the project's server, through the Rust
# module. Each step narrates itself.

TESTS="load_the_rust_module start_the_log_server create_a_mirror write_and_verify_data
show_status_and_table tear_down"

load_the_rust_module() {
	echo "\$ insmod dm_log_userspace.ko"
	load_module || fail "insmod failed"
	dmesg | grep "dm_log_userspace" | tail -n 1 | sed 's/^\[[ 0-9.]*\] //'
	grep "dmlogusr" /proc/net/connector
}

start_the_log_server() {
	echo "\$ dm-ulogd --foreground --single-node &"
	start_server || fail "dm-ulogd did not start"
	sed 's/^[^ ]* *//' /tmp/dm-ulogd.log
}

create_a_mirror() {
	table=$(mirror_table DEMO-LOG-0001 clustered-core 1024)
	echo "\$ dmsetup create demo --table \"$table\""
	create_mirror demo DEMO-LOG-0001 clustered-core 1024 || fail "dmsetup create failed"
	echo "(two 8 MiB legs on RAM disks, 16 regions of 512 KiB; dm-ulogd logged:)"
	tail -n 1 /tmp/dm-ulogd.log | sed 's/^[^ ]* *//'
}

write_and_verify_data() {
	dd if=/dev/urandom of=/tmp/data bs=1M count=4 2>/dev/null
	echo "\$ dd if=random-4MiB of=/dev/mapper/demo oflag=direct"
	dd if=/tmp/data of=/dev/mapper/demo bs=1M oflag=direct 2>&1 | tail -n 1
	wait_in_sync demo 120 || fail "mirror did not get in sync"
	echo 3 >/proc/sys/vm/drop_caches
	dd if=/dev/mapper/demo bs=1M count=4 iflag=direct 2>/dev/null | cmp - /tmp/data || fail "read back differs"
	echo "read back through the mirror: identical"
	for leg in 0 1; do
		dd if=/dev/ram$leg bs=1M count=4 iflag=direct 2>/dev/null | cmp - /tmp/data || fail "leg $leg differs"
		echo "leg /dev/ram$leg: identical ($(dd if=/dev/ram$leg bs=1M count=4 2>/dev/null | md5sum | cut -c1-16)...)"
	done
}

show_status_and_table() {
	echo "\$ dmsetup status demo"
	dm status demo
	echo "\$ dmsetup table demo"
	dm table demo
}

tear_down() {
	echo "\$ dmsetup remove demo; kill dm-ulogd; rmmod dm_log_userspace"
	dm remove demo || fail "remove failed"
	stop_server
	unload_module || fail "rmmod failed"
	echo "done: $(grep -c "log created" /tmp/dm-ulogd.log) log created and destroyed by the server"
}
