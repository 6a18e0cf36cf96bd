// SPDX-License-Identifier: GPL-2.0
//! The responder of `dm-ulog-hostile`: correct answers (the same [`Logs`](crate::logs::Logs)
//! as dm-ulogd) unless a scripted fault or the seeded fuzzer says otherwise.

pub mod fault;
pub mod fuzz;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability};
use dm_ulog_uapi::{Withdrawal, CN_MSG_SIZE};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use tracing::{info, warn};

use crate::link::{Capture, Replier};
use crate::serve::{Exchange, Responder};
use fault::{Action, Script};
use fuzz::{Fuzzer, Previous};
use netlink_sys::{protocols::NETLINK_CONNECTOR, Socket, SocketAddr};

/// How far a stray reply's seq is from the request's.
pub const STRAY_SEQ_OFFSET: u32 = fuzz::STRAY_SEQ_OFFSET;

/// Misbehaves on command, reproducibly.
pub struct Hostile {
    script: Script,
    fuzzer: Option<Fuzzer>,
    seed: u64,
    requests: u64,
    prev: Previous,
}

impl Hostile {
    /// Faults in order; fuzzing if `fuzz` is `Some(probability)`.
    pub fn new(script: Script, seed: u64, fuzz: Option<f64>, max_malformed: Option<u64>) -> Self {
        Self {
            script,
            fuzzer: fuzz.map(|p| Fuzzer::new(seed, p, max_malformed)),
            seed,
            requests: 0,
            prev: Previous::default(),
        }
    }

    /// The counter line printed on SIGUSR1 and at exit.
    pub fn summary(&self) -> String {
        format!(
            "hostile: requests={} malformed={} seed={}",
            self.requests,
            self.fuzzer.as_ref().map_or(0, Fuzzer::malformed),
            self.seed
        )
    }

    fn inject(&mut self, action: &Action, ex: &mut Exchange<'_, '_>) -> Result<()> {
        let h = ex.request.header;
        let error =
            if action.applies_request() && !matches!(action, Action::Delay(_) | Action::Early(_)) {
                ex.answer()?
            } else {
                0
            };
        match action {
            Action::Drop => Ok(()),
            Action::Errno(n) => ex.tx.reply(&h, n.wrapping_neg(), &[]),
            Action::Ack(n) => {
                let len = ex.tx.encode_ack(h.seq, *n);
                ex.tx.send(len)
            }
            Action::Size(n) => {
                ex.payload.clear();
                ex.payload.resize(*n, 0);
                ex.tx.reply(&h, 0, ex.payload)
            }
            Action::U64(v) => ex.tx.reply(&h, 0, &v.to_ne_bytes()),
            Action::Device(s) | Action::DeviceRaw(s) => {
                ex.payload.clear();
                ex.payload.extend_from_slice(s.as_bytes());
                if matches!(action, Action::Device(_)) {
                    ex.payload.push(0);
                }
                ex.tx.reply(&h, 0, ex.payload)
            }
            Action::Stray => {
                let mut stray = h;
                stray.seq = h.seq.wrapping_add(STRAY_SEQ_OFFSET);
                ex.tx.reply(&stray, error, ex.payload)?;
                ex.send_answer(error)
            }
            Action::Dup => {
                ex.send_answer(error)?;
                ex.send_answer(error)
            }
            Action::Delay(d) => {
                std::thread::sleep(*d);
                let error = ex.answer()?;
                ex.send_answer(error)
            }
            Action::Ignore => ex.tx.reply(&h, 0, &[]),
            Action::Early(d) => {
                ex.tx.reply(&h, 0, &[])?;
                std::thread::sleep(*d);
                ex.answer().map(|_| ())
            }
            Action::Unpriv => reply_unprivileged(ex),
            Action::DataSize(n) => {
                let len = ex.tx.encode(&h, error, ex.payload)?;
                let mut lying = h;
                lying.error = error;
                lying.data_size = *n;
                lying.encode(&mut ex.tx.message()[CN_MSG_SIZE..])?;
                ex.tx.send(len)
            }
            Action::Exit => {
                ex.send_answer(error)?;
                warn!("fault exit: dying after the reply, as a crash would");
                std::process::abort()
            }
            Action::Misaddressed | Action::Mistyped => {
                let mut wrong = h;
                if matches!(action, Action::Misaddressed) {
                    wrong.luid = h.luid.wrapping_add(1);
                } else {
                    wrong.request_type = other_type(h.request_type);
                }
                ex.tx.reply(&wrong, 0, &3u64.to_ne_bytes())?;
                ex.send_answer(error)
            }
            Action::Withdraw => {
                ex.tx.withdraw(&Withdrawal {
                    luid: h.luid,
                    first: 0,
                    count: u64::MAX,
                })?;
                ex.send_answer(error)
            }
            Action::Anonymous => {
                let mut anonymous = h;
                anonymous.luid = 0;
                ex.tx.reply(&anonymous, error, ex.payload)
            }
            Action::UnprivSocket => {
                // Connected, and sent without an address: netlink then holds the socket's
                // opener to the capability check too (with an address it checks the sender
                // only, NETLINK_SKB_DST).
                let socket = socket_without_sys_admin()?;
                socket
                    .connect(&SocketAddr::new(0, 0))
                    .context("connecting to the kernel")?;
                let capture = Capture::default();
                let mut buf = Vec::new();
                Replier::new(&capture, &mut buf).reply(&h, 0, &3u64.to_ne_bytes())?;
                for datagram in capture.0.borrow().iter() {
                    socket
                        .send(datagram, 0)
                        .context("sending on the connected socket")?;
                }
                ex.send_answer(error)
            }
        }
    }
}

/// A connector socket opened while CAP_SYS_ADMIN was not in effect; it is back in effect when
/// this returns, so only the socket's opener lacks it.
fn socket_without_sys_admin() -> Result<Socket> {
    caps::drop(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)?;
    let socket = Socket::new(NETLINK_CONNECTOR).context("a connector socket");
    caps::raise(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)?;
    socket
}

/// A request type other than `raw`'s (both valid).
fn other_type(raw: u32) -> u32 {
    let flush = dm_ulog_uapi::RequestType::Flush as u32;
    if raw & dm_ulog_uapi::REQUEST_TYPE_MASK == flush {
        dm_ulog_uapi::RequestType::GetRegionSize as u32
    } else {
        flush
    }
}

/// Sends the correct reply from a forked child that dropped CAP_SYS_ADMIN, so the kernel
/// ignores it. The child's state changes die with it; the parent's state is untouched.
fn reply_unprivileged(ex: &mut Exchange<'_, '_>) -> Result<()> {
    // SAFETY: dm-ulog-hostile is single-threaded (tracing writes synchronously, signal
    // handlers only set flags), so the child may allocate and take locks freely.
    match unsafe { fork() }.context("fork for an unprivileged reply")? {
        ForkResult::Child => {
            let code = match send_without_sys_admin(ex) {
                Ok(()) => 0,
                Err(e) => {
                    warn!("unprivileged reply: {e:#}");
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            other => bail!("the unprivileged reply's child ended with {other:?}"),
        },
    }
}

fn send_without_sys_admin(ex: &mut Exchange<'_, '_>) -> Result<()> {
    caps::drop(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)?;
    caps::drop(None, CapSet::Permitted, Capability::CAP_SYS_ADMIN)?;
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)? {
        bail!("CAP_SYS_ADMIN could not be dropped");
    }
    let error = ex.answer()?;
    ex.send_answer(error)
}

impl Responder for Hostile {
    fn respond(&mut self, ex: &mut Exchange<'_, '_>) -> Result<()> {
        self.requests += 1;
        if let Some(action) = self.script.next(ex.kind) {
            info!(
                "fault {action} on {} seq={}",
                ex.type_name(),
                ex.request.header.seq
            );
            // The kernel may still wait for this seq: no duplicates of it.
            self.prev.clear();
            return self.inject(&action, ex);
        }
        let error = ex.answer()?;
        if let Some(fuzzer) = &mut self.fuzzer {
            if fuzzer.attack(ex, error, &self.prev)? {
                self.prev.clear();
                return Ok(());
            }
        }
        ex.send_answer(error)?;
        self.prev.set(&ex.request.header, error, ex.payload);
        Ok(())
    }

    fn status(&mut self) {
        eprintln!("{}", self.summary());
    }

    fn exit(&mut self) {
        eprintln!("{}", self.summary());
    }
}
