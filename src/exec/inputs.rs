//! A step's inputs: its cache key and what it saw (digests of COPY/ADD
//! sources, bind-mounted files, the options that change the layer).

use super::*;

impl<'a> Executor<'a> {
    /// The step's cache key and what it saw. COPY/ADD from the context
    /// digest their sources here, before anything is copied.
    pub(super) fn inputs(&self, state: &StageState, step: &Step) -> Result<StepInputs, StepError> {
        if self.opts.only_if_cached {
            self.replayable(step)?;
        }
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

    /// Whether a replay of the cache outside kiln's user namespace computes
    /// the step's key as the build inside it does. Not when the key needs
    /// something fetched (a URL, a git repository: the build that takes
    /// over would fetch it again) or the files of a named context; and a
    /// stage's or image's files (`COPY --from`) only through the digest
    /// remembered for them ([`Executor::copy_from_digest`]): their owners
    /// are keyed, and outside the namespace they show as the host's
    /// subordinate ids.
    fn replayable(&self, step: &Step) -> Result<(), StepError> {
        let named_files = |name: &str| self.opts.named_contexts.get(name).is_some_and(NamedContext::is_files);
        let from_files = |from: &CopyFrom| match from {
            CopyFrom::Image(name) => named_files(name),
            CopyFrom::Stage(_) => false,
        };
        let replayable = match &step.kind {
            StepKind::Copy(c) => {
                !c.sources.iter().any(|s| crate::context::remote::is_remote(s))
                    && !c.from.as_ref().is_some_and(from_files)
            }
            StepKind::Run(r) => !r.mounts.iter().any(|m| match m {
                crate::plan::Mount::Bind { from: Some(from), .. } => from_files(&from.source),
                _ => false,
            }),
            _ => true,
        };
        match replayable {
            true => Ok(()),
            false => Err(StepError::Exec(Box::new(ExecError::NotCached(format!(
                "{} reads a URL or a named context",
                step.original
            ))))),
        }
    }
}
