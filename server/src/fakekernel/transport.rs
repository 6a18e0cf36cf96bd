// SPDX-License-Identifier: GPL-2.0
//! The fake kernel's transport, as the module's (`transfer.rs`): seqs, waiting requests,
//! resends; over a listening seqpacket socket that one server at a time connects to.
//!
//! A request waits until its reply comes. It is sent again with a new seq when it is
//! answered EAGAIN (after [`EAGAIN_PAUSE`]), when it is unanswered for the timeout, when a
//! server announces itself (every waiting request, at once, as the module does), and when a
//! new server connects (those sent on a connection that closed: they are lost). A reply to a
//! seq no request waits for is dropped, as the module drops it.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dm_ulog_uapi::payload::decode_regions;
use dm_ulog_uapi::{
    encode_message, Announce, CnMsg, Header, Reply, RequestType, Withdrawal, CN_MSG_SIZE,
    CN_VAL_DM_USERSPACE_LOG_ANNOUNCE, CONNECTOR_MAX_MSG_SIZE, HEADER_SIZE,
};
use nix::errno::Errno;
use nix::poll::PollFd;

use super::events::{summarise, Event, EventLog, Why};
use super::Request;
use crate::link::seqpacket::{Seqpacket, SeqpacketListener};
use crate::link::{datagram, for_each_message};

/// How long a request answered EAGAIN waits before it is sent again: a minority that answers
/// EAGAIN at once must not make the node spin.
pub const EAGAIN_PAUSE: Duration = Duration::from_millis(10);

/// A request not answered yet.
struct Waiting {
    request: Request,
    /// The seq of its last send; each send takes a new one.
    seq: u32,
    /// The connection and time of its last send; `None` while it is not sent (no server is
    /// connected, or it waits out [`EAGAIN_PAUSE`]).
    sent: Option<(u64, Instant)>,
    /// Answered EAGAIN: sent again at this time.
    retry_at: Option<Instant>,
    /// Sent at least once.
    ever_sent: bool,
}

/// A request's final answer (anything but EAGAIN).
pub struct Answer {
    /// The request.
    pub request: Request,
    /// The seq it was answered under.
    pub seq: u32,
    /// 0 or a negative errno.
    pub error: i32,
    /// The reply's payload.
    pub data: Vec<u8>,
}

/// The kernel's end of the connection.
pub struct Transport {
    listener: SeqpacketListener,
    /// The connected server and its number.
    conn: Option<(u64, Seqpacket)>,
    connections: u64,
    next_seq: u32,
    waiting: Vec<Waiting>,
    timeout: Duration,
    uuid: Vec<u8>,
    luid: u64,
    /// Datagrams sent, resends included.
    pub sends: u64,
    /// Withdrawals received, for any log (the module counts them so to void what it learned).
    pub withdrawals: u64,
    rx: Vec<u8>,
}

impl Transport {
    /// Serves requests of log `uuid`/`luid` to the servers that connect to `listener`.
    pub fn new(listener: SeqpacketListener, uuid: &[u8], luid: u64, timeout: Duration) -> Self {
        Self {
            listener,
            conn: None,
            connections: 0,
            // The module's seqs count up from its `first_seq`, for all requests.
            next_seq: 1,
            waiting: Vec::new(),
            timeout,
            uuid: uuid.to_vec(),
            luid,
            sends: 0,
            withdrawals: 0,
            rx: vec![0; 2 * CONNECTOR_MAX_MSG_SIZE],
        }
    }

    /// What to poll: the listener, and the connection if there is one.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = vec![PollFd::new(
            self.listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if let Some((_, s)) = &self.conn {
            fds.push(PollFd::new(s.as_fd(), nix::poll::PollFlags::POLLIN));
        }
        fds
    }

    /// When [`Transport::tick`] has something to do next.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting
            .iter()
            .filter_map(|w| w.retry_at.or(w.sent.map(|(_, at)| at + self.timeout)))
            .min()
    }

    /// No request waits for an answer (sent or not).
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Sends a request, or keeps it until a server connects. One answered ESRCH before
    /// (`answered_seq`) is sent again for that reason.
    pub fn submit(&mut self, request: Request, events: &mut EventLog) -> Result<()> {
        self.waiting.push(Waiting {
            seq: request.answered_seq.unwrap_or(0),
            ever_sent: request.answered_seq.is_some(),
            request,
            sent: None,
            retry_at: None,
        });
        self.send(self.waiting.len() - 1, Why::Esrch, events)
    }

    /// Sends waiting request `i` with a new seq, if a server is connected (else it waits
    /// for one); `why` it is sent again, unless it was never sent. A failed send is the
    /// connection's end (its requests go again on the next).
    fn send(&mut self, i: usize, why: Why, events: &mut EventLog) -> Result<()> {
        let w = &mut self.waiting[i];
        w.sent = None;
        w.retry_at = None;
        let Some((conn, socket)) = &self.conn else {
            return Ok(());
        };
        let (why, prev) = if w.ever_sent {
            (why, Some(w.seq))
        } else {
            (Why::First, None)
        };
        // The module's seqs count up for all requests, a new one at each send.
        w.seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let r = &w.request;
        let header = Header::request(&self.uuid, self.luid, r.kind, w.seq, r.payload.len())?;
        let mut msg = vec![0; CN_MSG_SIZE + HEADER_SIZE + r.payload.len()];
        let n = encode_message(&mut msg, &header, &r.payload)?;
        if let Err(e) = socket.send(&datagram(&msg[..n])) {
            tracing::warn!("sending to server {conn}: {e}");
            return self.disconnect(events);
        }
        w.sent = Some((*conn, Instant::now()));
        w.ever_sent = true;
        self.sends += 1;
        events.log(Event::Send {
            req: r.id,
            seq: w.seq,
            kind: r.kind.name().into(),
            why,
            regions: regions_of(r.kind, &r.payload),
            prev,
        })
    }

    fn disconnect(&mut self, events: &mut EventLog) -> Result<()> {
        if let Some((conn, _)) = self.conn.take() {
            tracing::info!("server {conn} closed the connection");
            events.log(Event::Disconnect { conn })?;
        }
        Ok(())
    }

    /// Resends what timed out or waited out an EAGAIN.
    pub fn tick(&mut self, events: &mut EventLog) -> Result<()> {
        let now = Instant::now();
        for i in 0..self.waiting.len() {
            let w = &self.waiting[i];
            if w.retry_at.is_some_and(|t| t <= now) {
                self.send(i, Why::Eagain, events)?;
            } else if w.sent.is_some_and(|(_, at)| at + self.timeout <= now) {
                if self.conn.is_some() {
                    tracing::warn!(
                        "{} seq={} unanswered for {:?}: resending",
                        w.request.kind.name(),
                        w.seq,
                        self.timeout
                    );
                }
                // Without a server it waits for the next one.
                self.send(i, Why::Timeout, events)?;
            }
        }
        Ok(())
    }

    /// Takes a new connection and what the server sent; returns the requests answered.
    pub fn receive(&mut self, events: &mut EventLog) -> Result<Vec<Answer>> {
        if let Some(socket) = self.listener.try_accept().context("accepting a server")? {
            self.connect(socket, events)?;
        }
        let mut messages = VecDeque::new();
        while let Some((_, socket)) = &self.conn {
            match socket.try_receive(&mut self.rx) {
                Ok(Some(n)) => {
                    if let Err(e) = for_each_message(&self.rx[..n], |m| {
                        messages.push_back(m.to_vec());
                    }) {
                        tracing::warn!("dropping (the rest of) a datagram: {e}");
                    }
                }
                Ok(None) => self.disconnect(events)?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(Errno::EINTR as i32) => {}
                Err(e) => return Err(e).context("receiving from the server"),
            }
        }
        let mut answers = Vec::new();
        for msg in messages {
            answers.extend(self.message(&msg, events)?);
        }
        Ok(answers)
    }

    /// A new server: the requests sent to the one before are lost, and go again now.
    fn connect(&mut self, socket: Seqpacket, events: &mut EventLog) -> Result<()> {
        self.disconnect(events)?;
        self.connections += 1;
        let conn = self.connections;
        tracing::info!("server {conn} connected");
        self.conn = Some((conn, socket));
        events.log(Event::Connect { conn })?;
        for i in 0..self.waiting.len() {
            let w = &self.waiting[i];
            if w.retry_at.is_none() && w.sent.is_none_or(|(c, _)| c != conn) {
                self.send(i, Why::Connect, events)?;
            }
        }
        Ok(())
    }

    /// One connector message from the server: an announcement, a withdrawal or a reply.
    fn message(&mut self, msg: &[u8], events: &mut EventLog) -> Result<Option<Answer>> {
        if CnMsg::decode(msg).is_ok_and(|cn| cn.val == CN_VAL_DM_USERSPACE_LOG_ANNOUNCE) {
            if let Ok(w) = Withdrawal::parse(msg) {
                self.withdrawals += 1;
                events.log(Event::Withdraw {
                    luid: w.luid,
                    first: w.first,
                    count: w.count,
                })?;
            } else if let Ok(a) = Announce::parse(msg) {
                tracing::info!("server pid {} announced itself", a.pid);
                events.log(Event::Announce {
                    pid: a.pid,
                    features: a.features,
                })?;
                // As the module: every request waiting for a reply goes again at once.
                for i in 0..self.waiting.len() {
                    if self.waiting[i].retry_at.is_none() {
                        self.send(i, Why::Announce, events)?;
                    }
                }
            } else {
                tracing::warn!("malformed message on the announcement's connector id");
            }
            return Ok(None);
        }
        let reply = match Reply::parse(msg) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("malformed reply: {e}");
                return Ok(None);
            }
        };
        let seq = reply.seq();
        // As the module: a full reply must name the request's type, and its log (or none).
        let luid = self.luid;
        let answers = |w: &Waiting| {
            w.seq == seq
                && w.sent.is_some()
                && match &reply {
                    Reply::Ack { .. } => true,
                    Reply::Full { header, .. } => {
                        (header.luid == luid || header.luid == 0)
                            && header.kind().is_ok_and(|k| k == w.request.kind)
                    }
                }
        };
        let Some(i) = self.waiting.iter().position(answers) else {
            events.log(Event::Stray { seq })?;
            return Ok(None);
        };
        let (error, data) = match reply {
            // A bare ACK carries a positive errno.
            Reply::Ack { ack, .. } => (
                i32::try_from(ack).map_or(-(Errno::EPROTO as i32), |a| -a),
                &[][..],
            ),
            Reply::Full { header, data } => (header.error, data),
        };
        let w = &mut self.waiting[i];
        events.log(Event::Reply {
            req: w.request.id,
            seq,
            kind: w.request.kind.name().into(),
            error,
            payload: summarise(w.request.kind, data),
        })?;
        if error == -(Errno::EAGAIN as i32) {
            w.sent = None;
            w.retry_at = Some(Instant::now() + EAGAIN_PAUSE);
            return Ok(None);
        }
        let w = self.waiting.swap_remove(i);
        Ok(Some(Answer {
            request: w.request,
            seq,
            error,
            data: data.to_vec(),
        }))
    }
}

/// The regions a request's payload names, for its `send` event.
fn regions_of(kind: RequestType, payload: &[u8]) -> Vec<u64> {
    match kind {
        RequestType::MarkRegion
        | RequestType::ClearRegion
        | RequestType::Flush
        | RequestType::InSync
        | RequestType::IsClean
        | RequestType::IsRemoteRecovering => decode_regions(kind, payload)
            .map(Iterator::collect)
            .unwrap_or_default(),
        // `{ region, in_sync }`: the region.
        RequestType::SetRegionSync => decode_regions(kind, payload)
            .map(|mut r| r.next().into_iter().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
