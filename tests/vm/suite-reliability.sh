# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# Failure behaviour: the server dies (SIGKILL during verified writes) and comes back; no server
# at table load, later, or across suspend/resume; a bounded wait; a fuzzing server; a table
# swap with one log UUID; 64 logs at once; injected allocation failures; module unload.
# Runs against either module; cases for this module's extensions skip on the C one.
# LONG=1 (dmlu.long=1 on the kernel command line; `make check LONG=1`) runs the long counts.

TESTS="setup sigkill_cycles_with_verified_writes no_server_at_table_load server_appears_later
server_gone_across_suspend_resume bounded_wait_fails_requests_and_raises_an_event
fuzzing_server table_swap_with_one_uuid sixty_four_mirrors failslab_table_loads
failslab_during_writes lost_mark_recorded_before_its_write unload_refused_while_a_log_exists load_unload_100_times
kmemleak_reports_nothing"

if [ "${LONG:-0}" = 1 ]; then
	CYCLES=50
	FUZZ_MALFORMED=100000
else
	CYCLES=4
	FUZZ_MALFORMED=4000
fi
UUID=REL-UUID-0001

rust_only() {
	[ "$VARIANT" = rust ] || { echo "$1: an extension of the Rust module"; exit "$KSFT_SKIP"; }
}

setup() {
	load_module || fail "insmod failed"
	start_server || fail "dm-ulogd did not start"
	dd if=/dev/urandom of=/tmp/data bs=1M count=2 2>/dev/null
}

# reads_back DEV N: the device's first N 64 KiB blocks equal /tmp/data's.
reads_back() {
	a=$(dd if="/dev/mapper/$1" bs=64k count="$2" iflag=direct 2>/dev/null | md5sum)
	b=$(dd if=/tmp/data bs=64k count="$2" 2>/dev/null | md5sum)
	[ "$a" = "$b" ]
}

# fio writes 2 MiB at random with checksums and reads them back (verify) at the end.
verified_writes() {
	fio --name=v --filename="/dev/mapper/$1" --rw=randwrite --bs=4k --direct=1 --ioengine=psync \
		--size=2M --verify=crc32c --verify_fatal=1 --randseed="$2" >"/tmp/fio.$2" 2>&1
}

sigkill_cycles_with_verified_writes() {
	create_mirror m0 "$UUID" core 64 || fail "create failed"
	luid=$(luids | head -n 1)
	worst=0
	total=0
	i=0
	while [ "$i" -lt "$CYCLES" ]; do
		i=$((i + 1))
		verified_writes m0 "$i" &
		fpid=$!
		sleep "0.$((RANDOM % 8 + 1))"
		kill_server
		sleep 0.3
		t0=$(now_ms)
		start_server || fail "restart $i failed"
		ready=$(($(now_ms) - t0))
		dd if=/tmp/data of=/dev/mapper/m0 bs=4k count=1 seek=1900 oflag=direct 2>/dev/null ||
			fail "probe write failed in cycle $i"
		took=$(($(now_ms) - t0))
		total=$((total + took))
		[ "$took" -gt "$worst" ] && worst=$took
		wait "$fpid" || { tail -20 "/tmp/fio.$i"; fail "fio's verify failed in cycle $i"; }
		echo "cycle $i: I/O flowed ${took} ms after the restart (server ready after $ready ms); fio verified"
	done
	echo "restart to I/O over $CYCLES cycles: mean $((total / CYCLES)) ms, worst $worst ms"
	if [ "$VARIANT" = rust ]; then
		resends=$(log_stat "$luid" announce_resends)
		timeouts=$(log_stat "$luid" timeouts)
		echo "requests resent on announcement: $resends; 15 s timeouts: $timeouts"
		[ "$timeouts" -eq 0 ] || fail "a request waited for the 15 s timeout despite the announcement"
		[ "$(log_stat "$luid" reconnects)" -ge "$CYCLES" ] || fail "fewer re-attachments than restarts"
	else
		# Upstream keeps its "all in sync" hint across a core-log server restart, so it never
		# asks for the resync the new server needs (fixed in the Rust module): only fio's
		# verify is checked.
		echo "C module: no resync after a core-log restart (upstream's stale in_sync_hint)"
		dm remove m0 || fail "remove failed"
		return 0
	fi
	wait_in_sync m0 300 || fail "no resync"
	legs_identical 8 || fail "the legs differ"
	dm remove m0 || fail "remove failed"
}

no_server_at_table_load() {
	stop_server
	mark_dmesg
	t0=$(now_ms)
	if dm create m1 --table "$(mirror_table "$UUID" core 1024)" 2>/tmp/err; then
		fail "a table loaded without a server"
	fi
	echo "refused after $(($(now_ms) - t0)) ms: $(cat /tmp/err | head -2)"
	new_dmesg | grep -i "server not found" || fail "no message naming the missing server"
	dm info m1 >/dev/null 2>&1 && fail "a device was left behind"
	start_server || fail "dm-ulogd did not start"
	create_mirror m1 "$UUID" core 1024 || fail "create with the server failed"
	dd if=/tmp/data of=/dev/mapper/m1 bs=64k count=4 oflag=direct 2>/dev/null || fail "write failed"
	dm remove m1 || fail "remove failed"
}

server_appears_later() {
	create_mirror m5 "$UUID" core 1024 || fail "create failed"
	# Marked before the kill: the first request to miss the server may come at once.
	mark_dmesg
	kill_server
	dd if=/tmp/data of=/dev/mapper/m5 bs=64k count=8 oflag=direct 2>/dev/null &
	dpid=$!
	sleep 3
	kill -0 "$dpid" 2>/dev/null || fail "a write completed without a server"
	if [ "$VARIANT" = rust ]; then
		# Status answers at once and says the server is gone (upstream's would block).
		st=$(timeout 5 dmsetup status m5) || fail "status blocked without a server"
		echo "status: $st"
		echo "$st" | grep -q "COM_FAILURE server_unreachable_for=[0-9.]*s max_server_wait=forever" ||
			fail "status does not say the server is unreachable"
	fi
	t0=$(now_ms)
	start_server || fail "dm-ulogd did not start"
	wait "$dpid" || fail "the waiting write failed"
	echo "the waiting write completed $(($(now_ms) - t0)) ms after the server started"
	outage=$(new_dmesg | grep -E "log server (not )?reachable")
	echo "$outage"
	reads_back m5 8 || fail "read-back differs"
	# The C module fails a request it retried after reconnecting if its reply carries data
	# (ENOSPC): when that was a GET_RESYNC_WORK, the resync waits for the next write. Seen
	# when the kill came while one was waiting; a shorter wait then, under the watchdog.
	lost=$(new_dmesg | grep -c "Insufficient space to receive package")
	if ! wait_in_sync m5 "$([ "$lost" -gt 0 ] && echo 30 || echo 120)"; then
		dm remove m5
		[ "$lost" -gt 0 ] && upstream_bug "a request retried after a reconnect has no room for its reply (ENOSPC): a GET_RESYNC_WORK lost that way stalls the resync" "no resync"
		fail "no resync"
	fi
	legs_identical 8 || fail "the legs differ"
	dm remove m5 || fail "remove failed"
	if [ "$VARIANT" = rust ]; then
		echo "$outage" | grep -q "userspace log server not reachable" || fail "no message when the outage began"
		echo "$outage" | grep -q "userspace log server reachable again after [0-9]* ms" ||
			fail "no message when it ended"
	fi
}

server_gone_across_suspend_resume() {
	create_mirror m6 "$UUID" core 1024 || fail "create failed"
	wait_in_sync m6 120 || fail "no sync"
	sleep 1
	# Gone before the suspend: suspend and resume still work, without a server.
	kill_server
	t0=$(now_ms)
	dm suspend m6 && dm resume m6 || fail "suspend/resume without a server failed"
	echo "suspend+resume without a server: $(($(now_ms) - t0)) ms"
	start_server || fail "dm-ulogd did not start"
	dd if=/tmp/data of=/dev/mapper/m6 bs=64k count=4 oflag=direct 2>/dev/null || fail "write failed"
	# Gone between suspend and resume: the writes after the resume wait for the new server.
	dm suspend m6 || fail "suspend failed"
	kill_server
	dm resume m6 || fail "resume without a server failed"
	dd if=/tmp/data of=/dev/mapper/m6 bs=64k count=4 skip=4 seek=4 oflag=direct 2>/dev/null &
	dpid=$!
	sleep 1
	start_server || fail "dm-ulogd did not start"
	wait "$dpid" || fail "the write after the resume failed"
	reads_back m6 8 || fail "read-back differs"
	wait_in_sync m6 120 || fail "no resync"
	legs_identical 8 || fail "the legs differ"
	dm remove m6 || fail "remove failed"
}

# dmsetup info's event counter.
events() { dm info "$1" | awk '/Event number/ { print $3 }'; }

bounded_wait_fails_requests_and_raises_an_event() {
	rust_only "max_server_wait"
	create_mirror m7 "$UUID" max_server_wait=2 core 1024 || fail "create failed"
	dm table m7 | grep -q " max_server_wait=2 core 1024 " || fail "table: $(dm table m7)"
	wait_in_sync m7 120 || fail "no sync"
	luid=$(luids | sort -n | tail -n 1)
	before=$(events m7)
	kill_server
	t0=$(now_ms)
	# Without handle_errors the mirror goes on writing once the log has failed.
	dd if=/tmp/data of=/dev/mapper/m7 bs=64k count=4 oflag=direct 2>/dev/null || fail "write failed"
	took=$(($(now_ms) - t0))
	echo "a write without a server completed after $took ms (bound 2 s)"
	[ "$took" -ge 1900 ] || fail "the write did not wait for the bound"
	st=$(dm status m7)
	echo "status: $st"
	echo "$st" | grep -q "COM_FAILURE server_unreachable_for=[0-9.]*s max_server_wait=2s" ||
		fail "status does not show the outage"
	after=$(events m7)
	echo "events: $before -> $after; gave_up $(log_stat "$luid" gave_up)"
	[ "$after" -gt "$before" ] || fail "no dm event"
	[ "$(log_stat "$luid" gave_up)" -gt 0 ] || fail "no request gave up"
	start_server || fail "dm-ulogd did not start"
	dd if=/tmp/data of=/dev/mapper/m7 bs=64k count=4 seek=4 oflag=direct 2>/dev/null || fail "write failed"
	dm status m7 | grep -q COM_FAILURE && fail "status still shows the outage: $(dm status m7)"
	wait_in_sync m7 120 || fail "no resync after the server came back"
	dm remove m7 || fail "remove failed"
	# The module parameter sets the bound for tables that do not.
	stop_server
	unload_module || fail "rmmod failed"
	insmod "$MODULE" max_server_wait=1 || fail "insmod max_server_wait=1 failed"
	start_server || fail "dm-ulogd did not start"
	create_mirror m7 "$UUID" core 1024 || fail "create failed"
	# A write to a region still being resynced waits for that resync, which needs the log.
	wait_in_sync m7 120 || fail "no sync"
	kill_server
	dd if=/tmp/data of=/dev/mapper/m7 bs=64k count=1 oflag=direct 2>/dev/null || fail "write failed"
	dm status m7 | grep -q "max_server_wait=1s" || fail "the parameter did not bound the wait: $(dm status m7)"
	dm remove m7 || fail "remove failed"
	unload_module && load_module || fail "reload failed"
	start_server || fail "dm-ulogd did not start"
}

# hostile_stat NAME: from dm-ulog-hostile's SIGUSR1 line "hostile: requests=N malformed=M seed=S".
hostile_stat() {
	kill -USR1 "$(cat /tmp/dm-ulogd.pid)"
	sleep 0.2
	grep "hostile: " /tmp/dm-ulogd.log | tail -n 1 | sed -n "s/.*$1=\([0-9]*\).*/\1/p"
}

fuzzing_server() {
	rust_only "fuzzing targets this project's module"
	stop_server
	start_server dm-ulog-hostile --seed 11 --fuzz 1 --max-malformed "$FUZZ_MALFORMED" || fail "hostile did not start"
	# nosync over zeroed legs: the legs agree without a resync, which would take minutes here.
	dd if=/dev/zero of=/dev/ram0 bs=1M count=8 2>/dev/null
	dd if=/dev/zero of=/dev/ram1 bs=1M count=8 2>/dev/null
	create_mirror m2 "$UUID" core 8 nosync || fail "create failed"
	dropped0=$(($(transport_stat dropped_malformed) + $(transport_stat dropped_unmatched)))
	round=0
	while :; do
		round=$((round + 1))
		verified_writes m2 "$round" || { tail -20 "/tmp/fio.$round"; fail "fio's verify failed under fuzzing"; }
		malformed=$(hostile_stat malformed)
		[ "$malformed" -ge "$FUZZ_MALFORMED" ] && break
		[ "$round" -lt 2000 ] || fail "only $malformed malformed replies sent"
	done
	dropped=$(($(transport_stat dropped_malformed) + $(transport_stat dropped_unmatched) - dropped0))
	echo "rounds $round: $(hostile_stat requests) requests, $malformed malformed replies; kernel dropped $dropped"
	[ "$dropped" -gt $((malformed / 2)) ] || fail "the kernel dropped too few of them"
	legs_identical 8 || fail "the legs differ"
	dm remove m2 || fail "remove failed"
	stop_server
	start_server || fail "dm-ulogd did not start"
}

table_swap_with_one_uuid() {
	stop_server
	rm -f /tmp/swap.rec
	start_server dm-ulogd --record /tmp/swap.rec || fail "dm-ulogd did not start"
	create_mirror m3 SWAP-UUID core 1024 || fail "create failed"
	dm load m3 --table "$(mirror_table SWAP-UUID core 1024)" || fail "load 2 failed"
	dm resume m3 || fail "resume of table 2 failed"
	dm load m3 --table "$(mirror_table SWAP-UUID core 1024)" || fail "load 3 failed"
	dm clear m3 || fail "clear failed"
	dd if=/tmp/data of=/dev/mapper/m3 bs=64k count=2 oflag=direct 2>/dev/null || fail "write failed"
	dm remove m3 || fail "remove failed"
	stop_server
	start_server || fail "dm-ulogd did not start"
	# Each CTR and DTR with the luid it names.
	life=$(awk '{ split($2, l, "="); t = substr($3, 2) } t == "CTR" || t == "DTR" { print t, l[2] }' /tmp/swap.rec)
	echo "$life"
	set -- $(echo "$life" | awk '$1 == "CTR" { print $2 }')
	[ $# -eq 3 ] || fail "expected 3 log instances, got $#"
	a=$1 b=$2 c=$3
	[ "$a" != "$b" ] && [ "$b" != "$c" ] && [ "$a" != "$c" ] || fail "luids repeat"
	expect=$(printf 'CTR %s\nCTR %s\nDTR %s\nCTR %s\nDTR %s\nDTR %s' "$a" "$b" "$a" "$c" "$c" "$b")
	[ "$life" = "$expect" ] || fail "wrong lives; expected: $expect"
	# Table 2's log served the I/O after the swap.
	awk -v l="$b" '$2 == "luid=" l && $3 == "|FLUSH"' /tmp/swap.rec | grep -q . || fail "table 2's log saw no FLUSH"
}

sixty_four_mirrors() {
	dd if=/dev/zero of=/dev/ram0 bs=1M count=64 2>/dev/null
	dd if=/dev/zero of=/dev/ram1 bs=1M count=64 2>/dev/null
	many_mirrors many MANY 2048 || fail "64 mirrors could not be made"
	[ "$(luids | wc -l)" -ge 64 ] ||
		[ "$VARIANT" = c ] || fail "not 64 logs in debugfs"
	t0=$(now_ms)
	pids=
	i=0
	while [ "$i" -lt 64 ]; do
		dd if=/tmp/data of="/dev/mapper/many$i" bs=64k count=16 oflag=direct 2>/dev/null &
		pids="$pids $!"
		i=$((i + 1))
	done
	for p in $pids; do wait "$p" || fail "a write failed"; done
	echo "64 mirrors x 1 MiB written at once in $(($(now_ms) - t0)) ms"
	legs_identical 64 || fail "the legs differ"
	i=0
	while [ "$i" -lt 64 ]; do
		reads_back "many$i" 16 || fail "mirror $i reads back wrong"
		dm remove "many$i" || fail "remove $i failed"
		i=$((i + 1))
	done
	[ -z "$(dm ls | grep many)" ] || fail "mirrors left behind"
}

# Aims failslab at this module: only slab allocations with the module's code on the stack can
# fail (the stack filter, require-start/end), so every step of a sweep hits the module, not exec
# or device-mapper's core. Sets FS to the failslab directory; the caller sets what fails.
failslab_on_module() {
	FS=/sys/kernel/debug/failslab
	[ -f "$FS/require-start" ] || { echo "no failslab stack filter in this kernel"; exit "$KSFT_SKIP"; }
	# /proc/modules: name size refs deps state address. The module's memory lies in
	# [address, address + size); the address is 0xffffffffXXXXXXXX, so the low half carries.
	set -- $(awk '$1 == "dm_log_userspace" { print $2, $6 }' /proc/modules)
	[ -n "$2" ] || fail "the module is not loaded"
	high=${2%????????}
	end=$((0x${2#"$high"} + $1))
	[ "$end" -lt 4294967296 ] || fail "the module's range crosses 4 GiB"
	echo "$2" >"$FS/require-start"
	printf '%s%08x\n' "$high" "$end" >"$FS/require-end"
	echo 32 >"$FS/stacktrace-depth"
	# The transport sends with GFP_NOIO, which may sleep: include such allocations.
	echo N >"$FS/ignore-gfp-wait"
	echo 0 >"$FS/verbose"
	echo 0 >"$FS/probability"
	# Each injected failure counts this down: how a test sees that one happened.
	echo 1000000 >"$FS/times"
}

# Puts failslab back as the kernel started it: nothing fails.
failslab_off() {
	echo 0 >"$FS/probability"
	echo Y >"$FS/ignore-gfp-wait"
	echo 0 >"$FS/require-start"
	echo 0xffffffffffffffff >"$FS/require-end"
	echo 1 >"$FS/times"
}

# Every slab allocation the module makes while a table is created (load and resume, as one
# `dmsetup create`) fails once, in turn, until the nth allocation is past the last one.
failslab_table_loads() {
	failslab_on_module
	created=0
	refused=0
	: >/tmp/fs.errors
	n=0
	while :; do
		n=$((n + 1))
		[ "$n" -le 1000 ] || fail "over 1000 module allocations in one table load"
		before=$(cat "$FS/times")
		mark_dmesg
		ok=0
		# The nth allocation the dmsetup process makes with the module on the stack fails.
		sh -c 'echo "$1" >/proc/self/fail-nth && exec dmsetup --noudevsync create mf --table "$2"' \
			sh "$n" "$(mirror_table FS-UUID core 1024)" >/tmp/fs.out 2>&1 && ok=1
		if [ "$(cat "$FS/times")" = "$before" ]; then
			# Nothing was injected: the load made fewer than n module allocations.
			[ "$ok" = 1 ] || fail "a load failed with nothing injected: $(cat /tmp/fs.out)"
			dm remove mf || fail "remove after the sweep's last load failed"
			break
		fi
		if [ "$ok" = 1 ]; then
			created=$((created + 1))
			dm mknodes mf
			dd if=/tmp/data of=/dev/mapper/mf bs=64k count=2 oflag=direct 2>/dev/null ||
				fail "write after allocation $n failed"
			dm remove mf || fail "remove after allocation $n failed"
		else
			refused=$((refused + 1))
			grep -i "fail\|error" /tmp/fs.out | head -n 1 >>/tmp/fs.errors
			# dm-raid1 calls every log failure EINVAL; this module names the cause.
			if [ "$VARIANT" = rust ]; then
				new_dmesg | grep -q "out of memory" ||
					fail "no kernel message named the failed allocation $n: $(new_dmesg | tail -n 3)"
			fi
			dm remove mf >/dev/null 2>&1
		fi
		dm info mf >/dev/null 2>&1 && fail "mf left behind after allocation $n failed"
	done
	failslab_off
	echo "$((n - 1)) module allocations in a table load, each failed once: $created loads went on, $refused were refused"
	echo "what dmsetup said when refused:"
	sort /tmp/fs.errors | uniq -c
	[ "$refused" -gt 0 ] || fail "no injected failure refused a load"
	# Nothing is left on the server either: a fresh log with that UUID works.
	create_mirror mf FS-UUID core 1024 || fail "create after the sweep failed"
	dd if=/tmp/data of=/dev/mapper/mf bs=64k count=2 oflag=direct 2>/dev/null || fail "write failed"
	dm remove mf || fail "remove failed"
}

# A mark that mark_region could not record (it may not sleep, and its list's growth beyond the
# 256 it holds failed) is recorded by the flush the write waits for, with an allocation that
# may sleep, 256 regions at a time (the 768 lost here go in three parts, each with its FLUSH).
# 1024 regions written in one bio, every non-sleeping allocation of the module failing; while
# the writes are held in flight on a dm-delay leg, every region they touch must read dirty on
# the disk log's device.
lost_mark_recorded_before_its_write() {
	rust_only "marks recorded without sleeping (the C module's come from a mempool)"
	logdev=/dev/ram4
	dd if=/dev/zero of="$logdev" bs=64k count=1 oflag=direct 2>/dev/null
	dm create slowleg --table "0 16384 delay /dev/ram3 0 0 /dev/ram3 0 3000" || fail "dm-delay refused"
	dm mknodes slowleg
	dm create ml --table "0 16384 mirror userspace 5 LOST-UUID disk $logdev 8 nosync 2 /dev/ram2 0 /dev/mapper/slowleg 0" ||
		fail "create failed"
	dm mknodes ml
	shown=$(dm-ulogd disk-show "$logdev")
	echo "before: $shown"
	case "$shown" in *"nr_regions=2048 clean=2048"*) ;; *) fail "not a clean log of 2048 regions" ;; esac
	failslab_on_module
	# Only allocations that cannot sleep fail: mark_region's, not the flush's.
	echo Y >"$FS/ignore-gfp-wait"
	echo 100 >"$FS/probability"
	before=$(cat "$FS/times")
	mark_dmesg
	dd if=/dev/urandom of=/dev/mapper/ml bs=4M count=1 oflag=direct 2>/dev/null &
	wpid=$!
	sleep 1.5
	held=$(dm-ulogd disk-show "$logdev")
	injected=$((before - $(cat "$FS/times")))
	failslab_off
	wait "$wpid"
	wrc=$?
	echo "writes in flight: $held; failed allocations: $injected"
	new_dmesg | grep -E "mark could not|dm-raid1|log" | head -n 5
	dm remove ml && dm remove slowleg || fail "teardown failed"
	[ "$injected" -gt 0 ] || fail "no allocation failed: no mark was lost, the test proved nothing"
	clean=$(echo "$held" | sed -n 's/.* clean=\([0-9]*\).*/\1/p')
	[ "$clean" -le 1024 ] || fail "$((clean - 1024)) of the 1024 regions being written read clean: their marks were lost"
	[ "$wrc" -eq 0 ] || fail "the write failed"
}

# A fifth of the module's allocations fail while fio writes and verifies: the log's requests
# fail (the mirror sees a log failure), but the writes go on and read back right.
failslab_during_writes() {
	failslab_on_module
	# nosync over zeroed legs: the writes alone, without a resync's requests failing too.
	dd if=/dev/zero of=/dev/ram0 bs=1M count=8 2>/dev/null
	dd if=/dev/zero of=/dev/ram1 bs=1M count=8 2>/dev/null
	create_mirror mw FSW-UUID core 64 nosync || fail "create failed"
	ok=1
	echo 20 >"$FS/probability"
	echo 1 >"$FS/interval"
	verified_writes mw 7 || ok=0
	echo 0 >"$FS/probability"
	injected=$((1000000 - $(cat "$FS/times")))
	failslab_off
	[ "$ok" = 1 ] || { tail -20 /tmp/fio.7; fail "fio failed while allocations failed"; }
	echo "$injected module allocations failed during 2 MiB of verified writes; fio's verify passed"
	echo "status: $(dm status mw)"
	[ "$injected" -gt 0 ] || fail "no allocation was failed"
	dm remove mw || fail "remove failed"
	create_mirror mw FSW-UUID core 64 || fail "create after the injection failed"
	dd if=/tmp/data of=/dev/mapper/mw bs=64k count=4 oflag=direct 2>/dev/null || fail "write failed"
	dm remove mw || fail "remove failed"
}

unload_refused_while_a_log_exists() {
	create_mirror m4 "$UUID" core 1024 || fail "create failed"
	unload_module 2>/dev/null && fail "rmmod succeeded while a log exists"
	module_loaded || fail "the module is gone"
	dd if=/tmp/data of=/dev/mapper/m4 bs=64k count=2 oflag=direct 2>/dev/null || fail "write after refused rmmod failed"
	dm remove m4 || fail "remove failed"
	unload_module || fail "rmmod failed without logs"
}

load_unload_100_times() {
	module_loaded && { unload_module || fail "rmmod failed"; }
	i=0
	while [ "$i" -lt 100 ]; do
		load_module || fail "insmod $i failed"
		unload_module || fail "rmmod $i failed"
		i=$((i + 1))
	done
	load_module || fail "insmod failed"
	create_mirror m4 "$UUID" core 1024 || fail "create after 100 reloads failed"
	dm remove m4 || fail "remove failed"
	stop_server
	unload_module || fail "final rmmod failed"
}
