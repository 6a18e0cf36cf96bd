// SPDX-License-Identifier: GPL-2.0
//! The in-sync map as the kernel sees it through the server's socket: the announcement's
//! feature, GET_IN_SYNC_RANGES replies, and each withdrawal sent before the reply of the
//! request that took regions out of sync, in the order the messages leave.

use std::cell::{Cell, RefCell};
use std::io;

use clap::Parser;
use dm_ulog_uapi::{
    encode_message, payload::RegionSync, Announce, Header, InSyncRanges, Reply, RequestType,
    Withdrawal, FEATURE_CLEARS_IN_FLUSH, FEATURE_IN_SYNC_MAP,
};
use dm_ulogd::cli::CommonArgs;
use dm_ulogd::hostile::fault::Script;
use dm_ulogd::hostile::Hostile;
use dm_ulogd::link::{datagram, Capture, KernelLink, Loopback, Transmit, NLMSG_HDR};
use dm_ulogd::serve::{Honest, LogService, Responder, Server};

/// The server's flags, as the programs take them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: CommonArgs,
}

const LUID: u64 = 7;

/// What left the server, in order.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Announce(u32),
    Withdrawal(u64, u64, u64),
    /// A reply's seq, error and payload.
    Reply(u32, i32, Vec<u8>),
}

fn classify(dgram: &[u8]) -> Sent {
    let msg = &dgram[NLMSG_HDR..];
    if let Ok(a) = Announce::parse(msg) {
        return Sent::Announce(a.features);
    }
    if let Ok(w) = Withdrawal::parse(msg) {
        return Sent::Withdrawal(w.luid, w.first, w.count);
    }
    match Reply::parse(msg) {
        Ok(Reply::Full { header, data }) => Sent::Reply(header.seq, header.error, data.to_vec()),
        other => panic!("neither announcement, withdrawal nor reply: {other:?}"),
    }
}

/// A log server over an in-memory link, started with `flags` as a program would be.
struct Rig<R: Responder, T: Transmit> {
    server: Server<LogService<R>, Loopback<T>>,
    seq: u32,
}

impl<R: Responder, T: Transmit> Rig<R, T> {
    fn new(flags: &[&str], responder: R, out: T) -> Self {
        let args = Flags::parse_from(std::iter::once("dm-ulogd").chain(flags.iter().copied()));
        let config = args.common.config(true);
        let service = LogService::new(&config, responder).unwrap();
        let server = Server::start(KernelLink::new(Loopback::new(out)), &config, service).unwrap();
        Self { server, seq: 0 }
    }

    /// Sends one request and serves it; returns its seq.
    fn ask(&mut self, kind: RequestType, data: &[u8]) -> u32 {
        self.seq += 1;
        let h = Header::request(b"MAP-LOG", LUID, kind, self.seq, data.len()).unwrap();
        let mut msg = vec![0; 1024];
        let n = encode_message(&mut msg, &h, data).unwrap();
        self.server.link().endpoint().push(datagram(&msg[..n]));
        assert!(self.server.receive_waiting().unwrap().is_continue());
        self.seq
    }
}

impl<R: Responder> Rig<R, Capture> {
    /// What was sent since the last call.
    fn sent(&self) -> Vec<Sent> {
        let out = &self.server.link().endpoint().out;
        out.0.borrow_mut().drain(..).map(|d| classify(&d)).collect()
    }

    /// A nosync core log of 100 regions, created and resumed.
    fn with_log(flags: &[&str], responder: R) -> (Self, Vec<Sent>) {
        let mut rig = Self::new(flags, responder, Capture::default());
        rig.ask(RequestType::Ctr, b"800 core 8 nosync");
        rig.ask(RequestType::Resume, b"");
        let sent = rig.sent();
        (rig, sent)
    }
}

fn set_sync(region: u64, in_sync: bool) -> [u8; 16] {
    RegionSync { region, in_sync }.encode()
}

fn ok(seq: u32) -> Sent {
    Sent::Reply(seq, 0, Vec::new())
}

#[test]
fn a_region_leaving_sync_is_withdrawn_before_the_reply() {
    let (mut rig, sent) = Rig::with_log(&[], Honest);
    assert_eq!(
        sent,
        [
            Sent::Announce(FEATURE_IN_SYNC_MAP | FEATURE_CLEARS_IN_FLUSH),
            ok(1),
            ok(2)
        ],
        "announced with the feature, no withdrawal at creation"
    );
    let seq = rig.ask(RequestType::SetRegionSync, &set_sync(5, false));
    assert_eq!(rig.sent(), [Sent::Withdrawal(LUID, 5, 1), ok(seq)]);
    // Out of sync already, or going in sync: nothing to withdraw.
    let seq = rig.ask(RequestType::SetRegionSync, &set_sync(5, false));
    assert_eq!(rig.sent(), [ok(seq)]);
    let seq = rig.ask(RequestType::SetRegionSync, &set_sync(6, true));
    assert_eq!(rig.sent(), [ok(seq)]);
    // The hand-over: every in-sync run, and how far the reply speaks.
    let seq = rig.ask(RequestType::GetInSyncRanges, &0u64.to_ne_bytes());
    let [Sent::Reply(s, 0, data)] = &rig.sent()[..] else {
        panic!("not one successful reply");
    };
    assert_eq!(*s, seq);
    let ranges = InSyncRanges::decode(0, data).unwrap();
    assert_eq!(ranges.next, 100);
    assert_eq!(ranges.runs().collect::<Vec<_>>(), [(0, 5), (6, 94)]);
    let seq = rig.ask(RequestType::SetRegionSync, &set_sync(5, true));
    assert_eq!(rig.sent(), [ok(seq)]);
}

/// The hostile server answers through the same exchange: its extra messages come after
/// the withdrawal too.
#[test]
fn hostile_replies_follow_the_withdrawal() {
    let script = Script::new(vec!["set_region_sync:stray".parse().unwrap()]);
    let (mut rig, _) = Rig::with_log(&[], Hostile::new(script, 0, None, None));
    let seq = rig.ask(RequestType::SetRegionSync, &set_sync(9, false));
    let sent = rig.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0], Sent::Withdrawal(LUID, 9, 1));
    assert_eq!(sent[2], ok(seq));
}

/// Fails the first withdrawal it is given, as a `sendmsg` that fails would; keeps the rest.
#[derive(Default)]
struct FailFirstWithdrawal {
    failed: Cell<bool>,
    sent: RefCell<Vec<Sent>>,
}

impl Transmit for FailFirstWithdrawal {
    fn transmit(&self, dgram: &[u8]) -> io::Result<()> {
        let sent = classify(dgram);
        if matches!(sent, Sent::Withdrawal(..)) && !self.failed.replace(true) {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        self.sent.borrow_mut().push(sent);
        Ok(())
    }
}

/// A withdrawal that could not be sent holds back its reply, and goes before anything the
/// next request brings.
#[test]
fn no_reply_leaves_before_its_withdrawal() {
    let mut rig = Rig::new(&[], Honest, FailFirstWithdrawal::default());
    rig.ask(RequestType::Ctr, b"800 core 8 nosync");
    let taken = |rig: &Rig<Honest, FailFirstWithdrawal>| {
        std::mem::take(&mut *rig.server.link().endpoint().out.sent.borrow_mut())
    };
    assert_eq!(
        taken(&rig),
        [
            Sent::Announce(FEATURE_IN_SYNC_MAP | FEATURE_CLEARS_IN_FLUSH),
            ok(1)
        ]
    );
    rig.ask(RequestType::SetRegionSync, &set_sync(5, false));
    assert_eq!(taken(&rig), [], "the withdrawal failed: no reply");
    let seq = rig.ask(RequestType::GetSyncCount, b"");
    assert_eq!(
        taken(&rig),
        [
            Sent::Withdrawal(LUID, 5, 1),
            Sent::Reply(seq, 0, 99u64.to_ne_bytes().to_vec())
        ]
    );
    // The kernel's resend finds the region out of sync already.
    let seq = rig.ask(RequestType::SetRegionSync, &set_sync(5, false));
    assert_eq!(taken(&rig), [ok(seq)]);
}

#[test]
fn without_the_map_nothing_is_offered_or_withdrawn() {
    let einval = -(nix::errno::Errno::EINVAL as i32);
    for flags in [&["--no-in-sync-map"][..], &["--no-announce"]] {
        let (mut rig, sent) = Rig::with_log(flags, Honest);
        let announced = match flags[0] {
            "--no-announce" => vec![],
            // Clears in a FLUSH are offered whenever the server announces itself.
            _ => vec![Sent::Announce(FEATURE_CLEARS_IN_FLUSH)],
        };
        assert_eq!(sent[..sent.len() - 2], announced, "{flags:?}");
        let seq = rig.ask(RequestType::GetInSyncRanges, &0u64.to_ne_bytes());
        assert_eq!(rig.sent(), [Sent::Reply(seq, einval, vec![])], "{flags:?}");
        let seq = rig.ask(RequestType::SetRegionSync, &set_sync(5, false));
        assert_eq!(rig.sent(), [ok(seq)], "{flags:?}");
    }
}
