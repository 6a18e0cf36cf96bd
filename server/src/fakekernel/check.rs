// SPDX-License-Identifier: GPL-2.0
//! The checker: several nodes' event logs (one fake kernel each, one log) judged against the
//! cluster's invariants, on the clock they share.
//!
//! - **I1**: no region is granted for recovery to a node while another node holds an
//!   acknowledged mark on it (from its `mark_ack` to its `clear_sent`).
//! - **I2**: at most one node holds a recovery grant at any time (from its `grant` to its
//!   `recovered` of that region).
//! - **I3**: every request got an answer: its last send was answered, and not with EAGAIN.
//! - **I4** (optional, `--all-in-sync N`): the last GET_SYNC_COUNT answer is N.
//!
//! A log without its `end` line belongs to a node that was killed: it holds nothing after its
//! last line (no mark, no grant), and I3 and I4 are not asked of it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use anyhow::Result;
use dm_ulog_uapi::RequestType;
use nix::errno::Errno;

use super::events::{self, Event, Line, Why};

/// One node's event log.
#[derive(Clone, Debug)]
pub struct NodeLog {
    /// The node's name (its `start` line's, else the file's).
    pub name: String,
    /// Its lines, in order.
    pub lines: Vec<Line>,
}

impl NodeLog {
    /// Reads the log at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let lines = events::read(path)?;
        let name = lines
            .iter()
            .find_map(|l| match &l.event {
                Event::Start { node, .. } => Some(node.clone()),
                _ => None,
            })
            .unwrap_or_else(|| path.display().to_string());
        Ok(Self { name, lines })
    }

    /// Whether the run finished (its `end` line is there); otherwise it was killed.
    pub fn ended(&self) -> bool {
        self.lines
            .last()
            .is_some_and(|l| matches!(l.event, Event::End { .. }))
    }

    /// The time of its last line.
    fn last(&self) -> u64 {
        self.lines.last().map_or(0, |l| l.t)
    }
}

/// The invariants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// No grant while another node holds a mark on the region.
    I1,
    /// One recoverer at a time.
    I2,
    /// Every request answered.
    I3,
    /// Every region in sync at the end.
    I4,
}

impl Invariant {
    /// What it says.
    pub fn statement(self) -> &'static str {
        match self {
            Self::I1 => "no region granted for recovery while another node holds a mark on it",
            Self::I2 => "at most one node holds a recovery grant at any time",
            Self::I3 => "every request got an answer",
            Self::I4 => "every region in sync at the end",
        }
    }
}

/// An invariant that failed, when, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which.
    pub invariant: Invariant,
    /// When (`CLOCK_MONOTONIC`, ns).
    pub t: u64,
    /// What happened, times included.
    pub what: String,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// The failures, by invariant, then time.
    pub violations: Vec<Violation>,
    /// One line per node: what it did.
    pub notes: Vec<String>,
}

impl Report {
    /// Whether every invariant holds.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// A time as the report prints it: seconds on the monotonic clock.
struct T(u64);

impl fmt::Display for T {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// A region held by a node from `from` to `to` (its last line's time if it never let go).
#[derive(Clone, Copy, Debug)]
struct Held {
    node: usize,
    region: u64,
    from: u64,
    to: u64,
    /// It let go (`to` is an event's time, not the log's end).
    released: bool,
}

impl Held {
    fn covers(&self, t: u64) -> bool {
        self.from <= t && t < self.to
    }

    fn until(&self) -> String {
        if self.released {
            format!("until t={}", T(self.to))
        } else {
            format!("to its log's end at t={}", T(self.to))
        }
    }
}

/// The intervals a node holds regions in: opened by `open`'s regions, closed by `close`'s.
fn intervals(
    node: usize,
    log: &NodeLog,
    open: impl Fn(&Event) -> Vec<u64>,
    close: impl Fn(&Event) -> Vec<u64>,
) -> Vec<Held> {
    let mut holding = BTreeMap::new();
    let mut out = Vec::new();
    for line in &log.lines {
        for region in close(&line.event) {
            if let Some(from) = holding.remove(&region) {
                out.push(Held {
                    node,
                    region,
                    from,
                    to: line.t,
                    released: true,
                });
            }
        }
        for region in open(&line.event) {
            holding.entry(region).or_insert(line.t);
        }
    }
    out.extend(holding.into_iter().map(|(region, from)| Held {
        node,
        region,
        from,
        to: log.last(),
        released: false,
    }));
    out
}

fn marks(node: usize, log: &NodeLog) -> Vec<Held> {
    intervals(
        node,
        log,
        |e| match e {
            Event::MarkAck { regions } => regions.clone(),
            _ => Vec::new(),
        },
        |e| match e {
            Event::ClearSent { regions } => regions.clone(),
            _ => Vec::new(),
        },
    )
}

fn grants(node: usize, log: &NodeLog) -> Vec<Held> {
    intervals(
        node,
        log,
        |e| match e {
            Event::Grant { region } => vec![*region],
            _ => Vec::new(),
        },
        |e| match e {
            Event::Recovered { region, .. } => vec![*region],
            _ => Vec::new(),
        },
    )
}

/// Checks the logs; `all_in_sync`: the region count every node that ended must have seen in
/// sync at its last GET_SYNC_COUNT.
pub fn check(logs: &[NodeLog], all_in_sync: Option<u64>) -> Report {
    let mut report = Report::default();
    let marks: Vec<Held> = logs
        .iter()
        .enumerate()
        .flat_map(|(i, l)| marks(i, l))
        .collect();
    let grants: Vec<Held> = logs
        .iter()
        .enumerate()
        .flat_map(|(i, l)| grants(i, l))
        .collect();
    let name = |i: usize| &logs[i].name;

    // I1: at each grant, no other node's mark on the region.
    let mut marks_of: HashMap<u64, Vec<&Held>> = HashMap::new();
    for m in &marks {
        marks_of.entry(m.region).or_default().push(m);
    }
    for g in &grants {
        let held = marks_of.get(&g.region).into_iter().flatten();
        for m in held.filter(|m| m.node != g.node && m.covers(g.from)) {
            report.violations.push(Violation {
                invariant: Invariant::I1,
                t: g.from,
                what: format!(
                    "{} was granted region {} while {} held a mark on it (acknowledged at t={}, \
                     held {})",
                    name(g.node),
                    g.region,
                    name(m.node),
                    T(m.from),
                    m.until()
                ),
            });
        }
    }

    // I2: no two nodes' grants overlap.
    let mut by_start: Vec<&Held> = grants.iter().collect();
    by_start.sort_by_key(|g| g.from);
    let mut active: Vec<&Held> = Vec::new();
    for g in by_start {
        active.retain(|a| a.to > g.from);
        for a in active.iter().filter(|a| a.node != g.node) {
            report.violations.push(Violation {
                invariant: Invariant::I2,
                t: g.from,
                what: format!(
                    "{} was granted region {} while {} held its grant of region {} (granted at \
                     t={}, held {})",
                    name(g.node),
                    g.region,
                    name(a.node),
                    a.region,
                    T(a.from),
                    a.until()
                ),
            });
        }
        active.push(g);
    }

    for log in logs {
        report.notes.push(summary(log));
        if !log.ended() {
            continue;
        }
        unanswered(log, &mut report.violations);
        if let Some(n) = all_in_sync {
            let last = log.lines.iter().rev().find_map(|l| match l.event {
                Event::SyncCount { count } => Some((l.t, count)),
                _ => None,
            });
            match last {
                Some((_, count)) if count == n => {}
                Some((t, count)) => report.violations.push(Violation {
                    invariant: Invariant::I4,
                    t,
                    what: format!(
                        "{}'s last GET_SYNC_COUNT answer is {count}, not {n}",
                        log.name
                    ),
                }),
                None => report.violations.push(Violation {
                    invariant: Invariant::I4,
                    t: log.last(),
                    what: format!("{} never got a GET_SYNC_COUNT answer", log.name),
                }),
            }
        }
    }
    report.violations.sort_by_key(|v| (v.invariant, v.t));
    report
}

/// I3 for a node that ended: each request's last event is a reply other than EAGAIN.
fn unanswered(log: &NodeLog, out: &mut Vec<Violation>) {
    let mut last: BTreeMap<u64, &Line> = BTreeMap::new();
    for line in &log.lines {
        if let Event::Send { req, .. } | Event::Reply { req, .. } = line.event {
            last.insert(req, line);
        }
    }
    for line in last.into_values() {
        let what = match &line.event {
            Event::Send { req, seq, kind, .. } => {
                format!("{kind} (req {req}) sent as seq {seq}, never answered")
            }
            Event::Reply {
                req,
                seq,
                kind,
                error,
                ..
            } if *error == -(Errno::EAGAIN as i32) => {
                format!("{kind} (req {req}) answered EAGAIN as seq {seq}, never sent again")
            }
            _ => continue,
        };
        out.push(Violation {
            invariant: Invariant::I3,
            t: line.t,
            what: format!("{}: {what}", log.name),
        });
    }
}

/// A node's run in one line.
fn summary(log: &NodeLog) -> String {
    let (mut requests, mut sends, mut timeouts, mut strays, mut grants) = (0, 0, 0, 0, 0);
    let mut flushes = 0;
    for line in &log.lines {
        match &line.event {
            Event::Send { why, kind, .. } => {
                sends += 1;
                match why {
                    Why::First => requests += 1,
                    Why::Timeout => timeouts += 1,
                    _ => {}
                }
                flushes += u64::from(*why == Why::First && kind == RequestType::Flush.name());
            }
            Event::Stray { .. } => strays += 1,
            Event::Grant { .. } => grants += 1,
            _ => {}
        }
    }
    let first = log.lines.first().map_or(0, |l| l.t);
    let secs = (log.last() - first) as f64 / 1e9;
    let how = if log.ended() { "ended" } else { "killed" };
    format!(
        "{}: {how} after {secs:.1} s: {requests} requests ({flushes} FLUSH), {sends} sends, \
         {timeouts} timeouts, {strays} stray replies, {grants} grants",
        log.name
    )
}

/// Prints the report: the notes, then each violation; a line per invariant.
pub fn print(report: &Report, checked_in_sync: bool) {
    for note in &report.notes {
        println!("{note}");
    }
    let invariants = [Invariant::I1, Invariant::I2, Invariant::I3, Invariant::I4];
    for inv in invariants {
        if inv == Invariant::I4 && !checked_in_sync {
            continue;
        }
        let failed: Vec<&Violation> = report
            .violations
            .iter()
            .filter(|v| v.invariant == inv)
            .collect();
        if failed.is_empty() {
            println!("{inv:?} holds: {}", inv.statement());
            continue;
        }
        println!("{inv:?} FAILED {} times: {}", failed.len(), inv.statement());
        for v in failed {
            println!("  t={}: {}", T(v.t), v.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(name: &str, events: Vec<(u64, Event)>) -> NodeLog {
        NodeLog {
            name: name.into(),
            lines: events
                .into_iter()
                .map(|(t, event)| Line { t, event })
                .collect(),
        }
    }

    fn end() -> Event {
        Event::End {
            writes: 0,
            held: 0,
            requests: 0,
            sends: 0,
        }
    }

    fn send(req: u64, seq: u32, why: Why) -> Event {
        Event::Send {
            req,
            seq,
            kind: "FLUSH".into(),
            why,
            regions: Vec::new(),
            prev: None,
        }
    }

    fn reply(req: u64, seq: u32, error: i32) -> Event {
        Event::Reply {
            req,
            seq,
            kind: "FLUSH".into(),
            error,
            payload: String::new(),
        }
    }

    fn mark(r: u64) -> Event {
        Event::MarkAck { regions: vec![r] }
    }

    fn clear(r: u64) -> Event {
        Event::ClearSent { regions: vec![r] }
    }

    fn grant(r: u64) -> Event {
        Event::Grant { region: r }
    }

    fn recovered(r: u64) -> Event {
        Event::Recovered {
            region: r,
            in_sync: true,
        }
    }

    /// Adds events to a log, in time order (its `end` stays last).
    fn add(log: &mut NodeLog, events: Vec<(u64, Event)>) {
        log.lines
            .extend(events.into_iter().map(|(t, event)| Line { t, event }));
        log.lines.sort_by_key(|l| l.t);
    }

    /// Checks that `logs` fail `invariant` alone, once, at `t`, saying `what`.
    fn fails_once(logs: &[NodeLog], invariant: Invariant, t: u64, what: &str) {
        let report = check(logs, None);
        assert_eq!(failed(&report), [invariant]);
        assert_eq!(report.violations[0].t, t);
        assert!(
            report.violations[0].what.contains(what),
            "{:?}",
            report.violations
        );
    }

    fn failed(report: &Report) -> Vec<Invariant> {
        report.violations.iter().map(|v| v.invariant).collect()
    }

    /// Two nodes that take turns: a mark released before the other's grant, grants one after
    /// the other, every request answered (one after a resend), every region in sync.
    fn good_pair() -> Vec<NodeLog> {
        vec![
            log(
                "n1",
                vec![
                    (1, send(1, 1, Why::First)),
                    (2, send(1, 2, Why::Timeout)),
                    (3, reply(1, 2, 0)),
                    (10, mark(5)),
                    (20, clear(5)),
                    (40, grant(6)),
                    (50, recovered(6)),
                    (60, Event::SyncCount { count: 8 }),
                    (70, end()),
                ],
            ),
            log(
                "n2",
                vec![
                    (25, grant(5)),
                    (30, recovered(5)),
                    (61, Event::SyncCount { count: 8 }),
                    (71, end()),
                ],
            ),
        ]
    }

    #[test]
    fn a_good_run_passes() {
        let report = check(&good_pair(), Some(8));
        assert!(report.ok(), "{:?}", report.violations);
        assert_eq!(report.notes.len(), 2);
        assert!(
            report.notes[0].contains("1 requests"),
            "{}",
            report.notes[0]
        );
    }

    /// I1: a grant inside another node's mark, not the node's own, not after it cleared.
    #[test]
    fn a_grant_under_another_nodes_mark_fails_i1() {
        let mut logs = good_pair();
        add(&mut logs[1], vec![(15, grant(5)), (16, recovered(5))]);
        fails_once(&logs, Invariant::I1, 15, "n2 was granted region 5 while n1");
        // Its own mark is no violation.
        let mut logs = good_pair();
        add(&mut logs[0], vec![(15, grant(5)), (16, recovered(5))]);
        assert!(check(&logs, None).ok());
    }

    /// A killed node holds its marks and grants up to its last line only.
    #[test]
    fn a_killed_node_holds_nothing_after_its_last_line() {
        let killed = log(
            "n1",
            vec![(1, grant(3)), (10, mark(5)), (12, send(9, 9, Why::First))],
        );
        let later = log("n2", vec![(15, grant(5)), (16, recovered(5)), (17, end())]);
        let report = check(&[killed.clone(), later], None);
        assert!(report.ok(), "{:?}", report.violations);
        // Before its last line, its mark and its grant count.
        let early = log("n2", vec![(11, grant(5)), (16, recovered(5)), (17, end())]);
        assert_eq!(
            failed(&check(&[killed, early], None)),
            [Invariant::I1, Invariant::I2]
        );
    }

    /// I2: two nodes' grants overlap; one after the other's report does not.
    #[test]
    fn overlapping_grants_fail_i2() {
        let mut logs = good_pair();
        // n2 is granted region 7 while n1 recovers region 6 (40..50).
        add(&mut logs[1], vec![(45, grant(7)), (55, recovered(7))]);
        fails_once(
            &logs,
            Invariant::I2,
            45,
            "while n1 held its grant of region 6",
        );
        let mut logs = good_pair();
        add(&mut logs[1], vec![(50, grant(7)), (55, recovered(7))]);
        assert!(check(&logs, None).ok());
    }

    /// I3: a request whose last send is unanswered, or answered EAGAIN, on a node that
    /// ended; not on one that was killed.
    #[test]
    fn unanswered_requests_fail_i3() {
        let mut logs = good_pair();
        let eagain = -(Errno::EAGAIN as i32);
        add(
            &mut logs[0],
            vec![
                (4, send(2, 3, Why::First)),
                (5, send(3, 4, Why::First)),
                (6, reply(3, 4, eagain)),
            ],
        );
        let report = check(&logs, None);
        assert_eq!(failed(&report), [Invariant::I3, Invariant::I3]);
        assert!(report.violations[0].what.contains("never answered"));
        assert!(report.violations[1].what.contains("EAGAIN"));
        // Killed: nothing asked.
        logs[0].lines.pop();
        assert!(check(&logs, None).ok());
    }

    /// I4: a node that ended with regions out of sync, or without an answer at all.
    #[test]
    fn regions_out_of_sync_at_the_end_fail_i4() {
        let logs = good_pair();
        assert!(check(&logs, None).ok());
        let report = check(&logs, Some(9));
        assert_eq!(failed(&report), [Invariant::I4, Invariant::I4]);
        assert!(report.violations[0].what.contains("is 8, not 9"));
        let mut logs = good_pair();
        logs[1]
            .lines
            .retain(|l| !matches!(l.event, Event::SyncCount { .. }));
        assert_eq!(failed(&check(&logs, Some(8))), [Invariant::I4]);
        // A killed node is not asked.
        logs[1].lines.pop();
        assert!(check(&logs, Some(8)).ok());
    }
}
