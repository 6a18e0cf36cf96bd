// SPDX-License-Identifier: GPL-2.0
//! dm-ulog-hostile's replies, captured instead of sent, judged by the kernel's rules for
//! taking a message as the answer to a waiting request.

use std::time::{Duration, Instant};

use dm_ulog_uapi::{
    encode_message, payload::encode_regions, CnMsg, Header, Request, RequestType, CN_MSG_SIZE,
    HEADER_SIZE,
};
use dm_ulogd::hostile::fault::{FaultSpec, Script};
use dm_ulogd::hostile::fuzz::read_only;
use dm_ulogd::hostile::{Hostile, STRAY_SEQ_OFFSET};
use dm_ulogd::link::{Capture, Replier, NLMSG_HDR};
use dm_ulogd::logs::Logs;
use dm_ulogd::serve::{Exchange, Honest, Responder};
use proptest::prelude::*;

mod common;

/// What upstream's kernel does with one datagram: the seq it completes, if any.
/// The connector core drops messages shorter than a `cn_msg` or whose `cn_msg.len` exceeds
/// them; the module takes `len == 0` as an ACK and drops `len` below a header.
fn consumes(dgram: &[u8]) -> Option<u32> {
    let nlmsg_len = u32::from_ne_bytes(dgram[..4].try_into().unwrap()) as usize;
    assert_eq!(
        nlmsg_len,
        dgram.len(),
        "netlink length matches the datagram"
    );
    let msg = &dgram[NLMSG_HDR..];
    if msg.len() < CN_MSG_SIZE {
        return None;
    }
    let cn = CnMsg::decode(msg).unwrap();
    if NLMSG_HDR + CN_MSG_SIZE + usize::from(cn.len) > nlmsg_len {
        return None;
    }
    match usize::from(cn.len) {
        0 => Some(cn.seq),
        l if l < HEADER_SIZE => None,
        _ => Some(Header::decode(&msg[CN_MSG_SIZE..]).unwrap().seq),
    }
}

/// The header and payload of a full reply.
fn full(dgram: &[u8]) -> (Header, &[u8]) {
    let msg = &dgram[NLMSG_HDR..];
    let h = Header::decode(&msg[CN_MSG_SIZE..]).unwrap();
    let cn = CnMsg::decode(msg).unwrap();
    (
        h,
        &msg[CN_MSG_SIZE + HEADER_SIZE..CN_MSG_SIZE + usize::from(cn.len)],
    )
}

struct Rig {
    logs: Logs,
    payload: Vec<u8>,
    tx: Vec<u8>,
    seq: u32,
}

impl Rig {
    fn new() -> Self {
        Self {
            logs: Logs::default(),
            payload: Vec::new(),
            tx: Vec::new(),
            seq: 100,
        }
    }

    /// Sends one request through `r`; returns its seq and the datagrams sent back.
    fn ask(
        &mut self,
        r: &mut dyn Responder,
        kind: RequestType,
        data: &[u8],
    ) -> (u32, Vec<Vec<u8>>) {
        self.seq += 1;
        let h = Header::request(b"HOSTILE-LOG", 9, kind, self.seq, data.len()).unwrap();
        let mut msg = vec![0u8; 1024];
        let n = encode_message(&mut msg, &h, data).unwrap();
        let request = Request::parse(&msg[..n]).unwrap();
        let capture = Capture::default();
        let mut tx = Replier::new(&capture, &mut self.tx);
        let mut ex = Exchange {
            request: &request,
            kind: Some(kind),
            logs: &mut self.logs,
            payload: &mut self.payload,
            tx: &mut tx,
        };
        r.respond(&mut ex).unwrap();
        (self.seq, capture.0.into_inner())
    }
}

fn hostile(faults: &[&str]) -> Hostile {
    let faults: Vec<FaultSpec> = faults.iter().map(|f| f.parse().unwrap()).collect();
    Hostile::new(Script::new(faults), 0, None, None)
}

const CTR: &[u8] = b"8192 clustered-core 1024";

#[test]
fn honest_replies_once_with_the_answer() {
    let mut rig = Rig::new();
    let (seq, out) = rig.ask(&mut Honest, RequestType::Ctr, CTR);
    assert_eq!(out.len(), 1);
    assert_eq!(consumes(&out[0]), Some(seq));
    let (seq, out) = rig.ask(&mut Honest, RequestType::GetRegionSize, b"");
    let (h, data) = full(&out[0]);
    assert_eq!((h.seq, h.error, h.data_size), (seq, 0, 8));
    assert_eq!(data, 1024u64.to_ne_bytes());
}

#[test]
fn scripted_faults_shape_the_replies() {
    let mut rig = Rig::new();
    let mut h = hostile(&[
        "ctr:errno=5",
        "ctr:device=253:2",
        "get_region_size:size=16",
        "get_region_size:u64=3",
        "get_sync_count:ack=11",
        "get_sync_count:drop",
        "get_sync_count:stray",
        "get_sync_count:dup",
        "get_sync_count:data-size=4096",
        "status_info:device-raw=abc",
        "get_sync_count:delay=30",
    ]);
    // errno: the error, no payload, and no log created.
    let (seq, out) = rig.ask(&mut h, RequestType::Ctr, CTR);
    let (hd, data) = full(&out[0]);
    assert_eq!((out.len(), hd.seq, hd.error, data.len()), (1, seq, -5, 0));
    assert!(rig.logs.is_empty());
    // device: the string and its NUL; the log exists.
    let (_, out) = rig.ask(&mut h, RequestType::Ctr, CTR);
    assert_eq!(full(&out[0]).1, b"253:2\0");
    assert_eq!(rig.logs.len(), 1);
    let (_, out) = rig.ask(&mut h, RequestType::GetRegionSize, b"");
    assert_eq!(full(&out[0]).1, [0u8; 16]);
    let (_, out) = rig.ask(&mut h, RequestType::GetRegionSize, b"");
    assert_eq!(full(&out[0]).1, 3u64.to_ne_bytes());
    // ack: a bare cn_msg.
    let (seq, out) = rig.ask(&mut h, RequestType::GetSyncCount, b"");
    assert_eq!(out[0].len(), NLMSG_HDR + CN_MSG_SIZE);
    let cn = CnMsg::decode(&out[0][NLMSG_HDR..]).unwrap();
    assert_eq!((cn.seq, cn.ack, cn.len), (seq, 11, 0));
    // drop: nothing.
    assert!(rig.ask(&mut h, RequestType::GetSyncCount, b"").1.is_empty());
    // stray: an unknown seq first, then the answer.
    let (seq, out) = rig.ask(&mut h, RequestType::GetSyncCount, b"");
    let seqs: Vec<_> = out.iter().map(|d| consumes(d)).collect();
    assert_eq!(seqs, [Some(seq + STRAY_SEQ_OFFSET), Some(seq)]);
    assert_eq!(full(&out[1]).1, 0u64.to_ne_bytes());
    // dup: the answer twice.
    let (_, out) = rig.ask(&mut h, RequestType::GetSyncCount, b"");
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], out[1]);
    // data-size: the header lies, the payload is right.
    let (_, out) = rig.ask(&mut h, RequestType::GetSyncCount, b"");
    let (hd, data) = full(&out[0]);
    assert_eq!((hd.data_size, data), (4096, &0u64.to_ne_bytes()[..]));
    let (_, out) = rig.ask(&mut h, RequestType::StatusInfo, b"");
    assert_eq!(full(&out[0]).1, b"abc");
    let start = Instant::now();
    let (_, out) = rig.ask(&mut h, RequestType::GetSyncCount, b"");
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(full(&out[0]).1, 0u64.to_ne_bytes());
    // Script exhausted: correct answers again.
    let (_, out) = rig.ask(&mut h, RequestType::GetRegionSize, b"");
    assert_eq!(full(&out[0]).1, 1024u64.to_ne_bytes());
    assert_eq!(h.summary(), "hostile: requests=12 malformed=0 seed=0");
}

#[test]
fn a_dropped_request_leaves_the_state_for_its_resend() {
    let mut rig = Rig::new();
    let mut h = hostile(&["get_resync_work:drop"]);
    rig.ask(&mut h, RequestType::Ctr, CTR);
    assert!(rig
        .ask(&mut h, RequestType::GetResyncWork, b"")
        .1
        .is_empty());
    // The resend gets region 0, not 1: the dropped request handed out nothing.
    let (_, out) = rig.ask(&mut h, RequestType::GetResyncWork, b"");
    let mut want = [0u8; 16];
    want[..8].copy_from_slice(&1u64.to_ne_bytes());
    assert_eq!(full(&out[0]).1, want);
}

fn stream() -> Vec<(RequestType, Vec<u8>)> {
    let mut marks = [0u8; 16];
    encode_regions(&[1, 2], &mut marks).unwrap();
    let mut s = vec![
        (RequestType::Ctr, CTR.to_vec()),
        (RequestType::GetRegionSize, vec![]),
        (RequestType::Resume, vec![]),
    ];
    for i in 0..8u64 {
        s.push((RequestType::MarkRegion, marks.to_vec()));
        s.push((RequestType::Flush, vec![]));
        s.push((RequestType::IsClean, i.to_ne_bytes().to_vec()));
        s.push((RequestType::InSync, i.to_ne_bytes().to_vec()));
        s.push((RequestType::GetResyncWork, vec![]));
        s.push((RequestType::GetSyncCount, vec![]));
        s.push((RequestType::StatusInfo, vec![]));
        s.push((RequestType::IsRemoteRecovering, i.to_ne_bytes().to_vec()));
        s.push((RequestType::ClearRegion, marks.to_vec()));
    }
    s.push((RequestType::Dtr, vec![]));
    s
}

/// One request of a fuzzed run: its type and seq, what the hostile server sent, and what an
/// honest server answered.
type Round = (RequestType, u32, Vec<Vec<u8>>, Vec<u8>);

/// Every datagram of a fuzzed run.
fn fuzzed(seed: u64, p: f64) -> Vec<Round> {
    let mut rig = Rig::new();
    let mut honest_rig = Rig::new();
    let mut h = Hostile::new(Script::default(), seed, Some(p), None);
    stream()
        .into_iter()
        .map(|(kind, data)| {
            let (seq, out) = rig.ask(&mut h, kind, &data);
            let (_, honest) = honest_rig.ask(&mut Honest, kind, &data);
            (kind, seq, out, honest.into_iter().next().unwrap())
        })
        .collect()
}

proptest! {
    #![proptest_config(common::proptest_seed::config(64))]

    /// Whatever the seed, the kernel takes exactly one message as each request's answer:
    /// the correct reply, or garbage of the right size for a read-only request.
    #[test]
    fn the_kernel_takes_exactly_one_answer_per_request(seed in any::<u64>()) {
        let mut malformed = 0;
        for (kind, seq, out, honest) in fuzzed(seed, 0.8) {
            malformed += out.len() - 1;
            let taken: Vec<&Vec<u8>> =
                out.iter().filter(|d| consumes(d) == Some(seq)).collect();
            prop_assert_eq!(taken.len(), 1, "{:?} seq {}: {} answers", kind, seq, taken.len());
            if taken[0] != &honest {
                prop_assert!(read_only(kind), "{:?} got a wrong answer", kind);
                let (h, data) = full(taken[0]);
                if !matches!(kind, RequestType::StatusInfo | RequestType::StatusTable) {
                    prop_assert_eq!(data.len(), full(&honest).1.len());
                }
                prop_assert_eq!(h.error, 0);
            }
            // No other request of the stream is answered by accident.
            for d in &out {
                if let Some(s) = consumes(d) {
                    prop_assert!(s <= seq || s >= seq + STRAY_SEQ_OFFSET,
                        "message for seq {} that may still be waiting", s);
                }
            }
        }
        prop_assert!(malformed > 0);
    }
}

#[test]
fn same_seed_same_replies() {
    let a = fuzzed(7, 0.5);
    let b = fuzzed(7, 0.5);
    let c = fuzzed(8, 0.5);
    let bytes = |r: &[Round]| r.iter().map(|x| x.2.clone()).collect::<Vec<_>>();
    assert_eq!(bytes(&a), bytes(&b));
    assert_ne!(bytes(&a), bytes(&c));
}

#[test]
fn max_malformed_stops_fuzzing() {
    let mut rig = Rig::new();
    let mut h = Hostile::new(Script::default(), 1, Some(1.0), Some(5));
    let mut sent = 0;
    for (kind, data) in stream() {
        sent += rig.ask(&mut h, kind, &data).1.len();
    }
    let requests = stream().len();
    assert_eq!(
        h.summary(),
        format!("hostile: requests={requests} malformed=5 seed=1")
    );
    // Five malformed messages at most, plus one answer per request (or garbage instead).
    assert!(sent <= requests + 5 && sent >= requests, "{sent}");
}
