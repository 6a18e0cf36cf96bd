// SPDX-License-Identifier: GPL-2.0
//! dm-ulogd (and dm-ulog-hostile) against `dm-ulog-fakekernel` on the host: a short
//! dm-raid1-shaped workload on one node over `--kernel-socket`, judged by the fake kernel's
//! checker (every request answered, recovery complete). Also: dm-ulogd killed and started
//! again in the middle (the fake kernel resends and re-creates the log), timeouts and EAGAIN
//! from a hostile server, and dm-ulogd's exit when the fake kernel goes.
//!
//! Needs no privileges: nothing touches the kernel's connector.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use dm_ulogd::fakekernel::check::{check, NodeLog};
use dm_ulogd::fakekernel::events::{Event, Why};

const FAKE_KERNEL: &str = env!("CARGO_BIN_EXE_dm-ulog-fakekernel");
const DM_ULOGD: &str = env!("CARGO_BIN_EXE_dm-ulogd");
const HOSTILE: &str = env!("CARGO_BIN_EXE_dm-ulog-hostile");

/// A child killed if the test ends first.
struct Process(Option<Child>, &'static str);

impl Process {
    fn spawn(program: &'static str, args: &[&str], stderr: &Path) -> Self {
        let child = Command::new(program)
            .args(args)
            .stderr(std::fs::File::create(stderr).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        Self(Some(child), program)
    }

    fn kill(&mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits up to `limit` for the process to exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        let child = self.0.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.0 = None;
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "{} still runs after {limit:?}",
                self.1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One node: a fake kernel and its server, in a directory of their own.
struct Node {
    dir: tempfile::TempDir,
    kernel: Process,
}

impl Node {
    /// Starts the fake kernel with `args` and waits until it listens.
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let mut all = vec![
            "--listen".into(),
            p("kernel.sock"),
            "--events".into(),
            p("events"),
        ];
        all.extend(["--node", "n1", "--seed", "7"].map(String::from));
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let kernel = Process::spawn(FAKE_KERNEL, &all, &dir.path().join("kernel.err"));
        let node = Self { dir, kernel };
        let start = Instant::now();
        while !node.path("kernel.sock").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the fake kernel does not listen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts a server (dm-ulogd or dm-ulog-hostile) on the fake kernel's socket.
    fn server(&self, program: &'static str, extra: &[&str], stderr: &str) -> Process {
        let socket = self.path("kernel.sock");
        let lock = self.path("server.lock");
        let mut args = vec![
            "--foreground",
            "--kernel-socket",
            socket.to_str().unwrap(),
            "--lock-file",
            lock.to_str().unwrap(),
        ];
        // One node, no corosync: clustered logs are served here alone.
        if program == DM_ULOGD {
            args.push("--single-node");
        }
        args.extend(extra);
        Process::spawn(program, &args, &self.path(stderr))
    }

    /// Waits for the fake kernel to finish its run, then reads its event log.
    fn finish(&mut self) -> NodeLog {
        let status = self.kernel.wait(Duration::from_secs(120));
        assert!(
            status.success(),
            "fake kernel: {status}\n{}",
            self.stderr("kernel.err")
        );
        NodeLog::read(&self.path("events")).unwrap()
    }

    fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The checker's command line on this node's log.
    fn check_cli(&self, all_in_sync: u64) -> Output {
        Command::new(FAKE_KERNEL)
            .arg("check")
            .arg(self.path("events"))
            .args(["--all-in-sync", &all_in_sync.to_string()])
            .output()
            .unwrap()
    }
}

/// How many events of a kind a log has.
fn count(log: &NodeLog, pred: impl Fn(&Event) -> bool) -> usize {
    log.lines.iter().filter(|l| pred(&l.event)).count()
}

fn sends(log: &NodeLog, kind: &str, why: Why) -> usize {
    count(
        log,
        |e| matches!(e, Event::Send { kind: k, why: w, .. } if k == kind && *w == why),
    )
}

/// The fake kernel keeps dm-raid1's order: no MARK, CLEAR or FLUSH while a FLUSH waits, and
/// no suspend step while the one before it waits (a request answered EAGAIN still waits).
fn assert_in_order(log: &NodeLog) {
    const EAGAIN: i32 = -11;
    let steps = ["PRESUSPEND", "POSTSUSPEND", "RESUME", "DTR"];
    let mut waiting: HashMap<u64, &str> = HashMap::new();
    for line in &log.lines {
        match &line.event {
            Event::Send { req, kind, .. } => {
                waiting.remove(req);
                let flush = waiting.values().any(|k| *k == "FLUSH");
                let step = waiting.values().any(|k| steps.contains(k));
                let io = ["MARK_REGION", "CLEAR_REGION", "FLUSH"].contains(&kind.as_str());
                assert!(!(io && flush), "{kind} sent while a FLUSH waits: {line:?}");
                let suspend = steps[..2].contains(&kind.as_str()) || kind == "DTR";
                assert!(!(suspend && step), "{kind} sent while {waiting:?} wait");
                waiting.insert(*req, kind);
            }
            Event::Reply { req, error, .. } if *error != EAGAIN => {
                waiting.remove(req);
            }
            _ => {}
        }
    }
}

/// A run of a few seconds on `table` (64 regions), with suspend cycles: every request
/// answered, every region in sync at the end (recovered unless `nosync`).
fn workload(table: &str, recovers: bool) {
    let mut node = Node::start(&[
        "--table",
        table,
        "--duration",
        "2",
        "--suspend-every",
        "0.6",
    ]);
    let mut server = node.server(DM_ULOGD, &[], "dm-ulogd.err");
    let log = node.finish();
    let report = check(std::slice::from_ref(&log), Some(64));
    assert!(report.ok(), "{:?}\n{:?}", report.violations, report.notes);
    eprintln!("{table}: {}", report.notes[0]);
    assert_in_order(&log);
    // Writes went through, with suspend cycles and the teardown.
    assert!(count(&log, |e| matches!(e, Event::MarkAck { .. })) > 20);
    assert!(
        sends(&log, "PRESUSPEND", Why::First) >= 3,
        "{:?}",
        report.notes
    );
    assert_eq!(sends(&log, "DTR", Why::First), 1);
    let grants = count(&log, |e| matches!(e, Event::Grant { .. }));
    if recovers {
        assert!(grants >= 64, "{grants} grants");
    } else {
        assert_eq!(grants, 0);
    }
    // The checker's command line agrees.
    let out = node.check_cli(64);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("I3 holds") && stdout.contains("I4 holds"),
        "{stdout}"
    );
    // dm-ulogd ends when the fake kernel closes the socket, and says so.
    let status = server.wait(Duration::from_secs(10));
    let stderr = node.stderr("dm-ulogd.err");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("closed the socket"), "{stderr}");
}

#[test]
fn clustered_core_on_one_node_is_answered_and_recovers() {
    workload("512 clustered-core 8", true);
}

#[test]
fn core_is_answered_and_recovers() {
    workload("512 core 8", true);
}

#[test]
fn nosync_core_needs_no_recovery() {
    workload("512 clustered-core 8 nosync", false);
}

/// dm-ulogd killed mid-run and started again: the fake kernel sends its waiting requests
/// again on the new connection and at the announcement, the new server answers ESRCH, the
/// log is re-created there (CTR, RESUME) and the run finishes with every region recovered
/// again.
#[test]
fn a_restarted_server_gets_the_waiting_requests_and_the_log_again() {
    let mut node = Node::start(&["--table", "512 clustered-core 8", "--duration", "3"]);
    let mut first = node.server(DM_ULOGD, &[], "dm-ulogd.1.err");
    std::thread::sleep(Duration::from_millis(1200));
    first.kill();
    std::thread::sleep(Duration::from_millis(200));
    let _second = node.server(DM_ULOGD, &[], "dm-ulogd.2.err");
    let log = node.finish();
    let report = check(std::slice::from_ref(&log), Some(64));
    assert!(report.ok(), "{:?}\n{:?}", report.violations, report.notes);
    eprintln!("restart: {}", report.notes[0]);
    assert_in_order(&log);
    assert_eq!(count(&log, |e| matches!(e, Event::Connect { .. })), 2);
    assert_eq!(count(&log, |e| matches!(e, Event::Disconnect { .. })), 1);
    assert_eq!(count(&log, |e| matches!(e, Event::Announce { .. })), 2);
    assert_eq!(count(&log, |e| matches!(e, Event::Reattach { .. })), 1);
    let again = |why| {
        count(
            &log,
            |e| matches!(e, Event::Send { why: w, .. } if *w == why),
        )
    };
    assert!(
        again(Why::Esrch) >= 1 && again(Why::Announce) >= 1,
        "{:?}",
        report.notes
    );
    // The new server lost the old one's state: everything was recovered after the restart.
    let reattach = log
        .lines
        .iter()
        .position(|l| matches!(l.event, Event::Reattach { .. }))
        .unwrap();
    let regrants = count(
        &NodeLog {
            name: "after".into(),
            lines: log.lines[reattach..].to_vec(),
        },
        |e| matches!(e, Event::Grant { .. }),
    );
    assert!(regrants >= 64, "{regrants} grants after the restart");
}

/// A server that drops a FLUSH and answers MARKs EAGAIN: the fake kernel resends after its
/// timeout and after the EAGAIN pause, and every request is answered in the end.
#[test]
fn dropped_and_eagain_requests_are_sent_again() {
    let mut node = Node::start(&[
        "--table",
        "512 core 8 nosync",
        "--duration",
        "1",
        "--timeout",
        "0.5",
    ]);
    let _hostile = node.server(
        HOSTILE,
        &["--fault", "flush:drop", "--fault", "mark_region:errno=11*3"],
        "hostile.err",
    );
    let log = node.finish();
    let report = check(std::slice::from_ref(&log), Some(64));
    assert!(report.ok(), "{:?}\n{:?}", report.violations, report.notes);
    assert_eq!(sends(&log, "FLUSH", Why::Timeout), 1);
    assert_eq!(sends(&log, "MARK_REGION", Why::Eagain), 3);
}
