#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Boots a test kernel flavour and runs an in-guest suite against one log module (rust or
# c; the guest holds both, for suites that compare them) under QEMU, with a hard timeout. The
# console goes to out/vm/<run>/console.log, the suite's KTAP to ktap.log. scripts/judge-run.sh
# then judges the run: it fails when any test fails, the suite bails out, plans no test or does
# not finish, its "# Totals:" line or exit code (kselftest's, printed on the KTAP port)
# disagrees with its results, or the console shows a kernel report (oops, BUG, WARNING, KASAN,
# lockdep, kmemleak, ...). A suite that skips every test passes.
# Usage: vm-run.sh perf|debug|stock rust|c SUITE [TIMEOUT_SECONDS]
# stock: Debian's own kernel and modules (trixie-backports), the Rust module built for it by
# DKMS with Debian's rustc, and Debian's dm-log-userspace.ko as the C reference
# (scripts/build-stock.sh).
# For the power-cut runs (scripts/power-cut.sh): DMLU_DRIVES="A.img B.img ..." attaches raw
# images as virtio disks, DMLU_ACKS=FILE adds a third serial port (/dev/ttyS2) kept in FILE,
# DMLU_INITRD_EXTRA=X.cpio.gz is appended to the initramfs, DMLU_APPEND adds to the kernel
# command line, and DMLU_CUT=1 kills QEMU (a power cut) 0-2 s after the guest prints
# "dmlu: cut me" on its KTAP port; such a run is judged on the console and the tests before.
# For make bench: DMLU_ICOUNT=1 runs the guest under TCG's -icount shift=0 (its clock counts
# executed instructions, 1 ns each), in out/vm/<run>-icount.
# For the cluster guests (tests/cluster/guests.sh), several at once: DMLU_RUN_SUFFIX names the
# run's directory apart, DMLU_SHARED_DRIVES attaches images that every guest writes
# (share-rw), DMLU_NETDEV is a -netdev socket option string for a virtio network card with
# MAC DMLU_MAC, DMLU_SMP the guest's CPUs (default 2), DMLU_EXTRA_PROGRAMS host programs for
# the initramfs, and DMLU_VM_LOCK_HELD=1 says the caller holds the one-guest-at-a-time lock.
. "$(dirname "$0")/lib.sh"

flavour=${1:?usage: $0 perf|debug|stock rust|c SUITE [TIMEOUT]}
variant=${2:?usage}
suite=${3:?usage}
limit=${4:-600}

case "$variant" in rust | c) ;; *) die "variant must be rust or c" ;; esac
kdir=
if [ "$flavour" = stock ]; then
	stock=$("$TOP/scripts/build-stock.sh" kernel)
	rust_ko=$("$TOP/scripts/build-stock.sh")
	bzimage=$stock/vmlinuz
	# The C reference comes from the stock modules (scripts/build-initramfs.sh).
	STOCK_MODULES=$(echo "$stock"/lib/modules/*)
	export STOCK_MODULES
	c_ko=/dev/null
else
	kdir=$("$TOP/scripts/build-kernel.sh" "$flavour")
	rust_ko=$("$TOP/scripts/build-module.sh" "$flavour")
	c_ko="$kdir/drivers/md/dm-log-userspace.ko"
	bzimage=$kdir/arch/x86/boot/bzImage
fi

run="$TOP/out/vm/$flavour-$variant-$suite${DMLU_RUN_SUFFIX:-}"
[ "${DMLU_ICOUNT:-0}" = 1 ] && run="$run-icount"
rm -rf "$run" && mkdir -p "$run"
mapfile -t bins < <("$TOP/scripts/build-userspace.sh")
if [ "$flavour" = stock ]; then
	# The server a Debian admin installs: dm-ulogd from the project's package, built with
	# Debian's cargo (scripts/build-packages.sh); the test programs stay the workspace's.
	deb=$("$TOP/scripts/build-packages.sh" | grep '/dm-ulogd_')
	dpkg-deb -x "$deb" "$run/package"
	for i in "${!bins[@]}"; do
		[ "$(basename "${bins[$i]}")" = dm-ulogd ] && bins[i]=$run/package/usr/sbin/dm-ulogd
	done
fi
extra=()
# The project's test modules are built against the project's kernels only.
for dir in tests/detectors bench/pingpong; do
	[ -n "$kdir" ] && [ -d "$TOP/$dir" ] && extra+=("$("$TOP/scripts/build-test-module.sh" "$flavour" "$dir")")
done
# The crash checker's self-test loads modules with planted bugs (never shipped).
if [ "$suite" = detect-powercut ]; then
	for bug in skip_leg_flush clear_before_write forget_unflushed_marks; do
		extra+=("$(DMLU_PLANTED=$bug "$TOP/scripts/build-module.sh" "$flavour")")
	done
fi
# The power-cut replays match the record's flushes with the trace's in order: one CPU keeps
# every completion chain whole, so both orders agree.
case "$suite" in powercut | detect-powercut) DMLU_SMP=${DMLU_SMP:-1} ;; esac
EXTRA_MODULES="${extra[*]}" EXTRA_PROGRAMS="${DMLU_EXTRA_PROGRAMS:-}" "$TOP/scripts/build-initramfs.sh" "$run/initramfs.cpio.gz" "$rust_ko" "$c_ko" "$variant" "${bins[@]}"
if [ -n "${DMLU_INITRD_EXTRA:-}" ]; then
	cat "$DMLU_INITRD_EXTRA" >>"$run/initramfs.cpio.gz"
fi
qemu_extra=()
# 32 MiB into each scratch disk.
SCRATCH_BAD_SECTOR=65536
for img in ${DMLU_DRIVES:-}; do
	qemu_extra+=(-drive "file=$img,format=raw,if=virtio,cache=writeback")
done
# The mirror suite's scratch disks, found in the guest by their serials dmlu-scratch0 and 1:
# virtio disks whose completions are interrupts, with a volatile write cache (QEMU's
# writeback cache: the guest must flush them), and whose reads of sector SCRATCH_BAD_SECTOR
# fail (QEMU's blkdebug), so that a failed read completes in interrupt context.
if [ "$suite" = mirror ]; then
	for i in 0 1; do
		truncate -s 64M "$run/scratch$i.img"
		printf '[inject-error]\nevent = "read_aio"\niotype = "read"\nerrno = "5"\nsector = "%s"\nonce = "off"\n' \
			"$SCRATCH_BAD_SECTOR" >"$run/scratch$i.blkdebug"
		qemu_extra+=(-drive "file=blkdebug:$run/scratch$i.blkdebug:$run/scratch$i.img,format=raw,if=none,id=scratch$i,cache=writeback"
			-device "virtio-blk-pci,drive=scratch$i,serial=dmlu-scratch$i")
	done
	# acpi=noirq: the debug kernel under TCG runs the PC machine's AML _PRT loop past ACPI's
	# time limit, and the disks get no interrupt line (as for the cluster guests).
	append_extra="acpi=noirq dmlu.bad_sector=$SCRATCH_BAD_SECTOR"
fi
[ -n "${DMLU_ACKS:-}" ] && qemu_extra+=(-serial "file:$DMLU_ACKS")
shared=0
for img in ${DMLU_SHARED_DRIVES:-}; do
	qemu_extra+=(-drive "file=$img,format=raw,if=none,id=shared$shared,cache=none"
		-device "virtio-blk-pci,drive=shared$shared,share-rw=on")
	shared=$((shared + 1))
done
if [ -n "${DMLU_NETDEV:-}" ]; then
	qemu_extra+=(-netdev "$DMLU_NETDEV,id=net0" -device "virtio-net-pci,netdev=net0,mac=${DMLU_MAC:?DMLU_MAC with DMLU_NETDEV}")
fi

accel=tcg
if [ "${DMLU_ICOUNT:-0}" = 1 ]; then
	# Instructions as the guest's clock; idle time skipped, not waited for.
	qemu_extra+=(-icount shift=0,sleep=off)
elif [ -n "$kdir" ] && [ "$("$TOP/scripts/kvm-probe.sh" "$kdir")" = yes ]; then
	accel=kvm
fi
mem=1024
[ "$flavour" = debug ] && mem=2048
append="console=ttyS0 panic=-1 oops=panic loglevel=7 dmlu.suite=$suite dmlu.long=${LONG:-0} ${append_extra:-} ${DMLU_APPEND:-}"
[ "$flavour" = debug ] && append="$append kmemleak=on"

qemu=(qemu-system-x86_64 -accel "$accel" -m "$mem" -smp "${DMLU_SMP:-2}"
	-display none -nodefaults -no-reboot
	-kernel "$bzimage" -initrd "$run/initramfs.cpio.gz" -append "$append"
	-serial "file:$run/console.log" -serial "file:$run/ktap.log" "${qemu_extra[@]}")
# One guest at a time on this machine (2 cores under TCG): wait for any other run to end
# (unless the caller runs guests together and holds the lock for them).
if [ "${DMLU_VM_LOCK_HELD:-0}" != 1 ]; then
	exec 9>"$CACHE/vm.lock"
	flock 9
fi
cut=
if [ "${DMLU_CUT:-0}" = 1 ]; then
	: >"$run/ktap.log"
	"${qemu[@]}" </dev/null &
	qpid=$!
	for _ in $(seq $((limit * 10))); do
		grep -q "dmlu: cut me" "$run/ktap.log" 2>/dev/null && break
		kill -0 "$qpid" 2>/dev/null || break
		sleep 0.1
	done
	if grep -q "dmlu: cut me" "$run/ktap.log"; then
		delay_ms=$((RANDOM % 2000))
		sleep "$((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000)))"
		kill -9 "$qpid" 2>/dev/null
		cut="power cut ${delay_ms} ms after the guest was ready"
	else
		kill -9 "$qpid" 2>/dev/null
	fi
	wait "$qpid" 2>/dev/null || true
	qemu_rc=0
	[ -n "$cut" ] || qemu_rc=1
else
	# Not under `set -e`: a guest that times out still gets its KTAP and console judged below.
	boot() {
		qemu_rc=0
		timeout --foreground -k 5 "$limit" "${qemu[@]}" </dev/null || qemu_rc=$?
	}
	boot
	# A kernel that dies while it boots, before it runs /init, ran nothing of the project's
	# (seen once: the stock kernel's int3 oops in run_timer_softirq 1.8 s into a TCG boot,
	# while it patched its own text): boot it again, once, and say so. The judge below sees
	# the second boot; a second such death is judged as any other run.
	if ! grep -q "Run /init as init process" "$run/console.log" && [ ! -s "$run/ktap.log" ]; then
		mv "$run/console.log" "$run/console-boot-failed.log"
		echo "# the kernel died while booting, before /init (console-boot-failed.log):" \
			"$(grep -m1 -E "Oops|BUG|panic" "$run/console-boot-failed.log" | tr -d '\r')"
		echo "# booting it again, once"
		boot
	fi
fi

cat "$run/ktap.log"
# The judging (scripts/judge-run.sh, proven on planted bad runs by tests/judge/run.sh): its
# exit code is the run's.
JUDGE_NAME="$flavour/$variant/$suite" JUDGE_LIMIT=$limit "$TOP/scripts/judge-run.sh" "$run" "$suite" "$qemu_rc" "$cut"
