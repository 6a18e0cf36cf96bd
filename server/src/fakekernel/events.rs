// SPDX-License-Identifier: GPL-2.0
//! The fake kernel's event log: one JSON object per line, written as each event happens, for
//! the checker (`dm-ulog-fakekernel check`) to compare several nodes' logs.
//!
//! Every line has `t`, the `CLOCK_MONOTONIC` time in ns (all nodes run on one host, so their
//! clocks agree), and `ev`, the event; the other fields depend on `ev`:
//!
//! | `ev` | fields | when |
//! |---|---|---|
//! | `start` | `node pid uuid luid table regions seed` | first line |
//! | `connect`, `disconnect` | `conn` | a server connected (numbered from 1), or closed the socket |
//! | `announce` | `pid features` | a server announced itself |
//! | `withdraw` | `luid first count` | a server withdrew regions from the in-sync map |
//! | `send` | `req seq type why [regions] [prev]` | a request left: `req` names it across resends, `seq` is this send's; `why`: `first`, `eagain` (answered EAGAIN), `timeout` (no reply within `--timeout`), `connect` (a new connection; the old one's requests are lost), `announce`, `esrch` (retried once the log was re-created); `prev`: the seq it replaces; `regions`: the payload's regions |
//! | `reply` | `req seq type error payload` | the reply to a waiting request; `payload` summarises it (`count=64`, `available=1 region=5`, ...) |
//! | `stray` | `seq` | a reply that answers no waiting request (an old seq, or misaddressed): dropped |
//! | `mark_ack` | `regions` | the FLUSH reply that made these marks durable: the node holds them from here |
//! | `clear_sent` | `regions` | the CLEAR of these regions is sent: the node holds them no more |
//! | `grant` | `region` | GET_RESYNC_WORK handed the node this region to recover |
//! | `recovered` | `region in_sync` | SET_REGION_SYNC sent: the recovery is over |
//! | `in_sync`, `is_clean` | `region` and `in_sync` or `clean` | an IN_SYNC or IS_CLEAN answer |
//! | `remote_recovering` | `region recovering hint` | an IS_REMOTE_RECOVERING answer |
//! | `held` | `region` | a write held back: another node recovers the region (or was asked too recently), or this one does |
//! | `sync_count` | `count` | a GET_SYNC_COUNT answer |
//! | `reattach` | `generation` | a request was answered ESRCH (a new server): the log is re-created (CTR, RESUME, unflushed marks) |
//! | `end` | `writes held requests sends` | the last line of a run that finished (DTR answered); a log without it was killed |
//!
//! Requests are named as the uapi names them (`MARK_REGION`, `FLUSH`, ...); errors are
//! negative errnos.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{Context, Result};
use dm_ulog_uapi::payload::{decode_u64, RemoteRecovering, ResyncWork};
use dm_ulog_uapi::RequestType;
use nix::time::{clock_gettime, ClockId};
use serde::{Deserialize, Serialize};

/// Why a request was sent (again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Its first send.
    First,
    /// Answered EAGAIN: sent again after a short pause.
    Eagain,
    /// Unanswered for the timeout.
    Timeout,
    /// Sent on a connection that closed; a new one came.
    Connect,
    /// A server announced itself.
    Announce,
    /// Answered ESRCH; the log has been re-created since.
    Esrch,
}

/// One event; see the module's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
#[expect(
    missing_docs,
    reason = "the module's table documents every event and field"
)]
pub enum Event {
    Start {
        node: String,
        pid: u32,
        uuid: String,
        luid: u64,
        table: String,
        regions: u64,
        seed: u64,
    },
    Connect {
        conn: u64,
    },
    Disconnect {
        conn: u64,
    },
    Announce {
        pid: u32,
        features: u32,
    },
    Withdraw {
        luid: u64,
        first: u64,
        count: u64,
    },
    Send {
        req: u64,
        seq: u32,
        #[serde(rename = "type")]
        kind: String,
        why: Why,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        regions: Vec<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prev: Option<u32>,
    },
    Reply {
        req: u64,
        seq: u32,
        #[serde(rename = "type")]
        kind: String,
        error: i32,
        payload: String,
    },
    Stray {
        seq: u32,
    },
    MarkAck {
        regions: Vec<u64>,
    },
    ClearSent {
        regions: Vec<u64>,
    },
    Grant {
        region: u64,
    },
    Recovered {
        region: u64,
        in_sync: bool,
    },
    InSync {
        region: u64,
        in_sync: bool,
    },
    IsClean {
        region: u64,
        clean: bool,
    },
    RemoteRecovering {
        region: u64,
        recovering: bool,
        hint: u64,
    },
    Held {
        region: u64,
    },
    SyncCount {
        count: u64,
    },
    Reattach {
        generation: u64,
    },
    End {
        writes: u64,
        held: u64,
        requests: u64,
        sends: u64,
    },
}

/// A line of the log: an event and when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// `CLOCK_MONOTONIC`, ns.
    pub t: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// Now on `CLOCK_MONOTONIC`, in ns: the clock every node of a host shares.
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    // CAST: the monotonic clock is never negative.
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Appends events to a file, one `write` per line, so that a node killed at any point leaves
/// every event before its death.
pub struct EventLog {
    file: File,
    line: Vec<u8>,
}

impl EventLog {
    /// Creates (truncates) the log at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create the event log {}", path.display()))?;
        Ok(Self {
            file,
            line: Vec::with_capacity(256),
        })
    }

    /// Writes `event`, stamped now.
    pub fn log(&mut self, event: Event) -> Result<()> {
        let line = Line {
            t: monotonic_ns(),
            event,
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &line).expect("events serialise");
        self.line.push(b'\n');
        self.file
            .write_all(&self.line)
            .context("writing the event log")
    }
}

/// Reads a whole event log. A last line cut short (the node was killed while writing it) is
/// left out; any other line that is no event is an error.
pub fn read(path: &Path) -> Result<Vec<Line>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut lines = Vec::new();
    let mut text = BufReader::new(file).lines().enumerate().peekable();
    while let Some((i, l)) = text.next() {
        let l = l.with_context(|| format!("reading {}", path.display()))?;
        match serde_json::from_str(&l) {
            Ok(line) => lines.push(line),
            Err(_) if text.peek().is_none() && !l.ends_with('}') => break,
            Err(e) => return Err(e).with_context(|| format!("{}:{}", path.display(), i + 1)),
        }
    }
    Ok(lines)
}

/// A reply's payload, summarised for the `reply` event.
pub fn summarise(kind: RequestType, data: &[u8]) -> String {
    let u64_of = |k| decode_u64(k, data).ok();
    let summary = match kind {
        RequestType::InSync | RequestType::IsClean => u64_of(kind).map(|v| format!("{}", v != 0)),
        RequestType::GetSyncCount => u64_of(kind).map(|v| format!("count={v}")),
        RequestType::GetRegionSize => u64_of(kind).map(|v| format!("region_size={v}")),
        RequestType::GetResyncWork => ResyncWork::decode(data)
            .ok()
            .map(|w| format!("available={} region={}", u8::from(w.available), w.region)),
        RequestType::IsRemoteRecovering => RemoteRecovering::decode(data).ok().map(|r| {
            format!(
                "recovering={} hint={}",
                u8::from(r.is_recovering),
                r.in_sync_hint
            )
        }),
        RequestType::StatusInfo | RequestType::Ctr if !data.is_empty() => Some(
            String::from_utf8_lossy(data)
                .trim_end_matches('\0')
                .to_string(),
        ),
        _ => None,
    };
    summary.unwrap_or_else(|| format!("bytes={}", data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format the module documents: flat objects with `t` and `ev`.
    #[test]
    fn lines_are_flat_json_objects() {
        let line = Line {
            t: 5,
            event: Event::Send {
                req: 1,
                seq: 2,
                kind: "MARK_REGION".into(),
                why: Why::Eagain,
                regions: vec![3, 4],
                prev: Some(1),
            },
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"t":5,"ev":"send","req":1,"seq":2,"type":"MARK_REGION","why":"eagain","regions":[3,4],"prev":1}"#
        );
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), line);
        let grant: Line = serde_json::from_str(r#"{"t":7,"ev":"grant","region":9}"#).unwrap();
        assert_eq!(grant.event, Event::Grant { region: 9 });
    }

    /// A node killed mid-line leaves a cut last line, which is not an event; anything else
    /// unreadable is an error.
    #[test]
    fn a_cut_last_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.events");
        let mut log = EventLog::create(&path).unwrap();
        log.log(Event::Grant { region: 1 }).unwrap();
        log.log(Event::Stray { seq: 4 }).unwrap();
        drop(log);
        let mut text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
        text.push_str(r#"{"t":9,"ev":"gra"#);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
        std::fs::write(&path, text.replace("stray", "nonsense")).unwrap();
        assert!(read(&path).is_err());
    }

    #[test]
    fn payloads_are_summarised() {
        let work = ResyncWork {
            available: true,
            region: 5,
        };
        assert_eq!(
            summarise(RequestType::GetResyncWork, &work.encode()),
            "available=1 region=5"
        );
        assert_eq!(
            summarise(RequestType::GetSyncCount, &64u64.to_ne_bytes()),
            "count=64"
        );
        assert_eq!(summarise(RequestType::Flush, &[]), "bytes=0");
    }
}
