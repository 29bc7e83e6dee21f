//! Small path and message helpers of COPY/ADD, on bytes and text.

use std::collections::BTreeMap;

use bstr::{BString, ByteSlice};
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};

use crate::context::DockerIgnore;

use crate::exec::tree::clean;

/// How an entry kind reads in a sentence.
pub(super) fn what(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "a directory",
        EntryKind::File | EntryKind::Hardlink(_) => "a file",
        EntryKind::Symlink(_) => "a symbolic link",
        _ => "a special file",
    }
}

/// A context path for messages.
pub(super) fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".to_string()
    } else {
        crate::context::digest::show_name(rel)
    }
}

pub(super) fn new_dir(now: i64) -> EntryMeta {
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

pub(super) fn excluded(exclude: &Option<DockerIgnore>, rel: &[u8]) -> bool {
    exclude.as_ref().is_some_and(|ex| ex.matches(rel))
}

/// `a/b/c` → (`a/b`, `c`).
pub(super) fn split_name(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

pub(super) fn join(a: &str, b: &str) -> String {
    clean(&format!("{}/{}", a, b))
}

/// `a` and `b` joined and cleaned (`./a//b/` → `a/b`), as bytes.
pub(super) fn join_bytes(a: &[u8], b: &[u8]) -> BString {
    let joined = [a, b"/", b].concat();
    let parts: Vec<&[u8]> = joined.split_str("/").filter(|c| !c.is_empty() && *c != b".").collect();
    parts.join(&b'/').into()
}

pub(super) fn parent(path: &[u8]) -> &[u8] {
    path.rfind_byte(b'/').map_or(b"", |i| &path[..i])
}

pub(super) fn basename(path: &[u8]) -> &[u8] {
    let p = path.trim_end_with(|c| c == '/');
    p.rfind_byte(b'/').map_or(p, |i| &p[i + 1..])
}
