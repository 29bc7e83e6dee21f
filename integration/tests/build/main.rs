//! Building images: Dockerfile semantics, COPY/ADD, cache, stages, outputs, platforms, progress.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test build SUITE::`.

mod add_archives;
mod bases_outputs;
mod build_options;
mod busybox;
mod cache_records;
mod cache_stages;
mod cached_replay;
mod check;
mod copy_features;
mod copy_from_layers;
mod copy_from_stages;
mod copy_rules;
mod destinations;
mod dockerfile_semantics;
mod dockerignore;
#[path = "../fault_util/mod.rs"]
mod fault_util;
mod from_unpack;
mod harness;
mod image_format;
mod images_size;
mod many_stages;
mod metadata;
mod multistage;
mod names;
mod ownership;
mod platforms;
mod progress;
mod reproducible;
mod stage_scoping;
mod stdin;
mod step_ids;
