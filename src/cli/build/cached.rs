//! A fully cached rebuild without kiln's user namespace.
//!
//! Entering the namespace costs a second kiln process and the two setuid
//! map tools, a third of a cached rebuild's time. A build that only
//! replays the layer cache needs none of it: it reads the context and the
//! store and writes step images, the image and its tag, all files of the
//! caller, who is uid 0 in the namespace, so they come out the same. The
//! front-end tries such a replay first ([`kiln::exec::BuildOptions::only_if_cached`])
//! when nothing asked of the build needs more; at the first step that is
//! not cached it drops what the replay said and builds in the namespace
//! as before, which then finds the files the replay hashed in the stat cache.

use std::path::Path;
use std::sync::Mutex;

use kiln::progress::{Event, Reporter};
use kiln::registry::PullPolicy;
use kiln_runtime::MapMode;

use super::super::output::OutputSpec;
use super::BuildArgs;

/// Whether a fully cached build of `args` could be finished here, outside
/// the namespace, were every step cached.
pub(super) fn worth_trying(args: &BuildArgs, outputs: &[OutputSpec], mode: &MapMode) -> bool {
    // As root, or where no namespace can be made, the build runs here anyway.
    let namespaced = matches!(mode, MapMode::Full { .. } | MapMode::Single) && !kiln_runtime::userns::inside();
    // Read once: stdin cannot be read again by the build that takes over,
    // and a remote context would be fetched twice.
    let local = args.context != "-"
        && kiln::context::remote::classify(&args.context).is_none()
        && args.file.as_deref() != Some(Path::new("-"));
    // A registry is asked only when the store lacks the base (`missing`,
    // the default), and then the build in the namespace pulls it.
    let pull = matches!(args.pull.parse().unwrap_or_default(), PullPolicy::Missing | PullPolicy::Never);
    // Named contexts, outputs and pushes read layer files or a registry.
    let only_the_store = outputs.is_empty() && !args.push && args.build_contexts.is_empty();
    namespaced && local && pull && only_the_store && !args.verify_reproducible
}

/// A replay of the cache that found a step to run: the build goes on in the namespace.
#[derive(Debug, thiserror::Error)]
#[error("not every step is cached, building in kiln's user namespace: {0}")]
pub(super) struct Handover(pub(super) String);

/// Keeps a replay's progress events, to show them once it is known that
/// no other process will build (and say) the same again.
#[derive(Default)]
pub(super) struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    pub(super) fn replay(self, to: &dyn Reporter) {
        for event in self.0.into_inner().unwrap_or_else(|p| p.into_inner()) {
            to.report(event);
        }
    }
}

impl Reporter for Recorder {
    fn report(&self, event: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}
