// SPDX-License-Identifier: GPL-2.0

//! Counters an admin can read without a debugger, shown in debugfs.
//!
//! `/sys/kernel/debug/dm_log_userspace/transport` holds the link's counters (replies dropped
//! and why); `/sys/kernel/debug/dm_log_userspace/logs` every log's, a block each that begins
//! with `log <luid>`: requests by type, failures, timeouts, resends, reconnects and
//! round-trip latency. Every line is `name value`, so scripts can read them. One file for all
//! logs, not one each: a debugfs file costs a dentry and an inode per log. Upstream has
//! nothing like it: a stalled mirror could only be explained from a crash dump.

use kernel::{
    debugfs::{Dir, File},
    fmt, new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex,
    },
    time::Delta,
};

use crate::{presence::Presence, uapi::RequestType};

/// Latency buckets: bucket `i` counts round trips of less than `2^i` microseconds, the last
/// also every longer one (above 4 s). 24 of them keep a log's statistics within a 512-byte
/// slab object.
const LATENCY_BUCKETS: usize = 24;

/// Round-trip times of one log's requests, as a power-of-two histogram.
struct Latency {
    buckets: [Atomic<u64>; LATENCY_BUCKETS],
    total_us: Atomic<u64>,
    max_us: Atomic<u64>,
}

impl Latency {
    fn new() -> Self {
        Self {
            buckets: core::array::from_fn(|_| Atomic::new(0)),
            total_us: Atomic::new(0),
            max_us: Atomic::new(0),
        }
    }

    fn record(&self, took: Delta) {
        let us = u64::try_from(took.as_micros_ceil()).unwrap_or(0);
        let bucket = usize::try_from(u64::BITS - us.leading_zeros())
            .unwrap_or(LATENCY_BUCKETS - 1)
            .min(LATENCY_BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.total_us.fetch_add(us, Relaxed);
        let mut max = self.max_us.load(Relaxed);
        while us > max {
            match self.max_us.cmpxchg(max, us, Relaxed) {
                Ok(_) => break,
                Err(now) => max = now,
            }
        }
    }

    /// Samples recorded: counted by the buckets, so that a request updates one counter less.
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Upper bound, in microseconds, of the bucket holding the `per_mille`th sample.
    fn quantile_us(&self, per_mille: u64) -> u64 {
        let count = self.count();
        let rank = (count * per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return 1 << i;
            }
        }
        0
    }
}

/// What one log's requests came to.
pub(crate) struct LogStats {
    uuid: KVec<u8>,
    luid: u64,
    requests: [Atomic<u64>; RequestType::ALL.len()],
    /// Requests the server answered with an error (or that could not be sent).
    failures: Atomic<u64>,
    /// Sends that got no answer within the timeout (each is resent).
    timeouts: Atomic<u64>,
    /// Sends the server answered with `EAGAIN` (each is resent).
    eagain_resends: Atomic<u64>,
    /// Sends repeated at once because a (re)started server announced itself.
    announce_resends: Atomic<u64>,
    /// Times the log was re-created on a server after losing it.
    reconnects: Atomic<u64>,
    /// Requests failed because the server stayed away longer than `max_server_wait`.
    gave_up: Atomic<u64>,
    /// IS_REMOTE_RECOVERING answered "recovering" without asking (the 250 ms rate limit).
    recovery_queries_skipped: Atomic<u64>,
    /// IN_SYNC answered from the answer to the same question earlier in the worker's pass.
    in_sync_reused: Atomic<u64>,
    /// IN_SYNC answered from the in-sync map the server handed over.
    in_sync_from_map: Atomic<u64>,
    /// Held clears cancelled by a new mark of their region.
    clears_cancelled: Atomic<u64>,
    /// Flushes of the mirror's legs before clears were sent.
    leg_flushes: Atomic<u64>,
    /// Of those, the ones a leg failed (their clears were dropped).
    leg_flush_failures: Atomic<u64>,
    /// Clears dropped (their regions stay dirty): recorded after postsuspend, or after a leg
    /// failed a flush.
    clears_dropped: Atomic<u64>,
    latency: Latency,
}

impl LogStats {
    /// Zeroed counters for the log `uuid`/`luid`.
    pub(crate) fn new(uuid: &[u8], luid: u64) -> Result<Arc<Self>> {
        let mut copy = KVec::with_capacity(uuid.len(), GFP_KERNEL)?;
        copy.extend_from_slice(uuid, GFP_KERNEL)?;
        Ok(Arc::new(
            Self {
                uuid: copy,
                luid,
                requests: core::array::from_fn(|_| Atomic::new(0)),
                failures: Atomic::new(0),
                timeouts: Atomic::new(0),
                eagain_resends: Atomic::new(0),
                announce_resends: Atomic::new(0),
                reconnects: Atomic::new(0),
                gave_up: Atomic::new(0),
                recovery_queries_skipped: Atomic::new(0),
                in_sync_reused: Atomic::new(0),
                in_sync_from_map: Atomic::new(0),
                clears_cancelled: Atomic::new(0),
                leg_flushes: Atomic::new(0),
                leg_flush_failures: Atomic::new(0),
                clears_dropped: Atomic::new(0),
                latency: Latency::new(),
            },
            GFP_KERNEL,
        )?)
    }

    /// The log's UUID.
    pub(crate) fn uuid(&self) -> &[u8] {
        &self.uuid
    }

    /// A request was answered (or failed) after `took`.
    pub(crate) fn request_done(&self, kind: RequestType, took: Delta, ok: bool) {
        self.requests[kind.index()].fetch_add(1, Relaxed);
        if !ok {
            self.failures.fetch_add(1, Relaxed);
        }
        self.latency.record(took);
    }

    /// A send got no reply in time.
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    /// A send was answered with `EAGAIN`.
    pub(crate) fn eagain(&self) {
        self.eagain_resends.fetch_add(1, Relaxed);
    }

    /// A send was repeated because a server announced itself.
    pub(crate) fn announce_resent(&self) {
        self.announce_resends.fetch_add(1, Relaxed);
    }

    /// A request failed because `max_server_wait` passed.
    pub(crate) fn gave_up(&self) {
        self.gave_up.fetch_add(1, Relaxed);
    }

    /// The log was re-created on a (new) server.
    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    /// IS_REMOTE_RECOVERING was answered from the rate limit.
    pub(crate) fn recovery_query_skipped(&self) {
        self.recovery_queries_skipped.fetch_add(1, Relaxed);
    }

    /// IN_SYNC was answered from a kept answer.
    pub(crate) fn in_sync_reused(&self) {
        self.in_sync_reused.fetch_add(1, Relaxed);
    }

    /// A held clear was cancelled by a new mark of its region.
    pub(crate) fn clear_cancelled(&self) {
        self.clears_cancelled.fetch_add(1, Relaxed);
    }

    /// The mirror's legs were flushed so that clears could be sent.
    pub(crate) fn leg_flush(&self) {
        self.leg_flushes.fetch_add(1, Relaxed);
    }

    /// A leg failed that flush.
    pub(crate) fn leg_flush_failed(&self) {
        self.leg_flush_failures.fetch_add(1, Relaxed);
    }

    /// `n` clears were dropped.
    pub(crate) fn clears_dropped(&self, n: usize) {
        self.clears_dropped
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Relaxed);
    }

    /// IN_SYNC was answered from the in-sync map.
    pub(crate) fn in_sync_from_map(&self) {
        self.in_sync_from_map.fetch_add(1, Relaxed);
    }

    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "uuid {}",
            core::str::from_utf8(&self.uuid).unwrap_or("?")
        )?;
        writeln!(f, "luid {}", self.luid)?;
        let mut total = 0;
        for (kind, n) in RequestType::ALL.iter().zip(&self.requests) {
            let n = n.load(Relaxed);
            total += n;
            writeln!(f, "requests.{} {}", kind.name(), n)?;
        }
        writeln!(f, "requests {total}")?;
        writeln!(f, "failures {}", self.failures.load(Relaxed))?;
        writeln!(f, "timeouts {}", self.timeouts.load(Relaxed))?;
        writeln!(f, "eagain_resends {}", self.eagain_resends.load(Relaxed))?;
        writeln!(
            f,
            "announce_resends {}",
            self.announce_resends.load(Relaxed)
        )?;
        writeln!(f, "reconnects {}", self.reconnects.load(Relaxed))?;
        writeln!(f, "gave_up {}", self.gave_up.load(Relaxed))?;
        writeln!(
            f,
            "recovery_queries_skipped {}",
            self.recovery_queries_skipped.load(Relaxed)
        )?;
        writeln!(f, "in_sync_reused {}", self.in_sync_reused.load(Relaxed))?;
        writeln!(
            f,
            "in_sync_from_map {}",
            self.in_sync_from_map.load(Relaxed)
        )?;
        writeln!(
            f,
            "clears_cancelled {}",
            self.clears_cancelled.load(Relaxed)
        )?;
        writeln!(f, "leg_flushes {}", self.leg_flushes.load(Relaxed))?;
        writeln!(
            f,
            "leg_flush_failures {}",
            self.leg_flush_failures.load(Relaxed)
        )?;
        writeln!(f, "clears_dropped {}", self.clears_dropped.load(Relaxed))?;
        let l = &self.latency;
        let count = l.count();
        let avg = l.total_us.load(Relaxed).checked_div(count).unwrap_or(0);
        writeln!(f, "latency_avg_us {avg}")?;
        writeln!(f, "latency_p50_us_below {}", l.quantile_us(500))?;
        writeln!(f, "latency_p99_us_below {}", l.quantile_us(990))?;
        writeln!(f, "latency_max_us {}", l.max_us.load(Relaxed))
    }
}

/// Replies the transport dropped, by reason, and its slots in use.
pub(crate) struct TransportStats {
    /// From a sender without `CAP_SYS_ADMIN`.
    pub(crate) unprivileged: Atomic<u64>,
    /// Malformed (bad sizes, version, lengths).
    pub(crate) malformed: Atomic<u64>,
    /// Matching no waiting request (late, duplicated or forged).
    pub(crate) unmatched: Atomic<u64>,
    /// Request slots in use: at the limit, further requests wait for one.
    slots_busy: Atomic<usize>,
}

impl TransportStats {
    pub(crate) fn new() -> Self {
        Self {
            unprivileged: Atomic::new(0),
            malformed: Atomic::new(0),
            unmatched: Atomic::new(0),
            slots_busy: Atomic::new(0),
        }
    }

    /// Records how many slots are in use (a store under the transport's lock, no count).
    pub(crate) fn slots_busy(&self, n: usize) {
        self.slots_busy.store(n, Relaxed);
    }

    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dropped_unprivileged {}",
            self.unprivileged.load(Relaxed)
        )?;
        writeln!(f, "dropped_malformed {}", self.malformed.load(Relaxed))?;
        writeln!(f, "dropped_unmatched {}", self.unmatched.load(Relaxed))?;
        writeln!(f, "slots_busy {}", self.slots_busy.load(Relaxed))
    }
}

/// The logs the `logs` file shows, in the order they were created.
#[pin_data]
pub(crate) struct LogList {
    #[pin]
    logs: Mutex<KVec<Arc<LogStats>>>,
}

/// A log's block in the `logs` file, which goes when this is dropped.
pub(crate) struct Listed {
    list: Arc<LogList>,
    luid: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut logs = self.list.logs.lock();
        if let Some(at) = logs.iter().position(|s| s.luid == self.luid) {
            let _ = logs.remove(at);
        }
    }
}

/// The module's debugfs directory. Without debugfs every file silently does not exist.
pub(crate) struct Diagnostics {
    /// Before `dir`: a file goes before its directory.
    _logs_file: StatsFile<Arc<LogList>>,
    logs: Arc<LogList>,
    dir: Dir,
}

/// A debugfs file showing counters of type `T`; removed on drop.
pub(crate) type StatsFile<T> = Pin<KBox<File<T>>>;

/// What the `transport` file shows: the server's presence, then the transport's counters.
pub(crate) struct TransportView {
    presence: Arc<Presence>,
    stats: Arc<TransportStats>,
}

impl Diagnostics {
    /// The directory, with its (empty) `logs` file.
    pub(crate) fn new() -> Result<Self> {
        let dir = Dir::new(c"dm_log_userspace");
        let logs = Arc::pin_init(
            pin_init!(LogList {
                logs <- new_mutex!(KVec::new(), "LogList::logs"),
            }),
            GFP_KERNEL,
        )?;
        let logs_file = KBox::pin_init(
            dir.read_callback_file(c"logs", logs.clone(), &show_logs),
            GFP_KERNEL,
        )?;
        Ok(Self {
            _logs_file: logs_file,
            logs,
            dir,
        })
    }

    /// Shows the server's presence and the transport's counters as `transport`.
    pub(crate) fn transport_file(
        &self,
        presence: Arc<Presence>,
        stats: Arc<TransportStats>,
    ) -> Result<StatsFile<TransportView>> {
        let view = TransportView { presence, stats };
        KBox::pin_init(
            self.dir
                .read_callback_file(c"transport", view, &show_transport),
            GFP_KERNEL,
        )
    }

    /// Shows one log's counters in the `logs` file, for as long as the result lives.
    pub(crate) fn list(&self, stats: Arc<LogStats>) -> Result<Listed> {
        let luid = stats.luid;
        self.logs.logs.lock().push(stats, GFP_KERNEL)?;
        Ok(Listed {
            list: self.logs.clone(),
            luid,
        })
    }
}

fn show_transport(v: &TransportView, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    v.presence.show(f)?;
    v.stats.show(f)
}

fn show_logs(list: &Arc<LogList>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for s in list.logs.lock().iter() {
        writeln!(f, "log {}", s.luid)?;
        s.show(f)?;
        writeln!(f)?;
    }
    Ok(())
}
