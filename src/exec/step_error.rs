//! What one step (or a stage's FROM) can fail with, wrapped by
//! [`ExecError::Step`](super::ExecError::Step) with the Dockerfile location.
//!
//! A variant for another module's error is transparent: its text is that
//! error's, and its causes follow it, so the report reads as the failing
//! module wrote it. An I/O error or an interruption is never wrapped that
//! way: front-ends find `ENOSPC` and interruptions by downcasting the
//! chain's links to `io::Error` and `Interrupted`, so those variants say
//! what was being done and keep the error itself as their cause.

use std::path::PathBuf;

use kiln_runtime::Interrupted;

use super::chmod::ChmodError;
use super::copy::CopyError;
use super::mounts::MountError;
use super::owner::OwnerError;
use super::run::RunError;
use super::tree::TreeError;
use super::workdir::WorkdirError;
use super::ExecError;
use crate::context::remote::RemoteError;
use crate::context::ContextError;
use crate::dockerfile::DockerfileError;
use crate::store::layers::LayerDirError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Boxed: an [`ExecError`] holds a `StepError` itself.
    #[error(transparent)]
    Exec(Box<ExecError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error(transparent)]
    Chmod(#[from] ChmodError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Workdir(#[from] WorkdirError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    LayerDir(#[from] LayerDirError),
    /// An ONBUILD trigger that does not parse or plan.
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    #[error("the step did not start")]
    Interrupted(#[from] Interrupted),
    #[error("the base image has ONBUILD triggers ({0}) but its config could not be read when planning; build again")]
    TriggersUnplanned(String),
    #[error("stage used before it was built")]
    StageNotBuilt,
    #[error("COPY --from names a stage that was not built")]
    FromStageNotBuilt,
    #[error("--build-context {name}: {url} is not a git or http(s) URL")]
    NotARemote { name: String, url: String },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("create a directory in {path}")]
    Scratch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<ExecError> for StepError {
    fn from(e: ExecError) -> Self {
        StepError::Exec(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    /// The links a front-end walks below a failed step, the step's own first.
    fn links(step: StepError) -> Vec<String> {
        let failed = ExecError::Step {
            file: "Dockerfile".into(),
            line: 1,
            column: 1,
            instruction: "RUN x".into(),
            source: Box::new(step),
            hint: None,
        };
        let mut out = Vec::new();
        let mut next = failed.source();
        while let Some(e) = next {
            let full = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(libc::ENOSPC);
            out.push(format!("{}{e}", if full { "ENOSPC: " } else { "" }));
            next = e.source();
        }
        out
    }

    #[test]
    fn a_full_disk_stays_in_the_chain_and_every_cause_shows_once() {
        let full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let cases = [
            StepError::Read { path: "/ctx/a".into(), source: full() },
            StepError::Scratch { path: "/s/tmp".into(), source: full() },
            ExecError::Layer(full()).into(),
            LayerDirError::Io { path: "/s/layers/x".into(), source: full() }.into(),
        ];
        for step in cases {
            let links = links(step);
            assert!(links.last().is_some_and(|l| l.starts_with("ENOSPC: ")), "{links:?}");
            assert!(links.windows(2).all(|w| !w[1].contains(&w[0]) && !w[0].contains(&w[1])), "{links:?}");
        }
    }

    #[test]
    fn an_interruption_stays_in_the_chain() {
        let failed = ExecError::Step {
            file: "Dockerfile".into(),
            line: 2,
            column: 1,
            instruction: "RUN x".into(),
            source: Box::new(Interrupted::ParentGone.into()),
            hint: None,
        };
        assert!(kiln_runtime::lifetime::is_interruption(&failed));
    }

    #[test]
    fn another_module_s_error_reads_as_that_module_wrote_it() {
        let chmod = ChmodError("9".into()).to_string();
        assert_eq!(links(ChmodError("9".into()).into()), vec![chmod]);
        let layer = ExecError::Layer(std::io::Error::other("short write"));
        assert_eq!(links(layer.into()), vec!["write layer", "short write"]);
    }
}
