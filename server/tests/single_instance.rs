// SPDX-License-Identifier: GPL-2.0
//! A second server on the host refuses to start while another holds the instance lock, with
//! the configuration-error exit status that stops systemd's restarts.

use std::fs::File;
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// `EX_CONFIG` from sysexits.h: what `dm_ulogd::cli::EXIT_CONFIG` must be.
const EX_CONFIG: i32 = 78;

fn refuses_while_locked(program: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dm-ulogd.lock");
    std::fs::write(&path, "4242\n").unwrap();
    let held = Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    let out = Command::new(program)
        .args(["--foreground", "--no-announce", "--lock-file"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{program}: {stderr}");
    assert!(
        stderr.contains("already running") && stderr.contains("pid 4242"),
        "{program}: {stderr}"
    );
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
    drop(held);
}

#[test]
fn second_dm_ulogd_refuses_to_start() {
    refuses_while_locked(env!("CARGO_BIN_EXE_dm-ulogd"));
}

#[test]
fn dm_ulog_hostile_takes_the_same_lock() {
    refuses_while_locked(env!("CARGO_BIN_EXE_dm-ulog-hostile"));
}
