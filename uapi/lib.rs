// SPDX-License-Identifier: GPL-2.0

//! Wire protocol of the device-mapper "userspace" dirty log, version 3.
//!
//! This is the one definition of the format shared by the kernel module (which includes this
//! directory as a module), the log server and the tests. It mirrors
//! `include/uapi/linux/dm-log-userspace.h` and `include/uapi/linux/connector.h`: a 20-byte
//! `cn_msg`, then a 160-byte `dm_ulog_request` header, then the payload, all host-endian.
//! Messages are read and written field by field at fixed offsets, never by casting a buffer to
//! a struct: the header follows the 20-byte `cn_msg`, so its `u64` is not 8-byte aligned.

#![cfg_attr(not(MODULE), no_std)]

pub mod announce;
pub mod ctr;
pub mod message;
pub mod payload;

pub use announce::*;
pub use message::*;
