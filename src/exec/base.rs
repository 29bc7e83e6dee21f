//! Where a stage starts: scratch, another stage's state, or an image
//! (from a named context, the store, the registry or another transport).

use super::*;

impl<'a> Executor<'a> {
    pub(super) fn base(&self, stage: &Stage) -> Result<StageState, StepError> {
        Ok(match &stage.base {
            Base::Scratch => {
                // FROM --platform wins over --platform, as in BuildKit.
                let (os, architecture, variant) = platform(self.plan.platform_of(stage));
                let key = format!("scratch:{}/{}/{}", os, architecture, variant.clone().unwrap_or_default());
                let mut config =
                    ImageConfig { architecture, os, variant, rootfs: RootFs::default(), ..Default::default() };
                config.config.env = Some(vec![DEFAULT_PATH.to_string()]);
                let mut s = StageState::new(config, Vec::new());
                s.key = key;
                s
            }
            Base::Stage(i) => {
                let mut done = self.done.lock().expect("done lock");
                let parent = done.get_mut(i).ok_or(StepError::StageNotBuilt)?;
                // The only stage that reads its parent takes the parent's
                // config and file index instead of copying them (copies made
                // a chain of thousands of stages quadratic). Its layers and
                // key stay: this stage's own `COPY --from` may read them.
                let only_reader = self.readers[*i] == 1 && *i != self.plan.target;
                let (config, tree) = match only_reader {
                    true => {
                        let config = std::mem::take(&mut parent.config);
                        // `COPY --from` of the parent reads its layers by their diff_ids.
                        parent.config.rootfs = config.rootfs.clone();
                        (config, parent.tree.take())
                    }
                    false => (parent.config.clone(), parent.tree.clone()),
                };
                let mut s = StageState::new(config, parent.layers.clone());
                // The parent's own steps are this build's, not the base image's.
                s.base_history = parent.base_history;
                s.tree = tree;
                s.key = parent.key.clone();
                s
            }
            Base::Image(reference) => {
                let image = self.image_for(reference, self.plan.platform_of(stage))?;
                let mut s = StageState::new(image.config, image.manifest.layers);
                s.key = image.manifest_digest.clone();
                s.base_id = Some(image.config_digest);
                s
            }
        })
    }

    pub(super) fn image(&self, reference: &str) -> Result<Image, ExecError> {
        self.image_for(reference, self.plan.platform.as_ref())
    }

    /// The image `reference` names, for `platform`: picked from a
    /// multi-platform image, and an error when the image has no such
    /// platform. `None` prefers the host's.
    pub(super) fn image_for(&self, reference: &str, platform: Option<&Platform>) -> Result<Image, ExecError> {
        let reference = match self.opts.named_contexts.get(reference) {
            Some(NamedContext::Image(r)) => r.as_str(),
            Some(NamedContext::Dir(d)) => {
                return Err(ExecError::DirContextAsImage(
                    reference.to_string(),
                    format!("the directory {}", d.display()),
                ))
            }
            Some(NamedContext::Remote(url)) => {
                return Err(ExecError::DirContextAsImage(reference.to_string(), crate::net::redact(url)))
            }
            None => reference,
        };
        match transport::parse_transport(reference) {
            Transport::Store(name) => {
                // Found in the store, or pulled from its registry per --pull.
                let mut pull = self.opts.pull.clone();
                pull.registry.platform = platform.cloned();
                // With a shared cache, every step of a stage may hit: the
                // base's layers come only when something reads them.
                if !self.imported.is_empty() {
                    if let Some(image) = self.opts.peeked.get_or_peek(self.store, &name, &pull)? {
                        let layers = image.manifest.layers.iter().map(|l| l.digest.clone()).collect();
                        let manifest_digest = image.manifest_digest.clone();
                        let base = DeferredBase { name, pull, layers, manifest_digest };
                        self.deferred_bases.lock().expect("deferred lock").push(base);
                        return Ok(image);
                    }
                }
                Ok(crate::registry::resolve_or_pull(self.store, &name, &pull, self.progress)?)
            }
            _ if self.opts.only_if_cached => {
                Err(ExecError::NotCached(format!("{reference} is imported into the store")))
            }
            other => Ok(transport::import_for(self.store, &other, platform)?),
        }
    }
}

/// A base image whose pull waits until one of its layers is needed.
pub(super) struct DeferredBase {
    pub(super) name: String,
    pub(super) pull: crate::registry::PullOptions,
    /// Its layers' digests.
    pub(super) layers: Vec<String>,
    /// The manifest the planner read: the one pulled when the layers are needed.
    pub(super) manifest_digest: String,
}
