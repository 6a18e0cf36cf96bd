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

use kernel::{new_spinlock, prelude::*, sync::SpinLock};

use crate::presence::MapStamp;

/// Bits per word of the map.
const WORD_BITS: u64 = u64::BITS as u64;

/// A log's in-sync map.
#[pin_data]
pub(super) struct InSyncMap {
    #[pin]
    state: SpinLock<MapState>,
}

struct MapState {
    /// One bit per region; empty when the log has no map.
    words: KVVec<u64>,
    /// The server whose map this is; `None` until a hand-over from the current server
    /// succeeded (nothing is answered from the map then).
    server: Option<u64>,
    /// The withdrawals the bits were learned under.
    withdrawals: u64,
}

impl MapState {
    /// Whether the bits hold for a server at `now`; voids them after a withdrawal.
    fn current(&mut self, now: Option<MapStamp>) -> bool {
        let Some(now) = now else {
            return false;
        };
        if self.server != Some(now.server) {
            return false;
        }
        if self.withdrawals != now.withdrawals {
            self.words.fill(0);
            self.withdrawals = now.withdrawals;
        }
        true
    }

    fn set(&mut self, region: u64) {
        if let Some(w) = self.words.get_mut(word(region)) {
            *w |= bit(region);
        }
    }

    /// Sets the bits of `count` regions from `first` on.
    fn set_run(&mut self, first: u64, count: u64) {
        let end = first.saturating_add(count);
        let mut r = first;
        while r < end && word(r) < self.words.len() {
            let run = (WORD_BITS - r % WORD_BITS).min(end - r);
            let mask = if run == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << run) - 1) << (r % WORD_BITS)
            };
            self.words[word(r)] |= mask;
            r += run;
        }
    }
}

/// The word holding `region`'s bit.
fn word(region: u64) -> usize {
    usize::try_from(region / WORD_BITS).unwrap_or(usize::MAX)
}

fn bit(region: u64) -> u64 {
    1 << (region % WORD_BITS)
}

impl InSyncMap {
    /// A map of `regions` bits, or none if `enabled` is false or the memory is not there
    /// (see [`Self::exists`]).
    pub(super) fn new(regions: u64, enabled: bool) -> impl PinInit<Self> {
        let words = match usize::try_from(regions.div_ceil(WORD_BITS)) {
            Ok(n) if enabled => {
                KVVec::from_elem(0u64, n, GFP_KERNEL).unwrap_or_else(|_| KVVec::new())
            }
            _ => KVVec::new(),
        };
        pin_init!(Self {
            state <- new_spinlock!(
                MapState {
                    words,
                    server: None,
                    withdrawals: 0,
                },
                "InSyncMap::state"
            ),
        })
    }

    /// Whether the log has a map at all.
    pub(super) fn exists(&self) -> bool {
        !self.state.lock().words.is_empty()
    }

    /// Whether `region` is in sync as far as the map knows, at `now`. Never sleeps.
    pub(super) fn in_sync(&self, region: u64, now: Option<MapStamp>) -> bool {
        let mut s = self.state.lock();
        s.current(now)
            && s.words
                .get(word(region))
                .is_some_and(|w| w & bit(region) != 0)
    }

    /// The server answered, under stamp `asked`, that `region` is in sync; `now` is the stamp
    /// at the answer. Kept only if neither the server nor its withdrawals changed.
    pub(super) fn learn(&self, region: u64, asked: Option<MapStamp>, now: Option<MapStamp>) {
        let mut s = self.state.lock();
        if asked.is_some() && asked == now && s.current(now) {
            s.set(region);
        }
    }

    /// The log is about to send SET_REGION_SYNC of 0 for `region`: it is no longer in sync.
    pub(super) fn withdraw(&self, region: u64) {
        let mut s = self.state.lock();
        if let Some(w) = s.words.get_mut(word(region)) {
            *w &= !bit(region);
        }
    }

    /// Forgets the map until the next hand-over (resume, a new server).
    pub(super) fn forget(&self) {
        self.state.lock().server = None;
    }

    /// A hand-over begins under `stamp`: the map starts empty, and stays unused until
    /// [`Self::handed_over`].
    pub(super) fn begin(&self, stamp: MapStamp) {
        let mut s = self.state.lock();
        s.words.fill(0);
        s.server = None;
        s.withdrawals = stamp.withdrawals;
    }

    /// Runs of in-sync regions the server handed over under `asked`; dropped if `now` differs.
    pub(super) fn load(
        &self,
        runs: impl Iterator<Item = (u64, u64)>,
        asked: MapStamp,
        now: Option<MapStamp>,
    ) {
        let mut s = self.state.lock();
        if now == Some(asked) && s.withdrawals == asked.withdrawals {
            for (first, count) in runs {
                s.set_run(first, count);
            }
        }
    }

    /// The hand-over that began under `asked` is complete (whole or in part): from now on the
    /// map answers, if the server is still the same. A withdrawal since voids what it loaded.
    pub(super) fn handed_over(&self, asked: MapStamp, now: Option<MapStamp>) {
        let mut s = self.state.lock();
        if now.is_some_and(|n| n.server == asked.server) {
            s.server = Some(asked.server);
            s.current(now);
        }
    }
}
