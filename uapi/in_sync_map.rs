// SPDX-License-Identifier: GPL-2.0

//! This project's extension: the kernel answers IN_SYNC itself for regions the server said
//! are in sync, until the server withdraws them.
//!
//! dm-raid1 asks IN_SYNC before every write to a region its region hash does not hold, and a
//! mirror is in sync almost always: the question is asked again and again of a server that
//! answers "yes". With this extension the kernel keeps one bit per region:
//!
//! - **Announced.** Only a server whose announcement carries
//!   [`FEATURE_IN_SYNC_MAP`](super::announce::FEATURE_IN_SYNC_MAP) takes part. The kernel
//!   uses the map only while that server instance is there, after a hand-over from it (a
//!   server that did not announce it, or did not answer the hand-over, gets upstream's
//!   requests).
//! - **Handed over.** After RESUME, the kernel asks [`RequestType::GetInSyncRanges`] from
//!   region 0 on: the payload is a `u64` region `from`, the reply an [`InSyncRanges`]: the
//!   region up to which the reply speaks (`next`) and up to [`MAX_RANGES`] runs of in-sync
//!   regions in `[from, next)`. The kernel asks again from `next` until `next` reaches the
//!   log's region count. Regions outside every run are not in sync, or not known to be.
//! - **Learned.** An IN_SYNC answered "in sync" sets the region's bit.
//! - **Withdrawn.** Before a server answers any request, or acts on any event, that makes a
//!   region of such a log go out of sync (a failed write's `SET_REGION_SYNC` of 0, another
//!   cluster node's failure), it sends the kernel a [`Withdrawal`] and waits until its
//!   `sendmsg` returns. The connector runs the kernel's receive callback inside that
//!   `sendmsg`, so when it returns, the kernel has forgotten the region: that return is the
//!   acknowledgement. The kernel may forget more than it is told (the Rust module forgets
//!   every log's map at any withdrawal: withdrawals are rare and a map is learned again).
//!
//! A bit set from an answer or a hand-over only counts if no withdrawal arrived between the
//! request and its reply, so a withdrawal racing with a request cannot be undone by it. The
//! kernel also forgets a log's map at resume, at re-creation on a new server, and clears a
//! region's bit before it sends `SET_REGION_SYNC` of 0 itself.
//!
//! A withdrawal is a `cn_msg` to `CN_IDX_DM:`
//! [`CN_VAL_DM_USERSPACE_LOG_ANNOUNCE`](super::announce::CN_VAL_DM_USERSPACE_LOG_ANNOUNCE)
//! (seq 0, ack 0, len 32) followed by `{ u32 magic "ULGW"; u32 version 1; u64 luid;
//! u64 first; u64 count; }`, host-endian; `count` `u64::MAX` means every region from `first` on. Upstream's
//! module registers nothing on that id, so a server may send withdrawals to it unseen.

#[cfg(not(MODULE))]
use super::{announce::encode_notice, message::CN_MSG_SIZE};
use super::{announce::parse_notice, error::WireError, request_type::RequestType};

/// Most runs one [`InSyncRanges`] reply carries: it fits a 512-byte reply buffer.
pub const MAX_RANGES: usize = 31;
/// Bytes of an [`InSyncRanges`] reply with `n` runs.
pub const fn ranges_reply_size(n: usize) -> usize {
    8 + 16 * n
}
/// The largest [`InSyncRanges`] reply.
pub const MAX_RANGES_REPLY: usize = ranges_reply_size(MAX_RANGES);

/// Marks a withdrawal (the bytes `"ULGW"` on a little-endian host).
pub const WITHDRAWAL_MAGIC: u32 = u32::from_le_bytes(*b"ULGW");
/// Bytes of [`Withdrawal`] on the wire.
pub const WITHDRAWAL_SIZE: usize = 32;
/// Bytes of a whole withdrawal message after the netlink header.
#[cfg(not(MODULE))]
pub const WITHDRAWAL_MESSAGE_SIZE: usize = CN_MSG_SIZE + WITHDRAWAL_SIZE;

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

/// A reply to GET_IN_SYNC_RANGES: `{ u64 next; { u64 first; u64 count; } runs[]; }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InSyncRanges<'a> {
    /// The reply covers the regions below this; the kernel asks on from here.
    pub next: u64,
    /// The runs, 16 bytes each.
    runs: &'a [u8],
}

impl<'a> InSyncRanges<'a> {
    /// Parses a reply to a request that asked from `from`: `next` must lie beyond it, and
    /// every run inside `[from, next)`.
    pub fn decode(from: u64, data: &'a [u8]) -> Result<Self, WireError> {
        let bad = WireError::BadPayload {
            request: RequestType::GetInSyncRanges,
            len: data.len(),
        };
        // `next`, then whole runs (`% 16 != 8`: `is_multiple_of` is newer than the oldest
        // Rust the kernel builds with).
        if data.len() < 8 || data.len() > MAX_RANGES_REPLY || data.len() % 16 != 8 {
            return Err(bad);
        }
        let reply = Self {
            next: read_u64(data, 0),
            runs: &data[8..],
        };
        let inside = |(first, count): (u64, u64)| {
            first >= from
                && first
                    .checked_add(count)
                    .is_some_and(|end| end <= reply.next)
        };
        if reply.next <= from || !reply.runs().all(inside) {
            return Err(bad);
        }
        Ok(reply)
    }

    /// The runs of in-sync regions: `(first, count)`.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.runs
            .chunks_exact(16)
            .map(|r| (read_u64(r, 0), read_u64(r, 8)))
    }

    /// Writes a reply into `out`: `next`, then `runs` (at most [`MAX_RANGES`]); returns its
    /// length.
    #[cfg(not(MODULE))]
    pub fn encode(next: u64, runs: &[(u64, u64)], out: &mut [u8]) -> Result<usize, WireError> {
        let len = ranges_reply_size(runs.len());
        if runs.len() > MAX_RANGES || out.len() < len {
            return Err(WireError::PayloadTooLarge {
                len,
                max: out.len().min(MAX_RANGES_REPLY),
            });
        }
        out[..8].copy_from_slice(&next.to_ne_bytes());
        for (i, (first, count)) in runs.iter().enumerate() {
            let at = 8 + 16 * i;
            out[at..at + 8].copy_from_slice(&first.to_ne_bytes());
            out[at + 8..at + 16].copy_from_slice(&count.to_ne_bytes());
        }
        Ok(len)
    }
}

/// A server takes regions of one log out of the kernel's map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    /// The log instance (the `luid` of its requests).
    pub luid: u64,
    /// The first region withdrawn.
    pub first: u64,
    /// How many; `u64::MAX`: every region from `first` on.
    pub count: u64,
}

impl Withdrawal {
    /// Writes the whole message (`cn_msg` and payload) into `buf`; returns its length.
    // Servers withdraw; the kernel only reads withdrawals.
    #[cfg(not(MODULE))]
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let body = encode_notice(buf, WITHDRAWAL_MAGIC, WITHDRAWAL_SIZE)?;
        body[4..8].copy_from_slice(&1u32.to_ne_bytes());
        body[8..16].copy_from_slice(&self.luid.to_ne_bytes());
        body[16..24].copy_from_slice(&self.first.to_ne_bytes());
        body[24..32].copy_from_slice(&self.count.to_ne_bytes());
        Ok(WITHDRAWAL_MESSAGE_SIZE)
    }

    /// Reads a withdrawal message (`cn_msg` and payload); anything else is an error.
    pub fn parse(msg: &[u8]) -> Result<Self, WireError> {
        let body = parse_notice(msg, WITHDRAWAL_MAGIC, WITHDRAWAL_SIZE)?;
        Ok(Self {
            luid: read_u64(body, 8),
            first: read_u64(body, 16),
            count: read_u64(body, 24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::Announce;

    #[test]
    fn ranges_round_trip_and_bounds() {
        let mut buf = [0u8; 600];
        let n = InSyncRanges::encode(100, &[(10, 5), (20, 80)], &mut buf).unwrap();
        assert_eq!(n, 40);
        let r = InSyncRanges::decode(10, &buf[..n]).unwrap();
        assert_eq!(r.next, 100);
        assert_eq!(r.runs().collect::<std::vec::Vec<_>>(), [(10, 5), (20, 80)]);
        // A run before `from`, or past `next`, or a `next` that does not advance: refused.
        assert!(InSyncRanges::decode(11, &buf[..n]).is_err());
        let n = InSyncRanges::encode(99, &[(10, 5), (20, 80)], &mut buf).unwrap();
        assert!(InSyncRanges::decode(10, &buf[..n]).is_err());
        let n = InSyncRanges::encode(10, &[], &mut buf).unwrap();
        assert!(InSyncRanges::decode(10, &buf[..n]).is_err());
        let n = InSyncRanges::encode(7, &[(3, u64::MAX)], &mut buf).unwrap();
        assert!(InSyncRanges::decode(0, &buf[..n]).is_err());
        // Sizes: whole runs only, at most MAX_RANGES of them.
        assert!(InSyncRanges::decode(0, &buf[..12]).is_err());
        assert!(InSyncRanges::encode(1, &[(0, 1); MAX_RANGES + 1], &mut buf).is_err());
        let n = InSyncRanges::encode(1, &[(0, 1); MAX_RANGES], &mut buf).unwrap();
        assert_eq!(n, MAX_RANGES_REPLY);
        const { assert!(MAX_RANGES_REPLY <= 512) };
        assert!(InSyncRanges::decode(0, &buf[..n]).is_ok());
    }

    #[test]
    fn withdrawal_layout_and_not_an_announcement() {
        let mut buf = [0u8; 64];
        let w = Withdrawal {
            luid: 0x1122_3344_5566_7788,
            first: 5,
            count: u64::MAX,
        };
        assert_eq!(w.encode(&mut buf), Ok(52));
        assert_eq!(&buf[0..8], &[7, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&buf[16..18], &32u16.to_ne_bytes());
        assert_eq!(&buf[20..24], b"ULGW");
        assert_eq!(&buf[28..36], &w.luid.to_ne_bytes());
        assert_eq!(Withdrawal::parse(&buf[..52]), Ok(w));
        assert!(matches!(
            Announce::parse(&buf[..52]),
            Err(WireError::BadMagic(_))
        ));
        let mut short = buf;
        short[16] = 16;
        assert!(Withdrawal::parse(&short[..36]).is_err());
        let mut a = [0u8; 36];
        Announce {
            version: 2,
            pid: 1,
            features: crate::FEATURE_IN_SYNC_MAP,
        }
        .encode(&mut a)
        .unwrap();
        assert!(Withdrawal::parse(&a).is_err());
    }
}
