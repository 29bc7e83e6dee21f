//! COPY and ADD: decide what goes where by docker's rules, then write the
//! entries as one layer. Nothing touches the image's files: the destination
//! is looked up in the stage's `Tree`, so symlinks in the image resolve inside
//! the image and never on the host.
//!
//! Paths from the context are bytes: a name that is not UTF-8 goes into the
//! layer exactly as it is on disk. The destination comes from the Dockerfile
//! and is text.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};
use kiln_overlay::apply::OVERRIDE_STAT_XATTR;
use kiln_overlay::compress;
use kiln_overlay::reader::Reader;
use kiln_overlay::layer::entry_from_path;
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};

use crate::context::DockerIgnore;
use crate::context::{ContextEntry, SourceMatch, SourceTree};
use crate::context::remote;
use crate::plan::CopyStep;
use std::sync::Arc;

use super::chmod::Chmod;
use super::fetch::{Fetched, Fetcher};
use super::tree::{clean, Tree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Source(#[from] crate::context::ContextError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("when using {0} with more than one source file, the destination must be a directory and end with a /")]
    MultipleSourcesNeedDir(&'static str),
    #[error("ADD from a URL ({0}) is not supported here: ADD it from the build context")]
    Url(String),
    #[error("COPY cannot take a URL ({0}) as a source: use ADD")]
    UrlInCopy(String),
    /// Names the URL and what failed itself.
    #[error(transparent)]
    Fetch(#[from] crate::context::remote::RemoteError),
    #[error("the checksum of {url} does not match: expected {expected}, got {actual}")]
    ChecksumMismatch { url: String, expected: String, actual: String },
    #[error("--checksum is only supported for ADD from a URL, not for the local source {0}")]
    ChecksumLocal(String),
    #[error("invalid --exclude pattern")]
    Exclude(#[source] crate::context::IgnoreError),
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("extract archive {path}")]
    Archive {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("archive {archive} has an entry that leaves the destination: {entry}")]
    ArchiveEscape { archive: String, entry: String },
    #[error("ADD {archive}: entry {entry:?} {reason}")]
    ArchiveEntry { archive: String, entry: String, reason: String },
    #[error("no source files were specified")]
    NoSources,
}

/// Where an entry's bytes come from when the layer is written.
#[derive(Debug, Clone)]
pub enum Data {
    None,
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Planned {
    pub meta: EntryMeta,
    pub data: Data,
}

/// What a COPY/ADD needs besides the step itself.
pub struct CopyEnv<'a> {
    /// The build context, or the rootfs of the `--from` stage or image.
    pub source: &'a dyn SourceTree,
    /// The current WORKDIR.
    pub workdir: &'a str,
    pub owner: Option<(u64, u64)>,
    /// Without `owner`, keep each source entry's owner (`COPY --from` a
    /// stage or image, as BuildKit does) instead of making it root's.
    pub keep_owners: bool,
    pub chmod: Option<&'a Chmod>,
    /// mtime for entries kiln creates (missing parent dirs, heredocs).
    pub now: i64,
    /// Scratch space for unpacking ADD archives.
    pub scratch: &'a Path,
    /// Fetches ADD sources that are URLs; `None` refuses them.
    pub fetcher: Option<&'a Fetcher>,
}

/// Works out the entries of the layer a COPY/ADD step writes, sorted by path.
pub fn plan_copy(step: &CopyStep, env: &CopyEnv, tree: &Tree) -> Result<BTreeMap<BString, Planned>, CopyError> {
    let keyword = if step.is_add { "ADD" } else { "COPY" };
    let exclude = if step.exclude.is_empty() {
        None
    } else {
        Some(DockerIgnore::parse(&step.exclude.join("\n")).map_err(CopyError::Exclude)?)
    };

    let mut matches: Vec<SourceMatch> = Vec::new();
    let mut fetched: Vec<Arc<Fetched>> = Vec::new();
    for word in &step.sources {
        if remote::is_remote(word) {
            fetched.push(fetch_url(step, env, word)?);
            continue;
        }
        if step.checksum.is_some() {
            return Err(CopyError::ChecksumLocal(word.clone()));
        }
        matches.extend(env.source.resolve_source(word)?);
    }
    let source_count = matches.len() + fetched.len() + step.heredocs.len();
    if source_count == 0 {
        return Err(CopyError::NoSources);
    }

    let raw_dest = if step.dest.starts_with('/') {
        step.dest.clone()
    } else {
        format!("{}/{}", env.workdir.trim_end_matches('/'), step.dest)
    };
    let dir_syntax = raw_dest.ends_with('/') || raw_dest.ends_with("/.") || step.dest == ".";
    let dest = tree.resolve(&raw_dest, true)?;
    let multiple = source_count > 1;
    if multiple && !dir_syntax && !tree.is_dir(&dest) {
        return Err(CopyError::MultipleSourcesNeedDir(keyword));
    }
    let dest_is_dir = dir_syntax || multiple || tree.is_dir(&dest) || dest.is_empty();

    let mut out = Output { entries: BTreeMap::new(), links: HashMap::new(), env, tree };
    let dest_b = dest.as_bytes();
    for m in &matches {
        let rel_root = if step.parents { join_bytes(dest_b, &m.rel) } else { BString::from(dest_b) };
        if m.is_dir {
            out.dir(&rel_root, m)?;
            for e in env.source.walk(m)? {
                if e.rel.is_empty() {
                    continue;
                }
                if excluded(&exclude, &m.rel, &e.rel) {
                    continue;
                }
                out.entry(&join_bytes(&rel_root, &e.rel), &e)?;
            }
        } else {
            let name = basename(&m.rel);
            if excluded(&exclude, b"", &m.rel) {
                continue;
            }
            let target = match (step.parents, dest_is_dir) {
                (true, _) => join_bytes(dest_b, &m.rel),
                (false, true) => join_bytes(dest_b, name),
                (false, false) => BString::from(dest_b),
            };
            if step.is_add && step.unpack && is_archive(&m.host)? {
                let archive_dir = if step.parents { BString::from(parent(&target)) } else { BString::from(dest_b) };
                out.ensure_dir(&archive_dir);
                // The archive extraction still takes text; names there are its own business.
                out.unpack(&m.host, &m.rel.to_str_lossy(), &archive_dir.to_str_lossy())?;
                continue;
            }
            for e in env.source.walk(m)? {
                out.entry(&target, &e)?;
            }
        }
    }
    for f in &fetched {
        match &**f {
            Fetched::File(d) => {
                let target = if dest_is_dir { join_bytes(dest_b, d.name.as_bytes()) } else { BString::from(dest_b) };
                out.download(target, d);
            }
            Fetched::Tree { ctx, .. } => {
                // A repository always lands as the contents of the destination directory.
                for m in ctx.resolve_source(".")? {
                    out.dir(dest_b, &m)?;
                    for e in ctx.walk(&m)? {
                        if !e.rel.is_empty() {
                            out.entry(&join_bytes(dest_b, &e.rel), &e)?;
                        }
                    }
                }
            }
        }
    }
    for doc in &step.heredocs {
        let target = if dest_is_dir { join_bytes(dest_b, doc.name.as_bytes()) } else { BString::from(dest_b) };
        let mode = env.chmod.map_or(0o644, |c| c.apply(0o644, false));
        let (uid, gid) = env.owner.unwrap_or((0, 0));
        let meta = EntryMeta {
            path: target.clone(),
            kind: EntryKind::File,
            mode,
            uid,
            gid,
            mtime: env.now,
            size: doc.content.len() as u64,
            xattrs: BTreeMap::new(),
        };
        out.put(target, meta, Data::Bytes(doc.content.clone().into_bytes()));
    }
    let mut entries = out.entries;
    order_hardlinks(&mut entries);
    add_parents(&mut entries, tree, env);
    Ok(entries)
}

/// The owner in an `OVERRIDE_STAT_XATTR` value (`uid:gid:0mode[:type]`).
fn recorded_owner(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A tar hardlink must follow its target. Links were found in walk order,
/// which differs from the layer's path order, so make the first path of each
/// group (in layer order) the file and point the others at it.
fn order_hardlinks(entries: &mut BTreeMap<BString, Planned>) {
    let mut groups: BTreeMap<BString, Vec<BString>> = BTreeMap::new();
    for (path, p) in entries.iter() {
        if let EntryKind::Hardlink(target) = &p.meta.kind {
            groups.entry(target.clone()).or_default().push(path.clone());
        }
    }
    for (target, links) in groups {
        let first = links.iter().min().expect("group has a link").clone();
        if first > target || !entries.contains_key(&target) {
            continue;
        }
        let file = entries.remove(&target).expect("checked above");
        for link in &links {
            if let Some(l) = entries.get_mut(link) {
                l.meta.kind = EntryKind::Hardlink(first.clone());
            }
        }
        let mut primary = file.clone();
        primary.meta.path = first.clone();
        entries.insert(first.clone(), primary);
        let mut moved = file;
        moved.meta.kind = EntryKind::Hardlink(first.clone());
        moved.meta.size = 0;
        moved.data = Data::None;
        entries.insert(target, moved);
    }
}

struct Output<'a> {
    entries: BTreeMap<BString, Planned>,
    /// (dev, inode) → first path written, to keep hardlinks as hardlinks.
    links: HashMap<(u64, u64), BString>,
    env: &'a CopyEnv<'a>,
    tree: &'a Tree,
}

impl Output<'_> {
    fn put(&mut self, path: impl Into<BString>, mut meta: EntryMeta, data: Data) {
        let path = path.into();
        meta.path = path.clone();
        // A later source replaces an earlier one at the same path, as in docker.
        self.entries.insert(path, Planned { meta, data });
    }

    /// The destination directory a directory source's contents go into.
    fn dir(&mut self, path: &[u8], m: &SourceMatch) -> Result<(), CopyError> {
        if path.is_empty() || tree_is_dir(self.tree, path) {
            return Ok(());
        }
        let md = std::fs::metadata(&m.host).map_err(|source| CopyError::Read { path: m.host.clone(), source })?;
        let mode = md.mode() & 0o7777;
        let meta = self.owned_as(
            EntryMeta {
                path: Default::default(),
                kind: EntryKind::Dir,
                mode: self.env.chmod.map_or(mode, |c| c.apply(mode, true)),
                uid: 0,
                gid: 0,
                mtime: md.mtime(),
                size: 0,
                xattrs: BTreeMap::new(),
            },
            (u64::from(md.uid()), u64::from(md.gid())),
        );
        self.put(path, meta, Data::None);
        Ok(())
    }

    /// A file downloaded for ADD: mode 0600 and the server's Last-Modified
    /// time (else the epoch), as BuildKit does; never unpacked.
    fn download(&mut self, target: BString, d: &remote::Download) {
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

    fn ensure_dir(&mut self, path: &[u8]) {
        if path.is_empty() || tree_is_dir(self.tree, path) || self.entries.contains_key(path.as_bstr()) {
            return;
        }
        let meta = self.owned(new_dir(self.env.now));
        self.put(path, meta, Data::None);
    }

    /// One file, directory, symlink or special file from the source tree.
    fn entry(&mut self, target: &[u8], e: &ContextEntry) -> Result<(), CopyError> {
        let read_err = |source| CopyError::Read { path: e.host.clone(), source };
        let mut meta = entry_from_path(&e.host, target).map_err(read_err)?;
        // Owner bookkeeping of an unpacked `--from` image, never content: the
        // owner it records (one the user namespace could not map) is the source's.
        let recorded = meta.xattrs.remove(OVERRIDE_STAT_XATTR).and_then(|v| recorded_owner(&v));
        let source_owner = recorded.unwrap_or((meta.uid, meta.gid));
        let md = &e.metadata;
        let data = match meta.kind {
            EntryKind::File => {
                if md.nlink() > 1 {
                    let key = (md.dev(), md.ino());
                    if let Some(first) = self.links.get(&key) {
                        meta.kind = EntryKind::Hardlink(first.clone());
                        meta.size = 0;
                    } else {
                        self.links.insert(key, target.into());
                    }
                }
                if matches!(meta.kind, EntryKind::File) {
                    Data::Host(e.host.clone())
                } else {
                    Data::None
                }
            }
            _ => Data::None,
        };
        let is_dir = matches!(meta.kind, EntryKind::Dir);
        if !matches!(meta.kind, EntryKind::Symlink(_) | EntryKind::Hardlink(_)) {
            if let Some(c) = self.env.chmod {
                meta.mode = c.apply(meta.mode, is_dir);
            }
        }
        let meta = self.owned_as(meta, source_owner);
        self.put(target, meta, data);
        Ok(())
    }

    /// `meta` owned by --chown's owner, else by `source` where sources keep
    /// their owners, else by root.
    fn owned_as(&self, mut meta: EntryMeta, source: (u64, u64)) -> EntryMeta {
        let (uid, gid) = match (self.env.owner, self.env.keep_owners) {
            (Some(owner), _) => owner,
            (None, true) => source,
            (None, false) => (0, 0),
        };
        meta.uid = uid;
        meta.gid = gid;
        meta
    }

    fn owned(&self, mut meta: EntryMeta) -> EntryMeta {
        let (uid, gid) = self.env.owner.unwrap_or((0, 0));
        meta.uid = uid;
        meta.gid = gid;
        meta
    }

    /// ADD of a local archive: its entries land under `dest`, keeping the
    /// archive's own owners and modes unless --chown/--chmod say otherwise.
    ///
    /// Docker extracts into the container's root, so an entry whose path goes
    /// through a symlink (one the image has, or one this archive made earlier,
    /// `link -> /etc` then `link/file`) lands where the symlink leads inside
    /// the image; the layer gets that resolved path, which every later step
    /// can apply. Hard-link targets are taken relative to the extraction
    /// directory, as docker takes them (`/etc/passwd` is `<dest>/etc/passwd`),
    /// and must be a file this step writes: a layer cannot link to another.
    fn unpack(&mut self, host: &Path, rel: &str, dest: &str) -> Result<(), CopyError> {
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
                    let inner_link = safe_archive_path(&link)
                        .filter(|l| !l.is_empty())
                        .ok_or_else(|| refuse(&name, format!("is a hard link to {link:?}, outside the extraction directory")))?;
                    let (link_dir, link_last) = split_name(&inner_link);
                    let resolved = self
                        .archive_target(&join(dest, link_dir), link_last)
                        .map_err(|r| refuse(&name, r))?;
                    let linked = match self.entries.get(resolved.as_bytes()).map(|p| &p.meta.kind) {
                        Some(EntryKind::Hardlink(first)) => first.clone(),
                        Some(EntryKind::Dir) => return Err(refuse(&name, format!("is a hard link to the directory /{resolved}"))),
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
            if let Some(c) = self.env.chmod {
                if !matches!(meta.kind, EntryKind::Symlink(_) | EntryKind::Hardlink(_)) {
                    meta.mode = c.apply(meta.mode, matches!(meta.kind, EntryKind::Dir));
                }
            }
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
    fn archive_target(&self, dir: &str, last: &str) -> Result<String, String> {
        let entries = &self.entries;
        let resolved = self
            .tree
            .resolve_with(dir, true, |p| entries.get(p.as_bytes()).map(|e| &e.meta.kind))
            .map_err(|e| e.to_string())?;
        let mut prefix = String::new();
        for c in resolved.split('/').filter(|c| !c.is_empty()) {
            prefix = join(&prefix, c);
            let kind = entries.get(prefix.as_bytes()).map(|e| &e.meta.kind).or_else(|| self.tree.get(&prefix).map(|m| &m.kind));
            match kind {
                None | Some(EntryKind::Dir) => {}
                Some(_) => return Err(format!("goes through /{prefix}, which is not a directory")),
            }
        }
        Ok(join(&resolved, last))
    }
}

/// Adds every missing ancestor directory of the entries: with the image's
/// metadata where it has the directory, else a new 0755 directory.
fn add_parents(entries: &mut BTreeMap<BString, Planned>, tree: &Tree, env: &CopyEnv) {
    let mut parents: Vec<BString> = Vec::new();
    for path in entries.keys() {
        let mut p = parent(path);
        while !p.is_empty() && !entries.contains_key(p.as_bstr()) {
            parents.push(p.into());
            p = parent(p);
        }
    }
    for p in parents {
        if entries.contains_key(&p) {
            continue;
        }
        let meta = match p.to_str().ok().and_then(|p| tree.get(p)) {
            Some(existing) if matches!(existing.kind, EntryKind::Dir) => existing.clone(),
            _ => {
                let (uid, gid) = env.owner.unwrap_or((0, 0));
                EntryMeta { uid, gid, ..new_dir(env.now) }
            }
        };
        entries.insert(p.clone(), Planned { meta: EntryMeta { path: p, ..meta }, data: Data::None });
    }
}

fn new_dir(now: i64) -> EntryMeta {
    EntryMeta {
        path: Default::default(),
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: now,
        size: 0,
        xattrs: BTreeMap::new(),
    }
}

fn excluded(exclude: &Option<DockerIgnore>, base: &[u8], rel: &[u8]) -> bool {
    match exclude {
        Some(ex) => ex.matches(join_bytes(base, rel)) || ex.matches(rel),
        None => false,
    }
}

/// Whether the image has a directory at `path`. The image tree holds UTF-8
/// names only, so a name that is not UTF-8 is taken as new: its directory
/// entry is written, which is right either way.
fn tree_is_dir(tree: &Tree, path: &[u8]) -> bool {
    path.to_str().is_ok_and(|p| tree.is_dir(p))
}

/// Docker decides by content: a tar, possibly compressed with gzip, bzip2, xz or zstd.
fn is_archive(path: &Path) -> Result<bool, CopyError> {
    let err = |source| CopyError::Read { path: path.to_path_buf(), source };
    compress::is_archive(File::open(path).map_err(err)?).map_err(err)
}

/// An archive member's path inside the destination, or None if it escapes.
fn safe_archive_path(name: &str) -> Option<String> {
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

/// An ADD source URL, fetched (once per build) and checked against `--checksum`.
fn fetch_url(step: &CopyStep, env: &CopyEnv, word: &str) -> Result<Arc<Fetched>, CopyError> {
    if !step.is_add {
        return Err(CopyError::UrlInCopy(word.to_string()));
    }
    let fetcher = match (env.fetcher, &step.from) {
        (Some(f), None) => f,
        _ => return Err(CopyError::Url(word.to_string())),
    };
    let fetched = fetcher.fetch(word, step.keep_git_dir)?;
    if let Some(expected) = &step.checksum {
        let (actual, matches) = match &*fetched {
            Fetched::File(d) => (d.digest.clone(), d.digest.eq_ignore_ascii_case(expected)),
            // For a repository BuildKit takes the commit id (or a prefix of it).
            Fetched::Tree { commit, .. } => (commit.clone(), !expected.is_empty() && commit.starts_with(expected.as_str())),
        };
        if !matches {
            return Err(CopyError::ChecksumMismatch { url: word.to_string(), expected: expected.clone(), actual });
        }
    }
    Ok(fetched)
}

/// `a/b/c` → (`a/b`, `c`).
fn split_name(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(a: &str, b: &str) -> String {
    clean(&format!("{}/{}", a, b))
}

/// `a` and `b` joined and cleaned (`./a//b/` → `a/b`), as bytes.
fn join_bytes(a: &[u8], b: &[u8]) -> BString {
    let joined = [a, b"/", b].concat();
    let parts: Vec<&[u8]> = joined.split_str("/").filter(|c| !c.is_empty() && *c != b".").collect();
    parts.join(&b'/').into()
}

fn parent(path: &[u8]) -> &[u8] {
    path.rfind_byte(b'/').map_or(b"", |i| &path[..i])
}

fn basename(path: &[u8]) -> &[u8] {
    let p = path.trim_end_with(|c| c == '/');
    p.rfind_byte(b'/').map_or(p, |i| &p[i + 1..])
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

    #[test]
    fn names() {
        assert_eq!(basename(b"a/b/c.txt"), b"c.txt");
        assert_eq!(basename(b"c"), b"c");
        assert_eq!(basename(b"d\xff/x\xfe/"), b"x\xfe");
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"a"), b"");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("usr/bin", "./y"), "usr/bin/y");
        assert_eq!(join_bytes(b"usr/bin", b"./y"), "usr/bin/y");
        assert_eq!(join_bytes(b"d/", b"x\xff//./z"), &b"d/x\xff/z"[..]);
    }
}
