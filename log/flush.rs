// SPDX-License-Identifier: GPL-2.0

//! Marks and clears recorded between two flushes, and marks kept until a FLUSH makes them
//! durable.
//!
//! `mark_region` is called under dm-region-hash's rwlock, so recording must not sleep: the
//! lists are preallocated and grow only with `GFP_NOWAIT`. A mark that cannot be recorded is
//! never dropped: the next flush, which the write it guards waits for, records it with an
//! allocation that may sleep, and fails (the mirror sees a log failure) only if that fails
//! too, keeping it for the flush after.
//!
//! Clears wait for the mirror's legs to be flushed (`flush_legs_for_clears`): a clear is
//! sent only if it was recorded before a leg flush that then succeeded, so a region the log
//! calls clean has its writes on every leg's media, whatever the legs' caches held.
//!
//! A mark the server answered is not yet on its device: a server that dies before the next
//! FLUSH loses it. So a mark stays in the list, counted as sent, until a FLUSH sent after it
//! is answered; a log re-created on a new server sends the sent ones again.
//!
//! The mirror's worker flushes: clears, then marks, then a FLUSH. With `integrated_flush` the
//! marks travel inside the FLUSH, and clears alone wait up to 3 s for one (the lazy FLUSH
//! work item), as upstream.
//!
//! Held clears (on by default, module parameter `hold_clears`): a flush with clears but no
//! marks sends nothing. The clears go out with the next flush that carries marks (whose FLUSH
//! makes them durable too) or, at the latest, 3 s later with a FLUSH of their own from the
//! lazy work. A new mark of a region whose clear is held cancels the clear: the server still
//! has the region marked, which is the safe side. With an idle time (module parameter
//! `clear_idle_ms`), as md's write-intent bitmap waits `daemon_sleep` before it clears a bit,
//! a clear is due only once its region has gone that long without a write: a region written
//! again within it needs no MARK and no FLUSH, and a crash leaves dirty only the regions
//! written within the last idle time. Held clears are dropped when the log is
//! re-created on a new server (the regions stay marked there). The lazy work and the worker
//! flush under one mutex, so a clear the lazy work sends cannot reach the server after a later
//! mark of its region. With a server that takes them (this project's extension,
//! `uapi/clears_in_flush.rs`; module parameter `clears_in_flush`), held clears travel inside
//! the FLUSH itself and cost no request of their own.

use kernel::{
    impl_has_delayed_work, new_spinlock,
    prelude::*,
    sync::{atomic::Relaxed, Arc, ArcBorrow, SpinLock},
    time::{Delta, Instant, Monotonic},
    workqueue::{self, WorkItem},
};

use super::{held_clears::HeldClears, UserspaceLog};
use crate::{
    bug,
    sys::work::cancel_delayed_sync,
    timeout,
    transfer::uuid_tail,
    uapi::{payload, FlushEntry, RequestType, FEATURE_CLEARS_IN_FLUSH, MAX_REQUEST_PAYLOAD},
};

/// With `integrated_flush`, how long clears may wait for a FLUSH (as upstream).
const LAZY_FLUSH_DELAY: Delta = Delta::from_millis(3000);

/// Entries each list holds without allocating, at most: a log of fewer regions reserves one
/// entry a region (a mark of a region already waiting is not recorded twice, and a mark
/// cancels its region's held clear, so the lists rarely outgrow that; when they do, they grow
/// with `GFP_NOWAIT`, and a mark that still finds no room is kept as a lost one).
const RESERVED: usize = 256;

/// Lost marks one flush records and sends at most: a wider range of them (two regions far
/// apart lost) goes in parts, each its own MARKs and FLUSH, so that recording it never takes a
/// large allocation, and the range shrinks with every part.
const LOST_CHUNK: u64 = 256;

/// Held clears kept waiting for their idle time at most: it bounds their list, which grows
/// under a spinlock, and the sweep of its stale entries. A clear beyond them is due at once,
/// and the mirror's worker sends it with its next flush.
const MAX_IDLE_HELD: usize = 1024;

/// Clears due within this much of a flush go with it: with an idle time, regions going idle
/// one after the other cost a leg flush and a FLUSH a second, not one each.
const CLEAR_BATCH: Delta = Delta::from_millis(1000);

/// The lock-protected lists.
struct Pending {
    /// Marks not yet made durable; the first `sent` of them have been sent.
    marks: KVec<u64>,
    sent: usize,
    /// Clears recorded and not yet due or not yet covered by a leg flush (their writes may
    /// still sit in a leg's volatile cache): not sent yet.
    clears: HeldClears,
    /// Clears whose writes a leg flush covers (see [`FlushBatch::arm_clears`]): the only
    /// ones sent.
    ready: KVec<u64>,
    /// The lowest and highest region whose mark could not be recorded (no memory without
    /// sleeping): kept until the next flush records them, where it may sleep.
    lost: Option<(u64, u64)>,
}

/// Removes `region` from `list` if it is there (order does not matter); returns whether it was.
fn remove_unordered(list: &mut KVec<u64>, region: u64) -> bool {
    let Some(at) = list.iter().position(|&c| c == region) else {
        return false;
    };
    let last = list.len() - 1;
    list[at] = list[last];
    list.truncate(last);
    true
}

/// Regions waiting to be sent at the next flush.
#[pin_data]
pub(crate) struct FlushBatch {
    /// Clears wait for a FLUSH that carries marks, or for the lazy deadline.
    hold_clears: bool,
    /// Held clears may ride in the FLUSH, with a server that takes them there.
    clears_in_flush: bool,
    /// How long a held clear's region must go without a write before the clear is due.
    idle: Delta,
    /// How early a clear may go with a flush: the lesser of `idle` and [`CLEAR_BATCH`].
    slack: Delta,
    /// A mark that cancels a held clear backed by a durable mark is not sent. Not for a
    /// clustered log: there a minority node's MARK waits for quorum, which must hold its
    /// writes back while the majority may recover its regions.
    spare_marks: bool,
    #[pin]
    pending: SpinLock<Pending>,
}

/// Appends without sleeping: within the reserve, else a `GFP_NOWAIT` growth.
fn push_atomic<T>(list: &mut KVec<T>, entry: T) -> bool {
    match list.push_within_capacity(entry) {
        Ok(()) => true,
        Err(full) => list.push(full.0, GFP_NOWAIT).is_ok(),
    }
}

/// Copies `list[from..end]`, at most `out.len()` entries of it, into `out`.
fn copy_from(list: &[u64], from: usize, end: usize, out: &mut [u64]) -> usize {
    let src = list.get(from..end.min(list.len())).unwrap_or(&[]);
    copy_prefix(src, out)
}

/// Copies as much of `src` as fits into `out`; returns how much.
///
/// Element by element rather than `copy_from_slice`: that one's length check ends in a panic
/// function that Linux 7.3's objtool does not know never returns, which costs every build a
/// "falls through" warning (see `Kbuild`).
fn copy_prefix(src: &[u64], out: &mut [u64]) -> usize {
    let mut n = 0;
    for (o, s) in out.iter_mut().zip(src) {
        *o = *s;
        n += 1;
    }
    n
}

/// Moves up to `out.len()` entries from the end of `list` into `out`.
fn take_into(list: &mut KVec<u64>, out: &mut [u64]) -> usize {
    let start = list.len().saturating_sub(out.len());
    let n = copy_prefix(&list[start..], out);
    list.truncate(start);
    n
}

impl FlushBatch {
    /// Empty lists with their reserve allocated (the initializer places them); clears held if
    /// `hold_clears`, each until its region has been `idle` without a write, and then sent
    /// inside the FLUSH if `clears_in_flush` (and the server takes them).
    /// Marks that cancel such a clear are sent anyway when `clustered`. The lists' reserves
    /// are sized for a log of `regions`. Held clears need two bits a region: a log too large
    /// for them works without, as upstream.
    pub(crate) fn new(
        hold_clears: bool,
        clears_in_flush: bool,
        idle: Delta,
        clustered: bool,
        regions: u64,
    ) -> Result<impl PinInit<Self>> {
        let reserve = usize::try_from(regions).map_or(RESERVED, |n| n.clamp(1, RESERVED));
        // Cancelled clears leave stale entries until the list fills: twice the room, so that
        // a sweep frees at least half of it.
        let (hold_clears, clears) = match HeldClears::new(regions, 2 * reserve, hold_clears) {
            Ok(clears) => (hold_clears, clears),
            Err(_) if hold_clears => {
                pr_warn!(
                    "no memory to hold clears for {regions} regions: this log sends them at once\n"
                );
                (false, HeldClears::new(regions, 2 * reserve, false)?)
            }
            Err(e) => return Err(e),
        };
        let clears_in_flush = hold_clears && clears_in_flush;
        let idle = if hold_clears { idle } else { Delta::ZERO };
        let slack = if idle < CLEAR_BATCH {
            idle
        } else {
            CLEAR_BATCH
        };
        let pending = Pending {
            marks: KVec::with_capacity(reserve, GFP_KERNEL)?,
            sent: 0,
            clears,
            ready: KVec::with_capacity(reserve, GFP_KERNEL)?,
            lost: None,
        };
        Ok(pin_init!(Self {
            hold_clears,
            clears_in_flush,
            idle,
            slack,
            spare_marks: !clustered,
            pending <- new_spinlock!(pending, "FlushBatch::pending"),
        }))
    }

    /// Records a mark; returns whether it cancelled a held clear instead. Never sleeps.
    ///
    /// A mark waiting to be sent already covers the region; one sent earlier does not (a
    /// clear may have followed it), so the region is recorded again, unless its clear is
    /// still held here.
    pub(crate) fn mark(&self, region: u64) -> bool {
        let mut p = self.pending.lock();
        let mut cancelled = false;
        let mut backed = false;
        if self.hold_clears {
            let p = &mut *p;
            if let Some(c) = p.clears.cancel(region) {
                (cancelled, backed) = (true, c.backed);
            }
            // A clear a flush is sending now: its mark is recorded again, whatever its origin.
            while remove_unordered(&mut p.ready, region) {
                cancelled = true;
                backed = false;
            }
        }
        if cancelled && backed && self.spare_marks {
            // The clear never left: the server holds the region marked, durably (the writes
            // that cleared it waited for its mark's FLUSH). No MARK, no FLUSH. A mark of this
            // log not yet durable is still in `marks`, and the next flush makes it so.
            return true;
        }
        let sent = p.sent;
        if !p.marks[sent..].contains(&region) && !push_atomic(&mut p.marks, region) {
            p.lost = Some(match p.lost {
                Some((low, high)) => (low.min(region), high.max(region)),
                None => (region, region),
            });
        }
        cancelled
    }

    /// Records a clear; returns false if it had to be dropped. Never sleeps.
    pub(crate) fn clear(&self, region: u64) -> bool {
        let now = Instant::now();
        let mut p = self.pending.lock();
        // Beyond that many, due at once: the list stays bounded.
        let due = if p.clears.live() < MAX_IDLE_HELD {
            now + self.idle
        } else {
            now
        };
        p.clears.push(region, due)
    }

    /// The mirror reports `region` recovered (or out of sync): dm-region-hash clears a
    /// recovered region, which this log may never have marked, before it says so. Such a
    /// clear does not stand for a mark the server holds.
    pub(crate) fn unback(&self, region: u64) {
        self.pending.lock().clears.unback(region);
    }

    /// When the lazy work should send held clears, if any are held: when the first falls
    /// due, and no sooner than `LAZY_FLUSH_DELAY` after it was recorded (until then, a FLUSH
    /// that carries marks may take it along for free).
    pub(crate) fn lazy_deadline(&self) -> Option<Instant<Monotonic>> {
        let first = self.pending.lock().clears.earliest_due()?;
        Some(first + (LAZY_FLUSH_DELAY - self.idle).max(Delta::ZERO))
    }

    /// Whether clears wait for a FLUSH that carries marks (or the lazy deadline).
    pub(crate) fn holds_clears(&self) -> bool {
        self.hold_clears
    }

    /// Whether marks wait to be sent or made durable.
    pub(crate) fn has_marks(&self) -> bool {
        !self.pending.lock().marks.is_empty()
    }

    /// Whether a flush with held clears has something to send now: marks, or more held
    /// clears than may wait their idle time ([`MAX_IDLE_HELD`]): some are due at once.
    pub(crate) fn must_send(&self) -> bool {
        let p = self.pending.lock();
        !p.marks.is_empty() || p.clears.live() >= MAX_IDLE_HELD
    }

    /// How many clears a leg flush covers and wait to be sent.
    pub(crate) fn ready_len(&self) -> usize {
        self.pending.lock().ready.len()
    }

    /// Drops the clears not sent yet: their regions stay marked on the server. Returns how
    /// many there were.
    pub(crate) fn drop_clears(&self) -> usize {
        let mut p = self.pending.lock();
        let n = p.clears.clear() + p.ready.len();
        p.ready.clear();
        n
    }

    /// A leg flush is about to begin: every clear recorded so far is for a write that has
    /// completed, so the flush covers it and it may be sent once the flush succeeded. Takes
    /// the clears that are due, or due within the slack (with `all`, every one), as the ones
    /// to send, and returns how
    /// many there are. The others, and clears recorded from now on, wait for a later leg flush.
    ///
    /// Called under the log's `flushing` lock, whose holder sends or drops every ready clear
    /// before it lets go; any left over (a failed send) are dropped here, the safe side.
    pub(crate) fn arm_clears(&self, all: bool) -> usize {
        let now = Instant::now();
        let mut p = self.pending.lock();
        let p = &mut *p;
        p.ready.clear();
        let ready = &mut p.ready;
        p.clears.retain(|c| {
            let due = all || c.due - now <= self.slack;
            if due && push_atomic(ready, c.region) {
                return false;
            }
            // One that finds no memory stays held, for a later flush, where a mark of its
            // region cancels it. Without held clears a mark leaves clears alone (upstream
            // sends a clear and a later mark of its region in one flush, the clear first), so
            // one left for a later flush could follow a mark and clean a region being
            // written: dropped, its region stays marked.
            !due || self.hold_clears
        });
        p.ready.len()
    }

    /// The leg flush failed: the ready clears are not sent, their regions stay dirty.
    pub(crate) fn drop_ready(&self) {
        self.pending.lock().ready.clear();
    }

    /// Takes up to `out.len()` clears that a leg flush covers.
    pub(crate) fn take_clears(&self, out: &mut [u64]) -> usize {
        take_into(&mut self.pending.lock().ready, out)
    }

    /// Copies up to `out.len()` marks not sent yet into `out`; they count as sent from now.
    pub(crate) fn take_marks(&self, out: &mut [u64]) -> usize {
        let mut p = self.pending.lock();
        let start = p.sent;
        let n = copy_from(&p.marks, start, p.marks.len(), out);
        p.sent += n;
        n
    }

    /// Copies up to `out.len()` marks not sent yet into `out`, leaving them unsent: for the
    /// bug planted for the crash checker's self-test, never in the module users get.
    #[cfg(dmlu_planted_clear_before_write)]
    pub(crate) fn peek_unsent_marks(&self, out: &mut [u64]) -> usize {
        let p = self.pending.lock();
        copy_from(&p.marks, p.sent, p.marks.len(), out)
    }

    /// How many marks have been sent and wait for a FLUSH.
    pub(crate) fn sent_marks(&self) -> usize {
        self.pending.lock().sent
    }

    /// Every mark counts as not sent again (a request failed: the server may lack any).
    pub(crate) fn unsend_marks(&self) {
        self.pending.lock().sent = 0;
    }

    /// Copies up to `out.len()` sent marks, from the `from`th on, into `out`.
    pub(crate) fn unflushed_marks(&self, from: usize, out: &mut [u64]) -> usize {
        let p = self.pending.lock();
        copy_from(&p.marks, from, p.sent, out)
    }

    /// A FLUSH made the first `count` marks durable: forgets them.
    pub(crate) fn marks_flushed(&self, count: usize) {
        let mut p = self.pending.lock();
        let count = count.min(p.sent);
        let len = p.marks.len();
        p.marks.copy_within(count..len, 0);
        p.marks.truncate(len - count);
        p.sent -= count;
    }

    /// Records the marks that [`Self::mark`] could not (it may not sleep), with an
    /// allocation that may: every region between the lowest and the highest lost one is
    /// marked (a region marked needlessly costs a resync at most), [`LOST_CHUNK`] of them at
    /// a time; returns whether more are left, for another part. Called by the mirror's worker
    /// before it sends marks: the writes those marks guard wait for that flush. Fails with
    /// `ENOMEM` if the memory is not there either; the lost marks stay to be recorded.
    pub(crate) fn record_lost_marks(&self) -> Result<bool> {
        // Marks recorded meanwhile may outgrow the new list: then allocate again.
        for _ in 0..3 {
            let (low, high, len) = {
                let p = self.pending.lock();
                let Some((low, high)) = p.lost else {
                    return Ok(false);
                };
                (low, high, p.marks.len())
            };
            let last = high.min(low.saturating_add(LOST_CHUNK - 1));
            // At most LOST_CHUNK.
            let span = usize::try_from(last - low).map_err(|_| ENOMEM)? + 1;
            let room = len
                .checked_add(span)
                .and_then(|n| n.checked_add(RESERVED))
                .ok_or(ENOMEM)?;
            let mut grown = KVec::with_capacity(room, GFP_KERNEL | __GFP_NOWARN)?;
            let mut p = self.pending.lock();
            if p.lost != Some((low, high)) || p.marks.len() + span > grown.capacity() {
                continue;
            }
            for m in Iterator::chain(p.marks.iter().copied(), low..=last) {
                // Within the capacity checked above.
                let _ = grown.push_within_capacity(m);
            }
            core::mem::swap(&mut p.marks, &mut grown);
            p.lost = (last < high).then(|| (last + 1, high));
            return Ok(p.lost.is_some());
        }
        Err(ENOMEM)
    }
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for UserspaceLog { self.lazy_flush }
}

impl WorkItem for UserspaceLog {
    type Pointer = Arc<UserspaceLog>;

    /// Sends held clears and makes every clear sent durable with a FLUSH.
    ///
    /// A FLUSH carrying marks covers them too; the work is not cancelled then, it finds
    /// nothing due. Queued for an earlier deadline, it waits again until the current one.
    fn run(this: Arc<Self>) {
        // Postsuspend and dtr send the FLUSH themselves, after cancelling this work.
        let Some(deadline) = this.lazy_flush_due.get() else {
            return;
        };
        if this.stopping.load(Relaxed) {
            return;
        }
        let wait = deadline - Instant::<Monotonic>::now();
        if wait > Delta::ZERO {
            // If it is queued already, that run takes over.
            let _ = workqueue::system_long().enqueue_delayed(this, timeout::jiffies(wait));
            return;
        }
        let _flushing = this.flushing.lock();
        if this.lazy_flush_due.take().is_some() {
            if let Err(e) = this.flush_clears(false) {
                this.clears_not_flushed(e);
                this.target.table_event();
            }
            // Clears whose regions have not been idle long enough yet.
            if this.arm_lazy_flush() {
                this.as_arc_borrow().queue_lazy_flush();
            }
        }
    }
}

impl UserspaceLog {
    /// Sends a group of regions as `kind`; if the group fails, one region per request.
    ///
    /// Servers must treat marks and clears as idempotent: a retried region may have arrived.
    pub(super) fn send_regions(&self, kind: RequestType, regions: &[u64]) -> Result {
        let mut buf = [0u8; MAX_REQUEST_PAYLOAD];
        let n = payload::encode_regions(regions, &mut buf)
            .map_err(|_| bug::broken("a group of regions does not fit a request"))?;
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
    pub(super) fn flush_marks(&self, payload: &[u8], durable: usize) -> Result {
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

    /// Flushes the legs, sends the held clears that are due (with `all`, every one), then a
    /// FLUSH that makes every clear sent so far durable: for the lazy work, and at
    /// postsuspend (dtr drops its clears instead). Called under `flushing`.
    fn flush_clears(&self, all: bool) -> Result {
        let armed = self.flush_legs_for_clears(all);
        if armed == 0 && self.batch.holds_clears() {
            // Held clears go with their FLUSH: none was sent that waits for one.
            return Ok(());
        }
        if self.clears_ride() {
            return self.flush_with_clears(false);
        }
        self.send_pending(RequestType::ClearRegion, |g| self.batch.take_clears(g))?;
        self.flush_marks(&[], 0)
    }

    /// Whether clears go inside the FLUSH: held clears, the switch on, and a server that
    /// announced it takes them (`uapi/clears_in_flush.rs`).
    fn clears_ride(&self) -> bool {
        self.batch.clears_in_flush
            && self.transport.server_features() & FEATURE_CLEARS_IN_FLUSH != 0
    }

    /// Sends the clears inside one FLUSH, with as few requests as possible: clears beyond one
    /// group go ahead as CLEAR_REGION; with `with_marks`, marks go in the room the FLUSH has
    /// left under `integrated_flush` (more marks: more FLUSHes), or ahead as MARK_REGION
    /// without it. Called under `flushing`.
    fn flush_with_clears(&self, with_marks: bool) -> Result {
        let mut group = [0u64; payload::MAX_FLUSH_GROUP];
        while self.batch.ready_len() > group.len() {
            let n = self.batch.take_clears(&mut group);
            self.send_regions(RequestType::ClearRegion, &group[..n])?;
        }
        let clears = self.batch.take_clears(&mut group);
        let integrated = self.features.integrated_flush;
        let sent = (|| {
            let mut n = clears;
            if with_marks && !integrated {
                self.send_pending(RequestType::MarkRegion, |g| self.batch.take_marks(g))?;
            } else if with_marks {
                n += self.batch.take_marks(&mut group[n..]);
            }
            let r = self.flush_entries(&group[..clears], &group[clears..n]);
            if r.is_err() && clears > 0 && !self.clears_ride() {
                // The server that answered is not the one that took clears in a FLUSH: it
                // replaced it without announcing itself. Its way, then.
                self.send_regions(RequestType::ClearRegion, &group[..clears])?;
                self.flush_entries(&[], &group[clears..n])?;
            } else {
                r?;
            }
            if with_marks && integrated {
                self.send_pending(RequestType::Flush, |g| self.batch.take_marks(g))?;
            }
            Ok(())
        })();
        match sent {
            // Every due clear went out and is durable; the caller arms the lazy work for the
            // others.
            Ok(()) => {}
            // The server may lack any of the marks: send them all again with the next flush.
            Err(_) => self.batch.unsend_marks(),
        }
        sent
    }

    /// Sends one FLUSH carrying `clears` (flagged as such) and `marks`.
    fn flush_entries(&self, clears: &[u64], marks: &[u64]) -> Result {
        let mut entries = [0u64; payload::MAX_FLUSH_GROUP];
        let n = clears.len() + marks.len();
        for (e, c) in entries.iter_mut().zip(clears) {
            *e = FlushEntry::Clear(*c).encode();
        }
        for (e, m) in entries[clears.len()..].iter_mut().zip(marks) {
            *e = *m;
        }
        let mut buf = [0u8; MAX_REQUEST_PAYLOAD];
        let len = payload::encode_regions(&entries[..n.min(entries.len())], &mut buf)
            .map_err(|_| bug::broken("a FLUSH's entries do not fit a request"))?;
        self.flush_marks(&buf[..len], self.batch.sent_marks())
    }

    /// Sends pending clears, then marks, then makes them durable.
    ///
    /// With `integrated_flush` the marks travel in the FLUSH; clears alone are not urgent (a
    /// lost clear only costs a resync), so their FLUSH is left to delayed work. With held
    /// clears, clears alone are not even sent: the delayed work sends them.
    ///
    /// Lost marks (see [`FlushBatch::record_lost_marks`]) go first, in parts if there are
    /// many, each part made durable before the next.
    pub(super) fn flush_pending(self: ArcBorrow<'_, Self>) -> Result {
        loop {
            let more = self.batch.record_lost_marks().inspect_err(|_| {
                pr_err!(
                    "[{}] a mark could not be recorded (out of memory): failing the flush\n",
                    uuid_tail(self.uuid())
                );
            })?;
            self.flush_recorded()?;
            if !more {
                return Ok(());
            }
        }
    }

    /// The marks and clears recorded: the body of [`Self::flush_pending`].
    fn flush_recorded(self: ArcBorrow<'_, Self>) -> Result {
        let holds = self.batch.holds_clears();
        // Marks come from the mirror's worker alone, which is the caller: none comes meanwhile.
        // Not under `flushing`, so that a lazy run in progress does not hold the write back.
        if holds && !self.batch.must_send() {
            self.queue_lazy_flush_for_held();
            return Ok(());
        }
        let sent = {
            let _flushing = self.flushing.lock();
            self.send_marks_and_clears()
        };
        // Held clears not due yet, also after a failure: the lazy work sends them.
        if holds {
            self.queue_lazy_flush_for_held();
        }
        sent
    }

    /// The body of [`Self::flush_pending`], under `flushing`.
    fn send_marks_and_clears(self: ArcBorrow<'_, Self>) -> Result {
        let armed = self.flush_legs_for_clears(false);
        if self.batch.holds_clears() && armed == 0 && !self.batch.has_marks() {
            // Crowded, but nothing due.
            return Ok(());
        }
        if self.clears_ride() {
            return self.flush_with_clears(true);
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
            // That FLUSH made the earlier clears durable as well (held ones: flush_pending
            // arms the lazy work for those not due yet).
            if !self.batch.holds_clears() {
                self.lazy_flush_due.take();
            }
        } else if sent_clears && self.batch.holds_clears() {
            // Held clears go with their FLUSH (the lazy work keeps no deadline for them).
            self.flush_marks(&[], 0)?;
        } else if sent_clears
            && self
                .lazy_flush_due
                .set_if_unset(Instant::now() + LAZY_FLUSH_DELAY)
        {
            self.queue_lazy_flush();
        }
        Ok(())
    }

    /// Stops the lazy FLUSH work and waits for a run in progress; then sends the FLUSH it
    /// would have sent, once, without waiting for a missing server.
    ///
    /// For postsuspend and dtr: afterwards nothing of the work is queued or running. Without a
    /// server the clears stay undurable, which costs a resync of those regions, never data.
    pub(super) fn stop_lazy_flush(this: &Arc<Self>) {
        this.stopping.store(true, Relaxed);
        // A run waiting for a missing server between two tries gives up now, not at the
        // end of its pause.
        this.transport.wake_server_waiters();
        // Not under `flushing`: a run in progress takes it.
        cancel_delayed_sync(this);
        let _flushing = this.flushing.lock();
        if this.lazy_flush_due.take().is_some() {
            // With `stopping` set, a request does not wait for a missing server. The mirror
            // is quiet: every held clear goes, idle or not.
            if let Err(e) = this.flush_clears(true) {
                this.clears_not_flushed(e);
            }
        }
        // Under `flushing`: no flush is between its leg flush and its clears now, and any
        // later one drops its clears (see `flush_legs_for_clears`).
        this.leg_flush.close();
    }

    /// Makes the writes of every clear recorded so far durable on the legs, so that those
    /// clears may be sent: the mirror's flush of every leg, as dm-log.c's `disk_flush` does
    /// before it writes cleared bits. A clear sent earlier could reach the log device while
    /// its region's data sits in a leg's volatile cache; after a power cut the legs would
    /// differ in a region the log calls clean. If a leg fails the flush, those clears are
    /// dropped, and so is every later one (dm-log.c latches `flush_failed` too): the failed
    /// flush may have lost cached writes of any region, and a later flush that succeeds does
    /// not bring them back. Called under `flushing`; sleeps.
    ///
    /// Once postsuspend has closed the leg flush, clears are dropped: a reloaded table's
    /// instance may resume and mark their regions before this one is destroyed.
    ///
    /// Covers the held clears that are due (with `all`, every one); returns how many may be
    /// sent.
    fn flush_legs_for_clears(&self, all: bool) -> usize {
        if !self.leg_flush.is_open() || self.legs_failed.load(Relaxed) {
            let dropped = self.batch.drop_clears();
            self.stats.clears_dropped(dropped);
            return 0;
        }
        let armed = self.batch.arm_clears(all);
        if armed == 0 {
            return 0;
        }
        self.stats.leg_flush();
        // A bug planted for the crash checker's self-test (scripts/build-module.sh,
        // DMLU_PLANTED): never in the module users get.
        let flushed = if cfg!(dmlu_planted_skip_leg_flush) {
            Ok(())
        } else {
            self.leg_flush.flush()
        };
        if let Err(e) = flushed {
            self.legs_failed.store(true, Relaxed);
            self.stats.leg_flush_failed();
            self.batch.drop_ready();
            pr_warn!(
                "[{}] flushing the mirror's legs failed ({}): no region is cleaned again until the table is reloaded\n",
                uuid_tail(self.uuid()),
                e.to_errno()
            );
            return 0;
        }
        armed
    }

    /// Makes a finished recovery's copy durable on the legs before the server hears the
    /// region is in sync: a server that writes an in-sync, unmarked region clean on hearing it
    /// (a cluster's replica, cmirrord) must not while the copy may sit in a leg's volatile
    /// cache. dm-raid1 reports a recovery from its worker, which may sleep.
    pub(super) fn flush_legs_for_recovery(&self) -> Result {
        self.stats.leg_flush();
        let flushed = if cfg!(dmlu_planted_skip_leg_flush) {
            Ok(())
        } else {
            self.leg_flush.flush()
        };
        flushed.inspect_err(|_| self.stats.leg_flush_failed())
    }

    /// Says that clears stay undurable: harmless, those regions are only resynced.
    pub(super) fn clears_not_flushed(&self, e: Error) {
        pr_warn!(
            "[{}] pending clears not flushed ({}): those regions will be resynced\n",
            uuid_tail(self.uuid()),
            e.to_errno()
        );
    }

    /// Queues the lazy FLUSH work for its deadline; if still queued for an earlier one, the
    /// queued run waits on.
    pub(super) fn queue_lazy_flush(self: ArcBorrow<'_, Self>) {
        let wait = self
            .lazy_flush_due
            .get()
            .map_or(LAZY_FLUSH_DELAY, |due| due - Instant::<Monotonic>::now());
        let _ = workqueue::system_long()
            .enqueue_delayed(Arc::from(self), timeout::jiffies(wait.max(Delta::ZERO)));
    }

    /// Sets the lazy work's deadline for the held clears (see [`FlushBatch::lazy_deadline`]),
    /// unless one is set; returns whether it set one, which the caller then queues. A set
    /// deadline is left alone, also when the clears it was set for were cancelled or sent
    /// with marks: the run finds nothing due and sets the next one. So a flush need not look
    /// at the held clears. Called under `flushing`, or by the mirror's worker (the lazy work
    /// then does nothing it would not have done).
    fn arm_lazy_flush(&self) -> bool {
        if self.lazy_flush_due.is_set() {
            return false;
        }
        self.batch
            .lazy_deadline()
            .is_some_and(|at| self.lazy_flush_due.set_if_unset(at))
    }

    /// [`Self::arm_lazy_flush`], queueing the work if it set a deadline.
    fn queue_lazy_flush_for_held(self: ArcBorrow<'_, Self>) {
        if self.arm_lazy_flush() {
            self.queue_lazy_flush();
        }
    }
}
