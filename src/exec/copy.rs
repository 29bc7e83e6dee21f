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
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};
use kiln_overlay::apply::OVERRIDE_STAT_XATTR;
use kiln_overlay::compress;
use kiln_overlay::layer::entry_from_path;
use kiln_overlay::parse_override_stat;
use kiln_overlay::reader::Reader;
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};

use crate::context::remote;
use crate::context::DockerIgnore;
use crate::context::{ContextEntry, SourceMatch, SourceTree};
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
    #[error("cannot copy into /{path}: the image has {what} there, not a directory")]
    NotADirectory { path: String, what: &'static str },
    #[error("cannot copy the directory {source_name} onto /{path}: the image has {what} there (BuildKit refuses this too); copy it to another path or remove /{path} first")]
    DirOntoNonDir { source_name: String, path: String, what: &'static str },
    #[error("cannot replace the directory /{path} with the file {source_name} (BuildKit refuses this too); end the destination with / to copy into the directory")]
    FileOntoDir { source_name: String, path: String },
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

/// Names the placement rules below in cache keys: a layer a COPY wrote
/// under other rules (an older kiln) must not be reused for this one.
pub const RULES: &str = "copy-rules-buildkit-1";

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
    /// True when `source` is an image's or stage's rootfs: its files keep
    /// their owners (BuildKit resets owners only for local directories).
    pub keep_owners: bool,
    /// The current WORKDIR.
    pub workdir: &'a str,
    pub owner: Option<(u64, u64)>,
    pub chmod: Option<&'a Chmod>,
    /// mtime for entries kiln creates (missing parent dirs, heredocs).
    pub now: i64,
    /// Scratch space for unpacking ADD archives.
    pub scratch: &'a Path,
    /// Fetches ADD sources that are URLs; `None` refuses them.
    pub fetcher: Option<&'a Fetcher>,
}

/// The layer a COPY/ADD step writes, and what the user should hear about it.
#[derive(Debug)]
pub struct CopyPlan {
    /// The layer's entries, sorted by path.
    pub entries: BTreeMap<BString, Planned>,
    /// Sentences to show as warnings; the caller adds the Dockerfile location.
    pub warnings: Vec<String>,
}

/// One source of the step, in Dockerfile order.
enum Source<'s> {
    /// A word naming context paths; no matches for a wildcard that matched nothing.
    Context {
        word: &'s str,
        matches: Vec<SourceMatch>,
    },
    Url(Arc<Fetched>),
    Heredoc(&'s crate::dockerfile::ast::Heredoc),
}

/// Works out the entries of the layer a COPY/ADD step writes.
///
/// Sources are placed one after another, each seeing what the ones before
/// it wrote, as BuildKit copies them (one copy action per source and per
/// wildcard match):
/// - a destination ending in `/` (or `.`) is a directory, made if missing;
/// - a file goes into the destination if that is a directory (in the image
///   or made by an earlier source), else it becomes the destination: with
///   several sources and no trailing slash each replaces the one before;
/// - a directory's contents go into the destination, which is made 0755
///   (or the octal `--chmod`) and owned by root (or `--chown`) if missing;
/// - a file never replaces a directory and a directory never replaces a
///   file or symlink: both are errors in BuildKit;
/// - a wildcard that matches nothing is skipped.
pub fn plan_copy(step: &CopyStep, env: &CopyEnv, tree: &Tree) -> Result<CopyPlan, CopyError> {
    let exclude = if step.exclude.is_empty() {
        None
    } else {
        Some(DockerIgnore::parse(&step.exclude.join("\n")).map_err(CopyError::Exclude)?)
    };

    // Every source is found before anything is placed, so a missing one fails the step whole.
    let mut sources: Vec<Source> = Vec::new();
    for word in &step.sources {
        if remote::is_remote(word) {
            sources.push(Source::Url(fetch_url(step, env, word)?));
            continue;
        }
        if step.checksum.is_some() {
            return Err(CopyError::ChecksumLocal(word.clone()));
        }
        sources.push(Source::Context { word, matches: env.source.resolve_source(word)? });
    }
    sources.extend(step.heredocs.iter().map(Source::Heredoc));
    if sources.is_empty() {
        return Err(CopyError::NoSources);
    }

    let raw_dest = if step.dest.starts_with('/') {
        step.dest.clone()
    } else {
        format!("{}/{}", env.workdir.trim_end_matches('/'), step.dest)
    };
    let dir_syntax = raw_dest.ends_with('/') || raw_dest.ends_with("/.") || step.dest == "." || step.dest.is_empty();
    // `--link` copies onto an empty tree that is then laid over the image,
    // so nothing in the image (a symlink on the way, an existing directory)
    // shapes where files go. BuildKit ignores --link when --chmod is given.
    let empty = Tree::default();
    let tree = if step.link && step.chmod.is_none() { &empty } else { tree };

    let mut out = Output {
        entries: BTreeMap::new(),
        links: HashMap::new(),
        linked: HashMap::new(),
        env,
        tree,
        raw_dest,
        dir_syntax,
        onto_dest: 0,
    };
    let mut unmatched: Vec<&str> = Vec::new();
    let mut placed = 0usize;
    for source in &sources {
        match source {
            Source::Context { word, matches } => {
                if matches.is_empty() {
                    unmatched.push(word);
                    if step.parents {
                        // BuildKit copies the source's root with the word as a pattern: the destination is made even when nothing matches.
                        out.dest_dir(out.created_mode())?;
                    }
                }
                let pivot = if step.parents { pivot_depth(word) } else { 0 };
                for m in matches {
                    placed += 1;
                    if step.parents {
                        out.with_parents(m, pivot, &exclude)?;
                    } else if m.is_dir {
                        out.directory(m, &exclude)?;
                    } else {
                        out.file(step, m, &exclude)?;
                    }
                }
            }
            Source::Url(f) => {
                placed += 1;
                match &**f {
                    Fetched::File(d) => {
                        let target = out.file_target(d.name.as_bytes(), &d.name)?;
                        out.download(target, d);
                    }
                    Fetched::Tree { ctx, .. } => {
                        // A repository always lands as the contents of the destination directory.
                        for m in ctx.resolve_source(".")? {
                            let root = out.directory_root(&m, "the repository")?;
                            for e in ctx.walk(&m)? {
                                if !e.rel.is_empty() {
                                    out.tree_entry(&join_bytes(&root, &e.rel), &e, b"")?;
                                }
                            }
                        }
                    }
                }
            }
            Source::Heredoc(doc) => {
                placed += 1;
                let target = out.file_target(doc.name.as_bytes(), &format!("<<{}", doc.name))?;
                let mode = env.chmod.map_or(0o644, |c| c.apply(0o644, false));
                let meta = out.owned(EntryMeta {
                    path: target.clone(),
                    kind: EntryKind::File,
                    mode,
                    uid: 0,
                    gid: 0,
                    mtime: env.now,
                    size: doc.content.len() as u64,
                    xattrs: BTreeMap::new(),
                });
                out.put(target, meta, Data::Bytes(doc.content.clone().into_bytes()));
            }
        }
    }
    let mut warnings = Vec::new();
    if placed == 0 {
        warnings.push(format!(
            "nothing was copied: no file in the source matches {} (BuildKit skips a wildcard that matches nothing; check the pattern and .dockerignore)",
            unmatched.join(" ")
        ));
    }
    if out.onto_dest > 1 {
        warnings.push(format!(
            "{} sources were copied to {}, which is not a directory: each replaced the one before, so it holds the last (as in BuildKit); end the destination with / to copy them into a directory",
            out.onto_dest, out.raw_dest
        ));
    }
    let mut entries = out.entries;
    order_hardlinks(&mut entries);
    add_parents(&mut entries, tree, env)?;
    Ok(CopyPlan { entries, warnings })
}

/// With `--parents`, the components of a source before its pivot (`a/b/./c`:
/// `a/b`) are left out of the destination path, as BuildKit does.
fn pivot_depth(word: &str) -> usize {
    match word.split_once("/./") {
        Some((before, _)) => components(before).len(),
        None => 0,
    }
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
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
    /// A hard link's target → the paths linked to it.
    linked: HashMap<BString, Vec<BString>>,
    env: &'a CopyEnv<'a>,
    tree: &'a Tree,
    /// The destination as written, made absolute with WORKDIR.
    raw_dest: String,
    /// The destination ends in `/` or `.`: it is a directory.
    dir_syntax: bool,
    /// How many sources became the destination itself (a file, not a directory).
    onto_dest: usize,
}

impl Output<'_> {
    fn put(&mut self, path: impl Into<BString>, mut meta: EntryMeta, data: Data) {
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
    fn kind_at(&self, path: &[u8]) -> Option<&EntryKind> {
        if let Some(p) = self.entries.get(path.as_bstr()) {
            return Some(&p.meta.kind);
        }
        path.to_str().ok().and_then(|p| self.tree.get(p)).map(|m| &m.kind)
    }

    fn is_dir_at(&self, path: &[u8]) -> bool {
        path.is_empty() || matches!(self.kind_at(path), Some(EntryKind::Dir))
    }

    /// The destination resolved inside the image, through its symlinks and
    /// those this step already wrote.
    fn dest(&self) -> Result<String, CopyError> {
        let entries = &self.entries;
        Ok(self.tree.resolve_with(&self.raw_dest, true, |p| entries.get(p.as_bytes()).map(|e| &e.meta.kind))?)
    }

    /// The destination as a directory (trailing slash, `--parents`, an
    /// archive to extract): made if missing, an error if something else.
    fn dest_dir(&mut self, mode: u32) -> Result<String, CopyError> {
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
    fn file_target(&mut self, name: &[u8], shown: &str) -> Result<BString, CopyError> {
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
    fn directory_root(&mut self, m: &SourceMatch, shown: &str) -> Result<BString, CopyError> {
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
    fn directory(&mut self, m: &SourceMatch, exclude: &Option<DockerIgnore>) -> Result<(), CopyError> {
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
    fn file(&mut self, step: &CopyStep, m: &SourceMatch, exclude: &Option<DockerIgnore>) -> Result<(), CopyError> {
        if excluded(exclude, &m.rel) {
            return Ok(());
        }
        if step.is_add && step.unpack && is_archive(&m.host)? {
            // BuildKit extracts into the destination as a directory, made 0755 whatever --chmod says.
            let dir = self.dest_dir(0o755)?;
            // The archive extraction still takes text; names there are its own business.
            return self.unpack(&m.host, &m.rel.to_str_lossy(), &dir);
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
    fn with_parents(&mut self, m: &SourceMatch, pivot: usize, exclude: &Option<DockerIgnore>) -> Result<(), CopyError> {
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
    fn tree_entry(&mut self, target: &[u8], e: &ContextEntry, base: &[u8]) -> Result<(), CopyError> {
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

    /// The mode of a directory this step makes: 0755, or the octal --chmod
    /// (BuildKit makes missing directories with it; a symbolic one is for the copied entries only).
    fn created_mode(&self) -> u32 {
        match self.env.chmod {
            Some(Chmod::Octal(m)) => m & 0o777,
            _ => 0o755,
        }
    }

    fn new_dir(&self, mode: u32, mtime: i64) -> EntryMeta {
        self.owned(EntryMeta { mode, ..new_dir(mtime) })
    }

    /// One file, directory, symlink or special file from the source tree.
    fn entry(&mut self, target: &[u8], e: &ContextEntry) -> Result<(), CopyError> {
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
    fn source_meta(&self, target: &[u8], e: &ContextEntry) -> Result<EntryMeta, CopyError> {
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
    fn owned(&self, mut meta: EntryMeta) -> EntryMeta {
        let (uid, gid) = self.env.owner.unwrap_or((0, 0));
        meta.uid = uid;
        meta.gid = gid;
        meta
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
    fn archive_target(&self, dir: &str, last: &str) -> Result<String, String> {
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

/// Adds every missing ancestor directory of the entries: with the image's
/// metadata where it has the directory, else a new directory (0755 or the
/// octal --chmod, owned by root or --chown). An ancestor the image has as
/// something else than a directory is an error, as in BuildKit.
fn add_parents(entries: &mut BTreeMap<BString, Planned>, tree: &Tree, env: &CopyEnv) -> Result<(), CopyError> {
    let mut parents: Vec<BString> = Vec::new();
    for path in entries.keys() {
        let mut p = parent(path);
        while !p.is_empty() && !entries.contains_key(p.as_bstr()) {
            parents.push(p.into());
            p = parent(p);
        }
    }
    let mode = match env.chmod {
        Some(Chmod::Octal(m)) => m & 0o777,
        _ => 0o755,
    };
    for p in parents {
        if entries.contains_key(&p) {
            continue;
        }
        let meta = match p.to_str().ok().and_then(|p| tree.get(p)) {
            Some(existing) if matches!(existing.kind, EntryKind::Dir) => existing.clone(),
            Some(other) => {
                return Err(CopyError::NotADirectory { path: p.to_str_lossy().into_owned(), what: what(&other.kind) })
            }
            None => {
                let (uid, gid) = env.owner.unwrap_or((0, 0));
                EntryMeta { uid, gid, mode, ..new_dir(env.now) }
            }
        };
        entries.insert(p.clone(), Planned { meta: EntryMeta { path: p, ..meta }, data: Data::None });
    }
    // An entry of this step under a path it also wrote as a non-directory.
    for path in entries.keys() {
        let up = parent(path);
        if up.is_empty() {
            continue;
        }
        if let Some(above) = entries.get(up.as_bstr()) {
            if !matches!(above.meta.kind, EntryKind::Dir) {
                return Err(CopyError::NotADirectory {
                    path: up.to_str_lossy().into_owned(),
                    what: what(&above.meta.kind),
                });
            }
        }
    }
    Ok(())
}

/// How an entry kind reads in a sentence.
fn what(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "a directory",
        EntryKind::File | EntryKind::Hardlink(_) => "a file",
        EntryKind::Symlink(_) => "a symbolic link",
        _ => "a special file",
    }
}

/// A context path for messages.
fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".to_string()
    } else {
        crate::context::digest::show_name(rel)
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

fn excluded(exclude: &Option<DockerIgnore>, rel: &[u8]) -> bool {
    exclude.as_ref().is_some_and(|ex| ex.matches(rel))
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
            Fetched::Tree { commit, .. } => {
                (commit.clone(), !expected.is_empty() && commit.starts_with(expected.as_str()))
            }
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
    fn parents_pivot() {
        assert_eq!(pivot_depth("a/b/c"), 0);
        assert_eq!(pivot_depth("/test/a/b/./c/d"), 3);
        assert_eq!(pivot_depth("./test/a/./*/c"), 2, "a leading ./ is no pivot");
        assert_eq!(pivot_depth("test/a/b/c/d/."), 0, "nor a trailing /.");
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
