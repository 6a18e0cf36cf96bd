# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
# The cluster suite's network: three corosync nodes on the host, each in a network namespace
# this run makes, joined by a bridge in a fourth; their addresses (10.213.0.1-3) exist only
# inside those namespaces, and nothing leaves them. Sourced by run.sh, after scripts/lib.sh.

id=dmlu$$
work=$(mktemp -d /tmp/dmlu-cluster.XXXXXX)
bridge=${id}br
ns() { echo "${id}n$1"; }
in_node() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

cleanup() {
	for n in 1 2 3; do
		ip netns pids "$(ns "$n")" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
		ip netns del "$(ns "$n")" 2>/dev/null || true
	done
	pkill -KILL -f "$work/" 2>/dev/null || true
	ip netns del "$bridge" 2>/dev/null || true
	if [ "${DMLU_KEEP:-0}" = 1 ]; then echo "# kept $work"; else rm -rf "$work"; fi
}

make_network() {
	ip netns add "$bridge"
	ip -n "$bridge" link add br0 type bridge
	ip -n "$bridge" link set br0 up
	local n
	for n in 1 2 3; do
		ip netns add "$(ns "$n")"
		ip -n "$(ns "$n")" link add eth0 type veth peer name port$n netns "$bridge"
		ip -n "$bridge" link set port$n master br0 up
		ip -n "$(ns "$n")" addr add 10.213.0.$n/24 dev eth0
		ip -n "$(ns "$n")" link set eth0 up
		ip -n "$(ns "$n")" link set lo up
		write_corosync_conf "$n"
	done
}

# Cuts node N off the bridge, or joins it again.
cut_off() { ip -n "$bridge" link set "port$1" down; }
join_again() { ip -n "$bridge" link set "port$1" up; }

write_corosync_conf() {
	local n=$1
	mkdir -p "$work/n$n/state"
	cat >"$work/n$n/corosync.conf" <<-CONF
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
	CONF
}

# A node's corosync, with a /run of its own for its pid file (its IPC sockets are abstract,
# so they are the namespace's already).
start_corosync() {
	local n=$1
	in_node "$n" unshare --mount sh -c \
		"mount -t tmpfs tmpfs /run && exec corosync -f -c $work/n$n/corosync.conf" \
		>>"$work/n$n/corosync.out" 2>&1 &
}
kill_corosync() { pkill -KILL -f "corosync -f -c $work/n$1/" || true; }

# Waits until node N's corosync says Quorate: Yes (or No with "No" as the second argument).
wait_quorum() {
	local n=$1 want=${2:-Yes} i
	for i in $(seq 1 150); do
		in_node "$n" corosync-quorumtool -s 2>/dev/null | grep -q "^Quorate: *$want" && return 0
		sleep 0.2
	done
	return 1
}

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

# KTAP: result ok|"not ok" NAME [FILES...]: on failure, the tails of FILES and of the
# corosync logs as diagnostics.
test_no=0
result() {
	local verdict=$1 name=$2 f
	shift 2
	test_no=$((test_no + 1))
	if [ "$verdict" = ok ]; then
		echo "ok $test_no $name"
		return
	fi
	echo "not ok $test_no $name"
	for f in "$@" "$work"/n*/corosync.log; do
		[ -f "$f" ] && tail -n 8 "$f" | sed "s|^|# $(basename "$f"): |"
	done
}
