// SPDX-License-Identifier: GPL-2.0
//! Warnings about input the server drops, at most one per interval, with a count of the
//! ones held back.
//!
//! Every unparsable datagram is reported, but a flood of them (a broken or hostile sender)
//! must not flood the journal or slow the server that answers the kernel.

use std::fmt;
use std::time::{Duration, Instant};

/// The interval between two warnings about dropped input.
pub const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// At most one event per interval passes; the others are counted.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    held: u64,
}

impl RateLimit {
    /// One event per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            held: 0,
        }
    }

    /// Whether an event at `now` passes; if it does, how many were held back before it.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// When the events held back are due to be reported, if any are.
    pub fn due(&self) -> Option<Instant> {
        (self.held > 0).then(|| self.last.map(|l| l + self.interval))?
    }

    /// The count held back, once its interval is over (and the interval restarts).
    pub fn take_due(&mut self, now: Instant) -> Option<u64> {
        if self.due().is_some_and(|due| now >= due) {
            self.last = Some(now);
            return Some(std::mem::take(&mut self.held));
        }
        None
    }
}

/// The rate-limited reporter of dropped input: builds the warning lines.
#[derive(Debug)]
pub struct DropWarnings {
    limit: RateLimit,
    total: u64,
}

impl Default for DropWarnings {
    fn default() -> Self {
        Self {
            limit: RateLimit::new(DROP_WARNING_INTERVAL),
            total: 0,
        }
    }
}

impl DropWarnings {
    /// Notes one dropped datagram or message; returns the warning to log, if one is due.
    /// `what` is formatted only then: a flood costs no more than counting.
    pub fn dropped(&mut self, now: Instant, what: impl fmt::Display) -> Option<String> {
        self.total += 1;
        let held = self.limit.check(now)?;
        Some(if held == 0 {
            format!("dropping {what}")
        } else {
            format!("dropping {what} ({held} more dropped since the last warning)")
        })
    }

    /// When [`DropWarnings::summary`] has something to say.
    pub fn due(&self) -> Option<Instant> {
        self.limit.due()
    }

    /// The count of drops not warned about yet, once their interval is over.
    pub fn summary(&mut self, now: Instant) -> Option<String> {
        let held = self.limit.take_due(now)?;
        Some(format!(
            "dropped {held} more unparsable messages since the last warning ({} in all)",
            self.total
        ))
    }

    /// Every drop so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_second_with_the_count_held_back() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = DropWarnings::default();
        assert_eq!(
            w.dropped(t0, "malformed message: truncated").as_deref(),
            Some("dropping malformed message: truncated")
        );
        assert_eq!(w.due(), None);
        // A flood within the second: nothing logged, all counted.
        for i in 1..=1000 {
            assert_eq!(w.dropped(ms(i / 2), "x"), None);
        }
        assert_eq!(w.total(), 1001);
        assert_eq!(w.due(), Some(ms(1000)));
        assert_eq!(w.summary(ms(999)), None);
        // The next one after the second says how many were held back.
        assert_eq!(
            w.dropped(ms(1000), "y").as_deref(),
            Some("dropping y (1000 more dropped since the last warning)")
        );
        assert_eq!(w.dropped(ms(1001), "z"), None);
        // With no further drop, the count held back is still reported when due.
        assert_eq!(
            w.summary(ms(2000)).as_deref(),
            Some("dropped 1 more unparsable messages since the last warning (1003 in all)")
        );
        assert_eq!(w.due(), None);
        assert_eq!(w.summary(ms(5000)), None);
    }
}
