# shellcheck shell=sh
# A mirror with a userspace log served by dm-ulogd: I/O reaches both legs, status and table
# read as upstream's, suspend/resume works, and the module cannot unload under a live log.

TESTS="setup mirror_created write_read_back legs_identical_after_resync status_and_table
suspend_resume unload_refused_while_log_exists remove_mirror server_saw_no_errors teardown"

UUID=MIRROR-UUID-0001

setup() {
	load_module || fail "insmod failed"
	start_server || fail "dm-ulogd did not start"
	dd if=/dev/urandom of=/tmp/data bs=1M count=4 2>/dev/null
}

mirror_created() {
	create_mirror m0 "$UUID" clustered-core 1024 || fail "dmsetup create failed"
	dm status m0
	dm table m0
}

write_read_back() {
	dd if=/tmp/data of=/dev/mapper/m0 bs=1M oflag=direct 2>&1 || fail "write failed"
	sync
	echo 3 >/proc/sys/vm/drop_caches
	dd if=/dev/mapper/m0 of=/tmp/back bs=1M count=4 iflag=direct 2>/dev/null || fail "read failed"
	cmp /tmp/data /tmp/back || fail "data read back differs"
}

legs_identical_after_resync() {
	wait_in_sync m0 120 || fail "mirror did not get in sync"
	dm status m0
	legs_identical 8 || fail "legs differ"
	dd if=/dev/ram1 bs=1M count=4 iflag=direct 2>/dev/null | cmp - /tmp/data || fail "leg 1 does not hold the data"
}

status_and_table() {
	status=$(dm status m0)
	table=$(dm table m0)
	echo "status: $status"
	echo "table:  $table"
	case "$status" in *" 1 clustered-core"*) ;; *) fail "status lacks the server's log INFO" ;; esac
	case "$table" in *"mirror userspace 3 $UUID clustered-core 1024 2 "*) ;; *) fail "table line not as upstream formats it" ;; esac
}

suspend_resume() {
	dm suspend m0 || fail "suspend failed"
	dm resume m0 || fail "resume failed"
	dd if=/tmp/data of=/dev/mapper/m0 bs=1M seek=4 oflag=direct 2>/dev/null || fail "write after resume failed"
	wait_in_sync m0 60 || fail "not in sync after resume"
}

unload_refused_while_log_exists() {
	if rmmod dm_log_userspace 2>/dev/null; then
		fail "module unloaded while a log exists"
	fi
	module_loaded || fail "module gone"
}

remove_mirror() {
	dm remove m0 || fail "dmsetup remove failed"
	dm info m0 >/dev/null 2>&1 && fail "m0 still exists"
	return 0
}

server_saw_no_errors() {
	cat /tmp/dm-ulogd.log
	grep -qE "WARN|ERROR" /tmp/dm-ulogd.log && fail "the server logged warnings"
	return 0
}

teardown() {
	stop_server
	unload_module || fail "rmmod failed"
}
