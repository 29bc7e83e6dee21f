//! The shared cache (`--cache-from`/`--cache-to`) as the executor uses it:
//! records to export, layers fetched on demand, hits kept as local records.

use super::*;

impl<'a> Executor<'a> {
    /// Remembers a step's record for `--cache-to`.
    pub(super) fn note_record(&self, stage: usize, key: &str, record: crate::cache::Record) {
        if !self.opts.cache_to.is_empty() {
            self.exported.lock().expect("exported lock").entry(stage).or_default().push((key.to_string(), record));
        }
    }

    /// Fetches the layers an imported cache's hits named and the store
    /// lacks (each verified against its digest and diff_id as it streams).
    pub(super) fn fetch_layers(
        &self,
        layers: &[Descriptor],
        diff_ids: &[String],
        step: Option<&StepRef>,
    ) -> Result<(), ExecError> {
        if self.imported.is_empty() {
            return Ok(());
        }
        self.pull_deferred(layers)?;
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            if let Some(from) = self.imported.fetch(self.store, layer, diff_id)? {
                let (digest, size) = (short(&layer.digest), human_size(layer.size));
                let prefix = step.map(StepRef::prefix).unwrap_or_default();
                self.report(Event::Note(format!("{prefix}--> fetched layer {digest} ({size}) from cache {from}")));
            }
        }
        Ok(())
    }

    /// Pulls each deferred base image one of `layers` (not in the store yet)
    /// belongs to: whole and verified, as a pull without a cache would have.
    fn pull_deferred(&self, layers: &[Descriptor]) -> Result<(), ExecError> {
        let missing: Vec<&str> =
            layers.iter().filter(|l| !self.store.has_blob(&l.digest)).map(|l| l.digest.as_str()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut deferred = self.deferred_bases.lock().expect("deferred lock");
        let (wanted, rest): (Vec<DeferredBase>, Vec<DeferredBase>) = std::mem::take(&mut *deferred)
            .into_iter()
            .partition(|b| b.layers.iter().any(|l| missing.contains(&l.as_str())));
        *deferred = rest;
        drop(deferred);
        for base in wanted {
            let (registry, pinned) = (&base.pull.registry, &base.manifest_digest);
            crate::registry::pull_pinned(self.store, &base.name, pinned, registry, self.progress)?;
        }
        Ok(())
    }

    /// Records the shared cache's hits in the store's own cache, each once
    /// its layers are in the store (a record never names a missing blob).
    pub(super) fn keep_remote_hits(&self) {
        let hits = std::mem::take(&mut *self.remote_hits.lock().expect("remote hits lock"));
        let cache = self.cache.lock().expect("cache lock");
        // Present and paired with the diff_id verified for it (nothing is downloaded here).
        let usable = |r: &crate::cache::Record| {
            r.layers
                .iter()
                .zip(&r.diff_ids)
                .all(|(l, d)| self.store.has_blob(&l.digest) && self.imported.fetch(self.store, l, d).is_ok())
        };
        for (key, record) in hits.iter().filter(|(_, r)| usable(r)) {
            crate::fault::point("cache-hit-record-before");
            if let Err(e) = cache.put(key, record) {
                log::warn!("could not write the cache record {}: {}", short(key), e);
            }
        }
    }

    /// Writes each `--cache-to`: with `mode=min` the steps of the final
    /// image's stages (the target and the stages it is built FROM), with
    /// `mode=max` every stage's.
    pub(super) fn export_caches(&self) -> Result<(), ExecError> {
        if self.opts.cache_to.is_empty() {
            return Ok(());
        }
        let exported = self.exported.lock().expect("exported lock");
        let mut chain = vec![self.plan.target];
        while let Base::Stage(i) = self.plan.stages[*chain.last().expect("not empty")].base {
            chain.push(i);
        }
        chain.reverse();
        let copy_from = self.copy_from_used.lock().expect("copy-from lock").clone();
        let steps = self.cache.lock().expect("cache lock").steps().clone();
        for to in &self.opts.cache_to {
            let stages: Vec<usize> = match to.mode {
                crate::remotecache::Mode::Min => chain.clone(),
                crate::remotecache::Mode::Max => self.plan.needed.clone(),
            };
            let records: Vec<(String, crate::cache::Record)> =
                stages.iter().filter_map(|i| exported.get(i)).flatten().cloned().collect();
            // The inputs of the exported stages' steps only: a miss on a step
            // the cache lacks is no news about what changed.
            let steps: std::collections::BTreeMap<String, StepInputs> = steps
                .iter()
                .filter(|(pos, _)| pos.split_once('/').is_some_and(|(i, _)| stages.iter().any(|s| s.to_string() == i)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let export = crate::remotecache::Export { records: &records, copy_from: &copy_from, steps: &steps };
            match crate::remotecache::export(
                self.store,
                to,
                &export,
                &self.imported,
                &self.opts.pull.registry,
                self.progress,
            ) {
                Ok(digest) => {
                    self.report(Event::Note(format!("--> cache exported to {} ({})", to.location, short(&digest))));
                }
                Err(e) if to.ignore_error => log::warn!("{}", crate::registry::chain_error(&e)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
