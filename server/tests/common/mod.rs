// SPDX-License-Identifier: GPL-2.0
//! What several integration tests share.

pub mod proptest_seed;
