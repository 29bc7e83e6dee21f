//! ADD's archives: which sources are tar archives, where their members may
//! land, and their entries written as the step's (methods of [`Output`]
//! beside the destination rules in `output.rs`).

use std::fs::File;
use std::path::Path;

use kiln_overlay::compress;

use super::output::Output;
use super::paths::*;
use super::{CopyError, Data};
use crate::context::SourceMatch;
use bstr::{BString, ByteSlice};
use kiln_overlay::reader::Reader;
use kiln_overlay::tarfmt::EntryKind;

/// Docker decides by content: a tar, possibly compressed with gzip, bzip2, xz or zstd.
pub(super) fn is_archive(path: &Path) -> Result<bool, CopyError> {
    let err = |source| CopyError::Read { path: path.to_path_buf(), source };
    compress::is_archive(File::open(path).map_err(err)?).map_err(err)
}

/// An archive member's path inside the destination, or None if it escapes.
pub(super) fn safe_archive_path(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl Output<'_> {
    /// ADD of a local tar archive: extracted into the destination, which
    /// BuildKit makes a directory 0755 whatever --chmod says. `false` when
    /// the source is not an archive (it is copied as the file it is).
    pub(super) fn unpack_if_archive(&mut self, m: &SourceMatch) -> Result<bool, CopyError> {
        if !is_archive(&m.host)? {
            return Ok(false);
        }
        let dir = self.dest_dir(0o755)?;
        // The archive extraction still takes text; names there are its own business.
        self.unpack(&m.host, &m.rel.to_str_lossy(), &dir)?;
        Ok(true)
    }

    /// ADD of a local archive: its entries land under `dest`, keeping the
    /// archive's own owners unless --chown says otherwise, and its own modes
    /// whatever --chmod says (BuildKit's unpack ignores it).
    ///
    /// Docker extracts into the container's root, so an entry whose path goes
    /// through a symlink (one the image has, or one this archive made earlier,
    /// `link -> /etc` then `link/file`) lands where the symlink leads inside
    /// the image; the layer gets that resolved path, which every later step
    /// can apply. Hard-link targets are taken relative to the extraction
    /// directory, as docker takes them (`/etc/passwd` is `<dest>/etc/passwd`),
    /// and must be a file this step writes: a layer cannot link to another.
    pub(super) fn unpack(&mut self, host: &Path, rel: &str, dest: &str) -> Result<(), CopyError> {
        let err = |source| CopyError::Archive { path: rel.to_string(), source };
        let refuse = |entry: &str, reason: String| CopyError::ArchiveEntry {
            archive: rel.to_string(),
            entry: entry.to_string(),
            reason,
        };
        let file = File::open(host).map_err(err)?;
        let (_, plain) = compress::decompress(file).map_err(err)?;
        let mut reader = Reader::new(plain);
        let scratch = tempfile::Builder::new().prefix("add-").tempdir_in(self.env.scratch).map_err(err)?;
        let mut counter = 0u64;
        while let Some(entry) = reader.next_entry().map_err(err)? {
            let name = entry.display();
            let inner = safe_archive_path(&name)
                .ok_or_else(|| CopyError::ArchiveEscape { archive: rel.to_string(), entry: name.clone() })?;
            if inner.is_empty() {
                continue;
            }
            let Some(mut meta) = entry.meta() else {
                log::warn!("ADD {rel}: entry {name:?} has a type kiln does not extract ({:?}); skipped", entry.kind);
                continue;
            };
            // Archive names meet the image tree here, whose paths are text.
            let (inner_dir, last) = split_name(&inner);
            if last.starts_with(".wh.") {
                // In a layer this name deletes; kept, it would delete in the next step.
                return Err(refuse(&name, "has a name that image layers reserve for deletions (.wh.)".into()));
            }
            let target = self.archive_target(&join(dest, inner_dir), last).map_err(|r| refuse(&name, r))?;
            let mut data = Data::None;
            match &meta.kind {
                EntryKind::Hardlink(_) => {
                    let link = String::from_utf8_lossy(&entry.link).into_owned();
                    let inner_link = safe_archive_path(&link).filter(|l| !l.is_empty()).ok_or_else(|| {
                        refuse(&name, format!("is a hard link to {link:?}, outside the extraction directory"))
                    })?;
                    let (link_dir, link_last) = split_name(&inner_link);
                    let resolved =
                        self.archive_target(&join(dest, link_dir), link_last).map_err(|r| refuse(&name, r))?;
                    let linked = match self.entries.get(resolved.as_bytes()).map(|p| &p.meta.kind) {
                        Some(EntryKind::Hardlink(first)) => first.clone(),
                        Some(EntryKind::Dir) => {
                            return Err(refuse(&name, format!("is a hard link to the directory /{resolved}")))
                        }
                        Some(_) => BString::from(resolved),
                        None => {
                            return Err(refuse(
                                &name,
                                format!("is a hard link to /{resolved}, which is not an earlier entry of the archive"),
                            ))
                        }
                    };
                    if linked.as_slice() == target.as_bytes() {
                        continue;
                    }
                    meta.kind = EntryKind::Hardlink(linked);
                }
                EntryKind::File => {
                    counter += 1;
                    let spill = scratch.path().join(counter.to_string());
                    let mut f = File::create(&spill).map_err(err)?;
                    meta.size = std::io::copy(&mut reader.data(), &mut f).map_err(err)?;
                    data = Data::Host(spill);
                }
                _ => {}
            }
            // --chmod is not applied: BuildKit's unpack takes only the owner.
            if let Some((uid, gid)) = self.env.owner {
                meta.uid = uid;
                meta.gid = gid;
            }
            if !matches!(meta.kind, EntryKind::Dir) {
                // A non-directory replaces a directory with everything in it.
                let prefix = format!("{target}/");
                self.entries.retain(|p, _| !p.starts_with(prefix.as_bytes()));
            }
            self.put(target, meta, data);
        }
        // The spilled files must outlive this call: the layer is written later.
        let _ = scratch.keep();
        Ok(())
    }

    /// Where an archive entry named `last` in the directory `dir` lands: `dir`
    /// resolved inside the image (its symlinks, and those this step already
    /// wrote, followed), which must be a directory or not exist yet.
    pub(super) fn archive_target(&self, dir: &str, last: &str) -> Result<String, String> {
        let entries = &self.entries;
        let resolved = self
            .tree
            .resolve_with(dir, true, |p| entries.get(p.as_bytes()).map(|e| &e.meta.kind))
            .map_err(|e| e.to_string())?;
        let mut prefix = String::new();
        for c in resolved.split('/').filter(|c| !c.is_empty()) {
            prefix = join(&prefix, c);
            let kind = entries
                .get(prefix.as_bytes())
                .map(|e| &e.meta.kind)
                .or_else(|| self.tree.get(&prefix).map(|m| &m.kind));
            match kind {
                None | Some(EntryKind::Dir) => {}
                Some(_) => return Err(format!("goes through /{prefix}, which is not a directory")),
            }
        }
        Ok(join(&resolved, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_stay_inside() {
        assert_eq!(safe_archive_path("./a/b"), Some("a/b".into()));
        assert_eq!(safe_archive_path("/abs/x"), Some("abs/x".into()));
        assert_eq!(safe_archive_path("a/../b"), Some("b".into()));
        assert_eq!(safe_archive_path("../evil"), None);
        assert_eq!(safe_archive_path("a/../../evil"), None);
    }
}
