//! Removing images as the unprivileged user: layer dirs holding files of
//! subordinate ids and unsearchable directories go with `rmi` and `prune`,
//! and a layer dir that a removal cut short is never stacked again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_integration::{static_busybox, Sandbox};

/// Everything under `kiln/layers` but the shared empty dir.
fn layer_entries(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("kiln/layers"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| n != "empty");
    names.sort();
    names
}

fn blob_count(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256")).map(|d| d.count()).unwrap_or(0)
}

/// Owners of everything below `dir` (walked as root, which the test is when
/// it drops privileges for kiln).
fn owners(dir: &Path) -> std::collections::BTreeSet<u32> {
    let mut found = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        found.insert(meta.uid());
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    found
}

const OWNED: &str = "FROM scratch\n\
    COPY busybox /bin/busybox\n\
    RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
    RUN mkdir -p /home/u/private/deep && echo secret > /home/u/private/deep/f \
        && chown -R 1000:1000 /home/u && chmod 700 /home/u /home/u/private /home/u/private/deep \
        && mkdir -p /locked/inner && echo x > /locked/inner/g && chmod 000 /locked/inner /locked\n";

#[test]
fn layers_of_subordinate_ids_and_mode_000_dirs_are_removed() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    let store = sb.store();
    sb.build(OWNED, "owned");
    // The RUN step's layer dir is made from its upper dir: it holds files of
    // a subordinate id, which the user's own uid cannot remove.
    assert!(!layer_entries(&store).is_empty());
    if sb.drops_privileges() {
        let (uid, _) = sb.ids();
        let found = owners(&store.join("kiln/layers"));
        assert!(found.iter().any(|&o| o != uid && o != 0), "no subordinate-id files: {found:?}");
        let plain = sb.sh(&format!("rm -rf {}/kiln/layers/*", store.display()));
        assert!(!plain.success(), "the user alone cannot remove them: {}", plain.transcript());
    }

    let rmi = sb.kiln(&["rmi", "owned"]);
    rmi.ok();
    assert!(!rmi.stderr.contains("could not remove"), "{}", rmi.transcript());
    let prune = sb.kiln(&["prune", "-f"]);
    prune.ok();
    assert!(!prune.stderr.contains("could not remove"), "{}", prune.transcript());
    assert_eq!(layer_entries(&store), Vec::<String>::new(), "{}", prune.transcript());
    assert_eq!(blob_count(&store), 0, "rmi then prune leaves nothing: {}", prune.transcript());

    // One run of `system prune -a -f` does it all, a layer whose root
    // directory is mode 000 included.
    sb.build(&format!("{OWNED}RUN chmod 000 /\n"), "owned");
    sb.build("FROM scratch\nCOPY busybox /bin/busybox\n", "other");
    sb.kiln(&["run", "other", "/bin/busybox", "true"]).ok();
    let all = sb.kiln(&["system", "prune", "-a", "-f"]);
    all.ok();
    assert!(!all.stderr.contains("could not remove"), "{}", all.transcript());
    assert_eq!(layer_entries(&store), Vec::<String>::new(), "{}", all.transcript());
    assert_eq!(blob_count(&store), 0, "{}", all.transcript());
    assert_eq!(sb.kiln(&["images", "-a", "-q"]).stdout, "");
}

/// The layer dir of the `data` layer: the one whose tree holds `/data`.
fn data_layer(store: &Path) -> PathBuf {
    layer_entries(store)
        .into_iter()
        .map(|n| store.join("kiln/layers").join(n))
        .find(|p| p.join("diff/data").is_dir())
        .expect("a layer dir holding /data")
}

#[test]
fn a_layer_dir_cut_short_is_never_stacked() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    for i in 0..200 {
        sb.write(&format!("ctx/data/f{i:03}"), format!("file {i}\n"));
    }
    sb.build("FROM scratch\nCOPY busybox /bin/busybox\nCOPY data /data\n", "base");
    let store = sb.store();
    let count = |sb: &Sandbox| {
        let out = sb.kiln(&["run", "base", "/bin/busybox", "ls", "/data"]);
        out.ok();
        out.stdout.lines().count()
    };
    assert_eq!(count(&sb), 200);
    let layer = data_layer(&store);
    assert!(layer.join("verified").is_file());

    // What an older kiln's in-place removal, killed, left: the marker gone
    // and half the files. And what a removal moved aside and did not finish.
    std::fs::remove_file(layer.join("verified")).unwrap();
    for i in 0..100 {
        std::fs::remove_file(layer.join(format!("diff/data/f{i:03}"))).unwrap();
    }
    let name = layer.file_name().unwrap().to_string_lossy().into_owned();
    let aside = store.join("kiln/layers").join(format!(".trash-{name}-killed"));
    std::fs::create_dir_all(aside.join("diff/data")).unwrap();
    std::fs::write(aside.join("diff/data/f150"), "left over\n").unwrap();
    std::fs::write(aside.join("verified"), format!("sha256:{name}\n")).unwrap();
    sb.give_tree(&aside);

    assert_eq!(count(&sb), 200, "the layer is built again from its blob, not stacked half removed");
    assert!(data_layer(&store).join("verified").is_file());
    let from = sb.build(
        "FROM base\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox ls /data | /bin/busybox wc -l > /n\"]\n",
        "child",
    );
    assert_eq!(from.file_str("n").trim(), "200");

    // The next prune removes what was left aside; the images stay whole.
    let prune = sb.kiln(&["prune", "-f"]);
    prune.ok();
    assert!(!layer_entries(&store).iter().any(|n| n.starts_with('.')), "{:?}", layer_entries(&store));
    assert_eq!(count(&sb), 200);
}

/// What the issue saw: a SIGKILL during `kiln rmi` left a layer dir with
/// 4,831 of its 20,000 files under its real name, and the image, back from
/// the build cache, was then stacked on it. Now the dir is moved aside
/// before anything in it is removed: after the kill, a layer dir is whole or
/// gone, and the image comes back whole. (The kill is sent as soon as the
/// layer's files under its real name are fewer: mid-removal, with 5,000.)
#[test]
fn rmi_killed_midway_leaves_no_half_deleted_layer() {
    const FILES: usize = 5_000;
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    let many = sb.mkdir("ctx/many");
    for i in 0..FILES {
        std::fs::write(many.join(format!("f{i:05}")), "x").unwrap();
    }
    sb.give_tree(&many);
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nCOPY many /many\n";
    sb.build(dockerfile, "big");
    let count = |sb: &Sandbox| {
        let out = sb.kiln(&["run", "big", "/bin/busybox", "ls", "/many"]);
        out.ok();
        out.stdout.lines().count()
    };
    assert_eq!(count(&sb), FILES); // and the layer dirs are made
    let store = sb.store();
    let script = format!(
        "setsid {kiln} --root {store} rmi big > rmi.log 2>&1 &\n\
         pid=$!\n\
         for i in $(seq 1 5000); do [ $(ls {store}/kiln/layers/*/diff/many 2>/dev/null | wc -l) -lt {FILES} ] && break; done\n\
         env kill -9 -- -$pid\n\
         wait $pid\n\
         cat rmi.log",
        kiln = sb.kiln_path().display(),
        store = store.display()
    );
    let killed = sb.sh(&script);
    // Whatever moment the kill hit: each layer dir under its real name is whole.
    for name in layer_entries(&store).into_iter().filter(|n| !n.starts_with('.')) {
        let dir = store.join("kiln/layers").join(&name);
        if dir.join("diff/many").exists() {
            let n = std::fs::read_dir(dir.join("diff/many")).unwrap().count();
            assert_eq!(n, FILES, "{name} is half deleted under its name:\n{}", killed.transcript());
        }
    }

    // The image comes back from the build cache, whole.
    let again = sb.kiln(&["build", "-t", "big", sb.ctx().to_str().unwrap()]);
    again.ok();
    assert_eq!(again.stdout.matches("--> Using cache").count(), 2, "{}", again.transcript());
    assert_eq!(count(&sb), FILES);
    // What the kill left aside goes with the next prune.
    sb.kiln(&["prune", "-f"]).ok();
    assert!(!layer_entries(&store).iter().any(|n| n.starts_with('.')), "{:?}", layer_entries(&store));
    assert_eq!(count(&sb), FILES);
}

/// With no subordinate ids (a single-id map), every file is the user's own:
/// read-only and mode-000 directories still go with `rmi` and `prune`.
#[test]
fn single_id_layers_with_unsearchable_dirs_are_removed() {
    let Some(sb) = Sandbox::without_subids() else {
        eprintln!("skipped: the current user has a subordinate id range");
        return;
    };
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.build(
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /ro/x /locked/inner && /bin/busybox chmod 555 /ro/x /ro && /bin/busybox chmod 000 /locked/inner /locked\"]\n",
        "single",
    );
    let store = sb.store();
    assert!(!layer_entries(&store).is_empty());
    let rmi = sb.kiln(&["rmi", "single"]);
    rmi.ok();
    let prune = sb.kiln(&["prune", "-f"]);
    prune.ok();
    for out in [&rmi, &prune] {
        assert!(!out.stderr.contains("could not remove"), "{}", out.transcript());
    }
    assert_eq!(layer_entries(&store), Vec::<String>::new(), "{}", prune.transcript());
    assert_eq!(blob_count(&store), 0);
}
