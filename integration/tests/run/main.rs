//! Running things: RUN steps and their layers, mounts, networks, kiln run, kiln in a container.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test run SUITE::`.

mod hygiene;
mod in_container;
mod network;
mod run_big;
mod run_debootstrap;
mod run_layers;
mod run_mounts;
mod run_single_id;
mod run_steps;
mod running;
