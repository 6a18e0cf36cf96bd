#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The cluster suite, in KTAP; every test's name begins with cluster_. Three corosync nodes on
# the host, each in a network namespace this run makes (lib.sh): first the corosync binding
# alone (group.sh), then dm-ulogd serving one clustered log from the three nodes, each with
# a fake kernel (server.sh). Needs root (namespaces), corosync and iproute2
# (scripts/host-deps.sh installs them).
# Usage: tests/cluster/run.sh [TEST...]     (default: all; DMLU_KEEP=1 keeps the files)
. "$(dirname "$0")/../../scripts/lib.sh"
here="$TOP/tests/cluster"

echo "TAP version 13"
if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root to make network namespaces"
	exit 0
fi
command -v corosync >/dev/null || die "corosync not found (scripts/host-deps.sh installs it)"
command -v python3 >/dev/null || die "python3 not found (scripts/host-deps.sh installs it)"
cargo build --release --quiet -p dm-ulogd --bins --example cpg_probe
probe="$TOP/target/release/examples/cpg_probe"
fakekernel="$TOP/target/release/dm-ulog-fakekernel"
dmulogd="${DMLU_TEST_DMULOGD:-$TOP/target/release/dm-ulogd}"

. "$here/lib.sh"
. "$here/group.sh"
. "$here/server.sh"
trap cleanup EXIT

# shellcheck disable=SC2206
tests=(${*:-$GROUP_TESTS $SERVER_TESTS})
echo "1..${#tests[@]}"
make_network
for n in 1 2 3; do start_corosync "$n"; done
for n in 1 2 3; do wait_quorum "$n" || die "node $n's corosync did not become quorate"; done
for t in "${tests[@]}"; do "$t"; done
