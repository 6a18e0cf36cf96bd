// SPDX-License-Identifier: GPL-2.0
//! What one request costs the receive loop, on the host, without a kernel: requests replayed
//! from memory through `dm-ulogd`'s handling (parse, answer from the logs, reply, count),
//! replies dropped. Not a test: it prints figures (run it with `--release`).
//!
//! Usage: `request_cost [LOGS [REQUESTS]]` (default 64 core logs, 2,000,000 requests).
//!
//! - `batched`: the loop's inner part, one `receive_waiting` for many requests, as under
//!   load;
//! - `one per wake-up`: a whole turn (`poll`, receive, signals) per request, as when requests
//!   come one at a time. `strace -c -f` on it counts the system calls per turn.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use dm_ulog_uapi::{encode_message, payload::encode_regions, Header, RequestType};
use dm_ulogd::link::{datagram, Endpoint, KernelLink, Transmit};
use dm_ulogd::serve::{Config, Honest, LogService, Server};

/// Hands out datagrams in order, `left` times, going round from `first` on after the last;
/// poll always finds it readable.
struct Replay {
    datagrams: Vec<Vec<u8>>,
    first: Cell<usize>,
    next: Cell<usize>,
    left: Cell<u64>,
    sent: Cell<u64>,
    ready: UnixDatagram,
    _peer: UnixDatagram,
}

impl Replay {
    fn new(datagrams: Vec<Vec<u8>>) -> Self {
        let (ready, peer) = UnixDatagram::pair().expect("a socket pair");
        peer.send(b"!").expect("a byte to poll for");
        Self {
            datagrams,
            first: Cell::new(0),
            next: Cell::new(0),
            left: Cell::new(0),
            sent: Cell::new(0),
            ready,
            _peer: peer,
        }
    }
}

impl Transmit for Replay {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        std::hint::black_box(datagram);
        self.sent.set(self.sent.get() + 1);
        Ok(())
    }
}

impl Endpoint for Replay {
    fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        if self.left.get() == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.left.set(self.left.get() - 1);
        let i = self.next.get();
        self.next.set(if i + 1 == self.datagrams.len() {
            self.first.get()
        } else {
            i + 1
        });
        let d = &self.datagrams[i];
        buf[..d.len()].copy_from_slice(d);
        Ok((d.len(), 0))
    }
}

impl AsFd for Replay {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }
}

fn request(luid: u64, kind: RequestType, data: &[u8]) -> Vec<u8> {
    let uuid = format!("LVM-0123456789abcdef0123456789abcdef0123456789abcdef{luid:012}");
    let h = Header::request(uuid.as_bytes(), luid, kind, 1, data.len()).expect("a header");
    let mut msg = vec![0; 1024];
    let n = encode_message(&mut msg, &h, data).expect("a request");
    datagram(&msg[..n])
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let logs: u64 = args.next().map_or(Ok(64), |s| s.parse())?;
    let n: u64 = args.next().map_or(Ok(2_000_000), |s| s.parse())?;

    let mut setup = Vec::new();
    let mut mix = Vec::new();
    let mut marks = [0u8; 8];
    encode_regions(&[5], &mut marks)?;
    let region = 5u64.to_ne_bytes();
    for luid in 1..=logs {
        setup.push(request(luid, RequestType::Ctr, b"65536 core 8"));
        setup.push(request(luid, RequestType::Resume, b""));
        use RequestType::*;
        for (kind, data) in [
            (MarkRegion, &marks[..]),
            (Flush, &[][..]),
            (ClearRegion, &marks[..]),
            (IsClean, &region[..]),
            (InSync, &region[..]),
            (GetSyncCount, &[][..]),
            (StatusInfo, &[][..]),
            (GetResyncWork, &[][..]),
        ] {
            mix.push(request(luid, kind, data));
        }
    }
    let first = setup.len();
    setup.extend(mix);
    let service = LogService::new(&Config::default(), Honest)?;
    let mut server = Server::with_link(KernelLink::new(Replay::new(setup)), service)?;
    // The logs first, then the mix over and over.
    server.link().endpoint().left.set(first as u64);
    while server.link().endpoint().left.get() > 0 {
        let _ = server.receive_waiting()?;
    }
    server.link().endpoint().first.set(first);

    let replay = |server: &Server<_, Replay>, k| server.link().endpoint().left.set(k);
    replay(&server, n);
    let t0 = Instant::now();
    while server.link().endpoint().left.get() > 0 {
        let _ = server.receive_waiting()?;
    }
    let batched = t0.elapsed();

    let turns = n / 10;
    let t0 = Instant::now();
    for _ in 0..turns {
        replay(&server, 1);
        let _ = server.turn()?;
    }
    let single = t0.elapsed();
    println!(
        "logs={logs} batched: {n} requests, {:.1} ns/request; one per wake-up: {turns} turns, \
         {:.1} ns/turn; replies={}",
        batched.as_nanos() as f64 / n as f64,
        single.as_nanos() as f64 / turns as f64,
        server.link().endpoint().sent.get()
    );
    Ok(())
}
