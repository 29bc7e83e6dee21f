//! The store's on-disk contract and its transports.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test store SUITE::`.

mod store_basic;
mod store_transport;
mod store_util;
