//! Listing the entries under a COPY source, filtered by .dockerignore.
//!
//! An excluded directory is entered only when an exception could re-include
//! something below it; it is then listed only if something below it is,
//! just before that entry, as BuildKit's fsutil walker does.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bstr::BString;

use super::relpath::join;
use super::{BuildContext, ContextEntry, ContextError, SourceMatch};

pub(super) fn walk(ctx: &BuildContext, m: &SourceMatch) -> Result<Vec<ContextEntry>, ContextError> {
    if ctx.root.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let metadata = lstat(&m.host)?;
    if !metadata.is_dir() {
        let link_target = read_link_if(&m.host, &metadata)?;
        return Ok(vec![ContextEntry { rel: BString::default(), host: m.host.clone(), metadata, link_target }]);
    }
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut sink = Sink { out: &mut out, pending: &mut pending, stop_at_first: false };
    walk_dir(ctx, &m.host, &ctx.rel_of(&m.host), b"", &mut sink)?;
    Ok(out)
}

/// True if some entry below the excluded directory `host` (context path
/// `rel`) is re-included by an exception.
pub(super) fn has_included(ctx: &BuildContext, host: &Path, rel: &[u8]) -> Result<bool, ContextError> {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut sink = Sink { out: &mut out, pending: &mut pending, stop_at_first: true };
    walk_dir(ctx, host, rel, b"", &mut sink)?;
    Ok(!out.is_empty())
}

struct Sink<'a> {
    out: &'a mut Vec<ContextEntry>,
    /// Excluded directories entered but not yet listed.
    pending: &'a mut Vec<ContextEntry>,
    stop_at_first: bool,
}

impl Sink<'_> {
    fn emit(&mut self, entry: ContextEntry) {
        self.out.append(self.pending);
        self.out.push(entry);
    }

    fn done(&self) -> bool {
        self.stop_at_first && !self.out.is_empty()
    }
}

fn walk_dir(
    ctx: &BuildContext,
    dir: &Path,
    ctx_rel: &[u8],
    out_rel: &[u8],
    sink: &mut Sink,
) -> Result<(), ContextError> {
    let read = fs::read_dir(dir).map_err(|source| ContextError::Io { path: dir.to_path_buf(), source })?;
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| ContextError::Io { path: dir.to_path_buf(), source })?;
        entries.push((entry.file_name(), entry));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, dirent) in entries {
        if sink.done() {
            return Ok(());
        }
        let host = dir.join(&name);
        let crel = join(ctx_rel, name.as_bytes());
        let orel = join(out_rel, name.as_bytes());
        // Relative to the open directory (fstatat), not a walk of the whole
        // path again: a cached rebuild stats every context file.
        let metadata = dirent.metadata().map_err(|source| ContextError::Io { path: host.clone(), source })?;
        let excluded = ctx.ignore.matches(&crel);
        let is_dir = metadata.is_dir();
        if excluded && !(is_dir && ctx.ignore.may_include_under(&crel)) {
            continue;
        }
        let link_target = read_link_if(&host, &metadata)?;
        let entry = ContextEntry { rel: orel.clone(), host: host.clone(), metadata, link_target };
        if !is_dir {
            sink.emit(entry);
            continue;
        }
        let depth = sink.pending.len();
        if excluded {
            sink.pending.push(entry);
        } else {
            sink.emit(entry);
        }
        walk_dir(ctx, &host, &crel, &orel, sink)?;
        // Still pending means nothing below was listed: drop it.
        sink.pending.truncate(depth);
    }
    Ok(())
}

fn lstat(path: &Path) -> Result<fs::Metadata, ContextError> {
    fs::symlink_metadata(path).map_err(|source| ContextError::Io { path: path.to_path_buf(), source })
}

fn read_link_if(path: &Path, metadata: &fs::Metadata) -> Result<Option<std::path::PathBuf>, ContextError> {
    if !metadata.file_type().is_symlink() {
        return Ok(None);
    }
    fs::read_link(path).map(Some).map_err(|source| ContextError::Io { path: path.to_path_buf(), source })
}
