# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# Power cuts, for real: scripts/power-cut.sh boots this guest again and again with three virtio
# disks (image files on the host: leg 0, leg 1, log). Each boot first checks what the last
# cut left (dmlu.cut=N, N > 0), then builds fresh mirrors and writes until the host kills
# QEMU (not on the last boot, dmlu.last=1).
# Every configuration gets its own mirror, on slices of the three disks: the kernel's `disk`
# log (with the Rust module's boots only) and `disk` and `clustered-disk` userspace logs served
# by dm-ulogd, with and without integrated_flush. With dmlu.killserver=1 the server is
# SIGKILLed and restarted shortly before the cut (dmlu.killedbefore=1: it was, before the cut
# this boot checks).
# The check, before the mirror is active again: every region whose legs differ is dirty in the
# log (`dm-ulog-crashcheck devices`); then, with the mirror resynced from its log, the legs are
# identical and every write acknowledged before the cut reads back (`dm-ulog-crashcheck
# survived`, against the acknowledgements the host kept from the last boot's third serial
# port, here /acks).

# arg NAME: the value of dmlu.NAME= on the kernel command line.
arg() {
	for a in $(cat /proc/cmdline); do
		case $a in "dmlu.$1="*) echo "${a#*=}" ;; esac
	done
}
CUT=$(arg cut)
LAST=$(arg last)
KILLSERVER=$(arg killserver)
# Whether the server was killed shortly before the cut being checked.
KILLSERVER_BEFORE=$(arg killedbefore)

CONFIGS="udisk udisk_if ucdisk ucdisk_if"
[ "$VARIANT" = rust ] && CONFIGS="kdisk $CONFIGS"
# Slices per configuration, in sectors: 4 MiB legs, a 1 MiB log; 64 KiB regions.
LEG=8192
LOGLEN=2048
REGION=128

TESTS="setup"
k=0
for c in $CONFIGS; do
	if [ "${CUT:-0}" -gt 0 ]; then
		TESTS="$TESTS power_cut_$c"
		eval "power_cut_$c() { check_cut $k $c; }"
	fi
	k=$((k + 1))
done
[ "${LAST:-0}" = 1 ] || TESTS="$TESTS write_until_cut"

# The configuration's name in the results.
config_name() {
	case $1 in
	kdisk) echo kernel-disk ;;
	udisk) echo disk ;;
	udisk_if) echo disk+integrated_flush ;;
	ucdisk) echo clustered-disk ;;
	ucdisk_if) echo clustered-disk+integrated_flush ;;
	esac
}

# The log arguments of configuration NAME (index K): log_args K NAME.
log_args() {
	dev=/dev/mapper/cl$1
	case $2 in
	kdisk) echo "disk 2 $dev $REGION" ;;
	udisk) echo "userspace 4 CUT-$1 disk $dev $REGION" ;;
	udisk_if) echo "userspace 5 CUT-$1 integrated_flush disk $dev $REGION" ;;
	ucdisk) echo "userspace 4 CUT-$1 clustered-disk $dev $REGION" ;;
	ucdisk_if) echo "userspace 5 CUT-$1 integrated_flush clustered-disk $dev $REGION" ;;
	esac
}

# The same, with nosync: the legs start out zeroed alike, nothing to resync.
nosync_args() {
	# shellcheck disable=SC2046
	set -- $(log_args "$1" "$2")
	type=$1
	argc=$2
	shift 2
	echo "$type $((argc + 1)) $* nosync"
}

setup() {
	load_module || fail "insmod failed"
	start_server || fail "dm-ulogd did not start"
	k=0
	for _ in $CONFIGS; do
		dm create "ca$k" --table "0 $LEG linear /dev/vda $((k * LEG))" &&
			dm create "cb$k" --table "0 $LEG linear /dev/vdb $((k * LEG))" &&
			dm create "cl$k" --table "0 $LOGLEN linear /dev/vdc $((k * LOGLEN))" || fail "slices of $k failed"
		k=$((k + 1))
	done
	dm mknodes
}

# check_cut K NAME: what the last cut left of configuration K.
check_cut() {
	k=$1
	out=$(dm-ulog-crashcheck devices --leg0 "/dev/mapper/ca$k" --leg1 "/dev/mapper/cb$k" \
		--log "/dev/mapper/cl$k" --region "$REGION")
	unmarked=$?
	echo "$out"
	# The mirror resyncs what its log says is dirty (the log's own sync mode: not nosync).
	dm create "cm$k" --table "0 $LEG mirror $(log_args "$k" "$2") 2 /dev/mapper/ca$k 0 /dev/mapper/cb$k 0" ||
		fail "the mirror does not come back after the cut"
	dm mknodes
	wait_in_sync "cm$k" 120 || fail "no resync after the cut"
	survived=$(dm-ulog-crashcheck survived --device "/dev/mapper/cm$k" --mirror "$k" --acks /acks)
	lost=$?
	echo "$survived"
	dm remove "cm$k"
	a=$(md5sum <"/dev/mapper/ca$k")
	b=$(md5sum <"/dev/mapper/cb$k")
	module=$VARIANT
	[ "$2" = kdisk ] && module=kernel
	# One line for tests/results/power-cut.md (scripts/power-cut-report.py).
	echo "power-cut cut module=$module config=$(config_name "$2") server_killed=${KILLSERVER_BEFORE:-0}" \
		"cut=$CUT unmarked=$(echo "$out" | sed -n 's/^unmarked differing regions: //p')"
	[ "$unmarked" -eq 0 ] || fail "a region whose legs differ was marked clean in the log"
	[ "$a" = "$b" ] || fail "the legs differ after the resync"
	[ "$lost" -eq 0 ] || fail "an acknowledged write was lost"
}

write_until_cut() {
	dd if=/dev/zero of=/dev/vda bs=1M oflag=direct 2>/dev/null
	dd if=/dev/zero of=/dev/vdb bs=1M oflag=direct 2>/dev/null
	dd if=/dev/zero of=/dev/vdc bs=1M oflag=direct 2>/dev/null
	k=0
	for c in $CONFIGS; do
		dm create "cm$k" --table "0 $LEG mirror $(nosync_args "$k" "$c") 2 /dev/mapper/ca$k 0 /dev/mapper/cb$k 0" ||
			fail "mirror $c failed"
		k=$((k + 1))
	done
	dm mknodes
	k=0
	for _ in $CONFIGS; do
		dm-ulog-crashcheck write --device "/dev/mapper/cm$k" --mirror "$k" --acks /dev/ttyS2 &
		k=$((k + 1))
	done
	sleep 2
	if [ "${KILLSERVER:-0}" = 1 ]; then
		kill_server
		start_server || fail "dm-ulogd did not restart"
	fi
	echo "dmlu: cut me" >/dev/ttyS1
	# The host kills the VM within 2 s.
	sleep 60
	fail "no power cut came"
}
