//! dm-ulogd: serves device-mapper "userspace" dirty logs over the netlink connector.

mod link;
mod logs;
mod regions;

use std::io::IsTerminal;

use anyhow::{bail, Result};
use caps::{CapSet, Capability};
use clap::Parser;
use tracing::{debug, info, warn};

use crate::{link::KernelLink, logs::Logs};

/// Log server for device-mapper mirrors with a `userspace` log.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Stay in the foreground (the only mode so far; for systemd and tests).
    #[arg(short, long)]
    foreground: bool,
    /// Log filter, e.g. `info` or `dm_ulogd=debug` (also RUST_LOG).
    #[arg(long, default_value = "info")]
    log: String,
}

fn check_capabilities() -> Result<()> {
    let mut missing = Vec::new();
    for (cap, why) in [
        (Capability::CAP_NET_ADMIN, "to join connector group 7"),
        (
            Capability::CAP_SYS_ADMIN,
            "for the kernel to accept its replies",
        ),
    ] {
        if !caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false) {
            missing.push(format!("{cap} ({why})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "dm-ulogd lacks {}: run it as root or grant these capabilities",
            missing.join(" and ")
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    check_capabilities()?;
    let mut link = KernelLink::open()?;
    let mut logs = Logs::default();
    info!("listening for device-mapper log requests");
    loop {
        link.receive(|request, replier| {
            let request = match request {
                Ok(r) => r,
                Err(e) => {
                    warn!("dropping malformed message: {e}");
                    return;
                }
            };
            let (error, data) = match logs.handle(&request.header, request.data) {
                Ok(data) => (0, data),
                Err(errno) => (-errno.0, Vec::new()),
            };
            debug!(
                request = request.header.request_type,
                seq = request.header.seq,
                error,
                logs = logs.len(),
                "answered"
            );
            if let Err(e) = replier.reply(&request.header, error, &data) {
                warn!("{e:#}");
            }
        })?;
    }
}
