//! ADD sources behind URLs, fetched at most once per build: the cache key
//! needs their content (a download's digest, a clone's commit) before the
//! step runs, and the step then copies the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::context::remote::{self, Download, DownloadLimits, Remote, RemoteError};
use crate::context::BuildContext;
use crate::plan::CopyStep;

/// A fetched ADD source.
#[derive(Debug)]
pub enum Fetched {
    File(Download),
    /// A cloned repository (without `.git` unless asked) and its commit.
    Tree {
        ctx: BuildContext,
        commit: String,
    },
}

impl Fetched {
    /// What the cache key sees of it.
    pub fn describe(&self) -> String {
        match self {
            Fetched::File(d) => format!("url {}", d.digest),
            Fetched::Tree { commit, .. } => format!("git {}", commit),
        }
    }
}

pub struct Fetcher {
    dir: PathBuf,
    limits: DownloadLimits,
    done: Mutex<HashMap<(String, bool), Arc<Fetched>>>,
}

impl Fetcher {
    /// Fetches into `dir`, which must outlive the build's layers; each
    /// download may hold at most `limits.max_size` bytes.
    pub fn new(dir: PathBuf, limits: DownloadLimits) -> Fetcher {
        Fetcher { dir, limits, done: Mutex::new(HashMap::new()) }
    }

    /// The source `word` names (a URL), fetched on first use.
    pub fn fetch(&self, word: &str, keep_git_dir: bool) -> Result<Arc<Fetched>, RemoteError> {
        let key = (word.to_string(), keep_git_dir);
        // Held while fetching: two stages adding one URL fetch it once.
        let mut done = self.done.lock().expect("fetch lock");
        if let Some(f) = done.get(&key) {
            return Ok(f.clone());
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|source| RemoteError::TempDir { url: crate::net::redact(word), source })?;
        let fetched = match remote::classify(word) {
            Some(Remote::Git(git)) => {
                let temp = tempfile::Builder::new()
                    .prefix("git-")
                    .tempdir_in(&self.dir)
                    .map_err(|source| RemoteError::TempDir { url: crate::net::redact(word), source })?;
                let commit = git.clone_into(temp.path(), keep_git_dir)?;
                let subdir = git.subdir.clone().unwrap_or_default();
                if subdir.split('/').any(|c| c == "..") || !temp.path().join(&subdir).is_dir() {
                    return Err(RemoteError::NoSubdir {
                        url: crate::net::redact(&git.repo),
                        reference: git.reference.clone().unwrap_or_else(|| "HEAD".into()),
                        subdir,
                    });
                }
                let ctx = BuildContext::from_temp_dir(temp, &subdir, false)?;
                Fetched::Tree { ctx, commit }
            }
            _ => Fetched::File(remote::download(word, &self.dir, &self.limits)?),
        };
        let fetched = Arc::new(fetched);
        done.insert(key, fetched.clone());
        Ok(fetched)
    }

    /// Puts what the URL sources of an ADD from the context hold into
    /// `files`, which keys the cache. With `--checksum` the checksum
    /// stands for the content, so nothing is downloaded on a cache hit.
    pub fn describe(&self, step: &CopyStep, files: &mut BTreeMap<bstr::BString, String>) -> Result<(), RemoteError> {
        if !step.is_add || step.from.is_some() {
            return Ok(());
        }
        for word in step.sources.iter().filter(|w| remote::is_remote(w)) {
            let desc = match (&step.checksum, remote::classify(word)) {
                (Some(sum), Some(Remote::Http(_))) => format!("url {}", sum),
                _ => self.fetch(word, step.keep_git_dir)?.describe(),
            };
            files.insert(word.as_str().into(), desc);
        }
        Ok(())
    }
}
