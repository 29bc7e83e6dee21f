//! `--squash` and `--layers=false`: a stage's own layers (those on top of its
//! base) merged into one layer, as buildah and docker do. The base layers stay
//! as they are, so whiteouts and opaque markers that may hide base content
//! are kept in the merged layer.
//!
//! File contents are spooled to one scratch file, not held in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use kiln_overlay::compress::{self, Compression};
use kiln_overlay::layer::{LayerInfo, LayerWriter};
use kiln_overlay::reader::Reader;
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};
use kiln_overlay::whiteout::{WH_OPAQUE, WH_PREFIX};

use crate::image::manifest::Descriptor;
use crate::store::Store;

use super::state::StageState;

#[derive(Debug, thiserror::Error)]
pub enum SquashError {
    #[error("read layer {digest} to squash it")]
    Read {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("write the squashed layer")]
    Write(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What one squash wrote.
pub struct Squashed {
    pub info: LayerInfo,
    pub digest: String,
    pub size: u64,
}

enum Node {
    /// An entry and, for a regular file, where its bytes are in the spool.
    Entry { meta: EntryMeta, data: Option<(u64, u64)> },
    /// Hides the path in the base layers.
    Whiteout,
}

/// The merged view of the layers read so far.
struct Merge {
    nodes: BTreeMap<String, Node>,
    /// Directories whose base content is hidden (`.wh..wh..opq`).
    opaque: BTreeSet<String>,
    spool: File,
    spool_len: u64,
}

/// Replaces the stage's own layers (all after `state.base_layers`) with one
/// layer holding their merged content. History keeps every entry; only the
/// last entry of the squashed part still counts as a layer. Returns `None`
/// when there was nothing to merge (fewer than two own layers).
pub fn squash_stage(
    store: &Store,
    state: &mut StageState,
    compression: Compression,
    level: Option<u32>,
    clamp_mtime: Option<i64>,
    scratch: &Path,
) -> Result<Option<Squashed>, SquashError> {
    let base = state.base_layers.min(state.layers.len());
    let own = state.layers.len() - base;
    if own < 2 {
        return Ok(None);
    }
    let squashed = squash_layers(store, &state.layers[base..], base > 0, compression, level, clamp_mtime, scratch)?;
    state.layers.truncate(base);
    state.layers.push(Descriptor::new(super::layer_media_type(compression), squashed.digest.clone(), squashed.size));
    state.config.rootfs.diff_ids.truncate(base);
    state.config.rootfs.diff_ids.push(squashed.info.diff_id.clone());
    mark_squashed_history(&mut state.config.history, own);
    Ok(Some(squashed))
}

/// The last `own` history entries that carry a layer become one: all but the
/// last of them are marked empty.
fn mark_squashed_history(history: &mut [crate::image::config::History], own: usize) {
    let with_layer: Vec<usize> = history.iter().enumerate().filter(|(_, h)| !h.empty_layer).map(|(i, _)| i).collect();
    let start = with_layer.len().saturating_sub(own);
    if let Some((_, merged)) = with_layer[start..].split_last() {
        for &i in merged {
            history[i].empty_layer = true;
        }
    }
}

/// Merges `layers` (bottom first) into one layer blob in the store. With no
/// `lower` layers below them, whiteouts and opaque markers hide nothing and
/// are left out.
pub fn squash_layers(
    store: &Store,
    layers: &[Descriptor],
    lower: bool,
    compression: Compression,
    level: Option<u32>,
    clamp_mtime: Option<i64>,
    scratch: &Path,
) -> Result<Squashed, SquashError> {
    let spool = tempfile::tempfile_in(scratch).map_err(SquashError::Write)?;
    let mut merge = Merge { nodes: BTreeMap::new(), opaque: BTreeSet::new(), spool, spool_len: 0 };
    for layer in layers {
        let read_err = |source| SquashError::Read { digest: layer.digest.clone(), source };
        let blob = store.open_blob(&layer.digest)?;
        merge.apply(blob).map_err(read_err)?;
    }
    let blob = store.layer_blob_writer()?;
    let mut writer = LayerWriter::with_level(blob, compression, level).map_err(SquashError::Write)?;
    if !lower {
        merge.nodes.retain(|_, n| !matches!(n, Node::Whiteout));
        merge.opaque.clear();
    }
    merge.write(&mut writer, clamp_mtime).map_err(SquashError::Write)?;
    let (blob, info) = writer.finish().map_err(SquashError::Write)?;
    let (digest, size) = blob.commit(&info)?;
    Ok(Squashed { info, digest, size })
}

fn under(path: &str, dir: &str) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{}", dir, name)
    }
}

impl Merge {
    /// Applies one layer: its whiteouts and opaque markers act on the layers
    /// below it, then its entries are added.
    fn apply<R: Read>(&mut self, blob: R) -> io::Result<()> {
        let (_, plain) = compress::decompress(blob)?;
        let mut reader = Reader::new(plain);
        let mut added: Vec<(EntryMeta, Option<(u64, u64)>)> = Vec::new();
        while let Some(entry) = reader.next_entry()? {
            // The same rule the applier enforces: a merged layer must not carry what no RUN would apply.
            entry.check_inside().map_err(|reason| {
                io::Error::new(io::ErrorKind::InvalidData, format!("layer entry {:?} {reason}", entry.display()))
            })?;
            let Some(mut meta) = entry.meta() else { continue };
            meta.size = 0;
            if meta.path.is_empty() {
                continue;
            }
            let mpath = meta.path.to_string();
            let (dir, name) = mpath.rsplit_once('/').unwrap_or(("", mpath.as_str()));
            if name == WH_OPAQUE {
                let dir = dir.to_string();
                self.nodes.retain(|p, _| !under(p, &dir));
                self.opaque.retain(|p| !under(p, &dir));
                self.opaque.insert(dir);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
                let hidden = join(dir, hidden);
                self.remove(&hidden);
                self.nodes.insert(hidden, Node::Whiteout);
                continue;
            }
            let data = if meta.kind == EntryKind::File {
                let start = self.spool_len;
                let n = io::copy(&mut reader.data(), &mut self.spool)?;
                self.spool_len += n;
                Some((start, n))
            } else {
                None
            };
            added.push((meta, data));
        }
        for (meta, data) in added {
            self.add(meta, data);
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) {
        self.detach_links(path);
        self.nodes.retain(|p, _| p != path && !under(p, path));
        self.opaque.retain(|p| p != path && !under(p, path));
    }

    /// Hard links to files at or under `path`, which is about to be removed
    /// or replaced: in the unsquashed layers they keep the old file, so the
    /// first becomes that file and the others link to it.
    fn detach_links(&mut self, path: &str) {
        let links: Vec<(String, String)> = self
            .nodes
            .iter()
            .filter_map(|(p, n)| match n {
                Node::Entry { meta: EntryMeta { kind: EntryKind::Hardlink(t), .. }, .. }
                    if t == path || under(&t.to_string(), path) =>
                {
                    Some((p.clone(), t.to_string()))
                }
                _ => None,
            })
            .filter(|(p, _)| p != path && !under(p, path))
            .collect();
        let mut moved: BTreeMap<String, String> = BTreeMap::new();
        for (link, target) in links {
            let node = match moved.get(&target) {
                Some(first) => {
                    let Some(Node::Entry { meta, .. }) = self.nodes.get(&link) else { continue };
                    Node::Entry {
                        meta: EntryMeta { kind: EntryKind::Hardlink(first.clone().into()), ..meta.clone() },
                        data: None,
                    }
                }
                None => {
                    // A target in the base layers cannot be copied from here.
                    let Some(Node::Entry { meta, data }) = self.nodes.get(&target) else { continue };
                    moved.insert(target.clone(), link.clone());
                    Node::Entry { meta: EntryMeta { path: link.clone().into(), ..meta.clone() }, data: *data }
                }
            };
            self.nodes.insert(link, node);
        }
    }

    fn add(&mut self, meta: EntryMeta, data: Option<(u64, u64)>) {
        let path = meta.path.to_string();
        if matches!(self.nodes.get(&path), Some(Node::Entry { .. })) {
            self.detach_links(&path);
        }
        if meta.kind == EntryKind::Dir {
            // A directory where a lower squashed layer removed or replaced
            // one: the base's content there must stay hidden.
            let replaced = match self.nodes.get(&path) {
                Some(Node::Whiteout) => true,
                Some(Node::Entry { meta: old, .. }) => old.kind != EntryKind::Dir,
                None => false,
            };
            if replaced {
                self.opaque.insert(path.clone());
            }
        } else {
            self.nodes.retain(|p, _| !under(p, &path));
            self.opaque.retain(|p| p != &path && !under(p, &path));
        }
        self.nodes.insert(path, Node::Entry { meta, data });
    }

    /// Writes the merged entries in path order; hard links last, so their
    /// targets come first.
    fn write<W: Write + 'static>(&mut self, writer: &mut LayerWriter<W>, clamp: Option<i64>) -> io::Result<()> {
        let clamp_time = |t: i64| clamp.map_or(t, |c| t.min(c));
        if self.opaque.contains("") {
            writer.append(&marker(WH_OPAQUE.to_string(), clamp_time(0)), None)?;
        }
        let mut links: Vec<EntryMeta> = Vec::new();
        for (path, node) in &self.nodes {
            match node {
                Node::Whiteout => {
                    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
                    writer.append(&marker(join(dir, &format!("{WH_PREFIX}{name}")), clamp_time(0)), None)?;
                }
                Node::Entry { meta, data } => {
                    let mut meta = meta.clone();
                    meta.mtime = clamp_time(meta.mtime);
                    if matches!(meta.kind, EntryKind::Hardlink(_)) {
                        links.push(meta);
                        continue;
                    }
                    match data {
                        Some((start, len)) => {
                            self.spool.seek(SeekFrom::Start(*start))?;
                            meta.size = *len;
                            let mut part = (&self.spool).take(*len);
                            writer.append(&meta, Some(&mut part))?;
                        }
                        None => writer.append(&meta, None)?,
                    }
                    if meta.kind == EntryKind::Dir && self.opaque.contains(path) {
                        writer.append(&marker(join(path, WH_OPAQUE), meta.mtime), None)?;
                    }
                }
            }
        }
        for meta in links {
            writer.append(&meta, None)?;
        }
        Ok(())
    }
}

fn marker(path: String, mtime: i64) -> EntryMeta {
    let mut meta = EntryMeta::new(path, EntryKind::File);
    meta.mtime = mtime;
    meta
}

#[cfg(test)]
fn read_all(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, EntryKind, &[u8])]) -> Vec<u8> {
        let mut w = LayerWriter::new(Vec::new(), Compression::None).unwrap();
        for (path, kind, data) in entries {
            let mut meta = EntryMeta::new(*path, kind.clone());
            meta.size = data.len() as u64;
            meta.mtime = 100;
            let mut r: &[u8] = data;
            w.append(&meta, if *kind == EntryKind::File { Some(&mut r) } else { None }).unwrap();
        }
        w.finish().unwrap().0
    }

    fn merged(layers: &[Vec<u8>]) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Merge {
            nodes: BTreeMap::new(),
            opaque: BTreeSet::new(),
            spool: tempfile::tempfile_in(dir.path()).unwrap(),
            spool_len: 0,
        };
        for l in layers {
            m.apply(&l[..]).unwrap();
        }
        let mut w = LayerWriter::new(Vec::new(), Compression::None).unwrap();
        m.write(&mut w, Some(50)).unwrap();
        let tar_bytes = w.finish().unwrap().0;
        let mut out = Vec::new();
        let mut a = tar::Archive::new(&tar_bytes[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            assert!(e.header().mtime().unwrap() <= 50, "mtime clamped");
            let p = String::from_utf8_lossy(&e.path_bytes()).trim_end_matches('/').to_string();
            out.push((p, read_all(&mut e).unwrap()));
        }
        (out, tar_bytes)
    }

    #[test]
    fn later_layers_win_and_whiteouts_stay_for_the_base() {
        let l1 = layer(&[("a", EntryKind::Dir, b""), ("a/x", EntryKind::File, b"one"), ("a/y", EntryKind::File, b"y")]);
        let l2 = layer(&[
            ("a", EntryKind::Dir, b""),
            ("a/x", EntryKind::File, b"two"),
            ("a/.wh.y", EntryKind::File, b""),
            (".wh.base", EntryKind::File, b""),
        ]);
        let (entries, _) = merged(&[l1, l2]);
        let mut names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        names.sort();
        assert_eq!(names, [".wh.base", "a", "a/.wh.y", "a/x"]);
        assert_eq!(entries.iter().find(|(p, _)| p == "a/x").unwrap().1, b"two");
    }

    #[test]
    fn a_directory_recreated_after_removal_is_opaque() {
        let l1 = layer(&[(".wh.d", EntryKind::File, b"")]);
        let l2 = layer(&[("d", EntryKind::Dir, b""), ("d/new", EntryKind::File, b"n")]);
        let (entries, _) = merged(&[l1, l2]);
        let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["d", "d/.wh..wh..opq", "d/new"]);
    }

    #[test]
    fn hard_links_follow_their_targets() {
        let l1 = layer(&[("z", EntryKind::File, b"data"), ("a", EntryKind::Hardlink("z".into()), b"")]);
        let (entries, _) = merged(&[l1]);
        let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
    }

    #[test]
    fn hard_links_keep_a_removed_targets_content() {
        let l1 = layer(&[
            ("t", EntryKind::File, b"data"),
            ("a", EntryKind::Hardlink("t".into()), b""),
            ("b", EntryKind::Hardlink("t".into()), b""),
        ]);
        let l2 = layer(&[(".wh.t", EntryKind::File, b"")]);
        let (entries, tar_bytes) = merged(&[l1, l2]);
        let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["a", ".wh.t", "b"]);
        assert_eq!(entries[0].1, b"data");
        let mut a = tar::Archive::new(&tar_bytes[..]);
        let b = a.entries().unwrap().map(|e| e.unwrap()).find(|e| &*e.path_bytes() == b"b").unwrap();
        assert_eq!(b.link_name_bytes().as_deref(), Some(&b"a"[..]));
    }

    #[test]
    fn history_keeps_entries_with_one_layer_for_the_squashed_part() {
        use crate::image::config::History;
        let h = |empty| History { created: None, created_by: None, author: None, comment: None, empty_layer: empty };
        let mut history = vec![h(false), h(true), h(false), h(false), h(true), h(false)];
        mark_squashed_history(&mut history, 3);
        let flags: Vec<bool> = history.iter().map(|h| h.empty_layer).collect();
        assert_eq!(flags, [false, true, true, true, true, false]);
    }
}
