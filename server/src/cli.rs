//! Start-up both programs share: common flags, logging, the capability check.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use caps::{CapSet, Capability};

/// Flags of both servers.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Stay in the foreground (the only mode; for systemd and tests).
    #[arg(short, long)]
    pub foreground: bool,
    /// Log filter, e.g. `info` or `dm_ulogd=debug` (RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Append one line per request received to FILE, before handling it (see README).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Do not announce the server to the kernel at start. The Rust module then finds it only
    /// when it resends (after 15 s) or retries (every 2 s), as with upstream's module.
    #[arg(long)]
    pub no_announce: bool,
}

/// Logs to stderr (the journal under systemd), coloured only on a terminal.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Fails early, with the fix, when the kernel would ignore the server.
pub fn check_capabilities(program: &str) -> Result<()> {
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
            "{program} lacks {}: run it as root or grant these capabilities",
            missing.join(" and ")
        );
    }
    Ok(())
}
