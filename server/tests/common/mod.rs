//! What several integration tests share.

pub mod proptest_seed;
