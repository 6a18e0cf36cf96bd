// SPDX-License-Identifier: GPL-2.0
//! The parts of a device-mapper userspace log server, and what the programs built on them
//! share: the log server `dm-ulogd`, the misbehaving test server `dm-ulog-hostile`, and the
//! benchmark and crash-check tools.
//!
//! # Building a server
//!
//! The wire format is the `dm_ulog_uapi` crate. A server takes from here:
//!
//! - [`link`]: the netlink connector socket. [`link::KernelLink::receive`] passes on each
//!   connector message the kernel sent, and a [`link::Replier`] sends the answer;
//! - `dm_ulog_uapi::Request::parse`, to read the request in a message;
//! - [`logs::Logs`]: every log's state and the answer to each request
//!   ([`logs::Logs::handle`]), for the `core` and `disk` logs of the kernel's dm-log.c and
//!   cmirrord's `clustered-` names, created from the CTR string ([`table`]); a server that
//!   announces the in-sync map sends each [`logs::Logs::pending_withdrawal`] before its reply,
//!   as [`serve::Exchange::answer`] does;
//! - [`serve`]: the receive loop of `dm-ulogd`, `dm-ulog-hostile` and the benchmark's echo,
//!   with signals, the request record ([`record`]) and statistics ([`stats`]).
//!
//! `examples/minimal_server.rs` serves mirrors with the first three in under a hundred lines.

#![warn(missing_docs)]

pub mod bench;
pub mod bitset;
pub mod cli;
pub mod cluster;
pub mod crashcheck;
pub mod cutwrites;
pub mod device;
pub mod disk;
pub mod fakekernel;
pub mod hostile;
pub mod link;
pub mod lock;
pub mod logs;
pub mod ratelimit;
pub mod record;
pub mod regions;
pub mod serve;
pub mod signals;
pub mod stats;
pub mod table;
pub mod volatile_replay;

#[cfg(test)]
#[path = "../tests/common/proptest_seed.rs"]
mod proptest_seed;
