//! One stage, step by step: its base, then each step either restored from
//! a cache (the store's or an imported one) or run, then squashed if asked.

use super::*;

impl<'a> Executor<'a> {
    pub(super) fn stage(&self, stage: &Stage, position: Option<(usize, usize)>) -> Result<StageState, ExecError> {
        let started = Instant::now();
        let mut state = self.base(stage).map_err(|e| self.fail(stage.span, &stage.original, e))?;
        self.clear_triggers(stage, &mut state).map_err(|e| self.fail(stage.span, &stage.original, e))?;
        let total = stage.steps.len() + 1;
        let at = |number: usize| StepRef { stage: position, number, total };
        // Announced once the base is known.
        self.report(Event::StepStarted { step: at(1), instruction: stage.original.clone() });
        if let Base::Image(reference) = &stage.base {
            let id = short(state.base_id.as_deref().unwrap_or(&state.key)).to_string();
            self.report(Event::BaseImage { step: at(1), reference: reference.clone(), id });
        }
        self.report(Event::StepFinished { step: at(1), cached: false, elapsed: started.elapsed() });
        finish::scope_key(&mut state, self.opts);
        let use_cache = !self.opts.no_cache
            && !self
                .opts
                .no_cache_stages
                .iter()
                .any(|f| Some(f) == stage.name.as_ref() || *f == stage.index.to_string());
        for (i, step) in stage.steps.iter().enumerate() {
            // A step boundary: stop here once interrupted or orphaned.
            kiln_runtime::ensure_still_wanted().map_err(|e| self.fail(step.span, &step.original, e))?;
            let started = Instant::now();
            self.report(Event::StepStarted { step: at(i + 2), instruction: step.original.clone() });
            let pos = format!("{}/{}", stage.index, i);
            let inputs = self.inputs(&state, step).map_err(|e| self.fail(step.span, &step.original, e))?;
            let key = inputs.key.clone();
            self.cache.lock().expect("cache lock").note(&pos, inputs.clone());
            if use_cache {
                let record = self.cache.lock().expect("cache lock").get(&key, &state.key, self.store);
                if let Some(record) = record {
                    let layers = !record.layers.is_empty();
                    if state.restore(&step.kind, record.clone(), key.clone()) {
                        // The id the step printed when it ran: its image is
                        // written again if a prune took it.
                        let id = match layers {
                            true => {
                                // Its image names every layer below it: those must be here.
                                self.fetch_layers(&state.layers, &state.config.rootfs.diff_ids, Some(&at(i + 2)))
                                    .map_err(|e| self.fail(step.span, &step.original, e))?;
                                Some(self.step_image(&state).map_err(|e| self.fail(step.span, &step.original, e))?)
                            }
                            false => None,
                        };
                        self.report(Event::CacheHit { step: at(i + 2), id, from: None });
                        self.report(Event::StepFinished { step: at(i + 2), cached: true, elapsed: started.elapsed() });
                        self.note_record(stage.index, &key, record);
                        continue;
                    }
                }
                // A hit in a shared cache takes the layers by digest; they
                // are fetched when something reads them. It shows its cache
                // key, not a step id: that image would name layers the store
                // does not hold.
                if let Some((record, kind)) = self.imported.get(&key, &state.key) {
                    if state.restore(&step.kind, record.clone(), key.clone()) {
                        let (id, from) = (Some(short(&key).to_string()), Some(kind.to_string()));
                        self.report(Event::CacheHit { step: at(i + 2), id, from });
                        self.report(Event::StepFinished { step: at(i + 2), cached: true, elapsed: started.elapsed() });
                        self.note_record(stage.index, &key, record.clone());
                        self.remote_hits.lock().expect("remote hits lock").push((key.clone(), record));
                        continue;
                    }
                }
                if self.opts.only_if_cached {
                    return Err(ExecError::NotCached(format!("{} is not cached", step.original)));
                }
                if let Some(why) = self.cache.lock().expect("cache lock").explain_miss(&pos, &inputs) {
                    self.report(Event::CacheMiss { step: at(i + 2), reason: why });
                }
            }
            if matches!(step.kind, StepKind::Run(_) | StepKind::Copy(_) | StepKind::Workdir(_)) {
                // The step reads the state's files: its layers must be here.
                self.fetch_layers(&state.layers, &state.config.rootfs.diff_ids, Some(&at(i + 2)))
                    .map_err(|e| self.fail(step.span, &step.original, e))?;
            }
            let (mark, parent) = (state.mark(), state.key.clone());
            if let Err(e) = self.step(&mut state, step, &at(i + 2)) {
                let mut err = self.fail(step.span, &step.original, e);
                if let (ExecError::Step { hint, .. }, Some(id)) = (&mut err, self.keep_last_good(&state)) {
                    *hint = Some(format!(
                        "the state before this step is image {}: look inside with `kiln run -it {} sh`",
                        id, id
                    ));
                }
                return Err(err);
            }
            state.key = key.clone();
            let record = state.record(mark, &parent);
            if let Err(e) = self.cache.lock().expect("cache lock").put(&key, &record) {
                log::warn!("could not write the cache record for step {}: {}", pos, e);
            }
            self.report(Event::StepFinished { step: at(i + 2), cached: false, elapsed: started.elapsed() });
            self.note_record(stage.index, &key, record);
        }
        if !self.opts.layers {
            self.squash(&mut state).map_err(|e| self.fail(stage.span, &stage.original, e))?;
        }
        Ok(state)
    }

    /// Merges the stage's own layers into one (`--squash`, `--layers=false`).
    pub(super) fn squash(&self, state: &mut StageState) -> Result<(), ExecError> {
        self.fetch_layers(&state.layers, &state.config.rootfs.diff_ids, None)?;
        let layer = squash::squash_stage(
            self.store,
            state,
            self.opts.compression,
            self.opts.compression_level,
            self.opts.source_date_epoch,
            self.scratch.path(),
        )?;
        if let Some(layer) = layer {
            self.report(Event::Squashed { digest: short(&layer.digest).to_string(), size: layer.size });
        }
        Ok(())
    }

    /// No base's ONBUILD triggers carry over into this stage's config
    /// (BuildKit sets `OnBuild = nil`), so a grandchild never runs them
    /// again; the plan made them this stage's first steps. An image whose
    /// config the planner could not read must have none to run.
    pub(super) fn clear_triggers(&self, stage: &Stage, state: &mut StageState) -> Result<(), StepError> {
        let inherited = state.config.config.on_build.take().unwrap_or_default();
        if matches!(stage.base, Base::Image(_)) && !stage.base_read && !inherited.is_empty() {
            return Err(StepError::TriggersUnplanned(inherited.join("; ")));
        }
        Ok(())
    }
}
