//! Faults: kill points, a full disk, recovery, lifetimes, concurrency and failed builds.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test faults SUITE::`.

mod disk_full;
mod failures;
#[path = "../fault_util/mod.rs"]
mod fault_util;
mod kill_points;
mod lifetime;
mod recovery;
mod store_concurrency;
