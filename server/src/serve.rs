// SPDX-License-Identifier: GPL-2.0
//! The receive loop both servers share: wait for requests or signals, record, answer, count.
//!
//! What is done with each message is up to a [`Handler`]: [`LogService`] for the log
//! servers, where how a request is answered is up to a [`Responder`] ([`Honest`] for
//! `dm-ulogd`, a misbehaving one for `dm-ulog-hostile`); an echo for the benchmark's
//! ping-pong, whose floor is then this same loop.

use std::fmt;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use dm_ulog_uapi::{Request, RequestType, WireError, FEATURE_CLEARS_IN_FLUSH, FEATURE_IN_SYNC_MAP};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{info, warn};

use crate::cli;
use crate::cluster::group::Group;
use crate::cluster::service::ClusteredLogs;
use crate::link::seqpacket::FakeKernelSocket;
use crate::link::{Endpoint, KernelLink, NetlinkSocket, Receipt, Replier, RECEIVE_BATCH};
use crate::lock::InstanceLock;
use crate::logs::{Logs, DEFAULT_MAX_LOG_MEMORY};
use crate::ratelimit::DropWarnings;
use crate::record::{Recorder, TypeName};
use crate::signals::Signals;
use crate::stats::{LiveCounters, Stats};

/// Datagrams handled before signals are looked at again: whole receives, so that none waits
/// in the link's buffers while the loop polls.
const BATCH: usize = 16 * RECEIVE_BATCH;

/// Options both servers take.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--record FILE`.
    pub record: Option<PathBuf>,
    /// `--counters FILE`: the request counts, kept up to date in FILE ([`LiveCounters`]).
    pub counters: Option<PathBuf>,
    /// `--force-exit`: SIGTERM/SIGINT exit even while logs exist.
    pub force_exit: bool,
    /// Announce the server to the kernel at start (not `--no-announce`).
    pub announce: bool,
    /// Offer the kernel the in-sync map (not `--no-in-sync-map`); only an announcement can.
    pub in_sync_map: bool,
    /// `--max-log-memory`, in bytes: the most one log may take.
    pub max_log_memory: u64,
    /// Serve `clustered-*` logs with the other nodes of a corosync cluster (dm-ulogd without
    /// `--single-node`; a build without corosync refuses them); otherwise on this node
    /// alone, as `core` and `disk`.
    pub cluster: bool,
    /// `--kernel-socket PATH`: a fake kernel's socket instead of the kernel's connector.
    pub kernel_socket: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            record: None,
            counters: None,
            force_exit: false,
            announce: true,
            in_sync_map: true,
            max_log_memory: DEFAULT_MAX_LOG_MEMORY,
            cluster: false,
            kernel_socket: None,
        }
    }
}

impl Config {
    /// Whether the kernel keeps an in-sync map of this server's logs: the map is offered,
    /// and announced. Then GET_IN_SYNC_RANGES is answered and regions leaving sync are
    /// withdrawn.
    pub fn uses_in_sync_map(&self) -> bool {
        self.announce && self.in_sync_map
    }

    /// The `FEATURE_*` bits the announcement carries.
    pub fn features(&self) -> u32 {
        let map = if self.uses_in_sync_map() {
            FEATURE_IN_SYNC_MAP
        } else {
            0
        };
        // Taking clears in a FLUSH needs nothing from the admin: offered whenever announced.
        let clears = if self.announce {
            FEATURE_CLEARS_IN_FLUSH
        } else {
            0
        };
        map | clears
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
    ///
    /// Regions the request took out of sync are withdrawn from the kernel's in-sync map
    /// here, before any reply can be sent: the kernel must not answer IN_SYNC "in sync" for
    /// them once it has heard the reply. An error (the withdrawal could not be sent) means
    /// no reply may go out; the withdrawal stays pending, and goes before the next request
    /// is applied (the kernel resends this one after its timeout).
    pub fn answer(&mut self) -> Result<i32> {
        self.withdraw()?;
        let error = match self
            .logs
            .handle(&self.request.header, self.request.data, self.payload)
        {
            Ok(()) => 0,
            Err(e) => -(e.errno() as i32),
        };
        self.withdraw()?;
        Ok(error)
    }

    /// Sends the logs' pending withdrawal, if any, and waits for its `sendmsg`: the
    /// kernel's connector acts on it inside that call.
    fn withdraw(&mut self) -> Result<()> {
        if let Some(withdrawal) = self.logs.pending_withdrawal() {
            self.tx.withdraw(&withdrawal)?;
            self.logs.withdrawal_sent();
        }
        Ok(())
    }

    /// Sends the reply computed by [`Exchange::answer`].
    pub fn send_answer(&mut self, error: i32) -> Result<()> {
        self.tx.reply(&self.request.header, error, self.payload)
    }

    /// The request's type name as the record format writes it.
    pub fn type_name(&self) -> TypeName {
        TypeName(self.request.header.request_type)
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
        let error = ex.answer()?;
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

/// What the receive loop does with the connector messages it receives: [`LogService`] for
/// the log servers, an echo for the benchmark's ping-pong (`crate::bench`).
pub trait Handler {
    /// Why a message was refused, formatted only for a warning that is due.
    type Refusal: fmt::Display;

    /// Handles one connector message (what follows its netlink header), received at
    /// `received`; replies go through `tx`. A refused message is counted
    /// ([`Handler::dropped`]) and warned about, at a limited rate.
    fn message(
        &mut self,
        msg: &[u8],
        tx: &mut Replier<'_>,
        received: Instant,
    ) -> Result<(), Self::Refusal>;

    /// Counts a message refused, or a datagram (or its rest) that was no netlink message or
    /// did not come from the kernel.
    fn dropped(&mut self) {}

    /// Whether the handler's work is over, asked after each datagram: `Some(Ok(()))` ends the
    /// loop, `Some(Err(_))` ends it with that error.
    fn finished(&mut self) -> Option<Result<()>> {
        None
    }

    /// SIGUSR1: logs the status.
    fn status(&mut self) {}

    /// Descriptors besides the link's that the loop polls: when one is readable, or at
    /// [`Handler::deadline`], it calls [`Handler::poll`].
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }

    /// When [`Handler::poll`] is due without a descriptor waking it.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Work that does not come from the link (clustered logs' deliveries), with the link's
    /// replier for what it answers.
    fn poll(&mut self, _tx: &mut Replier<'_>) -> Result<()> {
        Ok(())
    }

    /// SIGTERM or SIGINT: whether to exit now (a handler that refuses logs why).
    fn may_exit(&mut self) -> bool {
        true
    }

    /// Called once when the loop ends on a signal or [`Handler::finished`].
    fn exit(&mut self) {}
}

/// The log servers' handler: parses each request, records it, lets the [`Responder`] answer
/// it from the logs, and counts it.
pub struct LogService<R> {
    logs: Logs,
    /// `clustered-*` logs served with the cluster, when the configuration says so.
    clustered: Option<ClusteredLogs<Box<dyn Group>>>,
    stats: Stats,
    recorder: Option<Recorder>,
    /// `--counters FILE`, updated with `stats`.
    counters: Option<LiveCounters>,
    payload: Vec<u8>,
    responder: R,
    force_exit: bool,
}

impl<R: Responder> LogService<R> {
    /// No logs yet; opens the record file and makes the counters file if the configuration
    /// names them.
    pub fn new(config: &Config, responder: R) -> Result<Self> {
        let recorder = config.record.as_deref().map(Recorder::open).transpose()?;
        let stats = Stats::default();
        let counters = config
            .counters
            .as_deref()
            .map(|path| LiveCounters::create(path, &stats))
            .transpose()?;
        let logs = Logs::with_memory_limit(config.max_log_memory)
            .with_in_sync_map(config.uses_in_sync_map())
            .with_clears_in_flush(config.announce);
        let clustered = config.cluster.then(|| {
            let connect = crate::cluster::connect();
            ClusteredLogs::new(connect, logs.extensions(), config.max_log_memory)
        });
        Ok(Self {
            logs,
            clustered,
            stats,
            recorder,
            counters,
            payload: Vec::with_capacity(4096),
            responder,
            force_exit: config.force_exit,
        })
    }

    /// The logs.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// The request counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The responder.
    pub fn responder(&self) -> &R {
        &self.responder
    }

    /// Counts a request of `kind` (`None`: unknown) received at `received` and answered
    /// now, in the counters file too.
    fn count(&mut self, kind: Option<RequestType>, received: Instant) {
        self.stats.record(kind, received.elapsed());
        if let (Some(live), Some(kind)) = (&mut self.counters, kind) {
            live.update(kind, self.stats.of(kind).count(), self.stats.total());
        }
    }
}

impl<R: Responder> Handler for LogService<R> {
    type Refusal = WireError;

    fn message(
        &mut self,
        msg: &[u8],
        tx: &mut Replier<'_>,
        received: Instant,
    ) -> Result<(), WireError> {
        let request = Request::parse(msg)?;
        if let Some(rec) = &mut self.recorder {
            if let Err(e) = rec.record(msg, &request) {
                warn!("cannot write to the record file: {e}");
            }
        }
        let kind = request.header.kind().ok();
        if let Some(clustered) = self
            .clustered
            .as_mut()
            .filter(|c| c.owns(&request.header, request.data))
        {
            if let Err(e) = clustered.request(&request.header, request.data, tx) {
                warn!("{e:#}");
            }
            self.count(kind, received);
            return Ok(());
        }
        let mut ex = Exchange {
            request: &request,
            kind,
            logs: &mut self.logs,
            payload: &mut self.payload,
            tx,
        };
        if let Err(e) = self.responder.respond(&mut ex) {
            warn!("{e:#}");
        }
        self.count(kind, received);
        Ok(())
    }

    fn dropped(&mut self) {
        self.stats.malformed();
    }

    fn status(&mut self) {
        info!("status: {} logs", self.logs.len());
        for s in self.logs.summaries() {
            info!("{s}");
        }
        if let Some(clustered) = &self.clustered {
            info!("status: {} clustered logs", clustered.len());
            for s in clustered.summaries() {
                info!("{s}");
            }
        }
        for line in self.stats.lines() {
            info!("{line}");
        }
        self.responder.status();
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.clustered.as_ref().map(|c| c.fds()).unwrap_or_default()
    }

    fn deadline(&self) -> Option<Instant> {
        self.clustered.as_ref().and_then(|c| c.deadline())
    }

    fn poll(&mut self, tx: &mut Replier<'_>) -> Result<()> {
        match &mut self.clustered {
            Some(c) => c.poll(tx),
            None => Ok(()),
        }
    }

    fn may_exit(&mut self) -> bool {
        let clustered = self.clustered.as_ref().map_or(0, |c| c.len());
        if clustered > 0 && !self.force_exit {
            warn!(
                "refusing to exit: {clustered} clustered logs are still in use; remove their \
                 mirrors first (dmsetup remove), or start dm-ulogd with --force-exit"
            );
            return false;
        }
        let (exit, message) = exit_decision(&self.logs, self.force_exit);
        if self.logs.is_empty() {
            info!("{message}");
        } else {
            warn!("{message}");
        }
        exit
    }

    fn exit(&mut self) {
        self.responder.exit();
    }
}

/// A server: the receive loop over a link, with signals, and a [`Handler`] for what
/// arrives.
pub struct Server<H, E = NetlinkSocket> {
    link: KernelLink<E>,
    signals: Signals,
    handler: H,
    drops: DropWarnings,
    /// Held while the server runs: no second server answers beside it.
    _lock: Option<InstanceLock>,
}

impl<R: Responder> Server<LogService<R>> {
    /// A log server: opens the record file, joins the connector group (announcing the
    /// server unless told not to), installs the signal handlers. The lock is proof that no
    /// other server runs on this host.
    pub fn new(config: &Config, lock: InstanceLock, responder: R) -> Result<Self> {
        let service = LogService::new(config, responder)?;
        Self::locked(KernelLink::open()?, config, service, lock)
    }
}

impl<R: Responder, E: Endpoint> Server<LogService<R>, E> {
    /// [`Server::start`], holding `lock` while it runs: a server over a link of its own (a
    /// fake kernel's, `--kernel-socket`) is still the only one that answers for its lock.
    pub fn locked(
        link: KernelLink<E>,
        config: &Config,
        service: LogService<R>,
        lock: InstanceLock,
    ) -> Result<Self> {
        let mut server = Self::start(link, config, service)?;
        server._lock = Some(lock);
        Ok(server)
    }

    /// The log server's loop over `link`: announces the server (with the features
    /// `config` offers) unless told not to, installs the signal handlers. Takes no lock.
    pub fn start(mut link: KernelLink<E>, config: &Config, service: LogService<R>) -> Result<Self> {
        if config.announce {
            link.announce(config.features())?;
            info!(
                in_sync_map = config.uses_in_sync_map(),
                "announced to the kernel: requests waiting for a server are resent now"
            );
        }
        Self::with_link(link, service)
    }
}

/// A log server on the link its [`Config`] names: the kernel's connector, or for tests a
/// fake kernel's socket (`--kernel-socket`).
pub enum LogServer<R> {
    /// Over the kernel's connector.
    Connector(Server<LogService<R>>),
    /// Over a fake kernel's socket (`dm-ulog-fakekernel`).
    FakeKernel(Server<LogService<R>, FakeKernelSocket>),
}

impl<R: Responder> LogServer<R> {
    /// Opens the record file and the link, announces the server (unless told not to) and
    /// installs the signal handlers, holding `lock`. The connector needs `CAP_NET_ADMIN` and
    /// `CAP_SYS_ADMIN`, checked first (the error names `program`); a fake kernel needs
    /// neither.
    pub fn open(program: &str, config: &Config, lock: InstanceLock, responder: R) -> Result<Self> {
        let Some(path) = &config.kernel_socket else {
            cli::check_capabilities(program)?;
            return Ok(Self::Connector(Server::new(config, lock, responder)?));
        };
        let service = LogService::new(config, responder)?;
        let link = KernelLink::new(FakeKernelSocket::connect(path)?);
        info!(
            "talking to a fake kernel at {} (--kernel-socket, for tests)",
            path.display()
        );
        let server = Server::locked(link, config, service, lock)?;
        Ok(Self::FakeKernel(server))
    }

    /// Serves until a signal ends it, or (a fake kernel) the socket closes.
    pub fn run(self) -> Result<()> {
        match self {
            Self::Connector(server) => server.run(),
            Self::FakeKernel(server) => server.run(),
        }
    }
}

impl<H: Handler, E: Endpoint> Server<H, E> {
    /// The loop over `link`, handing what arrives to `handler`; installs the signal
    /// handlers. Takes no lock.
    pub fn with_link(link: KernelLink<E>, handler: H) -> Result<Self> {
        Ok(Self {
            link,
            signals: Signals::install()?,
            handler,
            drops: DropWarnings::default(),
            _lock: None,
        })
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The link.
    pub fn link(&self) -> &KernelLink<E> {
        &self.link
    }

    /// Handles the datagrams waiting, up to a batch (then signals get their turn);
    /// `Break` once the handler has finished.
    pub fn receive_waiting(&mut self) -> Result<ControlFlow<()>> {
        for _ in 0..BATCH {
            let more = self.receive_one()?;
            if let Some(done) = self.handler.finished() {
                done?;
                return Ok(ControlFlow::Break(()));
            }
            if !more {
                break;
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Handles every message of one datagram; `false` if none was waiting.
    fn receive_one(&mut self) -> Result<bool> {
        let Self {
            link,
            handler,
            drops,
            ..
        } = self;
        let receipt = link.receive(|msg, tx, received| {
            if let Err(why) = handler.message(msg, tx, received) {
                handler.dropped();
                if let Some(line) =
                    drops.dropped(received, format_args!("malformed message: {why}"))
                {
                    warn!("{line}");
                }
            }
        })?;
        match receipt {
            Receipt::Empty => Ok(false),
            Receipt::Handled => Ok(true),
            Receipt::Dropped(what) => {
                handler.dropped();
                if let Some(line) = drops.dropped(Instant::now(), what) {
                    warn!("{line}");
                }
                Ok(true)
            }
        }
    }
}

impl<H: Handler, E: Endpoint + AsFd> Server<H, E> {
    /// Serves until a signal or the handler ends it.
    pub fn run(mut self) -> Result<()> {
        info!("listening for device-mapper log requests");
        while self.turn()?.is_continue() {}
        self.handler.exit();
        Ok(())
    }

    /// One turn of the loop: waits for requests or signals, then handles what came;
    /// `Break` when the server is to exit.
    pub fn turn(&mut self) -> Result<ControlFlow<()>> {
        let (link_ready, signalled, other_ready) = {
            let own = [
                PollFd::new(self.link.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            let extra = self.handler.fds();
            // A turn per request: without the handler's descriptors (single-node logs) the
            // set stays on the stack, no allocation in the round trip.
            let (mut on_stack, mut grown);
            let fds: &mut [PollFd<'_>] = if extra.is_empty() {
                on_stack = own;
                &mut on_stack
            } else {
                grown = own
                    .into_iter()
                    .chain(
                        extra
                            .into_iter()
                            .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
                    )
                    .collect::<Vec<_>>();
                &mut grown
            };
            // Wake up to report drops held back by the rate limit, if any are, and for the
            // handler's own work.
            let due = [self.drops.due(), self.handler.deadline()]
                .into_iter()
                .flatten()
                .min();
            let timeout = due.map_or(PollTimeout::NONE, |due| {
                let wait = due.saturating_duration_since(Instant::now());
                // Rounded up: waking before it is due would spin.
                PollTimeout::try_from(wait.as_millis() + 1).unwrap_or(PollTimeout::MAX)
            });
            match poll(fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => return Ok(ControlFlow::Continue(())),
                Err(e) => return Err(e).context("waiting for requests"),
            }
            let ready = |fd: &PollFd<'_>| fd.any().unwrap_or(true);
            (
                ready(&fds[0]),
                ready(&fds[1]),
                fds[2..].iter().any(ready) || due.is_some(),
            )
        };
        if other_ready {
            let Self { link, handler, .. } = self;
            handler.poll(&mut link.replier())?;
        }
        if link_ready && self.receive_waiting()?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
        if self.drops.due().is_some() {
            if let Some(summary) = self.drops.summary(Instant::now()) {
                warn!("{summary}");
            }
        }
        // A signal's handler sets its flag before it writes to the pipe: a flag that is set
        // without a byte in the pipe yet is taken on the turn the byte wakes.
        if signalled {
            let pending = self.signals.take();
            if pending.status {
                self.handler.status();
            }
            if pending.exit && self.handler.may_exit() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{datagram, Capture, Loopback};
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

    /// The counters file shows each request served the moment it is counted, every type
    /// always present; messages that are no request count nowhere.
    #[test]
    fn counters_file_follows_the_requests_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters");
        let config = Config {
            counters: Some(path.clone()),
            ..Config::default()
        };
        let mut service = LogService::new(&config, Honest).unwrap();
        let mut link = KernelLink::new(Loopback::<Capture>::default());
        let read = || {
            let line = std::fs::read_to_string(&path).unwrap();
            let fields: Vec<(String, u64)> = line
                .strip_suffix('\n')
                .unwrap()
                .split(' ')
                .map(|f| {
                    let (name, hex) = f.split_once('=').unwrap();
                    assert_eq!(hex.len(), 16, "{f}");
                    (name.to_string(), u64::from_str_radix(hex, 16).unwrap())
                })
                .collect();
            (line.len(), fields)
        };
        let (len, start) = read();
        let names =
            |fields: &[(String, u64)]| fields.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        let expected: Vec<String> = std::iter::once("TOTAL")
            .chain(RequestType::ALL.iter().map(|k| k.name()))
            .map(String::from)
            .collect();
        assert_eq!(names(&start), expected);
        assert!(start.iter().all(|f| f.1 == 0), "{start:?}");
        let mut serve = |kind: RequestType, data: &[u8]| {
            let h = Header::request(b"LOG-C", 7, kind, 1, data.len()).unwrap();
            let mut msg = vec![0; 1024];
            let n = dm_ulog_uapi::encode_message(&mut msg, &h, data).unwrap();
            link.endpoint().push(datagram(&msg[..n]));
            link.endpoint().push(datagram(b"no request"));
            while !matches!(
                link.receive(|msg, tx, received| {
                    let _ = service.message(msg, tx, received);
                })
                .unwrap(),
                Receipt::Empty
            ) {}
        };
        serve(RequestType::Ctr, b"1024 core 8");
        serve(RequestType::Resume, b"");
        for _ in 0..17 {
            serve(RequestType::Flush, b"");
        }
        serve(RequestType::GetRegionSize, b"");
        let (now_len, now) = read();
        assert_eq!(now_len, len);
        assert_eq!(names(&now), expected);
        let count = |name: &str| now.iter().find(|f| f.0 == name).unwrap().1;
        assert_eq!(count("TOTAL"), 20, "{now:?}");
        assert_eq!(count("CTR"), 1);
        assert_eq!(count("RESUME"), 1);
        assert_eq!(count("FLUSH"), 17);
        assert_eq!(count("GET_REGION_SIZE"), 1);
        assert_eq!(now.iter().skip(1).map(|f| f.1).sum::<u64>(), 20);
        assert_eq!(service.stats().total(), 20);
    }
}
