//! The build context: the directory (or extracted tar stream) that COPY and
//! ADD read from, filtered by .dockerignore.
//!
//! Paths handed out are always real paths inside the context root: COPY
//! sources are resolved with symlinks scoped to the root (see `resolve`),
//! and walking never follows a symlink.
//!
//! Names are bytes from the walk to the cache key: a name that is not UTF-8
//! is kept exactly (Linux allows any byte but `/` and NUL) and only shown
//! lossily in messages.

pub mod digest;
mod dockerignore;
mod error;
mod glob;
pub mod layered;
mod relpath;
pub mod remote;
mod resolve;
mod source;
pub mod stat_cache;
mod tarball;
mod walk;

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bstr::BString;

pub use dockerignore::{DockerIgnore, IgnoreError};
pub use error::ContextError;
pub use glob::{has_wildcards, GlobError};

/// The context's own ignore files, the first found wins: docker's, then
/// podman's and buildah's.
const IGNORE_FILES: [&str; 2] = [".dockerignore", ".containerignore"];

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

/// A reader that fails, rather than ends, once more than `max` bytes come.
struct Capped<'h, R> {
    inner: R,
    left: u64,
    max: u64,
    hint: &'h str,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // At the limit: only the end of the stream is fine.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            let hint = if self.hint.is_empty() { String::new() } else { format!(" ({})", self.hint) };
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("the archive unpacks to more than {}{hint}", crate::net::human_bytes(self.max)),
            ));
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Where COPY/ADD sources are read from: a build context, or the layers of
/// a stage or image (`COPY --from`, see [`layered::LayerView`]).
pub trait SourceTree: Send + Sync {
    /// Expands one source word to the paths it names (see
    /// [`BuildContext::resolve_source`]).
    fn resolve_source(&self, word: &str) -> Result<Vec<SourceMatch>, ContextError>;
    /// The entries under a matched source in walk order (see [`BuildContext::walk`]).
    fn walk(&self, m: &SourceMatch) -> Result<Vec<ContextEntry>, ContextError>;
    /// Where the entry at the symlink-free path `rel` is on the host (for
    /// `--parents`, which copies the directories above a source); `None`
    /// when there is none.
    fn host_of(&self, rel: &[u8]) -> Result<Option<PathBuf>, ContextError>;
}

impl SourceTree for BuildContext {
    fn resolve_source(&self, word: &str) -> Result<Vec<SourceMatch>, ContextError> {
        BuildContext::resolve_source(self, word)
    }
    fn walk(&self, m: &SourceMatch) -> Result<Vec<ContextEntry>, ContextError> {
        BuildContext::walk(self, m)
    }
    fn host_of(&self, rel: &[u8]) -> Result<Option<PathBuf>, ContextError> {
        use std::os::unix::ffi::OsStrExt;
        let path = self.root().join(std::ffi::OsStr::from_bytes(rel));
        Ok(path.symlink_metadata().is_ok().then_some(path))
    }
}

/// One COPY/ADD source as matched in the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMatch {
    /// Path relative to the root as matched, `/`-separated; "" for the root.
    pub rel: BString,
    /// Resolved real path inside the root.
    pub host: PathBuf,
    pub is_dir: bool,
}

/// One entry under a matched source.
#[derive(Debug)]
pub struct ContextEntry {
    /// Path relative to the SourceMatch: for a directory source, its
    /// contents (`a`, `a/b`, …); for a file source, "" meaning the file.
    pub rel: BString,
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

    /// The ignore file for a context directory: `<Dockerfile>.dockerignore`
    /// next to the Dockerfile wins (BuildKit), else `<context>/.dockerignore`,
    /// else `<context>/.containerignore` (what podman and buildah read);
    /// `None` if there is none. `--ignorefile` bypasses this choice.
    pub fn find_ignore_file(context_dir: &Path, dockerfile: Option<&Path>) -> Option<PathBuf> {
        if let Some(df) = dockerfile {
            let mut name = df.as_os_str().to_os_string();
            name.push(".dockerignore");
            let specific = PathBuf::from(name);
            if specific.is_file() {
                return Some(specific);
            }
        }
        IGNORE_FILES.iter().map(|name| context_dir.join(name)).find(|p| p.is_file())
    }

    /// A context sent as a tar stream (plain, gzip, xz, bzip2 or zstd),
    /// extracted into a private temporary directory that lives as long as
    /// the context. With `ignore`, its own `.dockerignore` (else
    /// `.containerignore`) applies. A
    /// `Dockerfile` in the stream can be read from [`BuildContext::root`].
    pub fn from_tar<R: Read>(r: R, ignore: bool) -> Result<BuildContext, ContextError> {
        BuildContext::from_tar_limited(r, ignore, u64::MAX, "")
    }

    /// [`from_tar`](Self::from_tar) for an archive from elsewhere: its
    /// uncompressed stream may hold at most `max` bytes, so a small
    /// compressed bomb cannot fill the disk. `hint` says how to raise it.
    pub fn from_tar_limited<R: Read>(r: R, ignore: bool, max: u64, hint: &str) -> Result<BuildContext, ContextError> {
        let temp = tempfile::Builder::new().prefix("kiln-context-").tempdir().map_err(ContextError::TempDir)?;
        let root = temp.path().canonicalize().map_err(ContextError::TempDir)?;
        let (_, stream) = kiln_overlay::compress::decompress(r).map_err(ContextError::ReadArchive)?;
        tarball::extract(Capped { inner: stream, left: max, max, hint }, &root)?;
        let mut ctx = BuildContext { root, ignore: DockerIgnore::empty(), _temp: Some(temp), empty: false };
        if ignore {
            let found = IGNORE_FILES
                .iter()
                .find_map(|name| resolve::resolve(&ctx.root, name.as_bytes(), true).ok().filter(|found| !found.is_dir));
            if let Some(found) = found {
                ctx.ignore = read_ignore(&found.host)?;
            }
        }
        Ok(ctx)
    }

    /// A context in `subdir` of a temporary directory that the context
    /// keeps alive (a cloned repository); with `ignore`, filtered by its
    /// own `.dockerignore` (else `.containerignore`).
    pub fn from_temp_dir(temp: tempfile::TempDir, subdir: &str, ignore: bool) -> Result<BuildContext, ContextError> {
        let dir = temp.path().join(subdir);
        let ignore = if ignore { BuildContext::find_ignore_file(&dir, None) } else { None };
        let mut ctx = BuildContext::from_dir(&dir, ignore.as_deref())?;
        ctx._temp = Some(temp);
        Ok(ctx)
    }

    /// Filters the context by `path` (`--ignorefile`) instead of whatever
    /// ignore file it had.
    pub fn set_ignore_file(&mut self, path: &Path) -> Result<(), ContextError> {
        self.ignore = read_ignore(path)?;
        Ok(())
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

    /// The same context (its ignore rules included) served from `root`, a
    /// copy of [`BuildContext::root`] the caller made and keeps alive
    /// (`kiln build --verify-reproducible` builds from a copy with other mtimes).
    pub fn with_root(&self, root: &Path) -> BuildContext {
        BuildContext { root: root.to_path_buf(), ignore: self.ignore.clone(), _temp: None, empty: self.empty }
    }

    pub fn ignore(&self) -> &DockerIgnore {
        &self.ignore
    }

    /// Expands one COPY/ADD source word (after variable expansion) to the
    /// context paths it names. Wildcards (`*`, `?`, `[...]`, Go
    /// `filepath.Match` per component) match against the context tree;
    /// ignored paths never match; the word is cleaned relative to the root
    /// (`../x` is `x`); symlinks resolve inside the root, the final one
    /// included. Matches come sorted by `rel`. A wildcard that matches
    /// nothing gives no matches, not an error: BuildKit skips such a source
    /// (`COPY package.json yarn.lock* ./`); a plain name that is missing is
    /// [`ContextError::SourceNotFound`].
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
    fn rel_of(&self, host: &Path) -> BString {
        host.strip_prefix(&self.root).map(|p| BString::from(p.as_os_str().as_bytes())).unwrap_or_default()
    }
}

fn read_ignore(path: &Path) -> Result<DockerIgnore, ContextError> {
    let bytes = std::fs::read(path).map_err(|source| ContextError::ReadIgnore { path: path.to_path_buf(), source })?;
    DockerIgnore::parse_bytes(&bytes).map_err(|source| ContextError::ParseIgnore { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests;
