// SPDX-License-Identifier: GPL-2.0
//! What the members of a log multicast to each other, and its bytes.
//!
//! Little-endian fields after a version byte and a type byte. Every node of a log must speak
//! the same version: a member that receives another stops serving the log with an error to its
//! kernel ([`ReplyError::Incompatible`](super::replica::ReplyError::Incompatible)), since
//! applying the others' messages without the unreadable ones would leave the replicas apart.
//! Every member hears the same messages, so all stop together: a release that changes the
//! version is installed with the clustered mirrors deactivated on every node.

use dm_ulog_uapi::RequestType;

use super::group::ViewId;
use super::replica::NodeState;
use super::transfer::{Reader, TransferError};

/// The version of these messages (2: [`Message::Imported`]; 3: a process death keeps the
/// node's marks, so replicas of version 2 would part from these; 4: Hellos say how far a
/// stale replica got, and the member's table, and [`Message::Quorum`]).
const VERSION: u8 = 4;

const REQUEST: u8 = 1;
const HELLO: u8 = 2;
const CHUNK: u8 = 3;
const WRITTEN: u8 = 4;
const IMPORTED: u8 = 5;
const QUORUM: u8 = 6;

/// Bytes of a [`Message::Chunk`] besides the chunk.
pub const CHUNK_OVERHEAD: usize = 2 + 8 + 4 + 4;
/// Bytes of a [`Message::Hello`] besides its marks.
pub const HELLO_OVERHEAD: usize = 2 + 8 + 1 + 1 + 8 + 17 + 1 + 8;

/// What of a member's table the log's state depends on: members whose tables differ in it
/// cannot share the state (a snapshot of one does not fit the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Table {
    /// Regions.
    pub regions: u64,
    /// Sectors per region.
    pub region_size: u64,
    /// A disk log (else core).
    pub disk: bool,
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.disk { "disk" } else { "core" };
        write!(
            f,
            "{} regions of {} sectors, {kind} log",
            self.regions, self.region_size
        )
    }
}

/// What a member knows of its own copy when a view begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// It never had state: a restarted dm-ulogd whose kernel re-created the log (its kernel
    /// may hold marks the log kept for it).
    Fresh,
    /// It never had state, and its kernel's log is new (its first CTR: the node booted, or
    /// the table was loaded now): what the log kept for this node is void, as at a node's
    /// death.
    New,
    /// Its state is the log's: it has been in quorate views since it got it.
    Valid,
    /// It had state, then was in a view without quorum: what it holds may be behind.
    Stale,
}

/// One multicast message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A kernel's request, applied by every member.
    Request {
        /// The originator's tag (its kernel's seq).
        tag: u64,
        /// The request type.
        kind: RequestType,
        /// The payload as the kernel sent it.
        data: Vec<u8>,
    },
    /// A member's standing at the start of `view`; if it is stale, its suspend/resume state
    /// and the marks its kernel still holds. Split over several messages when long: all but
    /// the last have `last` false.
    Hello {
        /// The view it answers.
        view: ViewId,
        /// Its standing.
        standing: Standing,
        /// Its suspend/resume state when it lost quorum (a stale member only).
        state: NodeState,
        /// How many replicated messages its replica had applied when it lost quorum (a
        /// stale member only): the furthest on seeds the log again.
        applied: u64,
        /// Its table: with no member holding state, the table most members loaded is the
        /// log's.
        table: Table,
        /// Regions its kernel holds marks on (a stale member only).
        marks: Vec<u64>,
        /// The member's last Hello of this view.
        last: bool,
    },
    /// Part `index` of `total` of the snapshot taken at `view`'s cut.
    Chunk {
        /// The view whose cut it is.
        view: ViewId,
        /// Which part.
        index: u32,
        /// How many parts.
        total: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The leader wrote the disk log up to `generation` (or failed to).
    Written {
        /// The generation written.
        generation: u64,
        /// Whether the write succeeded.
        ok: bool,
    },
    /// The sender imported the snapshot of `view`'s cut: it holds the log's state and may
    /// lead. Until then the others cannot tell an import that failed (another table) from
    /// one under way.
    Imported {
        /// The view whose snapshot it imported.
        view: ViewId,
    },
    /// The sender read that its ring's quorum changed to `quorate` after `view` (a
    /// quorum change within a ring). Quorum notices come on a connection of their own,
    /// which members read at different points of the agreed order: every member takes the
    /// change at the first such message instead, so its views meet the others'. The group
    /// layer ([`super::cpg_views`]) takes these; members never see them.
    Quorum {
        /// The view the change comes after.
        view: ViewId,
        /// Whether the ring is quorate now.
        quorate: bool,
        /// Not a change: the quorum the group agreed on when `view` began, told by a member
        /// that was there to one that joined in it (which asked corosync, and cannot know).
        told: bool,
    },
}

impl Message {
    /// The bytes to multicast.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        let put32 = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        let put64 = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
        match self {
            Self::Request { tag, kind, data } => {
                out.push(REQUEST);
                put64(&mut out, *tag);
                put32(&mut out, *kind as u32);
                out.extend_from_slice(data);
            }
            Self::Hello {
                view,
                standing,
                state,
                applied,
                table,
                marks,
                last,
            } => {
                out.push(HELLO);
                put64(&mut out, view.0);
                out.push(match standing {
                    Standing::Fresh => 0,
                    Standing::Valid => 1,
                    Standing::Stale => 2,
                    Standing::New => 3,
                });
                out.push(state.to_bits());
                put64(&mut out, *applied);
                put64(&mut out, table.regions);
                put64(&mut out, table.region_size);
                out.push(u8::from(table.disk));
                out.push(u8::from(*last));
                put64(&mut out, marks.len() as u64);
                for &r in marks {
                    put64(&mut out, r);
                }
            }
            Self::Chunk {
                view,
                index,
                total,
                bytes,
            } => {
                out.push(CHUNK);
                put64(&mut out, view.0);
                put32(&mut out, *index);
                put32(&mut out, *total);
                out.extend_from_slice(bytes);
            }
            Self::Written { generation, ok } => {
                out.push(WRITTEN);
                put64(&mut out, *generation);
                out.push(u8::from(*ok));
            }
            Self::Imported { view } => {
                out.push(IMPORTED);
                put64(&mut out, view.0);
            }
            Self::Quorum {
                view,
                quorate,
                told,
            } => {
                out.push(QUORUM);
                put64(&mut out, view.0);
                out.push(u8::from(*quorate));
                out.push(u8::from(*told));
            }
        }
        out
    }

    /// The [`Message::Quorum`] `bytes` are, if they are one of this version (without
    /// decoding anything else).
    pub fn quorum(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [VERSION, QUORUM, ..] => Self::decode(bytes).ok(),
            _ => None,
        }
    }

    /// Reads a message another member sent.
    pub fn decode(bytes: &[u8]) -> Result<Self, TransferError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(TransferError::Version);
        }
        Ok(match r.u8()? {
            REQUEST => Self::Request {
                tag: r.u64()?,
                kind: RequestType::try_from(r.u32()?).map_err(|_| TransferError::Corrupt)?,
                data: r.remaining().to_vec(),
            },
            HELLO => {
                let view = ViewId(r.u64()?);
                let standing = match r.u8()? {
                    0 => Standing::Fresh,
                    1 => Standing::Valid,
                    2 => Standing::Stale,
                    3 => Standing::New,
                    _ => return Err(TransferError::Corrupt),
                };
                let state = NodeState::from_bits(r.u8()?);
                let applied = r.u64()?;
                let table = Table {
                    regions: r.u64()?,
                    region_size: r.u64()?,
                    disk: r.u8()? != 0,
                };
                let last = r.u8()? != 0;
                let n = r.count()?;
                let marks = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
                Self::Hello {
                    view,
                    standing,
                    state,
                    applied,
                    table,
                    marks,
                    last,
                }
            }
            CHUNK => Self::Chunk {
                view: ViewId(r.u64()?),
                index: r.u32()?,
                total: r.u32()?,
                bytes: r.remaining().to_vec(),
            },
            WRITTEN => Self::Written {
                generation: r.u64()?,
                ok: r.u8()? != 0,
            },
            IMPORTED => Self::Imported {
                view: ViewId(r.u64()?),
            },
            QUORUM => Self::Quorum {
                view: ViewId(r.u64()?),
                quorate: r.u8()? != 0,
                told: r.u8()? != 0,
            },
            _ => return Err(TransferError::Corrupt),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_bytes_are_refused() {
        let all = [
            Message::Request {
                tag: 7,
                kind: RequestType::Flush,
                data: vec![1, 2, 3],
            },
            Message::Hello {
                view: ViewId(3),
                standing: Standing::Stale,
                state: NodeState {
                    suspended: false,
                    running: true,
                },
                applied: 1 << 40,
                table: Table {
                    regions: 1 << 33,
                    region_size: 1024,
                    disk: true,
                },
                marks: vec![1, 99],
                last: true,
            },
            Message::Chunk {
                view: ViewId(4),
                index: 1,
                total: 2,
                bytes: vec![9; 5],
            },
            Message::Written {
                generation: 12,
                ok: false,
            },
            Message::Imported { view: ViewId(5) },
            Message::Quorum {
                view: ViewId(6),
                quorate: true,
                told: false,
            },
        ];
        for m in all {
            let bytes = m.encode();
            assert_eq!(Message::decode(&bytes), Ok(m.clone()));
            assert!(Message::decode(&bytes[..1]).is_err());
        }
        let chunk = Message::Chunk {
            view: ViewId(1),
            index: 0,
            total: 1,
            bytes: vec![0; 10],
        };
        assert_eq!(chunk.encode().len(), CHUNK_OVERHEAD + 10);
        let hello = Message::Hello {
            view: ViewId(1),
            standing: Standing::Fresh,
            state: NodeState::default(),
            applied: 0,
            table: Table {
                regions: 64,
                region_size: 8,
                disk: false,
            },
            marks: vec![5],
            last: true,
        };
        assert_eq!(hello.encode().len(), HELLO_OVERHEAD + 8);
        assert_eq!(
            Message::decode(&[VERSION + 1, REQUEST]),
            Err(TransferError::Version)
        );
        assert_eq!(Message::decode(&[VERSION, 9]), Err(TransferError::Corrupt));
    }
}
