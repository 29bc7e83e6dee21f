//! Overlay whiteouts and opaque directories, and their OCI spelling (`.wh.NAME`, `.wh..wh..opq`).
//!
//! overlayfs marks a deleted lower entry with a character device 0:0 of the same name (or, since kernel
//! 6.7, an empty regular file with the `<prefix>whiteout` xattr inside a directory whose `<prefix>opaque`
//! xattr is `x`), and a directory that hides everything below it with `<prefix>opaque` = `y`. The prefix is
//! `trusted.overlay.` for a privileged mount and `user.overlay.` for one mounted with `userxattr` inside a
//! user namespace.

use std::ffi::{CStr, OsStr};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use xattr::FileExt;

use crate::sys;

/// The OCI whiteout file name prefix.
pub const WH_PREFIX: &str = ".wh.";
/// The OCI marker that makes its directory opaque.
pub const WH_OPAQUE: &str = ".wh..wh..opq";

/// How a layer directory records deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WhiteoutFormat {
    /// Character device 0:0; falls back to [`WhiteoutFormat::OverlayXattr`] where mknod is refused.
    Overlay,
    /// Empty regular file with `<prefix>whiteout`, parent dir marked `<prefix>opaque` = `x`.
    OverlayXattr,
    /// No markers: deletions delete (one rootfs, layers applied in order).
    Naive,
}

/// The overlay xattr namespace in use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XattrPrefix(pub String);

impl XattrPrefix {
    /// `user.overlay.`: overlay mounted with `userxattr` in a user namespace (and fuse-overlayfs).
    pub fn user() -> Self {
        XattrPrefix("user.overlay.".into())
    }

    /// `trusted.overlay.`: overlay mounted by real root.
    pub fn trusted() -> Self {
        XattrPrefix("trusted.overlay.".into())
    }

    /// The prefix a kernel overlay mount in the current user namespace uses.
    pub fn for_current_namespace() -> Self {
        if crate::namespace::in_user_namespace() {
            Self::user()
        } else {
            Self::trusted()
        }
    }

    pub fn opaque(&self) -> String {
        format!("{}opaque", self.0)
    }

    pub fn whiteout(&self) -> String {
        format!("{}whiteout", self.0)
    }
}

impl Default for XattrPrefix {
    fn default() -> Self {
        Self::for_current_namespace()
    }
}

/// Whether an xattr is overlayfs bookkeeping (in either namespace) that must never reach a layer.
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("user.overlay.") || name.starts_with("trusted.overlay.") || name.starts_with("user.fuseoverlayfs.")
}

/// Whether `meta` (from lstat of `path`) is an overlay whiteout: a char device 0:0, or an empty regular file
/// carrying `<prefix>whiteout`.
pub fn is_whiteout(path: &Path, meta: &Metadata, prefix: &XattrPrefix) -> bool {
    let ft = meta.file_type();
    if ft.is_char_device() {
        return meta.rdev() == 0;
    }
    ft.is_file() && meta.len() == 0 && has_xattr(path, &prefix.whiteout())
}

/// Whether the directory `dir` is opaque (`<prefix>opaque` = `y`).
pub fn is_opaque(dir: &Path, prefix: &XattrPrefix) -> bool {
    matches!(xattr::get(dir, prefix.opaque()), Ok(Some(v)) if v == b"y")
}

fn has_xattr(path: &Path, name: &str) -> bool {
    matches!(xattr::get(path, name), Ok(Some(_)))
}

/// Creates a whiteout for `name` in the directory `dir` (opened for reading). Returns the format used.
pub fn create_whiteout(
    dir: &File,
    name: &CStr,
    format: WhiteoutFormat,
    prefix: &XattrPrefix,
) -> io::Result<WhiteoutFormat> {
    if format == WhiteoutFormat::Overlay {
        match sys::mknod_whiteout(dir.as_fd(), name) {
            Ok(()) => return Ok(WhiteoutFormat::Overlay),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    let file = sys::openat2(
        dir.as_fd(),
        Path::new(OsStr::from_bytes(name.to_bytes())),
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
        0o000,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
    )?;
    File::from(file).set_xattr(prefix.whiteout(), b"y")?;
    // The kernel looks for xattr whiteouts only in directories marked this way; a fully opaque dir ("y")
    // needs no mark, its lower entries are hidden anyway.
    if !matches!(dir.get_xattr(prefix.opaque()), Ok(Some(v)) if v == b"y") {
        dir.set_xattr(prefix.opaque(), b"x")?;
    }
    Ok(WhiteoutFormat::OverlayXattr)
}

/// Marks the directory `dir` (opened for reading) opaque.
pub fn set_opaque(dir: &File, prefix: &XattrPrefix) -> io::Result<()> {
    dir.set_xattr(prefix.opaque(), b"y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_xattrs_are_recognised_in_both_namespaces() {
        assert!(is_overlay_xattr("user.overlay.origin"));
        assert!(is_overlay_xattr("trusted.overlay.redirect"));
        assert!(!is_overlay_xattr("user.overlayx"));
        assert!(!is_overlay_xattr("security.capability"));
        assert_eq!(XattrPrefix::user().opaque(), "user.overlay.opaque");
        assert_eq!(XattrPrefix::trusted().whiteout(), "trusted.overlay.whiteout");
    }
}
