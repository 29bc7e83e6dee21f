//! Trust: hostile layers, verification, id bounds, store check and gc on what RUN made.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test trust SUITE::`.

mod chown_bounds;
mod hostile_layers;
mod layer_verify;
mod store_check;
mod store_gc;
