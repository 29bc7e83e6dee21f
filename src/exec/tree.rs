//! An in-memory index of an image's filesystem, built by reading its layer
//! tars once. COPY and ADD need it to know what already exists at the
//! destination (a directory? a symlink to follow?) and to read /etc/passwd
//! and /etc/group for `--chown` names, without unpacking anything.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use bstr::ByteSlice;
use kiln_overlay::compress;
use kiln_overlay::reader::Reader;
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};
use kiln_overlay::whiteout::{WH_OPAQUE, WH_PREFIX};

use crate::image::manifest::Descriptor;
use crate::store::Store;

/// Files whose content COPY/ADD may need (for `--chown` names).
const WANTED: &[&str] = &["etc/passwd", "etc/group"];

/// Symlink hops allowed while resolving one path, as the kernel's MAXSYMLINKS.
const MAX_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("read layer {digest}")]
    Layer {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open layer {digest}")]
    Store {
        digest: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("too many levels of symbolic links resolving /{0} in the image")]
    SymlinkLoop(String),
}

#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, EntryMeta>,
    files: HashMap<String, Vec<u8>>,
}

impl Tree {
    /// Replays the layers in order, honouring OCI whiteouts.
    pub fn from_layers(store: &Store, layers: &[Descriptor]) -> Result<Tree, TreeError> {
        let mut tree = Tree::default();
        for layer in layers {
            let file = store
                .open_blob(&layer.digest)
                .map_err(|source| TreeError::Store { digest: layer.digest.clone(), source })?;
            tree.apply_layer(file).map_err(|source| TreeError::Layer { digest: layer.digest.clone(), source })?;
        }
        Ok(tree)
    }

    /// Applies one (possibly compressed) layer tar.
    pub fn apply_layer<R: Read + 'static>(&mut self, blob: R) -> std::io::Result<()> {
        let (_, plain) = compress::decompress(blob)?;
        let mut reader = Reader::new(plain);
        // Whiteouts act on the lower layers only, so collect this layer first.
        let mut added: Vec<(String, EntryMeta)> = Vec::new();
        let mut contents: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        while let Some(entry) = reader.next_entry()? {
            // The same rule the applier enforces: such a layer never reaches a RUN either.
            entry.check_inside().map_err(|reason| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("layer entry {:?} {reason}", entry.display()),
                )
            })?;
            let Some(meta) = entry.meta() else { continue };
            // The tree is keyed by text; a name that is not UTF-8 is indexed lossily here (the layer keeps it exact).
            let path = meta.path.to_str_lossy().into_owned();
            if path.is_empty() {
                continue;
            }
            let (dir, name) = split(&path);
            if name == WH_OPAQUE {
                opaque.push(dir.to_string());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
                removed.push(join(dir, hidden));
                continue;
            }
            if WANTED.contains(&path.as_str()) {
                if matches!(meta.kind, EntryKind::File) {
                    let mut buf = Vec::new();
                    reader.data().read_to_end(&mut buf)?;
                    contents.push((path.clone(), Some(buf)));
                } else {
                    contents.push((path.clone(), None));
                }
            }
            added.push((path, meta));
        }
        for dir in opaque {
            self.remove_under(&dir);
        }
        for path in removed {
            self.remove(&path);
        }
        for (path, meta) in added {
            if let EntryKind::Hardlink(target) = &meta.kind {
                // A hardlink shares its target's metadata.
                let target = clean(&target.to_string());
                if let Some(t) = self.nodes.get(&target).cloned() {
                    if let Some(c) = self.files.get(&target).cloned() {
                        self.files.insert(path.clone(), c);
                    }
                    self.insert(path, EntryMeta { path: Default::default(), ..t });
                    continue;
                }
            }
            self.insert(path, meta);
        }
        for (path, content) in contents {
            match content {
                Some(c) => self.files.insert(path, c),
                None => self.files.remove(&path),
            };
        }
        Ok(())
    }

    fn insert(&mut self, path: String, meta: EntryMeta) {
        // Replacing a directory with a non-directory removes what it held.
        if !matches!(meta.kind, EntryKind::Dir) {
            self.remove_under(&path);
        }
        self.nodes.insert(path, meta);
    }

    fn remove(&mut self, path: &str) {
        self.remove_under(path);
        self.nodes.remove(path);
        self.files.remove(path);
    }

    fn remove_under(&mut self, dir: &str) {
        let prefix = if dir.is_empty() { String::new() } else { format!("{}/", dir) };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
            self.files.remove(&k);
        }
    }

    /// Records an entry a COPY/ADD step just wrote, so later steps see it.
    /// `content` is asked for only for the files `--chown` reads.
    pub fn record(&mut self, meta: &EntryMeta, content: impl FnOnce() -> Option<Vec<u8>>) {
        let path = clean(&meta.path.to_string());
        if WANTED.contains(&path.as_str()) {
            match content() {
                Some(c) if matches!(meta.kind, EntryKind::File) => self.files.insert(path.clone(), c),
                _ => self.files.remove(&path),
            };
        }
        self.insert(path, meta.clone());
    }

    pub fn get(&self, path: &str) -> Option<&EntryMeta> {
        self.nodes.get(&clean(path))
    }

    pub fn is_dir(&self, path: &str) -> bool {
        matches!(self.get(path).map(|m| &m.kind), Some(EntryKind::Dir))
    }

    /// The content of /etc/passwd or /etc/group, if the image has one.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(&clean(path)).map(Vec::as_slice)
    }

    /// Resolves `path` inside the image: symlinks in every component
    /// (the last one too when `follow_last`) are followed, absolute targets
    /// and `..` never leave the image root. Returns a clean relative path.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, TreeError> {
        self.resolve_with(path, follow_last, |_| None)
    }

    /// [`Tree::resolve`] with entries not in the tree yet: `pending(path)` gives the kind of an entry the
    /// current step is writing (it hides the tree's).
    pub fn resolve_with<'p>(
        &self,
        path: &str,
        follow_last: bool,
        pending_kind: impl Fn(&str) -> Option<&'p EntryKind>,
    ) -> Result<String, TreeError> {
        let lookup = |p: &str| pending_kind(p).or_else(|| self.nodes.get(p).map(|m| &m.kind));
        let mut pending: Vec<String> = components(path).into_iter().rev().collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(comp) = pending.pop() {
            if comp == ".." {
                done.pop();
                continue;
            }
            let candidate = if done.is_empty() { comp.clone() } else { format!("{}/{}", done.join("/"), comp) };
            let last = pending.is_empty();
            match lookup(&candidate) {
                Some(EntryKind::Symlink(target)) if follow_last || !last => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(TreeError::SymlinkLoop(clean(path)));
                    }
                    if target.starts_with(b"/") {
                        done.clear();
                    }
                    for c in components(&target.to_string()).into_iter().rev() {
                        pending.push(c);
                    }
                }
                _ => done.push(comp),
            }
        }
        Ok(done.join("/"))
    }
}

/// `./a//b/` → `a/b`; a leading `/` is dropped. `..` is kept for `resolve`.
pub fn clean(path: &str) -> String {
    components(path).join("/")
}

fn components(path: &str) -> Vec<String> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect()
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{}", dir, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Tree {
        fn record_meta(&mut self, m: &EntryMeta) {
            self.record(m, || None)
        }
    }

    fn meta(path: &str, kind: EntryKind) -> EntryMeta {
        EntryMeta { path: path.into(), kind, mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0, xattrs: BTreeMap::new() }
    }

    #[test]
    fn resolve_follows_symlinks_inside_root() {
        let mut t = Tree::default();
        t.record_meta(&meta("usr", EntryKind::Dir));
        t.record_meta(&meta("usr/bin", EntryKind::Dir));
        t.record_meta(&meta("bin", EntryKind::Symlink("usr/bin".into())));
        t.record_meta(&meta("escape", EntryKind::Symlink("../../../etc".into())));
        t.record_meta(&meta("abs", EntryKind::Symlink("/usr".into())));
        assert_eq!(t.resolve("/bin/sh", true).unwrap(), "usr/bin/sh");
        assert_eq!(t.resolve("escape/passwd", true).unwrap(), "etc/passwd");
        assert_eq!(t.resolve("abs/bin", true).unwrap(), "usr/bin");
        assert_eq!(t.resolve("bin", false).unwrap(), "bin");
        assert_eq!(t.resolve("bin", true).unwrap(), "usr/bin");
    }

    #[test]
    fn resolve_detects_loops() {
        let mut t = Tree::default();
        t.record_meta(&meta("a", EntryKind::Symlink("b".into())));
        t.record_meta(&meta("b", EntryKind::Symlink("a".into())));
        assert!(matches!(t.resolve("a/x", true), Err(TreeError::SymlinkLoop(_))));
    }

    #[test]
    fn replacing_dir_with_file_drops_children() {
        let mut t = Tree::default();
        t.record_meta(&meta("d", EntryKind::Dir));
        t.record_meta(&meta("d/x", EntryKind::File));
        t.record_meta(&meta("d", EntryKind::File));
        assert!(t.get("d/x").is_none());
    }

    #[test]
    fn whiteouts_remove_lower_entries() {
        let mut lower = tar::Builder::new(Vec::new());
        for (p, data) in [("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), ("d/a", "a"), ("d/b", "b"), ("gone", "g")] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            lower.append_data(&mut h, p, data.as_bytes()).unwrap();
        }
        let lower = lower.into_inner().unwrap();
        let mut upper = tar::Builder::new(Vec::new());
        for p in [".wh.gone", "d/.wh..wh..opq", "d/c"] {
            let mut h = tar::Header::new_ustar();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            upper.append_data(&mut h, p, &[][..]).unwrap();
        }
        let upper = upper.into_inner().unwrap();
        let mut t = Tree::default();
        t.apply_layer(std::io::Cursor::new(lower)).unwrap();
        t.apply_layer(std::io::Cursor::new(upper)).unwrap();
        assert!(t.get("gone").is_none());
        assert!(t.get("d/a").is_none());
        assert!(t.get("d/c").is_some());
        assert_eq!(t.file("/etc/passwd").unwrap(), b"root:x:0:0::/root:/bin/sh\n");
    }
}
