// SPDX-License-Identifier: GPL-2.0
//! `unpriv`: the reply leaves from a forked child without CAP_SYS_ADMIN, and nothing else is
//! sent. (Its own test binary: it forks.)
//!
//! The check means something only where the test holds CAP_SYS_ADMIN to begin with: a child
//! that never had it sends "without CAP_SYS_ADMIN" whatever the code does. Run unprivileged,
//! the test therefore runs in a new user namespace, where it holds every capability; where
//! none can be made, it says so and checks nothing.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::panic;

use nix::libc;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use caps::{CapSet, Capability};
use dm_ulog_uapi::{encode_message, Header, Request, RequestType, CN_MSG_SIZE};
use dm_ulogd::hostile::{fault::Script, Hostile};
use dm_ulogd::link::{Replier, Transmit, NLMSG_HDR};
use dm_ulogd::logs::Logs;
use dm_ulogd::serve::{Exchange, Responder};

/// Forwards each message over a socket pair, prefixed with whether the sender then held
/// CAP_SYS_ADMIN, so the parent sees what the child sent.
struct Witness(UnixDatagram);

impl Transmit for Witness {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        let admin = caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)
            .map_err(io::Error::other)?;
        let mut m = vec![u8::from(admin)];
        m.extend_from_slice(datagram);
        self.0.send(&m).map(drop)
    }
}

fn sys_admin() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap()
}

/// What `in_user_namespace` found.
enum Outcome {
    Passed,
    Failed(String),
    /// No user namespace could be made (the reason).
    Unavailable(String),
}

/// Runs `check` in a forked child that first enters a new user namespace, where it holds every
/// capability. (The test harness runs tests on threads; only a single-threaded process may
/// unshare its user namespace, and a forked child is one.)
fn in_user_namespace(check: fn()) -> Outcome {
    let (mut parent_end, mut child_end) = UnixStream::pair().unwrap();
    // SAFETY: this binary has one test, so the harness's only other thread is blocked waiting
    // for it and holds no lock (allocator, stdio) the child could need; the child runs `check`
    // and leaves with `_exit`.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: unshare takes no pointers.
            let (code, message) = if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
                (
                    2,
                    format!("unshare(CLONE_NEWUSER): {}", io::Error::last_os_error()),
                )
            } else {
                match panic::catch_unwind(check) {
                    Ok(()) => (0, String::new()),
                    Err(e) => (
                        1,
                        e.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panicked".into()),
                    ),
                }
            };
            let _ = child_end.write_all(message.as_bytes());
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            let mut message = String::new();
            parent_end.read_to_string(&mut message).unwrap();
            match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, 0) => Outcome::Passed,
                WaitStatus::Exited(_, 2) => Outcome::Unavailable(message),
                other => Outcome::Failed(format!("{message} (child: {other:?})")),
            }
        }
    }
}

#[test]
fn unpriv_reply_comes_from_a_child_without_sys_admin() {
    if sys_admin() {
        return unpriv_reply_check();
    }
    match in_user_namespace(unpriv_reply_check) {
        Outcome::Passed => {}
        Outcome::Failed(why) => panic!("in a user namespace: {why}"),
        // Written past the harness's capture, so that the skip shows in every run.
        Outcome::Unavailable(why) => writeln!(
            io::stderr(),
            "unpriv_reply_comes_from_a_child_without_sys_admin: SKIPPED: without CAP_SYS_ADMIN \
             and without a user namespace ({why}), the drop cannot be observed"
        )
        .unwrap(),
    }
}

fn unpriv_reply_check() {
    // The parent holds CAP_SYS_ADMIN, or "sent without it" would prove nothing.
    assert!(sys_admin(), "the check runs without CAP_SYS_ADMIN to drop");
    let (tx_sock, rx_sock) = UnixDatagram::pair().unwrap();
    rx_sock.set_nonblocking(true).unwrap();
    let witness = Witness(tx_sock);
    let mut logs = Logs::default();
    let mut payload = Vec::new();
    let mut buf = Vec::new();
    let mut h = Hostile::new(
        Script::new(vec!["ctr:unpriv".parse().unwrap()]),
        0,
        None,
        None,
    );
    let ctr = b"64 core 8";
    let header = Header::request(b"UNPRIV", 1, RequestType::Ctr, 41, ctr.len()).unwrap();
    let mut msg = [0u8; 512];
    let n = encode_message(&mut msg, &header, ctr).unwrap();
    let request = Request::parse(&msg[..n]).unwrap();
    let admin_before = caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap();
    {
        let mut tx = Replier::new(&witness, &mut buf);
        let mut ex = Exchange {
            request: &request,
            kind: Some(RequestType::Ctr),
            logs: &mut logs,
            payload: &mut payload,
            tx: &mut tx,
        };
        h.respond(&mut ex).unwrap();
    }
    let mut got = [0u8; 1024];
    let len = rx_sock.recv(&mut got).expect("the child sent a reply");
    assert_eq!(got[0], 0, "the reply was sent while holding CAP_SYS_ADMIN");
    let reply = Header::decode(&got[1 + NLMSG_HDR + CN_MSG_SIZE..len]).unwrap();
    assert_eq!((reply.seq, reply.error), (41, 0));
    assert!(
        rx_sock.recv(&mut got).is_err(),
        "more than one message sent"
    );
    // The parent keeps its capabilities and its state: the kernel's resend creates the log.
    assert_eq!(
        caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap(),
        admin_before
    );
    assert!(logs.is_empty());
}
