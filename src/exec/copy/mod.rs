//! COPY and ADD: decide what goes where by docker's rules, then write the
//! entries as one layer. Nothing touches the image's files: the destination
//! is looked up in the stage's `Tree`, so symlinks in the image resolve inside
//! the image and never on the host.
//!
//! Paths from the context are bytes: a name that is not UTF-8 goes into the
//! layer exactly as it is on disk. The destination comes from the Dockerfile
//! and is text.

mod archive;
mod output;
mod paths;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};

use crate::context::remote;
use crate::context::DockerIgnore;
use crate::context::{SourceMatch, SourceTree};
use crate::plan::CopyStep;
use std::sync::Arc;

use super::chmod::Chmod;
use super::fetch::{Fetched, Fetcher};
use super::tree::{Tree, TreeError};

use output::Output;
use paths::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
