//! dm-ulog-hostile: a log server for tests that answers like dm-ulogd but misbehaves on
//! command (scripted faults) or at random (seeded fuzzing), reproducibly.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use dm_ulogd::cli::{self, CommonArgs};
use dm_ulogd::hostile::{fault::FaultSpec, fault::Script, Hostile};
use dm_ulogd::lock::InstanceLock;
use dm_ulogd::serve::Server;

/// Test log server that misbehaves on command. Exits on SIGTERM/SIGINT even while logs
/// exist, printing `hostile: requests=<n> malformed=<m> seed=<s>` (also on SIGUSR1).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// `<type>:<action>[*<count>]`, repeatable; faults apply in order to the first requests
    /// they match. Type: a request type in lower case (flush, get_region_size, ...) or any.
    /// Action: drop, errno=N, ack=N, size=N, u64=V, device=S, device-raw=S, stray, dup,
    /// delay=MS, unpriv, data-size=N. Count: default 1, 0 for unlimited.
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
    cli::init_logging(&args.common.log);
    // The same lock as dm-ulogd's: the two never answer side by side.
    let lock = InstanceLock::acquire(&args.common.lock_file)?;
    cli::check_capabilities("dm-ulog-hostile")?;
    let hostile = Hostile::new(
        Script::new(args.fault),
        args.seed,
        args.fuzz,
        args.max_malformed,
    );
    // A test tool: it goes when told to, logs or not.
    let config = args.common.config(true);
    Server::new(&config, lock, hostile)?.run()
}
