//! `COPY --from` sources read straight from a stage's or image's layer
//! directories (`kiln/layers/<chain>/diff`, topmost first), without mounting
//! or unpacking anything: each source path is looked up through the stack as
//! overlayfs would, so only the requested files are ever touched.
//!
//! The lookup merges one directory level at a time. A directory's merged
//! view is the list of layers whose copy of it takes part: from the topmost
//! layer holding it down to the first layer where it is opaque, and never
//! past a layer where the name is a whiteout or not a directory. A child is
//! looked up only in those layers, so whiteouts, opaque directories and
//! files replacing directories hide what lies below them.
//!
//! Safety: only verified layer dirs are handed in (the caller gets them from
//! `LayerDirs::ensure`). A path is only ever built from components that
//! lstat found to be real directories in that layer, so no symlink in a
//! layer dir is followed by the kernel; symlinks in the image are resolved
//! here, inside the merged view, as if its root were `/` (the rules of
//! [`super::resolve`]). Layer dirs never change once verified (they are
//! renamed into place whole and only ever removed), so what was checked
//! stays true while the build reads it.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};
use kiln_overlay::whiteout::{is_opaque, is_whiteout, XattrPrefix};

use super::dockerignore::clean;
use super::glob::{has_wildcards, source_component, unescape};
use super::relpath::join;
use super::{ContextEntry, ContextError, SourceMatch, SourceTree};

/// Linux's MAXSYMLINKS: more expansions than this is a loop.
const MAX_LINKS: usize = 40;

/// The merged filesystem of a stack of layer dirs, read by lookup.
#[derive(Debug)]
pub struct LayerView {
    /// Layer dirs, topmost first.
    layers: Vec<PathBuf>,
    prefix: XattrPrefix,
}

/// One entry of the merged view.
#[derive(Debug, Clone)]
struct Node {
    /// The entry in the topmost layer that has it.
    host: PathBuf,
    md: Metadata,
    /// For a directory: the layers (indexes, topmost first) whose copy of it
    /// is merged in. Empty for anything else.
    merged: Vec<usize>,
}

impl Node {
    fn is_dir(&self) -> bool {
        self.md.is_dir()
    }
}

impl LayerView {
    /// The view of `layers` (verified layer dirs, topmost first) whose
    /// whiteouts and opaque markers use `prefix`.
    pub fn new(layers: Vec<PathBuf>, prefix: XattrPrefix) -> LayerView {
        LayerView { layers, prefix }
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
        move |source| ContextError::Io { path: path.to_path_buf(), source }
    }

    fn root(&self) -> Result<Node, ContextError> {
        let mut merged = Vec::new();
        let mut top: Option<(PathBuf, Metadata)> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let md = fs::symlink_metadata(layer).map_err(Self::io(layer))?;
            if !md.is_dir() {
                return Err(ContextError::Io {
                    path: layer.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "a layer directory is not a directory"),
                });
            }
            top.get_or_insert_with(|| (layer.clone(), md));
            merged.push(i);
            if is_opaque(layer, &self.prefix) {
                break;
            }
        }
        let (host, md) = top.ok_or_else(|| ContextError::Io {
            path: PathBuf::new(),
            source: io::Error::new(io::ErrorKind::NotFound, "no layer directories"),
        })?;
        Ok(Node { host, md, merged })
    }

    /// The child `name` of the merged directory `dir` (at `rel`), if the view has one.
    fn child(&self, dir: &Node, rel: &[u8], name: &[u8]) -> Result<Option<Node>, ContextError> {
        let mut found: Option<Node> = None;
        for &i in &dir.merged {
            let path = self.layers[i].join(OsStr::from_bytes(rel)).join(OsStr::from_bytes(name));
            let md = match fs::symlink_metadata(&path) {
                Ok(md) => md,
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => continue,
                Err(e) => return Err(ContextError::Io { path, source: e }),
            };
            // A whiteout, or a non-directory under a directory, hides everything below it.
            if is_whiteout(&path, &md, &self.prefix) {
                break;
            }
            let is_dir = md.is_dir();
            let opaque = is_dir && is_opaque(&path, &self.prefix);
            match &mut found {
                None if !is_dir => return Ok(Some(Node { host: path, md, merged: Vec::new() })),
                None => found = Some(Node { host: path, md, merged: vec![i] }),
                Some(_) if !is_dir => break,
                Some(node) => node.merged.push(i),
            }
            if opaque {
                break;
            }
        }
        Ok(found)
    }

    /// The names in the merged directory `dir` (at `rel`), sorted bytewise,
    /// each with its entry.
    fn children(&self, dir: &Node, rel: &[u8]) -> Result<Vec<(BString, Node)>, ContextError> {
        let mut names = BTreeSet::new();
        for &i in &dir.merged {
            let path = self.layers[i].join(OsStr::from_bytes(rel));
            for entry in fs::read_dir(&path).map_err(Self::io(&path))? {
                let entry = entry.map_err(Self::io(&path))?;
                names.insert(entry.file_name().into_vec());
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(node) = self.child(dir, rel, &name)? {
                out.push((BString::from(name), node));
            }
        }
        Ok(out)
    }

    /// Resolves `rel` in the view: symlinks in non-final components are
    /// followed inside the view, the final one only if `follow_final`.
    /// Returns the real path in the view and its entry, or `None`.
    fn resolve(&self, rel: &[u8], follow_final: bool) -> Result<Option<(BString, Node)>, ContextError> {
        let mut pending: VecDeque<Vec<u8>> = split(rel).collect();
        // The directories entered so far, with their names (for `..`).
        let root = self.root()?;
        let mut stack: Vec<(Vec<u8>, Node)> = Vec::new();
        let mut links = 0usize;
        while let Some(part) = pending.pop_front() {
            match part.as_slice() {
                b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let (cur_rel, cur) = match stack.last() {
                Some((_, node)) => (names(&stack), node),
                None => (Vec::new(), &root),
            };
            if !cur.is_dir() {
                return Ok(None);
            }
            let Some(node) = self.child(cur, &cur_rel, &part)? else { return Ok(None) };
            let last = pending.is_empty();
            if node.md.file_type().is_symlink() && (!last || follow_final) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ContextError::SymlinkLoop { word: show(rel) });
                }
                let target = fs::read_link(&node.host).map_err(Self::io(&node.host))?.into_os_string().into_vec();
                if target.starts_with(b"/") {
                    stack.clear();
                }
                for p in split(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(p);
                }
                continue;
            }
            stack.push((part, node));
        }
        Ok(Some(match stack.last() {
            Some((_, node)) => (names(&stack).into(), node.clone()),
            None => (BString::default(), root),
        }))
    }

    /// The entry at the real (symlink-free) view path `rel`.
    fn at(&self, rel: &[u8]) -> Result<Option<Node>, ContextError> {
        Ok(self.resolve(rel, false)?.map(|(_, n)| n))
    }

    /// The view path of a host path this view handed out.
    fn rel_of(&self, host: &Path) -> Option<BString> {
        self.layers.iter().find_map(|l| host.strip_prefix(l).ok()).map(|p| BString::from(p.as_os_str().as_bytes()))
    }

    fn plain(&self, word: &str, cleaned: &str) -> Result<SourceMatch, ContextError> {
        match self.resolve(cleaned.as_bytes(), true)? {
            Some((_, node)) => Ok(SourceMatch { rel: cleaned.into(), is_dir: node.is_dir(), host: node.host }),
            None => Err(ContextError::SourceNotFound { word: word.to_string() }),
        }
    }

    /// Wildcards expand one component at a time against the merged
    /// directories, each candidate resolved from the root (as for a context).
    fn expand(&self, word: &str, cleaned: &str) -> Result<Vec<SourceMatch>, ContextError> {
        let parts: Vec<&str> = cleaned.split('/').collect();
        // (matched path, real path, entry)
        let mut frontier: Vec<(BString, BString, Node)> = vec![(BString::default(), BString::default(), self.root()?)];
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let glob = source_component(word, part)?;
            let mut next = Vec::new();
            for (matched, real, dir) in &frontier {
                let names: Vec<BString> = match &glob {
                    Some(g) => {
                        self.children(dir, real)?.into_iter().map(|(n, _)| n).filter(|n| g.is_match(n)).collect()
                    }
                    None => vec![unescape(part).into()],
                };
                for name in names {
                    let Some((real, node)) = self.resolve(&join(real, &name), true)? else { continue };
                    if !last && !node.is_dir() {
                        continue;
                    }
                    next.push((join(matched, &name), real, node));
                }
            }
            frontier = next;
        }
        // A wildcard that matches nothing names no source; the COPY decides
        // (BuildKit skips it, see exec::copy).
        let mut out: Vec<SourceMatch> =
            frontier.into_iter().map(|(rel, _, n)| SourceMatch { rel, is_dir: n.is_dir(), host: n.host }).collect();
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// Copies what `path` names in the view (a directory with everything
    /// below it, or one file; symlinks resolved inside the view) to the same
    /// path under `dest`, keeping modes and owners; for a bind mount's
    /// source where no overlay can stack the layers (vfs). Special files are
    /// left out, as a copy of a bind source leaves them out.
    pub fn materialize(&self, path: &str, dest: &Path) -> Result<(), ContextError> {
        use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
        let cleaned = clean(&format!("/{path}")).trim_start_matches('/').to_string();
        let m = self.plain(path, &cleaned)?;
        let top = dest.join(&cleaned);
        let mut entries = self.walk(&m)?;
        if m.is_dir {
            fs::create_dir_all(&top).map_err(Self::io(&top))?;
            let md = fs::symlink_metadata(&m.host).map_err(Self::io(&m.host))?;
            entries.push(ContextEntry {
                rel: BString::default(),
                host: m.host.clone(),
                metadata: md,
                link_target: None,
            });
        } else if let Some(parent) = top.parent() {
            fs::create_dir_all(parent).map_err(Self::io(parent))?;
        }
        // Directories get their modes last, so a read-only one is filled first.
        let mut dirs = Vec::new();
        for e in &entries {
            let to = if e.rel.is_empty() { top.clone() } else { top.join(OsStr::from_bytes(&e.rel)) };
            let ft = e.metadata.file_type();
            if ft.is_dir() {
                if !e.rel.is_empty() {
                    fs::create_dir(&to).map_err(Self::io(&to))?;
                }
                dirs.push((to.clone(), e.metadata.mode()));
            } else if let Some(target) = &e.link_target {
                symlink(target, &to).map_err(Self::io(&to))?;
            } else if ft.is_file() {
                fs::copy(&e.host, &to).map_err(Self::io(&to))?;
                fs::set_permissions(&to, fs::Permissions::from_mode(e.metadata.mode() & 0o7777))
                    .map_err(Self::io(&to))?;
            } else {
                continue;
            }
            lchown(&to, Some(e.metadata.uid()), Some(e.metadata.gid())).map_err(Self::io(&to))?;
            // chown clears setuid bits: set the mode again.
            if ft.is_file() {
                fs::set_permissions(&to, fs::Permissions::from_mode(e.metadata.mode() & 0o7777))
                    .map_err(Self::io(&to))?;
            }
        }
        for (dir, mode) in dirs.into_iter().rev() {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode & 0o7777)).map_err(Self::io(&dir))?;
        }
        Ok(())
    }

    fn walk_dir(
        &self,
        dir: &Node,
        rel: &[u8],
        out_rel: &[u8],
        out: &mut Vec<ContextEntry>,
    ) -> Result<(), ContextError> {
        for (name, node) in self.children(dir, rel)? {
            let orel = join(out_rel, &name);
            let link_target = match node.md.file_type().is_symlink() {
                true => Some(fs::read_link(&node.host).map_err(Self::io(&node.host))?),
                false => None,
            };
            let is_dir = node.is_dir();
            out.push(ContextEntry {
                rel: orel.clone(),
                host: node.host.clone(),
                metadata: node.md.clone(),
                link_target,
            });
            if is_dir {
                self.walk_dir(&node, &join(rel, &name), &orel, out)?;
            }
        }
        Ok(())
    }
}

impl SourceTree for LayerView {
    fn resolve_source(&self, word: &str) -> Result<Vec<SourceMatch>, ContextError> {
        // As for a context: the word is joined onto "/" and cleaned.
        let cleaned = clean(&format!("/{word}")).trim_start_matches('/').to_string();
        if has_wildcards(&cleaned) {
            self.expand(word, &cleaned)
        } else {
            self.plain(word, &cleaned).map(|m| vec![m])
        }
    }

    fn walk(&self, m: &SourceMatch) -> Result<Vec<ContextEntry>, ContextError> {
        let not_ours = || ContextError::Io {
            path: m.host.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a path of this image's layers"),
        };
        let rel = self.rel_of(&m.host).ok_or_else(not_ours)?;
        let node = self.at(&rel)?.ok_or_else(|| ContextError::SourceNotFound { word: show(&m.rel) })?;
        if !node.is_dir() {
            let link_target = match node.md.file_type().is_symlink() {
                true => Some(fs::read_link(&node.host).map_err(Self::io(&node.host))?),
                false => None,
            };
            return Ok(vec![ContextEntry { rel: BString::default(), host: node.host, metadata: node.md, link_target }]);
        }
        let mut out = Vec::new();
        self.walk_dir(&node, &rel, b"", &mut out)?;
        Ok(out)
    }
    fn host_of(&self, rel: &[u8]) -> Result<Option<PathBuf>, ContextError> {
        Ok(self.at(rel)?.map(|n| n.host))
    }
}

fn names(stack: &[(Vec<u8>, Node)]) -> Vec<u8> {
    stack.iter().map(|(n, _)| n.as_slice()).collect::<Vec<_>>().join(&b'/')
}

fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split_str("/").filter(|p| !p.is_empty()).map(<[u8]>::to_vec)
}

fn show(rel: &[u8]) -> String {
    format!("/{}", rel.to_str_lossy())
}

#[cfg(test)]
mod tests;
