//! One step on a stage's state: metadata steps, COPY/ADD and RUN with their
//! mounts and bind inputs.

use super::*;

impl<'a> Executor<'a> {
    pub(super) fn step(&self, state: &mut StageState, step: &Step, at: &StepRef) -> Result<(), StepError> {
        if state.apply_metadata(&step.kind) {
            if let Some(created_by) = state.created_by(&step.kind, &step.original) {
                state.push_history(&self.stamp.created, &created_by, true);
            }
            return Ok(());
        }
        match &step.kind {
            StepKind::Copy(c) => self.copy(state, step, c, at),
            StepKind::Run(r) => self.run(state, r, at),
            StepKind::Workdir(_) => self.workdir(state, step, at),
            _ => unreachable!("apply_metadata handles every other step"),
        }
    }

    pub(super) fn copy(
        &self,
        state: &mut StageState,
        step: &Step,
        c: &CopyStep,
        at: &StepRef,
    ) -> Result<(), StepError> {
        let started = Instant::now();
        state.ensure_tree(self.store)?;
        let tree = state.tree.as_ref().expect("ensured above");
        let owner = match &c.chown {
            Some(spec) => Some(owner::resolve(spec, tree.file("etc/passwd"), tree.file("etc/group"))?),
            None => None,
        };
        let chmod = c.chmod.as_deref().map(Chmod::parse).transpose()?;
        let workdir = state.workdir();
        let from = c.from.as_ref().map(|f| self.source_of(f)).transpose()?;
        let source: &dyn SourceTree = match &from {
            None => self.ctx,
            Some(f) => &**f,
        };
        // Files from an image or stage keep their owners; a directory (the
        // context, a --build-context dir) is read as root's, as BuildKit does.
        let keep_owners = c.from.as_ref().is_some_and(|f| self.views_of(f));
        let env = CopyEnv {
            source,
            keep_owners,
            workdir: &workdir,
            owner,
            chmod: chmod.as_ref(),
            now: self.stamp.seconds,
            scratch: self.scratch.path(),
            fetcher: Some(&self.fetcher),
        };
        let copy::CopyPlan { entries, warnings } = copy::plan_copy(c, &env, tree)?;
        for w in warnings {
            log::warn!("{}:{}: {}: {}", self.plan.file, step.span.line, step.original, w);
        }

        let blob = self.store.layer_blob_writer()?;
        let mut writer = LayerWriter::with_level(blob, self.opts.compression, self.opts.compression_level)
            .map_err(ExecError::Layer)?;
        for planned in entries.values() {
            crate::fault::point("copy-entry");
            let meta = &finish::clamp(&planned.meta, self.opts.source_date_epoch);
            match &planned.data {
                Data::None => writer.append(meta, None),
                Data::Bytes(b) => writer.append(meta, Some(&mut &b[..])),
                Data::Host(path) => {
                    let mut f =
                        std::fs::File::open(path).map_err(|source| StepError::Read { path: path.clone(), source })?;
                    let mut r: &mut dyn Read = &mut f;
                    writer.append(meta, Some(&mut r))
                }
            }
            .map_err(ExecError::Layer)?;
        }
        let (blob, info) = writer.finish().map_err(ExecError::Layer)?;
        let (digest, size) = blob.commit(&info)?;

        let tree = state.tree.as_mut().expect("built above");
        for planned in entries.values() {
            tree.record(&planned.meta, || match &planned.data {
                Data::Bytes(b) => Some(b.clone()),
                Data::Host(p) => std::fs::read(p).ok(),
                Data::None => None,
            });
        }
        let layer = Descriptor::new(layer_media_type(self.opts.compression), digest.clone(), size);
        let contents = LayerContents::Files(entries.len());
        self.add_layer(state, (layer, info.diff_id), &c.created_by(), at, contents, started)?;
        Ok(())
    }

    pub(super) fn run(&self, state: &mut StageState, r: &RunStep, at: &StepRef) -> Result<(), StepError> {
        let started = Instant::now();
        let driver = self.driver();
        // Held until the step ran: cache locks and temporary copies.
        let mounts = self.run_mounts(state, r)?;
        let mut env = run::RunEnv {
            store: self.store,
            layers: &self.layer_dirs,
            driver,
            compression: self.opts.compression,
            compression_level: self.opts.compression_level,
            step: at.clone(),
            progress: self.progress,
            quiet: self.opts.quiet,
            hostname: short(&state.key).to_string(),
            clamp_mtime: self.opts.source_date_epoch,
            mounts: &mounts,
            extras: &self.opts.run_extras,
        };
        let layer = run::run(&mut env, state, r)?;
        drop(mounts);
        let desc = Descriptor::new(layer_media_type(self.opts.compression), layer.digest.clone(), layer.size);
        let created_by = run::created_by(state, r);
        self.add_layer(state, (desc, layer.info.diff_id), &created_by, at, LayerContents::Changes, started)?;
        // The file index catches up with this layer only when a later step
        // needs it, instead of being rebuilt from every layer.
        state.set_tree_aside(state.layers.len() - 1);
        Ok(())
    }

    /// What a RUN's bind mounts show, for its cache key (docker re-runs a
    /// step whose bound files changed): context files by content, stages by
    /// their key, images by digest. Secrets count by id only (in the text).
    pub(super) fn bind_inputs(
        &self,
        r: &RunStep,
        files: &mut std::collections::BTreeMap<String, String>,
    ) -> Result<String, StepError> {
        let mut parts = Vec::new();
        for m in &r.mounts {
            let crate::plan::Mount::Bind { from, source, .. } = m else { continue };
            let source = source.clone();
            let Some(from) = from else {
                let digest =
                    crate::context::digest::sources(self.ctx, &[source], &mut self.stat.lock().expect("stat lock"))?;
                files.extend(digest.shown());
                parts.push(digest.digest());
                continue;
            };
            let key = match &from.source {
                CopyFrom::Stage(index) => {
                    self.done.lock().expect("done lock").get(index).map(|s| s.key.clone()).unwrap_or_default()
                }
                // The files the mount shows, as for COPY --from: an edit in
                // the named context reruns the step.
                CopyFrom::Image(name) if self.opts.named_contexts.get(name).is_some_and(NamedContext::is_files) => {
                    let key = self.unpack_from(&from.source)?;
                    let ctx = self.unpacked.lock().expect("unpacked lock")[&key].clone();
                    let digest =
                        crate::context::digest::sources(&*ctx, &[source], &mut self.stat.lock().expect("stat lock"))?;
                    files.extend(digest.shown());
                    digest.digest()
                }
                // An image, or a named context that is one: by its digest.
                CopyFrom::Image(name) => self.image(name)?.manifest_digest,
            };
            parts.push(format!("{}={key}", from.name));
        }
        Ok(parts.join(","))
    }

    /// The step's `--mount`s as runtime mounts; `from=` names a stage (by
    /// name or index), a `--build-context` or an image.
    pub(super) fn run_mounts(&self, state: &StageState, r: &RunStep) -> Result<mounts::Prepared, StepError> {
        if r.mounts.is_empty() {
            return Ok(mounts::Prepared::default());
        }
        let from = |from: &CopyFrom, source: &str| -> Result<Arc<BuildContext>, String> {
            if self.driver().copies() && self.views_of(from) {
                // No overlay to stack the layer dirs: copy out only what is bound.
                let view = self.view_of(from).map_err(|e| e.to_string())?;
                let dir = tempfile::Builder::new()
                    .prefix("bind-from-")
                    .tempdir_in(self.scratch.path())
                    .map_err(|e| e.to_string())?;
                view.materialize(source, dir.path()).map_err(|e| e.to_string())?;
                // Removed with the build's scratch space.
                let ctx = BuildContext::from_dir(&dir.keep(), None).map_err(|e| e.to_string())?;
                return Ok(Arc::new(ctx));
            }
            let key = self.unpack_from(from).map_err(|e| e.to_string())?;
            let ctx = self.unpacked.lock().expect("unpacked lock")[&key].clone();
            Ok(ctx)
        };
        let sources = mounts::MountSources {
            store_root: self.store.root(),
            scratch: self.scratch.path(),
            context: self.ctx,
            from: &from,
            secrets: &self.opts.secrets,
            ssh: &self.opts.ssh,
        };
        Ok(mounts::prepare(&r.mounts, &sources, &state.workdir())?)
    }
}
