# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# One node of the cluster guests (tests/cluster/guests.sh boots them side by side): corosync
# over the guests' own network, dm-ulogd serving clustered logs through corosync, the Rust
# module, and two mirrors whose legs (/dev/vda, /dev/vdb) every guest shares: one with a
# clustered-core log, one with a clustered-disk log on /dev/vdc. Each node writes its own
# part of both mirrors. Node parameters come from the kernel command line: dmlu.node=N
# dmlu.nodes=COUNT dmlu.victim=N dmlu.plan=pair|trio (tests/vm/init exports them).
# - pair: the victim node asks the host to kill it mid-write (standing in for fencing) and
#   the survivors must recover what it had marked.
# - trio: three nodes write throughout while the last one's dm-ulogd is killed and started
#   again (its guest lives), then while the host cuts node 2 off the network and joins it
#   again; every node ends with both mirrors in sync.
# The host then compares the legs and reads the disk log.

PLAN=${DMLU_PLAN:-pair}
if [ "$PLAN" = trio ]; then
	TESTS="setup cluster_node_quorate cluster_node_mirrors_active cluster_node_daemon_killed
cluster_node_partitioned cluster_node_clustered_core_recovered
cluster_node_clustered_disk_recovered teardown kmemleak_reports_nothing"
else
	TESTS="setup cluster_node_quorate cluster_node_mirrors_active cluster_node_writes
cluster_node_clustered_core_recovered cluster_node_clustered_disk_recovered teardown
kmemleak_reports_nothing"
fi

[ -n "${DMLU_NODE:-}" ] && [ -n "${DMLU_NODES:-}" ] && [ -n "${DMLU_VICTIM:-}" ] ||
	ktap_skip_all "not a cluster guest: dmlu.node=, dmlu.nodes= and dmlu.victim= on the kernel command line"
NODE=$DMLU_NODE
NODES=$DMLU_NODES
# The node the host kills (pair; 0: none), the node whose dm-ulogd is killed and the node
# the host cuts off (trio).
VICTIM=$DMLU_VICTIM
DAEMON_VICTIM=$NODES
PARTITIONED=2
# The other guest boots a debug kernel under TCG beside this one: each step's own limits
# (below) stay under this watchdog of every test's, and it under the host's limit.
TEST_TIMEOUT=${TEST_TIMEOUT:-1500}
# Each mirror: 8 MiB of 512 KiB regions; the core one at the start of the legs, the disk
# one after it.
SECTORS=16384
REGION=1024
# The shared disk the nodes meet on (barrier below): one 4 KiB block per node.
BARRIER_DEV=/dev/vdd

write_corosync_conf() {
	echo "totem {"
	echo "    version: 2"
	echo "    cluster_name: dmlu-guests"
	echo "    transport: udpu"
	echo "    ip_version: ipv4"
	# Guests under TCG share two cores: a token corosync's default would time out (three
	# guests, one core and a half each: longer still).
	echo "    token: $((NODES > 2 ? 10000 : 5000))"
	echo "    crypto_cipher: none"
	echo "    crypto_hash: none"
	echo "}"
	echo "nodelist {"
	n=1
	while [ "$n" -le "$NODES" ]; do
		echo "    node {"
		echo "        ring0_addr: 10.215.0.$n"
		echo "        nodeid: $n"
		echo "    }"
		n=$((n + 1))
	done
	echo "}"
	echo "quorum {"
	echo "    provider: corosync_votequorum"
	# Two nodes: the survivor stays quorate. The host's kill is the fencing that makes it
	# safe (README, Clusters).
	[ "$NODES" -eq 2 ] && echo "    two_node: 1"
	echo "}"
	echo "system {"
	echo "    state_dir: /tmp/corosync"
	echo "}"
	echo "logging {"
	echo "    to_stderr: no"
	echo "    to_syslog: no"
	echo "    to_logfile: yes"
	echo "    logfile: /tmp/corosync.log"
	echo "}"
}

quorate() { corosync-quorumtool -s 2>/dev/null | grep -q "^Quorate: *Yes"; }
# votes: the cluster's total votes as this node sees them (one per live node).
votes() { corosync-quorumtool -s 2>/dev/null | awk '/^Total votes:/ { print $3 }'; }
only_me_left() { [ "$(votes)" = $((NODES - 1)) ]; }

# barrier NAME SECONDS: this node has reached NAME; waits until every node has. Each node's
# block on the shared disk lists every barrier it reached, so that a node that moves on to
# the next barrier does not hide this one from a slower node. A whole page per node: a
# smaller write would read-modify-write the other nodes' blocks from this guest's cache.
barrier() {
	echo "$1" >>/tmp/barriers
	{
		cat /tmp/barriers
		head -c 4096 /dev/zero
	} | dd of="$BARRIER_DEV" bs=4096 seek="$NODE" count=1 iflag=fullblock conv=notrunc,fsync 2>/dev/null ||
		fail "cannot write the barrier disk"
	deadline=$(($(now_ms) + $2 * 1000))
	while [ "$(now_ms)" -lt "$deadline" ]; do
		all=1
		n=1
		while [ "$n" -le "$NODES" ]; do
			block_says "$n" "$1" || all=0
			n=$((n + 1))
		done
		[ "$all" = 1 ] && return 0
		sleep 0.2
	done
	fail "not every node reached '$1' within $2 s"
}
# block_says N NAME: block N of the shared disk (node N's, or the host's: 0) lists NAME.
block_says() {
	dd if="$BARRIER_DEV" bs=4096 skip="$1" count=1 iflag=direct 2>/dev/null | tr -d '\0' | grep -qx "$2"
}

# This node's part of a mirror: fio's offset and size for node NODE of NODES, whole
# regions (three nodes leave the last region unwritten).
part_size() { echo $((SECTORS / NODES / REGION * REGION * 512)); }
part_offset() { echo $(((NODE - 1) * $(part_size))); }

setup() {
	mkdir -p /tmp/corosync
	ip link set lo up
	ip addr add "10.215.0.$NODE/24" dev eth0 || fail "no eth0 (virtio-net missing?)"
	ip link set eth0 up
	write_corosync_conf >/tmp/corosync.conf
	corosync -f -c /tmp/corosync.conf >/tmp/corosync.out 2>&1 &
	echo $! >/tmp/corosync.pid
	# Quorate once both nodes are up (two_node waits for all): the other guest may still be
	# booting.
	deadline=$(($(now_ms) + 600000))
	until quorate; do
		if ! kill -0 "$(cat /tmp/corosync.pid)" 2>/dev/null || [ "$(now_ms)" -gt "$deadline" ]; then
			cat /tmp/corosync.out /tmp/corosync.log 2>/dev/null | tail -n 20
			fail "corosync not quorate (it exited, or 600 s passed)"
		fi
		sleep 0.5
	done
	start_server || fail "dm-ulogd did not start"
	load_module || fail "insmod failed"
}

cluster_node_quorate() {
	corosync-quorumtool -s
	[ "$(votes)" = "$NODES" ] || fail "corosync sees $(votes) votes, not $NODES"
}

cluster_node_mirrors_active() {
	leg0=/dev/vda
	leg1=/dev/vdb
	if [ "$NODE" = "$VICTIM" ] || { [ "$PLAN" = trio ] && [ "$NODE" = "$PARTITIONED" ]; }; then
		# The victim's legs pass through linear devices that it suspends before its kill
		# (cluster_node_writes), the cut-off node's before its cut (cluster_node_partitioned).
		dm create vleg0 --table "0 $((2 * SECTORS)) linear /dev/vda 0" || fail "no linear device over /dev/vda"
		dm create vleg1 --table "0 $((2 * SECTORS)) linear /dev/vdb 0" || fail "no linear device over /dev/vdb"
		dm mknodes
		leg0=/dev/mapper/vleg0
		leg1=/dev/mapper/vleg1
	fi
	dm create gcore --table "0 $SECTORS mirror userspace 4 DMLU-GUESTS-CORE clustered-core $REGION nosync 2 $leg0 0 $leg1 0" ||
		fail "the clustered-core mirror did not load"
	dm create gdisk --table "0 $SECTORS mirror userspace 5 DMLU-GUESTS-DISK clustered-disk /dev/vdc $REGION nosync 2 $leg0 $SECTORS $leg1 $SECTORS" ||
		fail "the clustered-disk mirror did not load"
	dm mknodes
	wait_in_sync gcore || fail "gcore not in sync"
	wait_in_sync gdisk || fail "gdisk not in sync"
	dm status
	barrier mirrors-active 300
}

# Both mirrors, this node's part: random 4 KiB direct writes (fio's crc32c headers, read back
# and checked at the end unless the node is killed first).
write_part() {
	name=$1
	shift
	fio --name="$name" --filename="/dev/mapper/$name" --rw=randwrite --bs=4k --direct=1 --ioengine=psync \
		--offset="$(part_offset)" --size="${WRITE_SIZE:-$(part_size)}" --verify=crc32c --do_verify=1 "$@" \
		--output="/tmp/fio-$name.out"
}

# mark_count UUID: how many MARK_REGION requests of that log the server has answered (the
# module's debugfs counters); a clustered log answers one once every member has applied it.
mark_count() {
	for l in $(luids); do
		log_block "$l" | grep -qx "uuid $1" && log_stat "$l" requests.MARK_REGION
	done
}
marked_since() { [ "$(mark_count "$1")" -gt "$2" ]; }

# hold_marked_writes: one write to the last region of this node's part of each mirror (which
# fio leaves alone), held in flight below the mirror (its legs suspended) once the log has
# granted its mark. (With only random writes in flight a node may hold no mark at a given
# moment: seen once on each mirror.) The writes' pids are in $held.
hold_marked_writes() {
	dm suspend --noflush vleg0 && dm suspend --noflush vleg1 || fail "cannot suspend the legs"
	last_block=$((($(part_offset) + $(part_size)) / 4096 - 1))
	held=""
	for m in gcore:DMLU-GUESTS-CORE gdisk:DMLU-GUESTS-DISK; do
		before=$(mark_count "${m#*:}")
		[ -n "$before" ] || fail "no debugfs counters for ${m#*:}"
		dd if=/dev/urandom of="/dev/mapper/${m%%:*}" bs=4096 count=1 seek="$last_block" oflag=direct 2>/dev/null &
		held="$held $!"
		wait_for 120 marked_since "${m#*:}" "$before" || fail "no mark granted for the write to ${m%%:*}"
	done
}

cluster_node_writes() {
	if [ "$NODE" = "$VICTIM" ]; then
		# Under load with the survivors, on all of its part but the last region.
		WRITE_SIZE=$(($(part_size) - REGION * 512)) write_part gcore --time_based --runtime=600 &
		core=$!
		WRITE_SIZE=$(($(part_size) - REGION * 512)) write_part gdisk --time_based --runtime=600 &
		disk=$!
		barrier writing 300
		sleep 5
		killall -9 fio
		wait "$core" "$disk"
		# Killed, this node leaves a mark on each mirror for the survivors to recover.
		hold_marked_writes
		echo "node $NODE: asking the host to kill this guest"
		echo "dmlu: cut me" >/dev/ttyS1
		sleep 600
		fail "still running: the host did not kill this guest"
	fi
	write_part gcore --number_ios=512 &
	core=$!
	write_part gdisk --number_ios=512 &
	disk=$!
	barrier writing 300
	wait_for 120 only_me_left || fail "node $VICTIM still in the cluster after 120 s"
	echo "node $VICTIM gone: $(votes) votes left"
	wait "$core" || { cat /tmp/fio-gcore.out; fail "fio on gcore failed"; }
	wait "$disk" || { cat /tmp/fio-gdisk.out; fail "fio on gdisk failed"; }
	grep -h "WRITE:" /tmp/fio-gcore.out /tmp/fio-gdisk.out
}

# Both mirrors, this node's part, for SECONDS in the background (write_both_wait waits).
write_both_for() {
	write_part gcore --time_based --runtime="$1" &
	core=$!
	write_part gdisk --time_based --runtime="$1" &
	disk=$!
}
write_both_wait() {
	wait "$core" || { cat /tmp/fio-gcore.out; fail "fio on gcore failed"; }
	wait "$disk" || { cat /tmp/fio-gdisk.out; fail "fio on gdisk failed"; }
	grep -h "WRITE:" /tmp/fio-gcore.out /tmp/fio-gdisk.out
}

# trio: node DAEMON_VICTIM's dm-ulogd is killed under writes and started again 10 s later.
# The others must take it for a process death (CPG's PROCDOWN: its node lives, so its
# kernel may still write what it marked), not a node's: its marks stay and nothing it
# marked is recovered meanwhile.
cluster_node_daemon_killed() {
	write_both_for 45
	barrier daemon-writing 300
	if [ "$NODE" = "$DAEMON_VICTIM" ]; then
		sleep 5
		kill_server
		echo "node $NODE: dm-ulogd killed under writes"
		sleep 10
		start_server || fail "dm-ulogd did not start again"
		echo "node $NODE: dm-ulogd started again"
	else
		wait_for 300 grep -q "dm-ulogd stopped on node $DAEMON_VICTIM" /tmp/dm-ulogd.log ||
			fail "dm-ulogd here did not see node $DAEMON_VICTIM's dm-ulogd stop"
		grep "dm-ulogd stopped on node $DAEMON_VICTIM" /tmp/dm-ulogd.log | tail -n 2
	fi
	write_both_wait
	if grep "node $DAEMON_VICTIM left holding marks" /tmp/dm-ulogd.log; then
		fail "node $DAEMON_VICTIM's dm-ulogd death was taken for its node's"
	fi
	barrier daemon-back 600
}

# host_said NAME SECONDS: the host's block of the barrier disk lists NAME.
host_said() {
	wait_for "$2" block_says 0 "$1" || fail "the host did not say '$1' within $2 s"
}
not_quorate() { ! quorate; }
votes_are() { quorate && [ "$(votes)" = "$1" ]; }

# trio: while every node writes, the host cuts node PARTITIONED off the network, a write to
# each mirror held in flight there under its mark (its legs suspended); the other two go on
# with quorum and take the regions it marked out of sync, it waits without; the host joins
# it again once all saw the cut, it comes back holding those marks, lets the held writes go
# and its other writes go on.
cluster_node_partitioned() {
	if [ "$NODE" = "$PARTITIONED" ]; then
		# All of its part but the last region, which hold_marked_writes writes.
		WRITE_SIZE=$(($(part_size) - REGION * 512))
		write_both_for 60
		unset WRITE_SIZE
		sleep 5
		hold_marked_writes
	else
		write_both_for 60
	fi
	barrier partition-me 300
	host_said partition-me-done 300
	if [ "$NODE" = "$PARTITIONED" ]; then
		wait_for 300 not_quorate || fail "still quorate 300 s after the cut"
	else
		wait_for 300 votes_are $((NODES - 1)) || fail "node $PARTITIONED still counted 300 s after the cut"
	fi
	echo "node $NODE: saw the cut ($(votes) votes)"
	# The majority writes on meanwhile.
	sleep 10
	barrier heal-me 300
	host_said heal-me-done 300
	wait_for 600 votes_are "$NODES" || fail "not every node back 600 s after the heal"
	echo "node $NODE: healed ($(votes) votes)"
	if [ "$NODE" = "$PARTITIONED" ]; then
		dm resume vleg0 && dm resume vleg1 || fail "cannot resume the legs"
		# shellcheck disable=SC2086
		wait $held || fail "a write held across the cut failed"
	fi
	write_both_wait
	# What dm-ulogd made of it: the cut-off node stopped serving; the others took the marks
	# it held out of sync; at the heal it took the state again.
	grep -E "no quorum|left holding marks|back holding marks|no member has the log's state|seeded" /tmp/dm-ulogd.log | tail -n 12
	if [ "$NODE" = "$PARTITIONED" ]; then
		grep -q "no quorum, not serving the log" /tmp/dm-ulogd.log || fail "dm-ulogd here went on serving without quorum"
	else
		for uuid in DMLU-GUESTS-CORE DMLU-GUESTS-DISK; do
			grep "$uuid" /tmp/dm-ulogd.log | grep -q "node $PARTITIONED left holding marks" ||
				fail "dm-ulogd here did not take node $PARTITIONED's marked regions of $uuid out of sync"
		done
	fi
	barrier partition-done 600
}

# recovered NAME UUID: the mirror is in sync again and (pair) dm-ulogd took the victim's
# marked regions out of sync (the kill came mid-write, so it held marks: nothing recovered
# would mean they were lost).
recovered() {
	# dm-raid1 asks for resync work when it has I/O to do: one write of this node's part
	# wakes it, should fio have finished before the departure took regions out of sync.
	dd if=/dev/zero of="/dev/mapper/$1" bs=4096 count=1 seek=$(($(part_offset) / 4096)) oflag=direct conv=notrunc 2>/dev/null ||
		fail "cannot write to $1"
	wait_in_sync "$1" 300 || fail "$1 not in sync again"
	dm status "$1"
	[ "$VICTIM" = 0 ] && return 0
	grep "node $VICTIM left holding marks" /tmp/dm-ulogd.log | grep "$2" ||
		fail "dm-ulogd did not take node $VICTIM's marked regions of $2 out of sync"
}

cluster_node_clustered_core_recovered() { recovered gcore DMLU-GUESTS-CORE; }
cluster_node_clustered_disk_recovered() { recovered gdisk DMLU-GUESTS-DISK; }

teardown() {
	# trio: nobody leaves before every node has both mirrors in sync.
	[ "$PLAN" = trio ] && barrier teardown 900
	dm remove gcore || fail "cannot remove gcore"
	dm remove gdisk || fail "cannot remove gdisk"
	# The linear devices under a cut-off node's legs (trio).
	if [ -e /dev/mapper/vleg0 ]; then
		dm remove vleg0 && dm remove vleg1 || fail "cannot remove the linear devices under the legs"
	fi
	sync
	stop_server
	unload_module || fail "rmmod failed"
	kill "$(cat /tmp/corosync.pid)"
}
