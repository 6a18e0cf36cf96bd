# shellcheck shell=sh
# The demo: what an admin sees with the Rust "userspace" log. Each step narrates itself.

TESTS="load_the_rust_module show_the_registration mirror_needs_a_log_server unload_the_module"

load_the_rust_module() {
	echo "\$ insmod dm_log_userspace.ko"
	load_module || fail "insmod failed"
	dmesg | grep "dm_log_userspace" | tail -n 1
}

show_the_registration() {
	echo "\$ cat /proc/net/connector"
	cat /proc/net/connector
	grep -q "dmlogusr.*7:1" /proc/net/connector || fail "connector callback missing"
}

mirror_needs_a_log_server() {
	table=$(mirror_table DEMO-LOG-0001 clustered-core 1024)
	echo "\$ dmsetup create demo --table \"$table\""
	mark_dmesg
	if dm create demo --table "$table"; then
		dm remove demo
		fail "created without a server"
	fi
	echo "(no log server is running, so the table is refused at once; the kernel says:)"
	new_dmesg | grep -E "dm_log_userspace|device-mapper" | sed 's/^\[[ 0-9.]*\] //'
	new_dmesg | grep -q "Userspace log server not found" || fail "no clear error"
}

unload_the_module() {
	echo "\$ rmmod dm_log_userspace"
	unload_module || fail "rmmod failed"
	dmesg | grep "dm_log_userspace" | tail -n 1
}
