//! Where COPY --from and RUN --mount from= read: a stage's or image's layers
//! as a view (no unpack), or unpacked or mounted when a driver needs it, and
//! the memoised digest of what a COPY --from selects (its cache key).

use super::*;

impl<'a> Executor<'a> {
    /// What `COPY --from` a stage or image would copy, by content (paths,
    /// modes, owners, file digests): looked up in the source's layer dirs,
    /// nothing copied, and remembered by the source's chain id (see
    /// `fromkey`). A change elsewhere in the source leaves it alone.
    pub(super) fn copy_from_digest(&self, from: &CopyFrom, words: &[String]) -> Result<fromkey::Memo, StepError> {
        let (_, _, diff_ids) = self.layers_of(from)?;
        let chain = layers::chain_ids(&diff_ids).pop().unwrap_or_else(|| "empty".into());
        let path = fromkey::path(self.store, &chain, words);
        let note = |memo: &fromkey::Memo| {
            let used =
                crate::remotecache::CopyFromDigest { chain: chain.clone(), words: words.to_vec(), memo: memo.clone() };
            self.copy_from_used.lock().expect("copy-from lock").push(used);
        };
        if let Some(memo) = fromkey::load(&path) {
            note(&memo);
            return Ok(memo);
        }
        // A stage taken from a shared cache: the exporting build's digest
        // of the same files (same chain id), so its layers need not come.
        // Kept for this build only: the store's memos are its own findings.
        if let Some(memo) = self.imported.copy_from(&chain, words) {
            note(&memo);
            return Ok(memo);
        }
        // Outside the namespace the files' owners show as the host's ids:
        // a replay of the cache must not key (or remember) them so.
        if self.opts.only_if_cached {
            return Err(StepError::Exec(Box::new(ExecError::NotCached(format!(
                "the digest of {} in {} is not known yet",
                words.join(" "),
                short(&chain)
            )))));
        }
        let source = self.source_of(from)?;
        // Layer dirs never change: their files' digests need no stat cache.
        let digest = crate::context::digest::sources_with_owners(&*source, words, &mut StatCache::default())?;
        let memo = fromkey::Memo { digest: digest.digest(), files: digest.shown() };
        if let Err(e) = fromkey::save(&path, &memo) {
            log::warn!("could not remember the digest of COPY --from sources in {}: {}", path.display(), e);
        }
        note(&memo);
        Ok(memo)
    }

    /// Whether `from` is read through a view of layer dirs (a stage or an
    /// image), not a directory (`--build-context name=DIR`).
    pub(super) fn views_of(&self, from: &CopyFrom) -> bool {
        match from {
            CopyFrom::Stage(_) => true,
            CopyFrom::Image(name) => !self.opts.named_contexts.get(name).is_some_and(NamedContext::is_files),
        }
    }

    /// What `COPY --from` reads: a named directory context, or the view of
    /// a stage's or image's verified layer dirs, looked up path by path
    /// (nothing is mounted or unpacked; each layer dir is made once, and
    /// kept in the store).
    pub(super) fn source_of(&self, from: &CopyFrom) -> Result<Arc<dyn SourceTree>, StepError> {
        if !self.views_of(from) {
            let key = self.unpack_from(from)?;
            return Ok(self.unpacked.lock().expect("unpacked lock")[&key].clone());
        }
        Ok(self.view_of(from)?)
    }

    /// The view of a stage's or image's verified layer dirs, made once per build.
    pub(super) fn view_of(&self, from: &CopyFrom) -> Result<Arc<LayerView>, StepError> {
        let (key, layers, diff_ids) = self.layers_of(from)?;
        // Held while the layer dirs are made: two stages reading one source make them once.
        let mut views = self.views.lock().expect("views lock");
        if let Some(view) = views.get(&key) {
            return Ok(view.clone());
        }
        self.fetch_layers(&layers, &diff_ids, None)?;
        let dirs = self.layer_dirs.ensure(self.store, &layers, &diff_ids)?;
        let view = Arc::new(LayerView::new(dirs, self.layer_dirs.prefix().clone()));
        views.insert(key, view.clone());
        Ok(view)
    }

    /// The layers of the stage or image `--from` names, with a key naming
    /// them for this build.
    pub(super) fn layers_of(&self, from: &CopyFrom) -> Result<FromLayers, StepError> {
        Ok(match from {
            CopyFrom::Stage(i) => {
                let done = self.done.lock().expect("done lock");
                let s = done.get(i).ok_or(StepError::FromStageNotBuilt)?;
                (format!("stage:{}", i), s.layers.clone(), s.config.rootfs.diff_ids.clone())
            }
            CopyFrom::Image(reference) => {
                let image = self.image(reference)?;
                (format!("image:{}", image.config_digest), image.manifest.layers, image.config.rootfs.diff_ids)
            }
        })
    }

    /// Unpacks the stage or image `COPY --from` names, once per build.
    pub(super) fn unpack_from(&self, from: &CopyFrom) -> Result<String, StepError> {
        let (key, layers, diff_ids) = match from {
            CopyFrom::Stage(i) => {
                let done = self.done.lock().expect("done lock");
                let s = done.get(i).ok_or(StepError::FromStageNotBuilt)?;
                (format!("stage:{}", i), s.layers.clone(), s.config.rootfs.diff_ids.clone())
            }
            CopyFrom::Image(name) if self.opts.named_contexts.get(name).is_some_and(NamedContext::is_files) => {
                let key = format!("context:{}", name);
                let mut unpacked = self.unpacked.lock().expect("unpacked lock");
                if !unpacked.contains_key(&key) {
                    let ctx = match &self.opts.named_contexts[name] {
                        NamedContext::Dir(dir) => {
                            BuildContext::from_dir(dir, BuildContext::find_ignore_file(dir, None).as_deref())?
                        }
                        NamedContext::Remote(url) => {
                            let remote = crate::context::remote::classify(url)
                                .ok_or_else(|| StepError::NotARemote { name: name.clone(), url: url.clone() })?;
                            let limits = crate::context::remote::DownloadLimits::new(self.opts.max_context_size);
                            crate::context::remote::open_named(&remote, &limits)?
                        }
                        NamedContext::Image(_) => unreachable!("matched is_files"),
                    };
                    unpacked.insert(key.clone(), Arc::new(ctx));
                }
                return Ok(key);
            }
            CopyFrom::Image(reference) => {
                let image = self.image(reference)?;
                (format!("image:{}", image.config_digest), image.manifest.layers, image.config.rootfs.diff_ids)
            }
        };
        // Held while unpacking: two stages copying from one source unpack it once.
        let mut unpacked = self.unpacked.lock().expect("unpacked lock");
        if !unpacked.contains_key(&key) {
            self.fetch_layers(&layers, &diff_ids, None)?;
            let root = match self.mount_from(&layers, &diff_ids)? {
                Some(merged) => merged,
                None => {
                    let scratch = self.scratch.path();
                    let dir = tempfile::Builder::new()
                        .prefix("from-")
                        .tempdir_in(scratch)
                        .map_err(|source| StepError::Scratch { path: scratch.to_path_buf(), source })?;
                    layers::apply_in_order(self.store, &layers, &diff_ids, dir.path())?;
                    dir.keep()
                }
            };
            let ctx = BuildContext::from_dir(&root, None)?;
            unpacked.insert(key.clone(), Arc::new(ctx));
        }
        Ok(key)
    }

    /// The fast path for `RUN --mount=type=bind,from=`: the layer
    /// directories RUN uses (each applied once, by the safe applier),
    /// stacked by a kernel overlay or fuse-overlayfs mount, so nothing is
    /// unpacked again. Its upper layer is thrown away with the build. `None`
    /// with a driver that copies (vfs) or where the mount fails: the caller unpacks
    /// instead.
    pub(super) fn mount_from(
        &self,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> Result<Option<std::path::PathBuf>, StepError> {
        let driver = self.driver();
        if driver.copies() {
            return Ok(None);
        }
        let lowers = self.layer_dirs.ensure(self.store, layers, diff_ids)?;
        match kiln_overlay::Rootfs::mount(driver, lowers, self.layer_dirs.step_dir()?) {
            Ok(root) => {
                let merged = root.path().to_path_buf();
                log::info!("--from layers mounted at {}", merged.display());
                self.from_mounts.lock().expect("from mounts lock").push(root);
                Ok(Some(merged))
            }
            Err(e) => {
                log::info!("mounting the layers for --from failed ({e}); unpacking them instead");
                Ok(None)
            }
        }
    }
}
