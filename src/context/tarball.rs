//! A build context streamed as a tar archive (`kiln build - < ctx.tar.gz`,
//! or a remote context), decompressed by the caller, goes through the
//! extraction every archive in kiln gets, [`kiln_overlay::apply_tar`].
//!
//! Every entry is created relative to a directory opened inside the root
//! (openat2), never by joining host paths. A context is not a layer, so
//! `.wh.` names are plain names, owners stay the caller's, and an entry
//! whose parent path goes through a symlink (the "symlink, then a file
//! through it" trick) is refused rather than followed; `..` and absolute
//! names are refused outright. Symlinks are recreated with their targets
//! untouched; they are resolved later, scoped to the root.

use std::io::Read;
use std::path::Path;

use kiln_overlay::{apply_tar, ApplyError, ApplyOptions};

use super::error::ContextError;

/// Extracts the decompressed tar stream `plain` into the existing, empty
/// directory `dest`.
pub(crate) fn extract<R: Read>(mut plain: R, dest: &Path) -> Result<(), ContextError> {
    let report = apply_tar(&mut plain, dest, &ApplyOptions::plain()).map_err(|e| match e {
        ApplyError::Read(source) => ContextError::ReadArchive(source),
        ApplyError::Unsafe { path, reason } => ContextError::UnsafeEntry { entry: path, reason },
        ApplyError::Entry { path, source } => ContextError::Extract { entry: path, source },
        ApplyError::Dest(path, source) => ContextError::Extract { entry: path.display().to_string(), source },
        #[allow(unreachable_patterns)]
        other => ContextError::ReadArchive(std::io::Error::other(other.to_string())),
    })?;
    // The rest of the stream: a compressed context's trailer (gzip CRC) is checked, and a size cap counts it.
    std::io::copy(&mut plain, &mut std::io::sink()).map_err(ContextError::ReadArchive)?;
    for skipped in &report.skipped {
        log::warn!("build context archive: skipped {skipped}");
    }
    Ok(())
}
