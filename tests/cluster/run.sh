#!/usr/bin/env bash
# The cluster suite, in KTAP; every test's name begins with cluster_. Three corosync nodes run
# on the host, each in a network namespace this script makes, joined by a bridge in a fourth
# namespace; their addresses (10.213.0.1-3) exist only inside those namespaces, and nothing
# leaves them. Each node runs the cpg_probe example, which joins a log's group through
# dm-ulogd's corosync binding (server/src/cluster/corosync.rs) and writes what it delivers.
# Needs root (namespaces), corosync and iproute2 (scripts/host-deps.sh installs them).
# Usage: tests/cluster/run.sh [PROBE]     (default: builds the example)
. "$(dirname "$0")/../../scripts/lib.sh"

echo "TAP version 13"
if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root to make network namespaces"
	exit 0
fi
command -v corosync >/dev/null || die "corosync not found (scripts/host-deps.sh installs it)"
probe=${1:-}
if [ -z "$probe" ]; then
	cargo build --release --quiet -p dm-ulogd --example cpg_probe
	probe="$TOP/target/release/examples/cpg_probe"
fi

id=dmlu$$
work=$(mktemp -d /tmp/dmlu-cluster.XXXXXX)
bridge=${id}br
ns() { echo "${id}n$1"; }
in_node() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

cleanup() {
	for n in 1 2 3; do
		pkill -KILL -f "corosync -f -c $work/n$n/" 2>/dev/null || true
		ip netns pids "$(ns "$n")" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
		ip netns del "$(ns "$n")" 2>/dev/null || true
	done
	ip netns del "$bridge" 2>/dev/null || true
	[ "${DMLU_KEEP:-0}" = 1 ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$bridge"
ip -n "$bridge" link add br0 type bridge
ip -n "$bridge" link set br0 up
for n in 1 2 3; do
	ip netns add "$(ns "$n")"
	ip -n "$(ns "$n")" link add eth0 type veth peer name port$n netns "$bridge"
	ip -n "$bridge" link set port$n master br0 up
	ip -n "$(ns "$n")" addr add 10.213.0.$n/24 dev eth0
	ip -n "$(ns "$n")" link set eth0 up
	ip -n "$(ns "$n")" link set lo up
	mkdir -p "$work/n$n/state"
	cat >"$work/n$n/corosync.conf" <<-EOF
		totem {
		    version: 2
		    cluster_name: dmlu
		    transport: udpu
		    token: 1000
		    crypto_cipher: none
		    crypto_hash: none
		}
		nodelist {
		    node {
		        ring0_addr: 10.213.0.1
		        nodeid: 1
		    }
		    node {
		        ring0_addr: 10.213.0.2
		        nodeid: 2
		    }
		    node {
		        ring0_addr: 10.213.0.3
		        nodeid: 3
		    }
		}
		quorum {
		    provider: corosync_votequorum
		}
		system {
		    state_dir: $work/n$n/state
		}
		logging {
		    to_stderr: no
		    to_syslog: no
		    to_logfile: yes
		    logfile: $work/n$n/corosync.log
		}
	EOF
done

# A node's corosync, with a /run of its own for its pid file (its IPC sockets are abstract,
# so they are the namespace's already).
start_corosync() {
	local n=$1
	in_node "$n" unshare --mount sh -c \
		"mount -t tmpfs tmpfs /run && exec corosync -f -c $work/n$n/corosync.conf" \
		>>"$work/n$n/corosync.out" 2>&1 &
}
kill_corosync() { pkill -KILL -f "corosync -f -c $work/n$1/" || true; }

# Waits until node N's corosync says Quorate: Yes (or No with "no" as the second argument).
wait_quorum() {
	local n=$1 want=${2:-Yes} i
	for i in $(seq 1 150); do
		in_node "$n" corosync-quorumtool -s 2>/dev/null | grep -q "^Quorate: *$want" && return 0
		sleep 0.2
	done
	return 1
}

# start_probe N NAME ARGS...: node N's probe in the group of log NAME, writing $work/NAME.N.
# (ip netns exec runs the probe in its own process, so $! is the probe's.)
start_probe() {
	local n=$1 name=$2
	shift 2
	ip netns exec "$(ns "$n")" "$probe" "$@" "$name" "$work/$name.$n" 2>>"$work/$name.$n.err" &
	echo $! >"$work/$name.$n.pid"
}
stop_probe() { kill -TERM "$(cat "$work/$1.$2.pid")" 2>/dev/null || true; wait "$(cat "$work/$1.$2.pid")" 2>/dev/null || true; }

# wait_for SECONDS CMD...: polls CMD every 0.2 s.
wait_for() {
	local limit=$1 i
	shift
	for i in $(seq 1 $((limit * 5))); do
		"$@" && return 0
		sleep 0.2
	done
	return 1
}
count_msgs() { [ -f "$1" ] && [ "$(grep -c "^msg" "$1")" -ge "$2" ]; }
# The last view's id, members and quorum (joined and left are relative to each node's past).
last_view() { grep "^view" "$1" | tail -n 1 | awk '{ print $2, $3, $NF }'; }
# The ids of the views of MEMBERS in FILE.
view_ids() { grep "^view [0-9]* members=$2 " "$1" | awk '{ print $2 }'; }
# Keeps what the probes of NAME wrote so far (before they stop: then the others see them go).
snapshot() { for n in 1 2 3; do cp "$work/$1.$n" "$work/$1.$n.before-stop"; done; }
has_view() { grep -q "^view [0-9]* members=$2 .*quorate=$3$" "$1"; }

test_no=0
result() {
	test_no=$((test_no + 1))
	if [ "$1" = ok ]; then echo "ok $test_no $2"; else
		echo "not ok $test_no $2"
		for f in "$work/$3".? "$work/$3".?.err "$work"/n*/corosync.log; do
			[ -f "$f" ] && tail -n 5 "$f" | sed "s|^|# $(basename "$f"): |"
		done
	fi
}

echo "1..3"
for n in 1 2 3; do start_corosync "$n"; done
for n in 1 2 3; do wait_quorum "$n" || die "node $n's corosync did not become quorate"; done

# Every node delivers every node's messages in one order, its own included.
messages=300
for n in 1 2 3; do start_probe "$n" order --send $messages --members 3; done
ok=ok
for n in 1 2 3; do wait_for 60 count_msgs "$work/order.$n" $((3 * messages)) || ok="not ok"; done
for n in 1 2 3; do stop_probe order "$n"; done
for n in 2 3; do
	cmp -s <(grep "^msg" "$work/order.1") <(grep "^msg" "$work/order.$n") || ok="not ok"
	[ "$(view_ids "$work/order.1" 1,2,3)" = "$(view_ids "$work/order.$n" 1,2,3)" ] || ok="not ok"
done
has_view "$work/order.1" 1,2,3 1 || ok="not ok"
result "$ok" cluster_group_agreed_order order

# A node whose corosync is killed leaves the view of the others, who stay quorate and agree
# on the new view's id.
for n in 1 2 3; do start_probe "$n" lost --members 3; done
ok=ok
for n in 1 2 3; do wait_for 20 has_view "$work/lost.$n" 1,2,3 1 || ok="not ok"; done
kill_corosync 3
for n in 1 2; do wait_for 20 grep -q "members=1,2 joined= left=3 quorate=1" "$work/lost.$n" || ok="not ok"; done
[ "$(view_ids "$work/lost.1" 1,2)" = "$(view_ids "$work/lost.2" 1,2)" ] || ok="not ok"
wait_for 10 grep -q "closed the connection" "$work/lost.3.err" || ok="not ok"
for n in 1 2 3; do stop_probe lost "$n"; done
result "$ok" cluster_group_node_lost lost
start_corosync 3
wait_quorum 3 || die "node 3's corosync did not rejoin"

# A node cut off is a minority: its view is not quorate, the other two's is. Healed, all
# three are in one quorate view again, with one id.
for n in 1 2 3; do start_probe "$n" part --members 3; done
ok=ok
for n in 1 2 3; do wait_for 20 has_view "$work/part.$n" 1,2,3 1 || ok="not ok"; done
ip -n "$bridge" link set port3 down
wait_for 20 has_view "$work/part.3" 3 0 || ok="not ok"
for n in 1 2; do wait_for 20 grep -q "members=1,2 joined= left=3 quorate=1" "$work/part.$n" || ok="not ok"; done
ip -n "$bridge" link set port3 up
for n in 1 2 3; do wait_for 30 sh -c "tail -n 1 $work/part.$n | grep -q 'members=1,2,3 .*quorate=1'" || ok="not ok"; done
snapshot part
[ "$(last_view "$work/part.1")" = "$(last_view "$work/part.3")" ] || ok="not ok"
[ "$(last_view "$work/part.2")" = "$(last_view "$work/part.3")" ] || ok="not ok"
# From the cut to the merge, node 3 never saw itself as a quorate group of one.
awk '/^view .* quorate=0$/ { cut = 1 } cut && /^view [0-9]* members=3 .*quorate=1$/ { bad = 1 }
	END { exit !bad }' "$work/part.3.before-stop" && ok="not ok"
for n in 1 2 3; do stop_probe part "$n"; done
result "$ok" cluster_group_minority_partition part
