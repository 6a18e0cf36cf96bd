// SPDX-License-Identifier: GPL-2.0
//! The receive loop's turns: requests are served on the wake-ups they cause, signals on the
//! turn after they came, and SIGTERM ends the loop. (Its own test binary: it raises signals,
//! which every thread of the process would see.)

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use dm_ulogd::link::{datagram, Endpoint, KernelLink, Loopback, Replier, Transmit};
use dm_ulogd::serve::{Handler, Server};
use signal_hook::consts::{SIGTERM, SIGUSR1};

/// A [`Loopback`] that poll always finds readable: a byte waits on a socket that is never
/// read.
struct Readable {
    queue: Loopback,
    ready: UnixDatagram,
    _peer: UnixDatagram,
}

impl Readable {
    fn new() -> Self {
        let (ready, peer) = UnixDatagram::pair().unwrap();
        peer.send(b"!").unwrap();
        Self {
            queue: Loopback::default(),
            ready,
            _peer: peer,
        }
    }
}

impl Transmit for Readable {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        self.queue.transmit(datagram)
    }
}

impl Endpoint for Readable {
    fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        self.queue.receive(buf)
    }
}

impl AsFd for Readable {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }
}

/// Counts what the loop hands it; echoes every message.
#[derive(Default)]
struct Counter {
    messages: u64,
    statuses: u64,
    exits: u64,
}

impl Handler for Counter {
    type Refusal = std::convert::Infallible;

    fn message(
        &mut self,
        msg: &[u8],
        tx: &mut Replier<'_>,
        _: Instant,
    ) -> Result<(), Self::Refusal> {
        self.messages += 1;
        tx.message()[..msg.len()].copy_from_slice(msg);
        tx.send(msg.len()).unwrap();
        Ok(())
    }

    fn status(&mut self) {
        self.statuses += 1;
    }

    fn may_exit(&mut self) -> bool {
        self.exits += 1;
        true
    }
}

#[test]
fn requests_and_signals_are_served_on_their_turns() {
    let mut server =
        Server::with_link(KernelLink::new(Readable::new()), Counter::default()).unwrap();
    let sent =
        |server: &Server<Counter, Readable>| server.link().endpoint().queue.out.0.borrow().len();
    for i in 0..3u8 {
        server.link().endpoint().queue.push(datagram(&[i; 20]));
    }
    // Wake-ups for requests only.
    for _ in 0..5 {
        assert!(server.turn().unwrap().is_continue());
    }
    assert_eq!(server.handler().messages, 3);
    assert_eq!(sent(&server), 3);
    assert_eq!(server.handler().statuses, 0);

    // A signal is still seen, on the turn after it came.
    signal_hook::low_level::raise(SIGUSR1).unwrap();
    assert!(server.turn().unwrap().is_continue());
    assert_eq!(server.handler().statuses, 1);
    assert!(server.turn().unwrap().is_continue());
    assert_eq!(server.handler().statuses, 1);

    // SIGTERM ends the loop once what waits was served.
    server.link().endpoint().queue.push(datagram(&[9; 20]));
    signal_hook::low_level::raise(SIGTERM).unwrap();
    server.run().unwrap();

    let mut server =
        Server::with_link(KernelLink::new(Readable::new()), Counter::default()).unwrap();
    server.link().endpoint().queue.push(datagram(&[7; 20]));
    signal_hook::low_level::raise(SIGTERM).unwrap();
    assert!(server.turn().unwrap().is_break());
    assert_eq!((server.handler().messages, server.handler().exits), (1, 1));
    assert_eq!(sent(&server), 1);
}
