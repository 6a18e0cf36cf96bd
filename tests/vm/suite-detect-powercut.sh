# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# The power-cut replay of suite-powercut.sh must find each of five bugs planted in the module
# or the log server: a checker that never saw the bad case proved nothing. The planted modules
# are built for this suite only (scripts/build-module.sh with DMLU_PLANTED), never shipped;
# the planted server faults are dm-ulog-hostile's `ignore` and `early`. The kernel's own disk
# log, which flushes the legs first, passes the same replay (suite-powercut.sh).

DETECT=1
# The workload of suite-powercut.sh as it is (1 MiB a job): a shorter one ends before the
# cold job's first pause, so no region is ever clean on the log device and written again
# (with clears waiting 3 s for their regions to go idle, 256 KiB showed 0 and 30 cycles, and
# neither a server ignoring marks nor a module forgetting them was caught).
. "$here/suite-powercut.sh"
TESTS="setup caught_module_skipping_the_leg_flush caught_module_clearing_before_the_write
caught_module_forgetting_unflushed_marks caught_server_answering_flush_before_durable
caught_server_ignoring_marks teardown"

# caught NAME CONFIG...: a replay of that configuration finds unmarked differing regions.
caught() {
	what=$1
	shift
	if cut_and_check "$@"; then
		fail "the replay found nothing wrong with $what"
	fi
	echo "caught: $what"
}

# with_planted_module NAME: the module built with that planted bug, and dm-ulogd.
with_planted_module() {
	ko=$DMLU_EXTRA_KO_DIR/dm_log_userspace_planted_$1.ko
	[ -f "$ko" ] || fail "no planted module $ko"
	stop_server
	unload_module || fail "rmmod failed"
	insmod "$ko" || fail "insmod $ko failed"
	start_server || fail "dm-ulogd did not start"
}

# with_planted_server FAULT...: the module users get, and dm-ulog-hostile with these faults.
with_planted_server() {
	stop_server
	unload_module || fail "rmmod failed"
	load_module || fail "insmod failed"
	args=""
	for f in "$@"; do args="$args --fault $f"; done
	# shellcheck disable=SC2086
	start_server dm-ulog-hostile $args || fail "dm-ulog-hostile did not start"
}

caught_module_skipping_the_leg_flush() {
	with_planted_module skip_leg_flush
	caught "a module that sends clears without flushing the legs" \
		"module=planted config=skip_leg_flush" $(userspace_log disk)
}

caught_module_clearing_before_the_write() {
	with_planted_module clear_before_write
	caught "a module that clears a region before its write completes" \
		"module=planted config=clear_before_write" $(userspace_log disk)
}

caught_module_forgetting_unflushed_marks() {
	with_planted_module forget_unflushed_marks
	caught "a module that does not send a dead server's unflushed marks to its successor" \
		"module=planted config=forget_unflushed_marks" dies $(userspace_log disk)
}

caught_server_answering_flush_before_durable() {
	with_planted_server "flush:early=300*0"
	caught "a server that answers FLUSH before its bitmap is durable" \
		"module=$VARIANT config=server_early_flush" $(userspace_log disk)
}

caught_server_ignoring_marks() {
	with_planted_server "mark_region:ignore*0"
	caught "a server that ignores MARK_REGION" \
		"module=$VARIANT config=server_ignores_marks" $(userspace_log disk)
}
