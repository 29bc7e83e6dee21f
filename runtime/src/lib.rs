//! kiln's privilege boundary: user namespaces, id maps, mount namespaces and
//! running one process. All `unsafe` lives in `sys.rs`.
//!
//! In single-id mode (`RunSpec::fake_chown`) a RUN step's chown to ids the
//! namespace lacks succeeds and is recorded for the layer: see [`fake_chown`].
//!
//! A program using this crate must call [`dispatch_helper`] first thing in
//! `main` (before clap, logging or any thread): kiln re-executes itself in
//! hidden modes to enter namespaces, since a multi-threaded process cannot.

pub mod attach;
pub mod caps;
pub mod child;
mod error;
pub mod fake_chown;
pub mod fake_ids;
pub mod fds;
pub mod idmap;
pub mod lifetime;
pub mod mounts;
pub mod network;
pub mod ports;
pub mod probe;
pub mod spec;
pub mod ulimit;
// The one module that may use `unsafe`; each use has a SAFETY comment.
#[allow(unsafe_code)]
mod sys;
pub mod user;
pub mod userns;

pub use attach::run_attached;
pub use child::{run, run_with_helper, Output, Stream};
pub use error::RuntimeError;
pub use idmap::{IdMap, MapMode};
pub use lifetime::{ensure_still_wanted, kill_running_steps, still_wanted, Interrupted};
pub use mounts::placeholders;
pub use probe::detect;
pub use spec::{MountKind, MountSpec, Network, RunSpec, TtySize, UserSpec};
pub use sys::default_sigpipe;
pub use userns::{enter_user_namespace, private_mount_namespace};

/// Runs a hidden helper mode when this process is one; returns the exit
/// code to exit with, or `None` to continue as the normal program.
pub fn dispatch_helper() -> Option<i32> {
    let mut args = std::env::args();
    let _ = args.next();
    match args.next().as_deref() {
        Some(child::RUN_HELPER_ARG) => return Some(child::helper_main()),
        Some(probe::PROBE_ARG) => return Some(probe::helper_main(&args.collect::<Vec<_>>())),
        _ => {}
    }
    let failed = userns::child_side_if_requested();
    if failed.is_none() {
        // kiln proper (the front-end, or the engine in the namespace): what
        // the caller left open stays usable here but reaches no program
        // kiln runs.
        fds::hide_inherited();
    }
    failed
}
