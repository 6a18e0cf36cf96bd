// SPDX-License-Identifier: GPL-2.0
//! SIGTERM, SIGINT and SIGUSR1 as events of the receive loop.
//!
//! The handlers only set a flag and write a byte to a self-pipe (signal-hook's pattern), so
//! the loop, polling the pipe beside the netlink socket, wakes up for them.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::{flag, low_level::pipe};

/// What the signals that arrived ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// SIGTERM or SIGINT: exit.
    pub exit: bool,
    /// SIGUSR1: dump the status.
    pub status: bool,
}

/// The signals the server handles.
pub struct Signals {
    wake: UnixStream,
    exit: Arc<AtomicBool>,
    status: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Self> {
        let (wake, write) = UnixStream::pair().context("creating the signal pipe")?;
        wake.set_nonblocking(true)?;
        let exit = Arc::new(AtomicBool::new(false));
        let status = Arc::new(AtomicBool::new(false));
        for (sig, flag_) in [(SIGTERM, &exit), (SIGINT, &exit), (SIGUSR1, &status)] {
            // The flag first, then the wake-up byte, as signal-hook requires.
            flag::register(sig, Arc::clone(flag_)).context("installing a signal handler")?;
            pipe::register(sig, write.try_clone()?).context("installing a signal handler")?;
        }
        Ok(Self { wake, exit, status })
    }

    /// Empties the pipe, then takes the flags (in that order, so no signal is lost).
    pub fn take(&mut self) -> Pending {
        let mut buf = [0u8; 64];
        while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
        Pending {
            exit: self.exit.swap(false, Ordering::SeqCst),
            status: self.status.swap(false, Ordering::SeqCst),
        }
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usr1_and_term_become_pending_events() {
        let mut s = Signals::install().unwrap();
        assert_eq!(s.take(), Pending::default());
        signal_hook::low_level::raise(SIGUSR1).unwrap();
        assert_eq!(
            s.take(),
            Pending {
                exit: false,
                status: true
            }
        );
        signal_hook::low_level::raise(SIGTERM).unwrap();
        assert_eq!(
            s.take(),
            Pending {
                exit: true,
                status: false
            }
        );
        assert_eq!(s.take(), Pending::default());
    }
}
