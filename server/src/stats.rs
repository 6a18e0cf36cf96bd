// SPDX-License-Identifier: GPL-2.0
//! Request counts and service times (receipt to reply sent), per request type, for the
//! SIGUSR1 status dump.
//!
//! Times go into fixed log-linear histograms, so recording never allocates and percentiles
//! are exact to within 1/16 of the value.

use std::fmt;
use std::time::Duration;

use dm_ulog_uapi::RequestType;

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
    unknown: u64,
    malformed: u64,
}

impl Stats {
    /// A request of `kind` (`None` for an unknown type) answered after `elapsed`.
    pub fn record(&mut self, kind: Option<RequestType>, elapsed: Duration) {
        match kind {
            Some(k) => self.by_type[k.index()].record(elapsed.as_micros() as u64),
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
        self.by_type.iter().map(Histogram::count).sum()
    }

    /// The name and count of each request type seen.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RequestType::ALL
            .iter()
            .map(|k| (k.name(), self.of(*k).count()))
            .filter(|(_, n)| *n > 0)
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
        assert_eq!(
            s.counts().collect::<Vec<_>>(),
            [("FLUSH", 2), ("MARK_REGION", 1)]
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
