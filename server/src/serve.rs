//! The receive loop both servers share: wait for requests or signals, record, answer, count.
//!
//! How a request is answered is up to a [`Responder`]: [`Honest`] for `dm-ulogd`, a
//! misbehaving one for `dm-ulog-hostile`.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dm_ulog_uapi::{Request, RequestType};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{info, warn};

use crate::link::{KernelLink, Receipt, Replier};
use crate::lock::InstanceLock;
use crate::logs::{Logs, DEFAULT_MAX_LOG_MEMORY};
use crate::ratelimit::DropWarnings;
use crate::record::Recorder;
use crate::signals::Signals;
use crate::stats::Stats;

/// Datagrams handled before signals are looked at again.
const BATCH: usize = 256;

/// Options both servers take.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--record FILE`.
    pub record: Option<PathBuf>,
    /// `--force-exit`: SIGTERM/SIGINT exit even while logs exist.
    pub force_exit: bool,
    /// Announce the server to the kernel at start (not `--no-announce`).
    pub announce: bool,
    /// `--max-log-memory`, in bytes: the most one log may take.
    pub max_log_memory: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            record: None,
            force_exit: false,
            announce: true,
            max_log_memory: DEFAULT_MAX_LOG_MEMORY,
        }
    }
}

/// One request and everything needed to answer it.
pub struct Exchange<'r, 'a> {
    /// The request.
    pub request: &'r Request<'r>,
    /// Its type, if known.
    pub kind: Option<RequestType>,
    /// The logs, to compute the answer.
    pub logs: &'r mut Logs,
    /// The payload of the answer (reused between requests).
    pub payload: &'r mut Vec<u8>,
    /// Where replies go.
    pub tx: &'r mut Replier<'a>,
}

impl Exchange<'_, '_> {
    /// Applies the request to the logs; returns the reply's error field, the payload being
    /// in [`Exchange::payload`].
    pub fn answer(&mut self) -> i32 {
        match self
            .logs
            .handle(&self.request.header, self.request.data, self.payload)
        {
            Ok(()) => 0,
            Err(e) => -(e.errno() as i32),
        }
    }

    /// Sends the reply computed by [`Exchange::answer`].
    pub fn send_answer(&mut self, error: i32) -> Result<()> {
        self.tx.reply(&self.request.header, error, self.payload)
    }

    /// The request's type name as the record format writes it.
    pub fn type_name(&self) -> String {
        let mut s = String::new();
        crate::record::type_name(self.request.header.request_type, &mut s);
        s
    }
}

/// Decides what goes back to the kernel for each request.
pub trait Responder {
    /// Answers one request: any number of messages, normally exactly one reply.
    fn respond(&mut self, ex: &mut Exchange<'_, '_>) -> Result<()>;

    /// Adds to the SIGUSR1 status dump.
    fn status(&mut self) {}

    /// Called once when the server exits.
    fn exit(&mut self) {}
}

/// Answers every request correctly.
pub struct Honest;

impl Responder for Honest {
    fn respond(&mut self, ex: &mut Exchange<'_, '_>) -> Result<()> {
        let error = ex.answer();
        ex.send_answer(error)
    }
}

/// Whether SIGTERM/SIGINT ends the server, and what to log about it: refused while logs
/// exist (their mirrors would stall), unless `--force-exit` was given.
pub fn exit_decision(logs: &Logs, force_exit: bool) -> (bool, String) {
    let n = logs.len();
    if n == 0 {
        return (true, "exiting: no logs left".into());
    }
    let uuids: Vec<String> = logs.summaries().map(|s| s.uuid().to_string()).collect();
    let uuids = uuids.join(" ");
    if force_exit {
        return (
            true,
            format!(
                "exiting with {n} logs still in use ({uuids}): their mirrors stall until a \
                 log server re-creates the logs"
            ),
        );
    }
    (
        false,
        format!(
            "refusing to exit: {n} logs are still in use ({uuids}); remove their mirrors first \
             (dmsetup remove), or start dm-ulogd with --force-exit"
        ),
    )
}

/// A server: the netlink link, the logs and a responder.
pub struct Server<R> {
    link: KernelLink,
    signals: Signals,
    logs: Logs,
    stats: Stats,
    recorder: Option<Recorder>,
    payload: Vec<u8>,
    responder: R,
    force_exit: bool,
    drops: DropWarnings,
    /// Held while the server runs: no second server answers beside it.
    _lock: InstanceLock,
}

impl<R: Responder> Server<R> {
    /// Joins the connector group, installs the signal handlers, opens the record file. The
    /// lock is proof that no other server runs on this host.
    pub fn new(config: &Config, lock: InstanceLock, responder: R) -> Result<Self> {
        let recorder = config.record.as_deref().map(Recorder::open).transpose()?;
        let mut link = KernelLink::open()?;
        if config.announce {
            link.announce()?;
            info!("announced to the kernel: requests waiting for a server are resent now");
        }
        Ok(Self {
            link,
            signals: Signals::install()?,
            logs: Logs::with_memory_limit(config.max_log_memory),
            stats: Stats::default(),
            recorder,
            payload: Vec::with_capacity(4096),
            responder,
            force_exit: config.force_exit,
            drops: DropWarnings::default(),
            _lock: lock,
        })
    }

    /// Serves until a signal ends it.
    pub fn run(mut self) -> Result<()> {
        info!("listening for device-mapper log requests");
        loop {
            let (link_ready, _) = {
                let mut fds = [
                    PollFd::new(self.link.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                ];
                // Wake up to report drops held back by the rate limit, if any are.
                let timeout = self.drops.due().map_or(PollTimeout::NONE, |due| {
                    let wait = due.saturating_duration_since(Instant::now());
                    // Rounded up: waking before it is due would spin.
                    PollTimeout::try_from(wait.as_millis() + 1).unwrap_or(PollTimeout::MAX)
                });
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("waiting for requests"),
                }
                (fds[0].any().unwrap_or(true), fds[1].any().unwrap_or(true))
            };
            if link_ready {
                for _ in 0..BATCH {
                    if !self.receive_one()? {
                        break;
                    }
                }
            }
            if let Some(summary) = self.drops.summary(Instant::now()) {
                warn!("{summary}");
            }
            let pending = self.signals.take();
            if pending.status {
                self.dump_status();
            }
            if pending.exit && self.may_exit() {
                self.responder.exit();
                return Ok(());
            }
        }
    }

    /// Handles every message of one datagram; `false` if none was waiting.
    fn receive_one(&mut self) -> Result<bool> {
        let Self {
            link,
            logs,
            stats,
            recorder,
            payload,
            responder,
            drops,
            ..
        } = self;
        let receipt = link.receive(|msg, tx, received| {
            let request = match Request::parse(msg) {
                Ok(r) => r,
                Err(e) => {
                    stats.malformed();
                    if let Some(line) =
                        drops.dropped(received, format_args!("malformed message: {e}"))
                    {
                        warn!("{line}");
                    }
                    return;
                }
            };
            if let Some(rec) = recorder {
                if let Err(e) = rec.record(msg, &request) {
                    warn!("cannot write to the record file: {e}");
                }
            }
            let kind = request.header.kind().ok();
            let mut ex = Exchange {
                request: &request,
                kind,
                logs,
                payload,
                tx,
            };
            if let Err(e) = responder.respond(&mut ex) {
                warn!("{e:#}");
            }
            stats.record(kind, received.elapsed());
        })?;
        match receipt {
            Receipt::Empty => Ok(false),
            Receipt::Handled => Ok(true),
            Receipt::Dropped(what) => {
                stats.malformed();
                if let Some(line) = drops.dropped(Instant::now(), what) {
                    warn!("{line}");
                }
                Ok(true)
            }
        }
    }

    fn may_exit(&self) -> bool {
        let (exit, message) = exit_decision(&self.logs, self.force_exit);
        if self.logs.is_empty() {
            info!("{message}");
        } else {
            warn!("{message}");
        }
        exit
    }

    fn dump_status(&mut self) {
        info!("status: {} logs", self.logs.len());
        for s in self.logs.summaries() {
            info!("{s}");
        }
        for line in self.stats.lines() {
            info!("{line}");
        }
        self.responder.status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dm_ulog_uapi::Header;

    #[test]
    fn exit_is_refused_while_logs_exist_unless_forced() {
        let mut logs = Logs::default();
        assert!(exit_decision(&logs, false).0);
        let h = Header::request(b"LOG-X", 1, RequestType::Ctr, 1, 0).unwrap();
        logs.handle(&h, b"8 core 2", &mut Vec::new()).unwrap();
        let (exit, msg) = exit_decision(&logs, false);
        assert!(!exit);
        assert!(
            msg.contains("refusing to exit: 1 logs are still in use (LOG-X)"),
            "{msg}"
        );
        assert!(msg.contains("--force-exit"), "{msg}");
        assert!(exit_decision(&logs, true).0);
    }
}
