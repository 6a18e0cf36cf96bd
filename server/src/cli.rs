// SPDX-License-Identifier: GPL-2.0
//! Start-up both programs share: common flags, logging, the capability check, exit status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use caps::{CapSet, Capability};

use crate::lock::DEFAULT_LOCK_FILE;
use crate::logs::DEFAULT_MAX_LOG_MEMORY;
use crate::serve::Config;

/// Exit status of a configuration error that a restart cannot mend (sysexits' `EX_CONFIG`):
/// another server holds the lock, the kernel lacks the connector, a file cannot be opened.
/// The systemd unit lists it in `RestartPreventExitStatus=`.
pub const EXIT_CONFIG: u8 = 78;
/// Exit status when privileges are missing (sysexits' `EX_NOPERM`); no restart either.
pub const EXIT_NOPERM: u8 = 77;

/// An error that stops a server from starting, with the exit status that tells systemd not
/// to retry. Its text is the message for the admin.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    /// The exit status: [`EXIT_CONFIG`] or [`EXIT_NOPERM`].
    pub status: u8,
    message: String,
}

impl Fatal {
    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            status: EXIT_CONFIG,
            message: message.into(),
        }
    }

    /// Missing privileges.
    pub fn permission(message: impl Into<String>) -> Self {
        Self {
            status: EXIT_NOPERM,
            message: message.into(),
        }
    }
}

/// The exit status for an error: that of a [`Fatal`] anywhere in it, else 1 (a failure a
/// restart may mend).
pub fn exit_status(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<Fatal>()
        .or_else(|| error.chain().find_map(|e| e.downcast_ref::<Fatal>()))
        .map_or(1, |f| f.status)
}

/// Ends a program: prints the error as `main` returning it would, exits with its status.
pub fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::from(exit_status(&e))
        }
    }
}

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
    /// Keep the request counts in FILE (best on a tmpfs), updated in place on every request
    /// without a system call: one line of fixed width, `TOTAL=` then `TYPE=` for every
    /// request type, each count in 16 hex digits, which is also shell assignments (`. FILE`
    /// takes it in one read). For scripts, which must not parse the log (`make bench` reads
    /// its windows from it). Readers take no lock: a count read in pieces (the shell's
    /// `read`) while a carry runs through it can come out short.
    #[arg(long, value_name = "FILE")]
    pub counters: Option<PathBuf>,
    /// Do not announce the server to the kernel at start. The Rust module then finds it only
    /// when it resends (after 15 s) or retries (every 2 s), as with upstream's module.
    #[arg(long)]
    pub no_announce: bool,
    /// Do not offer the kernel the in-sync map: announce no features and refuse
    /// GET_IN_SYNC_RANGES. The kernel then asks IN_SYNC before every write to a region it
    /// does not hold, as upstream's module does. (Without an announcement there is no map
    /// either.)
    #[arg(long)]
    pub no_in_sync_map: bool,
    /// The lock that keeps a second server (dm-ulogd or dm-ulog-hostile) from starting on
    /// this host: two would both answer every request and both write disk logs.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_LOCK_FILE)]
    pub lock_file: PathBuf,
    /// For tests: talk to a fake kernel listening on PATH (dm-ulog-fakekernel) instead of the
    /// kernel's connector. Needs no privileges; the server exits when the fake kernel closes
    /// the socket.
    #[arg(long, value_name = "PATH")]
    pub kernel_socket: Option<PathBuf>,
    /// Memory one log may take, in MiB (its region state, and a disk log's I/O buffer); a
    /// table that needs more is refused with ENOMEM and a message saying so.
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = DEFAULT_MAX_LOG_MEMORY >> 20,
        value_parser = clap::value_parser!(u64).range(1..=1 << 30)
    )]
    pub max_log_memory: u64,
}

impl CommonArgs {
    /// The server's configuration from these flags; `force_exit` is the program's.
    pub fn config(&self, force_exit: bool) -> Config {
        Config {
            record: self.record.clone(),
            counters: self.counters.clone(),
            force_exit,
            announce: !self.no_announce,
            in_sync_map: !self.no_in_sync_map,
            max_log_memory: self.max_log_memory << 20,
            // dm-ulogd's own flag (`--single-node`) turns it on; the test server never.
            cluster: false,
            kernel_socket: self.kernel_socket.clone(),
        }
    }
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
    require_capabilities(
        program,
        &[
            (Capability::CAP_NET_ADMIN, "to join connector group 7"),
            (
                Capability::CAP_SYS_ADMIN,
                "for the kernel to accept its replies",
            ),
        ],
    )
}

/// Fails, with the fix, unless every capability of `needed` (each with what it is for) is
/// in effect.
pub fn require_capabilities(program: &str, needed: &[(Capability, &str)]) -> Result<()> {
    let mut missing = Vec::new();
    for &(cap, why) in needed {
        if !caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false) {
            missing.push(format!("{cap} ({why})"));
        }
    }
    if !missing.is_empty() {
        bail!(Fatal::permission(format!(
            "{program} lacks {}: run it as root or grant {}",
            missing.join(" and "),
            if missing.len() == 1 { "it" } else { "them" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn fatal_errors_keep_their_exit_status_under_context() {
        let e = anyhow::Error::new(Fatal::config("held")).context("starting");
        assert_eq!(exit_status(&e), EXIT_CONFIG);
        let e: Result<()> = Err(Fatal::permission("no caps")).context("starting");
        assert_eq!(exit_status(&e.unwrap_err()), EXIT_NOPERM);
        assert_eq!(exit_status(&anyhow::anyhow!("socket gone")), 1);
    }

    /// The unit stops retrying on exactly the statuses that mean "a restart cannot help",
    /// gives up after repeated failed starts, and keeps its hardening.
    #[test]
    fn unit_stops_retrying_on_configuration_errors() {
        let unit = include_str!("../dm-ulogd.service");
        let value = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("dm-ulogd.service has no {key}="))
        };
        let statuses: Vec<&str> = value("RestartPreventExitStatus").split(' ').collect();
        for code in [EXIT_CONFIG, EXIT_NOPERM] {
            assert!(
                statuses.contains(&code.to_string().as_str()),
                "{statuses:?}"
            );
        }
        // Start limits belong in [Unit]; systemd ignores them in [Service].
        let (unit_section, _) = unit.split_once("[Service]").unwrap();
        for key in ["StartLimitIntervalSec=", "StartLimitBurst="] {
            assert!(unit_section.contains(key), "no {key} in [Unit]");
        }
        for line in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "RestrictAddressFamilies=AF_NETLINK AF_UNIX",
            "DevicePolicy=closed",
            "SystemCallArchitectures=native",
            "MemoryDenyWriteExecute=yes",
        ] {
            assert!(unit.lines().any(|l| l == line), "no {line}");
        }
        // Connector sockets live in the host's network namespace.
        assert!(!unit.contains("PrivateNetwork=yes"));
    }
}
