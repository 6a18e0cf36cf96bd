// SPDX-License-Identifier: GPL-2.0
//! dm-ulogd tells its service manager (`Type=notify`) that it is ready once it has joined the
//! connector group, and that it is stopping when it exits: READY=1 then STOPPING=1 on the
//! datagram socket named by NOTIFY_SOCKET, as systemd would receive them.
//!
//! Needs what the server needs (CAP_SYS_ADMIN, CAP_NET_ADMIN, the kernel's connector). Skipped, with a note, without
//! them, and also while the host's dm_log_userspace module is loaded: this server would then
//! be a second one answering real mirrors' requests.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use caps::{CapSet, Capability};

fn skip_reason() -> Option<&'static str> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    if !has(Capability::CAP_SYS_ADMIN) || !has(Capability::CAP_NET_ADMIN) {
        return Some("no CAP_SYS_ADMIN and CAP_NET_ADMIN");
    }
    if !Path::new("/proc/net/connector").exists() {
        return Some("no connector in this kernel");
    }
    if Path::new("/sys/module/dm_log_userspace").exists() {
        return Some("dm_log_userspace is loaded on this host");
    }
    None
}

#[test]
fn ready_once_joined_and_stopping_at_exit() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dm-ulogd"))
        .args(["--foreground", "--no-announce", "--lock-file"])
        .arg(dir.path().join("dm-ulogd.lock"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut received = |child: &mut Child| match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => {
            let _ = child.kill();
            panic!("no notification from dm-ulogd: {e}");
        }
    };
    let ready = received(&mut child);
    assert_eq!(ready, "READY=1\n");
    // No logs exist, so SIGTERM ends it.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let stopping = received(&mut child);
    assert_eq!(stopping, "STOPPING=1\n");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("listening for device-mapper log requests"),
        "{stderr}"
    );
}
