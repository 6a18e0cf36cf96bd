// SPDX-License-Identifier: GPL-2.0
//! Writes whose acknowledgement outlives a power cut, and the check that they survived it.
//!
//! For the power-cut test that kills the whole VM: a writer writes 4 KiB blocks to a mirror
//! one at a time (`O_DIRECT | O_DSYNC`), and after each acknowledged write tells the host
//! (`ack <mirror> <n>` on a serial port, which the host keeps when the VM dies). Write `n` goes
//! to block [`block_of`]`(n)` and holds `n` in every line, so after the cut the blocks say
//! which write they hold. Every block must hold its last acknowledged write, or the one write
//! that was in flight at the cut (the writer has at most one).

use std::collections::HashMap;
use std::fmt;

use anyhow::{bail, Context, Result};

/// Bytes of one block.
pub const BLOCK: usize = 4096;
/// Bytes of one line of a block: `m=<mirror> n=<10 digits>\n`, padded with spaces.
const LINE: usize = 32;

/// The block write `n` goes to, on a device of `blocks` blocks: spread, and every block is
/// hit again and again.
pub fn block_of(n: u64, blocks: u64) -> u64 {
    n.wrapping_mul(7919) % blocks
}

/// The contents of write `n` of mirror `mirror`.
pub fn content(mirror: u32, n: u64) -> Vec<u8> {
    let mut line = format!("m={mirror} n={n:010}");
    line.extend(std::iter::repeat_n(' ', LINE - 1 - line.len()));
    line.push('\n');
    line.repeat(BLOCK / LINE).into_bytes()
}

/// What a block holds: `Some((mirror, n))` for a whole write, `None` for zeros.
fn decode(block: &[u8]) -> Result<Option<(u32, u64)>> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let text = std::str::from_utf8(&block[..LINE]).context("not a written block")?;
    let mut words = text.split_whitespace();
    let parse = |w: Option<&str>, key: &str| -> Result<u64> {
        w.and_then(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("not a written block: {text:?}"))
    };
    let mirror = u32::try_from(parse(words.next(), "m=")?)?;
    let n = parse(words.next(), "n=")?;
    if block != content(mirror, n).as_slice() {
        bail!("block of write {n} is torn or mixed");
    }
    Ok(Some((mirror, n)))
}

/// The last acknowledged write of `mirror` in an ack log (`ack <mirror> <n>` lines; others
/// are ignored); 0 when none.
pub fn last_ack(acks: &str, mirror: u32) -> u64 {
    acks.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("ack") && w.next()?.parse::<u32>().ok()? == mirror)
                .then(|| w.next()?.parse::<u64>().ok())
                .flatten()
        })
        .max()
        .unwrap_or(0)
}

/// The outcome of checking a device after a cut.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Survival {
    /// Blocks holding their last acknowledged write.
    pub acked: u64,
    /// Blocks holding the write in flight at the cut.
    pub in_flight: u64,
    /// Blocks that lost an acknowledged write or hold something else: (block, what).
    pub lost: Vec<(u64, String)>,
}

impl fmt::Display for Survival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "blocks with their acknowledged write: {}, with the write in flight: {}, lost: {}",
            self.acked,
            self.in_flight,
            self.lost.len()
        )?;
        for (block, what) in self.lost.iter().take(5) {
            write!(f, "\n  block {block}: {what}")?;
        }
        Ok(())
    }
}

/// Checks `device` (the mirror's contents after the cut) against the writes of `mirror`
/// acknowledged up to `acked`: each block holds the last of them that went to it, or write
/// `acked + 1` (in flight at the cut), or zeros if none went to it.
pub fn check(device: &[u8], mirror: u32, acked: u64) -> Survival {
    let blocks = (device.len() / BLOCK) as u64;
    let mut last: HashMap<u64, u64> = HashMap::new();
    for n in 1..=acked {
        last.insert(block_of(n, blocks), n);
    }
    let in_flight = acked + 1;
    let mut s = Survival::default();
    for b in 0..blocks {
        let at = (b * BLOCK as u64) as usize;
        let want = last.get(&b).copied();
        let may_be_new = block_of(in_flight, blocks) == b;
        match decode(&device[at..at + BLOCK]) {
            Ok(Some((m, n))) if m == mirror && Some(n) == want => s.acked += 1,
            Ok(Some((m, n))) if m == mirror && n == in_flight && may_be_new => s.in_flight += 1,
            Ok(None) if want.is_none() => {}
            Ok(got) => s.lost.push((
                b,
                format!("holds {got:?}, acknowledged {want:?} (in flight: {in_flight})"),
            )),
            Err(e) => s.lost.push((b, format!("{e:#}"))),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(blocks: u64, mirror: u32, upto: u64) -> Vec<u8> {
        let mut d = vec![0u8; blocks as usize * BLOCK];
        for n in 1..=upto {
            let at = block_of(n, blocks) as usize * BLOCK;
            d[at..at + BLOCK].copy_from_slice(&content(mirror, n));
        }
        d
    }

    #[test]
    fn blocks_say_which_write_they_hold() {
        let c = content(3, 42);
        assert_eq!(c.len(), BLOCK);
        assert_eq!(decode(&c).unwrap(), Some((3, 42)));
        assert_eq!(decode(&[0; BLOCK]).unwrap(), None);
        let mut torn = c.clone();
        torn[BLOCK - 1] = b'x';
        assert!(decode(&torn).is_err());
    }

    #[test]
    fn acks_are_read_per_mirror() {
        let acks = "ack 1 1\nack 2 1\nack 1 2\ngarbage\nack 1 x\nack 2 2\nack 2 3\n";
        assert_eq!(
            (last_ack(acks, 1), last_ack(acks, 2), last_ack(acks, 5)),
            (2, 3, 0)
        );
    }

    #[test]
    fn acknowledged_and_in_flight_writes_pass_lost_ones_fail() {
        let blocks = 64;
        let d = device(blocks, 1, 200);
        let s = check(&d, 1, 200);
        assert!(s.lost.is_empty(), "{s}");
        assert_eq!(
            s.acked,
            (1..=200)
                .map(|n| block_of(n, blocks))
                .collect::<std::collections::HashSet<_>>()
                .len() as u64
        );
        // Write 201 was in flight and landed.
        let s = check(&device(blocks, 1, 201), 1, 200);
        assert_eq!((s.in_flight, s.lost.len()), (1, 0), "{s}");
        // Write 200 was acknowledged but the device lacks it.
        let s = check(&device(blocks, 1, 199), 1, 200);
        assert_eq!(s.lost.len(), 1, "{s}");
        assert_eq!(s.lost[0].0, block_of(200, blocks));
        // Another mirror's data is not this one's.
        assert!(!check(&device(blocks, 2, 200), 1, 200).lost.is_empty());
    }
}
