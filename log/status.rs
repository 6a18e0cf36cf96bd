// SPDX-License-Identifier: GPL-2.0

//! What `dmsetup status` and `dmsetup table` show for the log.
//!
//! Status must not hang while the server is gone: it reports how long the server has been
//! unreachable instead of waiting for it.

use core::fmt::Write;

use kernel::{prelude::*, time::Delta};

use super::UserspaceLog;
use crate::{
    table_args::{self, ByteWriter},
    uapi::{ctr, RequestType},
};

impl UserspaceLog {
    /// One request, unless the server is known to be gone; then, or when this request finds
    /// no server, `Err(None)` at once instead of waiting for one.
    ///
    /// For what `dmsetup status` asks: waiting for a server would block it until one is back.
    pub(super) fn request_unless_gone(
        &self,
        kind: RequestType,
        reply: &mut [u8],
    ) -> core::result::Result<usize, Option<Error>> {
        if self.transport.unreachable_for().is_some() {
            return Err(None);
        }
        match self.request_once(kind, &[], reply) {
            Err(e) if e == ESRCH && self.transport.unreachable_for().is_some() => Err(None),
            // A server that answers but does not know the log: re-create it there.
            Err(e) if e == ESRCH => self.request(kind, &[], reply).map_err(Some),
            r => r.map_err(Some),
        }
    }

    pub(super) fn status_info(&self, out: &mut [u8]) -> usize {
        let cap = out.len() - 1;
        let len = match self.request_unless_gone(RequestType::StatusInfo, &mut out[..cap]) {
            // The server's text need not be NUL-terminated; stop at a NUL if it has one.
            Ok(n) => out[..n].iter().position(|&b| b == 0).unwrap_or(n),
            Err(None) => {
                let gone = self.transport.unreachable_for().unwrap_or(Delta::ZERO);
                self.status_unreachable(gone, &mut out[..cap])
            }
            Err(Some(_)) => {
                let mut w = ByteWriter::new(&mut out[..cap]);
                let _ = w.push(b"userspace 1 COM_FAILURE");
                w.len()
            }
        };
        out[len] = 0;
        len
    }

    /// `userspace 3 COM_FAILURE server_unreachable_for=<s>.<ms>s max_server_wait=<s>s|forever`
    fn status_unreachable(&self, gone: Delta, out: &mut [u8]) -> usize {
        let ms = gone.as_millis();
        let mut w = ByteWriter::new(out);
        let written = match self.max_wait {
            Some(b) => write!(
                w,
                "userspace 3 COM_FAILURE server_unreachable_for={}.{:03}s max_server_wait={}s",
                ms / 1000,
                ms % 1000,
                b.as_millis() / 1000
            ),
            None => write!(
                w,
                "userspace 3 COM_FAILURE server_unreachable_for={}.{:03}s max_server_wait=forever",
                ms / 1000,
                ms % 1000
            ),
        };
        if written.is_ok() {
            w.len()
        } else {
            0
        }
    }

    pub(super) fn status_table(&self, out: &mut [u8]) -> usize {
        let cap = out.len() - 1;
        let mut w = ByteWriter::new(&mut out[..cap]);
        let len = match table_args::table_status(
            self.table_argc,
            self.uuid(),
            &self.features,
            ctr::ctr_server_args(self.ctr_payload()),
            &mut w,
        ) {
            Ok(()) => w.len(),
            Err(_) => 0,
        };
        out[len] = 0;
        len
    }
}
