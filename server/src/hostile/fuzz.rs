// SPDX-License-Identifier: GPL-2.0
//! `--seed S --fuzz P`: before some correct replies, 1–3 malformed ones, chosen by a seeded
//! ChaCha RNG so that the same seed and request stream give the same replies.
//!
//! Each kind is sent where a correct kernel must not take it as the answer: to the request's
//! own seq only when the connector core or the module discards it (truncated, `cn_msg.len`
//! beyond the message); otherwise to a seq nobody waits for or to the previous request's
//! (already answered) seq. The exception is garbage for a read-only request's own seq, which
//! the kernel does take, and which then stands in for the correct reply.

use std::fmt;

use anyhow::Result;
use dm_ulog_uapi::{CnMsg, Header, RequestType, CN_MSG_SIZE, HEADER_SIZE};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::info;

use crate::serve::Exchange;

/// How far away an unknown seq is from any the kernel waits for.
pub const STRAY_SEQ_OFFSET: u32 = 1_000_000;

/// The kinds of malformed reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A payload of the wrong size (to a seq nobody waits for).
    WrongSize,
    /// Fewer bytes than `cn_msg` + header (own seq: dropped by connector or module).
    Truncated,
    /// `cn_msg.len` larger than the message (own seq: the connector core drops it).
    LenTooLong,
    /// `cn_msg.len` smaller than the message (to a seq nobody waits for).
    LenTooShort,
    /// The previous reply again (its request is answered already).
    Duplicate,
    /// The correct reply to a seq nobody waits for.
    UnknownSeq,
    /// Random payload bytes for the request's own seq (read-only requests only).
    Garbage,
    /// `data_size` 0xffffffff (to a seq nobody waits for).
    HugeDataSize,
    /// An oversized or unterminated device name (CTR only, to a seq nobody waits for).
    BadDeviceName,
    /// A version other than 3 (to a seq nobody waits for).
    WrongVersion,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::WrongSize => "wrong-size",
            Self::Truncated => "truncated",
            Self::LenTooLong => "len-too-long",
            Self::LenTooShort => "len-too-short",
            Self::Duplicate => "duplicate",
            Self::UnknownSeq => "unknown-seq",
            Self::Garbage => "garbage",
            Self::HugeDataSize => "huge-data-size",
            Self::BadDeviceName => "bad-device-name",
            Self::WrongVersion => "wrong-version",
        };
        f.write_str(s)
    }
}

const COMMON: [Kind; 8] = [
    Kind::WrongSize,
    Kind::Truncated,
    Kind::LenTooLong,
    Kind::LenTooShort,
    Kind::Duplicate,
    Kind::UnknownSeq,
    Kind::HugeDataSize,
    Kind::WrongVersion,
];

/// Requests whose answer changes nothing, so garbage for them harms no state.
pub fn read_only(kind: RequestType) -> bool {
    matches!(
        kind,
        RequestType::IsClean
            | RequestType::InSync
            | RequestType::GetSyncCount
            | RequestType::StatusInfo
            | RequestType::StatusTable
            | RequestType::IsRemoteRecovering
    )
}

/// The malformed kinds allowed for a request type.
pub fn kinds_for(kind: Option<RequestType>) -> Vec<Kind> {
    let mut kinds = COMMON.to_vec();
    if kind == Some(RequestType::Ctr) {
        kinds.push(Kind::BadDeviceName);
    }
    if kind.is_some_and(read_only) {
        kinds.push(Kind::Garbage);
    }
    kinds
}

/// The last correct reply sent, for duplicates.
#[derive(Debug, Default)]
pub struct Previous {
    header: Option<Header>,
    payload: Vec<u8>,
}

impl Previous {
    /// Remembers a correct reply (the header carries its error).
    pub fn set(&mut self, header: &Header, error: i32, payload: &[u8]) {
        let mut h = *header;
        h.error = error;
        self.header = Some(h);
        self.payload.clear();
        self.payload.extend_from_slice(payload);
    }

    /// Forgets it (its request may still be waiting).
    pub fn clear(&mut self) {
        self.header = None;
    }
}

/// The seeded source of malformed replies.
pub struct Fuzzer {
    rng: ChaCha8Rng,
    probability: f64,
    max: Option<u64>,
    malformed: u64,
    scratch: Vec<u8>,
}

impl Fuzzer {
    /// A fuzzer that attacks a fraction `probability` of requests, until `max` malformed
    /// replies have been sent.
    pub fn new(seed: u64, probability: f64, max: Option<u64>) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            probability: probability.clamp(0.0, 1.0),
            max,
            malformed: 0,
            scratch: Vec::with_capacity(512),
        }
    }

    /// Malformed replies sent so far.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    fn exhausted(&self) -> bool {
        self.max.is_some_and(|m| self.malformed >= m)
    }

    /// Sends 1–3 malformed replies for this request, or none. The correct answer must be in
    /// `ex.payload` with `error`. Returns `true` when garbage took the correct reply's place.
    pub fn attack(
        &mut self,
        ex: &mut Exchange<'_, '_>,
        error: i32,
        prev: &Previous,
    ) -> Result<bool> {
        if self.exhausted() || !self.rng.random_bool(self.probability) {
            return Ok(false);
        }
        let kinds = kinds_for(ex.kind);
        let n = self.rng.random_range(1..=3);
        for _ in 0..n {
            if self.exhausted() {
                break;
            }
            let kind = kinds[self.rng.random_range(0..kinds.len())];
            self.malformed += 1;
            info!(
                "fault fuzz:{kind} on {} seq={}",
                ex.type_name(),
                ex.request.header.seq
            );
            self.send(kind, ex, error, prev)?;
            if kind == Kind::Garbage {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A seq nobody waits for, or the previous request's.
    fn bystander_seq(&mut self, header: &Header, prev: &Previous) -> u32 {
        match prev.header {
            Some(p) if self.rng.random_bool(0.5) => p.seq,
            _ => header
                .seq
                .wrapping_add(STRAY_SEQ_OFFSET + self.rng.random_range(0..1000)),
        }
    }

    fn send(
        &mut self,
        kind: Kind,
        ex: &mut Exchange<'_, '_>,
        error: i32,
        prev: &Previous,
    ) -> Result<()> {
        let mut h = ex.request.header;
        h.error = error;
        let correct_len = ex.payload.len();
        match kind {
            Kind::WrongSize => {
                h.seq = self.bystander_seq(&h, prev);
                let len = loop {
                    let l = self.rng.random_range(0..=correct_len + 32);
                    if l != correct_len {
                        break l;
                    }
                };
                self.random_payload(len, false);
                ex.tx.reply(&h, 0, &self.scratch)
            }
            Kind::Truncated => {
                let n = ex.tx.encode(&h, error, ex.payload)?;
                if self.rng.random_bool(0.5) {
                    // Shorter than a cn_msg: the connector core drops it.
                    let len = self.rng.random_range(1..CN_MSG_SIZE);
                    ex.tx.send(len)
                } else {
                    // A cn_msg announcing fewer bytes than a header: the module drops it.
                    let len = self.rng.random_range(1..HEADER_SIZE);
                    set_cn_len(ex.tx.message(), len);
                    ex.tx.send((CN_MSG_SIZE + len).min(n))
                }
            }
            Kind::LenTooLong => {
                let n = ex.tx.encode(&h, error, ex.payload)?;
                let extra = self.rng.random_range(1..=100);
                set_cn_len(ex.tx.message(), n - CN_MSG_SIZE + extra);
                ex.tx.send(n)
            }
            Kind::LenTooShort => {
                h.seq = self.bystander_seq(&h, prev);
                let n = ex.tx.encode(&h, error, ex.payload)?;
                let len = self.rng.random_range(0..n - CN_MSG_SIZE);
                set_cn_len(ex.tx.message(), len);
                ex.tx.send(n)
            }
            Kind::Duplicate => match &prev.header {
                Some(p) => ex.tx.reply(p, p.error, &prev.payload),
                None => {
                    h.seq = self.bystander_seq(&h, prev);
                    ex.tx.reply(&h, error, ex.payload)
                }
            },
            Kind::UnknownSeq => {
                h.seq = h
                    .seq
                    .wrapping_add(STRAY_SEQ_OFFSET + self.rng.random_range(0..1000));
                ex.tx.reply(&h, error, ex.payload)
            }
            Kind::Garbage => {
                let printable = matches!(
                    ex.kind,
                    Some(RequestType::StatusInfo | RequestType::StatusTable)
                );
                let len = if printable {
                    self.rng.random_range(1..=64)
                } else {
                    correct_len
                };
                self.random_payload(len, printable);
                ex.tx.reply(&ex.request.header, 0, &self.scratch)
            }
            Kind::HugeDataSize => {
                h.seq = self.bystander_seq(&h, prev);
                let n = ex.tx.encode(&h, error, ex.payload)?;
                h.data_size = u32::MAX;
                h.encode(&mut ex.tx.message()[CN_MSG_SIZE..])?;
                ex.tx.send(n)
            }
            Kind::BadDeviceName => {
                h.seq = self.bystander_seq(&h, prev);
                self.scratch.clear();
                if self.rng.random_bool(0.5) {
                    // Longer than DM_NAME_LEN, NUL-terminated.
                    let len = self.rng.random_range(129..=300);
                    self.scratch.resize(len - 1, b'x');
                    self.scratch.push(0);
                } else {
                    self.scratch.extend_from_slice(b"253:");
                    let minor = self.rng.random_range(0..100u32);
                    self.scratch.extend_from_slice(minor.to_string().as_bytes());
                }
                ex.tx.reply(&h, 0, &self.scratch)
            }
            Kind::WrongVersion => {
                h.seq = self.bystander_seq(&h, prev);
                let n = ex.tx.encode(&h, error, ex.payload)?;
                h.version = loop {
                    let v = self.rng.random::<u32>();
                    if v != dm_ulog_uapi::REQUEST_VERSION {
                        break v;
                    }
                };
                h.encode(&mut ex.tx.message()[CN_MSG_SIZE..])?;
                ex.tx.send(n)
            }
        }
    }

    fn random_payload(&mut self, len: usize, printable: bool) {
        self.scratch.clear();
        for _ in 0..len {
            let b = if printable {
                self.rng.random_range(0x21..0x7f)
            } else {
                self.rng.random::<u8>()
            };
            self.scratch.push(b);
        }
    }
}

fn set_cn_len(msg: &mut [u8], len: usize) {
    let mut cn = CnMsg::decode(msg).expect("an encoded message holds a cn_msg");
    cn.len = len as u16;
    cn.encode(msg).expect("the message buffer holds a cn_msg");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_only_for_read_only_requests_and_device_names_only_for_ctr() {
        for k in RequestType::ALL {
            let kinds = kinds_for(Some(k));
            assert_eq!(kinds.contains(&Kind::Garbage), read_only(k), "{k:?}");
            assert_eq!(
                kinds.contains(&Kind::BadDeviceName),
                k == RequestType::Ctr,
                "{k:?}"
            );
        }
        for k in [
            RequestType::Ctr,
            RequestType::Dtr,
            RequestType::Flush,
            RequestType::MarkRegion,
            RequestType::ClearRegion,
            RequestType::GetResyncWork,
            RequestType::SetRegionSync,
        ] {
            assert!(!read_only(k));
        }
        assert!(!kinds_for(None).contains(&Kind::Garbage));
    }
}
