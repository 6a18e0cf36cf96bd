#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Tells (yes/no) whether QEMU with KVM boots a guest on this machine. On nested software
# virtualisers KVM may hang instead of failing, so the probe runs once under a short timeout
# and its answer is cached per machine.
. "$(dirname "$0")/lib.sh"
kdir=${1:?usage: $0 KERNEL_BUILD_DIR}
cache="$CACHE/kvm-probe-$(hostname)"
if [ -f "$cache" ]; then cat "$cache"; exit 0; fi
answer=no
if [ -w /dev/kvm ] && [ "${DMLU_NO_KVM:-}" != 1 ]; then
	dir=$(mktemp -d)
	printf '#!/bin/busybox sh\n/bin/busybox echo dmlu-kvm-ok\n/bin/busybox reboot -f\n' >"$dir/init"
	mkdir -p "$dir/root/bin" && cp /bin/busybox "$dir/root/bin/" && mv "$dir/init" "$dir/root/init" && chmod +x "$dir/root/init"
	(cd "$dir/root" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initrd"
	(timeout -k 2 20 qemu-system-x86_64 -accel kvm -cpu host -m 256 -display none -nodefaults -no-reboot \
		-kernel "$kdir/arch/x86/boot/bzImage" -initrd "$dir/initrd" -append "console=ttyS0 panic=-1" \
		-serial "file:$dir/console" </dev/null >/dev/null 2>&1 || true) 2>/dev/null
	grep -q dmlu-kvm-ok "$dir/console" 2>/dev/null && answer=yes
	rm -rf "$dir"
fi
echo "$answer" >"$cache"
echo "$answer"
