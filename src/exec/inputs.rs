//! A step's inputs: its cache key and what it saw (digests of COPY/ADD
//! sources, bind-mounted files, the options that change the layer).

use super::*;

impl<'a> Executor<'a> {
    /// The step's cache key and what it saw. COPY/ADD from the context
    /// digest their sources here, before anything is copied.
    pub(super) fn inputs(&self, state: &StageState, step: &Step) -> Result<StepInputs, StepError> {
        let mut files = std::collections::BTreeMap::new();
        let extra = match &step.kind {
            StepKind::Copy(c) => match &c.from {
                None => {
                    let mut digest = crate::context::digest::sources(
                        self.ctx,
                        &c.sources,
                        &mut self.stat.lock().expect("stat lock"),
                    )?;
                    self.fetcher.describe(c, &mut digest.files)?;
                    files = digest.shown();
                    digest.digest()
                }
                Some(from) if self.views_of(from) => {
                    let memo = self.copy_from_digest(from, &c.sources)?;
                    files = memo.files;
                    memo.digest
                }
                Some(from) => {
                    let source = self.source_of(from)?;
                    let digest = crate::context::digest::sources(
                        &*source,
                        &c.sources,
                        &mut self.stat.lock().expect("stat lock"),
                    )?;
                    files = digest.shown();
                    digest.digest()
                }
            },
            StepKind::Run(r) if !r.mounts.is_empty() => self.bind_inputs(r, &mut files)?,
            _ => String::new(),
        };
        // A layer written with other compression is another blob; so is one at another level (the default
        // level adds nothing, so keys made before levels existed still match).
        let level = match self.opts.compression_level {
            Some(l) if Some(l) != self.opts.compression.default_level() => format!("@{}", l),
            _ => String::new(),
        };
        let extra = match &step.kind {
            // A layer cached under older COPY rules is not this kiln's COPY.
            StepKind::Copy(_) => format!("{}|{:?}{}|{}", extra, self.opts.compression, level, copy::RULES),
            StepKind::Run(_) => {
                format!("{}|{:?}{}{}", extra, self.opts.compression, level, self.opts.run_extras.cache_text())
            }
            StepKind::Workdir(_) => format!("{}|{:?}{}", extra, self.opts.compression, level),
            _ => extra,
        };
        let args = match &step.kind {
            StepKind::Run(r) => r
                .build_args
                .to_vec()
                .into_iter()
                .filter(|(k, _)| !crate::cache::PROXY_ARGS.contains(&k.as_str()))
                .collect(),
            _ => Default::default(),
        };
        Ok(StepInputs {
            key: crate::cache::step_key(&state.key, step, &extra),
            parent: state.key.clone(),
            instruction: step.original.clone(),
            args,
            files,
        })
    }
}
