#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The cluster guests, end to end, in KTAP: QEMU guests (the debug kernel, the Rust module,
# dm-ulogd, corosync) share a mirror's legs, a clustered-disk log's device and a small disk
# they meet on, all image files of this run; their only network is a bridge, with one tap
# device a guest, inside a network namespace this run makes. Every guest activates two
# mirrors (clustered-core and clustered-disk logs, tests/vm/suite-cluster-node.sh) and writes
# its own part of each. Then, on the host: the legs are identical and the disk log holds
# every region clean. Needs root (the namespace) and the debug kernel (built and cached like
# the VM suites'). Two plans:
# - pair (make check): two guests; node 1, the leader, is killed mid-write (kill -9 of its
#   QEMU, standing in for fencing); node 2 must see it go, take over and recover what it had
#   marked.
# - trio (make check LONG=1): three guests, all writing throughout; node 3's dm-ulogd is
#   killed (its guest lives) and started again; then node 2 is cut off the bridge, the other
#   two go on, and the host joins it again. Nobody is killed: every guest's suite must pass.
# Usage: tests/cluster/guests.sh [pair|trio]      (DMLU_KEEP=1 keeps the images)
. "$(dirname "$0")/../../scripts/lib.sh"

plan=${1:-pair}
case "$plan" in
pair)
	NODES=2
	VICTIM=1
	LIMIT=1800
	suffix=node
	;;
trio)
	NODES=3
	VICTIM=0
	# The node whose dm-ulogd is killed, and the node cut off (suite-cluster-node.sh).
	PARTITIONED=2
	LIMIT=3600
	suffix=trio
	;;
*) die "usage: $0 [pair|trio]" ;;
esac
# One mirror: 8 MiB (suite-cluster-node.sh), 16 regions; the core one first on the legs.
MIRROR_MIB=8
REGIONS=16
TESTS=(cluster_guests_clustered_core cluster_guests_clustered_disk)
[ "$plan" = trio ] && TESTS=(cluster_guests_trio_clustered_core cluster_guests_trio_clustered_disk)

echo "TAP version 13"
if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root to make a network namespace"
	exit 0
fi
echo "1..${#TESTS[@]}"
command -v corosync >/dev/null || die "corosync not found (scripts/host-deps.sh installs it)"
[ -c /dev/net/tun ] || die "no /dev/net/tun: the guests' network needs tap devices"

# Everything the guests need, built before they start (vm-run.sh finds it built): two runs
# building the module at once would share its build directory.
"$TOP/scripts/build-kernel.sh" debug >/dev/null
"$TOP/scripts/build-module.sh" debug >/dev/null
"$TOP/scripts/build-userspace.sh" >/dev/null
for dir in tests/detectors bench/pingpong; do
	"$TOP/scripts/build-test-module.sh" debug "$dir" >/dev/null
done

# Under out/ (a disk): QEMU opens the images with O_DIRECT (cache=none), which an older
# kernel's tmpfs refuses.
mkdir -p "$TOP/out"
work=$(mktemp -d "$TOP/out/cluster-guests.XXXXXX")
ns=dmlu$$guests
cleanup() {
	pkill -KILL -f "$work/" 2>/dev/null || true
	ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	if [ "${DMLU_KEEP:-0}" = 1 ]; then echo "# kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# The guests' network: a bridge and a tap device a guest, all in this run's namespace.
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" link set br0 up
for n in $(seq 1 $NODES); do
	ip -n "$ns" tuntap add dev "tap$n" mode tap
	ip -n "$ns" link set "tap$n" master br0 up
done
truncate -s $((2 * MIRROR_MIB))M "$work/leg0.img" "$work/leg1.img"
truncate -s 1M "$work/log.img" "$work/barrier.img"

# The guests run together: this run holds the one-guest-at-a-time lock for them.
exec 9>"$CACHE/vm.lock"
flock 9
runs=()
for n in $(seq 1 $NODES); do
	cut=0
	[ "$n" = "$VICTIM" ] && cut=1
	# acpi=noirq: the debug kernel under TCG runs the PC machine's AML _PRT loop past ACPI's
	# 30 s loop limit for every PCI device, and the disks and card are left without an
	# interrupt; the BIOS's PIRQ table routes them at once.
	DMLU_RUN_SUFFIX=-$suffix$n DMLU_VM_LOCK_HELD=1 DMLU_SMP=1 DMLU_CUT=$cut \
		DMLU_SHARED_DRIVES="$work/leg0.img $work/leg1.img $work/log.img $work/barrier.img" \
		DMLU_NETDEV="tap,ifname=tap$n,script=no,downscript=no" DMLU_MAC="52:54:00:15:00:0$n" \
		DMLU_EXTRA_PROGRAMS="$(command -v corosync) $(command -v corosync-quorumtool)" \
		DMLU_APPEND="acpi=noirq dmlu.node=$n dmlu.nodes=$NODES dmlu.victim=$VICTIM dmlu.plan=$plan" \
		ip netns exec "$ns" "$TOP/scripts/vm-run.sh" debug rust cluster-node $LIMIT >"$work/node$n.out" 2>&1 &
	runs+=($!)
done

# The host's part of the plan, on the disk the guests meet on (suite-cluster-node.sh's
# barrier): block N lists the barriers node N reached, block 0 what the host did.
# reached NAME: every node's block lists NAME.
reached() {
	local n
	for n in $(seq 1 $NODES); do
		dd if="$work/barrier.img" bs=4096 skip="$n" count=1 iflag=direct status=none | tr -d '\0' | grep -qx "$1" || return 1
	done
}
# any_run_ended: a guest's QEMU is gone (its suite ended, or failed early).
any_run_ended() {
	local pid
	for pid in "${runs[@]}"; do kill -0 "$pid" 2>/dev/null || return 0; done
	return 1
}
host_did=""
# host_step NAME SECONDS -- CMD...: once every node has reached NAME (within SECONDS), runs
# CMD and then lists NAME-done on the host's block.
host_step() {
	local name=$1 seconds=$2
	shift 3
	for _ in $(seq $((seconds * 2))); do
		if reached "$name"; then
			"$@"
			host_did+="$name-done"$'\n'
			{
				printf '%s' "$host_did"
				head -c 4096 /dev/zero
			} | dd of="$work/barrier.img" bs=4096 count=1 iflag=fullblock oflag=direct conv=notrunc status=none
			return 0
		fi
		any_run_ended && return 1
		sleep 0.5
	done
	return 1
}
if [ "$plan" = trio ]; then
	# Node PARTITIONED off the bridge while all write; back once every node saw it gone.
	host_step partition-me 2400 -- ip -n "$ns" link set "tap$PARTITIONED" nomaster &&
		host_step heal-me 1200 -- ip -n "$ns" link set "tap$PARTITIONED" master br0 ||
		echo "# the host's part of the plan did not run to its end (a guest stopped, or waited too long)"
fi

verdicts=()
for i in "${!runs[@]}"; do
	if wait "${runs[$i]}"; then verdicts+=(ok); else verdicts+=("not ok"); fi
done
# The node whose suite tells whether the mirrors were recovered: the pair's survivor.
judge=$((VICTIM % NODES + 1))

# same_mib FIRST COUNT: both legs hold the same COUNT MiB from MiB FIRST.
same_mib() {
	cmp -s <(dd if="$work/leg0.img" bs=1M skip="$1" count="$2" status=none) \
		<(dd if="$work/leg1.img" bs=1M skip="$1" count="$2" status=none)
}
# passed NAME: the judging node's suite passed that test.
# (The guest's KTAP came through a serial port: CRLF line ends.)
passed() { tr -d '\r' <"$work/node$judge.out" | grep -qE "^ok [0-9]+ $1\$"; }

test_no=0
result() {
	local verdict=$1 name=$2 why=${3:-} n
	test_no=$((test_no + 1))
	echo "$verdict $test_no $name"
	[ "$verdict" = ok ] && return
	echo "# $why"
	for n in $(seq 1 $NODES); do
		echo "# node $n (${verdicts[$((n - 1))]}):"
		{ tr -d '\r' <"$work/node$n.out" | grep -E "^(not ok|# (FAIL|planned|kernel|the|QEMU|console|power))" || true; } |
			tail -n 30 | sed 's/^/#   /'
	done
}

# Every guest's run passed: its suite (up to the kill, for the victim) and its console.
all_runs_ok() {
	local v
	for v in "${verdicts[@]}"; do [ "$v" = ok ] || return 1; done
}

why=""
all_runs_ok || why="a guest's run failed (its suite, or a kernel report on its console)"
passed cluster_node_clustered_core_recovered || why="${why:-node $judge did not recover the clustered-core mirror}"
same_mib 0 $MIRROR_MIB || why="${why:-the legs of the clustered-core mirror differ}"
if [ -z "$why" ]; then result ok "${TESTS[0]}"; else result "not ok" "${TESTS[0]}" "$why"; fi

why=""
all_runs_ok || why="a guest's run failed (its suite, or a kernel report on its console)"
passed cluster_node_clustered_disk_recovered || why="${why:-node $judge did not recover the clustered-disk mirror}"
same_mib $MIRROR_MIB $MIRROR_MIB || why="${why:-the legs of the clustered-disk mirror differ}"
"$TOP/target/release/dm-ulogd" disk-show "$work/log.img" --regions $REGIONS >"$work/disk.show" 2>&1 || true
grep -q "magic=ok .* clean=$REGIONS$" "$work/disk.show" ||
	why="${why:-the disk log is not valid and clean: $(tail -n 1 "$work/disk.show")}"
if [ -z "$why" ]; then result ok "${TESTS[1]}"; else result "not ok" "${TESTS[1]}" "$why"; fi
