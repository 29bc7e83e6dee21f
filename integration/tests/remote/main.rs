//! Remote things: contexts and ADD from URLs, the shared build cache, registry retries.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test remote SUITE::`.

#[path = "../fault_util/mod.rs"]
mod fault_util;
mod proxy;
mod registry_retry;
mod remote;
mod remote_cache;
