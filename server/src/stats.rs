// SPDX-License-Identifier: GPL-2.0
//! Request counts and service times (receipt to reply sent), per request type, for the
//! SIGUSR1 status dump; and the live counters file (`--counters`) that scripts read.
//!
//! Times go into fixed log-linear histograms, so recording never allocates and percentiles
//! are exact to within 1/16 of the value.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use anyhow::Result;
use dm_ulog_uapi::RequestType;
use memmap2::MmapMut;

use crate::cli::Fatal;

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every `u32` microsecond value (over an hour).
const BUCKETS: usize = (SUB + (32 - SUB_BITS as u64) * SUB) as usize;

/// A histogram of microsecond values.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    let v = v.min(u64::from(u32::MAX));
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(exp - SUB_BITS) * SUB + sub) as usize
}

/// The largest value that lands in bucket `i`.
fn bucket_max(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let exp = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    let shift = exp - u64::from(SUB_BITS);
    ((SUB + sub + 1) << shift) - 1
}

impl Histogram {
    /// Adds one value.
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` of the values lie (an upper bound within 1/16).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_max(i).min(self.max);
            }
        }
        self.max
    }
}

/// Counters of everything the server received.
#[derive(Default)]
pub struct Stats {
    by_type: [Histogram; RequestType::ALL.len()],
    /// Requests of every known type: the sum of `by_type`'s counts.
    total: u64,
    unknown: u64,
    malformed: u64,
}

impl Stats {
    /// A request of `kind` (`None` for an unknown type) answered after `elapsed`.
    pub fn record(&mut self, kind: Option<RequestType>, elapsed: Duration) {
        match kind {
            Some(k) => {
                self.by_type[k.index()].record(elapsed.as_micros() as u64);
                self.total += 1;
            }
            None => self.unknown += 1,
        }
    }

    /// A message that was no valid request.
    pub fn malformed(&mut self) {
        self.malformed += 1;
    }

    /// Requests of one type.
    pub fn of(&self, kind: RequestType) -> &Histogram {
        &self.by_type[kind.index()]
    }

    /// Requests answered, of every known type.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// One line per request type seen, then the unknown and malformed counts.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        RequestType::ALL
            .iter()
            .filter(|k| self.of(**k).count() > 0)
            .map(|k| format!("requests {} {}", k.name(), self.of(*k)))
            .chain(std::iter::once(format!(
                "requests unknown={} malformed={}",
                self.unknown, self.malformed
            )))
    }
}

/// Hex digits of each count in the live counters file: any `u64`, so a field never grows.
const DIGITS: usize = 16;
/// Where the total's digits start: after `TOTAL=`.
const TOTAL_AT: usize = "TOTAL=".len();

/// `--counters FILE`: the request counts in a file that the server maps shared and updates
/// in place on every request it counts, without a system call, for scripts to read at any
/// time (`make bench` reads its windows from it).
///
/// The file is one line of fixed width, every request type always present in
/// [`RequestType::ALL`]'s order, each count in 16 lower-case hex digits (a shell reads one
/// with `$((0x...))`):
///
/// ```text
/// TOTAL=0000000000000003 CTR=0000000000000001 DTR=0000000000000000 ... GET_IN_SYNC_RANGES=0000000000000000
/// ```
///
/// `TOTAL` is the requests of every known type (unknown types and malformed messages are
/// in the SIGUSR1 status only). The line is also a list of shell assignments: a shell's
/// `. FILE` sets `TOTAL`, `CTR`, ... to the digits, taking the line with one read(2),
/// where the `read` builtin takes a byte per system call.
///
/// An update stores the type's 16 digits, then (after a store fence) the total's; nothing
/// else in the file ever changes. A reader takes no lock, so what it sees depends on how it
/// reads:
///
/// - in one read(2) (`.`, `cat`, any program's read of the file), on one CPU: the line of
///   one instant, between two updates (unless the reader is preempted within the kernel's
///   copy and the server runs meanwhile);
/// - in pieces (the shell's `read`: a byte per system call, a thousand for the line), fields
///   of different instants: a request counted meanwhile may be in its type's count and not
///   in the total, or the reverse. And a field may mix the digits of two counts: when a
///   carry reaches a digit the reader has taken already, the digits after it come from the
///   new count, and the value read falls short of the old count by less than 16^k, for a
///   carry into the k-th digit from the right (the last is the 0th): 0x0ff becoming 0x100
///   can read as 0x000. That needs an update among the few system calls between the
///   reader's taking that digit and the field's last: on a host with two CPUs and some
///   20,000 requests a second, about one such read in a thousand was short, by 1 to 216;
/// - with several CPUs, even a read(2) may catch an update's stores half done, with the
///   same effect, in a window of nanoseconds (none in 40,000 reads on that host).
///
/// The server makes the file beside FILE (`FILE.tmp`, removed first if left over) and
/// renames it over FILE once it holds a whole line, so that a reader never sees a short
/// one and a server still running on an old FILE keeps its own. The file stays when the
/// server exits, with the last counts. Shortening it while the server runs kills the
/// server (SIGBUS), as it would any program with a file mapped.
pub struct LiveCounters {
    map: MmapMut,
    /// Where each type's digits start, by [`RequestType::index`].
    at: [usize; RequestType::ALL.len()],
}

impl LiveCounters {
    /// Makes `path` hold `stats`' counts, and maps it. A failure is a [`Fatal`]
    /// configuration error that names the file and what to do.
    pub fn create(path: &Path, stats: &Stats) -> Result<Self> {
        let (line, at) = Self::layout(stats);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let fail = |what: &str, file: &Path, e: io::Error| {
            Fatal::config(format!(
                "cannot {what} {}: {e} (give --counters a path in a writable directory on a \
                 local file system, best a tmpfs such as /run/dm-ulogd: the server updates \
                 the file on every request)",
                file.display()
            ))
        };
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("remove the counters file left over at", &tmp, e).into()),
        }
        // A new file, never one a link points to (FILE is often in a shared /tmp).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| fail("create the counters file", &tmp, e))?;
        let mapped = file.set_len(line.len() as u64).and_then(|()| {
            // SAFETY: the file was just created with O_EXCL and is known only by the
            // temporary name until the rename below; nothing of ours shortens it. Another
            // process that shortens it (the admin's) makes our stores fault, which ends the
            // server with SIGBUS: no memory is ever read or written out of bounds.
            unsafe { MmapMut::map_mut(&file) }
        });
        let mut map = match mapped {
            Ok(map) => map,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(fail("map the counters file", &tmp, e).into());
            }
        };
        map.copy_from_slice(&line);
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail("create the counters file", path, e).into());
        }
        Ok(Self { map, at })
    }

    /// The line showing `stats`' counts, and where each type's digits are in it.
    fn layout(stats: &Stats) -> (Vec<u8>, [usize; RequestType::ALL.len()]) {
        let mut line = Vec::with_capacity(1024);
        line.extend_from_slice(b"TOTAL=");
        line.extend_from_slice(&hex(stats.total()));
        let mut at = [0; RequestType::ALL.len()];
        for kind in RequestType::ALL {
            line.push(b' ');
            line.extend_from_slice(kind.name().as_bytes());
            line.push(b'=');
            at[kind.index()] = line.len();
            line.extend_from_slice(&hex(stats.of(kind).count()));
        }
        line.push(b'\n');
        (line, at)
    }

    /// Shows `count` requests of `kind` and `total` requests in all: the type's digits first,
    /// then the total's. About a hundred instructions without a branch (bounds checks
    /// aside) or a system call: tens of nanoseconds.
    #[inline]
    pub fn update(&mut self, kind: RequestType, count: u64, total: u64) {
        let at = self.at[kind.index()];
        self.map[at..at + DIGITS].copy_from_slice(&hex(count));
        // Orders the stores for a reader on another CPU too (no instruction on x86).
        fence(Ordering::Release);
        self.map[TOTAL_AT..TOTAL_AT + DIGITS].copy_from_slice(&hex(total));
    }
}

/// `v` in 16 lower-case hex digits, most significant first, without a branch or a table:
/// each half's nibbles spread to a byte each, then made ASCII eight at a time.
fn hex(v: u64) -> [u8; DIGITS] {
    fn eight(half: u32) -> [u8; 8] {
        let mut x = u64::from(half);
        x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
        x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
        x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
        // 1 in each byte whose nibble is 10 or more; no byte carries into the next.
        let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        (x + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
    }
    let mut out = [0; DIGITS];
    out[..8].copy_from_slice(&eight((v >> 32) as u32));
    out[8..].copy_from_slice(&eight(v as u32));
    out
}

impl fmt::Display for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "count={} p50={}us p99={}us max={}us",
            self.count(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket(bucket_max(i)), i);
            assert_eq!(bucket(bucket_max(i) + 1), i + 1);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.max(), 100);
        assert_eq!(h.quantile(0.5), 51); // 50 lands in the bucket 48..=51
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.to_string(), "count=100 p50=51us p99=99us max=100us");
    }

    #[test]
    fn stats_lines_list_seen_types() {
        let mut s = Stats::default();
        s.record(Some(RequestType::Flush), Duration::from_micros(7));
        s.record(None, Duration::ZERO);
        s.malformed();
        let lines: Vec<String> = s.lines().collect();
        assert_eq!(
            lines,
            [
                "requests FLUSH count=1 p50=7us p99=7us max=7us",
                "requests unknown=1 malformed=1"
            ]
        );
        s.record(Some(RequestType::MarkRegion), Duration::ZERO);
        s.record(Some(RequestType::Flush), Duration::ZERO);
        assert_eq!(s.total(), 3);
        assert_eq!(s.of(RequestType::Flush).count(), 2);
    }

    #[test]
    fn hex_is_sixteen_lower_case_digits() {
        for v in [0, 9, 10, 15, 16, 0xabcdef, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(hex(v), format!("{v:016x}").as_bytes(), "{v:#x}");
        }
    }

    /// The file holds a line of fixed width with every type, each update changes just the
    /// type's and the total's digits, and a new server replaces the file (a stale
    /// temporary file does not stop it).
    #[test]
    fn live_counters_update_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters");
        let read = || std::fs::read_to_string(&path).unwrap();
        let mut stats = Stats::default();
        stats.record(Some(RequestType::Ctr), Duration::ZERO);
        std::fs::write(dir.path().join("counters.tmp"), "stale").unwrap();
        let mut live = LiveCounters::create(&path, &stats).unwrap();
        let start = read();
        assert!(start.starts_with("TOTAL=0000000000000001 CTR=0000000000000001 DTR=0"));
        assert!(
            start.ends_with(" GET_IN_SYNC_RANGES=0000000000000000\n"),
            "{start}"
        );
        assert_eq!(start.split(' ').count(), 1 + RequestType::ALL.len());
        // Shell assignments (`. FILE`): names of capitals and underscores, bare hex digits.
        for field in start.trim_end().split(' ') {
            let (name, digits) = field.split_once('=').unwrap();
            assert!(
                name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{name}"
            );
            assert!(digits
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        live.update(RequestType::Flush, 0x1f, 0xabc);
        let now = read();
        assert_eq!(now.len(), start.len());
        assert!(now.starts_with("TOTAL=0000000000000abc CTR=0000000000000001 "));
        assert!(now.contains(" FLUSH=000000000000001f "), "{now}");
        let changed = start
            .bytes()
            .zip(now.bytes())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 5, "{start}{now}");
        drop(live);
        assert_eq!(read(), now, "the counts stay after the server");
        LiveCounters::create(&path, &Stats::default()).unwrap();
        assert!(read().starts_with("TOTAL=0000000000000000 CTR=0000000000000000 "));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn live_counters_errors_say_what_to_do() {
        let e = LiveCounters::create(Path::new("/nonexistent/counters"), &Stats::default())
            .err()
            .unwrap();
        assert_eq!(crate::cli::exit_status(&e), crate::cli::EXIT_CONFIG);
        let text = e.to_string();
        assert!(
            text.starts_with("cannot create the counters file /nonexistent/counters.tmp: "),
            "{text}"
        );
        assert!(
            text.contains("give --counters a path in a writable directory"),
            "{text}"
        );
    }

    proptest! {
        #![proptest_config(crate::proptest_seed::config(256))]
        /// The reported quantile is at least the true one and exceeds it by under 1/16.
        #[test]
        fn quantiles_are_tight_upper_bounds(mut values in prop::collection::vec(0u64..10_000_000, 1..300), q in 0.01f64..1.0) {
            let mut h = Histogram::default();
            for v in &values {
                h.record(*v);
            }
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            let exact = values[rank - 1];
            let got = h.quantile(q);
            prop_assert!(got >= exact, "{} < {}", got, exact);
            prop_assert!(got - exact <= exact / 16, "{} too far above {}", got, exact);
        }
    }
}
