# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
# The cluster suite's tests of dm-ulogd serving one clustered log from the three nodes: on
# each node a fake kernel (dm-ulog-fakekernel: dm-raid1's requests for one mirror, over the
# connector's framing on a Unix socket) and dm-ulogd in the node's namespace, talking to the
# node's corosync. Each test ends with the fake kernels' checker over every node's event
# log: no region recovered while another node holds a mark on it, one recoverer at a time,
# every request answered (but a killed node's), every region in sync at the end. Sourced by
# run.sh; needs $fakekernel and $dmulogd.

SERVER_TESTS="cluster_three_nodes_serve_one_log cluster_rapid_suspend_resume \
cluster_leader_killed_under_load cluster_daemon_killed_node_lives cluster_rejoin_with_state_transfer \
cluster_minority_partition cluster_disk_log_leader_killed cluster_node_lost"

# 64 regions of 512 KiB.
TABLE="65536 clustered-core 1024"
REGIONS=64

# start_kernel N NAME ARGS...: node N's fake kernel for log NAME ($work/NAME.N.*), with the
# table $TABLE (or ${table:-} when set).
start_kernel() {
	local n=$1 name=$2
	shift 2
	"$fakekernel" --listen "$work/$name.$n.sock" --events "$work/$name.$n.events" \
		--table "${table:-$TABLE}" --uuid "CLUSTER-$name" --node "n$n" --seed "$n" --settle 60 "$@" \
		2>>"$work/$name.$n.kernel.err" &
	echo $! >"$work/$name.$n.kpid"
}

# start_server N NAME: node N's dm-ulogd, in the node's namespace (its corosync's), on the
# fake kernel's socket.
start_server() {
	local n=$1 name=$2
	wait_for 10 test -S "$work/$name.$n.sock" || return 1
	# In a subshell: not a job of this shell, which would report its killing.
	(
		ip netns exec "$(ns "$n")" "$dmulogd" --foreground --log info \
			--kernel-socket "$work/$name.$n.sock" --lock-file "$work/$name.$n.lock" \
			>>"$work/$name.$n.server.log" 2>&1 &
		echo $! >"$work/$name.$n.spid"
	)
}
kill_server() { kill -KILL "$(cat "$work/$1.$2.spid")" 2>/dev/null || true; }
kill_kernel() {
	local pid
	pid=$(cat "$work/$1.$2.kpid")
	disown "$pid" 2>/dev/null || true
	kill -KILL "$pid" 2>/dev/null || true
}

# start_node N NAME ARGS...: node N's fake kernel (with ARGS) and dm-ulogd.
start_node() {
	start_kernel "$@"
	start_server "$1" "$2"
}

# wait_kernels NAME N...: waits for the fake kernels of nodes N... to finish; false if one
# fails or takes over 120 s.
wait_kernels() {
	local name=$1 n ok=0
	shift
	for n in "$@"; do
		wait_for 120 sh -c "! kill -0 $(cat "$work/$name.$n.kpid") 2>/dev/null" || ok=1
		wait "$(cat "$work/$name.$n.kpid")" || ok=1
	done
	return $ok
}

# check NAME: the checker over every node's event log of NAME.
check() {
	"$fakekernel" check "$work/$1".?.events --all-in-sync $REGIONS >"$work/$1.check" 2>&1
}

# Prints the p50 round trip of first sends of TYPE per node, as a KTAP comment.
round_trips() {
	python3 "$TOP/tests/cluster/round_trip.py" "$@" | sed 's/^/# /'
}

server_files() { echo "$work/$1.check" "$work/$1".?.kernel.err "$work/$1".?.server.log; }

# Three nodes write to one log, suspend and resume now and then, and recover it together.
cluster_three_nodes_serve_one_log() {
	local ok=ok n
	for n in 1 2 3; do start_node "$n" three --duration 4 --suspend-every 1.5; done
	wait_kernels three 1 2 3 || ok="not ok"
	check three || ok="not ok"
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(server_files three)
	round_trips "three cluster" "$work"/three.?.events
}

# Suspend and resume cycles every 0.2 s on every node under load.
cluster_rapid_suspend_resume() {
	local ok=ok n
	for n in 1 2 3; do start_node "$n" cycles --duration 4 --suspend-every 0.2; done
	wait_kernels cycles 1 2 3 || ok="not ok"
	check cycles || ok="not ok"
	# Each node went through suspend cycles (RESUME sent more than once).
	for n in 1 2 3; do
		[ "$(grep -c '"type":"RESUME","why":"first"' "$work/cycles.$n.events")" -gt 3 ] || ok="not ok"
	done
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(server_files cycles)
}

# The leader (node 1, the lowest) has its dm-ulogd killed under load and started again: the
# others go on (node 2 leads), node 1's marks and claim stay while its kernel may write, and
# node 1 rejoins with a state transfer while its kernel resends.
cluster_leader_killed_under_load() {
	local ok=ok n
	for n in 1 2 3; do start_node "$n" leader --duration 5; done
	sleep 1.5
	kill_server leader 1
	sleep 0.5
	start_server 1 leader
	wait_kernels leader 1 2 3 || ok="not ok"
	check leader || ok="not ok"
	grep -q "log state received" "$work/leader.1.server.log" || ok="not ok"
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(server_files leader)
}

# dm-ulogd dies on node 3, whose corosync and kernel live on: CPG reports the process down,
# not the node, so the others keep node 3's marks and claim (they log it) and recover none
# of its regions while its kernel writes; started again, node 3 rejoins and every region
# ends in sync. The checker fails any grant of a region another kernel holds marked.
cluster_daemon_killed_node_lives() {
	local ok=ok n
	for n in 1 2 3; do start_node "$n" procdown --duration 6; done
	sleep 1.5
	kill_server procdown 3
	sleep 3
	for n in 1 2; do
		grep -q "dm-ulogd stopped on node 3, which is still up" "$work/procdown.$n.server.log" ||
			ok="not ok"
		! grep -q "node 3 left holding marks" "$work/procdown.$n.server.log" || ok="not ok"
	done
	start_server 3 procdown
	wait_kernels procdown 1 2 3 || ok="not ok"
	check procdown || ok="not ok"
	grep -q "log state received" "$work/procdown.3.server.log" || ok="not ok"
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(server_files procdown)
}

# A node that joins a log the others are writing gets its state from them mid-load.
cluster_rejoin_with_state_transfer() {
	local ok=ok n
	for n in 1 2; do start_node "$n" join --duration 5; done
	sleep 2
	start_node 3 join --duration 3
	wait_kernels join 1 2 3 || ok="not ok"
	check join || ok="not ok"
	grep -q "log state received" "$work/join.3.server.log" || ok="not ok"
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(server_files join)
}

# Node 3 cut off for 5 s under load (corosync takes its token timeout and consensus, about
# 2.5 s, to see it gone): it answers EAGAIN (its kernel waits and resends) while the other
# two go on; healed, it takes the state again and finishes.
cluster_minority_partition() {
	local ok=ok n
	for n in 1 2 3; do start_node "$n" minority --duration 9; done
	sleep 1.5
	cut_off 3
	wait_for 10 grep -q "no quorum" "$work/minority.3.server.log" || ok="not ok"
	sleep 2
	join_again 3
	wait_kernels minority 1 2 3 || ok="not ok"
	check minority || ok="not ok"
	grep -q '"why":"eagain"' "$work/minority.3.events" || ok="not ok"
	grep -q "no quorum" "$work/minority.3.server.log" || ok="not ok"
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(server_files minority)
}

# A clustered-disk log on a file every node opens: the leader writes it. Its dm-ulogd is
# killed under load and restarted; the next leader writes on. At the end the device holds
# every region clean (in sync, no mark left), as a kernel reading it would find.
cluster_disk_log_leader_killed() {
	local ok=ok n table
	truncate -s 1M "$work/disk.img"
	table="65536 clustered-disk $work/disk.img 1024"
	for n in 1 2 3; do start_node "$n" disk --duration 5; done
	sleep 1.5
	kill_server disk 1
	sleep 0.5
	start_server 1 disk
	wait_kernels disk 1 2 3 || ok="not ok"
	check disk || ok="not ok"
	"$dmulogd" disk-show "$work/disk.img" --regions $REGIONS >"$work/disk.show" 2>&1 || ok="not ok"
	grep -q "magic=ok .* clean=$REGIONS$" "$work/disk.show" || ok="not ok"
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" "$work/disk.show" $(server_files disk)
}

# Node 3 lost whole (its kernel, dm-ulogd and corosync killed) under load: the other two
# see it go, recover what it had marked, and finish.
cluster_node_lost() {
	local ok=ok n
	for n in 1 2 3; do start_node "$n" lost --duration 5; done
	sleep 1.5
	kill_kernel lost 3
	kill_server lost 3
	kill_corosync 3
	wait_kernels lost 1 2 || ok="not ok"
	check lost || ok="not ok"
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(server_files lost)
	start_corosync 3
	wait_quorum 3 || die "node 3's corosync did not rejoin"
}
