#!/usr/bin/env bash
# The cluster guests, end to end, in KTAP: two QEMU guests (the debug kernel, the Rust
# module, dm-ulogd, corosync) share a mirror's legs, a clustered-disk log's device and a
# small disk they meet on, all image files of this run; their only network is QEMU's socket
# network on the loopback of a network namespace this run makes. Every guest activates two
# mirrors (clustered-core and clustered-disk logs, tests/vm/suite-cluster-node.sh) and writes
# its own part of each; node 1, the leader, is killed mid-write (kill -9 of its QEMU,
# standing in for fencing); node 2 must see it go, take over and recover what it had marked.
# Then, on the host: the legs are identical and the disk log holds every region clean.
# Needs root (the namespace) and the debug kernel (built and cached like the VM suites').
# Usage: tests/cluster/guests.sh      (DMLU_KEEP=1 keeps the images)
. "$(dirname "$0")/../../scripts/lib.sh"

NODES=2
VICTIM=1
# One mirror: 8 MiB (suite-cluster-node.sh), 16 regions; the core one first on the legs.
MIRROR_MIB=8
REGIONS=16
TESTS=(cluster_guests_clustered_core cluster_guests_clustered_disk)

echo "TAP version 13"
if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root to make a network namespace"
	exit 0
fi
echo "1..${#TESTS[@]}"
command -v corosync >/dev/null || die "corosync not found (scripts/host-deps.sh installs it)"

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
ip netns add "$ns"
ip -n "$ns" link set lo up
truncate -s $((2 * MIRROR_MIB))M "$work/leg0.img" "$work/leg1.img"
truncate -s 1M "$work/log.img" "$work/barrier.img"

# The guests run together: this run holds the one-guest-at-a-time lock for them.
exec 9>"$CACHE/vm.lock"
flock 9
port=5515
runs=()
for n in $(seq 1 $NODES); do
	if [ "$n" = 1 ]; then netdev="socket,listen=127.0.0.1:$port"; else netdev="socket,connect=127.0.0.1:$port"; fi
	cut=0
	[ "$n" = "$VICTIM" ] && cut=1
	# acpi=noirq: the debug kernel under TCG runs the PC machine's AML _PRT loop past ACPI's
	# 30 s loop limit for every PCI device, and the disks and card are left without an
	# interrupt; the BIOS's PIRQ table routes them at once.
	DMLU_RUN_SUFFIX=-node$n DMLU_VM_LOCK_HELD=1 DMLU_SMP=1 DMLU_CUT=$cut \
		DMLU_SHARED_DRIVES="$work/leg0.img $work/leg1.img $work/log.img $work/barrier.img" \
		DMLU_NETDEV="$netdev" DMLU_MAC="52:54:00:15:00:0$n" \
		DMLU_EXTRA_PROGRAMS="$(command -v corosync) $(command -v corosync-quorumtool)" \
		DMLU_APPEND="acpi=noirq dmlu.node=$n dmlu.nodes=$NODES dmlu.victim=$VICTIM" \
		ip netns exec "$ns" "$TOP/scripts/vm-run.sh" debug rust cluster-node 1800 >"$work/node$n.out" 2>&1 &
	runs+=($!)
	# The next guest connects to this one's socket: wait until it listens.
	if [ "$n" = 1 ]; then
		for _ in $(seq 600); do
			ip netns exec "$ns" ss -Hltn "sport = :$port" | grep -q . && break
			kill -0 "${runs[0]}" 2>/dev/null || break
			sleep 0.5
		done
	fi
done
verdicts=()
for i in "${!runs[@]}"; do
	if wait "${runs[$i]}"; then verdicts+=(ok); else verdicts+=("not ok"); fi
done
survivor=$((VICTIM % NODES + 1))

# same_mib FIRST COUNT: both legs hold the same COUNT MiB from MiB FIRST.
same_mib() {
	cmp -s <(dd if="$work/leg0.img" bs=1M skip="$1" count="$2" status=none) \
		<(dd if="$work/leg1.img" bs=1M skip="$1" count="$2" status=none)
}
# passed NAME: the survivor's suite passed that test.
# (The guest's KTAP came through a serial port: CRLF line ends.)
passed() { tr -d '\r' <"$work/node$survivor.out" | grep -qE "^ok [0-9]+ $1\$"; }

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
both_runs_ok() {
	local v
	for v in "${verdicts[@]}"; do [ "$v" = ok ] || return 1; done
}

why=""
both_runs_ok || why="a guest's run failed (its suite, or a kernel report on its console)"
passed cluster_node_clustered_core_recovered || why="${why:-node $survivor did not recover the clustered-core mirror}"
same_mib 0 $MIRROR_MIB || why="${why:-the legs of the clustered-core mirror differ}"
if [ -z "$why" ]; then result ok "${TESTS[0]}"; else result "not ok" "${TESTS[0]}" "$why"; fi

why=""
both_runs_ok || why="a guest's run failed (its suite, or a kernel report on its console)"
passed cluster_node_clustered_disk_recovered || why="${why:-node $survivor did not recover the clustered-disk mirror}"
same_mib $MIRROR_MIB $MIRROR_MIB || why="${why:-the legs of the clustered-disk mirror differ}"
"$TOP/target/release/dm-ulogd" disk-show "$work/log.img" --regions $REGIONS >"$work/disk.show" 2>&1 || true
grep -q "magic=ok .* clean=$REGIONS$" "$work/disk.show" ||
	why="${why:-the disk log is not valid and clean: $(tail -n 1 "$work/disk.show")}"
if [ -z "$why" ]; then result ok "${TESTS[1]}"; else result "not ok" "${TESTS[1]}" "$why"; fi
