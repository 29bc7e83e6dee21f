//! A base image's env and ONBUILD triggers, read (or pulled) for the plan.

use std::sync::Mutex;

use kiln::plan;
use kiln::progress::{Event, Reporter};
use kiln::store::Store;
use kiln::transport::{self, Transport};
/// The env and ONBUILD triggers of a base image, for expanding `$VAR`s that
/// the base defines and planning its triggers. A base that is not in the
/// store is pulled here (per `--pull`), since it shapes the plan; the
/// executor then finds it in the store.
pub(super) fn base_info(
    store: &Store,
    reference: &str,
    pull: &kiln::registry::PullOptions,
    progress: &dyn Reporter,
) -> Option<plan::BaseInfo> {
    let config = match transport::parse_transport(reference) {
        Transport::Store(_) => {
            // A pull that fails here is tried again and reported by the
            // executor, with the Dockerfile line: the "Pulling …" line waits
            // until the pull got somewhere, so a missing image, a refused login
            // or no network prints it once. Blob progress stays live.
            let held = HeldFirst { inner: progress, held: Mutex::new(Some(None)) };
            let image = kiln::registry::resolve_or_pull(store, reference, pull, &held).ok()?;
            held.release();
            image.config.config
        }
        other => {
            let wanted =
                pull.registry.platform.as_deref().map(kiln::image::platform::Platform::parse).transpose().ok()?;
            transport::import_for(store, &other, wanted.as_ref()).ok()?.config.config
        }
    };
    Some(plan::BaseInfo { env: config.env.unwrap_or_default(), onbuild: Some(config.on_build.unwrap_or_default()) })
}

/// Progress whose first event is held back until a second one comes or
/// [`HeldFirst::release`] is called.
pub(super) struct HeldFirst<'r> {
    inner: &'r dyn Reporter,
    /// `Some` while holding: the first event, once it came.
    held: Mutex<Option<Option<Event>>>,
}

impl HeldFirst<'_> {
    fn release(&self) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Some(event)) = held {
            self.inner.report(event);
        }
    }
}

impl Reporter for HeldFirst<'_> {
    fn report(&self, event: Event) {
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(first @ None) = &mut *held {
                *first = Some(event);
                return;
            }
        }
        self.release();
        self.inner.report(event);
    }

    fn keeps_output(&self) -> bool {
        self.inner.keeps_output()
    }
}
