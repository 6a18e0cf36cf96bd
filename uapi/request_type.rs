// SPDX-License-Identifier: GPL-2.0

//! The log operations a request can name (`request_type` of `dm_ulog_request`).

use core::fmt;

/// Bits of `request_type` that carry the type; the rest is reserved for servers.
pub const REQUEST_TYPE_MASK: u32 = 0xff;

/// A log operation, the `request_type` of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum RequestType {
    /// Create a log: payload `"<target sectors> <args>"`; reply: optional device name.
    Ctr = 1,
    /// Destroy a log.
    Dtr = 2,
    /// The mirror is about to suspend.
    Presuspend = 3,
    /// The mirror has suspended.
    Postsuspend = 4,
    /// The mirror resumes.
    Resume = 5,
    /// Reply: `u64` region size in sectors.
    GetRegionSize = 6,
    /// Payload: `u64` region; reply: `i64` 1 if clean.
    IsClean = 7,
    /// Payload: `u64` region; reply: `i64` 1 if in sync.
    InSync = 8,
    /// Make marks and clears durable; v3: may carry `u64` marks.
    Flush = 9,
    /// Payload: `u64` regions to mark dirty.
    MarkRegion = 10,
    /// Payload: `u64` regions to mark clean.
    ClearRegion = 11,
    /// Reply: `{ i64 i; u64 r; }`, recover region `r` if `i` is 1.
    GetResyncWork = 12,
    /// Payload: `{ u64 region; i64 in_sync; }`.
    SetRegionSync = 13,
    /// Reply: `u64` count of regions in sync.
    GetSyncCount = 14,
    /// Reply: the log's status INFO text.
    StatusInfo = 15,
    /// Reply: the log's status TABLE text (the kernel builds it itself).
    StatusTable = 16,
    /// Payload: `u64` region; reply: `{ i64 is_recovering; u64 in_sync_hint; }`.
    IsRemoteRecovering = 17,
    /// This project's extension (`uapi/in_sync_map.rs`), sent only to a server that announced
    /// it: payload `u64` region `from`; reply: `InSyncRanges`. Numbered far above upstream's
    /// types so that a later upstream type cannot collide with it.
    GetInSyncRanges = 64,
}

impl RequestType {
    /// Every request type, in wire order.
    pub const ALL: [RequestType; 18] = [
        Self::Ctr,
        Self::Dtr,
        Self::Presuspend,
        Self::Postsuspend,
        Self::Resume,
        Self::GetRegionSize,
        Self::IsClean,
        Self::InSync,
        Self::Flush,
        Self::MarkRegion,
        Self::ClearRegion,
        Self::GetResyncWork,
        Self::SetRegionSync,
        Self::GetSyncCount,
        Self::StatusInfo,
        Self::StatusTable,
        Self::IsRemoteRecovering,
        Self::GetInSyncRanges,
    ];

    /// The upstream name without its `DM_ULOG_` prefix.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ctr => "CTR",
            Self::Dtr => "DTR",
            Self::Presuspend => "PRESUSPEND",
            Self::Postsuspend => "POSTSUSPEND",
            Self::Resume => "RESUME",
            Self::GetRegionSize => "GET_REGION_SIZE",
            Self::IsClean => "IS_CLEAN",
            Self::InSync => "IN_SYNC",
            Self::Flush => "FLUSH",
            Self::MarkRegion => "MARK_REGION",
            Self::ClearRegion => "CLEAR_REGION",
            Self::GetResyncWork => "GET_RESYNC_WORK",
            Self::SetRegionSync => "SET_REGION_SYNC",
            Self::GetSyncCount => "GET_SYNC_COUNT",
            Self::StatusInfo => "STATUS_INFO",
            Self::StatusTable => "STATUS_TABLE",
            Self::IsRemoteRecovering => "IS_REMOTE_RECOVERING",
            Self::GetInSyncRanges => "GET_IN_SYNC_RANGES",
        }
    }

    /// Index of this type in [`RequestType::ALL`], for per-type counters.
    pub const fn index(self) -> usize {
        match self {
            Self::GetInSyncRanges => 17,
            _ => self as usize - 1,
        }
    }
}

impl TryFrom<u32> for RequestType {
    type Error = UnknownRequestType;

    /// Decodes a `request_type`, ignoring the reserved high bits as upstream does.
    fn try_from(raw: u32) -> Result<Self, UnknownRequestType> {
        let masked = raw & REQUEST_TYPE_MASK;
        match masked {
            64 => Ok(Self::GetInSyncRanges),
            _ => Self::ALL[..17]
                .get((masked as usize).wrapping_sub(1))
                .copied()
                .ok_or(UnknownRequestType(raw)),
        }
    }
}

/// A `request_type` outside 1..=17 and 64 (after masking the reserved bits); holds the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownRequestType(pub u32);

impl fmt::Display for UnknownRequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown request type {}", self.0)
    }
}

impl core::error::Error for UnknownRequestType {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_types_round_trip_and_mask_reserved_bits() {
        for (i, t) in RequestType::ALL.iter().enumerate() {
            if *t != RequestType::GetInSyncRanges {
                assert_eq!(*t as u32, i as u32 + 1);
            }
            assert_eq!(t.index(), i);
            assert_eq!(RequestType::try_from(*t as u32), Ok(*t));
            assert_eq!(RequestType::try_from(0x1000 | *t as u32), Ok(*t));
        }
        assert_eq!(RequestType::try_from(0), Err(UnknownRequestType(0)));
        assert_eq!(RequestType::try_from(18), Err(UnknownRequestType(18)));
        assert_eq!(RequestType::try_from(21), Err(UnknownRequestType(21)));
        assert_eq!(RequestType::try_from(63), Err(UnknownRequestType(63)));
        assert_eq!(RequestType::try_from(64), Ok(RequestType::GetInSyncRanges));
    }
}
