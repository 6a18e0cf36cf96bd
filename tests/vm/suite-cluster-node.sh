# shellcheck shell=sh
# One node of the cluster guests (tests/cluster/guests.sh boots them side by side): corosync
# over the guests' own network, dm-ulogd serving clustered logs through corosync, the Rust
# module, and two mirrors whose legs (/dev/vda, /dev/vdb) every guest shares: one with a
# clustered-core log, one with a clustered-disk log on /dev/vdc. Each node writes its own
# part of both mirrors; the victim node (dmlu.victim) asks the host to kill it mid-write
# (standing in for fencing) and the survivors must recover what it had marked. The host then
# compares the legs and reads the disk log. Node parameters come from the kernel command
# line: dmlu.node=N dmlu.nodes=COUNT dmlu.victim=N (tests/vm/init exports them).

TESTS="setup cluster_node_quorate cluster_node_mirrors_active cluster_node_writes
cluster_node_clustered_core_recovered cluster_node_clustered_disk_recovered teardown
kmemleak_reports_nothing"

[ -n "${DMLU_NODE:-}" ] && [ -n "${DMLU_NODES:-}" ] && [ -n "${DMLU_VICTIM:-}" ] ||
	ktap_skip_all "not a cluster guest: dmlu.node=, dmlu.nodes= and dmlu.victim= on the kernel command line"
NODE=$DMLU_NODE
NODES=$DMLU_NODES
VICTIM=$DMLU_VICTIM
# The other guest boots a debug kernel under TCG beside this one: each step's own limits
# (below) stay under this watchdog of every test's, and it under the host's 1800 s.
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
	# Guests under TCG share two cores: a token corosync's default would time out.
	echo "    token: 5000"
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

# barrier NAME SECONDS: this node has reached NAME (its block on the shared disk says so);
# waits until every node's block says NAME. A whole page per node: a smaller write would
# read-modify-write the other nodes' blocks from this guest's cache.
barrier() {
	printf '%-4095s\n' "$1" | dd of="$BARRIER_DEV" bs=4096 seek="$NODE" count=1 iflag=fullblock conv=notrunc,fsync 2>/dev/null ||
		fail "cannot write the barrier disk"
	deadline=$(($(now_ms) + $2 * 1000))
	while [ "$(now_ms)" -lt "$deadline" ]; do
		all=1
		n=1
		while [ "$n" -le "$NODES" ]; do
			dd if="$BARRIER_DEV" bs=4096 skip="$n" count=1 iflag=direct 2>/dev/null | head -c ${#1} | grep -qx "$1" || all=0
			n=$((n + 1))
		done
		[ "$all" = 1 ] && return 0
		sleep 0.2
	done
	fail "not every node reached '$1' within $2 s"
}

# This node's part of a mirror: fio's offset and size for node NODE of NODES.
part_size() { echo $((SECTORS * 512 / NODES)); }
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
	if [ "$NODE" = "$VICTIM" ]; then
		# The victim's legs pass through linear devices that it suspends before its kill
		# (cluster_node_writes).
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
	for f in /sys/kernel/debug/dm_log_userspace/L*; do
		grep -qx "uuid $1" "$f" && awk '$1 == "requests.MARK_REGION" { print $2 }' "$f"
	done
}
marked_since() { [ "$(mark_count "$1")" -gt "$2" ]; }

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
		# Then one write to that last region of each mirror, held in flight below the mirror
		# (its legs suspended) once the log has granted its mark: killed, this node leaves a
		# mark on each for the survivors to recover. (With only random writes in flight it
		# may hold none at the kill: seen once on each mirror.)
		dm suspend --noflush vleg0 && dm suspend --noflush vleg1 || fail "cannot suspend the legs"
		last_block=$((($(part_offset) + $(part_size)) / 4096 - 1))
		for m in gcore:DMLU-GUESTS-CORE gdisk:DMLU-GUESTS-DISK; do
			before=$(mark_count "${m#*:}")
			[ -n "$before" ] || fail "no debugfs counters for ${m#*:}"
			dd if=/dev/urandom of="/dev/mapper/${m%%:*}" bs=4096 count=1 seek="$last_block" oflag=direct 2>/dev/null &
			wait_for 120 marked_since "${m#*:}" "$before" || fail "no mark granted for the write to ${m%%:*}"
		done
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

# recovered NAME UUID: the mirror is in sync again and dm-ulogd took the victim's marked
# regions out of sync (the kill came mid-write, so it held marks: nothing recovered would
# mean they were lost).
recovered() {
	# dm-raid1 asks for resync work when it has I/O to do: one write of this node's part
	# wakes it, should fio have finished before the departure took regions out of sync.
	dd if=/dev/zero of="/dev/mapper/$1" bs=4096 count=1 seek=$(($(part_offset) / 4096)) oflag=direct conv=notrunc 2>/dev/null ||
		fail "cannot write to $1"
	wait_in_sync "$1" 300 || fail "$1 not in sync again"
	dm status "$1"
	grep "node $VICTIM left holding marks" /tmp/dm-ulogd.log | grep "$2" ||
		fail "dm-ulogd did not take node $VICTIM's marked regions of $2 out of sync"
}

cluster_node_clustered_core_recovered() { recovered gcore DMLU-GUESTS-CORE; }
cluster_node_clustered_disk_recovered() { recovered gdisk DMLU-GUESTS-DISK; }

teardown() {
	dm remove gcore || fail "cannot remove gcore"
	dm remove gdisk || fail "cannot remove gdisk"
	sync
	stop_server
	unload_module || fail "rmmod failed"
	kill "$(cat /tmp/corosync.pid)"
}
