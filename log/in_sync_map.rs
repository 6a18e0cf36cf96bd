// SPDX-License-Identifier: GPL-2.0

//! The regions the server said are in sync, so that IN_SYNC about them is answered here.
//!
//! This project's extension, specified in `uapi/in_sync_map.rs`: a server that announces it
//! hands the map over after RESUME and withdraws regions before they go out of sync. Bits
//! are learned under a [`MapStamp`] (the server's announcement and the withdrawals received
//! so far) and count only while it is current: a withdrawal, or another server, voids them.
//! A bit is set only if the stamp did not change between the question and its answer, so a
//! withdrawal that raced with a request cannot be undone by its reply.
//!
//! One bit per region, allocated with the log; if that fails (a huge log), the log works
//! without a map, as upstream. On by default; the module parameter `in_sync_map=0` turns it
//! off for new tables.

use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Mutex,
    },
};

use crate::presence::MapStamp;

/// Bits per word of the map.
const WORD_BITS: u64 = u64::BITS as u64;

/// `server` while no hand-over from the current server has succeeded.
const NO_SERVER: u64 = u64::MAX;

/// A log's in-sync map.
///
/// dm-raid1 asks [`InSyncMap::in_sync`] from bio completion (a failed read: `mirror_end_io`,
/// `mirror_available`, `in_sync(can_block=0)`), which can run in hard or soft interrupt
/// context. So the question takes no lock and does bounded work: a few atomic loads. Every
/// change comes from process context and is serialised by `writer`; a change that voids the
/// bits (a withdrawal, a hand-over) first makes the stamps unequal, so that a question never
/// trusts bits that are being cleared.
#[pin_data]
pub(super) struct InSyncMap {
    /// One bit per region; empty when the log has no map. Written only under `writer`.
    words: KVVec<Atomic<u64>>,
    /// The server whose map this is, or [`NO_SERVER`] (nothing is answered from the map).
    server: Atomic<u64>,
    /// The withdrawals the bits were learned under.
    withdrawals: Atomic<u64>,
    /// Held by whoever changes the map.
    #[pin]
    writer: Mutex<()>,
}

/// The word holding `region`'s bit.
fn word(region: u64) -> usize {
    usize::try_from(region / WORD_BITS).unwrap_or(usize::MAX)
}

fn bit(region: u64) -> u64 {
    1 << (region % WORD_BITS)
}

/// A zeroed map of `words` words, or an empty one if the memory is not there.
fn zeroed_words(words: usize) -> KVVec<Atomic<u64>> {
    let Ok(mut v) = KVVec::with_capacity(words, GFP_KERNEL) else {
        return KVVec::new();
    };
    for _ in 0..words {
        if v.push_within_capacity(Atomic::new(0)).is_err() {
            return KVVec::new();
        }
    }
    v
}

impl InSyncMap {
    /// A map of `regions` bits, or none if `enabled` is false or the memory is not there
    /// (see [`Self::exists`]).
    pub(super) fn new(regions: u64, enabled: bool) -> impl PinInit<Self> {
        let words = match usize::try_from(regions.div_ceil(WORD_BITS)) {
            Ok(n) if enabled => zeroed_words(n),
            _ => KVVec::new(),
        };
        pin_init!(Self {
            words,
            server: Atomic::new(NO_SERVER),
            withdrawals: Atomic::new(0),
            writer <- new_mutex!((), "InSyncMap::writer"),
        })
    }

    /// Whether the log has a map at all.
    pub(super) fn exists(&self) -> bool {
        !self.words.is_empty()
    }

    /// Whether `region` is in sync as far as the map knows, at `now`. Takes no lock and never
    /// sleeps: safe in interrupt context.
    pub(super) fn in_sync(&self, region: u64, now: Option<MapStamp>) -> bool {
        let Some(now) = now else {
            return false;
        };
        // Acquire: bits cleared before the stamps were made equal again are seen cleared.
        self.server.load(Acquire) == now.server
            && self.withdrawals.load(Acquire) == now.withdrawals
            && self
                .words
                .get(word(region))
                .is_some_and(|w| w.load(Relaxed) & bit(region) != 0)
    }

    /// Whether the bits hold for a server at `now`; voids them after a withdrawal. Called
    /// under `writer`.
    fn current(&self, now: Option<MapStamp>) -> bool {
        let Some(now) = now else {
            return false;
        };
        if self.server.load(Relaxed) != now.server {
            return false;
        }
        if self.withdrawals.load(Relaxed) != now.withdrawals {
            // Questions stop trusting the bits before they are cleared: their stamp is newer.
            self.clear_all();
            self.withdrawals.store(now.withdrawals, Release);
        }
        true
    }

    /// Clears every bit. Called under `writer`.
    fn clear_all(&self) {
        for w in self.words.iter() {
            w.store(0, Relaxed);
        }
    }

    /// Sets `mask` in `word`. Called under `writer`, the only place bits change.
    fn or_word(&self, word: usize, mask: u64) {
        if let Some(w) = self.words.get(word) {
            w.store(w.load(Relaxed) | mask, Relaxed);
        }
    }

    /// Sets the bits of `count` regions from `first` on. Called under `writer`.
    fn set_run(&self, first: u64, count: u64) {
        let end = first.saturating_add(count);
        let mut r = first;
        while r < end && word(r) < self.words.len() {
            let run = (WORD_BITS - r % WORD_BITS).min(end - r);
            let mask = if run == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << run) - 1) << (r % WORD_BITS)
            };
            self.or_word(word(r), mask);
            r += run;
        }
    }

    /// The server answered, under stamp `asked`, that `region` is in sync; `now` is the stamp
    /// at the answer. Kept only if neither the server nor its withdrawals changed.
    pub(super) fn learn(&self, region: u64, asked: Option<MapStamp>, now: Option<MapStamp>) {
        let _writer = self.writer.lock();
        if asked.is_some() && asked == now && self.current(now) {
            self.or_word(word(region), bit(region));
        }
    }

    /// The log is about to send SET_REGION_SYNC of 0 for `region`: it is no longer in sync.
    pub(super) fn withdraw(&self, region: u64) {
        let _writer = self.writer.lock();
        if let Some(w) = self.words.get(word(region)) {
            w.store(w.load(Relaxed) & !bit(region), Relaxed);
        }
    }

    /// Forgets the map until the next hand-over (resume, a new server).
    pub(super) fn forget(&self) {
        let _writer = self.writer.lock();
        self.server.store(NO_SERVER, Release);
    }

    /// A hand-over begins under `stamp`: the map starts empty, and stays unused until
    /// [`Self::handed_over`].
    pub(super) fn begin(&self, stamp: MapStamp) {
        let _writer = self.writer.lock();
        self.server.store(NO_SERVER, Release);
        self.clear_all();
        self.withdrawals.store(stamp.withdrawals, Release);
    }

    /// Runs of in-sync regions the server handed over under `asked`; dropped if `now` differs.
    pub(super) fn load(
        &self,
        runs: impl Iterator<Item = (u64, u64)>,
        asked: MapStamp,
        now: Option<MapStamp>,
    ) {
        let _writer = self.writer.lock();
        if now == Some(asked) && self.withdrawals.load(Relaxed) == asked.withdrawals {
            for (first, count) in runs {
                self.set_run(first, count);
            }
        }
    }

    /// The hand-over that began under `asked` is complete (whole or in part): from now on the
    /// map answers, if the server is still the same. A withdrawal since voids what it loaded.
    pub(super) fn handed_over(&self, asked: MapStamp, now: Option<MapStamp>) {
        let _writer = self.writer.lock();
        if now.is_some_and(|n| n.server == asked.server) {
            // Voided first if a withdrawal came since, then published.
            let withdrawals = self.withdrawals.load(Relaxed);
            if now.is_some_and(|n| n.withdrawals != withdrawals) {
                self.server.store(NO_SERVER, Release);
                self.clear_all();
                self.withdrawals
                    .store(now.map_or(withdrawals, |n| n.withdrawals), Release);
            }
            self.server.store(asked.server, Release);
        }
    }
}
