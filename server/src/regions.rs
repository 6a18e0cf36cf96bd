// SPDX-License-Identifier: GPL-2.0
//! The state of one log's regions: which are in sync, which are dirty, what to recover next.
//!
//! The semantics are those of the kernel's own core log (drivers/md/dm-log.c): every region
//! starts clean; a `sync` log starts with every region out of sync (a full resync), a
//! `nosync` log with every region in sync; resync work is handed out in ascending order, a
//! region not again until it is reported or the log resumes, except that a request while one
//! is unreported gets that one again (its answer was lost: the kernel recovers one at a time).

use std::ops::Range;

use crate::bitset::{AllocError, Bitset};

/// Region bookkeeping of one log: four bits per region, in bitsets reserved fallibly at
/// creation (a log the server cannot hold is refused, never an abort), and never
/// reallocated afterwards. Not `Clone`: a copy would allocate infallibly.
#[derive(Debug, PartialEq, Eq)]
pub struct Regions {
    in_sync: Bitset,
    clean: Bitset,
    /// Regions that left sync, or were recovered, and have not been cleared since: dirty on
    /// a disk log's device whatever `clean` and `in_sync` say.
    uncleared: Bitset,
    recovering: Bitset,
    /// Where the search for resync work continues.
    sync_search: u64,
    /// The region last handed out for recovery (recovering until reported).
    handed_out: Option<u64>,
    sync_count: u64,
    /// The regions that left sync since [`Regions::take_left_sync`] last looked. Noted
    /// here, where in-sync bits are cleared, so that no way of clearing one can skip the
    /// withdrawal the kernel's in-sync map needs (`crate::logs`).
    left_sync: LeftSync,
}

/// Regions that left sync and are still to be withdrawn from the kernel's in-sync map: the
/// smallest span holding them, `end` `u64::MAX` for "to the end of the log". Single-node
/// logs ([`Regions`]) and clustered ones (`cluster::replica`) both keep one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeftSync(Option<Range<u64>>);

impl LeftSync {
    /// Adds `span` to the regions that left sync.
    pub fn note(&mut self, span: Range<u64>) {
        self.0 = Some(match self.0.take() {
            None => span,
            Some(seen) => seen.start.min(span.start)..seen.end.max(span.end),
        });
    }

    /// The regions that left sync since the last call, as `(first, count)` (`count`
    /// `u64::MAX`: every region from `first` on), the span of a withdrawal; `None` if none
    /// did.
    pub fn take(&mut self) -> Option<(u64, u64)> {
        let span = self.0.take()?;
        let count = match span.end {
            u64::MAX => u64::MAX,
            end => end - span.start,
        };
        Some((span.start, count))
    }
}

/// A region number outside the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("region {0} is outside the log")]
pub struct OutOfRange(pub u64);

impl Regions {
    /// Bytes of memory the state of `count` regions takes.
    pub fn bytes_for(count: u64) -> u64 {
        4 * Bitset::bytes_for(count)
    }

    /// `count` regions, all clean, all in sync or all out of sync; an error when the memory
    /// cannot be had.
    pub fn try_new(count: u64, in_sync: bool) -> Result<Self, AllocError> {
        Ok(Self {
            in_sync: Bitset::try_new(count, in_sync)?,
            clean: Bitset::try_new(count, true)?,
            uncleared: Bitset::try_new(count, false)?,
            recovering: Bitset::try_new(count, false)?,
            sync_search: 0,
            handed_out: None,
            sync_count: if in_sync { count } else { 0 },
            left_sync: LeftSync::default(),
        })
    }

    /// Regions as a disk log finds them at resume: in sync exactly where the little-endian
    /// clean bitmap `bits` says clean (dm-log.c copies its clean bits to its sync bits), and
    /// clean on the device only there, none being recovered. Allocates nothing.
    pub fn load_clean_bits(&mut self, bits: &[u8]) {
        if self.in_sync.copy_from_le_bytes(bits) {
            // Which ones does not matter: a reload is rare, and the kernel learns again.
            self.left_sync.note(0..u64::MAX);
        }
        self.clean.fill(true);
        // A dirty region stays dirty on the device until the kernel clears it, after the
        // recovery it needs (and the leg flush the clear waits for).
        self.uncleared.copy_from_le_bytes(bits);
        self.uncleared.invert();
        self.recovering.fill(false);
        self.sync_search = 0;
        self.sync_count = self.in_sync.count_ones();
    }

    /// Number of regions.
    pub fn count(&self) -> u64 {
        self.in_sync.len()
    }

    fn check(&self, region: u64) -> Result<u64, OutOfRange> {
        if region < self.count() {
            Ok(region)
        } else {
            Err(OutOfRange(region))
        }
    }

    /// What a disk log's bitmap holds for the region: clean, and cleared by the kernel since
    /// it came back in sync (as dm-log.c's clean bits, which only a clear sets: a region
    /// recovered is clean on the device once the kernel clears it, after it flushed the legs
    /// the recovery wrote, not when it reports the recovery).
    pub fn clean_on_disk(&self, region: u64) -> Result<bool, OutOfRange> {
        Ok(self.is_clean(region)? && !self.uncleared.get(region))
    }

    /// A region is clean when it is in sync and no write to it is outstanding.
    pub fn is_clean(&self, region: u64) -> Result<bool, OutOfRange> {
        let i = self.check(region)?;
        Ok(self.clean.get(i) && self.in_sync.get(i))
    }

    /// Whether the region's legs hold the same data.
    pub fn in_sync(&self, region: u64) -> Result<bool, OutOfRange> {
        Ok(self.in_sync.get(self.check(region)?))
    }

    /// A write to the region begins (idempotent).
    pub fn mark(&mut self, region: u64) -> Result<(), OutOfRange> {
        let i = self.check(region)?;
        self.clean.set(i, false);
        Ok(())
    }

    /// Writes to the region are complete (idempotent).
    pub fn clear(&mut self, region: u64) -> Result<(), OutOfRange> {
        let i = self.check(region)?;
        self.clean.set(i, true);
        self.uncleared.set(i, false);
        Ok(())
    }

    /// The next region to recover, if any.
    ///
    /// dm-raid1 recovers one region at a time (dm-region-hash's `max_recovery` is 1): it asks
    /// again only after it reported the last one. So a request while a region is still being
    /// recovered means the kernel never got that answer (it timed out and resent): the same
    /// region is handed out again, or nobody would recover it before the next resume.
    pub fn resync_work(&mut self) -> Option<u64> {
        if let Some(unreported) = self.handed_out.filter(|&r| self.recovering.get(r)) {
            return Some(unreported);
        }
        let found = self
            .in_sync
            .first_clear_in_both(&self.recovering, self.sync_search)?;
        self.recovering.set(found, true);
        self.sync_search = found + 1;
        self.handed_out = Some(found);
        Some(found)
    }

    /// Records the outcome of a recovery (or a write failure, with `in_sync` false).
    pub fn set_sync(&mut self, region: u64, in_sync: bool) -> Result<(), OutOfRange> {
        let i = self.check(region)?;
        self.recovering.set(i, false);
        if self.in_sync.set(i, in_sync) {
            if in_sync {
                self.sync_count += 1;
            } else {
                self.sync_count -= 1;
                self.left_sync.note(region..region + 1);
            }
        }
        if !in_sync {
            // Recover it again on this pass.
            self.sync_search = self.sync_search.min(region);
        }
        // Clean on the device only once the kernel clears it.
        self.uncleared.set(i, true);
        Ok(())
    }

    /// The regions that left sync since the last call ([`LeftSync::take`]).
    pub fn take_left_sync(&mut self) -> Option<(u64, u64)> {
        self.left_sync.take()
    }

    /// The runs of in-sync regions from `from` on, as GET_IN_SYNC_RANGES hands them to the
    /// kernel: fills `runs` with `(first, count)`, in order, and returns the region the
    /// answer speaks up to and how many runs it filled. That region is the log's end, unless
    /// `runs` filled up first: then the end of the last run, where the kernel asks on.
    /// Word-level searches, no allocation. Panics if `runs` is empty.
    pub fn in_sync_runs(
        &self,
        from: u64,
        runs: &mut [(u64, u64)],
    ) -> Result<(u64, usize), OutOfRange> {
        let from = self.check(from)?;
        Ok(self.in_sync.set_runs(from, runs))
    }

    /// How many regions are in sync.
    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }

    /// How many regions have a write outstanding (marked and not yet cleared).
    pub fn dirty_count(&self) -> u64 {
        self.count() - self.clean.count_ones()
    }

    /// Every region below this one is in sync.
    pub fn in_sync_hint(&self) -> u64 {
        self.in_sync.first_clear().unwrap_or(self.count())
    }

    /// The mirror resumes: recovery starts over from the first region.
    pub fn resume(&mut self) {
        self.sync_search = 0;
        self.recovering.fill(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dm_ulog_uapi::in_sync_map::MAX_RANGES;
    use proptest::prelude::*;

    #[test]
    fn sync_log_hands_out_every_region_once_in_order() {
        let mut r = Regions::try_new(4, false).unwrap();
        assert_eq!(r.sync_count(), 0);
        for region in 0..4 {
            assert_eq!(r.resync_work(), Some(region));
            r.set_sync(region, true).unwrap();
        }
        assert_eq!(r.resync_work(), None);
        assert_eq!(r.sync_count(), 4);
        assert_eq!(r.in_sync_hint(), 4);
    }

    #[test]
    fn clean_needs_sync_and_no_outstanding_mark() {
        let mut r = Regions::try_new(2, true).unwrap();
        assert!(r.is_clean(0).unwrap());
        r.mark(0).unwrap();
        r.mark(0).unwrap();
        assert!(!r.is_clean(0).unwrap());
        r.clear(0).unwrap();
        assert!(r.is_clean(0).unwrap());
        r.set_sync(1, false).unwrap();
        assert!(!r.is_clean(1).unwrap());
        assert_eq!(r.mark(2), Err(OutOfRange(2)));
        assert_eq!(r.in_sync(9), Err(OutOfRange(9)));
    }

    #[test]
    fn loaded_clean_bits_put_exactly_the_clean_regions_in_sync() {
        let mut r = Regions::try_new(3, false).unwrap();
        r.mark(1).unwrap();
        assert_eq!(r.resync_work(), Some(0));
        r.load_clean_bits(&[0b101]);
        assert_eq!(r.count(), 3);
        assert_eq!(r.sync_count(), 2);
        // Region 1 is dirty on the device until the kernel clears it.
        assert_eq!(r.dirty_count(), 0);
        assert!(!r.clean_on_disk(1).unwrap());
        assert!(r.is_clean(0).unwrap());
        assert!(!r.in_sync(1).unwrap());
        assert!(!r.is_clean(1).unwrap());
        assert_eq!(r.resync_work(), Some(1));
        r.set_sync(1, true).unwrap();
        assert!(!r.clean_on_disk(1).unwrap(), "recovered is not cleared");
        r.clear(1).unwrap();
        assert!(r.clean_on_disk(1).unwrap());
        assert_eq!(r.resync_work(), None);
        r.mark(2).unwrap();
        assert_eq!(r.dirty_count(), 1);
    }

    #[test]
    fn unservable_region_counts_are_an_error() {
        assert!(Regions::try_new(u64::MAX, false).is_err());
        assert_eq!(Regions::bytes_for(1 << 32), 4 << 29);
    }

    /// A GET_RESYNC_WORK resent after the kernel's timeout (its first answer lost) gets the
    /// region the first one was given, and the resync still reaches every region.
    #[test]
    fn resent_resync_request_gets_the_same_region_and_sync_completes() {
        let mut r = Regions::try_new(3, false).unwrap();
        assert_eq!(r.resync_work(), Some(0));
        // The answer was lost: the kernel asks again.
        assert_eq!(r.resync_work(), Some(0));
        while let Some(region) = r.resync_work() {
            r.set_sync(region, true).unwrap();
        }
        assert_eq!(r.sync_count(), 3);
    }

    /// A failed recovery (reported out of sync) is handed out again on this pass.
    #[test]
    fn failed_recovery_is_retried() {
        let mut r = Regions::try_new(2, false).unwrap();
        assert_eq!(r.resync_work(), Some(0));
        r.set_sync(0, false).unwrap();
        assert_eq!(r.resync_work(), Some(0));
    }

    #[test]
    fn resume_restarts_recovery() {
        let mut r = Regions::try_new(3, false).unwrap();
        assert_eq!(r.resync_work(), Some(0));
        r.resume();
        assert_eq!(r.resync_work(), Some(0));
    }

    /// Regions in sync exactly where `sync(i)` says.
    fn with_sync(n: u64, sync: impl Fn(u64) -> bool) -> Regions {
        let mut r = Regions::try_new(n, false).unwrap();
        for i in (0..n).filter(|&i| sync(i)) {
            r.set_sync(i, true).unwrap();
        }
        r
    }

    /// Every run from `from` on, asked as the kernel asks: again from each answer's `next`
    /// until the end, `slots` runs at a time.
    fn runs_from(r: &Regions, mut from: u64, slots: usize) -> Vec<(u64, u64)> {
        let mut all = Vec::new();
        let mut runs = vec![(0, 0); slots];
        while from < r.count() {
            let (next, n) = r.in_sync_runs(from, &mut runs).unwrap();
            assert!(next > from, "next {next} does not advance past {from}");
            assert!(n == slots || next == r.count(), "stopped early at {next}");
            for &(first, count) in &runs[..n] {
                assert!(first >= from && first + count <= next && count > 0);
            }
            all.extend_from_slice(&runs[..n]);
            from = next;
        }
        assert_eq!(from, r.count());
        all
    }

    #[test]
    fn in_sync_runs_of_empty_full_and_holed_logs() {
        let mut runs = [(0, 0); MAX_RANGES];
        let none = with_sync(100, |_| false);
        assert_eq!(none.in_sync_runs(0, &mut runs), Ok((100, 0)));
        assert_eq!(none.in_sync_runs(99, &mut runs), Ok((100, 0)));
        let all = with_sync(100, |_| true);
        assert_eq!(all.in_sync_runs(0, &mut runs), Ok((100, 1)));
        assert_eq!(runs[0], (0, 100));
        // From the middle of a run: the run from there.
        assert_eq!(all.in_sync_runs(37, &mut runs), Ok((100, 1)));
        assert_eq!(runs[0], (37, 63));
        let holes = with_sync(100, |i| !(10..20).contains(&i) && i != 50 && i < 98);
        assert_eq!(holes.in_sync_runs(0, &mut runs), Ok((100, 3)));
        assert_eq!(runs[..3], [(0, 10), (20, 30), (51, 47)]);
        assert_eq!(holes.in_sync_runs(15, &mut runs), Ok((100, 2)));
        assert_eq!(runs[..2], [(20, 30), (51, 47)]);
        assert_eq!(holes.in_sync_runs(100, &mut runs), Err(OutOfRange(100)));
    }

    #[test]
    fn in_sync_runs_of_the_last_region() {
        let mut runs = [(0, 0); MAX_RANGES];
        let last = with_sync(130, |i| i == 129);
        assert_eq!(last.in_sync_runs(0, &mut runs), Ok((130, 1)));
        assert_eq!(runs[0], (129, 1));
        assert_eq!(last.in_sync_runs(129, &mut runs), Ok((130, 1)));
        assert_eq!(runs[0], (129, 1));
        assert_eq!(last.in_sync_runs(130, &mut runs), Err(OutOfRange(130)));
        // Exactly MAX_RANGES runs, the last ending at the log's end: nothing left to ask.
        let n = 2 * MAX_RANGES as u64;
        let odd = with_sync(n, |i| i % 2 == 1);
        assert_eq!(odd.in_sync_runs(0, &mut runs), Ok((n, MAX_RANGES)));
        assert_eq!(runs[MAX_RANGES - 1], (n - 1, 1));
    }

    #[test]
    fn more_runs_than_a_reply_holds_continue_from_next() {
        // 100 runs of one region (every even one): 31 per reply, each exactly once.
        let r = with_sync(200, |i| i % 2 == 0);
        let mut runs = [(0, 0); MAX_RANGES];
        assert_eq!(r.in_sync_runs(0, &mut runs), Ok((61, MAX_RANGES)));
        assert_eq!(runs[MAX_RANGES - 1], (60, 1));
        assert_eq!(r.in_sync_runs(61, &mut runs), Ok((123, MAX_RANGES)));
        assert_eq!(runs[0], (62, 1));
        let all = runs_from(&r, 0, MAX_RANGES);
        assert_eq!(all, (0..100).map(|k| (2 * k, 1)).collect::<Vec<_>>());
        // Runs longer than one region, crossing words, one slot at a time.
        let r = with_sync(1000, |i| i % 100 < 70);
        let all = runs_from(&r, 0, 1);
        assert_eq!(all, (0..10).map(|k| (100 * k, 70)).collect::<Vec<_>>());
    }

    #[test]
    fn regions_leaving_sync_are_noted_once() {
        let mut r = Regions::try_new(300, true).unwrap();
        assert_eq!(r.take_left_sync(), None);
        r.set_sync(7, false).unwrap();
        assert_eq!(r.take_left_sync(), Some((7, 1)));
        assert_eq!(r.take_left_sync(), None);
        // Already out of sync, or going in sync: nothing left sync.
        r.set_sync(7, false).unwrap();
        r.set_sync(7, true).unwrap();
        assert_eq!(r.take_left_sync(), None);
        // Two before a look: the span holding both.
        r.set_sync(200, false).unwrap();
        r.set_sync(9, false).unwrap();
        assert_eq!(r.take_left_sync(), Some((9, 192)));
        // A reload that clears a bit: the whole log; one that only sets bits: nothing.
        r.load_clean_bits(&[0xff; 38]);
        assert_eq!(r.take_left_sync(), None);
        r.load_clean_bits(&[0xfe]);
        assert_eq!(r.take_left_sync(), Some((0, u64::MAX)));
    }

    /// One operation of the random sequences.
    #[derive(Clone, Debug)]
    enum Op {
        Mark(u64),
        Clear(u64),
        Work,
        SetSync(u64, bool),
        Resume,
    }

    fn op(n: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..n).prop_map(Op::Mark),
            (0..n).prop_map(Op::Clear),
            Just(Op::Work),
            ((0..n), any::<bool>()).prop_map(|(r, s)| Op::SetSync(r, s)),
            Just(Op::Resume),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_seed::config(256))]
        /// Asked as the kernel asks, from any region and with any room per reply, the runs
        /// are exactly the model's maximal runs from there, each once.
        #[test]
        fn in_sync_runs_match_a_model(sync in prop::collection::vec(any::<bool>(), 1..300),
                                      from in 0usize..300, slots in 1usize..5) {
            let n = sync.len() as u64;
            let from = (from % sync.len()) as u64;
            let r = with_sync(n, |i| sync[i as usize]);
            let mut want = Vec::new();
            let mut i = from;
            while i < n {
                if sync[i as usize] {
                    let end = (i..n).find(|&j| !sync[j as usize]).unwrap_or(n);
                    want.push((i, end - i));
                    i = end;
                } else {
                    i += 1;
                }
            }
            prop_assert_eq!(runs_from(&r, from, slots), want);
        }

        /// Against a plain model: sync count, clean and in-sync answers always agree, work is
        /// only ever offered for regions out of sync, a region offered and not reported is
        /// offered again (the kernel's answer was lost) and no other is, and exactly the
        /// regions that leave sync are noted for a withdrawal.
        #[test]
        fn matches_a_simple_model(start_in_sync in any::<bool>(), ops in prop::collection::vec(op(16), 0..200)) {
            let n = 16u64;
            let mut r = Regions::try_new(n, start_in_sync).unwrap();
            let mut sync = [start_in_sync; 16];
            let mut dirty = [false; 16];
            let mut offered = [false; 16];
            for o in ops {
                match o {
                    Op::Mark(x) => { r.mark(x).unwrap(); dirty[x as usize] = true; }
                    Op::Clear(x) => { r.clear(x).unwrap(); dirty[x as usize] = false; }
                    Op::Work => {
                        let unreported = (0..16).find(|&i| offered[i]);
                        if let Some(x) = r.resync_work() {
                            prop_assert!(!sync[x as usize], "offered region {} that is in sync", x);
                            if let Some(u) = unreported {
                                prop_assert_eq!(x as usize, u, "offered another region while one is unreported");
                            }
                            offered[x as usize] = true;
                        } else {
                            prop_assert!(unreported.is_none(), "an unreported region was not offered again");
                            prop_assert!((0..16).all(|i| sync[i] || offered[i]), "no work offered though some is left");
                        }
                    }
                    Op::SetSync(x, s) => {
                        let left = sync[x as usize] && !s;
                        r.set_sync(x, s).unwrap();
                        sync[x as usize] = s;
                        offered[x as usize] = false;
                        prop_assert_eq!(r.take_left_sync(), left.then_some((x, 1)));
                    }
                    Op::Resume => { r.resume(); offered.fill(false); }
                }
                prop_assert_eq!(r.take_left_sync(), None, "only SET_REGION_SYNC leaves sync");
                prop_assert_eq!(r.sync_count(), sync.iter().filter(|s| **s).count() as u64);
                prop_assert_eq!(r.dirty_count(), dirty.iter().filter(|d| **d).count() as u64);
                for i in 0..n {
                    prop_assert_eq!(r.in_sync(i).unwrap(), sync[i as usize]);
                    prop_assert_eq!(r.is_clean(i).unwrap(), sync[i as usize] && !dirty[i as usize]);
                }
            }
        }
    }
}
