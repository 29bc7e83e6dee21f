//! The build context: the directory (or extracted tar stream) that COPY and
//! ADD read from, filtered by .dockerignore.
//!
//! Paths handed out are always real paths inside the context root: COPY
//! sources are resolved with symlinks scoped to the root (see `resolve`),
//! and walking never follows a symlink.

pub mod digest;
mod dockerignore;
mod error;
mod glob;
pub mod remote;
mod resolve;
mod source;
mod tarball;
mod walk;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use dockerignore::{DockerIgnore, IgnoreError};
pub use error::ContextError;
pub use glob::{has_wildcards, GlobError};

/// A build context ready to serve COPY/ADD sources.
#[derive(Debug)]
pub struct BuildContext {
    root: PathBuf,
    ignore: DockerIgnore,
    /// Keeps an extracted context alive; dropped with the context.
    _temp: Option<tempfile::TempDir>,
    /// No context at all (`-f -` without one): nothing resolves but ".".
    empty: bool,
}

/// One COPY/ADD source as matched in the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMatch {
    /// Path relative to the root as matched, `/`-separated; "" for the root.
    pub rel: String,
    /// Resolved real path inside the root.
    pub host: PathBuf,
    pub is_dir: bool,
}

/// One entry under a matched source.
#[derive(Debug)]
pub struct ContextEntry {
    /// Path relative to the SourceMatch: for a directory source, its
    /// contents (`a`, `a/b`, …); for a file source, "" meaning the file.
    pub rel: String,
    pub host: PathBuf,
    /// lstat of `host`.
    pub metadata: std::fs::Metadata,
    /// Target of a symlink entry, as stored in the link.
    pub link_target: Option<PathBuf>,
}

impl BuildContext {
    /// A context directory, filtered by `ignore_file` (the caller picks it,
    /// usually with [`BuildContext::find_ignore_file`]); `None` ignores
    /// nothing.
    pub fn from_dir(dir: &Path, ignore_file: Option<&Path>) -> Result<BuildContext, ContextError> {
        let root = dir.canonicalize().map_err(|source| ContextError::OpenDir { path: dir.to_path_buf(), source })?;
        if !root.is_dir() {
            return Err(ContextError::NotADirectory { path: dir.to_path_buf() });
        }
        let ignore = match ignore_file {
            Some(path) => read_ignore(path)?,
            None => DockerIgnore::empty(),
        };
        Ok(BuildContext { root, ignore, _temp: None, empty: false })
    }

    /// Docker's choice of ignore file: `<Dockerfile>.dockerignore` next to
    /// the Dockerfile wins, else `<context>/.dockerignore`; `None` if
    /// neither exists.
    pub fn find_ignore_file(context_dir: &Path, dockerfile: Option<&Path>) -> Option<PathBuf> {
        if let Some(df) = dockerfile {
            let mut name = df.as_os_str().to_os_string();
            name.push(".dockerignore");
            let specific = PathBuf::from(name);
            if specific.is_file() {
                return Some(specific);
            }
        }
        let common = context_dir.join(".dockerignore");
        common.is_file().then_some(common)
    }

    /// A context sent as a tar stream (plain, gzip, xz, bzip2 or zstd),
    /// extracted into a private temporary directory that lives as long as
    /// the context. With `ignore`, its own `.dockerignore` applies. A
    /// `Dockerfile` in the stream can be read from [`BuildContext::root`].
    pub fn from_tar<R: Read>(r: R, ignore: bool) -> Result<BuildContext, ContextError> {
        let temp = tempfile::Builder::new().prefix("kiln-context-").tempdir().map_err(ContextError::TempDir)?;
        let root = temp.path().canonicalize().map_err(ContextError::TempDir)?;
        tarball::extract(r, &root)?;
        let mut ctx = BuildContext { root, ignore: DockerIgnore::empty(), _temp: Some(temp), empty: false };
        if ignore {
            if let Ok(found) = resolve::resolve(&ctx.root, ".dockerignore", true) {
                if !found.is_dir {
                    ctx.ignore = read_ignore(&found.host)?;
                }
            }
        }
        Ok(ctx)
    }

    /// A context in `subdir` of a temporary directory that the context
    /// keeps alive (a cloned repository); with `ignore`, filtered by its
    /// own `.dockerignore`.
    pub fn from_temp_dir(temp: tempfile::TempDir, subdir: &str, ignore: bool) -> Result<BuildContext, ContextError> {
        let dir = temp.path().join(subdir);
        let ignore = if ignore { BuildContext::find_ignore_file(&dir, None) } else { None };
        let mut ctx = BuildContext::from_dir(&dir, ignore.as_deref())?;
        ctx._temp = Some(temp);
        Ok(ctx)
    }

    /// No context: only "." resolves, to an empty directory.
    pub fn empty() -> BuildContext {
        let temp = tempfile::Builder::new().prefix("kiln-context-").tempdir().ok();
        let root = temp.as_ref().map(|t| t.path().to_path_buf()).unwrap_or_default();
        BuildContext { root, ignore: DockerIgnore::empty(), _temp: temp, empty: true }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ignore(&self) -> &DockerIgnore {
        &self.ignore
    }

    /// Expands one COPY/ADD source word (after variable expansion) to the
    /// context paths it names. Wildcards (`*`, `?`, `[...]`, Go
    /// `filepath.Match` per component) match against the context tree;
    /// ignored paths never match; the word is cleaned relative to the root
    /// (`../x` is `x`); symlinks resolve inside the root, the final one
    /// included. Matches come sorted by `rel`.
    pub fn resolve_source(&self, pattern: &str) -> Result<Vec<SourceMatch>, ContextError> {
        source::resolve_source(self, pattern)
    }

    /// The entries under a matched source in walk order (depth first, names
    /// sorted bytewise, a directory before its contents), leaving out
    /// ignored paths. Symlinks are listed, never followed.
    pub fn walk(&self, m: &SourceMatch) -> Result<Vec<ContextEntry>, ContextError> {
        walk::walk(self, m)
    }

    /// The context-relative, `/`-separated form of a real path inside the
    /// root.
    fn rel_of(&self, host: &Path) -> String {
        host.strip_prefix(&self.root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn read_ignore(path: &Path) -> Result<DockerIgnore, ContextError> {
    let bytes = std::fs::read(path).map_err(|source| ContextError::ReadIgnore { path: path.to_path_buf(), source })?;
    DockerIgnore::parse(&String::from_utf8_lossy(&bytes))
        .map_err(|source| ContextError::ParseIgnore { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests;
