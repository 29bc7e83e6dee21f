//! WORKDIR's filesystem part. BuildKit (dockerfile2llb `dispatchWorkdir`)
//! turns every WORKDIR other than `/` into `llb.Mkdir(wd, 0755,
//! WithParents, WithUser(USER))`: a file operation that writes a layer (an
//! empty one when the directory exists already) and a history entry
//! `WORKDIR <absolute path>` that is not `empty_layer`. Its backend creates
//! the path with `fs.RootPath` (symlinks resolved inside the rootfs, never
//! outside) and fsutil's `MkdirAll`: each missing directory 0755, owned by
//! the USER in effect, stamped with the build time (SOURCE_DATE_EPOCH when
//! set). `WORKDIR /` only changes the config and has an empty-layer entry.
//!
//! kiln does the same on the stage's [`Tree`], as COPY does: nothing of the
//! image is touched on the host, and the layer holds the created directories
//! (with their existing ancestors, as COPY writes them).

use std::collections::BTreeMap;
use std::time::Instant;

use kiln_overlay::layer::LayerWriter;
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};

use crate::image::manifest::Descriptor;
use crate::plan::Step;

use super::state::StageState;
use super::tree::{Tree, TreeError};
use super::{finish, layer_media_type, ExecError, Executor, StepError};
use crate::progress::LayerContents;

#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("cannot create WORKDIR {workdir}: /{path} exists in the image and is not a directory (remove it in an earlier step or choose another WORKDIR)")]
    NotADirectory { workdir: String, path: String },
}

impl Executor<'_> {
    /// Creates the WORKDIR `apply_metadata` just set, as a layer.
    pub(super) fn workdir(
        &self,
        state: &mut StageState,
        step: &Step,
        at: &crate::progress::StepRef,
    ) -> Result<(), StepError> {
        let started = Instant::now();
        let dir = state.workdir();
        let created_by = format!("WORKDIR {dir}");
        if dir == "/" {
            state.push_history(&self.stamp.created, &created_by, true);
            return Ok(());
        }
        state.ensure_tree(self.store)?;
        let tree = state.tree.as_ref().expect("ensured above");
        let user = state.config.config.user.clone().unwrap_or_default();
        let owner = mkdir_owner(&user, user_file(tree, "etc/passwd"), user_file(tree, "etc/group"));
        let dirs = plan_mkdir(tree, &dir, owner, self.stamp.seconds)?;

        let blob = self.store.layer_blob_writer()?;
        let mut writer = LayerWriter::new(blob, self.opts.compression).map_err(ExecError::Layer)?;
        for meta in &dirs {
            writer.append(&finish::clamp(meta, self.opts.source_date_epoch), None).map_err(ExecError::Layer)?;
        }
        let (blob, info) = writer.finish().map_err(ExecError::Layer)?;
        let (digest, size) = blob.commit(&info)?;

        let tree = state.tree.as_mut().expect("built above");
        for meta in &dirs {
            tree.record(meta, || None);
        }
        let layer = Descriptor::new(layer_media_type(self.opts.compression), digest.clone(), size);
        let contents = LayerContents::Directories { count: dirs.len(), instruction: step.original.clone() };
        self.add_layer(state, (layer, info.diff_id), &created_by, at, contents, started)?;
        Ok(())
    }
}

/// The image's passwd or group file, found through symlinks inside the image
/// as BuildKit's `openUserFile` finds it.
fn user_file<'t>(tree: &'t Tree, path: &str) -> Option<&'t [u8]> {
    let resolved = tree.resolve(path, true).ok()?;
    tree.file(&resolved)
}

/// The directories `WORKDIR dir` writes, parents first: nothing when the
/// directory exists; otherwise the existing ancestors (unchanged) and each
/// missing directory, 0755, owned by `owner`, with mtime `now`. `dir` is
/// resolved inside the image first, so a symlink (`/tempest ->
/// /var/lib/tempest`) leads to its target, which is created.
pub fn plan_mkdir(tree: &Tree, dir: &str, owner: (u64, u64), now: i64) -> Result<Vec<EntryMeta>, WorkdirError> {
    let resolved = tree.resolve(dir, true)?;
    let mut ancestors = Vec::new();
    let mut created = Vec::new();
    let mut path = String::new();
    for component in resolved.split('/').filter(|c| !c.is_empty()) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(component);
        match tree.get(&path) {
            Some(meta) if matches!(meta.kind, EntryKind::Dir) => {
                if created.is_empty() {
                    ancestors.push(EntryMeta { path: path.clone().into(), ..meta.clone() });
                }
            }
            Some(_) => return Err(WorkdirError::NotADirectory { workdir: dir.to_string(), path }),
            None => created.push(EntryMeta {
                path: path.clone().into(),
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: owner.0,
                gid: owner.1,
                mtime: now,
                size: 0,
                xattrs: BTreeMap::new(),
            }),
        }
    }
    if created.is_empty() {
        return Ok(Vec::new());
    }
    ancestors.extend(created);
    Ok(ancestors)
}

/// The owner BuildKit gives the directories WORKDIR creates: the USER in
/// effect read as its file operations read it (`llb.WithUser`, then
/// `readUser` in solver/llbsolver/ops/user_linux.go). A number (or `root`)
/// is both the uid and the gid; a name takes the uid and gid of its
/// /etc/passwd entry and, unlike RUN, a name the image does not know is
/// root, not an error. `:group` then sets the gid, by number or /etc/group
/// name (an unknown name leaves it).
pub fn mkdir_owner(user: &str, passwd: Option<&[u8]>, group: Option<&[u8]>) -> (u64, u64) {
    if user.is_empty() {
        return (0, 0);
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid) = match buildkit_id(user_part) {
        Some(id) => (id, id),
        None => lookup(passwd, user_part).map_or((0, 0), |f| (f[0], f[1])),
    };
    if let Some(g) = group_part {
        match buildkit_id(g) {
            Some(id) => gid = id,
            None => {
                if let Some(f) = lookup(group, g) {
                    gid = f[0];
                }
            }
        }
    }
    (uid, gid)
}

/// BuildKit's `parseUID`: `root` is 0, a number that fits an int32 is itself,
/// anything else is a name.
fn buildkit_id(text: &str) -> Option<u64> {
    if text == "root" {
        return Some(0);
    }
    let n: i64 = text.parse().ok()?;
    (0..=i64::from(i32::MAX)).contains(&n).then_some(n as u64)
}

/// The numeric fields after the password of `name`'s line: `[uid, gid]` in
/// passwd, `[gid, ...]` in group (only the first is read there).
fn lookup(db: Option<&[u8]>, name: &str) -> Option<[u64; 2]> {
    let text = String::from_utf8_lossy(db?);
    text.lines().map(str::trim).filter(|l| !l.is_empty()).find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            return None;
        }
        let id = |i: usize| fields.get(i).and_then(|f| f.trim().parse::<u32>().ok()).map(u64::from);
        Some([id(2)?, id(3).unwrap_or(0)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &[u8] = b"root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    fn meta(path: &str, kind: EntryKind) -> EntryMeta {
        EntryMeta { path: path.into(), kind, mode: 0o711, uid: 7, gid: 7, mtime: 1, size: 0, xattrs: BTreeMap::new() }
    }

    fn tree(entries: &[(&str, EntryKind)]) -> Tree {
        let mut t = Tree::default();
        for (p, k) in entries {
            t.record(&meta(p, k.clone()), || None);
        }
        t
    }

    #[test]
    fn owners_as_buildkit_file_ops_resolve_them() {
        let own = |u: &str| mkdir_owner(u, Some(PASSWD), Some(GROUP));
        assert_eq!(own(""), (0, 0));
        assert_eq!(own("app"), (1000, 1001), "a name takes its passwd uid and gid");
        assert_eq!(own("1000"), (1000, 1000), "a number is the uid and the gid, whatever passwd says");
        assert_eq!(own("app:staff"), (1000, 50));
        assert_eq!(own("app:77"), (1000, 77));
        assert_eq!(own("4242"), (4242, 4242), "a uid without an entry is fine");
        assert_eq!(own("ghost"), (0, 0), "an unknown name is root for WORKDIR's mkdir");
        assert_eq!(own("app:ghosts"), (1000, 1001), "an unknown group leaves the gid");
        assert_eq!(own("root:staff"), (0, 50));
        assert_eq!(mkdir_owner("app", None, None), (0, 0), "no passwd file: root");
    }

    #[test]
    fn creates_missing_directories_below_existing_ones() {
        let t = tree(&[("usr", EntryKind::Dir)]);
        let dirs = plan_mkdir(&t, "/usr/src/app", (1000, 1000), 99).unwrap();
        let got: Vec<(String, u32, u64, i64)> =
            dirs.iter().map(|d| (d.path.to_string(), d.mode, d.uid, d.mtime)).collect();
        assert_eq!(
            got,
            [("usr".into(), 0o711, 7, 1), ("usr/src".into(), 0o755, 1000, 99), ("usr/src/app".into(), 0o755, 1000, 99)]
        );
        assert!(plan_mkdir(&t, "/usr", (0, 0), 99).unwrap().is_empty(), "an existing directory writes nothing");
    }

    #[test]
    fn symlinks_resolve_inside_the_image() {
        let t = tree(&[
            ("var", EntryKind::Dir),
            ("var/lib", EntryKind::Dir),
            ("tempest", EntryKind::Symlink("/var/lib/tempest".into())),
            ("up", EntryKind::Symlink("../../../../made".into())),
        ]);
        let dirs = plan_mkdir(&t, "/tempest", (0, 0), 5).unwrap();
        let paths: Vec<String> = dirs.iter().map(|d| d.path.to_string()).collect();
        assert_eq!(paths, ["var", "var/lib", "var/lib/tempest"]);
        let paths: Vec<String> =
            plan_mkdir(&t, "/up/x", (0, 0), 5).unwrap().iter().map(|d| d.path.to_string()).collect();
        assert_eq!(paths, ["made", "made/x"], "`..` stops at the image root");
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let t = tree(&[("app", EntryKind::File)]);
        let err = plan_mkdir(&t, "/app/sub", (0, 0), 5).unwrap_err();
        assert!(err.to_string().contains("/app exists in the image and is not a directory"), "{err}");
    }
}
