// SPDX-License-Identifier: GPL-2.0

//! This project's extension: a server announces itself to the kernel when it starts.
//!
//! Upstream's protocol has no way for a (re)started server to say it is there: the kernel
//! finds out only when a request it resends after 15 s, or a CTR it retries every 2 s, is
//! answered. An announcement lets the kernel act at once: requests waiting for the old server
//! are resent immediately, the new server answers them with `-ESRCH` (it does not know the
//! log), and each log re-creates itself there (CTR, then RESUME) without the 2 s pause.
//!
//! Compatible both ways:
//! - the announcement goes to its own connector id, `CN_IDX_DM:`[`CN_VAL_DM_USERSPACE_LOG_ANNOUNCE`],
//!   on which upstream's C module registers nothing, so the connector drops it unseen;
//! - the Rust module works without announcements (cmirrord sends none): it then resends after
//!   15 s and retries every 2 s, as upstream does.
//!
//! The message is a `cn_msg` (seq 0, ack 0, len 16) followed by [`Announce`]. Like replies,
//! it counts only when sent by a process with `CAP_SYS_ADMIN`.
//!
//! Version 2 gives the last word a meaning: the server's [`features`](Announce::features),
//! extensions it implements (version 1 sent zero there): the in-sync map
//! (`uapi/in_sync_map.rs`), whose withdrawals travel on the same connector id, and clears in
//! a FLUSH (`uapi/clears_in_flush.rs`).

use super::{
    error::WireError,
    message::{CnMsg, CN_IDX_DM, CN_MSG_SIZE},
};

/// The connector value of announcements (`idx` is `CN_IDX_DM`).
pub const CN_VAL_DM_USERSPACE_LOG_ANNOUNCE: u32 = 0x2;
/// Marks the payload as an announcement (the bytes `"ULGA"` on a little-endian host).
pub const ANNOUNCE_MAGIC: u32 = u32::from_le_bytes(*b"ULGA");
/// The version of the announcement described here.
#[cfg(not(MODULE))]
pub const ANNOUNCE_VERSION: u32 = 2;
/// Feature bit: the server implements the in-sync map (`uapi/in_sync_map.rs`).
pub const FEATURE_IN_SYNC_MAP: u32 = 1;
/// Feature bit: the server takes clears in a FLUSH (`uapi/clears_in_flush.rs`).
pub const FEATURE_CLEARS_IN_FLUSH: u32 = 2;
/// Bytes of [`Announce`] on the wire.
pub const ANNOUNCE_SIZE: usize = 16;
/// Bytes of a whole announcement message after the netlink header.
#[cfg(not(MODULE))]
pub const ANNOUNCE_MESSAGE_SIZE: usize = CN_MSG_SIZE + ANNOUNCE_SIZE;

/// The payload of an announcement: `{ u32 magic; u32 version; u32 pid; u32 features; }`,
/// host-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    /// [`ANNOUNCE_VERSION`]; the kernel accepts any version, later ones may add fields.
    pub version: u32,
    /// The server's process id, for the kernel's log message only.
    pub pid: u32,
    /// The `FEATURE_*` bits of the extensions the server implements (0 in version 1).
    pub features: u32,
}

impl Announce {
    /// Writes the whole message (`cn_msg` and payload) into `buf`; returns its length.
    // Servers announce themselves; the kernel only reads announcements.
    #[cfg(not(MODULE))]
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let body = encode_notice(buf, ANNOUNCE_MAGIC, ANNOUNCE_SIZE)?;
        body[4..8].copy_from_slice(&self.version.to_ne_bytes());
        body[8..12].copy_from_slice(&self.pid.to_ne_bytes());
        body[12..16].copy_from_slice(&self.features.to_ne_bytes());
        Ok(ANNOUNCE_MESSAGE_SIZE)
    }

    /// Reads an announcement message (`cn_msg` and payload); anything else is an error.
    pub fn parse(msg: &[u8]) -> Result<Self, WireError> {
        let body = parse_notice(msg, ANNOUNCE_MAGIC, ANNOUNCE_SIZE)?;
        let word = |i: usize| u32::from_ne_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        Ok(Self {
            version: word(4),
            pid: word(8),
            features: if word(4) >= 2 { word(12) } else { 0 },
        })
    }
}

/// Writes the envelope of a server's message on the announcement's connector id (`cn_msg`
/// and the body's `magic`) into `buf`; returns the `size`-byte body to fill in after it.
#[cfg(not(MODULE))]
pub(crate) fn encode_notice(
    buf: &mut [u8],
    magic: u32,
    size: usize,
) -> Result<&mut [u8], WireError> {
    let need = CN_MSG_SIZE + size;
    if buf.len() < need {
        return Err(WireError::Truncated {
            need,
            have: buf.len(),
        });
    }
    CnMsg {
        idx: CN_IDX_DM,
        val: CN_VAL_DM_USERSPACE_LOG_ANNOUNCE,
        seq: 0,
        ack: 0,
        len: u16::try_from(size).map_err(|_| WireError::PayloadTooLarge {
            len: size,
            max: usize::from(u16::MAX),
        })?,
        flags: 0,
    }
    .encode(buf)?;
    let body = &mut buf[CN_MSG_SIZE..need];
    body[0..4].copy_from_slice(&magic.to_ne_bytes());
    Ok(body)
}

/// Checks a server's message on the announcement's connector id: its id, its length, at least
/// `size` body bytes, and the body's `magic`; returns the body.
pub(crate) fn parse_notice(msg: &[u8], magic: u32, size: usize) -> Result<&[u8], WireError> {
    let cn = CnMsg::decode(msg)?;
    if (cn.idx, cn.val) != (CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG_ANNOUNCE) {
        return Err(WireError::WrongConnectorId {
            idx: cn.idx,
            val: cn.val,
        });
    }
    let len = usize::from(cn.len);
    let body = msg
        .get(CN_MSG_SIZE..CN_MSG_SIZE + len)
        .ok_or(WireError::LengthMismatch {
            claimed: len,
            have: msg.len() - CN_MSG_SIZE,
        })?;
    if len < size {
        return Err(WireError::Truncated {
            need: size,
            have: len,
        });
    }
    let found = u32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
    if found != magic {
        return Err(WireError::BadMagic(found));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let mut buf = [0xffu8; 64];
        let a = Announce {
            version: ANNOUNCE_VERSION,
            pid: 4242,
            features: FEATURE_IN_SYNC_MAP,
        };
        assert_eq!(a.encode(&mut buf), Ok(36));
        assert_eq!(&buf[0..8], &[7, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&buf[16..18], &16u16.to_ne_bytes());
        assert_eq!(&buf[20..24], &ANNOUNCE_MAGIC.to_ne_bytes());
        assert_eq!(&buf[24..28], &2u32.to_ne_bytes());
        assert_eq!(&buf[28..32], &4242u32.to_ne_bytes());
        assert_eq!(&buf[32..36], &FEATURE_IN_SYNC_MAP.to_ne_bytes());
        assert_eq!(Announce::parse(&buf[..36]), Ok(a));
        // Version 1 had a reserved word there: whatever it holds, no feature.
        buf[24..28].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(Announce::parse(&buf[..36]).map(|a| a.features), Ok(0));
    }

    #[test]
    fn other_messages_are_refused() {
        let mut buf = [0u8; 36];
        Announce {
            version: 1,
            pid: 1,
            features: 0,
        }
        .encode(&mut buf)
        .unwrap();
        // A log reply's id, a short body and a wrong magic are all refused.
        let mut log = buf;
        log[4] = 1;
        assert!(matches!(
            Announce::parse(&log),
            Err(WireError::WrongConnectorId { .. })
        ));
        assert!(Announce::parse(&buf[..30]).is_err());
        let mut short = buf;
        short[16] = 8;
        assert!(matches!(
            Announce::parse(&short),
            Err(WireError::Truncated { .. })
        ));
        let mut magic = buf;
        magic[20] ^= 1;
        assert!(matches!(
            Announce::parse(&magic),
            Err(WireError::BadMagic(_))
        ));
    }
}
