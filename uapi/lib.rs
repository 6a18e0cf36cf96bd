// SPDX-License-Identifier: GPL-2.0

//! Wire protocol of the device-mapper "userspace" dirty log, version 3.
//!
//! This is the one definition of the format shared by the kernel module (which includes this
//! directory as a private module), the log server and the tests. It mirrors
//! `include/uapi/linux/dm-log-userspace.h` and `include/uapi/linux/connector.h`: a 20-byte
//! `cn_msg`, then a 160-byte `dm_ulog_request` header, then the payload, all host-endian.
//! Messages are read and written field by field at fixed offsets, never by casting a buffer to
//! a struct: the header follows the 20-byte `cn_msg`, so its `u64` is not 8-byte aligned.
//!
//! A server reads a [`Request`] from what follows the netlink header, takes its payload apart
//! with [`payload`] (and [`ctr::Ctr`] for CTR), and answers with [`encode_message`] on the
//! request's [`Header`]. The parts that only a server needs are left out of the module's build
//! (`cfg(not(MODULE))`).

#![cfg_attr(not(MODULE), no_std)]
// The items are this crate's public API for userspace; inside the module the crate is a
// private module, and the kernel's `unreachable_pub` lint would flag every one of them.
#![cfg_attr(
    MODULE,
    expect(
        unreachable_pub,
        reason = "the userspace crate's public API, private in the module"
    )
)]

#[cfg(test)]
extern crate std;

pub mod announce;
pub mod clears_in_flush;
pub mod ctr;
pub mod error;
pub mod in_sync_map;
pub mod message;
pub mod payload;
pub mod request_type;

pub use announce::{
    Announce, CN_VAL_DM_USERSPACE_LOG_ANNOUNCE, FEATURE_CLEARS_IN_FLUSH, FEATURE_IN_SYNC_MAP,
};
pub use clears_in_flush::FlushEntry;
pub use in_sync_map::{InSyncRanges, Withdrawal};
pub use message::{
    encode_request, CnMsg, Reply, CN_IDX_DM, CN_MSG_SIZE, CN_VAL_DM_USERSPACE_LOG,
    DEVICE_NAME_SIZE, HEADER_SIZE, MAX_REQUEST_PAYLOAD, MAX_UUID_LEN,
};
pub use request_type::RequestType;

// What only servers and tests name: the kernel sends requests and builds CTR strings, it does
// not parse them.
#[cfg(not(MODULE))]
pub use announce::{ANNOUNCE_MAGIC, ANNOUNCE_MESSAGE_SIZE, ANNOUNCE_SIZE, ANNOUNCE_VERSION};
#[cfg(not(MODULE))]
pub use error::WireError;
#[cfg(not(MODULE))]
pub use message::{
    encode_message, Header, Request, Uuid, CONNECTOR_MAX_MSG_SIZE, HEADER_PADDING, REQUEST_VERSION,
    UUID_FIELD_SIZE,
};
#[cfg(not(MODULE))]
pub use request_type::{UnknownRequestType, REQUEST_TYPE_MASK};
