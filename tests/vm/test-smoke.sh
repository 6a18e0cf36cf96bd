#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kselftest wrapper: the smoke suite (suite-smoke.sh); test names as arguments select tests.
exec "$(dirname "$0")/run.sh" smoke "$@"
