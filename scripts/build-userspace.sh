#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds the workspace's programs and examples for the guest (release) and prints their paths.
. "$(dirname "$0")/lib.sh"
cd "$TOP"
cargo build --release --quiet --bins --examples >&2 2>/dev/null || cargo build --release --bins --examples >&2
find target/release -maxdepth 1 -type f -executable -printf "$TOP/%p\n" | sort
# Examples by their source names: target/release/examples also holds hashed copies.
for example in server/examples/*.rs; do
	echo "$TOP/target/release/examples/$(basename "$example" .rs)"
done
