// SPDX-License-Identifier: GPL-2.0
//! Every state a power cut could leave a mirror in when each of its devices has a volatile
//! write cache of its own, and the mirror log's one promise checked in each.
//!
//! [`crate::crashcheck::replay`] treats the record's flushes as covering every device, so it
//! cannot tell a log that flushes the legs before it writes a clear (the kernel's `disk` log)
//! from one that does not. Here each flush belongs to the device it was sent to: the legs and
//! the log are slices of one dm-log-writes device (one record, in the order the writes
//! completed), and the block layer's completion events say which slice each flush completed
//! on ([`flush_devices_from_trace`]).
//!
//! The crash states after each entry of the record, per device: every write before that
//! device's last flush is on its media; every write since (completed, not yet flushed) may be
//! lost; and for the log, any version of its header and bitmap written since its last flush
//! may be the one on media. Checked region by region: a region's legs *may differ* when their
//! durable bytes differ or either leg holds an unflushed write to it; the log *may call it
//! clean* when the durable version or any version written since says clean. Both at once is
//! a violation: after the cut the mirror would not resync a region whose legs can differ.
//!
//! The report counts how often the invariant was exercised (crash points and regions where the
//! legs may differ), so a run that never saw differing legs can be failed as proving nothing.

use std::fmt;
use std::ops::Range;

use anyhow::{bail, ensure, Context, Result};

use crate::crashcheck::{Entry, Layout, LogView};
use crate::disk::BITS_OFFSET;

/// The device a flush or write belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The first leg.
    Leg0,
    /// The second leg.
    Leg1,
    /// The disk log's device.
    Log,
}

impl Device {
    fn index(self) -> usize {
        self as usize
    }
}

/// One flush as the block layer saw it complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    /// The slice it was sent to.
    pub device: Device,
    /// It completed with an error: nothing it should have covered counts as durable.
    pub failed: bool,
}

/// The flushes among the block layer's completion events, in order: the lines of `trace`
/// (ftrace's text format) for `block_bio_complete` whose device is one of `devices`
/// (`major,minor` of the first leg, the second leg and the log, as ftrace prints them) and
/// whose request flags begin with `F` (a preflush, with or without data).
pub fn flush_devices_from_trace(trace: &str, devices: [&str; 3]) -> Result<Vec<Flush>> {
    let mut out = Vec::new();
    for (n, line) in trace.lines().enumerate() {
        let Some((_, event)) = line.split_once("block_bio_complete: ") else {
            continue;
        };
        let mut fields = event.split_whitespace();
        let (Some(dev), Some(rwbs)) = (fields.next(), fields.next()) else {
            bail!(
                "line {} of the trace: {line:?} is not a block_bio_complete event",
                n + 1
            );
        };
        let Some(at) = devices.iter().position(|d| *d == dev) else {
            continue;
        };
        if rwbs.starts_with('F') {
            // "SECTOR + SECTORS [ERROR]": the error is the last field.
            let error = event
                .split_whitespace()
                .last()
                .and_then(|e| e.strip_prefix('[')?.strip_suffix(']')?.parse::<i32>().ok())
                .with_context(|| format!("line {} of the trace: no [error] in {line:?}", n + 1))?;
            out.push(Flush {
                device: [Device::Leg0, Device::Leg1, Device::Log][at],
                failed: error != 0,
            });
        }
    }
    Ok(out)
}

/// The outcome of a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries in the record.
    pub entries: usize,
    /// Flushes of the first leg, the second leg and the log.
    pub flushes: [usize; 3],
    /// States checked (one per entry, and the empty devices).
    pub crash_points: usize,
    /// Crash points at which some region's legs may differ.
    pub points_legs_may_differ: usize,
    /// Crash points at which the log may be valid (otherwise everything is resynced).
    pub points_log_valid: usize,
    /// (crash point, region) pairs where the legs may differ and the log is valid: how often
    /// the invariant was exercised.
    pub exercised: u64,
    /// Times a region's durable log bit went from clean to dirty and back to clean.
    pub cycles: u64,
    /// The most regions the durable log called dirty at one crash point: what a power cut
    /// there would resync at most (clears that wait for an idle time make it larger).
    pub dirty_max: u64,
    /// The regions the durable log called dirty, summed over the crash points with a valid
    /// log: over `points_log_valid`, the mean a power cut would resync.
    pub dirty_sum: u64,
    /// Crash points at which some region may differ and be called clean.
    pub bad_points: usize,
    /// (crash point, region) pairs where the legs may differ and the log may call it clean.
    pub unmarked: u64,
    /// The first such: entry index (`None`: the empty devices) and region.
    pub first: Option<(usize, u64)>,
}

impl Report {
    /// The mean of the regions the durable log called dirty, over the crash points with a
    /// valid log.
    pub fn dirty_mean(&self) -> f64 {
        if self.points_log_valid == 0 {
            0.0
        } else {
            self.dirty_sum as f64 / self.points_log_valid as f64
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [l0, l1, log] = self.flushes;
        write!(
            f,
            "entries={} flushes=leg0:{l0},leg1:{l1},log:{log} crash_points={} \
             points_legs_may_differ={} points_log_valid={} exercised={} cycles={} dirty_max={} \
             dirty_mean={:.1} bad_points={}",
            self.entries,
            self.crash_points,
            self.points_legs_may_differ,
            self.points_log_valid,
            self.exercised,
            self.cycles,
            self.dirty_max,
            self.dirty_mean(),
            self.bad_points
        )?;
        if let Some((entry, region)) = self.first {
            write!(f, " first_bad=entry:{entry}/region:{region}")?;
        }
        write!(f, "\nunmarked differing regions: {}", self.unmarked)
    }
}

/// The replay's state: what is on each device's media for sure, and what may still be lost.
struct State<'a> {
    layout: &'a Layout,
    regions: u64,
    /// Every completed write applied.
    latest: Vec<u8>,
    /// Only the writes each device's flushes (or FUA) made durable.
    durable: Vec<u8>,
    /// Per leg and region: unflushed writes touching it.
    unflushed: [Vec<u32>; 2],
    /// Per region: the legs' durable bytes differ.
    durable_differs: Vec<bool>,
    /// The log as its last flush left it.
    durable_log: LogView,
    /// Per region: some log version written since the last log flush calls it clean.
    unflushed_clean: Vec<bool>,
    /// Some log version written since the last log flush is a valid log.
    unflushed_valid: bool,
    /// Per region: its durable bit went clean to dirty, waiting to be clean again.
    dirtied: Vec<bool>,
    /// Clean to dirty to clean cycles of durable bits so far.
    cycles: u64,
}

impl<'a> State<'a> {
    fn new(layout: &'a Layout) -> Result<Self> {
        let regions = layout.regions();
        let size = usize::try_from(layout.size()).context("layout too large")?;
        let image = vec![0u8; size];
        let n = regions as usize;
        let durable_log = LogView::read(&image[range(&layout.log)?], regions);
        Ok(Self {
            layout,
            regions,
            latest: image.clone(),
            durable: image,
            unflushed: [vec![0; n], vec![0; n]],
            durable_differs: vec![false; n],
            durable_log,
            unflushed_clean: vec![false; n],
            unflushed_valid: false,
            dirtied: vec![false; n],
            cycles: 0,
        })
    }

    fn device_of(&self, write: &Range<u64>) -> Result<Device> {
        let l = self.layout;
        for (device, r) in [
            (Device::Leg0, &l.leg0),
            (Device::Leg1, &l.leg1),
            (Device::Log, &l.log),
        ] {
            if write.start >= r.start && write.end <= r.end {
                return Ok(device);
            }
        }
        bail!("a write at bytes {write:?} is not within one of the mirror's slices")
    }

    fn slice(&self, device: Device) -> &Range<u64> {
        match device {
            Device::Leg0 => &self.layout.leg0,
            Device::Leg1 => &self.layout.leg1,
            Device::Log => &self.layout.log,
        }
    }

    /// The regions of a leg that `write` (within that leg) touches.
    fn regions_of(&self, device: Device, write: &Range<u64>) -> Range<u64> {
        let leg = self.slice(device);
        let first = (write.start - leg.start) / self.layout.region;
        let end = (write.end - leg.start).div_ceil(self.layout.region);
        first..end.min(self.regions)
    }

    fn recompute_differs(&mut self, regions: Range<u64>) {
        for r in regions {
            let a = region_bytes(self.layout, &self.layout.leg0, r);
            let b = region_bytes(self.layout, &self.layout.leg1, r);
            self.durable_differs[r as usize] = self.durable[a] != self.durable[b];
        }
    }

    /// A write completed: on the media only once its device flushes, unless `fua`.
    fn write(&mut self, write: Range<u64>, data: Option<&[u8]>, fua: bool) -> Result<()> {
        let device = self.device_of(&write)?;
        let bytes = range(&write)?;
        match data {
            Some(d) => self.latest[bytes.clone()].copy_from_slice(d),
            None => self.latest[bytes.clone()].fill(0),
        }
        match device {
            Device::Leg0 | Device::Leg1 => {
                let touched = self.regions_of(device, &write);
                if fua {
                    self.durable[bytes.clone()].copy_from_slice(&self.latest[bytes]);
                    self.recompute_differs(touched);
                } else {
                    for r in touched {
                        self.unflushed[device.index()][r as usize] += 1;
                    }
                }
            }
            Device::Log => {
                if fua {
                    self.log_durable();
                } else {
                    let version =
                        LogView::read(&self.latest[range(&self.layout.log)?], self.regions);
                    self.unflushed_valid |= version.valid;
                    for r in 0..self.regions {
                        self.unflushed_clean[r as usize] |= version.says_clean(r);
                    }
                }
            }
        }
        Ok(())
    }

    /// `device` flushed: everything it completed is on its media.
    fn flush(&mut self, device: Device) -> Result<()> {
        let bytes = range(self.slice(device))?;
        self.durable[bytes.clone()].copy_from_slice(&self.latest[bytes]);
        match device {
            Device::Leg0 | Device::Leg1 => {
                let counts = &mut self.unflushed[device.index()];
                let touched: Vec<u64> = (0..self.regions)
                    .filter(|&r| counts[r as usize] > 0)
                    .collect();
                counts.fill(0);
                for r in touched {
                    self.recompute_differs(r..r + 1);
                }
            }
            Device::Log => self.log_durable(),
        }
        Ok(())
    }

    /// The log's latest version is on its media: the only one a cut can leave.
    fn log_durable(&mut self) {
        let log = self.layout.log.start as usize..self.layout.log.end as usize;
        self.durable[log.clone()].copy_from_slice(&self.latest[log.clone()]);
        let now = LogView::read(&self.latest[log], self.regions);
        for r in 0..self.regions {
            let i = r as usize;
            let (was, is) = (self.durable_log.says_clean(r), now.says_clean(r));
            if was && !is {
                self.dirtied[i] = true;
            }
            if !was && is && std::mem::take(&mut self.dirtied[i]) {
                self.cycles += 1;
            }
        }
        self.durable_log = now;
        self.unflushed_clean.fill(false);
        self.unflushed_valid = false;
    }
}

/// Bytes `r` as indices.
fn range(r: &Range<u64>) -> Result<Range<usize>> {
    Ok(usize::try_from(r.start)?..usize::try_from(r.end)?)
}

/// The bytes of region `r` on `leg`.
fn region_bytes(layout: &Layout, leg: &Range<u64>, r: u64) -> Range<usize> {
    let start = leg.start + r * layout.region;
    let end = (start + layout.region).min(leg.end);
    start as usize..end as usize
}

/// Replays `entries` (from `record`) onto zeroed devices of `layout`, the `n`th flush entry
/// being `flushes[n]`, and checks every crash state.
pub fn replay(
    record: &[u8],
    entries: &[Entry],
    layout: &Layout,
    flushes: &[Flush],
) -> Result<Report> {
    let regions = layout.regions();
    ensure!(
        layout.leg1.end - layout.leg1.start == layout.leg0.end - layout.leg0.start,
        "the legs differ in size"
    );
    ensure!(
        layout.log.end - layout.log.start >= BITS_OFFSET as u64 + regions.div_ceil(8),
        "the log slice cannot hold a bitmap of {regions} regions"
    );
    let recorded = entries.iter().filter(|e| e.is_flush()).count();
    ensure!(
        recorded == flushes.len(),
        "the record holds {recorded} flushes but the trace {}: they are not of one run",
        flushes.len()
    );
    let mut state = State::new(layout)?;
    let mut report = Report {
        entries: entries.len(),
        ..Report::default()
    };
    check(&state, None, &mut report);
    let mut flush_devices = flushes.iter();
    for (i, e) in entries.iter().enumerate() {
        if e.len > 0 {
            let write = e.offset..e.offset + e.len;
            let data = (!e.data.is_empty()).then(|| &record[e.data.clone()]);
            state
                .write(write, data, e.is_fua())
                .with_context(|| format!("entry {i}"))?;
        }
        if e.is_flush() {
            let flush = *flush_devices.next().expect("counted above");
            report.flushes[flush.device.index()] += 1;
            if !flush.failed {
                state.flush(flush.device)?;
            }
        }
        check(&state, Some(i), &mut report);
    }
    report.cycles = state.cycles;
    Ok(report)
}

/// Checks the crash states after entry `at` (`None`: before the first), region by region.
fn check(state: &State<'_>, at: Option<usize>, report: &mut Report) {
    report.crash_points += 1;
    let log_valid = state.durable_log.valid || state.unflushed_valid;
    if log_valid {
        report.points_log_valid += 1;
    }
    let mut may_differ_here = false;
    let mut bad_here = 0;
    if state.durable_log.valid {
        let dirty = (0..state.regions)
            .filter(|&r| !state.durable_log.says_clean(r))
            .count() as u64;
        report.dirty_max = report.dirty_max.max(dirty);
        report.dirty_sum += dirty;
    }
    for r in 0..state.regions {
        let i = r as usize;
        let may_differ =
            state.durable_differs[i] || state.unflushed[0][i] > 0 || state.unflushed[1][i] > 0;
        if !may_differ {
            continue;
        }
        may_differ_here = true;
        if !log_valid {
            continue;
        }
        report.exercised += 1;
        if state.durable_log.says_clean(r) || state.unflushed_clean[i] {
            bad_here += 1;
            report.first.get_or_insert((at.unwrap_or(0), r));
        }
    }
    if may_differ_here {
        report.points_legs_may_differ += 1;
    }
    if bad_here > 0 {
        report.bad_points += 1;
        report.unmarked += bad_here;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crashcheck::parse_record;
    use crate::crashcheck::testing::{layout, patch_header, record};

    const FLUSH: u64 = 1;
    const FUA: u64 = 2;
    /// The log slice: header and bitmap, whose byte is the fill (clean bits of 4 regions).
    const LOG: u64 = 16;

    /// `(sector, sectors, flags, fill byte)`, as `record` takes them.
    type Spec = (u64, u64, u64, u8);

    fn run(entries: &[Spec], devices: &[Device]) -> Report {
        let mut rec = record(entries);
        let parsed = parse_record(&rec).unwrap();
        patch_header(&mut rec, &parsed);
        replay(&rec, &parsed, &layout(), &ok(devices)).unwrap()
    }

    /// Flushes that succeeded, to these devices.
    fn ok(devices: &[Device]) -> Vec<Flush> {
        devices
            .iter()
            .map(|&device| Flush {
                device,
                failed: false,
            })
            .collect()
    }

    use Device::{Leg0, Leg1, Log};

    /// The kernel's disk log: mark made durable, both legs written, legs flushed, then the
    /// clear written and flushed.
    fn disk_log_order(leg_flushes: bool) -> (Vec<Spec>, Vec<Device>) {
        let mut e = vec![
            (LOG, 3, 0, 0b1111),
            (0, 0, FLUSH, 0),
            (LOG, 3, 0, 0b1101),
            (0, 0, FLUSH, 0),
            (1, 1, 0, 9),
            (9, 1, 0, 9),
        ];
        let mut f = vec![Log, Log];
        if leg_flushes {
            e.extend([(0, 0, FLUSH, 0), (0, 0, FLUSH, 0)]);
            f.extend([Leg0, Leg1]);
        }
        e.extend([(LOG, 3, 0, 0b1111), (0, 0, FLUSH, 0)]);
        f.push(Log);
        (e, f)
    }

    #[test]
    fn legs_flushed_before_the_clear_is_fine_and_exercised() {
        let (e, f) = disk_log_order(true);
        let r = run(&e, &f);
        assert_eq!(r.unmarked, 0, "{r}");
        assert_eq!(r.flushes, [1, 1, 3]);
        // From the first leg write to the second leg's flush, region 1 may differ.
        assert_eq!(r.exercised, 3, "{r}");
        assert_eq!(r.cycles, 1, "{r}");
        assert_eq!(r.dirty_max, 1, "{r}");
        assert!(r.dirty_sum >= 1 && r.dirty_mean() <= 1.0, "{r}");
        assert_eq!(r.crash_points, e.len() + 1);
    }

    #[test]
    fn a_clear_before_the_legs_are_flushed_is_found() {
        let (e, f) = disk_log_order(false);
        let r = run(&e, &f);
        // The clean bitmap written (it may land) and then flushed, legs still unflushed.
        assert_eq!((r.bad_points, r.unmarked), (2, 2), "{r}");
        assert_eq!(r.first, Some((6, 1)));
        // One flush of the whole device, as the old replay saw it, would have covered them.
    }

    #[test]
    fn a_mark_answered_before_it_is_durable_is_found() {
        // The dirty bitmap written but not flushed when a leg write completes: a cut may keep
        // the leg write and lose the mark.
        let e = [
            (LOG, 3, 0, 0b1111),
            (0, 0, FLUSH, 0),
            (LOG, 3, 0, 0b1101),
            (1, 1, 0, 9),
        ];
        let r = run(&e, &[Log]);
        assert_eq!(r.first, Some((3, 1)), "{r}");
        // With FUA the mark is durable on completion.
        let e = [
            (LOG, 3, 0, 0b1111),
            (0, 0, FLUSH, 0),
            (LOG, 3, FUA, 0b1101),
            (1, 1, 0, 9),
        ];
        assert_eq!(run(&e, &[Log]).unmarked, 0);
    }

    #[test]
    fn a_leg_flush_covers_only_its_own_leg() {
        // Only leg 0 flushed before the clear: leg 1's write may still be lost.
        let e = [
            (LOG, 3, 0, 0b1101),
            (0, 0, FLUSH, 0),
            (1, 1, 0, 9),
            (9, 1, 0, 9),
            (0, 0, FLUSH, 0),
            (LOG, 3, 0, 0b1111),
            (0, 0, FLUSH, 0),
        ];
        let r = run(&e, &[Log, Leg0, Log]);
        assert!(r.unmarked > 0, "{r}");
        let r = run(&e, &[Log, Leg1, Log]);
        assert!(r.unmarked > 0, "{r}");
    }

    #[test]
    fn a_failed_leg_flush_makes_nothing_durable() {
        let (e, f) = disk_log_order(true);
        let mut rec = record(&e);
        let parsed = parse_record(&rec).unwrap();
        patch_header(&mut rec, &parsed);
        assert_eq!(
            replay(&rec, &parsed, &layout(), &ok(&f)).unwrap().unmarked,
            0
        );
        // Leg 1's flush (the fourth) failed: its write may be lost after the clear.
        let mut flushes = ok(&f);
        flushes[3].failed = true;
        let r = replay(&rec, &parsed, &layout(), &flushes).unwrap();
        assert!(r.unmarked > 0, "{r}");
    }

    #[test]
    fn durable_differing_legs_need_a_dirty_log() {
        // Leg 0 written and flushed, leg 1 never: the legs differ on media for good.
        let e = [
            (LOG, 3, 0, 0b1111),
            (0, 0, FLUSH, 0),
            (2, 1, 0, 9),
            (0, 0, FLUSH, 0),
        ];
        let r = run(&e, &[Log, Leg0]);
        assert_eq!((r.bad_points, r.unmarked), (2, 2), "{r}");
    }

    #[test]
    fn no_valid_log_is_no_exercise() {
        // Without a header the mirror resyncs everything: nothing is checked, nothing counts.
        let rec = record(&[(LOG, 3, 0, 0xff), (0, 1, 0, 9)]);
        let parsed = parse_record(&rec).unwrap();
        let r = replay(&rec, &parsed, &layout(), &[]).unwrap();
        assert_eq!(
            (r.unmarked, r.exercised, r.points_log_valid),
            (0, 0, 0),
            "{r}"
        );
        assert_eq!(r.points_legs_may_differ, 1);
    }

    #[test]
    fn record_and_trace_must_agree() {
        let rec = record(&[(0, 0, FLUSH, 0)]);
        let parsed = parse_record(&rec).unwrap();
        assert!(replay(&rec, &parsed, &layout(), &[]).is_err());
        assert!(replay(&rec, &parsed, &layout(), &ok(&[Log, Log])).is_err());
    }

    #[test]
    fn flushes_are_read_from_the_trace() {
        let trace = "\
# tracer: nop
  kworker/u4:2-61  [000] ..s1.  12.000001: block_bio_complete: 253,2 WS 8 + 8 [0]
  kworker/u4:2-61  [000] ..s1.  12.000002: block_bio_complete: 253,2 FWS 0 + 0 [0]
  kworker/u4:2-61  [000] ..s1.  12.000003: block_bio_complete: 253,3 FWS 0 + 0 [0]
  dm-ulogd-90      [001] .....  12.000004: block_bio_complete: 253,4 FWFS 2048 + 8 [0]
  dm-ulogd-90      [001] .....  12.000005: block_bio_complete: 253,1 FWS 0 + 0 [0]
  dm-ulogd-90      [001] .....  12.000006: block_bio_complete: 1,5 FWS 0 + 0 [0]
";
        let flushes = flush_devices_from_trace(trace, ["253,2", "253,3", "253,4"]).unwrap();
        assert_eq!(flushes, ok(&[Leg0, Leg1, Log]));
        let failed = "x: block_bio_complete: 253,2 FWS 0 + 0 [-5]";
        let flushes = flush_devices_from_trace(failed, ["253,2", "253,3", "253,4"]).unwrap();
        assert!(flushes[0].failed);
        assert!(
            flush_devices_from_trace("x block_bio_complete: 253,2", ["253,2", "a", "b"]).is_err()
        );
    }
}
