#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Power cuts for real: boots the perf kernel again and again with three virtio disks (image
# files in out/powercut-VARIANT: leg 0, leg 1, log) and kills QEMU while the guest writes
# (tests/vm/suite-powercut-coarse.sh). Each boot first checks what the last cut left, against
# the acknowledgements the guest sent on its third serial port before the cut; every second
# cut comes shortly after the log server was SIGKILLed and restarted. CUTS cuts take CUTS + 1
# boots, the last one only checks.
# Usage: power-cut.sh rust|c [CUTS]     (default 2; `make check LONG=1` runs 50)
. "$(dirname "$0")/lib.sh"

variant=${1:?usage: $0 rust|c [CUTS]}
cuts=${2:-2}
dir="$TOP/out/powercut-$variant"
rm -rf "$dir" && mkdir -p "$dir/acks-initrd"
# Five configurations at most, each with 4 MiB legs and a 1 MiB log.
truncate -s 20M "$dir/leg0.img" "$dir/leg1.img"
truncate -s 5M "$dir/log.img"
: >"$dir/acks.log"

failed=0
for i in $(seq 0 "$cuts"); do
	last=0
	[ "$i" -eq "$cuts" ] && last=1
	killserver=$(((i + 1) % 2 == 0 ? 1 : 0))
	killedbefore=$((i > 0 && i % 2 == 0 ? 1 : 0))
	cp "$dir/acks.log" "$dir/acks-initrd/acks"
	(cd "$dir/acks-initrd" && echo acks | cpio -o -H newc --quiet | gzip -1) >"$dir/acks.cpio.gz"
	: >"$dir/acks-next.log"
	say "power cut $i of $cuts ($variant module$([ "$last" = 1 ] && echo ", check only"))"
	if DMLU_DRIVES="$dir/leg0.img $dir/leg1.img $dir/log.img" DMLU_ACKS="$dir/acks-next.log" \
		DMLU_INITRD_EXTRA="$dir/acks.cpio.gz" DMLU_CUT=$((1 - last)) \
		DMLU_APPEND="dmlu.cut=$i dmlu.last=$last dmlu.killserver=$killserver dmlu.killedbefore=$killedbefore" \
		"$TOP/scripts/vm-run.sh" perf "$variant" powercut-coarse 600; then
		:
	else
		failed=1
	fi
	cat "$TOP/out/vm/perf-$variant-powercut-coarse/ktap.log" >>"$dir/ktap-all.log"
	[ "$last" = 1 ] || echo "# acknowledged writes before cut $((i + 1)): $(wc -l <"$dir/acks-next.log")"
	mv "$dir/acks-next.log" "$dir/acks.log"
done
exit "$failed"
