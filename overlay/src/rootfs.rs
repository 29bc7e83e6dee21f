//! The root a step or container runs in, whatever the storage driver: a stack of layer dirs mounted with a
//! fresh upper (kernel overlay, fuse-overlayfs) or copied (vfs), and afterwards the changes made in it,
//! written as a layer. As containers/storage hides its graph drivers, the engine says which driver to use
//! and never matches on it: how a driver mounts, where its changes are and whether its upper can serve as
//! a layer dir are answered here.
//!
//! Where the mount happens: in the engine process, not in the runtime's helper. kiln's front end enters
//! the user namespace and a private mount namespace before the engine starts, so a [`Rootfs`] made there
//! is already inside them (overlay then uses `userxattr`, see [`crate::mount`]). The runtime's helper
//! unshares its own mount namespace, which starts as a copy of the engine's and so holds this mount; it
//! bind-mounts the root and pivots into it, and needs nothing but its path (`RunSpec::rootfs`). Mounting
//! in the helper instead would split the setup in two: the engine reads the root before the command runs
//! (USER looked up in its /etc/passwd, `RUN --mount from=` views bound into other steps), and the
//! fuse-overlayfs daemon and the vfs copy must outlive the helper, whose changes are read after it exits.
//! So every mount of layers is made here, and runtime/src/mounts.rs only mounts what goes over the root.
//!
//! The scratch dir (a fresh dir on the layer dirs' filesystem) holds `diff` (the upper), `work` and
//! `merged` (the root). The kernel overlay's upper is in the form of a layer dir (char 0:0 whiteouts, the
//! opaque xattr), so after a commit the scratch dir can be renamed into the store as the new layer's dir
//! ([`Committed::into_layer_dir`]); fuse-overlayfs's and the copy's cannot, and the new layer's dir is
//! unpacked from its blob when a later step needs it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::diff::write_diff;
use crate::emit::{DiffError, DiffOptions, DiffReport};
use crate::layer::LayerWriter;
use crate::mount::{mount, Driver, MountError, MountGuard};
use crate::naive;

/// The name of the upper dir in a root's scratch dir, and so of the tree in a layer dir adopted from it.
pub const UPPER_DIR: &str = "diff";

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Unmount(#[from] MountError),
    #[error(transparent)]
    Diff(#[from] DiffError),
}

/// A mounted (or copied) root over a stack of layer dirs. Dropped, it is unmounted (a failure is logged)
/// and its scratch dir removed; [`Rootfs::finish`] does the same reporting the failure, and
/// [`Rootfs::commit`] writes its changes first.
#[derive(Debug)]
pub struct Rootfs {
    driver: Driver,
    lowers: Vec<PathBuf>,
    /// `<scratch>/merged`: the mount point, or the copy.
    root: PathBuf,
    /// Declared before `scratch`: a root is unmounted before its dirs are removed.
    guard: Option<MountGuard>,
    scratch: Option<tempfile::TempDir>,
}

impl Rootfs {
    /// Mounts `lowers` (layer dirs in overlay form, topmost first; read, never changed) with `driver` in the
    /// empty dir `scratch`, which the root owns from now on.
    pub fn mount(driver: Driver, lowers: Vec<PathBuf>, scratch: tempfile::TempDir) -> Result<Rootfs, MountError> {
        let [upper, work, root] = [UPPER_DIR, "work", "merged"].map(|name| scratch.path().join(name));
        // The copy driver needs neither an upper nor a work dir.
        let dirs = if driver.copies() { vec![&root] } else { vec![&upper, &work, &root] };
        for dir in dirs {
            fs::create_dir(dir).map_err(|source| MountError::Prepare { path: dir.clone(), source })?;
        }
        let guard = mount(driver, &lowers, &upper, &work, &root)?;
        Ok(Rootfs { driver, lowers, root, guard: Some(guard), scratch: Some(scratch) })
    }

    /// The root, for the runtime to pivot into.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn scratch(&self) -> &Path {
        self.scratch.as_ref().expect("a root keeps its scratch dir until it is consumed").path()
    }

    /// Unmounts. When that fails the scratch dir is left for the next build's cleanup (which runs in a
    /// mount namespace without this mount): removing it now would walk the still-mounted root.
    fn unmount(&mut self) -> Result<(), MountError> {
        let unmounted = self.guard.take().map_or(Ok(()), MountGuard::unmount);
        if unmounted.is_err() {
            if let Some(scratch) = self.scratch.take() {
                let _ = scratch.keep();
            }
        }
        unmounted
    }

    /// Unmounts and writes what changed in the root since it was mounted to `writer`, leaving out
    /// `opts.skip`, which is also removed from the upper so that a layer dir adopted from it agrees with the
    /// layer.
    pub fn commit<W: Write + 'static>(
        mut self,
        writer: &mut LayerWriter<W>,
        opts: &DiffOptions,
    ) -> Result<(DiffReport, Committed), CommitError> {
        let report = if self.driver.copies() {
            let report = naive::diff_to_layer(&self.root, &self.lowers, writer, opts)?;
            self.unmount()?;
            report
        } else {
            self.unmount()?;
            let upper = self.scratch().join(UPPER_DIR);
            for skipped in &opts.skip {
                remove_any(&upper.join(skipped));
            }
            write_diff(&upper, &self.lowers, writer, opts)?
        };
        let scratch = self.scratch.take().expect("a root keeps its scratch dir until it is consumed");
        Ok((report, Committed { scratch, layer_dir: self.driver == Driver::Overlay }))
    }

    /// Unmounts and removes the root, reporting a failed unmount.
    pub fn finish(mut self) -> Result<(), MountError> {
        self.unmount()
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            log::warn!("{e}");
        }
    }
}

/// A committed root's scratch dir: removed when dropped, unless taken as the new layer's dir.
#[derive(Debug)]
pub struct Committed {
    scratch: tempfile::TempDir,
    layer_dir: bool,
}

impl Committed {
    /// The scratch dir, to be renamed into the store as the new layer's dir (its [`UPPER_DIR`] holds the
    /// layer's tree), when the driver's upper is in the form of a layer dir (kernel overlay only); `None`
    /// otherwise, and the dir is removed.
    pub fn into_layer_dir(self) -> Option<PathBuf> {
        if !self.layer_dir {
            return None;
        }
        for name in ["work", "merged"] {
            let _ = fs::remove_dir_all(self.scratch.path().join(name));
        }
        Some(self.scratch.keep())
    }
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::reader::Reader;
    use crate::whiteout::XattrPrefix;

    /// A layer dir with `keep`, `gone` and `vol/old` in it.
    fn lower(root: &Path) -> PathBuf {
        let dir = root.join("lower");
        fs::create_dir_all(dir.join("vol")).unwrap();
        fs::write(dir.join("keep"), b"keep").unwrap();
        fs::write(dir.join("gone"), b"gone").unwrap();
        fs::write(dir.join("vol/old"), b"old").unwrap();
        dir
    }

    fn scratch(root: &Path) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(".step-").tempdir_in(root).unwrap()
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut reader = Reader::new(tar);
        let mut names = Vec::new();
        while let Some(entry) = reader.next_entry().unwrap() {
            names.push(entry.display().trim_end_matches('/').to_string());
        }
        names.sort();
        names
    }

    /// Runs a "step" in a root of `driver` and commits it: the layer has the changes but not the skipped
    /// volume, and the scratch dir is kept only where it is a layer dir.
    fn step(driver: Driver) {
        let tmp = tempfile::tempdir().unwrap();
        let lowers = vec![lower(tmp.path())];
        let root = Rootfs::mount(driver, lowers.clone(), scratch(tmp.path())).unwrap();
        let path = root.path();
        assert_eq!(fs::read(path.join("keep")).unwrap(), b"keep", "{driver}: the lowers show through");
        fs::write(path.join("new"), b"new").unwrap();
        fs::remove_file(path.join("gone")).unwrap();
        fs::write(path.join("vol/new"), b"in a volume").unwrap();

        let mut writer = LayerWriter::new(Vec::new(), Compression::None).unwrap();
        let opts = DiffOptions {
            prefix: XattrPrefix::for_current_namespace(),
            skip: vec![PathBuf::from("vol")],
            clamp_mtime: None,
        };
        let (report, committed) = root.commit(&mut writer, &opts).unwrap();
        let (tar, _) = writer.finish().unwrap();
        assert_eq!(names(&tar), [".wh.gone", "new"], "{driver}");
        assert_eq!(report.whiteouts, 1, "{driver}");
        assert_eq!(fs::read_dir(&lowers[0]).unwrap().count(), 3, "{driver}: the lower is untouched");
        match committed.into_layer_dir() {
            Some(dir) => {
                assert_eq!(driver, Driver::Overlay);
                let entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
                assert_eq!(entries, [UPPER_DIR], "only the upper is left to adopt");
                assert!(dir.join(UPPER_DIR).join("new").exists());
                assert!(!dir.join(UPPER_DIR).join("vol").exists(), "the skipped volume left the upper");
            }
            None => assert_ne!(driver, Driver::Overlay),
        }
        let left: Vec<_> =
            fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        let kept = usize::from(driver == Driver::Overlay);
        assert_eq!(left.iter().filter(|n| n.starts_with(".step-")).count(), kept, "{driver}: {left:?}");
    }

    #[test]
    fn the_copy_driver_commits_its_diff_and_keeps_nothing() {
        step(Driver::Vfs);
    }

    #[test]
    fn the_kernel_overlay_commits_its_upper_and_offers_it_as_a_layer_dir() {
        // Kernel overlay needs CAP_SYS_ADMIN in a mount namespace that allows it.
        if crate::mount::detect_driver() != Driver::Overlay {
            eprintln!("kernel overlay is not usable here; skipped");
            return;
        }
        step(Driver::Overlay);
    }

    #[test]
    fn finish_and_drop_unmount_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let lowers = vec![lower(tmp.path())];
        let drivers = [Driver::Vfs]
            .into_iter()
            .chain((crate::mount::detect_driver() == Driver::Overlay).then_some(Driver::Overlay));
        for driver in drivers {
            let root = Rootfs::mount(driver, lowers.clone(), scratch(tmp.path())).unwrap();
            root.finish().unwrap();
            drop(Rootfs::mount(driver, lowers.clone(), scratch(tmp.path())).unwrap());
            let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, ["lower"], "{driver}");
        }
    }

    #[test]
    fn a_root_that_cannot_be_made_says_where() {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = scratch(tmp.path());
        fs::create_dir(scratch.path().join("merged")).unwrap();
        let err = Rootfs::mount(Driver::Vfs, vec![lower(tmp.path())], scratch).unwrap_err();
        assert!(err.to_string().contains("merged"), "{err}");
    }
}
