// SPDX-License-Identifier: GPL-2.0

//! An optional moment of the monotonic clock that can be read and set without a lock.
//!
//! The log and the transport keep a few such moments (when the server was lost, when a FLUSH
//! falls due, when the server was last asked about recovery) that are read on paths where
//! taking a lock would serialise requests for nothing.

use kernel::{
    sync::atomic::{Atomic, Relaxed},
    time::{Delta, Instant, Monotonic},
};

/// Stands for "no moment" in [`AtomicInstant::since_origin`]; real values are never negative.
const UNSET: i64 = -1;

/// An `Option<Instant<Monotonic>>` in an atomic.
pub(crate) struct AtomicInstant {
    /// Moments are stored as nanoseconds after this one.
    origin: Instant<Monotonic>,
    since_origin: Atomic<i64>,
}

impl AtomicInstant {
    /// An unset moment.
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            since_origin: Atomic::new(UNSET),
        }
    }

    fn encode(&self, at: Instant<Monotonic>) -> i64 {
        // A moment before the origin is stored as the origin.
        (at - self.origin).as_nanos().max(0)
    }

    fn decode(&self, ns: i64) -> Option<Instant<Monotonic>> {
        (ns != UNSET).then(|| self.origin + Delta::from_nanos(ns))
    }

    /// The moment, if set.
    pub(crate) fn get(&self) -> Option<Instant<Monotonic>> {
        self.decode(self.since_origin.load(Relaxed))
    }

    /// Whether a moment is set.
    pub(crate) fn is_set(&self) -> bool {
        self.since_origin.load(Relaxed) != UNSET
    }

    /// Sets the moment.
    pub(crate) fn set(&self, at: Instant<Monotonic>) {
        self.since_origin.store(self.encode(at), Relaxed);
    }

    /// Sets the moment unless one is set; returns whether it did.
    pub(crate) fn set_if_unset(&self, at: Instant<Monotonic>) -> bool {
        self.since_origin
            .cmpxchg(UNSET, self.encode(at), Relaxed)
            .is_ok()
    }

    /// Unsets the moment and returns what it was.
    pub(crate) fn take(&self) -> Option<Instant<Monotonic>> {
        self.decode(self.since_origin.xchg(UNSET, Relaxed))
    }

    /// Time since the moment (zero if it lies ahead); `None` if unset.
    pub(crate) fn elapsed(&self) -> Option<Delta> {
        self.get().map(|at| {
            let d = Instant::<Monotonic>::now() - at;
            if d.is_negative() {
                Delta::ZERO
            } else {
                d
            }
        })
    }
}
