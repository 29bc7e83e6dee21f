//! Where each source lands: the destination rules (a directory or a file,
//! trailing slashes, several sources) and the entries written for it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use bstr::{BString, ByteSlice};
use kiln_overlay::apply::OVERRIDE_STAT_XATTR;
use kiln_overlay::layer::entry_from_path;
use kiln_overlay::parse_override_stat;
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};

use crate::context::remote;
use crate::context::DockerIgnore;
use crate::context::{ContextEntry, SourceMatch};
use crate::plan::CopyStep;

use crate::exec::chmod::Chmod;
use crate::exec::tree::Tree;

use super::paths::*;
use super::*;

pub(super) struct Output<'a> {
    pub(super) entries: BTreeMap<BString, Planned>,
    /// (dev, inode) → first path written, to keep hardlinks as hardlinks.
    pub(super) links: HashMap<(u64, u64), BString>,
    /// A hard link's target → the paths linked to it.
    pub(super) linked: HashMap<BString, Vec<BString>>,
    pub(super) env: &'a CopyEnv<'a>,
    pub(super) tree: &'a Tree,
    /// The destination as written, made absolute with WORKDIR.
    pub(super) raw_dest: String,
    /// The destination ends in `/` or `.`: it is a directory.
    pub(super) dir_syntax: bool,
    /// How many sources became the destination itself (a file, not a directory).
    pub(super) onto_dest: usize,
}

impl Output<'_> {
    pub(super) fn put(&mut self, path: impl Into<BString>, mut meta: EntryMeta, data: Data) {
        let path = path.into();
        meta.path = path.clone();
        // A later source replaces an earlier one at the same path, as in
        // docker. Links to the file it replaces keep the old content (BuildKit
        // removes the file and writes a new one): the first of them takes it.
        if let Some(EntryKind::Hardlink(t)) = self.entries.get(&path).map(|p| &p.meta.kind) {
            // No longer one of t's links.
            if let Some(links) = self.linked.get_mut(t) {
                links.retain(|l| *l != path);
            }
        }
        if let Some(links) = self.linked.remove(&path).filter(|l| !l.is_empty()) {
            if let Some(old) = self.entries.get(&path).filter(|p| matches!(p.meta.kind, EntryKind::File)).cloned() {
                let heir = links[0].clone();
                for l in &links[1..] {
                    if let Some(p) = self.entries.get_mut(l) {
                        p.meta.kind = EntryKind::Hardlink(heir.clone());
                    }
                }
                let size = old.meta.size;
                if let Some(p) = self.entries.get_mut(&heir) {
                    p.meta.kind = EntryKind::File;
                    p.meta.size = size;
                    p.data = old.data;
                }
                for first in self.links.values_mut().filter(|f| **f == path) {
                    *first = heir.clone();
                }
                if links.len() > 1 {
                    self.linked.insert(heir, links[1..].to_vec());
                }
            }
        }
        self.entries.insert(path, Planned { meta, data });
    }

    /// What is at `path` now: what this step wrote there, else the image's entry.
    pub(super) fn kind_at(&self, path: &[u8]) -> Option<&EntryKind> {
        if let Some(p) = self.entries.get(path.as_bstr()) {
            return Some(&p.meta.kind);
        }
        path.to_str().ok().and_then(|p| self.tree.get(p)).map(|m| &m.kind)
    }

    pub(super) fn is_dir_at(&self, path: &[u8]) -> bool {
        path.is_empty() || matches!(self.kind_at(path), Some(EntryKind::Dir))
    }

    /// The destination resolved inside the image, through its symlinks and
    /// those this step already wrote.
    pub(super) fn dest(&self) -> Result<String, CopyError> {
        let entries = &self.entries;
        Ok(self.tree.resolve_with(&self.raw_dest, true, |p| entries.get(p.as_bytes()).map(|e| &e.meta.kind))?)
    }

    /// The destination as a directory (trailing slash, `--parents`, an
    /// archive to extract): made if missing, an error if something else.
    pub(super) fn dest_dir(&mut self, mode: u32) -> Result<String, CopyError> {
        let dest = self.dest()?;
        match self.kind_at(dest.as_bytes()) {
            _ if dest.is_empty() => {}
            None => {
                let meta = self.new_dir(mode, self.env.now);
                self.put(dest.as_str(), meta, Data::None);
            }
            Some(EntryKind::Dir) => {}
            Some(k) => return Err(CopyError::NotADirectory { path: dest, what: what(k) }),
        }
        Ok(dest)
    }

    /// Where a file source named `name` lands (BuildKit's prepareTargetDir):
    /// inside the destination when that is a directory, else at it.
    pub(super) fn file_target(&mut self, name: &[u8], shown: &str) -> Result<BString, CopyError> {
        let dest = if self.dir_syntax { self.dest_dir(self.created_mode())? } else { self.dest()? };
        let target = if self.is_dir_at(dest.as_bytes()) {
            join_bytes(dest.as_bytes(), name)
        } else {
            self.onto_dest += 1;
            BString::from(dest)
        };
        if matches!(self.kind_at(&target), Some(EntryKind::Dir)) {
            return Err(CopyError::FileOntoDir {
                source_name: shown.to_string(),
                path: target.to_str_lossy().into_owned(),
            });
        }
        Ok(target)
    }

    /// The directory a directory source's contents go into: the destination,
    /// made if missing (mode 0755 or the octal --chmod, owned by root or
    /// --chown). Made or not, it gets the source directory's mtime, as
    /// BuildKit's copy leaves it; its mode and owner stay.
    pub(super) fn directory_root(&mut self, m: &SourceMatch, shown: &str) -> Result<BString, CopyError> {
        let dest = if self.dir_syntax { self.dest_dir(self.created_mode())? } else { self.dest()? };
        if dest.is_empty() {
            return Ok(BString::default());
        }
        let md = std::fs::metadata(&m.host).map_err(|source| CopyError::Read { path: m.host.clone(), source })?;
        let mut meta = match self.kind_at(dest.as_bytes()) {
            None => self.new_dir(self.created_mode(), 0),
            Some(EntryKind::Dir) => match self.entries.get(dest.as_bytes().as_bstr()) {
                Some(p) => p.meta.clone(),
                None => self.tree.get(&dest).cloned().expect("kind_at found it in the tree"),
            },
            Some(k) => {
                return Err(CopyError::DirOntoNonDir { source_name: shown.to_string(), path: dest, what: what(k) });
            }
        };
        meta.mtime = md.mtime();
        self.put(dest.as_str(), meta, Data::None);
        Ok(BString::from(dest))
    }

    /// A directory source: its contents, not itself, go into the destination.
    pub(super) fn directory(&mut self, m: &SourceMatch, exclude: &Option<DockerIgnore>) -> Result<(), CopyError> {
        let root = self.directory_root(m, &show(&m.rel))?;
        for e in self.env.source.walk(m)? {
            // Patterns are relative to the directory copied, as .dockerignore's to the context.
            if e.rel.is_empty() || excluded(exclude, &e.rel) {
                continue;
            }
            self.tree_entry(&join_bytes(&root, &e.rel), &e, &m.rel)?;
        }
        Ok(())
    }

    /// A file source (a symlink named as the source is followed: its target is copied under the link's name).
    pub(super) fn file(
        &mut self,
        step: &CopyStep,
        m: &SourceMatch,
        exclude: &Option<DockerIgnore>,
    ) -> Result<(), CopyError> {
        if excluded(exclude, &m.rel) {
            return Ok(());
        }
        if step.is_add && step.unpack && self.unpack_if_archive(m)? {
            return Ok(());
        }
        let target = self.file_target(basename(&m.rel), &show(&m.rel))?;
        for e in self.env.source.walk(m)? {
            self.entry(&target, &e)?;
        }
        Ok(())
    }

    /// `--parents`: the source's path below its pivot is kept under the
    /// destination, which is always a directory. Directories on that path
    /// that are missing take the source directories' metadata, as BuildKit
    /// copies them.
    pub(super) fn with_parents(
        &mut self,
        m: &SourceMatch,
        pivot: usize,
        exclude: &Option<DockerIgnore>,
    ) -> Result<(), CopyError> {
        let parts: Vec<&[u8]> = m.rel.split_str("/").filter(|c| !c.is_empty()).collect();
        let kept = &parts[pivot.min(parts.len())..];
        // Patterns are relative to the pivot, where BuildKit starts copying.
        let kept_rel = BString::from(kept.join(&b'/'));
        if !m.is_dir && excluded(exclude, &kept_rel) {
            return Ok(());
        }
        let dest = self.dest_dir(self.created_mode())?;
        let mut rel = BString::from(parts[..pivot.min(parts.len())].join(&b'/'));
        let mut target = BString::from(dest.as_str());
        for (i, part) in kept.iter().enumerate() {
            rel = join_bytes(&rel, part);
            target = join_bytes(&target, part);
            let last = i + 1 == kept.len();
            if last && !m.is_dir {
                break;
            }
            match self.kind_at(&target) {
                None => {
                    // The matched directory itself and those above it, from the source.
                    let host = self.env.source.host_of(&rel)?.unwrap_or_else(|| m.host.clone());
                    let md =
                        std::fs::metadata(&host).map_err(|source| CopyError::Read { path: host.clone(), source })?;
                    let e =
                        ContextEntry { rel: BString::default(), host: host.clone(), metadata: md, link_target: None };
                    if e.metadata.is_dir() {
                        let meta = self.source_meta(&target, &e)?;
                        self.put(target.clone(), EntryMeta { kind: EntryKind::Dir, ..meta }, Data::None);
                    }
                }
                Some(EntryKind::Dir) => {}
                Some(k) => {
                    return Err(CopyError::DirOntoNonDir {
                        source_name: show(&m.rel),
                        path: target.to_str_lossy().into_owned(),
                        what: what(k),
                    })
                }
            }
        }
        if m.is_dir {
            for e in self.env.source.walk(m)? {
                if e.rel.is_empty() || excluded(exclude, &join_bytes(&kept_rel, &e.rel)) {
                    continue;
                }
                self.tree_entry(&join_bytes(&target, &e.rel), &e, &m.rel)?;
            }
        } else {
            if matches!(self.kind_at(&target), Some(EntryKind::Dir)) {
                return Err(CopyError::FileOntoDir {
                    source_name: show(&m.rel),
                    path: target.to_str_lossy().into_owned(),
                });
            }
            for e in self.env.source.walk(m)? {
                self.entry(&target, &e)?;
            }
        }
        Ok(())
    }

    /// An entry inside a copied directory: directories merge with the
    /// image's, a file or link replaces a file or link, anything else is
    /// BuildKit's error.
    pub(super) fn tree_entry(&mut self, target: &[u8], e: &ContextEntry, base: &[u8]) -> Result<(), CopyError> {
        let is_dir = e.metadata.is_dir();
        let conflict = match self.kind_at(target) {
            Some(EntryKind::Dir) => !is_dir,
            Some(_) => is_dir,
            None => false,
        };
        if conflict {
            let source_name = show(&join_bytes(base, &e.rel));
            let path = target.to_str_lossy().into_owned();
            return Err(match self.kind_at(target) {
                Some(k) if is_dir => CopyError::DirOntoNonDir { source_name, path, what: what(k) },
                _ => CopyError::FileOntoDir { source_name, path },
            });
        }
        self.entry(target, e)
    }

    /// A file downloaded for ADD: mode 0600 and the server's Last-Modified
    /// time (else the epoch), as BuildKit does; never unpacked.
    pub(super) fn download(&mut self, target: BString, d: &remote::Download) {
        let meta = self.owned(EntryMeta {
            path: Default::default(),
            kind: EntryKind::File,
            mode: self.env.chmod.map_or(0o600, |c| c.apply(0o600, false)),
            uid: 0,
            gid: 0,
            mtime: d.mtime.unwrap_or(0),
            size: d.size,
            xattrs: BTreeMap::new(),
        });
        self.put(target, meta, Data::Host(d.path.clone()));
    }

    /// The mode of a directory this step makes: 0755, or the octal --chmod
    /// (BuildKit makes missing directories with it; a symbolic one is for the copied entries only).
    pub(super) fn created_mode(&self) -> u32 {
        match self.env.chmod {
            Some(Chmod::Octal(m)) => m & 0o777,
            _ => 0o755,
        }
    }

    pub(super) fn new_dir(&self, mode: u32, mtime: i64) -> EntryMeta {
        self.owned(EntryMeta { mode, ..new_dir(mtime) })
    }

    /// One file, directory, symlink or special file from the source tree.
    pub(super) fn entry(&mut self, target: &[u8], e: &ContextEntry) -> Result<(), CopyError> {
        let mut meta = self.source_meta(target, e)?;
        let md = &e.metadata;
        let data = match meta.kind {
            EntryKind::File => {
                if md.nlink() > 1 {
                    let key = (md.dev(), md.ino());
                    // The same file copied again to the same path (`COPY d d /x/`) stays a file, not a link to itself.
                    if let Some(first) = self.links.get(&key).filter(|f| f.as_slice() != target).cloned() {
                        self.linked.entry(first.clone()).or_default().push(target.into());
                        meta.kind = EntryKind::Hardlink(first);
                        meta.size = 0;
                    } else {
                        self.links.insert(key, target.into());
                    }
                }
                if md.file_type().is_socket() {
                    Data::Bytes(Vec::new())
                } else if matches!(meta.kind, EntryKind::File) {
                    Data::Host(e.host.clone())
                } else {
                    Data::None
                }
            }
            _ => Data::None,
        };
        self.put(target, meta, data);
        Ok(())
    }

    /// A source entry's metadata as it lands: --chmod applied (never to
    /// links), owned by --chown, else by root from a local directory or by
    /// its own owner from an image or stage.
    pub(super) fn source_meta(&self, target: &[u8], e: &ContextEntry) -> Result<EntryMeta, CopyError> {
        let read_err = |source| CopyError::Read { path: e.host.clone(), source };
        let mut meta = if e.metadata.file_type().is_socket() {
            // A layer cannot hold a socket: BuildKit's context transfer sends
            // it as an empty regular file (testCopySocket).
            EntryMeta {
                path: target.into(),
                kind: EntryKind::File,
                mode: e.metadata.mode() & 0o7777,
                uid: u64::from(e.metadata.uid()),
                gid: u64::from(e.metadata.gid()),
                mtime: e.metadata.mtime(),
                size: 0,
                xattrs: BTreeMap::new(),
            }
        } else {
            entry_from_path(&e.host, target).map_err(read_err)?
        };
        // Owner bookkeeping of an unpacked `--from` image (a single-id
        // namespace could not give the file its owner), never content.
        if let Some(recorded) = meta.xattrs.remove(OVERRIDE_STAT_XATTR) {
            if let Some((uid, gid, mode)) = parse_override_stat(&recorded) {
                meta.uid = uid;
                meta.gid = gid;
                meta.mode = mode & 0o7777;
            }
        }
        let is_dir = matches!(meta.kind, EntryKind::Dir);
        if !matches!(meta.kind, EntryKind::Symlink(_) | EntryKind::Hardlink(_)) {
            if let Some(c) = self.env.chmod {
                meta.mode = c.apply(meta.mode, is_dir);
            }
        }
        Ok(match (self.env.owner, self.env.keep_owners) {
            (None, true) => meta,
            _ => self.owned(meta),
        })
    }

    /// Owned by --chown, else by root.
    pub(super) fn owned(&self, mut meta: EntryMeta) -> EntryMeta {
        let (uid, gid) = self.env.owner.unwrap_or((0, 0));
        meta.uid = uid;
        meta.gid = gid;
        meta
    }
}
