//! Any bytes given to the layer applier as a layer blob may fail to apply, but
//! nothing outside the destination root may change: the root sits in a parent
//! directory next to a sentinel directory, and after every input the parent
//! must list only the two and the sentinel must be exactly as it was (names,
//! kinds, modes, owners, link counts, contents, link targets, mtimes).
//!
//! Run as root (as `make fuzz-apply` usually is), an escape would reach the
//! real filesystem with root's rights, so the applier runs in a worker thread
//! with a private mount namespace whose root is a fresh `nodev,nosuid` tmpfs
//! holding only the parent and a bind of /proc (the applier names open
//! directories through /proc/self/fd). There the check covers the whole
//! visible filesystem, not just the sentinel. Unprivileged, the worker cannot
//! do that (a user namespace needs a single-threaded process), and the check
//! falls back to a temp parent and its sentinel.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

use kiln_overlay::{apply_layer, ApplyOptions, WhiteoutFormat, XattrPrefix};
use libfuzzer_sys::fuzz_target;

/// What the worker compares before and after each input: everything visible
/// except the destination root (and /proc).
type Snapshot = BTreeMap<PathBuf, String>;

struct Worker {
    inputs: Sender<Vec<u8>>,
    verdicts: Receiver<Result<(), String>>,
}

fn worker() -> &'static Mutex<Worker> {
    static WORKER: OnceLock<Mutex<Worker>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (in_tx, in_rx) = channel::<Vec<u8>>();
        let (out_tx, out_rx) = channel();
        let (ready_tx, ready_rx) = channel();
        std::thread::spawn(move || {
            let sandbox = Sandbox::new();
            let _ = ready_tx.send(sandbox.host_dir.clone());
            for data in in_rx {
                let _ = out_tx.send(sandbox.check(&data));
            }
        });
        // The mount point is not needed on the host once the worker is inside it.
        if let Ok(Some(dir)) = ready_rx.recv() {
            let _ = fs::remove_dir(dir);
        }
        Mutex::new(Worker { inputs: in_tx, verdicts: out_rx })
    })
}

struct Sandbox {
    /// Holds `root` and `sentinel`.
    parent: PathBuf,
    /// Whether the worker is confined to a tmpfs root (then `/` is checked whole).
    confined: bool,
    /// The host directory the tmpfs was mounted on, for the main thread to remove.
    host_dir: Option<PathBuf>,
    /// Keeps the unconfined fallback's temp dir alive.
    _temp: Option<tempfile::TempDir>,
}

impl Sandbox {
    fn new() -> Sandbox {
        match confine() {
            Ok(host_dir) => {
                let parent = PathBuf::from("/parent");
                fs::create_dir(&parent).expect("create /parent in the tmpfs");
                let sb = Sandbox { parent, confined: true, host_dir: Some(host_dir), _temp: None };
                sb.make_sentinel();
                sb
            }
            Err(why) => {
                eprintln!("apply_layer fuzz: not confined ({why}); checking only the sentinel next to the root");
                let temp = tempfile::tempdir().expect("temp parent");
                let sb = Sandbox { parent: temp.path().to_path_buf(), confined: false, host_dir: None, _temp: Some(temp) };
                sb.make_sentinel();
                sb
            }
        }
    }

    fn root(&self) -> PathBuf {
        self.parent.join("root")
    }

    /// A sentinel an escaping layer would most likely hit: files, a nested
    /// directory, a symlink, a file with two links.
    fn make_sentinel(&self) {
        let s = self.parent.join("sentinel");
        fs::create_dir_all(s.join("dir/deeper")).unwrap();
        fs::write(s.join("file"), b"sentinel\n").unwrap();
        fs::write(s.join("dir/inner"), b"inner\n").unwrap();
        fs::write(s.join("dir/deeper/x"), b"x\n").unwrap();
        fs::hard_link(s.join("file"), s.join("file-link")).unwrap();
        std::os::unix::fs::symlink("file", s.join("sym")).unwrap();
        fs::set_permissions(s.join("dir"), fs::Permissions::from_mode(0o750)).unwrap();
    }

    /// Applies `data` three times into a fresh root (deleting whiteouts, as overlay
    /// markers, as a plain archive) and compares everything outside the root with how it was.
    fn check(&self, data: &[u8]) -> Result<(), String> {
        let before = self.snapshot();
        let layer = |whiteouts| ApplyOptions { whiteouts, prefix: XattrPrefix::user(), ..ApplyOptions::default() };
        let modes = [
            ("rootfs", layer(WhiteoutFormat::Naive)),
            ("layer dir", layer(WhiteoutFormat::Overlay)),
            ("plain archive", ApplyOptions::plain()),
        ];
        for (whiteouts, opts) in modes {
            let root = self.root();
            fs::create_dir(&root).map_err(|e| format!("create the root: {e}"))?;
            // Errors are fine; escapes are not.
            let _ = apply_layer(data, &root, &opts);
            let names: Vec<String> = fs::read_dir(&self.parent)
                .map_err(|e| format!("list the parent: {e}"))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()).unwrap_or_default())
                .collect();
            let mut sorted = names.clone();
            sorted.sort();
            if sorted != ["root", "sentinel"] {
                return Err(format!("{whiteouts}: the parent holds {sorted:?}, not just root and sentinel"));
            }
            let after = self.snapshot();
            if after != before {
                return Err(format!("{whiteouts}: outside the root changed:\n{}", diff(&before, &after)));
            }
            remove_tree(&root).map_err(|e| format!("remove the root: {e}"))?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        let top = if self.confined { PathBuf::from("/") } else { self.parent.clone() };
        let skip = [self.root(), PathBuf::from("/proc")];
        walk(&top, &skip, &mut out);
        out
    }
}

fn walk(p: &Path, skip: &[PathBuf], out: &mut Snapshot) {
    if skip.iter().any(|s| s == p) {
        return;
    }
    let md = match fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) => {
            out.insert(p.to_path_buf(), format!("unreadable: {e}"));
            return;
        }
    };
    let common = format!(
        "mode {:o} owner {}:{} links {} mtime {}.{}",
        md.mode(),
        md.uid(),
        md.gid(),
        md.nlink(),
        md.mtime(),
        md.mtime_nsec()
    );
    if md.file_type().is_symlink() {
        let target = fs::read_link(p).map(|t| t.display().to_string()).unwrap_or_default();
        out.insert(p.to_path_buf(), format!("symlink -> {target} {common}"));
    } else if md.is_dir() {
        // The root's parent: its mtime and link count move as the root comes and goes.
        let common = if skip.iter().any(|s| s.parent() == Some(p)) {
            format!("mode {:o} owner {}:{}", md.mode(), md.uid(), md.gid())
        } else {
            common
        };
        out.insert(p.to_path_buf(), format!("dir {common}"));
        let mut children: Vec<PathBuf> = match fs::read_dir(p) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                out.insert(p.join("<list>"), format!("unlistable: {e}"));
                return;
            }
        };
        children.sort();
        for c in children {
            walk(&c, skip, out);
        }
    } else {
        let content = if md.is_file() { fs::read(p).unwrap_or_default() } else { Vec::new() };
        out.insert(p.to_path_buf(), format!("{:?} {common} {:?}", md.file_type(), String::from_utf8_lossy(&content)));
    }
}

fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut lines = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => lines.push(format!("  removed {}: {b}", p.display())),
            Some(a) if a != b => lines.push(format!("  changed {}: {b} -> {a}", p.display())),
            _ => {}
        }
    }
    for (p, a) in after {
        if !before.contains_key(p) {
            lines.push(format!("  added {}: {a}", p.display()));
        }
    }
    lines.join("\n")
}

/// Removes the applied root whatever the layer made of it (directories without
/// write or search permission included).
fn remove_tree(root: &Path) -> std::io::Result<()> {
    fn open_up(p: &Path) {
        if let Ok(md) = fs::symlink_metadata(p) {
            if md.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    open_up(root);
    fs::remove_dir_all(root)
}

/// Gives this thread a private mount namespace whose root is a fresh tmpfs
/// with /proc bound in; returns the host directory the tmpfs sits on.
fn confine() -> Result<PathBuf, String> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    // CLONE_FS: the root directory becomes this thread's own, so chroot does
    // not move libFuzzer's main thread.
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("make mounts private: {e}"))?;
    let dir = std::env::temp_dir().join(format!("kiln-fuzz-apply-{}", std::process::id()));
    fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    mount(Some("tmpfs"), &dir, Some("tmpfs"), flags, Some("size=256m,mode=0755"))
        .map_err(|e| format!("mount a tmpfs: {e}"))?;
    fs::create_dir(dir.join("proc")).map_err(|e| format!("mkdir proc: {e}"))?;
    mount(Some("/proc"), &dir.join("proc"), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| format!("bind /proc: {e}"))?;
    nix::unistd::chroot(&dir).map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(dir)
}

fuzz_target!(|data: &[u8]| {
    let w = worker().lock().unwrap_or_else(|e| e.into_inner());
    w.inputs.send(data.to_vec()).expect("the worker is gone");
    match w.verdicts.recv().expect("the worker is gone") {
        Ok(()) => {}
        Err(escape) => panic!("a layer changed something outside its root:\n{escape}"),
    }
});
