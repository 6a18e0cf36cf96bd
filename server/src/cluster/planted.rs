// SPDX-License-Identifier: GPL-2.0
//! Defects the cluster's checker (`tests/cluster.rs`) must catch, each one a bug this code
//! once had: its tests plant them one at a time and fail unless the checker finds each.
//! Only a build with the cargo feature `planted` can plant one; dm-ulogd's build compiles
//! every check below to `false`.

/// A defect to plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// A member whose dm-ulogd died on a live node is taken for a dead node: its marks go
    /// and its regions are recovered while its kernel still writes them.
    ProcessDeathIsNodeDeath,
    /// A success report counts from a node that no longer holds the region's claim.
    SuccessFromAnyNode,
    /// A node's MARK of a region another node is copying does not spoil that copy.
    MarkDuringCopyCounts,
    /// A rejoining node's marks come back without taking their regions out of sync.
    RejoinedMarksStayInSync,
    /// A failed write of the disk log counts as written: the FLUSHes after it are answered
    /// although the device holds an older bitmap.
    FailedWriteCountsAsWritten,
    /// A disk write is asked for once per generation, ever: after a failed write, or in a
    /// later view, nobody writes and the FLUSHes wait.
    WriteAskedOnceEver,
    /// A CPG batch read before its quorum notices: a notice for a ring older than the one
    /// CPG reported last, read after that report, counts for the view. A node that reads
    /// `[ring 17, ring 25, Hellos, quorum(17) lost, quorum(25)]` leaves the healed view and
    /// waits for Hellos already spent. Only the batches show it (`cpg_views`).
    OlderRingsNoticeCounts,
}

impl Bug {
    /// Every planted defect.
    pub const ALL: [Bug; 7] = [
        Bug::ProcessDeathIsNodeDeath,
        Bug::SuccessFromAnyNode,
        Bug::MarkDuringCopyCounts,
        Bug::RejoinedMarksStayInSync,
        Bug::FailedWriteCountsAsWritten,
        Bug::WriteAskedOnceEver,
        Bug::OlderRingsNoticeCounts,
    ];
}

#[cfg(feature = "planted")]
thread_local! {
    static PLANTED: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// Plants `bug` (or none) for this thread's members.
#[cfg(feature = "planted")]
pub fn plant(bug: Option<Bug>) {
    PLANTED.with(|p| p.set(bug));
}

/// Whether `bug` is planted on this thread.
pub(crate) fn planted(bug: Bug) -> bool {
    #[cfg(feature = "planted")]
    {
        PLANTED.with(|p| p.get() == Some(bug))
    }
    #[cfg(not(feature = "planted"))]
    {
        let _ = bug;
        false
    }
}
