// SPDX-License-Identifier: GPL-2.0
//! Logs driven by random request sequences, with server crashes, against a model: disk logs
//! (state and device bytes) and core logs.
//!
//! A crash drops the server's whole state; the restarted server learns of the log as the
//! kernel makes it: its next request gets ESRCH, and the kernel re-sends CTR and RESUME.

use std::fs::File;
use std::os::unix::fs::FileExt;

use dm_ulog_uapi::{
    payload::{encode_regions, RegionSync, ResyncWork},
    Header, RequestType,
};
use dm_ulogd::logs::Logs;
use nix::errno::Errno;
use proptest::prelude::*;

mod common;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Default,
    Force,
    NoSync,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Self::Default => "",
            Self::Force => " sync",
            Self::NoSync => " nosync",
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mark(u64),
    Clear(u64),
    /// FLUSH, with the marks of an integrated flush.
    Flush(Vec<u64>),
    Work,
    SetSync(u64, bool),
    /// PRESUSPEND, POSTSUSPEND.
    Suspend,
    Resume,
    Crash,
}

fn op(n: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..n).prop_map(Op::Mark),
        3 => (0..n).prop_map(Op::Clear),
        3 => prop::collection::vec(0..n, 0..3).prop_map(Op::Flush),
        2 => Just(Op::Work),
        3 => ((0..n), any::<bool>()).prop_map(|(r, s)| Op::SetSync(r, s)),
        1 => Just(Op::Suspend),
        1 => Just(Op::Resume),
        1 => Just(Op::Crash),
    ]
}

/// What the kernel and the device should see.
struct Model {
    mode: Mode,
    /// A disk log; else a core log.
    disk_log: bool,
    sync: Vec<bool>,
    dirty: Vec<bool>,
    offered: Vec<bool>,
    suspended: bool,
    /// The bitmap on the device.
    disk: Vec<bool>,
    /// Marked, and the mark flushed, with no flush since that found the region clean.
    durably_dirty: Vec<bool>,
    /// Reported in or out of sync (or found dirty on the device) and not cleared since:
    /// dirty on the device whatever else holds (dm-log.c's clean bits, which only a clear
    /// sets, so a recovered region is clean there only after the kernel's clear).
    uncleared: Vec<bool>,
}

impl Model {
    fn new(mode: Mode, disk_log: bool, n: usize) -> Self {
        Self {
            mode,
            disk_log,
            sync: vec![false; n],
            dirty: vec![false; n],
            offered: vec![false; n],
            suspended: false,
            disk: vec![false; n],
            durably_dirty: vec![false; n],
            uncleared: vec![false; n],
        }
    }

    fn flush(&mut self) {
        for r in 0..self.sync.len() {
            self.disk[r] = self.sync[r] && !self.dirty[r] && !self.uncleared[r];
            self.durably_dirty[r] = self.dirty[r];
        }
    }

    /// dm-log.c's resume: `sync`/`nosync` start over, the default trusts the bitmap. A core
    /// log only restarts recovery, unless the server crashed: then it starts over. A RESUME
    /// of a log that is running (no suspend since its last RESUME: the kernel re-creating
    /// it after a reconnect) changes nothing: what the server holds is newer than the device.
    fn resume(&mut self, crashed: bool) {
        if !crashed && !self.suspended {
            return;
        }
        self.offered.fill(false);
        self.suspended = false;
        if !self.disk_log {
            if crashed {
                self.sync.fill(self.mode == Mode::NoSync);
                self.dirty.fill(false);
            }
            return;
        }
        match self.mode {
            Mode::Default => {}
            Mode::Force => self.disk.fill(false),
            Mode::NoSync => self.disk.fill(true),
        }
        self.sync.clone_from(&self.disk);
        self.dirty.fill(false);
        for (u, d) in self.uncleared.iter_mut().zip(&self.disk) {
            *u = !d;
        }
    }
}

struct Server {
    logs: Logs,
    out: Vec<u8>,
    ctr: String,
}

impl Server {
    fn ask(&mut self, kind: RequestType, data: &[u8]) -> Result<Vec<u8>, Errno> {
        let h = Header::request(b"MODEL-LOG", 42, kind, 1, data.len()).unwrap();
        self.logs
            .handle(&h, data, &mut self.out)
            .map(|()| self.out.clone())
            .map_err(|e| e.errno())
    }

    fn ok(&mut self, kind: RequestType, data: &[u8]) -> Vec<u8> {
        self.ask(kind, data)
            .unwrap_or_else(|e| panic!("{} failed: {e:?}", kind.name()))
    }

    fn u64(&mut self, kind: RequestType, data: &[u8]) -> u64 {
        u64::from_ne_bytes(self.ok(kind, data).try_into().unwrap())
    }

    /// What the kernel sends to a server that does not know the log (yet).
    fn create(&mut self) {
        let ctr = self.ctr.clone();
        self.ok(RequestType::Ctr, ctr.as_bytes());
        self.ok(RequestType::Resume, b"");
    }
}

fn regions(rs: &[u64]) -> Vec<u8> {
    let mut buf = vec![0u8; rs.len() * 8];
    encode_regions(rs, &mut buf).unwrap();
    buf
}

/// Header and bitmap on the device, against the model's bitmap.
fn check_device(file: &File, m: &Model) -> Result<(), TestCaseError> {
    if !m.disk_log {
        return Ok(());
    }
    let (n, disk) = (m.sync.len(), &m.disk);
    let mut header = [0u8; 16];
    file.read_exact_at(&mut header, 0).unwrap();
    let mut expected = [0u8; 16];
    expected[..4].copy_from_slice(&[0x72, 0x52, 0x69, 0x4d]);
    expected[4] = 2;
    expected[8..].copy_from_slice(&(n as u64).to_le_bytes());
    prop_assert_eq!(header, expected);
    let words = n.div_ceil(usize::BITS as usize) * (usize::BITS as usize / 8);
    let mut bits = vec![0u8; words];
    file.read_exact_at(&mut bits, 1024).unwrap();
    let mut packed = vec![0u8; words];
    for (i, _) in disk.iter().enumerate().filter(|(_, b)| **b) {
        packed[i / 8] |= 1 << (i % 8);
    }
    prop_assert_eq!(bits, packed, "bitmap on the device");
    Ok(())
}

fn run(mode: Mode, disk_log: bool, n: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.as_file().set_len(8192).unwrap();
    let file = tmp.reopen().unwrap();
    let log = if disk_log {
        format!("clustered-disk {}", tmp.path().display())
    } else {
        "clustered-core".to_string()
    };
    // The last region is a partial one.
    let ctr = format!("{} {log} 64{}", n * 64 - 63, mode.arg());
    let nu = n as usize;
    let mut s = Server {
        logs: Logs::default(),
        out: Vec::new(),
        ctr,
    };
    let mut m = Model::new(mode, disk_log, nu);
    s.create();
    m.resume(true);
    check_device(&file, &m)?;
    for o in ops {
        match o {
            Op::Mark(r) => {
                s.ok(RequestType::MarkRegion, &regions(&[r]));
                m.dirty[r as usize] = true;
            }
            Op::Clear(r) => {
                s.ok(RequestType::ClearRegion, &regions(&[r]));
                m.dirty[r as usize] = false;
                m.uncleared[r as usize] = false;
            }
            Op::Flush(marks) => {
                s.ok(RequestType::Flush, &regions(&marks));
                for r in marks {
                    m.dirty[r as usize] = true;
                }
                m.flush();
                check_device(&file, &m)?;
            }
            Op::Work => {
                let w = ResyncWork::decode(&s.ok(RequestType::GetResyncWork, b"")).unwrap();
                // The kernel recovers one region at a time: asked again while one is
                // unreported, the server's answer was lost, and it is offered again.
                let unreported = (0..nu).find(|&i| m.offered[i]);
                if w.available {
                    let r = w.region as usize;
                    prop_assert!(!m.suspended, "work handed out while suspended");
                    prop_assert!(!m.sync[r], "offered region {} that is in sync", r);
                    if let Some(u) = unreported {
                        prop_assert_eq!(r, u, "offered another region while one is unreported");
                    }
                    m.offered[r] = true;
                } else {
                    prop_assert!(
                        m.suspended || (unreported.is_none() && (0..nu).all(|i| m.sync[i])),
                        "no work offered though some is left"
                    );
                }
            }
            Op::SetSync(r, b) => {
                let set = RegionSync {
                    region: r,
                    in_sync: b,
                };
                s.ok(RequestType::SetRegionSync, &set.encode());
                m.sync[r as usize] = b;
                m.offered[r as usize] = false;
                m.uncleared[r as usize] = true;
            }
            Op::Suspend => {
                s.ok(RequestType::Presuspend, b"");
                s.ok(RequestType::Postsuspend, b"");
                m.suspended = true;
                m.flush();
                check_device(&file, &m)?;
            }
            Op::Resume => {
                s.ok(RequestType::Resume, b"");
                m.resume(false);
                check_device(&file, &m)?;
            }
            Op::Crash => {
                s.logs = Logs::default();
                prop_assert_eq!(s.ask(RequestType::GetSyncCount, b""), Err(Errno::ESRCH));
                s.create();
                m.resume(true);
                check_device(&file, &m)?;
                for r in (0..nu).filter(|_| disk_log) {
                    let in_sync = s.u64(RequestType::InSync, &(r as u64).to_ne_bytes()) == 1;
                    if mode != Mode::NoSync {
                        prop_assert!(
                            !(in_sync && m.durably_dirty[r]),
                            "region {} was marked durably, never cleared and flushed, \
                             yet is in sync after the crash",
                            r
                        );
                    }
                }
            }
        }
        prop_assert_eq!(
            s.u64(RequestType::GetSyncCount, b""),
            m.sync.iter().filter(|b| **b).count() as u64
        );
        for r in 0..nu {
            let q = (r as u64).to_ne_bytes();
            prop_assert_eq!(
                s.u64(RequestType::InSync, &q) == 1,
                m.sync[r],
                "in sync {}",
                r
            );
            prop_assert_eq!(
                s.u64(RequestType::IsClean, &q) == 1,
                m.sync[r] && !m.dirty[r],
                "clean {}",
                r
            );
        }
    }
    Ok(())
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        6 => Just(Mode::Default),
        1 => Just(Mode::Force),
        1 => Just(Mode::NoSync),
    ]
}

proptest! {
    #![proptest_config(common::proptest_seed::config(128))]

    #[test]
    fn disk_log_survives_crashes_like_the_model(
        (mode, n, ops) in (mode(), 1u64..=130).prop_flat_map(|(mode, n)| {
            (Just(mode), Just(n), prop::collection::vec(op(n), 0..120))
        })
    ) {
        run(mode, true, n, ops)?;
    }

    #[test]
    fn core_log_follows_the_model(
        (mode, n, ops) in (mode(), 1u64..=70).prop_flat_map(|(mode, n)| {
            (Just(mode), Just(n), prop::collection::vec(op(n), 0..120))
        })
    ) {
        run(mode, false, n, ops)?;
    }
}

/// The crash check itself: a durably marked region must come back out of sync.
#[test]
fn durable_mark_is_out_of_sync_after_a_crash() {
    let r = run(
        Mode::Default,
        true,
        4,
        vec![
            Op::SetSync(2, true),
            Op::Flush(vec![]),
            Op::Mark(2),
            Op::Flush(vec![]),
            Op::Crash,
        ],
    );
    r.unwrap();
    // ...whereas a mark that was cleared and flushed is in sync again.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.as_file().set_len(8192).unwrap();
    let ctr = format!("256 disk {} 64", tmp.path().display());
    let mut s = Server {
        logs: Logs::default(),
        out: Vec::new(),
        ctr,
    };
    s.create();
    let set = RegionSync {
        region: 1,
        in_sync: true,
    };
    s.ok(RequestType::SetRegionSync, &set.encode());
    s.ok(RequestType::Flush, &regions(&[1]));
    s.ok(RequestType::ClearRegion, &regions(&[1]));
    s.ok(RequestType::Flush, b"");
    s.logs = Logs::default();
    s.create();
    assert_eq!(s.u64(RequestType::InSync, &1u64.to_ne_bytes()), 1);
    assert_eq!(s.u64(RequestType::GetSyncCount, b""), 1);
}
