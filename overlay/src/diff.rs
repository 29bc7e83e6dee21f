//! An overlay upper directory → a layer tar, in one sorted walk.
//!
//! Whiteouts in any of the forms the drivers write become `.wh.NAME`: a char device 0:0 (kernel overlay,
//! fuse-overlayfs), an empty file with `<prefix>whiteout`, or a file already named `.wh.NAME`
//! (fuse-overlayfs where mknod is refused). Opaque directories (`<prefix>opaque` = `y`, fuse-overlayfs's
//! `user.fuseoverlayfs.opaque`, or a `.wh..wh..opq` file inside) get a `.wh..wh..opq` entry right after the
//! directory's own. A directory copied up only because something below it changed is written only when
//! something below it is, with its real metadata (from the upper, where copy-up preserved it).
//!
//! Sparse files: the tar carries every byte (OCI layers have no portable hole encoding; gzip makes runs of
//! zeros nearly free), and `apply_layer` recreates holes for whole zero blocks, so a sparse file does not
//! grow on disk on its way through a layer.

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::emit::{dir_identity, rel_bytes, sorted_children, Emitter};
pub use crate::emit::{DiffError, DiffOptions, DiffReport};
use crate::layer::LayerWriter;
use crate::lowers::Lowers;
use crate::whiteout::{is_whiteout, XattrPrefix, WH_OPAQUE, WH_PREFIX};

const FUSE_OPAQUE_XATTR: &str = "user.fuseoverlayfs.opaque";
const FUSE_OPAQUE_WHITEOUT: &str = ".wh..opq";

/// Streams the changes recorded in `upper` into `writer`. `lower_dirs` (topmost first) are the layer
/// directories the upper was mounted over; they tell whether a directory's own metadata changed.
pub fn write_diff<W: Write + 'static>(
    upper: &Path,
    lower_dirs: &[PathBuf],
    writer: &mut LayerWriter<W>,
    opts: &DiffOptions,
) -> Result<DiffReport, DiffError> {
    let lowers = Lowers::new(lower_dirs, opts.prefix.clone());
    let mut em = Emitter::new(writer, opts.clamp_mtime);
    walk(upper, Path::new(""), &lowers, &mut em, opts)?;
    em.finish()
}

fn walk<W: Write + 'static>(
    upper: &Path,
    rel_dir: &Path,
    lowers: &Lowers,
    em: &mut Emitter<'_, W>,
    opts: &DiffOptions,
) -> Result<(), DiffError> {
    let dir = upper.join(rel_dir);
    for name in sorted_children(&dir)? {
        let rel = rel_dir.join(&name);
        // fuse-overlayfs marks opaque directories with a `.wh..wh..opq` file and a `.wh..opq` whiteout
        // besides the xattr; the directory's own entry carries the marker.
        if opts.skipped(&rel) || name == WH_OPAQUE || name == FUSE_OPAQUE_WHITEOUT {
            continue;
        }
        let path = dir.join(&name);
        let md = fs::symlink_metadata(&path).map_err(|source| DiffError::Read { path: path.clone(), source })?;
        let rel_s = rel_bytes(&rel);
        // A whiteout hides a lower entry; one for a name no lower has (fuse-overlayfs leaves them where
        // a file was created and removed within the step, e.g. mount points) would only add noise.
        let hides = |r: &Path| lowers.is_empty() || lowers.lookup(r).is_some();
        if is_whiteout(&path, &md, &opts.prefix) {
            if hides(&rel) {
                em.whiteout(&rel_s, md.mtime())?;
            }
        } else if let Some(hidden) = name.as_bytes().strip_prefix(WH_PREFIX.as_bytes()) {
            let hidden_rel = rel_dir.join(std::ffi::OsStr::from_bytes(hidden));
            if hides(&hidden_rel) {
                em.whiteout(&rel_bytes(&hidden_rel), md.mtime())?;
            }
        } else if md.is_dir() {
            let meta = em.meta(&path, &rel_s)?;
            // Opaque hides lower entries; with no lower directory there, the marker says nothing (drivers
            // differ in whether they set it on new directories), so it is left out.
            let (changed, opaque) = match lowers.lookup(&rel) {
                Some((lower_path, lower_md)) if lower_md.is_dir() => {
                    let lower_meta = em.meta(&lower_path, &rel_s)?;
                    (dir_identity(&lower_meta) != dir_identity(&meta), is_opaque_any(&path, &opts.prefix))
                }
                // Without lowers to ask, an opaque marker is kept: dropping a needed one resurrects files.
                _ => (true, lowers.is_empty() && is_opaque_any(&path, &opts.prefix)),
            };
            em.dir(&rel_s, meta, changed, opaque)?;
            walk(upper, &rel, lowers, em, opts)?;
        } else {
            em.file(&path, &rel_s, &md)?;
        }
    }
    Ok(())
}

/// Whether a directory in an upper is opaque in any driver's spelling.
fn is_opaque_any(dir: &Path, prefix: &XattrPrefix) -> bool {
    let yes = |name: &str| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y");
    yes(&prefix.opaque())
        || yes(FUSE_OPAQUE_XATTR)
        || yes("user.overlay.opaque")
        || yes("trusted.overlay.opaque")
        || fs::symlink_metadata(dir.join(WH_OPAQUE)).is_ok()
}
