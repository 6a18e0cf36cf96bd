#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Runs one suite (suite-NAME.sh beside this script), prints KTAP and exits with kselftest's
# codes: KSFT_PASS, KSFT_FAIL (a test failed, or a setup/teardown step: "Bail out!"),
# KSFT_SKIP (nothing could run here, or every test skipped). The project's guest runs it from
# its init; the kselftest wrappers (tests/Makefile) run it anywhere else (tests/README.md).
# Usage: run.sh SUITE [TEST...]     (default: every test; DMLU_TESTS=a,b also selects)
# The names `setup` and `teardown` in a suite's TESTS are steps, not tests: they always run,
# in their place, and print no result; a failing step bails out of the suite.
here=$(cd "$(dirname "$0")" && pwd)
# The project's programs (dm-ulogd, dm-ulog-hostile, ...) and modules, unless DMLU_BIN and
# DMLU_KO (or DMLU_MODULES) name them: beside this script in an installed tree (make -C tests
# install), else in the source tree; the project's guest has them in /usr/bin and /modules.
if [ -z "${DMLU_BIN:-}" ]; then
	for dir in "$here/bin" "$here/../../target/release"; do
		[ -x "$dir/dm-ulogd" ] && DMLU_BIN=$(cd "$dir" && pwd) && break
	done
fi
[ -n "${DMLU_BIN:-}" ] && PATH=$DMLU_BIN:$PATH
# The example server (server/examples) that the server suite runs a mirror on.
[ -d "${DMLU_BIN:-}/examples" ] && PATH=$PATH:$DMLU_BIN/examples
[ -z "${DMLU_MODULES:-}" ] && [ -d "$here/modules" ] && DMLU_MODULES=$here/modules
if [ -z "${DMLU_KO:-}" ] && [ -z "${DMLU_MODULES:-}" ] && [ ! -d /modules ] && [ -f "$here/../../dm_log_userspace.ko" ]; then
	DMLU_KO=$(cd "$here/../.." && pwd)/dm_log_userspace.ko
fi
export PATH DMLU_BIN DMLU_KO DMLU_MODULES
. "$here/lib.sh"

suite=${1:?usage: run.sh SUITE [TEST...]}
shift
[ -f "$here/suite-$suite.sh" ] || ktap_skip_all "no suite $suite"

# What every suite needs; without it the suite skips, as a kselftest does.
[ "$(id -u)" = 0 ] || ktap_skip_all "must run as root"
[ -f "$MODULE" ] || ktap_skip_all "no $VARIANT module at '$MODULE' (set DMLU_KO or DMLU_C_KO)"
for prog in dmsetup fio dm-ulogd dm-ulog-hostile; do
	command -v "$prog" >/dev/null || ktap_skip_all "$prog not found (set DMLU_BIN to the directory of the project's programs)"
done
grep -q '^dm_log_userspace ' /proc/modules && ktap_skip_all "a dm_log_userspace module is already loaded (rmmod it first)"
grep -q ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# The suites use eight 64 MiB RAM disks, /dev/ram0-7.
[ -b /dev/ram7 ] || modprobe brd rd_nr=8 rd_size=65536 2>/dev/null
[ -b /dev/ram7 ] || ktap_skip_all "no /dev/ram7 (brd with rd_nr=8 rd_size=65536)"
for target in mirror delay log-writes; do
	dmsetup targets | grep -q "^$target " || modprobe "dm-$target" 2>/dev/null
done
dmsetup targets | grep -q "^mirror " || ktap_skip_all "no device-mapper mirror target"
mkdir -p /dev/mapper

. "$here/suite-$suite.sh"

# The selection: the suite's order, its steps, and the tests named (on the command line or
# in DMLU_TESTS; the steps' names are accepted there too, as before).
[ $# -eq 0 ] && [ -n "${DMLU_TESTS:-}" ] && set -- $(echo "$DMLU_TESTS" | tr , ' ')
for want in "$@"; do
	case " setup teardown $(echo $TESTS) " in
	*" $want "*) ;;
	*)
		ktap_header 0
		ktap_bail_out "no test $want in suite $suite"
		;;
	esac
done
# selected NAME [SELECTION...]: no selection, or NAME is in it.
selected() {
	name=$1
	shift
	[ $# -eq 0 ] && return 0
	case " $* " in *" $name "*) return 0 ;; esac
	return 1
}
plan=0
run=""
for t in $TESTS; do
	case $t in
	setup | teardown) run="$run $t" ;;
	*)
		if selected "$t" "$@"; then
			run="$run $t"
			plan=$((plan + 1))
		fi
		;;
	esac
done

ktap_header "$plan"
for t in $run; do
	case $t in
	setup | teardown) ktap_step "$t" "$t" ;;
	*) ktap_run "$t" "$t" ;;
	esac
done
ktap_finished
