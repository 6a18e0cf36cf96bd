# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
# The cluster suite's tests of the corosync binding alone: the cpg_probe example on each node
# joins a group through dm-ulogd's binding (server/src/cluster/corosync.rs) and writes what it
# delivers, one line each ("view <id> members=1,2,3 joined=.. left=.. quorate=1" or
# "msg <from> <text>"). Sourced by run.sh; needs $probe.

GROUP_TESTS="cluster_group_agreed_order cluster_group_node_lost cluster_group_minority_partition"

# start_probe N NAME ARGS...: node N's probe in the group of log NAME, writing $work/NAME.N.
# (ip netns exec runs the probe in its own process, so $! is the probe's.)
start_probe() {
	local n=$1 name=$2
	shift 2
	ip netns exec "$(ns "$n")" "$probe" "$@" "$name" "$work/$name.$n" 2>>"$work/$name.$n.err" &
	echo $! >"$work/$name.$n.pid"
}
stop_probe() {
	kill -TERM "$(cat "$work/$1.$2.pid")" 2>/dev/null || true
	wait "$(cat "$work/$1.$2.pid")" 2>/dev/null || true
}
count_msgs() { [ -f "$1" ] && [ "$(grep -c "^msg" "$1")" -ge "$2" ]; }
# The last view's id, members and quorum (joined and left are relative to each node's past).
last_view() { grep "^view" "$1" | tail -n 1 | awk '{ print $2, $3, $NF }'; }
# The ids of the views of MEMBERS in FILE.
view_ids() { grep "^view [0-9]* members=$2 " "$1" | awk '{ print $2 }'; }
# Keeps what the probes of NAME wrote so far (before they stop: then the others see them go).
snapshot() { for n in 1 2 3; do cp "$work/$1.$n" "$work/$1.$n.before-stop"; done; }
has_view() { grep -q "^view [0-9]* members=$2 .*quorate=$3$" "$1" 2>/dev/null; }
probe_files() { echo "$work/$1".? "$work/$1".?.err; }

# Every node delivers every node's messages in one order, its own included.
cluster_group_agreed_order() {
	local messages=300 ok=ok n
	for n in 1 2 3; do start_probe "$n" order --send $messages --members 3; done
	for n in 1 2 3; do wait_for 60 count_msgs "$work/order.$n" $((3 * messages)) || ok="not ok"; done
	for n in 1 2 3; do stop_probe order "$n"; done
	for n in 2 3; do
		cmp -s <(grep "^msg" "$work/order.1") <(grep "^msg" "$work/order.$n") || ok="not ok"
		[ "$(view_ids "$work/order.1" 1,2,3)" = "$(view_ids "$work/order.$n" 1,2,3)" ] || ok="not ok"
	done
	has_view "$work/order.1" 1,2,3 1 || ok="not ok"
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(probe_files order)
}

# A node whose corosync is killed leaves the view of the others, who stay quorate and agree
# on the new view's id; its own probe hears the connection close.
cluster_group_node_lost() {
	local ok=ok n
	for n in 1 2 3; do start_probe "$n" lost --members 3; done
	for n in 1 2 3; do wait_for 20 has_view "$work/lost.$n" 1,2,3 1 || ok="not ok"; done
	kill_corosync 3
	for n in 1 2; do
		wait_for 20 grep -q "members=1,2 joined= left=3 quorate=1" "$work/lost.$n" || ok="not ok"
	done
	[ "$(view_ids "$work/lost.1" 1,2)" = "$(view_ids "$work/lost.2" 1,2)" ] || ok="not ok"
	wait_for 10 grep -q "closed the connection" "$work/lost.3.err" || ok="not ok"
	for n in 1 2 3; do stop_probe lost "$n"; done
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(probe_files lost)
	start_corosync 3
	wait_quorum 3 || die "node 3's corosync did not rejoin"
}

# A node cut off is a minority: its view is not quorate, the other two's is. Healed, all
# three are in one quorate view again, with one id.
cluster_group_minority_partition() {
	local ok=ok n
	for n in 1 2 3; do start_probe "$n" part --members 3; done
	for n in 1 2 3; do wait_for 20 has_view "$work/part.$n" 1,2,3 1 || ok="not ok"; done
	cut_off 3
	wait_for 20 has_view "$work/part.3" 3 0 || ok="not ok"
	for n in 1 2; do
		wait_for 20 grep -q "members=1,2 joined= left=3 quorate=1" "$work/part.$n" || ok="not ok"
	done
	join_again 3
	for n in 1 2 3; do
		wait_for 30 sh -c "tail -n 1 $work/part.$n | grep -q 'members=1,2,3 .*quorate=1'" || ok="not ok"
	done
	snapshot part
	[ "$(last_view "$work/part.1")" = "$(last_view "$work/part.3")" ] || ok="not ok"
	[ "$(last_view "$work/part.2")" = "$(last_view "$work/part.3")" ] || ok="not ok"
	# From the cut to the merge, node 3 never saw itself as a quorate group of one.
	awk '/^view .* quorate=0$/ { cut = 1 } cut && /^view [0-9]* members=3 .*quorate=1$/ { bad = 1 }
		END { exit !bad }' "$work/part.3.before-stop" && ok="not ok"
	for n in 1 2 3; do stop_probe part "$n"; done
	# shellcheck disable=SC2046
	result "$ok" "${FUNCNAME[0]}" $(probe_files part)
}
