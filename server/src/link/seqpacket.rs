// SPDX-License-Identifier: GPL-2.0
//! A fake kernel's connector, for tests: a Unix `SOCK_SEQPACKET` socket whose datagrams are
//! byte for byte those of the kernel's connector (netlink header, `cn_msg`, request or reply,
//! built by [`datagram`](super::datagram) and [`Replier`](super::Replier)).
//!
//! The host kernel of a test has no log module, so a test plays the kernel itself
//! (`dm-ulog-fakekernel`) and the server talks to it through [`FakeKernelSocket`]
//! (`--kernel-socket PATH`) instead of the netlink socket. A seqpacket socket keeps datagram
//! boundaries, as netlink does, and reports the peer's close, which netlink cannot: a server
//! whose fake kernel went away ends with an error instead of waiting forever.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    accept4, bind, connect, listen, recv, send, socket, AddressFamily, Backlog, MsgFlags, SockFlag,
    SockType, UnixAddr,
};

use super::{Endpoint, Transmit};

/// One end of a seqpacket connection between a server and a fake kernel.
#[derive(Debug)]
pub struct Seqpacket {
    fd: OwnedFd,
}

impl Seqpacket {
    /// Connects to the fake kernel listening on `path`.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let fd = seqpacket_socket(SockFlag::empty())?;
        connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(Self { fd })
    }

    /// Sends one datagram whole (blocking). A peer that has gone is `EPIPE`, without the
    /// `SIGPIPE` that would kill the process.
    pub fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let n = send(self.fd.as_raw_fd(), datagram, MsgFlags::MSG_NOSIGNAL)?;
        if n != datagram.len() {
            return Err(io::Error::other(format!(
                "sent {n} of {} bytes of a datagram",
                datagram.len()
            )));
        }
        Ok(())
    }

    /// Takes one waiting datagram without blocking ([`io::ErrorKind::WouldBlock`] if none).
    /// `Ok(None)`: the peer closed the connection (the protocol has no empty datagrams).
    pub fn try_receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            // The peer went while datagrams were still unread.
            Err(Errno::ECONNRESET) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Seqpacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn seqpacket_socket(flags: SockFlag) -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | flags,
        None,
    )?)
}

/// The fake kernel's listening socket; the socket file is removed when it is dropped.
#[derive(Debug)]
pub struct SeqpacketListener {
    fd: OwnedFd,
    path: PathBuf,
}

impl SeqpacketListener {
    /// Listens on `path`, replacing a socket file left there by an earlier run.
    pub fn bind(path: &Path) -> Result<Self> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the old socket {}", path.display()))?;
            }
            _ => {}
        }
        // Non-blocking, for `try_accept`; accepted sockets block (receives take
        // `MSG_DONTWAIT`).
        let fd = seqpacket_socket(SockFlag::SOCK_NONBLOCK)?;
        let addr = UnixAddr::new(path).context("socket path")?;
        bind(fd.as_raw_fd(), &addr).with_context(|| format!("binding {}", path.display()))?;
        listen(&fd, Backlog::new(4)?).context("listen")?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// Takes a waiting connection without blocking; `None` if there is none.
    pub fn try_accept(&self) -> io::Result<Option<Seqpacket>> {
        match accept4(&self.fd, SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => Ok(Some(Seqpacket { fd })),
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for SeqpacketListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SeqpacketListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The server's [`Endpoint`] to a fake kernel: every datagram counts as the kernel's (port
/// 0), and the fake kernel closing the socket is an error that ends the receive loop.
pub struct FakeKernelSocket {
    socket: Seqpacket,
    path: PathBuf,
}

impl FakeKernelSocket {
    /// Connects to the fake kernel listening on `path`.
    pub fn connect(path: &Path) -> Result<Self> {
        let socket = Seqpacket::connect(path).with_context(|| {
            format!(
                "cannot connect to a fake kernel at {} (--kernel-socket)",
                path.display()
            )
        })?;
        Ok(Self {
            socket,
            path: path.to_owned(),
        })
    }
}

impl Transmit for FakeKernelSocket {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        self.socket.send(datagram)
    }
}

impl Endpoint for FakeKernelSocket {
    fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        match self.socket.try_receive(buf)? {
            Some(n) => Ok((n, 0)),
            None => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "the fake kernel at {} closed the socket",
                    self.path.display()
                ),
            )),
        }
    }
}

impl AsFd for FakeKernelSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{datagram, KernelLink, Receipt};
    use dm_ulog_uapi::{encode_message, Header, Reply, RequestType, Withdrawal};

    /// A request from the fake kernel reaches the link as the kernel's, a withdrawal and the
    /// reply come back framed as the connector's, and the fake kernel's close is an error.
    #[test]
    fn requests_and_replies_cross_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel");
        let listener = SeqpacketListener::bind(&path).unwrap();
        assert!(listener.try_accept().unwrap().is_none());
        let mut link = KernelLink::new(FakeKernelSocket::connect(&path).unwrap());
        let kernel = listener.try_accept().unwrap().expect("connected");

        let withdrawal = Withdrawal {
            luid: 3,
            first: 4,
            count: 1,
        };
        let h = Header::request(b"U", 3, RequestType::GetSyncCount, 9, 0).unwrap();
        let mut msg = [0u8; 256];
        let n = encode_message(&mut msg, &h, &[]).unwrap();
        kernel.send(&datagram(&msg[..n])).unwrap();
        let receipt = link
            .receive(|msg, tx, _| {
                let r = dm_ulog_uapi::Request::parse(msg).unwrap();
                tx.withdraw(&withdrawal).unwrap();
                tx.reply(&r.header, 0, &7u64.to_ne_bytes()).unwrap();
            })
            .unwrap();
        assert_eq!(receipt, Receipt::Handled);

        let mut buf = [0u8; 1024];
        let n = kernel.try_receive(&mut buf).unwrap().unwrap();
        crate::link::for_each_message(&buf[..n], |m| {
            assert_eq!(Withdrawal::parse(m), Ok(withdrawal));
        })
        .unwrap();
        let n = kernel.try_receive(&mut buf).unwrap().unwrap();
        let mut replies = Vec::new();
        crate::link::for_each_message(&buf[..n], |m| {
            let Reply::Full { header, data } = Reply::parse(m).unwrap() else {
                panic!("a bare ACK");
            };
            replies.push((header.seq, data.to_vec()));
        })
        .unwrap();
        assert_eq!(replies, [(9, 7u64.to_ne_bytes().to_vec())]);

        drop(kernel);
        // The first receive may only report the last batch's end.
        let e = (0..2)
            .find_map(|_| link.receive(|_, _, _| panic!("passed on")).err())
            .expect("the close is an error");
        assert!(format!("{e:#}").contains("closed the socket"), "{e:#}");
        drop(listener);
        assert!(!path.exists());
    }
}
