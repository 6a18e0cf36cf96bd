// SPDX-License-Identifier: GPL-2.0

//! The connector message (`cn_msg`) and the request header (`dm_ulog_request`).

use core::fmt;

use super::{error::WireError, request_type::RequestType};

/// Connector index of device-mapper (`CN_IDX_DM`); also the netlink multicast group.
pub const CN_IDX_DM: u32 = 0x7;
/// Connector value of the userspace log (`CN_VAL_DM_USERSPACE_LOG`).
pub const CN_VAL_DM_USERSPACE_LOG: u32 = 0x1;
/// The largest `cn_msg.len` the connector core accepts (`CONNECTOR_MAX_MSG_SIZE`).
pub const CONNECTOR_MAX_MSG_SIZE: usize = 16384;

/// Size of `struct cn_msg`.
pub const CN_MSG_SIZE: usize = 20;
/// Size of `struct dm_ulog_request` without its payload.
pub const HEADER_SIZE: usize = 160;
/// Size of the `uuid` field (`DM_UUID_LEN`), NUL included.
pub const UUID_FIELD_SIZE: usize = 129;
/// Longest UUID a table may give (the field keeps a terminating NUL).
pub const MAX_UUID_LEN: usize = UUID_FIELD_SIZE - 1;
/// Size of a device name in a CTR reply, NUL included (`DM_NAME_LEN`).
pub const DEVICE_NAME_SIZE: usize = 128;
/// Protocol version the kernel stamps on every request (`DM_ULOG_REQUEST_VERSION`).
pub const REQUEST_VERSION: u32 = 3;
/// Largest request payload upstream's module sends: its 512-byte buffer less both headers.
///
/// Servers such as cmirrord size their buffers on this, so the module keeps to it.
pub const MAX_REQUEST_PAYLOAD: usize = 512 - HEADER_SIZE - CN_MSG_SIZE;

// Offsets of the header fields inside a `dm_ulog_request`.
const OFF_LUID: usize = 0;
const OFF_UUID: usize = 8;
const OFF_VERSION: usize = 140;
const OFF_ERROR: usize = 144;
const OFF_SEQ: usize = 148;
const OFF_TYPE: usize = 152;
const OFF_DATA_SIZE: usize = 156;

/// Bytes of the header that belong to no field: `char padding[3]` between `uuid` and
/// `version`. The kernel zeroes them; a server may check that it does.
#[cfg(not(MODULE))]
pub const HEADER_PADDING: core::ops::Range<usize> = OFF_UUID + UUID_FIELD_SIZE..OFF_VERSION;

fn get_u16(buf: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([buf[off], buf[off + 1]])
}

fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_ne_bytes(b)
}

fn get_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_ne_bytes(b)
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

fn need(buf: &[u8], n: usize) -> Result<(), WireError> {
    if buf.len() < n {
        Err(WireError::Truncated {
            need: n,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// `struct cn_msg`: the connector's envelope around every request and reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CnMsg {
    /// `id.idx`.
    pub idx: u32,
    /// `id.val`.
    pub val: u32,
    /// `seq`: the request's seq in a bare ACK; upstream ignores it in full replies.
    pub seq: u32,
    /// `ack`: in a bare ACK, a positive errno (0 for success).
    pub ack: u32,
    /// `len`: bytes after this envelope.
    pub len: u16,
    /// `flags`.
    pub flags: u16,
}

impl CnMsg {
    /// An envelope addressed to the userspace log.
    pub const fn to_log(seq: u32, ack: u32, len: u16) -> Self {
        Self {
            idx: CN_IDX_DM,
            val: CN_VAL_DM_USERSPACE_LOG,
            seq,
            ack,
            len,
            flags: 0,
        }
    }

    /// Writes the 20 bytes of the envelope at the start of `buf`.
    pub fn encode(&self, buf: &mut [u8]) -> Result<(), WireError> {
        need(buf, CN_MSG_SIZE)?;
        put(buf, 0, &self.idx.to_ne_bytes());
        put(buf, 4, &self.val.to_ne_bytes());
        put(buf, 8, &self.seq.to_ne_bytes());
        put(buf, 12, &self.ack.to_ne_bytes());
        put(buf, 16, &self.len.to_ne_bytes());
        put(buf, 18, &self.flags.to_ne_bytes());
        Ok(())
    }

    /// Reads the envelope at the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        need(buf, CN_MSG_SIZE)?;
        Ok(Self {
            idx: get_u32(buf, 0),
            val: get_u32(buf, 4),
            seq: get_u32(buf, 8),
            ack: get_u32(buf, 12),
            len: get_u16(buf, 16),
            flags: get_u16(buf, 18),
        })
    }
}

/// The fields of a `dm_ulog_request` header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Local unique id of the log instance: tells apart two tables with one UUID.
    pub luid: u64,
    /// The log's UUID, NUL-padded.
    pub uuid: [u8; UUID_FIELD_SIZE],
    /// Protocol version ([`REQUEST_VERSION`] from the kernel).
    pub version: u32,
    /// In replies: 0 or a negative errno.
    pub error: i32,
    /// Matches a reply to its request.
    pub seq: u32,
    /// The raw request type, reserved bits included.
    pub request_type: u32,
    /// Payload bytes after the header.
    pub data_size: u32,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("luid", &self.luid)
            .field("uuid", &Lossy(self.uuid_bytes()))
            .field("version", &self.version)
            .field("error", &self.error)
            .field("seq", &self.seq)
            .field("request_type", &self.request_type)
            .field("data_size", &self.data_size)
            .finish()
    }
}

impl Header {
    /// A request header for `uuid`, which must be at most 128 bytes without NUL.
    // The kernel encodes its requests with `encode_request`.
    #[cfg(not(MODULE))]
    pub fn request(
        uuid: &[u8],
        luid: u64,
        request: RequestType,
        seq: u32,
        data_size: usize,
    ) -> Result<Self, WireError> {
        let data_size = u32::try_from(data_size).map_err(|_| WireError::PayloadTooLarge {
            len: data_size,
            max: u32::MAX as usize,
        })?;
        Ok(Self {
            luid,
            uuid: Uuid::new(uuid)?.0,
            version: REQUEST_VERSION,
            error: 0,
            seq,
            request_type: request as u32,
            data_size,
        })
    }

    /// The UUID without its NUL padding.
    pub fn uuid_bytes(&self) -> &[u8] {
        up_to_nul(&self.uuid)
    }

    /// The UUID, for a server to key its logs on and to print.
    // The kernel knows its logs' UUIDs; it only compares a reply's luid and type.
    #[cfg(not(MODULE))]
    pub fn uuid(&self) -> Uuid {
        Uuid::from_field(&self.uuid)
    }

    /// The decoded request type.
    // The kernel matches a reply's type against the request's with `RequestType::try_from`.
    #[cfg(not(MODULE))]
    pub fn kind(&self) -> Result<RequestType, WireError> {
        Ok(RequestType::try_from(self.request_type)?)
    }

    /// Writes the 160 header bytes, padding zeroed, at the start of `buf`.
    #[cfg(not(MODULE))]
    pub fn encode(&self, buf: &mut [u8]) -> Result<(), WireError> {
        self.on_wire().put(buf)
    }

    #[cfg(not(MODULE))]
    fn on_wire(&self) -> WireHeader<'_> {
        WireHeader {
            luid: self.luid,
            uuid: &self.uuid,
            version: self.version,
            error: self.error,
            seq: self.seq,
            request_type: self.request_type,
            data_size: self.data_size,
        }
    }

    /// Reads a header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        need(buf, HEADER_SIZE)?;
        let mut uuid = [0u8; UUID_FIELD_SIZE];
        uuid.copy_from_slice(&buf[OFF_UUID..OFF_UUID + UUID_FIELD_SIZE]);
        Ok(Self {
            luid: get_u64(buf, OFF_LUID),
            uuid,
            version: get_u32(buf, OFF_VERSION),
            error: get_u32(buf, OFF_ERROR) as i32,
            seq: get_u32(buf, OFF_SEQ),
            request_type: get_u32(buf, OFF_TYPE),
            data_size: get_u32(buf, OFF_DATA_SIZE),
        })
    }
}

/// A header's fields as they go on the wire, its UUID borrowed: the one header encoder, for
/// [`Header::encode`] and for the kernel's [`encode_request`], which so copies the UUID once.
struct WireHeader<'a> {
    luid: u64,
    /// At most [`UUID_FIELD_SIZE`] bytes; the field's rest is zeroed.
    uuid: &'a [u8],
    version: u32,
    error: i32,
    seq: u32,
    request_type: u32,
    data_size: u32,
}

impl WireHeader<'_> {
    /// Writes the 160 header bytes at the start of `buf`, each once, padding zeroed.
    fn put(&self, buf: &mut [u8]) -> Result<(), WireError> {
        need(buf, HEADER_SIZE)?;
        if self.uuid.len() > UUID_FIELD_SIZE {
            return Err(WireError::BadUuid);
        }
        put(buf, OFF_LUID, &self.luid.to_ne_bytes());
        put(buf, OFF_UUID, self.uuid);
        // The UUID's NUL padding and the three bytes that align `version`.
        buf[OFF_UUID + self.uuid.len()..OFF_VERSION].fill(0);
        put(buf, OFF_VERSION, &self.version.to_ne_bytes());
        put(buf, OFF_ERROR, &self.error.to_ne_bytes());
        put(buf, OFF_SEQ, &self.seq.to_ne_bytes());
        put(buf, OFF_TYPE, &self.request_type.to_ne_bytes());
        put(buf, OFF_DATA_SIZE, &self.data_size.to_ne_bytes());
        Ok(())
    }
}

/// The bytes of a NUL-padded field before its first NUL (all of them if it has none).
fn up_to_nul(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// A log's UUID as the header's `uuid` field carries it: whatever follows the first NUL is
/// not part of it. Compares, hashes and prints as the bytes before that NUL.
// The kernel keeps its logs' UUIDs as the table gave them.
#[cfg(not(MODULE))]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid(
    // INVARIANT: every byte from the first NUL on is zero, so that derived comparisons see
    // only the UUID.
    [u8; UUID_FIELD_SIZE],
);

#[cfg(not(MODULE))]
impl Uuid {
    /// Checks a UUID given without padding: at most [`MAX_UUID_LEN`] bytes, no NUL.
    pub fn new(uuid: &[u8]) -> Result<Self, WireError> {
        if uuid.len() > MAX_UUID_LEN || uuid.contains(&0) {
            return Err(WireError::BadUuid);
        }
        let mut field = [0u8; UUID_FIELD_SIZE];
        field[..uuid.len()].copy_from_slice(uuid);
        Ok(Self(field))
    }

    /// The UUID in a received `uuid` field: the bytes before its first NUL.
    #[cfg(not(MODULE))]
    pub fn from_field(field: &[u8; UUID_FIELD_SIZE]) -> Self {
        let bytes = up_to_nul(field);
        let mut uuid = [0u8; UUID_FIELD_SIZE];
        uuid[..bytes.len()].copy_from_slice(bytes);
        Self(uuid)
    }

    /// The UUID without padding.
    #[cfg(not(MODULE))]
    pub fn as_bytes(&self) -> &[u8] {
        up_to_nul(&self.0)
    }
}

/// Bytes shown as UTF-8, invalid sequences as U+FFFD (as `String::from_utf8_lossy` does).
struct Lossy<'a>(&'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Prints the UUID as text, with U+FFFD for bytes that are not UTF-8.
#[cfg(not(MODULE))]
impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Lossy(self.as_bytes()), f)
    }
}

#[cfg(not(MODULE))]
impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Uuid")
            .field(&Lossy(up_to_nul(&self.0)))
            .finish()
    }
}

/// Encodes a whole message (`cn_msg` + header + payload) into `buf`; returns its length.
///
/// The envelope's seq is the header's seq, as upstream sends it.
#[cfg(not(MODULE))]
pub fn encode_message(buf: &mut [u8], header: &Header, payload: &[u8]) -> Result<usize, WireError> {
    put_message(buf, &header.on_wire(), payload)
}

/// Encodes a request of the kernel's (`cn_msg` + header + payload) into `buf`, straight from
/// its parts: what [`Header::request`] and [`encode_message`] make together, with no header
/// built in between (the module sends one for every log operation). `uuid` is at most
/// [`MAX_UUID_LEN`] bytes and, as the table word it comes from, holds no NUL.
pub fn encode_request(
    buf: &mut [u8],
    uuid: &[u8],
    luid: u64,
    kind: RequestType,
    seq: u32,
    payload: &[u8],
) -> Result<usize, WireError> {
    if uuid.len() > MAX_UUID_LEN {
        return Err(WireError::BadUuid);
    }
    let data_size = u32::try_from(payload.len()).map_err(|_| WireError::PayloadTooLarge {
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    let header = WireHeader {
        luid,
        uuid,
        version: REQUEST_VERSION,
        error: 0,
        seq,
        request_type: kind as u32,
        data_size,
    };
    put_message(buf, &header, payload)
}

/// [`encode_message`]'s body.
fn put_message(
    buf: &mut [u8],
    header: &WireHeader<'_>,
    payload: &[u8],
) -> Result<usize, WireError> {
    let total = CN_MSG_SIZE + HEADER_SIZE + payload.len();
    if payload.len() != header.data_size as usize {
        return Err(WireError::LengthMismatch {
            claimed: header.data_size as usize,
            have: payload.len(),
        });
    }
    let len = u16::try_from(HEADER_SIZE + payload.len())
        .ok()
        .filter(|&l| usize::from(l) <= CONNECTOR_MAX_MSG_SIZE)
        .ok_or(WireError::PayloadTooLarge {
            len: payload.len(),
            max: CONNECTOR_MAX_MSG_SIZE - HEADER_SIZE,
        })?;
    need(buf, total)?;
    CnMsg::to_log(header.seq, 0, len).encode(buf)?;
    header.put(&mut buf[CN_MSG_SIZE..])?;
    buf[CN_MSG_SIZE + HEADER_SIZE..total].copy_from_slice(payload);
    Ok(total)
}

/// A message received by the kernel from a server, checked for consistency.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A bare `cn_msg` (len 0): `ack` is a positive errno, `seq` the request's.
    Ack {
        /// The request's seq (from the envelope).
        seq: u32,
        /// Positive errno; 0 means success.
        ack: u32,
    },
    /// A full `dm_ulog_request` reply.
    Full {
        /// The reply's header; its `seq` names the request.
        header: Header,
        /// Exactly `data_size` payload bytes.
        data: &'a [u8],
    },
}

impl<'a> Reply<'a> {
    /// The seq of the request this reply answers.
    pub fn seq(&self) -> u32 {
        match self {
            Self::Ack { seq, .. } => *seq,
            Self::Full { header, .. } => header.seq,
        }
    }

    /// Parses and validates what follows the netlink header: `cn_msg` and its `len` bytes.
    ///
    /// Unlike upstream, `data_size` must fit inside the message actually received.
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let cn = CnMsg::decode(msg)?;
        if (cn.idx, cn.val) != (CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG) {
            return Err(WireError::WrongConnectorId {
                idx: cn.idx,
                val: cn.val,
            });
        }
        let body = &msg[CN_MSG_SIZE..];
        let len = usize::from(cn.len);
        if len > body.len() {
            return Err(WireError::LengthMismatch {
                claimed: len,
                have: body.len(),
            });
        }
        if len == 0 {
            return Ok(Self::Ack {
                seq: cn.seq,
                ack: cn.ack,
            });
        }
        let body = &body[..len];
        let header = Header::decode(body)?;
        let data_size = header.data_size as usize;
        if data_size > len - HEADER_SIZE {
            return Err(WireError::LengthMismatch {
                claimed: data_size,
                have: len - HEADER_SIZE,
            });
        }
        Ok(Self::Full {
            header,
            data: &body[HEADER_SIZE..HEADER_SIZE + data_size],
        })
    }
}

/// A request as a server receives it, checked for consistency.
// The kernel sends requests; it never parses one.
#[cfg(not(MODULE))]
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The envelope.
    pub cn: CnMsg,
    /// The header.
    pub header: Header,
    /// Exactly `data_size` payload bytes.
    pub data: &'a [u8],
}

#[cfg(not(MODULE))]
impl<'a> Request<'a> {
    /// Parses what follows the netlink header: `cn_msg`, header and payload.
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        match Reply::parse(msg)? {
            Reply::Ack { .. } => Err(WireError::Truncated {
                need: CN_MSG_SIZE + HEADER_SIZE,
                have: msg.len(),
            }),
            Reply::Full { header, data } => Ok(Self {
                cn: CnMsg::decode(msg)?,
                header,
                data,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's one-pass request encoder writes every byte the header-then-message path
    /// writes, whatever the buffer held before (padding zeroed), and refuses what it refuses.
    #[test]
    fn encode_request_matches_header_and_encode_message() {
        let long = [b'u'; MAX_UUID_LEN];
        let payload = [0x5au8; 24];
        for uuid in [&b"LVM-abc"[..], b"", &long[..]] {
            for (kind, data) in [
                (RequestType::Flush, &payload[..]),
                (RequestType::Ctr, &b"1024 core 1024"[..]),
                (RequestType::Presuspend, &[][..]),
            ] {
                let mut want = [0xffu8; 600];
                let h = Header::request(uuid, 0x0102_0304_0506_0708, kind, 77, data.len()).unwrap();
                let n = encode_message(&mut want, &h, data).unwrap();
                let mut got = [0xeeu8; 600];
                let m =
                    encode_request(&mut got, uuid, 0x0102_0304_0506_0708, kind, 77, data).unwrap();
                assert_eq!(m, n);
                assert_eq!(
                    got[..n],
                    want[..n],
                    "{kind:?} with a uuid of {}",
                    uuid.len()
                );
            }
        }
        let too_long = [b'u'; MAX_UUID_LEN + 1];
        let mut buf = [0u8; 600];
        assert!(encode_request(&mut buf, &too_long, 1, RequestType::Dtr, 1, &[]).is_err());
        assert!(encode_request(&mut buf[..100], b"u", 1, RequestType::Dtr, 1, &[]).is_err());
        // More than a connector message carries.
        let big = [0u8; CONNECTOR_MAX_MSG_SIZE];
        let mut room = [0u8; 2 * CONNECTOR_MAX_MSG_SIZE];
        assert!(encode_request(&mut room, b"u", 1, RequestType::Flush, 1, &big).is_err());
    }

    #[test]
    fn header_layout_matches_the_c_struct() {
        let mut uuid = [0u8; 128];
        uuid.fill(b'u');
        let h = Header::request(
            &uuid,
            0x0102_0304_0506_0708,
            RequestType::Flush,
            0xaabb_ccdd,
            24,
        )
        .unwrap();
        let mut buf = [0xffu8; HEADER_SIZE];
        h.encode(&mut buf).unwrap();
        assert_eq!(&buf[0..8], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&buf[8..136], &uuid[..]);
        // NUL terminator of the uuid and the three padding bytes are zero.
        assert_eq!(&buf[136..140], &[0, 0, 0, 0]);
        assert_eq!(&buf[140..144], &3u32.to_ne_bytes());
        assert_eq!(&buf[144..148], &0u32.to_ne_bytes());
        assert_eq!(&buf[148..152], &0xaabb_ccddu32.to_ne_bytes());
        assert_eq!(&buf[152..156], &9u32.to_ne_bytes());
        assert_eq!(&buf[156..160], &24u32.to_ne_bytes());
        assert_eq!(Header::decode(&buf).unwrap(), h);
    }

    #[test]
    fn uuid_limits() {
        assert!(Uuid::new(&[b'a'; 128]).is_ok());
        assert_eq!(Uuid::new(&[b'a'; 129]), Err(WireError::BadUuid));
        assert_eq!(Uuid::new(b"a\0b"), Err(WireError::BadUuid));
    }

    #[test]
    fn uuid_is_the_bytes_before_the_first_nul() {
        let mut field = Uuid::new(b"LOG-1").unwrap().0;
        field[7] = b'x';
        let h = Header {
            uuid: field,
            ..Header::request(b"", 1, RequestType::Dtr, 1, 0).unwrap()
        };
        assert_eq!(h.uuid_bytes(), b"LOG-1");
        assert_eq!(h.uuid(), Uuid::new(b"LOG-1").unwrap());
        assert_eq!(h.uuid().as_bytes(), b"LOG-1");
        assert_eq!(
            Uuid::from_field(&[b'u'; UUID_FIELD_SIZE]).as_bytes().len(),
            129
        );
        let odd = Uuid::new(b"a\xffb").unwrap();
        assert_eq!(
            std::format!("{odd} {odd:?}"),
            "a\u{FFFD}b Uuid(\"a\u{FFFD}b\")"
        );
    }

    #[test]
    fn message_round_trip() {
        let h = Header::request(b"LOG-1", 7, RequestType::MarkRegion, 42, 16).unwrap();
        let payload: [u8; 16] = [1; 16];
        let mut buf = [0u8; 512];
        let n = encode_message(&mut buf, &h, &payload).unwrap();
        assert_eq!(n, 20 + 160 + 16);
        let cn = CnMsg::decode(&buf).unwrap();
        assert_eq!(cn, CnMsg::to_log(42, 0, 176));
        let req = Request::parse(&buf[..n]).unwrap();
        assert_eq!(req.header, h);
        assert_eq!(req.data, &payload);
        assert_eq!(req.header.uuid_bytes(), b"LOG-1");
    }

    #[test]
    fn encode_rejects_inconsistent_sizes() {
        let h = Header::request(b"x", 1, RequestType::Flush, 1, 8).unwrap();
        let mut buf = [0u8; 512];
        assert!(matches!(
            encode_message(&mut buf, &h, &[0; 4]),
            Err(WireError::LengthMismatch { .. })
        ));
        let h = Header::request(b"x", 1, RequestType::Flush, 1, 400).unwrap();
        assert!(matches!(
            encode_message(&mut buf, &h, &[0; 400]),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn bare_ack_is_recognised() {
        let mut buf = [0u8; 20];
        CnMsg::to_log(9, 11, 0).encode(&mut buf).unwrap();
        assert_eq!(Reply::parse(&buf), Ok(Reply::Ack { seq: 9, ack: 11 }));
    }

    #[test]
    fn reply_with_data_size_beyond_the_message_is_rejected() {
        let mut h = Header::request(b"x", 1, RequestType::StatusInfo, 5, 4).unwrap();
        let mut buf = [0u8; 512];
        let n = encode_message(&mut buf, &h, b"abcd").unwrap();
        assert!(matches!(
            Reply::parse(&buf[..n]),
            Ok(Reply::Full { data: b"abcd", .. })
        ));
        h.data_size = 300;
        h.encode(&mut buf[CN_MSG_SIZE..]).unwrap();
        assert_eq!(
            Reply::parse(&buf[..n]),
            Err(WireError::LengthMismatch {
                claimed: 300,
                have: 4
            })
        );
    }

    #[test]
    fn short_and_misaddressed_messages_are_rejected() {
        let mut buf = [0u8; 100];
        CnMsg::to_log(1, 0, 80).encode(&mut buf).unwrap();
        // len 80 < header size.
        assert!(matches!(
            Reply::parse(&buf),
            Err(WireError::Truncated { .. })
        ));
        CnMsg::to_log(1, 0, 200).encode(&mut buf).unwrap();
        assert!(matches!(
            Reply::parse(&buf),
            Err(WireError::LengthMismatch { .. })
        ));
        CnMsg {
            idx: 7,
            val: 2,
            ..CnMsg::default()
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(
            Reply::parse(&buf),
            Err(WireError::WrongConnectorId { idx: 7, val: 2 })
        );
        assert!(matches!(
            Reply::parse(&buf[..10]),
            Err(WireError::Truncated { .. })
        ));
    }
}
