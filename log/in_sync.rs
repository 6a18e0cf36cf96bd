// SPDX-License-Identifier: GPL-2.0

//! IN_SYNC answers kept for the mirror's second question about the same region.
//!
//! For a write to a region its region hash does not hold, dm-raid1 asks IN_SYNC twice in one
//! pass of its worker: to classify the write (`dm_rh_get_state`), then again when it adds the
//! region to the hash (`__rh_alloc`), and it flushes the log right after. The second question
//! is answered from the first. An answer is used at most once, within [`MAX_AGE`] of the
//! first one kept, and all are forgotten at every flush, set_region_sync, resume and
//! reconnect: none outlives the worker pass that asked (a pass of reads only ends with no
//! flush; the age bound ends its answers), so the mirror decides on the answer the server
//! gave within that pass, as it would have. (In a cluster another node may change a region's
//! state on the server at any time; upstream's two questions are as far apart.)
//!
//! A withdrawal from the server (`uapi/in_sync_map.rs`) voids kept answers. cmirrord sends
//! none, so for `clustered-*` logs nothing is kept: another node may change a region's state
//! between the two questions, and only the server would know.
//!
//! On by default for other logs; the module parameter `reuse_in_sync=0` turns it off for new
//! tables (the request stream is then upstream's).

use kernel::{
    new_spinlock,
    prelude::*,
    sync::SpinLock,
    time::{Delta, Instant, Monotonic},
};

/// Answers kept at most: one per write a worker pass classifies; more are asked again.
const KEPT: usize = 16;
/// How long kept answers may be used, from the first of them: longer than a worker pass.
const MAX_AGE: Delta = Delta::from_millis(20);

/// A region and the server's answer to IN_SYNC about it.
#[derive(Clone, Copy)]
struct Answer {
    region: u64,
    in_sync: bool,
}

/// The answers one log keeps.
#[pin_data]
pub(super) struct InSyncAnswers {
    /// Off: nothing is kept.
    enabled: bool,
    #[pin]
    kept: SpinLock<Kept>,
}

struct Kept {
    answers: [Answer; KEPT],
    len: usize,
    /// When the first of the kept answers came.
    since: Option<Instant<Monotonic>>,
    /// The server's withdrawals (`uapi/in_sync_map.rs`) when they came: a later one voids them.
    withdrawals: u64,
}

impl InSyncAnswers {
    pub(super) fn new(enabled: bool) -> impl PinInit<Self> {
        pin_init!(Self {
            enabled,
            kept <- new_spinlock!(
                Kept {
                    answers: [Answer { region: 0, in_sync: false }; KEPT],
                    len: 0,
                    since: None,
                    withdrawals: 0,
                },
                "InSyncAnswers::kept"
            ),
        })
    }

    /// The kept answer about `region`, which is forgotten with this; `withdrawals` is the
    /// count of the server's withdrawals now.
    pub(super) fn take(&self, region: u64, withdrawals: u64) -> Option<bool> {
        if !self.enabled {
            return None;
        }
        let mut kept = self.kept.lock();
        if kept.withdrawals != withdrawals || kept.since.is_some_and(|t| t.elapsed() > MAX_AGE) {
            kept.len = 0;
            kept.since = None;
        }
        let len = kept.len;
        let at = kept.answers[..len]
            .iter()
            .position(|a| a.region == region)?;
        let answer = kept.answers[at];
        kept.answers[at] = kept.answers[len - 1];
        kept.len = len - 1;
        Some(answer.in_sync)
    }

    /// Keeps the server's answer about `region`, asked when the server had sent `withdrawals`
    /// withdrawals, for the next question; dropped when [`KEPT`] answers are kept already.
    pub(super) fn keep(&self, region: u64, in_sync: bool, withdrawals: u64) {
        if !self.enabled {
            return;
        }
        let mut kept = self.kept.lock();
        if kept.withdrawals != withdrawals {
            kept.len = 0;
            kept.withdrawals = withdrawals;
        }
        let len = kept.len;
        if len == 0 {
            kept.since = Some(Instant::now());
        }
        if len < KEPT {
            kept.answers[len] = Answer { region, in_sync };
            kept.len = len + 1;
        }
    }

    /// Forgets every kept answer.
    pub(super) fn forget(&self) {
        if self.enabled {
            let mut kept = self.kept.lock();
            kept.len = 0;
            kept.since = None;
        }
    }
}
