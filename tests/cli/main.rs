//! The kiln binary's commands: archives, check, gc, images, run, the runtime front-end, single-id chown.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test cli SUITE::`.

mod cli_archive;
mod cli_check;
mod cli_gc;
mod cli_images;
mod cli_run;
mod cli_util;
mod runtime_cli;
mod single_id_chown;
