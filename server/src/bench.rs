// SPDX-License-Identifier: GPL-2.0
//! Tools for `make bench`: the userspace half of the bare connector ping-pong, and a timed
//! loop of device-mapper status ioctls (each costs a userspace log two requests).
//!
//! Both report latencies the same way the ping-pong module does: nearest-rank percentiles of
//! every sample, in nanoseconds.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dm_ulog_uapi::{CnMsg, CN_IDX_DM, CN_MSG_SIZE};

use crate::link::{KernelLink, Replier};
use crate::serve::{Handler, Server};

/// Connector value of the ping-pong module's messages (`bench/pingpong`): in the log's group
/// 7, apart from the log's own values (1 and 2).
pub const PINGPONG_VAL: u32 = 0x10;

/// Count, nearest-rank p50 and p99, mean, min and max of a set of latencies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Arithmetic mean, rounded down.
    pub mean: u64,
    /// Smallest sample.
    pub min: u64,
    /// Largest sample.
    pub max: u64,
}

impl Summary {
    /// Summarises `samples` (sorted in place); all zero when there are none.
    pub fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |percent: usize| (n * percent).div_ceil(100).max(1) - 1;
        let sum: u128 = samples.iter().map(|&v| u128::from(v)).sum();
        Self {
            count: n,
            p50: samples[rank(50)],
            p99: samples[rank(99)],
            mean: (sum / n as u128) as u64,
            min: samples[0],
            max: samples[n - 1],
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "count={} p50_ns={} p99_ns={} mean_ns={} min_ns={} max_ns={}",
            self.count, self.p50, self.p99, self.mean, self.min, self.max
        )
    }
}

/// The length of the echo of a connector message: the whole message if it is a ping (its
/// connector id is the ping-pong module's and its `len` fits), else `None`.
pub fn ping_len(msg: &[u8]) -> Option<usize> {
    let cn = CnMsg::decode(msg).ok()?;
    let len = CN_MSG_SIZE + usize::from(cn.len);
    ((cn.idx, cn.val) == (CN_IDX_DM, PINGPONG_VAL) && len <= msg.len()).then_some(len)
}

/// A ping as the kernel's ping-pong module sends it: `seq`, a 160-byte payload. For tests.
#[doc(hidden)]
pub fn ping_message(seq: u32) -> Vec<u8> {
    let mut msg = vec![0x5au8; CN_MSG_SIZE + 160];
    CnMsg {
        idx: CN_IDX_DM,
        val: PINGPONG_VAL,
        seq,
        ack: 0,
        len: 160,
        flags: 0,
    }
    .encode(&mut msg)
    .expect("the buffer holds a cn_msg");
    msg
}

/// The ping-pong's userspace half: sends every ping back to the kernel unchanged (same id,
/// seq and payload) and leaves other messages alone; done after `count` echoes (`None`:
/// never). A [`Handler`] of the log servers' receive loop, so that the ping-pong's floor is
/// that loop's.
pub struct Echo {
    count: Option<u64>,
    echoed: u64,
    failed: Option<anyhow::Error>,
}

impl Echo {
    /// Echoes `count` pings (`None`: until stopped).
    pub fn new(count: Option<u64>) -> Self {
        Self {
            count,
            echoed: 0,
            failed: None,
        }
    }

    /// Pings echoed so far.
    pub fn echoed(&self) -> u64 {
        self.echoed
    }

    fn done(&self) -> bool {
        self.count.is_some_and(|c| self.echoed >= c)
    }
}

impl Handler for Echo {
    type Refusal = Infallible;

    fn message(&mut self, msg: &[u8], tx: &mut Replier<'_>, _: Instant) -> Result<(), Infallible> {
        let Some(len) = ping_len(msg) else {
            return Ok(());
        };
        if self.failed.is_some() || self.done() {
            return Ok(());
        }
        tx.message()[..len].copy_from_slice(&msg[..len]);
        match tx.send(len) {
            Ok(()) => self.echoed += 1,
            Err(e) => self.failed = Some(e),
        }
        Ok(())
    }

    /// A failed send ends the echo with its error.
    fn finished(&mut self) -> Option<Result<()>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        self.done().then_some(Ok(()))
    }
}

/// Joins connector group 7 and echoes pings ([`Echo`]) in the receive loop of `dm-ulogd`
/// until `count` were echoed (`None`: until SIGTERM or SIGINT). Prints `listening` to stderr
/// once it has joined the group. Needs CAP_NET_ADMIN, and CAP_SYS_ADMIN for the module to
/// accept the echoes.
pub fn echo(count: Option<u64>) -> Result<()> {
    let link = KernelLink::open()?;
    let server = Server::with_link(link, Echo::new(count))?;
    eprintln!("dm-ulog-bench echo: listening on connector group {CN_IDX_DM}");
    if count == Some(0) {
        return Ok(());
    }
    server.run()
}

/// `struct dm_ioctl`'s size; the interface's version and the flags used here.
const DM_IOCTL_SIZE: usize = 312;
const DM_VERSION: [u32; 3] = [4, 0, 0];
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
/// `struct dm_target_spec`'s size: the target's status text follows it.
const DM_TARGET_SPEC_SIZE: usize = 40;
const DM_NAME_LEN: usize = 128;

/// Fills `buf` with a DM_TABLE_STATUS request for the device `name` (info status, not the
/// table line).
pub fn encode_status_request(buf: &mut [u8], name: &str) -> Result<()> {
    if name.len() >= DM_NAME_LEN || name.contains('\0') {
        bail!("{name:?} is no device-mapper device name");
    }
    let size = u32::try_from(buf.len()).context("buffer too large")?;
    if buf.len() < DM_IOCTL_SIZE + DM_TARGET_SPEC_SIZE {
        bail!("buffer too small");
    }
    buf[..DM_IOCTL_SIZE].fill(0);
    for (i, v) in DM_VERSION.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    buf[12..16].copy_from_slice(&size.to_ne_bytes());
    buf[16..20].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_ne_bytes());
    buf[48..48 + name.len()].copy_from_slice(name.as_bytes());
    Ok(())
}

fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes"))
}

/// The first target's type and status text from a DM_TABLE_STATUS answer in `buf`.
pub fn decode_status_reply(buf: &[u8]) -> Result<(String, String)> {
    if buf.len() < DM_IOCTL_SIZE {
        bail!("short answer");
    }
    let flags = u32_at(buf, 28);
    if flags & DM_BUFFER_FULL_FLAG != 0 {
        bail!("the status does not fit the buffer");
    }
    if u32_at(buf, 20) == 0 {
        bail!("the device has no table");
    }
    let start = u32_at(buf, 16) as usize;
    let end = (u32_at(buf, 12) as usize).min(buf.len());
    let Some(spec) = buf
        .get(start..end)
        .filter(|s| s.len() >= DM_TARGET_SPEC_SIZE)
    else {
        bail!("malformed answer: no target in bytes {start}..{end}");
    };
    let cstr = |b: &[u8]| {
        let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..n]).into_owned()
    };
    Ok((cstr(&spec[24..40]), cstr(&spec[DM_TARGET_SPEC_SIZE..])))
}

nix::ioctl_readwrite_bad!(
    /// `DM_TABLE_STATUS` on `/dev/mapper/control`, with a `struct dm_ioctl` buffer.
    dm_table_status,
    nix::request_code_readwrite!(0xfd, 12, DM_IOCTL_SIZE),
    u8
);

/// Issues `warmup` then `count` status ioctls on the device `name`, one at a time, and
/// summarises how long each of the `count` took. Also returns the last status line
/// (`<target type>: <status>`).
pub fn status_loop(name: &str, count: usize, warmup: usize) -> Result<(Summary, String)> {
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .context("cannot open /dev/mapper/control")?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut samples = Vec::with_capacity(count);
    let mut status = String::new();
    for i in 0..warmup + count {
        encode_status_request(&mut buf, name)?;
        let t0 = Instant::now();
        // SAFETY: `buf` starts with an initialised `struct dm_ioctl` whose `data_size` is
        // `buf.len()`: the kernel reads and writes only within `buf`, which outlives the call.
        unsafe { dm_table_status(control.as_raw_fd(), buf.as_mut_ptr()) }
            .with_context(|| format!("status of device {name}"))?;
        let took = t0.elapsed();
        if i >= warmup {
            samples.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        }
        if i == 0 || i + 1 == warmup + count {
            let (kind, text) = decode_status_reply(&buf)?;
            status = format!("{kind}: {text}");
        }
    }
    Ok((Summary::of(&mut samples), status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        assert_eq!(Summary::of(&mut []), Summary::default());
        let mut v: Vec<u64> = (1..=200).rev().collect();
        let s = Summary::of(&mut v);
        assert_eq!(
            (s.count, s.p50, s.p99, s.mean, s.min, s.max),
            (200, 100, 198, 100, 1, 200)
        );
        let s = Summary::of(&mut [7]);
        assert_eq!((s.p50, s.p99, s.mean), (7, 7, 7));
        assert_eq!(
            s.to_string(),
            "count=1 p50_ns=7 p99_ns=7 mean_ns=7 min_ns=7 max_ns=7"
        );
    }

    #[test]
    fn only_pings_are_echoed_whole() {
        let mut msg = vec![0u8; CN_MSG_SIZE + 160];
        let ping = CnMsg {
            idx: CN_IDX_DM,
            val: PINGPONG_VAL,
            seq: 42,
            ack: 0,
            len: 160,
            flags: 0,
        };
        ping.encode(&mut msg).unwrap();
        assert_eq!(ping_len(&msg), Some(CN_MSG_SIZE + 160));
        // Trailing padding is not echoed.
        msg.extend_from_slice(&[0; 4]);
        assert_eq!(ping_len(&msg), Some(CN_MSG_SIZE + 160));
        // A log request (value 1) is not a ping, nor is a truncated ping.
        CnMsg { val: 1, ..ping }.encode(&mut msg).unwrap();
        assert_eq!(ping_len(&msg), None);
        ping.encode(&mut msg).unwrap();
        assert_eq!(ping_len(&msg[..100]), None);
        assert_eq!(ping_len(&msg[..10]), None);
    }

    fn ping(seq: u32) -> Vec<u8> {
        ping_message(seq)
    }

    /// The echo goes through the log servers' loop: pings come back whole, as one netlink
    /// message each; log requests and datagrams from processes do not; `count` ends it.
    #[test]
    fn echo_is_served_by_the_receive_loop() {
        use crate::link::{datagram, Capture, Loopback, NLMSG_HDR};
        let link = KernelLink::new(Loopback::<Capture>::default());
        let mut server = Server::with_link(link, Echo::new(Some(2))).unwrap();
        let endpoint = server.link().endpoint();
        let h =
            dm_ulog_uapi::Header::request(b"U", 1, dm_ulog_uapi::RequestType::Flush, 9, 0).unwrap();
        let mut request = vec![0; 512];
        let n = dm_ulog_uapi::encode_message(&mut request, &h, &[]).unwrap();
        // A log request and a ping in one datagram, a ping from a process, a ping.
        let mut both = datagram(&request[..n]);
        both.extend(datagram(&ping(41)));
        endpoint.push(both);
        endpoint.push_from(77, datagram(&ping(42)));
        endpoint.push(datagram(&ping(43)));
        endpoint.push(datagram(&ping(44)));
        assert!(server.receive_waiting().unwrap().is_break());
        assert_eq!(server.handler().echoed(), 2);
        let sent = server.link().endpoint().out.0.borrow();
        assert_eq!(sent.len(), 2);
        for (echo, seq) in sent.iter().zip([41, 43]) {
            assert_eq!(&echo[NLMSG_HDR..], &ping(seq)[..]);
            assert_eq!(&echo[0..4], &(echo.len() as u32).to_ne_bytes());
            assert_eq!(&echo[8..12], &seq.to_ne_bytes(), "netlink seq");
        }
    }

    #[test]
    fn status_request_and_reply_layout() {
        let mut buf = vec![0xffu8; 1024];
        encode_status_request(&mut buf, "bm").unwrap();
        assert_eq!(u32_at(&buf, 0), 4);
        assert_eq!(u32_at(&buf, 12), 1024);
        assert_eq!(u32_at(&buf, 16), DM_IOCTL_SIZE as u32);
        assert_eq!(u32_at(&buf, 28), 0);
        assert_eq!(&buf[48..51], b"bm\0");
        assert!(encode_status_request(&mut buf, &"x".repeat(128)).is_err());
        assert!(encode_status_request(&mut [0; 100], "bm").is_err());

        // What the kernel answers: one target spec and its status text.
        let spec = DM_IOCTL_SIZE;
        buf[12..16].copy_from_slice(&((spec + DM_TARGET_SPEC_SIZE + 12) as u32).to_ne_bytes());
        buf[20..24].copy_from_slice(&1u32.to_ne_bytes());
        buf[spec + 24..spec + 40].fill(0);
        buf[spec + 24..spec + 30].copy_from_slice(b"mirror");
        buf[spec + 40..spec + 52].copy_from_slice(b"2 253:0 A\0\xff\xff");
        assert_eq!(
            decode_status_reply(&buf).unwrap(),
            ("mirror".to_string(), "2 253:0 A".to_string())
        );
        buf[28..32].copy_from_slice(&DM_BUFFER_FULL_FLAG.to_ne_bytes());
        assert!(decode_status_reply(&buf).is_err());
        buf[28..32].fill(0);
        buf[20..24].fill(0);
        assert!(decode_status_reply(&buf).is_err());
    }
}
