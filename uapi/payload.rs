// SPDX-License-Identifier: GPL-2.0

//! Fixed-size payloads of requests and replies, and region lists.
//!
//! Each payload is written by one side and read by the other; the halves only a server runs
//! (reading requests, writing replies) are left out of the module's build.

use super::{
    error::WireError,
    message::{DEVICE_NAME_SIZE, MAX_REQUEST_PAYLOAD},
    request_type::RequestType,
};

/// Bytes of one region number on the wire.
pub const REGION_SIZE: usize = 8;
/// Most regions upstream sends in one MARK, CLEAR or integrated FLUSH request.
pub const MAX_FLUSH_GROUP: usize = 32;

// A full group fits the largest request payload.
const _: () = assert!(MAX_FLUSH_GROUP * REGION_SIZE <= MAX_REQUEST_PAYLOAD);

/// Encodes one `u64` (a region, or a reply value) host-endian.
pub fn encode_u64(v: u64) -> [u8; 8] {
    v.to_ne_bytes()
}

/// Decodes a payload that must be exactly one `u64`.
pub fn decode_u64(request: RequestType, data: &[u8]) -> Result<u64, WireError> {
    let bytes: [u8; 8] = data.try_into().map_err(|_| WireError::BadPayload {
        request,
        len: data.len(),
    })?;
    Ok(u64::from_ne_bytes(bytes))
}

/// Decodes a payload of two 64-bit fields.
fn decode_pair(request: RequestType, data: &[u8]) -> Result<(u64, u64), WireError> {
    if data.len() != 16 {
        return Err(WireError::BadPayload {
            request,
            len: data.len(),
        });
    }
    Ok((
        decode_u64(request, &data[..8])?,
        decode_u64(request, &data[8..])?,
    ))
}

fn encode_pair(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_ne_bytes());
    out[8..].copy_from_slice(&b.to_ne_bytes());
    out
}

/// The GET_RESYNC_WORK reply: `{ i64 i; u64 r; }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResyncWork {
    /// Whether `region` should be recovered now.
    pub available: bool,
    /// The region to recover.
    pub region: u64,
}

impl ResyncWork {
    /// The 16 wire bytes.
    #[cfg(not(MODULE))]
    pub fn encode(&self) -> [u8; 16] {
        encode_pair(u64::from(self.available), self.region)
    }

    /// Parses the reply; any non-zero `i` means work is available.
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        let (i, r) = decode_pair(RequestType::GetResyncWork, data)?;
        Ok(Self {
            available: i != 0,
            region: r,
        })
    }
}

/// The answer for a region to recover, if there is one (region 0 when there is none, as
/// dm-log.c leaves it).
#[cfg(not(MODULE))]
impl From<Option<u64>> for ResyncWork {
    fn from(work: Option<u64>) -> Self {
        Self {
            available: work.is_some(),
            region: work.unwrap_or(0),
        }
    }
}

/// The SET_REGION_SYNC request: `{ u64 region; i64 in_sync; }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionSync {
    /// The region.
    pub region: u64,
    /// Whether it is now in sync.
    pub in_sync: bool,
}

impl RegionSync {
    /// The 16 wire bytes.
    pub fn encode(&self) -> [u8; 16] {
        encode_pair(self.region, u64::from(self.in_sync))
    }

    /// Parses the request.
    #[cfg(not(MODULE))]
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        let (region, in_sync) = decode_pair(RequestType::SetRegionSync, data)?;
        Ok(Self {
            region,
            in_sync: in_sync != 0,
        })
    }
}

/// The IS_REMOTE_RECOVERING reply: `{ i64 is_recovering; u64 in_sync_hint; }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRecovering {
    /// Whether another node is recovering the region.
    pub is_recovering: bool,
    /// Every region below this one is in sync.
    pub in_sync_hint: u64,
}

impl RemoteRecovering {
    /// The 16 wire bytes.
    #[cfg(not(MODULE))]
    pub fn encode(&self) -> [u8; 16] {
        encode_pair(u64::from(self.is_recovering), self.in_sync_hint)
    }

    /// Parses the reply.
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        let (r, hint) = decode_pair(RequestType::IsRemoteRecovering, data)?;
        Ok(Self {
            is_recovering: r != 0,
            in_sync_hint: hint,
        })
    }
}

/// Writes `regions` as consecutive `u64`s into `out`; returns the bytes written.
pub fn encode_regions(regions: &[u64], out: &mut [u8]) -> Result<usize, WireError> {
    let len = regions.len() * REGION_SIZE;
    if len > out.len() {
        return Err(WireError::PayloadTooLarge {
            len,
            max: out.len(),
        });
    }
    for (i, r) in regions.iter().enumerate() {
        out[i * REGION_SIZE..(i + 1) * REGION_SIZE].copy_from_slice(&r.to_ne_bytes());
    }
    Ok(len)
}

/// Iterates the regions of a MARK, CLEAR or integrated FLUSH payload.
#[cfg(not(MODULE))]
pub fn decode_regions(
    request: RequestType,
    data: &[u8],
) -> Result<impl Iterator<Item = u64> + '_, WireError> {
    if data.len() % REGION_SIZE != 0 {
        return Err(WireError::BadPayload {
            request,
            len: data.len(),
        });
    }
    Ok(data.chunks_exact(REGION_SIZE).map(|c| {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        u64::from_ne_bytes(b)
    }))
}

/// Checks the device name of a CTR reply (protocol v2) and returns it without its NUL.
///
/// An empty reply means the log has no device. Otherwise the name must end in its only NUL
/// and fit `DM_NAME_LEN` (128 bytes with the NUL).
pub fn ctr_reply_device(data: &[u8]) -> Result<Option<&[u8]>, WireError> {
    let bad = WireError::BadPayload {
        request: RequestType::Ctr,
        len: data.len(),
    };
    match data.split_last() {
        None => Ok(None),
        Some((0, name))
            if data.len() <= DEVICE_NAME_SIZE && !name.is_empty() && !name.contains(&0) =>
        {
            Ok(Some(name))
        }
        Some(_) => Err(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let w = ResyncWork {
            available: true,
            region: 77,
        };
        assert_eq!(ResyncWork::decode(&w.encode()), Ok(w));
        let s = RegionSync {
            region: 5,
            in_sync: false,
        };
        assert_eq!(RegionSync::decode(&s.encode()), Ok(s));
        let r = RemoteRecovering {
            is_recovering: true,
            in_sync_hint: 1 << 40,
        };
        assert_eq!(RemoteRecovering::decode(&r.encode()), Ok(r));
        assert!(ResyncWork::decode(&[0; 8]).is_err());
        assert!(RemoteRecovering::decode(&[0; 17]).is_err());
    }

    #[test]
    fn scalar_replies_must_have_exact_size() {
        assert_eq!(
            decode_u64(RequestType::GetRegionSize, &1024u64.to_ne_bytes()),
            Ok(1024)
        );
        assert_eq!(
            decode_u64(RequestType::GetRegionSize, &[1, 2, 3]),
            Err(WireError::BadPayload {
                request: RequestType::GetRegionSize,
                len: 3
            })
        );
    }

    #[test]
    fn regions_round_trip() {
        let regions = [0u64, 1, u64::MAX, 12345];
        let mut buf = [0u8; 64];
        let n = encode_regions(&regions, &mut buf).unwrap();
        assert_eq!(n, 32);
        let back: [u64; 4] = {
            let mut it = decode_regions(RequestType::MarkRegion, &buf[..n]).unwrap();
            core::array::from_fn(|_| it.next().unwrap())
        };
        assert_eq!(back, regions);
        assert!(decode_regions(RequestType::MarkRegion, &buf[..7]).is_err());
        assert!(encode_regions(&[0; 9], &mut buf).is_err());
    }

    #[test]
    fn ctr_reply_device_names() {
        assert_eq!(ctr_reply_device(b""), Ok(None));
        assert_eq!(ctr_reply_device(b"253:2\0"), Ok(Some(&b"253:2"[..])));
        assert!(ctr_reply_device(b"253:2").is_err());
        assert!(ctr_reply_device(b"\0").is_err());
        assert!(ctr_reply_device(b"a\0b\0").is_err());
        let mut long = [b'x'; 129];
        long[128] = 0;
        assert!(ctr_reply_device(&long).is_err());
        assert!(ctr_reply_device(&long[1..]).is_ok());
    }
}
