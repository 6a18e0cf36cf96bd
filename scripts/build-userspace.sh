#!/usr/bin/env bash
# Builds the workspace's programs for the guest (release) and prints their paths.
. "$(dirname "$0")/lib.sh"
cd "$TOP"
cargo build --release --quiet --bins >&2 2>/dev/null || cargo build --release --bins >&2
find target/release -maxdepth 1 -type f -executable -printf "$TOP/%p\n" | sort
