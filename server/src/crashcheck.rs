// SPDX-License-Identifier: GPL-2.0
//! Every state a power cut could leave a mirror in, from a dm-log-writes record, and the
//! mirror log's one promise checked in each.
//!
//! The power-cut test puts a mirror's two legs and its disk log on three slices of one device
//! that dm-log-writes records (`Documentation/admin-guide/device-mapper/log-writes.rst`).
//! dm-log-writes logs a write only once a flush (or its own FUA) has made it durable, in the
//! order the writes completed, so every prefix of its record is a state the device could be
//! in after a power cut. Replaying the record entry by entry in memory visits all of them. In
//! each, every region whose legs differ must be dirty (not clean) in the log as the log's
//! header and bitmap then stand: after a cut the mirror resyncs exactly the dirty regions, and
//! a differing region called clean stays different for good.
//!
//! Besides the prefix itself, each state is also checked with the log as it stood at the last
//! flush, while the legs have every write logged since: a cut may keep leg writes that
//! completed after the log's last flush and lose the log's own.
//!
//! The record's format: a super block (`log_write_super`) in the first device sector, then
//! for each entry one sector holding a `log_write_entry` (a mark's text follows it in that
//! sector), then, for writes, `nr_sectors` sectors of data. Numbers are little-endian; sectors
//! are the recorded device's logical blocks (`sectorsize` in the super).

use std::fmt;
use std::ops::Range;

use anyhow::{bail, ensure, Context, Result};

use crate::disk::{test_bit, DiskHeader, BITS_OFFSET, MAGIC, VERSION};

/// `WRITE_LOG_MAGIC`.
const RECORD_MAGIC: u64 = 0x006a_7366_7773_6872;
/// `WRITE_LOG_VERSION`.
const RECORD_VERSION: u64 = 1;
/// `LOG_FLUSH_FLAG`: the entry is a flush; everything logged before it is durable.
const FLUSH: u64 = 1 << 0;
/// `LOG_FUA_FLAG`: the write was durable on completion.
const FUA: u64 = 1 << 1;
/// `LOG_DISCARD_FLAG`: the range was discarded (reads back as zeros here).
const DISCARD: u64 = 1 << 2;
/// `LOG_MARK_FLAG`: a mark set with `dmsetup message ... mark <text>`.
const MARK: u64 = 1 << 3;
/// Bytes of `struct log_write_entry`.
const ENTRY_SIZE: usize = 32;

/// One entry of the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// First byte written on the recorded device.
    pub offset: u64,
    /// Bytes written (or discarded); 0 for flushes and marks.
    pub len: u64,
    /// `LOG_*_FLAG` bits.
    pub flags: u64,
    /// Where the written data sits in the record (empty for discards, flushes and marks).
    pub data: Range<usize>,
    /// A mark's text.
    pub mark: Option<String>,
}

impl Entry {
    /// A flush: everything of its device completed before it was sent is durable.
    pub fn is_flush(&self) -> bool {
        self.flags & FLUSH != 0
    }

    /// A write that was durable on completion.
    pub fn is_fua(&self) -> bool {
        self.flags & FUA != 0
    }
}

/// Reads every entry of a dm-log-writes record held in `record`.
pub fn parse_record(record: &[u8]) -> Result<Vec<Entry>> {
    ensure!(
        record.len() >= 28,
        "the record is shorter than its super block"
    );
    let le64 = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"));
    ensure!(
        le64(0) == RECORD_MAGIC,
        "no dm-log-writes record here (bad magic {:#x})",
        le64(0)
    );
    ensure!(
        le64(8) == RECORD_VERSION,
        "dm-log-writes record version {} (this reads {RECORD_VERSION})",
        le64(8)
    );
    let count = le64(16);
    let sector = u32::from_le_bytes(record[24..28].try_into().expect("4 bytes")) as usize;
    ensure!(
        sector >= ENTRY_SIZE && sector.is_power_of_two(),
        "bad sector size {sector} in the record"
    );
    let mut entries = Vec::new();
    let mut at = sector;
    for i in 0..count {
        ensure!(
            at + sector <= record.len(),
            "entry {i} of {count} lies past the end of the record"
        );
        let flags = le64(at + 16);
        let sectors = le64(at + 8);
        let data_len = le64(at + 24) as usize;
        let len = sectors * sector as u64;
        let mut entry = Entry {
            offset: le64(at) * sector as u64,
            len,
            flags,
            data: 0..0,
            mark: None,
        };
        at += sector;
        if flags & MARK != 0 {
            let text = record
                .get(at - sector + ENTRY_SIZE..at - sector + ENTRY_SIZE + data_len)
                .context("a mark longer than its sector")?;
            entry.mark = Some(String::from_utf8_lossy(text).into_owned());
        } else if flags & DISCARD == 0 && len > 0 {
            let end = at + len as usize;
            ensure!(end <= record.len(), "entry {i}'s data lies past the end");
            entry.data = at..end;
            at = end;
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Where the mirror's pieces lie on the recorded device, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The first leg.
    pub leg0: Range<u64>,
    /// The second leg.
    pub leg1: Range<u64>,
    /// The disk log's device.
    pub log: Range<u64>,
    /// Bytes per region.
    pub region: u64,
}

impl Layout {
    /// Regions of the mirror.
    pub fn regions(&self) -> u64 {
        (self.leg0.end - self.leg0.start).div_ceil(self.region)
    }

    /// Bytes of the recorded device the mirror's slices span.
    pub fn size(&self) -> u64 {
        self.leg0.end.max(self.leg1.end).max(self.log.end)
    }
}

/// What the log says of the regions in one state.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogView {
    /// Header and bitmap are a log (magic and version); otherwise the mirror starts a new log
    /// at activation and resyncs every region.
    pub(crate) valid: bool,
    nr_regions: u64,
    bits: Vec<u8>,
}

impl LogView {
    pub(crate) fn read(log: &[u8], regions: u64) -> Self {
        let h = DiskHeader::decode(log);
        let valid = h.magic == MAGIC && (h.version == VERSION || h.version == 1);
        let bytes = regions.div_ceil(8) as usize;
        Self {
            valid,
            nr_regions: h.nr_regions,
            bits: log[BITS_OFFSET..BITS_OFFSET + bytes].to_vec(),
        }
    }

    pub(crate) fn says_clean(&self, region: u64) -> bool {
        self.valid && region < self.nr_regions && test_bit(&self.bits, region)
    }
}

/// The outcome of a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries in the record.
    pub entries: usize,
    /// Of them, flushes.
    pub flushes: usize,
    /// States checked (one per entry, and the empty device).
    pub crash_points: usize,
    /// Crash points at which some region was unmarked and differing.
    pub bad_points: usize,
    /// (crash point, region) pairs where the legs differ but the log calls the region clean.
    pub unmarked: u64,
    /// The first such: entry index and region.
    pub first: Option<(usize, u64)>,
    /// Regions that differed at the end of the record.
    pub differing_at_end: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "entries={} flushes={} crash_points={} bad_points={} differing_at_end={}",
            self.entries, self.flushes, self.crash_points, self.bad_points, self.differing_at_end
        )?;
        if let Some((entry, region)) = self.first {
            write!(f, " first_bad=entry:{entry}/region:{region}")?;
        }
        write!(f, "\nunmarked differing regions: {}", self.unmarked)
    }
}

/// Replays `entries` (from `record`) onto a zeroed device of `layout`, checking every state.
pub fn replay(record: &[u8], entries: &[Entry], layout: &Layout) -> Result<Report> {
    let regions = layout.regions();
    ensure!(
        layout.leg1.end - layout.leg1.start == layout.leg0.end - layout.leg0.start,
        "the legs differ in size"
    );
    ensure!(
        layout.log.end - layout.log.start >= BITS_OFFSET as u64 + regions.div_ceil(8),
        "the log slice cannot hold a bitmap of {regions} regions"
    );
    let size = usize::try_from(layout.size()).context("layout too large")?;
    let mut image = vec![0u8; size];
    let mut differs = vec![false; regions as usize];
    let log_range = layout.log.start as usize..layout.log.end as usize;
    let mut now = LogView::read(&image[log_range.clone()], regions);
    let mut at_flush = now.clone();
    let mut report = Report {
        entries: entries.len(),
        ..Report::default()
    };
    for (i, e) in entries.iter().enumerate() {
        if e.is_flush() {
            report.flushes += 1;
        }
        if e.len > 0 {
            let range = usize::try_from(e.offset)?..usize::try_from(e.offset + e.len)?;
            if range.end > image.len() {
                bail!("entry {i} writes past the mirror's slices");
            }
            if e.data.is_empty() {
                image[range.clone()].fill(0);
            } else {
                image[range.clone()].copy_from_slice(&record[e.data.clone()]);
            }
            for r in touched(layout, e.offset..e.offset + e.len) {
                let (a, b) = (region_bytes(layout, 0, r), region_bytes(layout, 1, r));
                differs[r as usize] = image[a] != image[b];
            }
            if overlaps(&layout.log, e.offset..e.offset + e.len) {
                now = LogView::read(&image[log_range.clone()], regions);
                if e.flags & FUA != 0 {
                    at_flush = now.clone();
                }
            }
        }
        if e.is_flush() {
            at_flush = now.clone();
        }
        report.crash_points += 1;
        let bad = (0..regions)
            .filter(|&r| differs[r as usize] && (now.says_clean(r) || at_flush.says_clean(r)))
            .inspect(|&r| {
                report.first.get_or_insert((i, r));
            })
            .count() as u64;
        if bad > 0 {
            report.bad_points += 1;
            report.unmarked += bad;
        }
    }
    report.crash_points += 1;
    report.differing_at_end = differs.iter().filter(|d| **d).count() as u64;
    Ok(report)
}

/// Checks the invariant once, on the devices as a power cut left them (before the mirror is
/// activated again): `legs` and `log` hold the two legs' and the log device's bytes.
///
/// Returns the regions whose legs differ although the log calls them clean, and how many
/// differ in all.
pub fn check_devices(leg0: &[u8], leg1: &[u8], log: &[u8], region: u64) -> Result<(Vec<u64>, u64)> {
    ensure!(leg0.len() == leg1.len(), "the legs differ in size");
    ensure!(region > 0, "region size 0");
    let regions = (leg0.len() as u64).div_ceil(region);
    ensure!(
        log.len() as u64 >= BITS_OFFSET as u64 + regions.div_ceil(8),
        "the log device cannot hold a bitmap of {regions} regions"
    );
    let view = LogView::read(log, regions);
    let mut unmarked = Vec::new();
    let mut differing = 0;
    for r in 0..regions {
        let start = (r * region) as usize;
        let end = (start + region as usize).min(leg0.len());
        if leg0[start..end] != leg1[start..end] {
            differing += 1;
            if view.says_clean(r) {
                unmarked.push(r);
            }
        }
    }
    Ok((unmarked, differing))
}

fn overlaps(a: &Range<u64>, b: Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Regions of the legs that bytes `write` touch.
fn touched(layout: &Layout, write: Range<u64>) -> impl Iterator<Item = u64> + '_ {
    [&layout.leg0, &layout.leg1]
        .into_iter()
        .flat_map(move |leg| {
            let start = write.start.max(leg.start);
            let end = write.end.min(leg.end);
            if start < end {
                (start - leg.start) / layout.region..(end - leg.start).div_ceil(layout.region)
            } else {
                0..0
            }
        })
}

/// The bytes of region `r` on leg `leg`.
fn region_bytes(layout: &Layout, leg: usize, r: u64) -> Range<usize> {
    let l = if leg == 0 { &layout.leg0 } else { &layout.leg1 };
    let start = l.start + r * layout.region;
    let end = (start + layout.region).min(l.end);
    start as usize..end as usize
}

/// Records and a layout for the replays' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Sectors of the test records.
    pub(crate) const SECTOR: usize = 512;

    /// Builds a record: `(sector, sectors, flags, fill byte)` per entry. A write to the log
    /// slice (sector 16, 3 sectors) fills its bitmap byte with the fill byte: the regions'
    /// clean bits; `run` patches a header in.
    pub(crate) fn record(entries: &[(u64, u64, u64, u8)]) -> Vec<u8> {
        let mut r = vec![0u8; SECTOR];
        r[0..8].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        r[8..16].copy_from_slice(&RECORD_VERSION.to_le_bytes());
        r[16..24].copy_from_slice(&(entries.len() as u64).to_le_bytes());
        r[24..28].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        for &(sector, sectors, flags, fill) in entries {
            let mut h = vec![0u8; SECTOR];
            h[0..8].copy_from_slice(&sector.to_le_bytes());
            h[8..16].copy_from_slice(&sectors.to_le_bytes());
            h[16..24].copy_from_slice(&flags.to_le_bytes());
            r.extend_from_slice(&h);
            if flags & (DISCARD | MARK) == 0 {
                r.extend(std::iter::repeat_n(fill, sectors as usize * SECTOR));
            }
        }
        r
    }

    /// Legs of 4 regions of one sector each at sectors 0 and 8, the log at sector 16.
    pub(crate) fn layout() -> Layout {
        Layout {
            leg0: 0..4 * 512,
            leg1: 8 * 512..12 * 512,
            log: 16 * 512..24 * 512,
            region: 512,
        }
    }

    /// Makes every write to the log slice's first sector a valid header of 4 regions.
    pub(crate) fn patch_header(rec: &mut [u8], entries: &[Entry]) {
        for e in entries {
            if e.offset == 16 * 512 && !e.data.is_empty() {
                let h = DiskHeader {
                    magic: MAGIC,
                    version: VERSION,
                    nr_regions: 4,
                };
                h.encode(&mut rec[e.data.start..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::testing::{layout, patch_header, record, SECTOR};

    fn run(entries: &[(u64, u64, u64, u8)]) -> Report {
        let mut rec = record(entries);
        let parsed = parse_record(&rec).unwrap();
        patch_header(&mut rec, &parsed);
        replay(&rec, &parsed, &layout()).unwrap()
    }

    #[test]
    fn records_parse_with_data_marks_and_discards() {
        let mut rec = record(&[(2, 1, 0, 7), (0, 0, FLUSH, 0), (4, 2, DISCARD, 0)]);
        let n = rec.len();
        let mut mark = vec![0u8; SECTOR];
        mark[16..24].copy_from_slice(&MARK.to_le_bytes());
        mark[24..32].copy_from_slice(&3u64.to_le_bytes());
        mark[32..35].copy_from_slice(b"end");
        rec.extend_from_slice(&mark);
        rec[16..24].copy_from_slice(&4u64.to_le_bytes());
        let e = parse_record(&rec).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!((e[0].offset, e[0].len), (1024, 512));
        assert!(rec[e[0].data.clone()].iter().all(|&b| b == 7));
        assert!(e[1].is_flush() && e[1].data.is_empty());
        assert_eq!((e[2].len, e[2].data.clone()), (1024, 0..0));
        assert_eq!(e[3].mark.as_deref(), Some("end"));
        assert_eq!(n + SECTOR, rec.len());
        assert!(parse_record(&rec[..100]).is_err());
        rec[0] ^= 1;
        assert!(parse_record(&rec).is_err());
    }

    #[test]
    fn a_write_behind_a_dirty_mark_is_fine() {
        // Log: region 1 dirty (bits 1101), flushed; then one leg written in region 1.
        let r = run(&[
            (16, 3, 0, 0b1101),
            (0, 0, FLUSH, 0),
            (1, 1, 0, 9),
            (0, 0, FLUSH, 0),
        ]);
        assert_eq!(r.unmarked, 0, "{r}");
        assert_eq!(r.differing_at_end, 1);
        assert_eq!(r.crash_points, 5);
    }

    #[test]
    fn a_differing_region_called_clean_is_found() {
        // The log calls every region clean while one leg of region 2 is written.
        let r = run(&[
            (16, 3, 0, 0b1111),
            (0, 0, FLUSH, 0),
            (2, 1, 0, 9),
            (0, 0, FLUSH, 0),
        ]);
        assert_eq!(r.first, Some((2, 2)), "{r}");
        assert_eq!((r.bad_points, r.unmarked), (2, 2));
        // Written to both legs, the region no longer differs.
        let r = run(&[(16, 3, 0, 0b1111), (2, 1, 0, 9), (10, 1, 0, 9)]);
        assert_eq!(
            r.unmarked, 1,
            "only the state between the two leg writes: {r}"
        );
    }

    #[test]
    fn a_log_write_after_the_last_flush_may_be_lost() {
        // Region 0 marked dirty but not flushed, then cleared and flushed... here: dirty mark
        // written without a flush, then a leg write: a cut may keep the leg and lose the mark.
        let r = run(&[
            (16, 3, 0, 0b1111),
            (0, 0, FLUSH, 0),
            (16, 3, 0, 0b1110),
            (0, 1, 0, 9),
        ]);
        assert_eq!(r.first, Some((3, 0)), "{r}");
        // With a FUA mark, or a flush between, it is durable.
        for marked in [
            vec![
                (16, 3, 0, 0b1111),
                (0, 0, FLUSH, 0),
                (16, 3, FUA, 0b1110),
                (0, 1, 0, 9),
            ],
            vec![
                (16, 3, 0, 0b1111),
                (0, 0, FLUSH, 0),
                (16, 3, 0, 0b1110),
                (0, 0, FLUSH, 0),
                (0, 1, 0, 9),
            ],
        ] {
            assert_eq!(run(&marked).unmarked, 0);
        }
    }

    #[test]
    fn no_log_yet_means_a_full_resync() {
        // Without a valid header the mirror starts a new log: nothing counts as clean.
        let rec = record(&[(16, 3, 0, 0xff), (0, 1, 0, 9)]);
        let parsed = parse_record(&rec).unwrap();
        assert_eq!(replay(&rec, &parsed, &layout()).unwrap().unmarked, 0);
    }

    #[test]
    fn devices_are_checked_region_by_region() {
        let mut log = vec![0u8; 2048];
        DiskHeader {
            magic: MAGIC,
            version: VERSION,
            nr_regions: 4,
        }
        .encode(&mut log);
        log[BITS_OFFSET] = 0b1011; // region 2 dirty
        let leg0 = vec![0u8; 4 * 512];
        let mut leg1 = leg0.clone();
        leg1[2 * 512] = 1; // differs in region 2: marked
        assert_eq!(check_devices(&leg0, &leg1, &log, 512).unwrap(), (vec![], 1));
        leg1[3 * 512 + 7] = 1; // and in region 3, which the log calls clean
        assert_eq!(
            check_devices(&leg0, &leg1, &log, 512).unwrap(),
            (vec![3], 2)
        );
        log[0] = 0; // no log: a full resync covers everything
        assert_eq!(check_devices(&leg0, &leg1, &log, 512).unwrap(), (vec![], 2));
    }

    #[test]
    fn regions_touched_by_a_write_span_both_legs() {
        let l = layout();
        let t: Vec<u64> = touched(&l, 512..3 * 512 + 1).collect();
        assert_eq!(t, vec![1, 2, 3]);
        let t: Vec<u64> = touched(&l, 9 * 512..10 * 512).collect();
        assert_eq!(t, vec![1]);
        assert_eq!(touched(&l, 16 * 512..17 * 512).count(), 0);
    }
}
