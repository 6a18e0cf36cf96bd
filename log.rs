// SPDX-License-Identifier: GPL-2.0

//! One `userspace` log in one table: what the mirror target calls, turned into requests.
//!
//! The log keeps no region state of its own; the server has it. What the log does keep is
//! what a server restart must not lose (marks no FLUSH has made durable, see [`flush`]) and
//! what lets it find a new server ([`reconnect`]).

mod construct;
mod flush;
mod held_clears;
mod in_sync;
mod in_sync_map;
mod reconnect;
mod status;

use kernel::{
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, ArcBorrow, CondVar, Mutex,
    },
    time::{Delta, Instant},
    workqueue::DelayedWork,
};

use crate::{
    atomic_instant::AtomicInstant,
    stats::{Listed, LogStats},
    sys::dirty_log::{Args, Constructing, DirtyLog, LegFlush, LogDevice, StatusKind, Target},
    table_args,
    transfer::{uuid_tail, LogAddress, Transport},
    uapi::{
        in_sync_map::MAX_RANGES_REPLY,
        payload::{self, RegionSync, RemoteRecovering, ResyncWork},
        InSyncRanges, RequestType,
    },
};
use flush::FlushBatch;
use in_sync::InSyncAnswers;
use in_sync_map::InSyncMap;

/// Least time between two IS_REMOTE_RECOVERING requests of one log (as upstream).
const REMOTE_RECOVERY_QUERY_INTERVAL: Delta = Delta::from_millis(250);
/// Most GET_IN_SYNC_RANGES requests of one hand-over (31 runs each): a map in more pieces is
/// learned from IN_SYNC answers for the rest.
const MAX_HAND_OVER_REQUESTS: usize = 64;

/// One log instance: one `userspace` log in one table.
///
/// With its `Arc`, 1,016 bytes on a production kernel (x86-64, no lock debugging): one
/// 1 KiB slab object, the flush lists' header included. A field more moves every log to a
/// 2 KiB object; `make bench` reports the bytes per log (`per_log_bytes_rust`).
#[pin_data]
pub(crate) struct UserspaceLog {
    transport: Arc<Transport>,
    target: Target,
    /// The mirror's flush of every leg: called before clears are sent ([`flush`]); open from
    /// resume to postsuspend.
    #[pin]
    leg_flush: LegFlush,
    /// A leg failed a flush: it may have lost cached writes of any region, so no clear is
    /// sent for the rest of this instance's life (dm-log.c latches `flush_failed` so).
    legs_failed: Atomic<bool>,
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
    #[pin]
    batch: FlushBatch,
    /// The mirror's second IN_SYNC about a region, answered from its first.
    #[pin]
    in_sync_answers: InSyncAnswers,
    /// Regions the server said are in sync (this project's extension): IN_SYNC about them is
    /// answered here.
    #[pin]
    in_sync_map: InSyncMap,
    /// Every region below this is in sync, as far as the log knows (see
    /// [`UserspaceLog::in_sync_below`]).
    in_sync_hint: Atomic<u64>,
    /// The server's withdrawals (`uapi/in_sync_map.rs`) when `in_sync_hint` was set: a later
    /// one took regions out of sync (in a cluster, a departed node's), which the hint may
    /// cover.
    hint_withdrawals: Atomic<u64>,
    /// The server's last answer to GET_SYNC_COUNT, given while it is unreachable.
    last_sync_count: Atomic<u64>,
    /// When IS_REMOTE_RECOVERING was last asked.
    last_recovery_query: AtomicInstant,
    /// When clears are due to be sent or made durable (3 s after the first): clears held
    /// back (`hold_clears`), or with `integrated_flush` clears sent that no FLUSH has made
    /// durable yet. While set, `lazy_flush` is queued or running.
    lazy_flush_due: AtomicInstant,
    /// Sends the FLUSH that clears wait for.
    #[pin]
    lazy_flush: DelayedWork<UserspaceLog>,
    /// Held by whoever sends clears and FLUSHes (the mirror's worker, the lazy work): a clear
    /// sent by one must not overtake a later mark sent by the other.
    #[pin]
    flushing: Mutex<()>,
    stats: Arc<LogStats>,
    /// The log's block in debugfs' `logs` file.
    _listed: Listed,
}

impl UserspaceLog {
    /// The log's UUID (kept once, with its statistics).
    fn uuid(&self) -> &[u8] {
        self.stats.uuid()
    }

    fn address(&self) -> LogAddress<'_> {
        LogAddress {
            uuid: self.uuid(),
            luid: self.luid,
            stats: &self.stats,
            max_wait: self.max_wait,
        }
    }

    /// Every region below this is in sync, as far as the log knows: the hint, unless the
    /// server has withdrawn regions since it was set. Then the mirror asks for resync work
    /// and about remote recovery again, as after a resume: a cluster node's departure takes
    /// its marked regions out of sync, which nobody would recover otherwise.
    fn in_sync_below(&self) -> u64 {
        if self.transport.withdrawals() == self.hint_withdrawals.load(Relaxed) {
            self.in_sync_hint.load(Relaxed)
        } else {
            0
        }
    }

    /// Sets the hint from an answer asked for when the server had sent `withdrawals`.
    fn set_in_sync_hint(&self, hint: u64, withdrawals: u64) {
        self.in_sync_hint.store(hint, Relaxed);
        self.hint_withdrawals.store(withdrawals, Relaxed);
    }

    /// The CTR string without its NUL.
    fn ctr_payload(&self) -> &[u8] {
        &self.ctr_string[..self.ctr_string.len() - 1]
    }

    /// One request, without reconnecting.
    fn request_once(&self, kind: RequestType, payload: &[u8], reply: &mut [u8]) -> Result<usize> {
        self.transport.request(self.address(), kind, payload, reply)
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
                uuid_tail(self.uuid()),
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
                uuid_tail(self.uuid()),
                kind.name(),
                n
            );
            return Err(EPROTO);
        }
        Ok(reply)
    }

    /// Asks a server that announced the in-sync map for it (after RESUME). If it fails, or
    /// the server did not announce the map, IN_SYNC goes to the server, as upstream.
    fn hand_over_in_sync_map(&self) {
        let Some(stamp) = self.transport.map_stamp() else {
            return;
        };
        if !self.in_sync_map.exists() {
            return;
        }
        self.in_sync_map.begin(stamp);
        let mut reply = [0u8; MAX_RANGES_REPLY];
        let mut from = 0;
        for _ in 0..MAX_HAND_OVER_REQUESTS {
            if from >= self.region_count {
                break;
            }
            let kind = RequestType::GetInSyncRanges;
            let ranges = match self.request_once(kind, &payload::encode_u64(from), &mut reply) {
                Ok(n) => InSyncRanges::decode(from, &reply[..n]),
                Err(e) => {
                    pr_warn!(
                        "[{}] {} failed ({}): IN_SYNC goes to the server\n",
                        uuid_tail(self.uuid()),
                        kind.name(),
                        e.to_errno()
                    );
                    return;
                }
            };
            let Ok(ranges) = ranges else {
                pr_err!(
                    "[{}] malformed {} reply: IN_SYNC goes to the server\n",
                    uuid_tail(self.uuid()),
                    kind.name()
                );
                return;
            };
            self.in_sync_map
                .load(ranges.runs(), stamp, self.transport.map_stamp());
            from = ranges.next;
        }
        self.in_sync_map
            .handed_over(stamp, self.transport.map_stamp());
    }
}

impl DirtyLog for UserspaceLog {
    type Context = Arc<Transport>;

    fn ctr(
        transport: &Arc<Transport>,
        target: &Constructing,
        args: &Args<'_>,
    ) -> Result<Arc<Self>> {
        construct::construct(transport, target, args)
    }

    fn dtr(this: Arc<Self>) {
        // The mirror has put its legs, so no leg flush can make a clear safe to send now, and
        // after postsuspend a FLUSH of this instance could reach the server after a reloaded
        // table's instance marked: neither is sent. Dropped clears leave regions dirty.
        this.batch.drop_clears();
        this.lazy_flush_due.take();
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
        this.leg_flush.open();
        this.in_sync_hint.store(0, Relaxed);
        this.in_sync_answers.forget();
        // The server may change sync states while it resumes the log.
        this.in_sync_map.forget();
        // Clears the mirror's worker recorded after postsuspend stopped the work.
        if this.lazy_flush_due.is_set() {
            this.queue_lazy_flush();
        }
        this.request_once(RequestType::Resume, &[], &mut [])?;
        this.hand_over_in_sync_map();
        Ok(())
    }

    fn region_size(&self) -> u32 {
        self.region_size
    }

    fn is_clean(&self, region: u64) -> bool {
        self.request_u64(RequestType::IsClean, &payload::encode_u64(region))
            .is_ok_and(|v| v != 0)
    }

    fn in_sync(&self, region: u64, can_block: bool) -> Result<bool> {
        // The map holds what the server said and has not withdrawn, so it may answer where
        // the caller cannot wait. The hint never does: another node may have marked the
        // region out of sync without telling this one.
        let asked = self.transport.map_stamp();
        if self.in_sync_map.in_sync(region, asked) {
            self.stats.in_sync_from_map();
            return Ok(true);
        }
        if !can_block {
            return Err(EAGAIN); // EWOULDBLOCK
        }
        let withdrawals = self.transport.withdrawals();
        if let Some(in_sync) = self.in_sync_answers.take(region, withdrawals) {
            self.stats.in_sync_reused();
            return Ok(in_sync);
        }
        let in_sync = self
            .request_u64(RequestType::InSync, &payload::encode_u64(region))
            .is_ok_and(|v| v != 0);
        if in_sync {
            self.in_sync_map
                .learn(region, asked, self.transport.map_stamp());
        }
        self.in_sync_answers.keep(region, in_sync, withdrawals);
        Ok(in_sync)
    }

    fn flush(this: ArcBorrow<'_, Self>) -> Result {
        this.in_sync_answers.forget();
        // A bug planted for the crash checker's self-test (scripts/build-module.sh,
        // DMLU_PLANTED), never in the module users get: the regions this flush marks are
        // cleared and made clean at once, before the writes they guard are even issued.
        #[cfg(dmlu_planted_clear_before_write)]
        let planted = {
            let mut regions = [0u64; payload::MAX_FLUSH_GROUP];
            let n = this.batch.peek_unsent_marks(&mut regions);
            (regions, n)
        };
        let r = this.flush_pending();
        #[cfg(dmlu_planted_clear_before_write)]
        if r.is_ok() && planted.1 > 0 {
            let _ = this.send_regions(RequestType::ClearRegion, &planted.0[..planted.1]);
            let _ = this.flush_marks(&[], 0);
        }
        if r.is_err() {
            this.target.table_event();
        }
        r
    }

    fn mark_region(&self, region: u64) {
        if self.batch.mark(region) {
            self.stats.clear_cancelled();
        }
    }

    fn clear_region(&self, region: u64) {
        // After postsuspend, a clear could reach the server after a newer instance of this
        // log (a reloaded table) resumed and marked the region again; kept dirty instead,
        // the region is only resynced.
        if self.stopping.load(Relaxed) {
            self.stats.clears_dropped(1);
            return;
        }
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
        if server_unchanged && self.in_sync_below() >= self.region_count {
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
                    uuid_tail(self.uuid()),
                    region,
                    self.region_count
                );
                Err(EPROTO)
            }
        }
    }

    fn set_region_sync(&self, region: u64, in_sync: bool) {
        // A held clear of a recovered region may stand for no mark: a write after it marks.
        self.batch.unback(region);
        self.in_sync_answers.forget();
        if !in_sync {
            self.in_sync_map.withdraw(region);
        } else if let Err(e) = self.flush_legs_for_recovery() {
            // Not reported, the region stays out of sync on the server, which offers it for
            // recovery again.
            pr_warn!(
                "[{}] flushing the mirror's legs after recovering region {} failed ({}): it will be recovered again\n",
                uuid_tail(self.uuid()),
                region,
                e.to_errno()
            );
            return;
        }
        let asked = self.transport.map_stamp();
        // The interface cannot fail; a lost update is redone by the next resync.
        let r = self.request(
            RequestType::SetRegionSync,
            &RegionSync { region, in_sync }.encode(),
            &mut [],
        );
        if in_sync && r.is_ok() {
            self.in_sync_map
                .learn(region, asked, self.transport.map_stamp());
        }
    }

    fn sync_count(&self) -> u64 {
        // The mirror's status asks for this first: while the server is gone, its last answer
        // stands.
        let mut reply = [0u8; 8];
        let withdrawals = self.transport.withdrawals();
        let count = match self.request_unless_gone(RequestType::GetSyncCount, &mut reply) {
            Err(None) => return self.last_sync_count.load(Relaxed),
            Err(Some(_)) => 0,
            Ok(n) => self
                .decode_u64(RequestType::GetSyncCount, &reply[..n])
                .map_or(0, |c| c.min(self.region_count)),
        };
        self.last_sync_count.store(count, Relaxed);
        if count >= self.region_count {
            self.set_in_sync_hint(self.region_count, withdrawals);
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

    fn leg_flush(&self) -> &LegFlush {
        &self.leg_flush
    }

    fn is_remote_recovering(&self, region: u64) -> bool {
        if region < self.in_sync_below() {
            return false;
        }
        if self
            .last_recovery_query
            .elapsed()
            .is_some_and(|d| d < REMOTE_RECOVERY_QUERY_INTERVAL)
        {
            // Asked recently: assume recovery goes on, the mirror asks again soon.
            self.stats.recovery_query_skipped();
            return true;
        }
        self.last_recovery_query.set(Instant::now());
        let withdrawals = self.transport.withdrawals();
        match self.request_pair(
            RequestType::IsRemoteRecovering,
            &payload::encode_u64(region),
        ) {
            Ok(reply) => match RemoteRecovering::decode(&reply) {
                Ok(r) => {
                    self.set_in_sync_hint(r.in_sync_hint, withdrawals);
                    r.is_recovering
                }
                Err(_) => true,
            },
            Err(_) => true,
        }
    }
}
