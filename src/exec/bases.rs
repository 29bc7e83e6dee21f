//! The executor's side of planning: reads base images' configs for the
//! planner ([`crate::plan::BaseImages`]), so it can expand `$VAR`s the base
//! defines and plan the base's ONBUILD triggers as the stage's first steps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::image::config::ContainerConfig;
use crate::image::platform::Platform;
use crate::progress::{Event, Reporter};
use crate::registry::{PullOptions, RegistryError};
use crate::store::{Image, Store};
use crate::transport::{self, Transport};

use super::options::NamedContext;

/// Base images as a build finds them: `--build-context` names first, then
/// the store, then (per `--pull`) the registry. An image pulled here is in
/// the store when the executor looks for it again.
pub struct Bases<'a> {
    pub store: &'a Store,
    /// `--pull` and the registry options; the platform is the stage's.
    pub pull: &'a PullOptions,
    pub named_contexts: &'a HashMap<String, NamedContext>,
    pub progress: &'a dyn Reporter,
    /// With a shared cache (`--cache-from`): an image the store lacks is
    /// read by manifest and config only; the executor pulls it when a step
    /// or the final image needs its layers.
    pub defer_layers: bool,
    /// Shared with the executor ([`super::BuildOptions::peeked`]).
    pub peeked: &'a Peeked,
}

impl crate::plan::BaseImages for Bases<'_> {
    fn config(&self, reference: &str, platform: Option<&Platform>) -> Option<ContainerConfig> {
        let reference = match self.named_contexts.get(reference) {
            Some(NamedContext::Image(image)) => image.as_str(),
            // The executor says why a directory is no base image.
            Some(_) => return None,
            None => reference,
        };
        let image = match transport::parse_transport(reference) {
            Transport::Store(name) => {
                let mut pull = self.pull.clone();
                pull.registry.platform = platform.cloned();
                // A pull that fails here is tried again and reported by the
                // executor, with the Dockerfile line: the "Pulling …" line
                // waits until the pull got somewhere, so a missing image, a
                // refused login or no network prints it once. Blob progress
                // stays live.
                let held = HeldFirst { inner: self.progress, held: Mutex::new(Some(None)) };
                let peeked = match self.defer_layers {
                    true => self.peeked.get_or_peek(self.store, &name, &pull).ok().flatten(),
                    false => None,
                };
                let image = match peeked {
                    Some(image) => image,
                    None => crate::registry::resolve_or_pull(self.store, &name, &pull, &held).ok()?,
                };
                held.release();
                image
            }
            other => transport::import_for(self.store, &other, platform).ok()?,
        };
        Some(image.config.config)
    }
}

/// Images read from a registry by manifest and config only (bases whose
/// layers are deferred, see [`Bases::defer_layers`]), by name and platform.
/// The planner reads a base to plan its stage (env, ONBUILD triggers) and
/// the executor builds on it: both must see the same image, even if its tag
/// moves in between, and the registry is asked once.
#[derive(Debug, Clone, Default)]
pub struct Peeked(Arc<Mutex<HashMap<String, Image>>>);

impl Peeked {
    /// The image `name` was read as in this build, else what
    /// [`crate::registry::peek_missing`] reads now (remembered).
    pub fn get_or_peek(&self, store: &Store, name: &str, pull: &PullOptions) -> Result<Option<Image>, RegistryError> {
        let key = format!("{name} {:?}", pull.registry.platform);
        if let Some(image) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Some(image.clone()));
        }
        let peeked = crate::registry::peek_missing(store, name, pull)?;
        if let Some(image) = &peeked {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key, image.clone());
        }
        Ok(peeked)
    }
}

/// The env of images already in the store, by name; nothing is pulled or
/// imported (`kiln build --check`). Their ONBUILD triggers are left out:
/// the check shows the Dockerfile's own steps.
pub struct StoredBases<'a>(pub Option<&'a Store>);

impl crate::plan::BaseImages for StoredBases<'_> {
    fn config(&self, reference: &str, _platform: Option<&Platform>) -> Option<ContainerConfig> {
        let store = self.0?;
        let desc = store.resolve(reference).ok()??;
        let config = store.load_image(&desc).ok()?.config.config;
        Some(ContainerConfig { env: config.env, ..Default::default() })
    }
}

/// Progress whose first event is held back until a second one comes or
/// [`HeldFirst::release`] is called.
struct HeldFirst<'r> {
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
