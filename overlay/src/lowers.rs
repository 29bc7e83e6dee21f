//! The merged view of overlay-form layer directories, read without mounting:
//! what the copy driver's diff compares against and what the diff of an
//! overlay upper consults to tell a new entry from a changed one.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::whiteout::{is_opaque, is_whiteout, XattrPrefix};

/// The merged view of overlay-form layer directories, topmost first, read without mounting.
pub(crate) struct Lowers<'a> {
    dirs: &'a [PathBuf],
    prefix: XattrPrefix,
}

impl<'a> Lowers<'a> {
    pub fn new(dirs: &'a [PathBuf], prefix: XattrPrefix) -> Self {
        Lowers { dirs, prefix }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Whether `layer` hides everything below `rel` in lower layers without having `rel` itself: an
    /// ancestor there is a whiteout, not a directory, or opaque.
    fn hides(&self, layer: &Path, rel: &Path) -> bool {
        let mut cur = layer.to_path_buf();
        for comp in rel.parent().into_iter().flat_map(Path::components) {
            cur.push(comp);
            match fs::symlink_metadata(&cur) {
                Err(_) => return false,
                Ok(md) if !md.is_dir() => return true,
                Ok(_) if is_opaque(&cur, &self.prefix) => return true,
                Ok(_) => {}
            }
        }
        false
    }

    /// The topmost visible entry at `rel`, with its lstat.
    pub fn lookup(&self, rel: &Path) -> Option<(PathBuf, Metadata)> {
        for layer in self.dirs {
            let path = layer.join(rel);
            match fs::symlink_metadata(&path) {
                Ok(md) if is_whiteout(&path, &md, &self.prefix) => return None,
                Ok(md) => return Some((path, md)),
                Err(_) if self.hides(layer, rel) => return None,
                Err(_) => {}
            }
        }
        None
    }

    /// The names visible in the merged directory `rel`.
    pub fn children(&self, rel: &Path) -> io::Result<BTreeSet<OsString>> {
        let mut seen = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        for layer in self.dirs {
            let dir = layer.join(rel);
            match fs::symlink_metadata(&dir) {
                Ok(md) if md.is_dir() && !is_whiteout(&dir, &md, &self.prefix) => {
                    for entry in fs::read_dir(&dir)? {
                        let entry = entry?;
                        let name = entry.file_name();
                        let md = entry.metadata()?;
                        if is_whiteout(&entry.path(), &md, &self.prefix) {
                            hidden.insert(name);
                        } else if !hidden.contains(&name) {
                            seen.insert(name);
                        }
                    }
                    if is_opaque(&dir, &self.prefix) {
                        break;
                    }
                }
                Ok(_) => break,
                Err(_) if self.hides(layer, rel) => break,
                Err(_) => {}
            }
        }
        Ok(seen)
    }
}
