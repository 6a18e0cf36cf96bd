// SPDX-License-Identifier: GPL-2.0

//! Host tests of the module's files that use no kernel API: `cargo test` runs their
//! `#[cfg(test)]` tests as it runs the wire crate's, which the kernel build cannot.
//!
//! Each file is included as the module includes it, with `crate::uapi` being the wire crate.

#![cfg(test)]

use dm_ulog_uapi as uapi;

#[path = "../../table_args.rs"]
mod table_args;
