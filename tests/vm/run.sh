#!/bin/sh
# Runs one in-guest suite (tests/vm/suite-NAME.sh) and prints KTAP.
. /tests/lib.sh
suite=$1
if [ ! -f "/tests/suite-$suite.sh" ]; then
	echo "KTAP version 1"
	echo "1..0 # SKIP no suite $suite"
	exit 4
fi
. "/tests/suite-$suite.sh"
[ -n "${DMLU_TESTS:-}" ] && TESTS=$(echo "$DMLU_TESTS" | tr , ' ')
set -- $TESTS
ktap_header $#
for t in "$@"; do
	ktap_run "$t" "$t"
done
