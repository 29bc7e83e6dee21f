//! Errors of the build context.

use std::io;
use std::path::PathBuf;

use super::dockerignore::IgnoreError;
use super::glob::GlobError;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("open build context {path}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("build context {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("read ignore file {path}")]
    ReadIgnore {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse ignore file {path}")]
    ParseIgnore {
        path: PathBuf,
        #[source]
        source: IgnoreError,
    },
    #[error("create a temporary directory for the build context")]
    TempDir(#[source] io::Error),
    #[error("read the build context archive")]
    ReadArchive(#[source] io::Error),
    #[error("refuse entry {entry:?} of the build context archive: it {reason}")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error("extract {entry:?} from the build context archive")]
    Extract {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "COPY failed: file not found in build context or excluded by .dockerignore: stat {word}: file does not exist"
    )]
    SourceNotFound { word: String },
    #[error("bad wildcard in source {word}")]
    BadWildcard {
        word: String,
        #[source]
        source: GlobError,
    },
    #[error("too many levels of symbolic links while resolving {word} in the build context")]
    SymlinkLoop { word: String },
    #[error("read {path} in the build context")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
