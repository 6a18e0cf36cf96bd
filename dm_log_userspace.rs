// SPDX-License-Identifier: GPL-2.0

//! Device-mapper "userspace" dirty log: forwards every log operation to a userspace server.
//!
//! The mirror target (dm-raid1) consults its region log before and after writes. This log
//! keeps no state of its own: each operation becomes a request to a server over the netlink
//! connector (protocol version 3, byte-compatible with upstream's `dm-log-userspace`), so a
//! cluster, or any program, can own the log.

mod flush;
mod presence;
mod stats;
mod sys;
mod table_args;
mod transfer;
#[path = "uapi/lib.rs"]
mod uapi;

use core::fmt::Write;

use kernel::{
    impl_has_delayed_work, new_condvar, new_delayed_work, new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, ArcBorrow, CondVar, CondVarTimeoutResult, Mutex, UniqueArc,
    },
    time::{msecs_to_jiffies, Delta, Instant, Monotonic},
    workqueue::{self, DelayedWork, WorkItem},
};

use crate::{
    flush::FlushBatch,
    stats::{LogStats, StatsFile},
    sys::{
        connector,
        dirty_log::{self, Constructing, DirtyLog, LogDevice, StatusKind, Target},
        work::cancel_delayed_sync,
    },
    table_args::ByteWriter,
    transfer::{uuid_tail, LogAddress, Transport},
    uapi::{
        ctr,
        payload::{self, RegionSync, RemoteRecovering, ResyncWork},
        RequestType, CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, CN_VAL_DM_USERSPACE_LOG_ANNOUNCE,
        DEVICE_NAME_SIZE, MAX_REQUEST_PAYLOAD,
    },
};

module! {
    type: DmLogUserspace,
    name: "dm_log_userspace",
    authors: ["dm-log-userspace-rs developers"],
    description: "device-mapper userspace dirty log (Rust)",
    license: "GPL",
    alias: ["dm-log-userspace"],
    params: {
        first_seq: u32 {
            default: 0,
            description: "seq of the first request (lets tests see the counter wrap at 2^32)",
        },
        max_server_wait: u32 {
            default: 0,
            description: "seconds a log may go without a server before its requests fail \
                (0: wait forever, as upstream); a table's max_server_wait=N overrides it",
        },
    },
}

/// How long to wait before trying to reach a missing server again (as upstream).
const RECONNECT_DELAY: Delta = Delta::from_millis(2000);
/// Least time between two IS_REMOTE_RECOVERING requests of one log (as upstream).
const REMOTE_RECOVERY_QUERY_INTERVAL: Delta = Delta::from_millis(250);
/// With `integrated_flush`, how long clears may wait for a FLUSH (as upstream).
const LAZY_FLUSH_DELAY_MS: u32 = 3000;

/// The module: the registered log type and the connector link, torn down in that order.
struct DmLogUserspace {
    _log_type: dirty_log::Registration<UserspaceLog>,
    _connector: connector::Registration<2>,
}

impl kernel::Module for DmLogUserspace {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let transport = Transport::new(module_parameters::first_seq.value())?;
        let connector = connector::Registration::new(
            CN_IDX_DM,
            [
                (CN_VAL_DM_USERSPACE_LOG, c"dmlogusr"),
                (CN_VAL_DM_USERSPACE_LOG_ANNOUNCE, c"dmlogusr_announce"),
            ],
            transport,
        )
        .inspect_err(|e| {
            pr_err!(
                "Unable to initialize userspace log communications: {}\n",
                e.to_errno()
            )
        })?;
        let log_type = dirty_log::Registration::new(c"userspace", module).inspect_err(|e| {
            pr_err!(
                "Couldn't register userspace dirty log type: {}\n",
                e.to_errno()
            )
        })?;
        pr_info!("version 1.3.0 loaded (Rust)\n");
        Ok(Self {
            _log_type: log_type,
            _connector: connector,
        })
    }
}

impl Drop for DmLogUserspace {
    fn drop(&mut self) {
        pr_info!("version 1.3.0 unloaded\n");
    }
}

/// Prints a `core::fmt::Display` value (the protocol's errors) with the kernel's printing macros.
struct Shown<'a, T>(&'a T);

impl<T: core::fmt::Display> kernel::fmt::Display for Shown<'_, T> {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        core::fmt::Display::fmt(self.0, f)
    }
}

/// Source of `luid`s: unique per log instance on this machine, never 0 (a wildcard to
/// cmirrord), and unlike upstream's pointer value it reveals no kernel address.
static NEXT_LUID: Atomic<u64> = Atomic::new(1);

/// One log instance: one `userspace` log in one table.
#[pin_data]
pub(crate) struct UserspaceLog {
    transport: Arc<Transport>,
    target: Target,
    uuid: KVec<u8>,
    luid: u64,
    /// `"<target sectors> <server args>"` followed by a NUL (sent without it at ctr).
    ctr_string: KVec<u8>,
    /// Arguments in the table line, for the TABLE status.
    table_argc: usize,
    /// The table's feature words.
    features: table_args::Features,
    /// How long the log may go without a server before its requests fail; `None`: forever.
    max_wait: Option<Delta>,
    /// Announcements the transport had received when the log was last created on a server: a
    /// newer one means a new server that does not know the log yet.
    attached_epoch: Atomic<u64>,
    /// True while a caller re-creates the log on a new server; the others wait for it.
    #[pin]
    reattach: Mutex<bool>,
    /// Signalled when a re-creation ends.
    #[pin]
    reattached: CondVar,
    /// Re-creations begun on a server that took the CTR (changed under `reattach`): a FLUSH
    /// sent and answered within one generation, with none half done, reached a server that
    /// had every mark sent before it.
    generation: Atomic<u64>,
    /// The last re-creation stopped after its CTR (RESUME or a mark failed): the server knows
    /// the log but may lack marks, so no FLUSH counts until a re-creation completes.
    half_attached: Atomic<bool>,
    /// Set from postsuspend (until resume) and at dtr: requests no longer wait for a missing
    /// server, and the lazy FLUSH work does not queue itself again.
    stopping: Atomic<bool>,
    /// `max_server_wait` passed in the current outage and the table was told (one event).
    outage_reported: Atomic<bool>,
    region_size: u32,
    region_count: u64,
    /// The log device the server named, held as a table dependency.
    _log_dev: Option<LogDevice>,
    batch: Pin<KBox<FlushBatch>>,
    /// Every region below this is in sync, as far as the log knows.
    in_sync_hint: Atomic<u64>,
    /// The server's last answer to GET_SYNC_COUNT, given while it is unreachable.
    last_sync_count: Atomic<u64>,
    /// When IS_REMOTE_RECOVERING was last asked (nanoseconds of the monotonic clock).
    last_recovery_query: Atomic<i64>,
    start: Instant<Monotonic>,
    /// With `integrated_flush`: clears were sent but no FLUSH has made them durable yet.
    /// While set, `lazy_flush` is queued or running.
    lazy_flush_due: Atomic<bool>,
    /// When the FLUSH is due (as [`Self::now_ns`]): [`LAZY_FLUSH_DELAY_MS`] after the first clear
    /// that no FLUSH covers.
    lazy_flush_deadline: Atomic<i64>,
    /// Sends the FLUSH that clears wait for.
    #[pin]
    lazy_flush: DelayedWork<UserspaceLog>,
    stats: Arc<LogStats>,
    _stats_file: StatsFile<LogStats>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for UserspaceLog { self.lazy_flush }
}

impl WorkItem for UserspaceLog {
    type Pointer = Arc<UserspaceLog>;

    /// Makes clears durable that no FLUSH has covered since they were sent.
    ///
    /// A FLUSH carrying marks covers them too; the work is not cancelled then, it finds
    /// nothing due. Queued for an earlier deadline, it waits again until the current one.
    fn run(this: Arc<Self>) {
        // Postsuspend and dtr send the FLUSH themselves, after cancelling this work.
        if !this.lazy_flush_due.load(Relaxed) || this.stopping.load(Relaxed) {
            return;
        }
        let wait = this
            .lazy_flush_deadline
            .load(Relaxed)
            .saturating_sub(this.now_ns());
        if wait > 0 {
            let ms = u32::try_from(wait / 1_000_000 + 1).unwrap_or(u32::MAX);
            // If it is queued already, that run takes over.
            let _ = workqueue::system_long().enqueue_delayed(this, msecs_to_jiffies(ms));
            return;
        }
        if this.lazy_flush_due.xchg(false, Relaxed) {
            if let Err(e) = this.flush_marks(&[], 0) {
                this.clears_not_flushed(e);
                this.target.table_event();
            }
        }
    }
}

impl UserspaceLog {
    fn address(&self) -> LogAddress<'_> {
        LogAddress {
            uuid: &self.uuid,
            luid: self.luid,
            stats: &self.stats,
            max_wait: self.max_wait,
        }
    }

    /// The CTR string without its NUL.
    fn ctr_payload(&self) -> &[u8] {
        &self.ctr_string[..self.ctr_string.len() - 1]
    }

    /// One request, without reconnecting.
    fn request_once(&self, kind: RequestType, payload: &[u8], reply: &mut [u8]) -> Result<usize> {
        self.transport.request(self.address(), kind, payload, reply)
    }

    /// One request; while no server listens, waits for one, re-creates the log there (CTR,
    /// RESUME, the marks no FLUSH has made durable yet) and tries again. With a bounded wait,
    /// fails with `ETIMEDOUT` once the server has been gone for longer than the bound, and
    /// tells the table.
    fn request(&self, kind: RequestType, payload: &[u8], reply: &mut [u8]) -> Result<usize> {
        let r = loop {
            let seen = self.generation.load(Relaxed);
            match self.request_once(kind, payload, reply) {
                Err(e) if e == ESRCH => {
                    pr_err!(
                        "[{}] Userspace log server not found.\n",
                        uuid_tail(&self.uuid)
                    );
                    if let Err(e) = self.reattach(seen) {
                        break Err(e);
                    }
                }
                r => break r,
            }
        };
        match r {
            Err(e) if e == ETIMEDOUT && self.transport.past_bound(self.max_wait) => {
                self.give_up();
            }
            Ok(_) if self.outage_reported.load(Relaxed) => {
                self.outage_reported.store(false, Relaxed);
            }
            _ => {}
        }
        r
    }

    /// A request failed because the server stayed away past `max_server_wait`: the first
    /// such failure of an outage raises a table event, for dmeventd-style monitors.
    fn give_up(&self) {
        self.stats.gave_up();
        if !self.outage_reported.xchg(true, Relaxed) {
            pr_err!(
                "[{}] no userspace log server for {} ms (max_server_wait): log requests fail\n",
                uuid_tail(&self.uuid),
                self.transport
                    .unreachable_for()
                    .map_or(0, |d| d.as_millis())
            );
            self.target.table_event();
        }
    }

    /// How long to pause before the next try to reach a server: upstream's 2 s, cut short by
    /// the log's bound on waiting.
    fn reconnect_pause(&self) -> Delta {
        match (self.max_wait, self.transport.unreachable_for()) {
            (Some(bound), Some(gone)) if bound - gone < RECONNECT_DELAY => bound - gone,
            _ => RECONNECT_DELAY,
        }
    }

    /// Re-creates the log on a new server, unless that happened since generation `seen`.
    ///
    /// One caller at a time does it; the others wait for it and then retry their requests, so
    /// a server instance hears one CTR and one RESUME per log.
    fn reattach(&self, seen: u64) -> Result {
        {
            let mut busy = self.reattach.lock();
            loop {
                if self.generation.load(Relaxed) != seen {
                    return Ok(());
                }
                if !*busy {
                    *busy = true;
                    break;
                }
                self.wait_reattached(&mut busy)?;
            }
        }
        let r = self.reconnect();
        let mut busy = self.reattach.lock();
        *busy = false;
        // A CTR that went through starts a new generation, complete or not: FLUSHes answered
        // meanwhile prove nothing.
        if r.is_ok() || self.half_attached.load(Relaxed) {
            self.generation.fetch_add(1, Relaxed);
        }
        drop(busy);
        self.reattached.notify_all();
        r
    }

    /// Waits a while for the caller that re-creates the log: up to the reconnect pause, less
    /// past the log's bound on waiting (`ETIMEDOUT`); a signal ends it with `EINTR`.
    fn wait_reattached(&self, busy: &mut kernel::sync::MutexGuard<'_, bool>) -> Result {
        if self.transport.past_bound(self.max_wait) {
            return Err(ETIMEDOUT);
        }
        // CAST: clamped to a positive number of milliseconds below 2^32.
        let ms = self
            .reconnect_pause()
            .as_millis_ceil()
            .clamp(1, i64::from(u32::MAX)) as u32;
        let pause = msecs_to_jiffies(ms);
        match self.reattached.wait_interruptible_timeout(busy, pause) {
            CondVarTimeoutResult::Signal { .. } => Err(EINTR),
            _ => Ok(()),
        }
    }

    /// Waits until no caller is re-creating the log, and completes a re-creation that stopped
    /// half way; returns the generation then.
    fn settled_generation(&self) -> Result<u64> {
        loop {
            let generation = {
                let mut busy = self.reattach.lock();
                while *busy {
                    self.wait_reattached(&mut busy)?;
                }
                self.generation.load(Relaxed)
            };
            if !self.half_attached.load(Relaxed) {
                return Ok(generation);
            }
            self.reattach(generation)?;
        }
    }

    /// Waits for a server and re-creates this log instance on it: CTR, RESUME, then every
    /// mark that no FLUSH has made durable, which the new server has not heard.
    ///
    /// Waits 2 s between tries, as upstream, unless a server announces itself: then it goes
    /// at once. Fails with `ETIMEDOUT` past the log's bound on waiting, with `EINTR` when
    /// the calling task gets a signal, and with `ESRCH` at once while the log is suspending
    /// or being destroyed.
    fn reconnect(&self) -> Result {
        // Unlike upstream, the CTR has room for the device name a disk log's server returns,
        // and a string that fills a request is sent without its NUL, as at creation.
        let ctr = if self.ctr_string.len() <= MAX_REQUEST_PAYLOAD {
            &self.ctr_string[..]
        } else {
            self.ctr_payload()
        };
        let mut device = [0u8; DEVICE_NAME_SIZE];
        loop {
            if self.stopping.load(Relaxed) {
                return Err(ESRCH);
            }
            if self.transport.past_bound(self.max_wait) {
                return Err(ETIMEDOUT);
            }
            // Returns at once if a server announced itself since the log was last created:
            // that server does not know the log yet.
            self.transport
                .wait_for_server(self.attached_epoch.load(Relaxed), self.reconnect_pause())?;
            if self.stopping.load(Relaxed) {
                return Err(ESRCH);
            }
            if self.transport.past_bound(self.max_wait) {
                return Err(ETIMEDOUT);
            }
            pr_warn!(
                "[{}] Attempting to contact userspace log server...\n",
                uuid_tail(&self.uuid)
            );
            let epoch = self.transport.announcements();
            let r = self.request_once(RequestType::Ctr, ctr, &mut device);
            // Whether or not it worked, this server has been tried: wait for the next one.
            self.attached_epoch.store(epoch, Relaxed);
            match r {
                Ok(_) => break,
                Err(e) if e == EINTR => return Err(e),
                Err(_) => continue,
            }
        }
        // Until RESUME and the marks are through, the server knows the log but not its marks.
        self.half_attached.store(true, Relaxed);
        self.stats.reconnected();
        // What the log knew of the old server's sync state is stale: a restarted core-log
        // server resyncs everything, which a kept hint would hide from the mirror for good.
        self.in_sync_hint.store(0, Relaxed);
        pr_info!(
            "[{}] Reconnected to userspace log server... DM_ULOG_CTR complete\n",
            uuid_tail(&self.uuid)
        );
        self.request_once(RequestType::Resume, &[], &mut [])
            .inspect_err(|e| pr_err!("Error trying to resume userspace log: {}\n", e.to_errno()))
            .map_err(|_| ESRCH)?;
        self.resend_unflushed_marks()?;
        self.half_attached.store(false, Relaxed);
        Ok(())
    }

    /// Sends the marks that no FLUSH has made durable again, to a server that has just
    /// re-created the log: the one that answered them may have died before writing them.
    fn resend_unflushed_marks(&self) -> Result {
        let mut group = [0u64; payload::MAX_FLUSH_GROUP];
        let mut buf = [0u8; MAX_REQUEST_PAYLOAD];
        let mut from = 0;
        loop {
            let n = self.batch.unflushed_marks(from, &mut group);
            if n == 0 {
                break;
            }
            let len = payload::encode_regions(&group[..n], &mut buf).map_err(|_| EINVAL)?;
            self.request_once(self.mark_kind(), &buf[..len], &mut [])
                .inspect_err(|e| {
                    pr_err!(
                        "[{}] Unable to re-send marks to the userspace log server: {}\n",
                        uuid_tail(&self.uuid),
                        e.to_errno()
                    )
                })?;
            from += n;
        }
        if from > 0 {
            pr_info!(
                "[{}] re-sent {} marks not yet flushed\n",
                uuid_tail(&self.uuid),
                from
            );
        }
        Ok(())
    }

    /// How marks travel: in MARK_REGION, or with `integrated_flush` inside the FLUSH.
    fn mark_kind(&self) -> RequestType {
        if self.features.integrated_flush {
            RequestType::Flush
        } else {
            RequestType::MarkRegion
        }
    }

    /// A request whose reply must be one `u64`.
    fn request_u64(&self, kind: RequestType, payload: &[u8]) -> Result<u64> {
        let mut reply = [0u8; 8];
        let n = self.request(kind, payload, &mut reply)?;
        self.decode_u64(kind, &reply[..n])
    }

    /// A reply that must be one `u64`; anything else is logged and fails with `EPROTO`.
    fn decode_u64(&self, kind: RequestType, reply: &[u8]) -> Result<u64> {
        payload::decode_u64(kind, reply).map_err(|_| {
            pr_err!(
                "[{}] malformed {} reply ({} bytes)\n",
                uuid_tail(&self.uuid),
                kind.name(),
                reply.len()
            );
            EPROTO
        })
    }

    /// A request whose reply must be 16 bytes.
    fn request_pair(&self, kind: RequestType, payload: &[u8]) -> Result<[u8; 16]> {
        let mut reply = [0u8; 16];
        let n = self.request(kind, payload, &mut reply)?;
        if n != reply.len() {
            pr_err!(
                "[{}] malformed {} reply ({} bytes)\n",
                uuid_tail(&self.uuid),
                kind.name(),
                n
            );
            return Err(EPROTO);
        }
        Ok(reply)
    }

    /// Sends a group of regions as `kind`; if the group fails, one region per request.
    ///
    /// Servers must treat marks and clears as idempotent: a retried region may have arrived.
    fn send_regions(&self, kind: RequestType, regions: &[u64]) -> Result {
        let mut buf = [0u8; MAX_REQUEST_PAYLOAD];
        let n = payload::encode_regions(regions, &mut buf).map_err(|_| EINVAL)?;
        if kind == RequestType::Flush {
            // An integrated FLUSH has no one-by-one form; answered, its marks are durable.
            return self.flush_marks(&buf[..n], self.batch.sent_marks());
        }
        match self.request(kind, &buf[..n], &mut []) {
            Ok(_) => Ok(()),
            // One region has nothing to split.
            Err(e) if regions.len() == 1 => Err(e),
            Err(_) => {
                for r in regions {
                    self.request(kind, &payload::encode_u64(*r), &mut [])?;
                }
                Ok(())
            }
        }
    }

    /// Sends a FLUSH (with `payload`, the marks it carries under `integrated_flush`) and
    /// returns once one was answered by a server that had heard every mark sent before it;
    /// then the first `durable` marks are durable and the log forgets them.
    ///
    /// A FLUSH that a freshly re-created log answers before the marks were re-sent to it
    /// proves nothing, so it is sent again once the re-creation is over. Only the mirror's
    /// worker passes a `durable` above 0: it alone sends marks.
    fn flush_marks(&self, payload: &[u8], durable: usize) -> Result {
        loop {
            let seen = self.settled_generation()?;
            self.request(RequestType::Flush, payload, &mut [])?;
            let busy = self.reattach.lock();
            if !*busy && self.generation.load(Relaxed) == seen && !self.half_attached.load(Relaxed)
            {
                self.batch.marks_flushed(durable);
                return Ok(());
            }
        }
    }

    /// Sends everything `take` yields, in groups, as `kind`; returns whether there was any.
    fn send_pending(&self, kind: RequestType, take: impl Fn(&mut [u64]) -> usize) -> Result<bool> {
        let mut group = [0u64; payload::MAX_FLUSH_GROUP];
        let mut sent = false;
        loop {
            let n = take(&mut group);
            if n == 0 {
                return Ok(sent);
            }
            sent = true;
            self.send_regions(kind, &group[..n])?;
        }
    }

    /// Sends pending clears, then marks, then makes them durable.
    ///
    /// With `integrated_flush` the marks travel in the FLUSH; clears alone are not urgent (a
    /// lost clear only costs a resync), so their FLUSH is left to delayed work.
    fn flush_pending(self: ArcBorrow<'_, Self>) -> Result {
        if self.batch.take_lost_mark() {
            pr_err!(
                "[{}] a mark could not be recorded (out of memory): failing the flush\n",
                uuid_tail(&self.uuid)
            );
            return Err(ENOMEM);
        }
        let sent_clears =
            self.send_pending(RequestType::ClearRegion, |g| self.batch.take_clears(g))?;
        let sent_marks = self
            .send_pending(self.mark_kind(), |g| self.batch.take_marks(g))
            .inspect_err(|_| {
                // The server may lack any of them: send them all again with the next flush.
                self.batch.unsend_marks();
            })?;
        if !self.features.integrated_flush {
            // Marks that an earlier, failed FLUSH left behind need one too.
            if sent_clears || self.batch.sent_marks() > 0 {
                self.flush_marks(&[], self.batch.sent_marks())?;
            }
        } else if sent_marks {
            // That FLUSH made the earlier clears durable as well.
            self.lazy_flush_due.store(false, Relaxed);
        } else if sent_clears && !self.lazy_flush_due.load(Relaxed) {
            // Flushes come from the mirror's one worker, so nothing races with this.
            let delay_ns = i64::from(LAZY_FLUSH_DELAY_MS) * 1_000_000;
            self.lazy_flush_deadline
                .store(self.now_ns().saturating_add(delay_ns), Relaxed);
            self.lazy_flush_due.store(true, Relaxed);
            // If still queued for an earlier deadline, the queued run waits on.
            let _ = workqueue::system_long()
                .enqueue_delayed(Arc::from(self), msecs_to_jiffies(LAZY_FLUSH_DELAY_MS));
        }
        Ok(())
    }

    /// Stops the lazy FLUSH work and waits for a run in progress; then sends the FLUSH it
    /// would have sent, once, without waiting for a missing server.
    ///
    /// For postsuspend and dtr: afterwards nothing of the work is queued or running. Without a
    /// server the clears stay undurable, which costs a resync of those regions, never data.
    fn stop_lazy_flush(this: &Arc<Self>) {
        this.stopping.store(true, Relaxed);
        cancel_delayed_sync(this);
        if this.lazy_flush_due.xchg(false, Relaxed) {
            if let Err(e) = this.request_once(RequestType::Flush, &[], &mut []) {
                this.clears_not_flushed(e);
            }
        }
    }

    /// Says that clears stay undurable: harmless, those regions are only resynced.
    fn clears_not_flushed(&self, e: Error) {
        pr_warn!(
            "[{}] pending clears not flushed ({}): those regions will be resynced\n",
            uuid_tail(&self.uuid),
            e.to_errno()
        );
    }

    /// One request, unless the server is known to be gone; then, or when this request finds
    /// no server, `Err(None)` at once instead of waiting for one.
    ///
    /// For what `dmsetup status` asks: waiting for a server would block it until one is back.
    fn request_unless_gone(
        &self,
        kind: RequestType,
        reply: &mut [u8],
    ) -> core::result::Result<usize, Option<Error>> {
        if self.transport.unreachable_for().is_some() {
            return Err(None);
        }
        match self.request_once(kind, &[], reply) {
            Err(e) if e == ESRCH && self.transport.unreachable_for().is_some() => Err(None),
            // A server that answers but does not know the log: re-create it there.
            Err(e) if e == ESRCH => self.request(kind, &[], reply).map_err(Some),
            r => r.map_err(Some),
        }
    }

    fn status_info(&self, out: &mut [u8]) -> usize {
        let cap = out.len() - 1;
        let len = match self.request_unless_gone(RequestType::StatusInfo, &mut out[..cap]) {
            // The server's text need not be NUL-terminated; stop at a NUL if it has one.
            Ok(n) => out[..n].iter().position(|&b| b == 0).unwrap_or(n),
            Err(None) => {
                let gone = self.transport.unreachable_for().unwrap_or(Delta::ZERO);
                self.status_unreachable(gone, &mut out[..cap])
            }
            Err(Some(_)) => {
                let mut w = ByteWriter::new(&mut out[..cap]);
                let _ = w.push(b"userspace 1 COM_FAILURE");
                w.len()
            }
        };
        out[len] = 0;
        len
    }

    /// `userspace 3 COM_FAILURE server_unreachable_for=<s>.<ms>s max_server_wait=<s>s|forever`
    fn status_unreachable(&self, gone: Delta, out: &mut [u8]) -> usize {
        let ms = gone.as_millis();
        let mut w = ByteWriter::new(out);
        let written = match self.max_wait {
            Some(b) => write!(
                w,
                "userspace 3 COM_FAILURE server_unreachable_for={}.{:03}s max_server_wait={}s",
                ms / 1000,
                ms % 1000,
                b.as_millis() / 1000
            ),
            None => write!(
                w,
                "userspace 3 COM_FAILURE server_unreachable_for={}.{:03}s max_server_wait=forever",
                ms / 1000,
                ms % 1000
            ),
        };
        if written.is_ok() {
            w.len()
        } else {
            0
        }
    }

    fn status_table(&self, out: &mut [u8]) -> usize {
        let cap = out.len() - 1;
        let mut w = ByteWriter::new(&mut out[..cap]);
        let len = match table_args::table_status(
            self.table_argc,
            &self.uuid,
            &self.features,
            ctr::ctr_server_args(self.ctr_payload()),
            &mut w,
        ) {
            Ok(()) => w.len(),
            Err(_) => 0,
        };
        out[len] = 0;
        len
    }

    /// Nanoseconds since the log was created.
    fn now_ns(&self) -> i64 {
        self.start.elapsed().as_nanos()
    }
}

/// Creates the log instance on the server and checks what it answers.
fn construct(ctx: &Constructing, args: &[&CStr]) -> Result<Arc<UserspaceLog>> {
    let target = ctx.target();
    let mut words = KVec::with_capacity(args.len(), GFP_KERNEL)?;
    for a in args {
        words.push(a.to_bytes(), GFP_KERNEL)?;
    }
    let parsed = table_args::parse_args(&words).map_err(|e| {
        pr_warn!("{}\n", Shown(&e));
        EINVAL
    })?;
    let mut ctr_string = KVec::from_elem(0u8, MAX_REQUEST_PAYLOAD + 1, GFP_KERNEL)?;
    let len = ctr::ctr_string(
        target.len(),
        parsed.server_args,
        &mut ctr_string[..MAX_REQUEST_PAYLOAD],
    )
    .map_err(|e| {
        pr_warn!("{}\n", Shown(&e));
        EINVAL
    })?;
    // Keep the NUL that the reconnecting CTR sends.
    ctr_string.truncate(len + 1);
    ctr_string[len] = 0;
    let mut uuid = KVec::with_capacity(parsed.uuid.len(), GFP_KERNEL)?;
    uuid.extend_from_slice(parsed.uuid, GFP_KERNEL)?;
    let transport = connector::registered_transport().ok_or(ENODEV)?;
    // Allocate everything before the server learns of the log.
    let slot = UniqueArc::new_uninit(GFP_KERNEL)?;
    let batch = FlushBatch::new()?;
    let luid = NEXT_LUID.fetch_add(1, Relaxed);
    let stats = LogStats::new(&uuid, luid)?;
    let stats_file = transport.diagnostics.log_file(stats.clone())?;
    let wait_secs = parsed
        .features
        .max_server_wait
        .unwrap_or(module_parameters::max_server_wait.value());
    let max_wait = (wait_secs > 0).then(|| Delta::from_secs(i64::from(wait_secs)));
    let to = LogAddress {
        uuid: &uuid,
        luid,
        stats: &stats,
        max_wait,
    };
    let attached_epoch = transport.announcements();

    let mut device = [0u8; DEVICE_NAME_SIZE];
    let device_len = transport
        .request(to, RequestType::Ctr, &ctr_string[..len], &mut device)
        .inspect_err(|e| {
            if *e == ESRCH {
                pr_err!("[{}] Userspace log server not found\n", uuid_tail(&uuid));
            } else if *e == EINTR || *e == ETIMEDOUT {
                // The server may have created the log without the answer reaching us (the
                // caller was killed, or gave up): it must not keep it.
                pr_err!(
                    "[{}] Log creation interrupted ({}): destroying it on the server\n",
                    uuid_tail(&uuid),
                    e.to_errno()
                );
                let _ = transport.request(to, RequestType::Dtr, &[], &mut []);
            } else {
                pr_err!(
                    "[{}] Userspace log server failed to create log: {}\n",
                    uuid_tail(&uuid),
                    e.to_errno()
                );
            }
        })?;

    // The server now has the log: any failure from here on must destroy it there too.
    let finish = || -> Result<(u32, u64, Option<LogDevice>)> {
        let mut reply = [0u8; 8];
        let n = transport
            .request(to, RequestType::GetRegionSize, &[], &mut reply)
            .inspect_err(|e| {
                pr_err!("Failed to get region size of dirty log: {}\n", e.to_errno())
            })?;
        let size = payload::decode_u64(RequestType::GetRegionSize, &reply[..n]).map_err(|_| {
            pr_err!(
                "[{}] malformed region size reply ({} bytes)\n",
                uuid_tail(&uuid),
                n
            );
            EPROTO
        })?;
        let region_size = u32::try_from(size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .ok_or_else(|| {
                pr_err!(
                "[{}] server gave region size {} sectors: it must be a power of two below 2^32\n",
                uuid_tail(&uuid),
                size
            );
                EINVAL
            })?;
        let region_count = target.len().div_ceil(u64::from(region_size));
        let log_dev = match payload::ctr_reply_device(&device[..device_len]) {
            Ok(None) => None,
            Ok(Some(_)) => {
                let name = CStr::from_bytes_with_nul(&device[..device_len]).map_err(|_| EINVAL)?;
                Some(ctx.get_device(name).inspect_err(|e| {
                    pr_err!(
                        "Failed to register {} with device-mapper: {}\n",
                        name.to_str().unwrap_or("?"),
                        e.to_errno()
                    )
                })?)
            }
            Err(_) => {
                pr_err!("DM_ULOG_CTR device return string not properly terminated\n");
                return Err(EINVAL);
            }
        };
        Ok((region_size, region_count, log_dev))
    };
    let (region_size, region_count, log_dev) = finish().inspect_err(|_| {
        let _ = transport.request(to, RequestType::Dtr, &[], &mut []);
    })?;
    let Ok(log) = slot.write_pin_init(pin_init!(UserspaceLog {
        transport,
        target,
        uuid,
        luid,
        ctr_string,
        table_argc: parsed.table_argc,
        features: parsed.features,
        max_wait,
        attached_epoch: Atomic::new(attached_epoch),
        reattach <- new_mutex!(false, "UserspaceLog::reattach"),
        reattached <- new_condvar!("UserspaceLog::reattached"),
        generation: Atomic::new(0),
        half_attached: Atomic::new(false),
        stopping: Atomic::new(false),
        outage_reported: Atomic::new(false),
        region_size,
        region_count,
        _log_dev: log_dev,
        batch,
        in_sync_hint: Atomic::new(0),
        last_sync_count: Atomic::new(0),
        last_recovery_query: Atomic::new(i64::MIN),
        start: Instant::now(),
        lazy_flush_due: Atomic::new(false),
        lazy_flush_deadline: Atomic::new(0),
        lazy_flush <- new_delayed_work!("UserspaceLog::lazy_flush"),
        stats,
        _stats_file: stats_file,
    }));
    Ok(log.into())
}

impl DirtyLog for UserspaceLog {
    fn ctr(target: &Constructing, args: &[&CStr]) -> Result<Arc<Self>> {
        construct(target, args)
    }

    fn dtr(this: Arc<Self>) {
        Self::stop_lazy_flush(&this);
        // Not retried, as upstream: a missing server has nothing to destroy.
        let _ = this.request_once(RequestType::Dtr, &[], &mut []);
        // Nothing else may hold the log now: no work item, no request. One that did would
        // outlive the table (and its device) and could run after the module is gone.
        if Arc::into_unique_or_drop(this).is_none() {
            pr_err!("a destroyed log is still referenced: this is a bug\n");
            kernel::warn_on!(true);
        }
    }

    fn presuspend(&self) -> Result {
        self.request_once(RequestType::Presuspend, &[], &mut [])
            .map(|_| ())
    }

    fn postsuspend(this: ArcBorrow<'_, Self>) -> Result {
        Self::stop_lazy_flush(&this.into());
        this.request_once(RequestType::Postsuspend, &[], &mut [])
            .map(|_| ())
    }

    fn resume(this: ArcBorrow<'_, Self>) -> Result {
        this.stopping.store(false, Relaxed);
        this.in_sync_hint.store(0, Relaxed);
        // Clears the mirror's worker recorded after postsuspend stopped the work.
        if this.lazy_flush_due.load(Relaxed) {
            let _ = workqueue::system_long()
                .enqueue_delayed(Arc::from(this), msecs_to_jiffies(LAZY_FLUSH_DELAY_MS));
        }
        this.request_once(RequestType::Resume, &[], &mut [])
            .map(|_| ())
    }

    fn region_size(&self) -> u32 {
        self.region_size
    }

    fn is_clean(&self, region: u64) -> bool {
        self.request_u64(RequestType::IsClean, &payload::encode_u64(region))
            .is_ok_and(|v| v != 0)
    }

    fn in_sync(&self, region: u64, can_block: bool) -> Result<bool> {
        // Never answered from the hint: another node may have marked the region out of sync.
        if !can_block {
            return Err(EAGAIN); // EWOULDBLOCK
        }
        Ok(self
            .request_u64(RequestType::InSync, &payload::encode_u64(region))
            .is_ok_and(|v| v != 0))
    }

    fn flush(this: ArcBorrow<'_, Self>) -> Result {
        let r = this.flush_pending();
        if r.is_err() {
            this.target.table_event();
        }
        r
    }

    fn mark_region(&self, region: u64) {
        self.batch.mark(region);
    }

    fn clear_region(&self, region: u64) {
        // A lost clear only means the region is resynced after the next activation.
        if !self.batch.clear(region) {
            pr_err!("Failed to allocate memory to clear region.\n");
        }
    }

    fn resync_work(&self) -> Result<Option<u64>> {
        // The hint is the old server's word. When a new server may have come (announced, or
        // the old one unreachable), ask: the request re-creates the log there and resets the
        // hint, and the mirror's worker, which asks only when it runs, starts the resync now.
        let server_unchanged = self.transport.unreachable_for().is_none()
            && self.transport.announcements() == self.attached_epoch.load(Relaxed);
        if server_unchanged && self.in_sync_hint.load(Relaxed) >= self.region_count {
            return Ok(None);
        }
        let reply = self.request_pair(RequestType::GetResyncWork, &[])?;
        let work = ResyncWork::decode(&reply).map_err(|_| EPROTO)?;
        match work {
            ResyncWork {
                available: false, ..
            } => Ok(None),
            ResyncWork { region, .. } if region < self.region_count => Ok(Some(region)),
            ResyncWork { region, .. } => {
                pr_err!(
                    "[{}] server offered region {} beyond the log's {}\n",
                    uuid_tail(&self.uuid),
                    region,
                    self.region_count
                );
                Err(EPROTO)
            }
        }
    }

    fn set_region_sync(&self, region: u64, in_sync: bool) {
        // The interface cannot fail; a lost update is redone by the next resync.
        let _ = self.request(
            RequestType::SetRegionSync,
            &RegionSync { region, in_sync }.encode(),
            &mut [],
        );
    }

    fn sync_count(&self) -> u64 {
        // The mirror's status asks for this first: while the server is gone, its last answer
        // stands.
        let mut reply = [0u8; 8];
        let count = match self.request_unless_gone(RequestType::GetSyncCount, &mut reply) {
            Err(None) => return self.last_sync_count.load(Relaxed),
            Err(Some(_)) => 0,
            Ok(n) => self
                .decode_u64(RequestType::GetSyncCount, &reply[..n])
                .map_or(0, |c| c.min(self.region_count)),
        };
        self.last_sync_count.store(count, Relaxed);
        if count >= self.region_count {
            self.in_sync_hint.store(self.region_count, Relaxed);
        }
        count
    }

    fn status(&self, kind: StatusKind, out: &mut [u8]) -> usize {
        match kind {
            StatusKind::Info => self.status_info(out),
            StatusKind::Table => self.status_table(out),
            StatusKind::Ima => {
                out[0] = 0;
                0
            }
        }
    }

    fn is_remote_recovering(&self, region: u64) -> bool {
        if region < self.in_sync_hint.load(Relaxed) {
            return false;
        }
        let now = self.now_ns();
        let last = self.last_recovery_query.load(Relaxed);
        if last != i64::MIN && now.saturating_sub(last) < REMOTE_RECOVERY_QUERY_INTERVAL.as_nanos()
        {
            // Asked recently: assume recovery goes on, the mirror asks again soon.
            self.stats.recovery_query_skipped();
            return true;
        }
        self.last_recovery_query.store(now, Relaxed);
        match self.request_pair(
            RequestType::IsRemoteRecovering,
            &payload::encode_u64(region),
        ) {
            Ok(reply) => match RemoteRecovering::decode(&reply) {
                Ok(r) => {
                    self.in_sync_hint.store(r.in_sync_hint, Relaxed);
                    r.is_recovering
                }
                Err(_) => true,
            },
            Err(_) => true,
        }
    }
}
