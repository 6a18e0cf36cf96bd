//! dm-ulogd: serves device-mapper "userspace" dirty logs over the netlink connector.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dm_ulogd::cli::{self, CommonArgs};
use dm_ulogd::device::LogDevice;
use dm_ulogd::serve::{Config, Honest, Server};

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

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Command::DiskShow { dev, regions }) = args.command {
        let device = LogDevice::open_read_only(&dev)?;
        let summary = dm_ulogd::disk::summarize(&device, regions)
            .with_context(|| format!("cannot read a disk log from {dev}"))?;
        println!("{summary}");
        return Ok(());
    }
    cli::init_logging(&args.common.log);
    cli::check_capabilities("dm-ulogd")?;
    let config = Config {
        record: args.common.record,
        force_exit: args.force_exit,
        announce: !args.common.no_announce,
    };
    Server::new(&config, Honest)?.run()
}
