// SPDX-License-Identifier: GPL-2.0
//! The configuration of every property test of the crate: the same cases on every default
//! run (`cargo test`, `make check`, CI), so that a run does not go red on a case nobody has
//! seen. `DMLU_PROPTEST_RANDOM=1` asks for new cases (or `PROPTEST_RNG_SEED` names a seed),
//! `PROPTEST_CASES` sets their number; the cases in a test's `.proptest-regressions` file
//! run first either way. Integration tests include it as `mod common`, the library's unit
//! tests by path.

use proptest::test_runner::{Config, RngSeed};

/// The seed of the cases a default run generates.
const FIXED_SEED: u64 = 0x646d_6c75_6373_0001;

/// `cases` cases (unless `PROPTEST_CASES` says otherwise), from [`FIXED_SEED`] unless new
/// ones are asked for.
pub fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    let random = std::env::var("DMLU_PROPTEST_RANDOM").is_ok_and(|v| !v.is_empty() && v != "0");
    if !random && std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(FIXED_SEED);
    }
    config
}
