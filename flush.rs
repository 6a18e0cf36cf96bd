// SPDX-License-Identifier: GPL-2.0

//! Marks and clears recorded between two flushes, and marks kept until a FLUSH makes them
//! durable.
//!
//! `mark_region` is called under dm-region-hash's rwlock, so recording must not sleep: the
//! lists are preallocated and grow only with `GFP_NOWAIT`. A mark that cannot be recorded is
//! never dropped silently: the next flush fails, so the mirror sees a log failure before the
//! write it guards is issued.
//!
//! A mark the server answered is not yet on its device: a server that dies before the next
//! FLUSH loses it. So a mark stays in the list, counted as sent, until a FLUSH sent after it
//! is answered; a log re-created on a new server sends the sent ones again.

use kernel::{new_spinlock, prelude::*, sync::SpinLock};

/// Entries each list holds without allocating.
const RESERVED: usize = 256;

/// The lock-protected lists.
struct Pending {
    /// Marks not yet made durable; the first `sent` of them have been sent.
    marks: KVec<u64>,
    sent: usize,
    clears: KVec<u64>,
    /// A mark was lost to an allocation failure since the last flush.
    lost_mark: bool,
}

/// Regions waiting to be sent at the next flush.
#[pin_data]
pub(crate) struct FlushBatch {
    #[pin]
    pending: SpinLock<Pending>,
}

/// Appends without sleeping: within the reserve, else a `GFP_NOWAIT` growth.
fn push_atomic(list: &mut KVec<u64>, region: u64) -> bool {
    match list.push_within_capacity(region) {
        Ok(()) => true,
        Err(_) => list.push(region, GFP_NOWAIT).is_ok(),
    }
}

/// Copies `list[from..end]`, at most `out.len()` entries of it, into `out`.
fn copy_from(list: &[u64], from: usize, end: usize, out: &mut [u64]) -> usize {
    let n = end.saturating_sub(from).min(out.len());
    if n > 0 {
        out[..n].copy_from_slice(&list[from..from + n]);
    }
    n
}

/// Moves up to `out.len()` entries from the end of `list` into `out`.
fn take_into(list: &mut KVec<u64>, out: &mut [u64]) -> usize {
    let n = list.len().min(out.len());
    let start = list.len() - n;
    out[..n].copy_from_slice(&list[start..]);
    list.truncate(start);
    n
}

impl FlushBatch {
    /// Empty lists with their reserve allocated.
    pub(crate) fn new() -> Result<Pin<KBox<Self>>> {
        let pending = Pending {
            marks: KVec::with_capacity(RESERVED, GFP_KERNEL)?,
            sent: 0,
            clears: KVec::with_capacity(RESERVED, GFP_KERNEL)?,
            lost_mark: false,
        };
        KBox::pin_init(
            pin_init!(Self { pending <- new_spinlock!(pending, "FlushBatch::pending") }),
            GFP_KERNEL,
        )
    }

    /// Records a mark. Never sleeps.
    ///
    /// A mark waiting to be sent already covers the region; one sent earlier does not (a
    /// clear may have followed it), so the region is recorded again.
    pub(crate) fn mark(&self, region: u64) {
        let mut p = self.pending.lock();
        let sent = p.sent;
        if p.marks[sent..].contains(&region) {
            return;
        }
        if !push_atomic(&mut p.marks, region) {
            p.lost_mark = true;
        }
    }

    /// Records a clear; returns false if it had to be dropped. Never sleeps.
    pub(crate) fn clear(&self, region: u64) -> bool {
        push_atomic(&mut self.pending.lock().clears, region)
    }

    /// Takes up to `out.len()` pending clears.
    pub(crate) fn take_clears(&self, out: &mut [u64]) -> usize {
        take_into(&mut self.pending.lock().clears, out)
    }

    /// Copies up to `out.len()` marks not sent yet into `out`; they count as sent from now.
    pub(crate) fn take_marks(&self, out: &mut [u64]) -> usize {
        let mut p = self.pending.lock();
        let start = p.sent;
        let n = copy_from(&p.marks, start, p.marks.len(), out);
        p.sent += n;
        n
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

    /// Whether a mark was lost since the last call; resets the flag.
    pub(crate) fn take_lost_mark(&self) -> bool {
        core::mem::take(&mut self.pending.lock().lost_mark)
    }
}
