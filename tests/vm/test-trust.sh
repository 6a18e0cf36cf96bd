#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kselftest wrapper: the trust suite (suite-trust.sh); test names as arguments select tests.
exec "$(dirname "$0")/run.sh" trust "$@"
