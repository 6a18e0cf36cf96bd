# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# A mirror with a userspace log served by dm-ulogd: I/O reaches both legs, status and table
# read as upstream's, suspend/resume works, and the module cannot unload under a live log.

TESTS="setup mirror_created write_read_back legs_identical_after_resync status_and_table
suspend_resume unload_refused_while_log_exists remove_mirror server_saw_no_errors
clear_waits_for_durable_legs recovery_reported_after_durable_legs failed_read_in_sync_irq_safe
teardown"

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

# The scratch disks (virtio, volatile write cache) as A and B, or the test skips.
scratch_disks() {
	A=$(scratch_disk 0) && B=$(scratch_disk 1) || {
		echo "no scratch disks (scripts/vm-run.sh attaches them to the mirror suite's guest)"
		exit "$KSFT_SKIP"
	}
	grep -q "write back" "/sys/block/${A#/dev/}/queue/write_cache" ||
		fail "scratch disk $A has no volatile write cache: $(cat "/sys/block/${A#/dev/}/queue/write_cache")"
}

# How long a flush of leg A takes in clear_waits_for_durable_legs.
LEG_FLUSH_MS=6000
# The log device of clear_waits_for_durable_legs.
FLUSH_LOGDEV=/dev/ram4

# clean_regions DEV: how many regions the disk log on DEV calls clean.
clean_regions() { dm-ulogd disk-show "$1" | sed -n 's/.* clean=\([0-9]*\).*/\1/p'; }
# all_clean DEV N: the disk log on DEV calls N regions clean.
all_clean() { [ "$(clean_regions "$1")" = "$2" ]; }

# A clear reaches the log device only once the write it follows is durable on every leg: the
# mirror's legs are flushed first (dm-log.c's disk_flush order). Leg A is a dm-delay over a
# disk with a volatile cache whose flushes take LEG_FLUSH_MS; after one write to region 0,
# the disk log may call region 0 clean again only after a leg flush has had that long.
clear_waits_for_durable_legs() {
	scratch_disks
	sectors=16384
	dm create slowflush --table "0 $sectors delay $A 0 0 $A 0 0 $A 0 $LEG_FLUSH_MS" ||
		fail "dm-delay with a flush delay refused"
	dm mknodes slowflush
	dd if=/dev/zero of="$FLUSH_LOGDEV" bs=64k count=1 oflag=direct 2>/dev/null
	dm create m1 --table "0 $sectors mirror userspace 5 $UUID-FLUSH disk $FLUSH_LOGDEV 1024 nosync 2 /dev/mapper/slowflush 0 $B 0" ||
		fail "mirror over the scratch disks refused"
	dm mknodes m1
	before=$(clean_regions "$FLUSH_LOGDEV")
	echo "regions clean before the write: $before"
	[ "$before" = 16 ] || fail "a nosync disk log of 16 regions has $before clean"
	start=$(now_ms)
	dd if=/dev/urandom of=/dev/mapper/m1 bs=4k count=1 oflag=direct 2>/dev/null || fail "write failed"
	after_write=$(clean_regions "$FLUSH_LOGDEV")
	cleaned=0
	wait_for 60 all_clean "$FLUSH_LOGDEV" 16 && cleaned=1
	took=$(($(now_ms) - start))
	echo "right after the write: $after_write regions clean; region 0 clean again ${took} ms after its write; a leg flush takes ${LEG_FLUSH_MS} ms"
	if [ "$VARIANT" = rust ]; then
		luid=$(luids | sort -n | tail -n 1)
		echo "leg flushes: $(log_stat "$luid" leg_flushes), failed: $(log_stat "$luid" leg_flush_failures)"
	fi
	dm remove m1 && dm remove slowflush || fail "teardown of the test's devices failed"
	[ "$cleaned" = 1 ] || fail "region 0 never became clean again"
	# Region 0 must read dirty right after its write (its mark is durable before the write
	# goes out, its clear waits for the leg flush) and clean only once a leg flush could end.
	if [ "$after_write" != 15 ] || [ "$took" -lt "$LEG_FLUSH_MS" ]; then
		upstream_bug "clears are made durable without flushing the legs (no flush_callback_fn)" \
			"region 0 called clean ${took} ms after its write, before a leg flush could end"
	fi
}

# A recovered region is reported in sync only once the legs hold the copy: the module flushes
# them first, since a cluster's server (or cmirrord) writes an in-sync, unmarked region clean on
# hearing it. One region to recover, leg A's flushes take LEG_FLUSH_MS: the mirror may read
# 1/1 in sync no sooner.
recovery_reported_after_durable_legs() {
	scratch_disks
	dm create slowflush2 --table "0 1024 delay $A 0 0 $A 0 0 $A 0 $LEG_FLUSH_MS" ||
		fail "dm-delay with a flush delay refused"
	dm mknodes slowflush2
	start=$(now_ms)
	dm create m4 --table "0 1024 mirror userspace 3 $UUID-RECOVER core 1024 2 /dev/mapper/slowflush2 0 $B 0" ||
		fail "mirror over the scratch disks refused"
	synced=0
	wait_in_sync m4 60 && synced=1
	took=$(($(now_ms) - start))
	echo "one region recovered and reported in sync ${took} ms after the create; a leg flush takes ${LEG_FLUSH_MS} ms"
	dm remove m4 && dm remove slowflush2 || fail "teardown of the test's devices failed"
	[ "$synced" = 1 ] || fail "the mirror never got in sync"
	[ "$took" -ge "$LEG_FLUSH_MS" ] ||
		upstream_bug "it reports a recovery before the legs' volatile caches are flushed" \
			"region 0 reported in sync ${took} ms after the create, before a leg flush could end"
}

# A read that fails on both legs reaches dm-raid1's in_sync(can_block=0) from the bio's
# completion, in interrupt context (virtio completes in its interrupt handler; QEMU fails
# reads of DMLU_BAD_SECTOR on both scratch disks). No lock report, no hang: the read fails.
failed_read_in_sync_irq_safe() {
	scratch_disks
	[ -n "${DMLU_BAD_SECTOR:-}" ] || fail "no dmlu.bad_sector on the kernel command line"
	sectors=$((DMLU_BAD_SECTOR * 2))
	for s in 0 1; do
		dd if="$(scratch_disk $s)" of=/dev/null bs=512 skip="$DMLU_BAD_SECTOR" count=1 iflag=direct 2>/dev/null &&
			fail "reading sector $DMLU_BAD_SECTOR of scratch disk $s did not fail"
	done
	mark_dmesg
	dm create m2 --table "0 $sectors mirror userspace 4 $UUID-READ core 1024 nosync 2 $A 0 $B 0" ||
		fail "mirror over the scratch disks refused"
	dm mknodes m2
	dd if=/dev/mapper/m2 of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null || fail "a good read failed"
	timeout 60 dd if=/dev/mapper/m2 of=/dev/null bs=512 skip="$DMLU_BAD_SECTOR" count=1 iflag=direct 2>/tmp/bad-read
	rc=$?
	cat /tmp/bad-read
	new_dmesg | grep -E "Mirror read failed|All sides|dm-raid1" | head -n 5
	dm status m2
	[ "$rc" -ne 124 ] || fail "the failed read hung"
	[ "$rc" -ne 0 ] || fail "a read failing on both legs succeeded"
	new_dmesg | grep -q "Mirror read failed" || fail "the read never failed on a leg"
	if new_dmesg | grep -qE "inconsistent lock state|possible recursive locking|possible circular locking|BUG:|WARNING:"; then
		new_dmesg | grep -A 30 -E "inconsistent lock state|possible recursive|possible circular|BUG:|WARNING:" | head -n 60
		fail "kernel report on the failed read"
	fi
	dm remove m2 || fail "remove failed"
}

teardown() {
	stop_server
	unload_module || fail "rmmod failed"
}
