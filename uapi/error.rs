// SPDX-License-Identifier: GPL-2.0

//! Why bytes on the wire were rejected: the one error type of the protocol's decoders.

use core::fmt;

use super::request_type::{RequestType, UnknownRequestType};

/// Why bytes on the wire were rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the structure it must hold.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// `cn_msg.len` or `data_size` disagrees with the bytes received.
    LengthMismatch {
        /// What the message claims.
        claimed: usize,
        /// What is there.
        have: usize,
    },
    /// A `request_type` outside 1..=17 and 64.
    UnknownType(u32),
    /// The message is not addressed to the userspace log's connector id.
    WrongConnectorId {
        /// `cb_id.idx` received.
        idx: u32,
        /// `cb_id.val` received.
        val: u32,
    },
    /// The payload does not fit the buffer or the protocol's limit.
    PayloadTooLarge {
        /// Payload bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A UUID longer than 128 bytes or containing a NUL.
    BadUuid,
    /// An announcement or withdrawal without its magic.
    BadMagic(u32),
    /// A payload of the wrong size for its request type.
    BadPayload {
        /// The request type.
        request: RequestType,
        /// Bytes received.
        len: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            Self::LengthMismatch { claimed, have } => {
                write!(f, "length field says {claimed} bytes, message has {have}")
            }
            Self::UnknownType(t) => write!(f, "{}", UnknownRequestType(t)),
            Self::WrongConnectorId { idx, val } => write!(f, "connector id {idx}:{val} is not 7:1"),
            Self::PayloadTooLarge { len, max } => write!(f, "payload of {len} bytes exceeds {max}"),
            Self::BadUuid => write!(f, "UUID longer than 128 bytes or containing NUL"),
            Self::BadMagic(m) => write!(f, "not an announcement: magic {m:#x}"),
            Self::BadPayload { request, len } => {
                write!(f, "{} payload of {len} bytes is malformed", request.name())
            }
        }
    }
}

impl core::error::Error for WireError {}

impl From<UnknownRequestType> for WireError {
    fn from(e: UnknownRequestType) -> Self {
        Self::UnknownType(e.0)
    }
}
