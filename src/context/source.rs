//! COPY/ADD source words to context paths. Words are text; the names they
//! match are bytes.

use std::os::unix::ffi::OsStrExt;

use bstr::BString;

use super::dockerignore::clean;
use super::glob::{has_wildcards, source_component, unescape};
use super::relpath::join;
use super::resolve::{resolve, ResolveError, Resolved};
use super::{walk, BuildContext, ContextError, SourceMatch};

pub(super) fn resolve_source(ctx: &BuildContext, word: &str) -> Result<Vec<SourceMatch>, ContextError> {
    // Docker joins the word onto "/" and cleans it, so no form of `..`
    // leaves the context.
    let cleaned = clean(&format!("/{word}")).trim_start_matches('/').to_string();
    let wildcard = has_wildcards(&cleaned);
    if ctx.empty {
        return match cleaned.is_empty() {
            true => Ok(vec![SourceMatch { rel: BString::default(), host: ctx.root.clone(), is_dir: true }]),
            false if wildcard => Ok(Vec::new()),
            false => Err(ContextError::SourceNotFound { word: word.to_string() }),
        };
    }
    if wildcard {
        expand(ctx, word, &cleaned)
    } else {
        plain(ctx, word, &cleaned).map(|m| vec![m])
    }
}

fn plain(ctx: &BuildContext, word: &str, cleaned: &str) -> Result<SourceMatch, ContextError> {
    let not_found = || ContextError::SourceNotFound { word: word.to_string() };
    let found = match resolve(&ctx.root, cleaned.as_bytes(), true) {
        Ok(r) => r,
        Err(ResolveError::NotFound) => return Err(not_found()),
        Err(e) => return Err(resolve_error(word, e)),
    };
    if !visible(ctx, &found)? {
        return Err(not_found());
    }
    Ok(SourceMatch { rel: cleaned.into(), host: found.host, is_dir: found.is_dir })
}

/// Expands the wildcards one component at a time against the tree. Each
/// candidate is resolved from the root, so a symlinked directory on the
/// way is entered at its real, in-root location.
fn expand(ctx: &BuildContext, word: &str, cleaned: &str) -> Result<Vec<SourceMatch>, ContextError> {
    let parts: Vec<&str> = cleaned.split('/').collect();
    // (matched path, resolved path)
    let mut frontier: Vec<(BString, Resolved)> = vec![(
        BString::default(),
        Resolved { host: ctx.root.clone(), rel: BString::default(), links: Vec::new(), is_dir: true },
    )];
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let glob = source_component(word, part)?;
        let mut next = Vec::new();
        for (matched, dir) in &frontier {
            let names: Vec<BString> = match &glob {
                Some(g) => list_dir(&dir.host)?.into_iter().filter(|n| g.is_match(n)).collect(),
                None => vec![unescape(part).into()],
            };
            for name in names {
                let mut found = match resolve(&ctx.root, &join(&dir.rel, &name), true) {
                    Ok(r) => r,
                    Err(ResolveError::NotFound) => continue,
                    Err(e) => return Err(resolve_error(word, e)),
                };
                // Links met in earlier components count as on the way.
                found.links.splice(0..0, dir.links.iter().cloned());
                if !last && !found.is_dir {
                    continue;
                }
                if last && !visible(ctx, &found)? {
                    continue;
                }
                next.push((join(matched, &name), found));
            }
        }
        frontier = next;
    }
    let mut out: Vec<SourceMatch> =
        frontier.into_iter().map(|(rel, r)| SourceMatch { rel, host: r.host, is_dir: r.is_dir }).collect();
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Whether a resolved path exists in the context as docker would send it:
/// no symlink on the way is ignored, and the path itself is not ignored,
/// or is a directory that still holds a re-included entry.
fn visible(ctx: &BuildContext, found: &Resolved) -> Result<bool, ContextError> {
    if found.links.iter().any(|l| ctx.ignore.matches(l)) {
        return Ok(false);
    }
    if found.rel.is_empty() || !ctx.ignore.matches(&found.rel) {
        return Ok(true);
    }
    if !found.is_dir || !ctx.ignore.may_include_under(&found.rel) {
        return Ok(false);
    }
    walk::has_included(ctx, &found.host, &found.rel)
}

fn list_dir(dir: &std::path::Path) -> Result<Vec<BString>, ContextError> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ContextError::Io { path: dir.to_path_buf(), source }),
    };
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| ContextError::Io { path: dir.to_path_buf(), source })?;
        names.push(BString::from(entry.file_name().as_bytes()));
    }
    names.sort();
    Ok(names)
}

fn resolve_error(word: &str, e: ResolveError) -> ContextError {
    match e {
        ResolveError::NotFound => ContextError::SourceNotFound { word: word.to_string() },
        ResolveError::Loop => ContextError::SymlinkLoop { word: word.to_string() },
        ResolveError::Io(path, source) => ContextError::Io { path, source },
    }
}
