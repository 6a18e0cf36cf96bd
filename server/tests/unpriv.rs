//! `unpriv`: the reply leaves from a forked child without CAP_SYS_ADMIN, and nothing else is
//! sent. (Its own test binary: it forks.)

use std::io;
use std::os::unix::net::UnixDatagram;

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

#[test]
fn unpriv_reply_comes_from_a_child_without_sys_admin() {
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
