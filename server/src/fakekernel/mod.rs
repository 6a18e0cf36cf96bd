// SPDX-License-Identifier: GPL-2.0
//! `dm-ulog-fakekernel`: the kernel's side of one mirror, for testing log servers on a host
//! without the module (clustered logs on several corosync nodes, in network namespaces).
//!
//! It listens on a seqpacket socket that a server reaches with `--kernel-socket PATH`
//! ([`crate::link::seqpacket`]), speaks the connector's framing there ([`transport`], the
//! module's transport: seqs, resends on EAGAIN, timeout, announcement and new connection),
//! plays dm-raid1 on the module's log for one log ([`mirror`]), and writes what happens to
//! an event log ([`events`]) that [`check`] judges, several nodes' logs together.

pub mod check;
pub mod events;
pub mod mirror;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use dm_ulog_uapi::RequestType;
use nix::errno::Errno;
use nix::poll::{poll, PollTimeout};

use crate::link::seqpacket::SeqpacketListener;
use events::{Event, EventLog};
use mirror::Mirror;
use transport::Transport;

/// Who in the kernel sends a request; each sends one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// dm core: CTR, suspend, resume, DTR.
    Lifecycle = 0,
    /// The mirror's worker: writes and recovery.
    Kmirrord = 1,
    /// `dmsetup status`.
    Status = 2,
    /// The module re-creating the log on a new server.
    Reattach = 3,
}

/// A request of the log, across its resends.
#[derive(Clone, Debug)]
pub struct Request {
    /// Names it in the event log (`req`), across resends.
    pub id: u64,
    /// Who sent it.
    pub actor: Actor,
    /// Its type.
    pub kind: RequestType,
    /// Its payload.
    pub payload: Vec<u8>,
    /// The log's re-creations when it was sent: an ESRCH from an older server is no reason to
    /// re-create the log again.
    pub generation: u64,
    /// Set when it is sent again after an ESRCH: the seq of that answer.
    pub answered_seq: Option<u32>,
}

/// What one fake kernel does: the log, the workload, the timing.
#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// Listen on this socket path for the server (dm-ulogd --kernel-socket PATH).
    #[arg(long, value_name = "PATH")]
    pub listen: PathBuf,
    /// Write the event log here (JSON lines, see `dm_ulogd::fakekernel::events`).
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// The CTR string: `"<sectors> <log type> <args>"`, e.g. `"8192 clustered-core 8 nosync"`.
    #[arg(long)]
    pub table: String,
    /// The log's UUID (one log: the same on every node).
    #[arg(long, default_value = "FAKE-KERNEL-LOG")]
    pub uuid: String,
    /// The log instance's luid.
    #[arg(long, default_value_t = 1)]
    pub luid: u64,
    /// The node's name in the event log.
    #[arg(long, default_value = "node")]
    pub node: String,
    /// Seed of the random regions written.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long the workload writes, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    pub duration: Duration,
    /// Stop writing after this many region writes (or at --duration, whichever comes first).
    #[arg(long, value_name = "N")]
    pub writes: Option<u64>,
    /// Most regions one write batch marks (1 to 32, the size of one MARK).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub batch: u64,
    /// How long a batch's write takes, in ms (between the marks' FLUSH and the CLEAR).
    #[arg(long = "write-ms", value_name = "MS", default_value = "2", value_parser = millis)]
    pub write_time: Duration,
    /// How long recovering one region takes, in ms (between grant and SET_REGION_SYNC).
    #[arg(long = "copy-ms", value_name = "MS", default_value = "5", value_parser = millis)]
    pub copy_time: Duration,
    /// `dmsetup status` every MS ms: GET_SYNC_COUNT (now and then IS_CLEAN).
    #[arg(long = "status-ms", value_name = "MS", default_value = "200", value_parser = millis)]
    pub status_every: Duration,
    /// Suspend and resume the mirror every SECS seconds of the workload.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub suspend_every: Option<Duration>,
    /// After the workload, wait up to SECS seconds for every region to be in sync before
    /// the teardown.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds)]
    pub settle: Duration,
    /// Resend a request unanswered for SECS seconds (the module's 15 s).
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = seconds)]
    pub timeout: Duration,
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is no number of seconds"))
}

fn millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{s:?} is no number of milliseconds"))
}

/// Runs one fake kernel until its mirror is destroyed (DTR answered).
pub fn run(opts: &Options) -> Result<()> {
    let mut events = EventLog::create(&opts.events)?;
    let mut mirror = Mirror::new(opts).context("--table")?;
    let listener = SeqpacketListener::bind(&opts.listen)?;
    tracing::info!("listening on {}", opts.listen.display());
    let mut transport = Transport::new(listener, opts.uuid.as_bytes(), opts.luid, opts.timeout);
    events.log(Event::Start {
        node: opts.node.clone(),
        pid: std::process::id(),
        uuid: opts.uuid.clone(),
        luid: opts.luid,
        table: opts.table.clone(),
        regions: mirror.regions(),
        seed: opts.seed,
    })?;
    loop {
        mirror.step(&mut events)?;
        for request in mirror.take_outbox() {
            transport.submit(request, &mut events)?;
        }
        if mirror.done() {
            break;
        }
        let now = std::time::Instant::now();
        let due = [transport.next_due(), mirror.next_due(now)]
            .into_iter()
            .flatten()
            .min();
        if due.is_none() && transport.is_idle() {
            // Nothing in flight and nothing due: no reply or timer would ever wake the loop.
            anyhow::bail!(
                "the fake kernel has nothing left to wait for: {}",
                mirror.state()
            );
        }
        let timeout = due.map_or(PollTimeout::NONE, |due| {
            // Rounded up: waking before it is due would spin.
            let wait = due
                .saturating_duration_since(now)
                .as_micros()
                .div_ceil(1000);
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX)
        });
        match poll(&mut transport.poll_fds(), timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        for answer in transport.receive(&mut events)? {
            mirror.answer(answer, &mut events)?;
        }
        mirror.withdrawals(transport.withdrawals);
        transport.tick(&mut events)?;
    }
    events.log(Event::End {
        writes: mirror.writes,
        held: mirror.held,
        requests: mirror.requests(),
        sends: transport.sends,
    })?;
    tracing::info!(
        "done: {} writes, {} held, {} requests, {} sends",
        mirror.writes,
        mirror.held,
        mirror.requests(),
        transport.sends
    );
    Ok(())
}
