// SPDX-License-Identifier: GPL-2.0
//! dm-ulog-hostile: a log server for tests that answers like dm-ulogd but misbehaves on
//! command (scripted faults) or at random (seeded fuzzing), reproducibly.

use std::process::ExitCode;

use anyhow::Result;
use caps::Capability;
use clap::{Parser, Subcommand};
use dm_ulog_uapi::Withdrawal;
use dm_ulogd::cli::{self, CommonArgs};
use dm_ulogd::hostile::{fault::FaultSpec, fault::Script, Hostile};
use dm_ulogd::link;
use dm_ulogd::lock::InstanceLock;
use dm_ulogd::serve::LogServer;

/// Test log server that misbehaves on command. Exits on SIGTERM/SIGINT even while logs
/// exist, printing `hostile: requests=<n> malformed=<m> seed=<s>` (also on SIGUSR1).
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
    /// `<type>:<action>[*<count>]`, repeatable; faults apply in order to the first requests
    /// they match. Type: a request type in lower case (flush, get_region_size, ...) or any.
    /// Action: drop, errno=N, ack=N, size=N, u64=V, device=S, device-raw=S, stray, dup,
    /// delay=MS, unpriv, data-size=N, exit, misaddressed, mistyped, anonymous, unpriv-socket,
    /// withdraw. Count: default 1, 0 for unlimited.
    #[arg(long, value_name = "SPEC")]
    fault: Vec<FaultSpec>,
    /// Seed of the fuzzer's RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Probability (0..1) that a request gets 1-3 malformed replies before the correct one.
    #[arg(long, value_name = "P", value_parser = probability)]
    fuzz: Option<f64>,
    /// Stop fuzzing after this many malformed replies.
    #[arg(long, value_name = "N")]
    max_malformed: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send the kernel one withdrawal from its in-sync map, then exit.
    ///
    /// What a server sends when regions leave sync (another cluster node's failure, say):
    /// the kernel stops answering IN_SYNC itself for them (the Rust module forgets every
    /// log's map). Exits 0, printing nothing, once the kernel has taken it (its sendmsg
    /// returned). Needs CAP_SYS_ADMIN (root); joins no group and takes no lock, so it runs
    /// beside a dm-ulogd.
    Withdraw {
        /// The log instance: the `luid` of its requests (see `--record`).
        luid: u64,
        /// The first region withdrawn.
        #[arg(long, value_name = "REGION", default_value_t = 0)]
        first: u64,
        /// How many regions; the default, u64::MAX, is every region from `--first` on.
        #[arg(long, value_name = "N", default_value_t = u64::MAX)]
        count: u64,
    },
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is no probability between 0 and 1")),
    }
}

fn main() -> ExitCode {
    cli::finish(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    if let Some(Command::Withdraw { luid, first, count }) = args.command {
        cli::require_capabilities(
            "dm-ulog-hostile withdraw",
            &[(
                Capability::CAP_SYS_ADMIN,
                "for the kernel to accept the withdrawal",
            )],
        )?;
        return link::send_withdrawal(&Withdrawal { luid, first, count });
    }
    cli::init_logging(&args.common.log);
    // The same lock as dm-ulogd's: the two never answer side by side.
    let lock = InstanceLock::acquire(&args.common.lock_file)?;
    let hostile = Hostile::new(
        Script::new(args.fault),
        args.seed,
        args.fuzz,
        args.max_malformed,
    );
    // A test tool: it goes when told to, logs or not.
    let config = args.common.config(true);
    LogServer::open("dm-ulog-hostile", &config, lock, hostile)?.run()
}
