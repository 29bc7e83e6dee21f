//! Registry client: auth, plain and TLS registries, verification, hostile servers, the cache's auth.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test registry SUITE::`.

mod network_hostile;
mod registry_auth;
mod registry_cache_auth;
mod registry_plain;
mod registry_util;
mod registry_verify;
