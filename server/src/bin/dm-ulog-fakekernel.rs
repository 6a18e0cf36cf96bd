// SPDX-License-Identifier: GPL-2.0
//! dm-ulog-fakekernel: the kernel's side of one mirror, for testing log servers on a host
//! without the module. It listens on a socket that a server reaches with `--kernel-socket`,
//! plays dm-raid1 on the module's log there and writes an event log; `check` judges several
//! nodes' event logs against the cluster's invariants (`dm_ulogd::fakekernel`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use dm_ulogd::cli;
use dm_ulogd::fakekernel::{self, check, Options};

/// A fake kernel for one node: runs a mirror's log requests against the server that connects
/// to --listen, writing an event log (JSON lines); or checks event logs.
#[derive(Parser, Debug)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(flatten)]
    run: Option<Options>,
    /// Log filter, e.g. `info` or `debug` (RUST_LOG overrides it). Logs go to stderr.
    #[arg(long, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check several nodes' event logs against the cluster's invariants (I1-I4); prints what
    /// failed, with times, and exits 1 unless all hold.
    Check {
        /// The event logs, one per node.
        #[arg(required = true, value_name = "LOG")]
        logs: Vec<PathBuf>,
        /// Also check that every node that ended saw N regions in sync at its last
        /// GET_SYNC_COUNT (I4).
        #[arg(long, value_name = "N")]
        all_in_sync: Option<u64>,
    },
}

fn main() -> ExitCode {
    cli::finish(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    if let Some(Command::Check { logs, all_in_sync }) = args.command {
        let logs = logs
            .iter()
            .map(|p| check::NodeLog::read(p))
            .collect::<Result<Vec<_>>>()?;
        let report = check::check(&logs, all_in_sync);
        check::print(&report, all_in_sync.is_some());
        if !report.ok() {
            bail!("{} invariant violations", report.violations.len());
        }
        return Ok(());
    }
    let Some(opts) = args.run else {
        bail!("--listen, --events and --table are required (or the check subcommand)");
    };
    cli::init_logging(&args.log);
    fakekernel::run(&opts)
}
