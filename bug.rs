// SPDX-License-Identifier: GPL-2.0

//! What the module's own invariants rule out, should it happen anyway.
//!
//! An encoder that refuses a request the module built, or a payload larger than any the
//! module builds, is a bug in the module, not bad input: it is reported loudly (a kernel
//! warning, with a line that says what broke) and the request fails with `EINVAL`, rather
//! than quietly becoming a wrong answer.

use kernel::prelude::*;

/// Reports the broken invariant `what` and returns the error the caller fails with.
#[track_caller]
pub(crate) fn broken(what: &str) -> Error {
    pr_err!("internal error: {what}: this is a bug in dm_log_userspace\n");
    kernel::warn_on!(true);
    EINVAL
}
