// SPDX-License-Identifier: GPL-2.0
//! State transfer: a snapshot of the replicated state, cut into messages the group carries.
//!
//! The snapshot is taken at a point of the agreed order (the cut), so a joiner that imports
//! it and then applies what was delivered after that point holds what the others hold.

/// Why a snapshot could not be imported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Bytes that are no snapshot of this format.
    #[error("state transfer from another version of dm-ulogd: run one version on every node")]
    Version,
    /// The snapshot ends early or holds impossible values.
    #[error("corrupt state transfer")]
    Corrupt,
    /// The nodes' tables disagree.
    #[error(
        "the log's table differs between nodes: here {} regions of {} sectors, on the node \
         sending the state {} regions of {} sectors (or another log type): load the same \
         table on every node", .ours.0, .ours.1, .theirs.0, .theirs.1
    )]
    OtherTable {
        /// (regions, region size) here.
        ours: (u64, u64),
        /// (regions, region size) of the sender.
        theirs: (u64, u64),
    },
    /// The snapshot's chunks arrived out of order.
    #[error("state transfer chunk {got} arrived where {want} was expected")]
    OutOfOrder {
        /// The chunk expected.
        want: u32,
        /// The chunk that came.
        got: u32,
    },
}

/// Reads little-endian fields off a byte slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], TransferError> {
        let (head, tail) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or(TransferError::Corrupt)?;
        self.bytes = tail;
        Ok(*head)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, TransferError> {
        Ok(self.take::<1>()?[0])
    }

    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, TransferError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, TransferError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    /// A `u64` count of items that follow, each at least one byte: a corrupt count fails
    /// here instead of looping long.
    pub fn count(&mut self) -> Result<u64, TransferError> {
        let n = self.u64()?;
        if n > self.bytes.len() as u64 {
            return Err(TransferError::Corrupt);
        }
        Ok(n)
    }

    /// Exactly `len` bytes, which must be all that is left.
    pub fn rest(&mut self, len: usize) -> Result<&'a [u8], TransferError> {
        if self.bytes.len() != len {
            return Err(TransferError::Corrupt);
        }
        Ok(std::mem::take(&mut self.bytes))
    }

    /// Whatever is left.
    pub fn remaining(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

/// Collects the chunks of one snapshot, in order.
#[derive(Debug, Default)]
pub struct Assembly {
    bytes: Vec<u8>,
    next: u32,
}

impl Assembly {
    /// Adds chunk `index` of `total`; returns the whole snapshot after the last one.
    pub fn add(
        &mut self,
        index: u32,
        total: u32,
        chunk: &[u8],
    ) -> Result<Option<Vec<u8>>, TransferError> {
        if index != self.next || index >= total {
            return Err(TransferError::OutOfOrder {
                want: self.next,
                got: index,
            });
        }
        self.bytes.extend_from_slice(chunk);
        self.next += 1;
        Ok((self.next == total).then(|| std::mem::take(&mut self.bytes)))
    }
}
