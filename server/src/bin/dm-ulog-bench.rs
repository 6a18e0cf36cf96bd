// SPDX-License-Identifier: GPL-2.0
//! dm-ulog-bench: the userspace tools of `make bench`.
//!
//! `echo` answers the ping-pong module (`bench/pingpong`): the bare connector round trip.
//! `status-loop` times device-mapper status ioctls on one device: on a mirror with a
//! `userspace` log each costs two log requests (GET_SYNC_COUNT, STATUS_INFO), on a mirror with
//! the kernel's `core` log none, so the difference is the cost of two round trips.

use anyhow::Result;
use clap::{Parser, Subcommand};
use dm_ulogd::bench;

/// Benchmark helpers for the device-mapper userspace log.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Echo every ping of the dmlu_pingpong module (connector 7:0x10) back to the kernel.
    /// Prints `listening` on stderr once joined. Needs root.
    Echo {
        /// Exit after this many echoes (default: run until killed).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Time N status ioctls on a device-mapper device, one at a time; print
    /// `count=N p50_ns=.. p99_ns=.. mean_ns=.. min_ns=.. max_ns=..` and the last status.
    StatusLoop {
        /// The device's name (as in /dev/mapper/NAME).
        name: String,
        /// Timed ioctls.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Untimed ioctls first.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Echo { count } => bench::echo(count),
        Command::StatusLoop {
            name,
            count,
            warmup,
        } => {
            let (summary, status) = bench::status_loop(&name, count, warmup)?;
            println!("{summary}");
            println!("status {status}");
            Ok(())
        }
    }
}
