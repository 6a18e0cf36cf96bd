//! dm-ulogd's library: everything the log server `dm-ulogd` and the misbehaving test server
//! `dm-ulog-hostile` share.

pub mod bench;
pub mod bitset;
pub mod cli;
pub mod crashcheck;
pub mod cutwrites;
pub mod device;
pub mod disk;
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
