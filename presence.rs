// SPDX-License-Identifier: GPL-2.0

//! Whether the log server is there, and since when it is not.
//!
//! The kernel cannot see a server die; it learns of it from sends that find no listener and
//! from requests that get no answer. This records the first such moment of an outage, so that
//! a bounded wait (`max_server_wait`) can be measured from it and `dmsetup status` can say
//! how long the server has been gone. Any reply or announcement ends the outage.

use kernel::{
    fmt,
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
    time::{Delta, Instant, Monotonic},
};

/// The server's reachability, shared by every log.
pub(crate) struct Presence {
    /// The origin of `lost_at`.
    born: Instant<Monotonic>,
    /// Start of the current outage in nanoseconds after `born`, plus one; 0 while the server
    /// answers.
    lost_at: Atomic<i64>,
    /// Announcements received from (re)started servers.
    announcements: Atomic<u64>,
    /// Outages seen so far.
    outages: Atomic<u64>,
}

impl Presence {
    pub(crate) fn new() -> Self {
        Self {
            born: Instant::now(),
            lost_at: Atomic::new(0),
            announcements: Atomic::new(0),
            outages: Atomic::new(0),
        }
    }

    /// The server was missing at `at` (no listener, or no answer to a request sent then).
    pub(crate) fn lost(&self, at: Instant<Monotonic>) {
        let ns = (at - self.born).as_nanos().max(0).saturating_add(1);
        if self.lost_at.cmpxchg(0, ns, Relaxed).is_ok() {
            self.outages.fetch_add(1, Relaxed);
            pr_warn!("userspace log server not reachable: log requests wait for it\n");
        }
    }

    /// The server answered: any outage is over.
    pub(crate) fn found(&self) {
        let since = self.lost_at.xchg(0, Relaxed);
        if since != 0 {
            let gone = self.born.elapsed().as_nanos() - (since - 1);
            pr_info!(
                "userspace log server reachable again after {} ms\n",
                gone / 1_000_000
            );
        }
    }

    /// A server announced itself.
    pub(crate) fn announced(&self) {
        self.announcements.fetch_add(1, Relaxed);
        self.found();
    }

    /// How long the current outage has lasted; `None` while the server answers.
    pub(crate) fn unreachable_for(&self) -> Option<Delta> {
        match self.lost_at.load(Relaxed) {
            0 => None,
            since => Some(Delta::from_nanos(
                (self.born.elapsed().as_nanos() - (since - 1)).max(0),
            )),
        }
    }

    pub(crate) fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.unreachable_for().map_or(0, |d| d.as_millis());
        writeln!(f, "server_unreachable_ms {ms}")?;
        writeln!(f, "server_outages {}", self.outages.load(Relaxed))?;
        writeln!(
            f,
            "server_announcements {}",
            self.announcements.load(Relaxed)
        )
    }
}
