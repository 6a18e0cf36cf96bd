// SPDX-License-Identifier: GPL-2.0

//! This project's extension: a FLUSH may carry clears as well as marks, so that the clears
//! the kernel held back (`log/flush.rs`) cost no request of their own.
//!
//! Upstream's FLUSH (protocol v3, `integrated_flush`) carries the marks it makes durable, as
//! `u64` regions. A server that announces
//! [`FEATURE_CLEARS_IN_FLUSH`](super::announce::FEATURE_CLEARS_IN_FLUSH)
//! also takes clears there: an entry with [`CLEAR_ENTRY`] set is a clear of the region in
//! the other 63 bits. The server applies the entries in order, then makes everything
//! durable, as CLEAR_REGION requests followed by the FLUSH would. The kernel puts the clears
//! first: a region both cleared and marked in one FLUSH (a mark left from a failed flush,
//! then its write's clear) ends marked, the safe side. A region number never reaches bit 63,
//! so a server without the extension refuses such an entry as out of range instead of
//! misreading it; the kernel sends them only to a server that announced the feature.

/// Set in a FLUSH entry that is a clear.
pub const CLEAR_ENTRY: u64 = 1 << 63;

/// One entry of a FLUSH payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    MODULE,
    expect(
        dead_code,
        reason = "the kernel writes clears only; its marks are plain regions"
    )
)]
pub enum FlushEntry {
    /// Mark the region dirty (upstream's entry).
    Mark(u64),
    /// Mark the region clean (this extension).
    Clear(u64),
}

impl FlushEntry {
    /// The entry's wire value.
    pub fn encode(self) -> u64 {
        match self {
            Self::Mark(r) => r,
            Self::Clear(r) => r | CLEAR_ENTRY,
        }
    }

    /// Reads an entry; with `clears` false (the feature not announced), every entry is a mark.
    // Servers read FLUSH payloads; the kernel only writes them.
    #[cfg(not(MODULE))]
    pub fn decode(raw: u64, clears: bool) -> Self {
        if clears && raw & CLEAR_ENTRY != 0 {
            Self::Clear(raw & !CLEAR_ENTRY)
        } else {
            Self::Mark(raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_plain_marks_stay_marks() {
        for e in [
            FlushEntry::Mark(0),
            FlushEntry::Mark(7),
            FlushEntry::Clear(0),
            FlushEntry::Clear(7),
        ] {
            assert_eq!(FlushEntry::decode(e.encode(), true), e);
        }
        assert_eq!(FlushEntry::Clear(5).encode(), 0x8000_0000_0000_0005);
        // A server without the feature reads the entry as a (huge, refused) mark.
        assert_eq!(
            FlushEntry::decode(FlushEntry::Clear(5).encode(), false),
            FlushEntry::Mark(0x8000_0000_0000_0005)
        );
    }
}
