//! Step ids: the state after a step written as an intermediate image, the
//! same id whether the step ran or came from the cache.

use super::*;

impl<'a> Executor<'a> {
    /// A step's new layer (its descriptor and diff_id) joins the state with
    /// the step's history entry; the step's image id is then shown with the
    /// layer. The one place RUN, COPY/ADD and WORKDIR commit through.
    pub(super) fn add_layer(
        &self,
        state: &mut StageState,
        (layer, diff_id): (Descriptor, String),
        created_by: &str,
        at: &StepRef,
        contents: LayerContents,
        started: Instant,
    ) -> Result<(), StoreError> {
        let size = layer.size;
        state.layers.push(layer);
        state.config.rootfs.diff_ids.push(diff_id);
        state.push_history(&self.stamp.created, created_by, false);
        self.new_layer_bytes.fetch_add(size, Ordering::Relaxed);
        let id = self.step_image(state)?;
        self.report(Event::Layer { step: at.clone(), id, size, contents, elapsed: started.elapsed() });
        Ok(())
    }

    /// Writes the stage's state as an untagged image, for debugging a failed step.
    pub(super) fn keep_last_good(&self, state: &StageState) -> Option<String> {
        // An interrupted build writes nothing more.
        if state.layers.is_empty() || !kiln_runtime::still_wanted() {
            return None;
        }
        self.write_step_image(state).ok()
    }

    /// The id printed for a step that added layers (see
    /// [`Self::write_step_image`]); a quiet build prints none, so it writes
    /// none.
    pub(super) fn step_image(&self, state: &StageState) -> Result<String, StoreError> {
        if self.opts.quiet {
            return Ok(String::new());
        }
        self.write_step_image(state)
    }

    /// Writes the state after a step as an intermediate image and returns
    /// its short id: the id printed for the step (the same whether the step
    /// ran or came from the cache, since the config is made of the same
    /// history and layers either way) and one `kiln run`, `FROM` and
    /// `kiln inspect` accept. Its record in `kiln/cache/intermediate/` keeps
    /// it, like docker's intermediate images, until `kiln prune` (`kiln
    /// images -a` lists it). Like the final image, it is created when its
    /// last history entry was, so an unchanged step gives the same id.
    pub(super) fn write_step_image(&self, state: &StageState) -> Result<String, StoreError> {
        let mut config = state.config.clone();
        let last = config.history.last().and_then(|h| h.created.clone());
        config.created = Some(last.unwrap_or_else(|| self.stamp.created.clone()));
        let desc = self.store.write_image(&config, &state.layers)?;
        let id = self.store.load_image(&desc)?.config_digest;
        if let Err(e) = self.cache.lock().expect("cache lock").keep_intermediate(&desc.digest, &id) {
            log::warn!("could not record the intermediate image {}: {}", short(&id), e);
        }
        Ok(short(&id).to_string())
    }
}
