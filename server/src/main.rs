// SPDX-License-Identifier: GPL-2.0
//! dm-ulogd: serves device-mapper "userspace" dirty logs over the netlink connector.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dm_ulogd::cli::{self, CommonArgs};
use dm_ulogd::device::LogDevice;
use dm_ulogd::lock::InstanceLock;
use dm_ulogd::serve::{Honest, LogServer};
use sd_notify::NotifyState;

/// Log server for device-mapper mirrors with a `userspace` log.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Exit on SIGTERM/SIGINT even while logs exist (their mirrors then stall until a server
    /// re-creates the logs). Without it such a signal is refused and logged.
    #[arg(long)]
    force_exit: bool,
    /// Serve `clustered-core` logs on this node alone, as `core` (and `clustered-disk` as
    /// `disk`), without corosync: for a single machine. Without it, clustered logs are served
    /// with the other nodes of the corosync cluster, and their tables fail to load while
    /// corosync is not running.
    #[arg(long)]
    single_node: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a disk log's header and clean-region count in one line:
    /// `magic=<ok|bad> version=<v> nr_regions=<n> clean=<count>`.
    DiskShow {
        /// The log device: a path or major:minor.
        dev: String,
        /// Count the clean bits of the first N regions instead of the header's nr_regions.
        #[arg(long, value_name = "N")]
        regions: Option<u64>,
    },
}

/// Exits 0, 1 for failures a restart may mend, or [`cli::EXIT_CONFIG`] /
/// [`cli::EXIT_NOPERM`] for those it cannot (the systemd unit does not retry those).
fn main() -> ExitCode {
    cli::finish(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    if let Some(Command::DiskShow { dev, regions }) = args.command {
        let device = LogDevice::open_read_only(&dev)?;
        let summary = dm_ulogd::disk::summarize(&device, regions)
            .with_context(|| format!("cannot read a disk log from {dev}"))?;
        println!("{summary}");
        return Ok(());
    }
    cli::init_logging(&args.common.log);
    // The lock first: a second server is told so whoever runs it.
    let lock = InstanceLock::acquire(&args.common.lock_file)?;
    let mut config = args.common.config(args.force_exit);
    config.cluster = !args.single_node;
    let server = LogServer::open("dm-ulogd", &config, lock, Honest)?;
    // The connector group is joined and the server announced: requests are answered from now
    // on, so a Type=notify unit is started (systemd orders dependent units after this).
    notify_systemd(&[NotifyState::Ready]);
    let result = server.run();
    notify_systemd(&[NotifyState::Stopping]);
    result
}

/// Tells the service manager about a state change; a no-op unless it set `NOTIFY_SOCKET`.
fn notify_systemd(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("cannot notify the service manager ({state:?}): {e}");
    }
}
