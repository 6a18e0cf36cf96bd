// SPDX-License-Identifier: GPL-2.0

//! Whether the log server is there, and since when it is not.
//!
//! The kernel cannot see a server die; it learns of it from sends that find no listener and
//! from requests that get no answer. This records the first such moment of an outage, so that
//! a bounded wait (`max_server_wait`) can be measured from it and `dmsetup status` can say
//! how long the server has been gone. Any reply or announcement ends the outage.
//!
//! It also keeps what the server said of itself in its announcement (its features, which
//! hold until the next outage) and counts the server's withdrawals from the kernel's in-sync
//! maps (`uapi/in_sync_map.rs`).
//!
//! The transport owns the one instance; the debugfs counters only display it.

use kernel::{
    fmt,
    prelude::*,
    sync::atomic::{Acquire, Atomic, Full, Relaxed},
    time::{Delta, Instant, Monotonic},
};

use crate::{atomic_instant::AtomicInstant, uapi::FEATURE_IN_SYNC_MAP};

/// The server's reachability, shared by every log.
pub(crate) struct Presence {
    /// Start of the current outage; unset while the server answers.
    lost_at: AtomicInstant,
    /// Announcements received from (re)started servers: a log compares the count with the one
    /// it last saw to know whether a new server came.
    announcements: Atomic<u64>,
    /// Outages seen so far.
    outages: Atomic<u64>,
    /// The `FEATURE_*` bits of the last announcement; none once the server went missing (a
    /// server that replaces it may not announce).
    features: Atomic<u32>,
    /// Withdrawals received: an in-sync map learned under an older count is void.
    withdrawals: Atomic<u64>,
}

/// Which server, and which of its withdrawals, an in-sync map's bits were learned under.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapStamp {
    /// The announcement of the server that offered the map.
    pub(crate) server: u64,
    /// Withdrawals received by then.
    pub(crate) withdrawals: u64,
}

impl Presence {
    pub(crate) fn new() -> Self {
        Self {
            lost_at: AtomicInstant::new(),
            announcements: Atomic::new(0),
            outages: Atomic::new(0),
            features: Atomic::new(0),
            withdrawals: Atomic::new(0),
        }
    }

    /// The server was missing at `at` (no listener, or no answer to a request sent then).
    pub(crate) fn lost(&self, at: Instant<Monotonic>) {
        if self.lost_at.set_if_unset(at) {
            self.features.store(0, Relaxed);
            self.outages.fetch_add(1, Relaxed);
            pr_warn!("userspace log server not reachable: log requests wait for it\n");
        }
    }

    /// The server answered: any outage is over.
    pub(crate) fn found(&self) {
        if let Some(since) = self.lost_at.take() {
            pr_info!(
                "userspace log server reachable again after {} ms\n",
                since.elapsed().as_millis()
            );
        }
    }

    /// A server announced itself, with its `features`. Called under the transport's lock.
    pub(crate) fn announced(&self, features: u32) {
        self.features.store(features, Relaxed);
        self.announcements.fetch_add(1, Relaxed);
        self.found();
    }

    /// The server withdrew regions from the in-sync maps: every map learned before is void.
    pub(crate) fn withdrawn(&self) {
        // Ordered before the server's reply to the request that caused it, which is processed
        // after this returns (the server sends it only then).
        self.withdrawals.fetch_add(1, Full);
    }

    /// The `FEATURE_*` bits of the server's announcement; none after an outage.
    pub(crate) fn features(&self) -> u32 {
        self.features.load(Relaxed)
    }

    /// A server that did not announce itself answers: it has no extensions.
    pub(crate) fn forget_features(&self) {
        self.features.store(0, Relaxed);
    }

    /// Withdrawals received so far.
    pub(crate) fn withdrawals(&self) -> u64 {
        self.withdrawals.load(Acquire)
    }

    /// The stamp in-sync map bits learned now get; `None` unless the server announced the map.
    pub(crate) fn map_stamp(&self) -> Option<MapStamp> {
        let withdrawals = self.withdrawals.load(Acquire);
        (self.features.load(Relaxed) & FEATURE_IN_SYNC_MAP != 0).then(|| MapStamp {
            server: self.announcements.load(Relaxed),
            withdrawals,
        })
    }

    /// Announcements received so far.
    pub(crate) fn announcements(&self) -> u64 {
        self.announcements.load(Relaxed)
    }

    /// How long the current outage has lasted; `None` while the server answers.
    pub(crate) fn unreachable_for(&self) -> Option<Delta> {
        self.lost_at.elapsed()
    }

    /// Writes the `server_*` lines of the transport's debugfs file.
    pub(crate) fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.unreachable_for().map_or(0, |d| d.as_millis());
        writeln!(f, "server_unreachable_ms {ms}")?;
        writeln!(f, "server_outages {}", self.outages.load(Relaxed))?;
        writeln!(f, "server_announcements {}", self.announcements())?;
        writeln!(f, "server_features {}", self.features.load(Relaxed))?;
        writeln!(f, "server_withdrawals {}", self.withdrawals.load(Relaxed))
    }
}
