//! kiln rmi, image prune, system prune and system df: what is removed, what
//! is kept, and sizes checked against `du -sb`.

use crate::cli_util;

use std::time::{Duration, SystemTime};

use cli_util::{du_sb, rows, Env};
use serde_json::Value;

/// The chain ids of an image (from `kiln inspect`'s diff ids).
fn chain_ids(env: &Env, image: &str) -> Vec<String> {
    let v = env.inspect(image);
    let diff_ids: Vec<String> =
        v["RootFS"]["Layers"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    kiln::store::chain_ids(&diff_ids)
}

fn make_layer_dir(env: &Env, name: &str, age: Duration) -> std::path::PathBuf {
    let dir = env.store.join("kiln/layers").join(name);
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::write(dir.join("usr/bin/tool"), "x".repeat(5000)).unwrap();
    // Read-only directories, as image layers have them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("usr/bin"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let when = SystemTime::now() - age;
    let f = std::fs::File::open(&dir).unwrap();
    f.set_modified(when).unwrap();
    dir
}

fn digest_of(env: &Env, image: &str) -> (String, String) {
    let v = env.inspect(image);
    (v["Digest"].as_str().unwrap().to_string(), format!("sha256:{}", v["Id"].as_str().unwrap()))
}

#[test]
fn rmi_untags_refuses_and_frees_only_unshared_blobs() {
    let env = Env::new();
    // Same COPY layer, different config: the layer blob is shared.
    env.build("app:v1", &[("shared", "shared content\n")], "ENV V=1\n");
    let v2 = env.build("app:v2", &[("shared", "shared content\n")], "ENV V=2\n");
    env.ok(&["tag", "app:v2", "app:alias"]);
    let (m1, c1) = digest_of(&env, "app:v1");
    let layer = env.inspect("app:v1")["RootFS"]["Layers"][0].as_str().unwrap().to_string();
    let before = env.blob_count();
    assert_eq!(before, 5, "one layer, two configs, two manifests");

    // A name of an image with other names: untag only.
    assert_eq!(env.ok(&["rmi", "app:alias"]), "Untagged: app:alias\n");
    assert_eq!(env.blob_count(), before);
    // By id with two names: refused without -f.
    env.ok(&["tag", "app:v2", "app:alias"]);
    let err = env.fails(&["rmi", &v2[..12]]);
    assert!(err.contains("must be forced") && err.contains("multiple repositories"), "{err}");
    assert_eq!(env.blob_count(), before);

    // app:v1 goes: its manifest and config, not the shared layer.
    let out = env.ok(&["rmi", "app:v1"]);
    assert_eq!(out, format!("Untagged: app:v1\nDeleted: {c1}\n"));
    assert_eq!(env.blob_count(), before - 2);
    assert!(!env.has_blob(&m1) && !env.has_blob(&c1));
    let manifest2: Value = serde_json::from_slice(
        &std::fs::read(env.store.join("blobs/sha256").join(digest_of(&env, "app:v2").0.trim_start_matches("sha256:")))
            .unwrap(),
    )
    .unwrap();
    let shared_blob = manifest2["layers"][0]["digest"].as_str().unwrap().to_string();
    assert!(env.has_blob(&shared_blob), "the shared layer {layer} stays");

    // -f by id removes every name and the image, and then nothing is left.
    let out = env.ok(&["rmi", "-f", &v2[..12]]);
    assert!(
        out.contains("Untagged: app:v2") && out.contains("Untagged: app:alias") && out.contains("Deleted: sha256:")
    );
    assert_eq!(env.blob_count(), 0);
    assert_eq!(env.ok(&["images", "-q"]), "");
    // Unknown names fail, the others are still removed.
    env.build("b:1", &[("f", "f")], "");
    let out = env.kiln(&["rmi", "nope:1", "b:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Untagged: b:1"));
}

#[test]
fn rmi_respects_the_build_cache_and_layer_dirs() {
    let env = Env::new();
    env.build("app:v1", &[("a", "aaa\n")], "");
    env.build("keep:1", &[("k", "kkk\n")], "");
    let (manifest, config) = digest_of(&env, "app:v1");
    let app_chain = chain_ids(&env, "app:v1").pop().unwrap();
    let keep_chain = chain_ids(&env, "keep:1").pop().unwrap();
    let app_dir = make_layer_dir(&env, app_chain.trim_start_matches("sha256:"), Duration::ZERO);
    let keep_dir = make_layer_dir(&env, &keep_chain.replace(':', "-"), Duration::ZERO);
    let odd_dir = make_layer_dir(&env, "not-a-chain-id", Duration::from_secs(86400));
    let stale_chain = format!("sha256:{}", "e".repeat(64));
    let fresh_orphan = make_layer_dir(&env, &stale_chain, Duration::ZERO);
    // What a killed kiln leaves: an unpack aside, old and fresh.
    let old_unpack = make_layer_dir(&env, ".unpack-killed", Duration::from_secs(7200));
    let fresh_unpack = make_layer_dir(&env, ".unpack-running", Duration::ZERO);

    // A build-cache record that names the image: rmi refuses without -f.
    std::fs::create_dir_all(env.store.join("kiln/cache")).unwrap();
    std::fs::write(env.store.join("kiln/cache/step.json"), format!(r#"{{"result":"{manifest}"}}"#)).unwrap();
    let err = env.fails(&["rmi", "app:v1"]);
    assert!(err.contains("build cache"), "{err}");
    // With -f the tag goes, but what the cache names stays (an intermediate image).
    let out = env.ok(&["rmi", "-f", "app:v1"]);
    assert_eq!(out, "Untagged: app:v1\n");
    assert!(env.has_blob(&manifest) && env.has_blob(&config));
    assert!(app_dir.exists(), "the cache keeps the image, so its layer dir stays");
    assert!(!env.ok(&["images", "-q"]).contains(&config[7..19]), "hidden without -a");
    assert!(env.ok(&["images", "-a", "-q"]).contains(&config[7..19]), "an intermediate image with -a");

    // Without the cache record, pruning removes it and its layer dir; a fresh
    // orphan dir (maybe a build in progress) and a dir named oddly stay.
    std::fs::remove_file(env.store.join("kiln/cache/step.json")).unwrap();
    env.ok(&["image", "prune", "-f"]);
    assert!(!env.has_blob(&manifest) && !env.has_blob(&config));
    assert!(!app_dir.exists(), "read-only dirs inside are no obstacle");
    assert!(keep_dir.exists() && odd_dir.exists() && fresh_orphan.exists());
    // Once old enough, the orphan goes too.
    std::fs::File::open(&fresh_orphan).unwrap().set_modified(SystemTime::now() - Duration::from_secs(7200)).unwrap();
    let out = env.ok(&["system", "prune", "-f"]);
    assert!(out.contains(&"e".repeat(64)), "{out}");
    assert!(!fresh_orphan.exists() && keep_dir.exists() && odd_dir.exists());
    assert!(!old_unpack.exists() && fresh_unpack.exists(), "an old unpack aside goes, a fresh one stays");
}

#[test]
fn image_prune_removes_dangling_then_all() {
    let env = Env::new();
    let tagged = env.build("app:v1", &[("a", "1")], "LABEL keep=yes\n");
    let dangling = env.build("", &[("a", "2")], "");
    let replaced = env.build("app:v2", &[("a", "3")], "");
    env.build("app:v2", &[("a", "4")], ""); // the old app:v2 becomes dangling
    let listed = env.ok(&["images", "-q", "--filter", "dangling=true"]);
    assert!(listed.contains(&dangling[..12]) && listed.contains(&replaced[..12]), "{listed}");

    // No confirmation: nothing happens.
    let out = env.kiln(&["image", "prune"]).write_stdin("n\n").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("WARNING! This will remove all dangling images."));
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 4);

    let out = env.kiln(&["image", "prune"]).write_stdin("y\n").output().unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.contains(&format!("deleted: sha256:{dangling}")), "{out}");
    assert!(out.contains(&format!("deleted: sha256:{replaced}")), "{out}");
    assert!(out.trim_end().lines().last().unwrap().starts_with("Total reclaimed space: "), "{out}");
    assert!(!out.contains("0B"), "{out}");
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 2);

    // Filters: nothing is older than an hour; label!=keep spares app:v1.
    let out = env.ok(&["image", "prune", "-af", "--filter", "until=1h"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    let out = env.ok(&["image", "prune", "-af", "--filter", "label!=keep"]);
    assert!(out.contains("untagged: app:v2"), "{out}");
    assert_eq!(env.ok(&["images", "-q"]).trim(), &tagged[..12]);
    env.ok(&["image", "prune", "-af"]);
    assert_eq!(env.blob_count(), 0);
}

/// `system df --format json` rows by type: (count, active, size bytes, reclaimable bytes).
fn df(env: &Env) -> std::collections::BTreeMap<String, (u64, u64, u64, u64)> {
    env.ok(&["system", "df", "--format", "json"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let n = |k: &str| v[k].as_u64().unwrap();
            (
                v["Type"].as_str().unwrap().to_string(),
                (n("TotalCount"), n("Active"), n("SizeBytes"), n("ReclaimableBytes")),
            )
        })
        .collect()
}

fn total(rows: &std::collections::BTreeMap<String, (u64, u64, u64, u64)>) -> u64 {
    rows.values().map(|r| r.2).sum()
}

#[test]
fn system_df_adds_up_to_du_and_system_prune_reclaims() {
    let env = Env::new();
    env.build("app:v1", &[("a", &"a".repeat(20_000)), ("b", "bbb")], "");
    env.build("", &[("c", &"c".repeat(10_000))], "");
    let chain = chain_ids(&env, "app:v1").pop().unwrap();
    make_layer_dir(&env, chain.trim_start_matches("sha256:"), Duration::ZERO);
    make_layer_dir(&env, &"f".repeat(64), Duration::from_secs(7200));
    let mount = env.store.join("kiln/cache-mounts/go-build");
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::write(mount.join("obj"), vec![7u8; 12_345]).unwrap();
    std::fs::create_dir_all(env.store.join("kiln/cache")).unwrap();
    std::fs::write(env.store.join("kiln/cache/rec.json"), r#"{"note":"no digests"}"#).unwrap();
    // A hard link is counted once, as du does.
    std::fs::hard_link(mount.join("obj"), mount.join("obj-link")).unwrap();

    let rows_before = df(&env);
    let du = du_sb(&env.store).expect("du is installed");
    // Exact: df walks every file and directory as du -sb does (apparent
    // sizes, hard links once); the Metadata row holds the directories,
    // index.json, oci-layout and lock files.
    assert_eq!(total(&rows_before), du, "{rows_before:?}");
    assert!(rows_before["Metadata"].2 < 64 * 1024, "metadata is small: {rows_before:?}");
    assert_eq!(rows_before["Images"].0, 2);
    assert_eq!(rows_before["Images"].1, 1);
    assert_eq!(rows_before["Layer dirs"].0, 1);
    assert_eq!(rows_before["Layer dirs"].1, 1);
    // No image has the chain of the other dir: its own row.
    assert_eq!(rows_before["Unreachable layer dirs"].0, 1);
    assert_eq!(rows_before["Temp files"].0, 0);
    assert_eq!(rows_before["Cache mounts"].0, 1);
    assert_eq!(rows_before["Cache mounts"].2, 12_345 + 4096, "the file once and its directory");
    assert_eq!(rows_before["Build Cache"].0, 1);

    // The table and -v print the same numbers in docker's layout.
    let table = rows(&env.ok(&["system", "df"]));
    assert_eq!(table[0], ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    assert_eq!(table[1][..3], ["Images", "2", "1"]);
    let verbose = env.ok(&["system", "df", "-v"]);
    assert!(verbose.contains(&format!("({du} bytes, as du -sb counts)")), "{verbose}");

    // system prune: the dangling image, the cache record, the old orphan
    // layer dir; --volumes the cache mount. Reclaimed = what du lost.
    let out = env.ok(&["system", "prune", "-f", "--volumes"]);
    let reclaimed_line = out.lines().last().unwrap().to_string();
    assert!(reclaimed_line.starts_with("Total reclaimed space: "), "{out}");
    let rows_after = df(&env);
    let du_after = du_sb(&env.store).unwrap();
    assert_eq!(total(&rows_after), du_after);
    assert_eq!(rows_after["Images"].0, 1);
    assert_eq!(rows_after["Images"].3, 0, "nothing reclaimable left");
    assert_eq!(rows_after["Layer dirs"].0, 1);
    assert_eq!(rows_after["Unreachable layer dirs"].0, 0);
    assert_eq!(rows_after["Cache mounts"].0, 0);
    assert_eq!(rows_after["Build Cache"].0, 0);
    let freed = rows_before["Images"].3
        + rows_before["Layer dirs"].3
        + rows_before["Unreachable layer dirs"].3
        + rows_before["Cache mounts"].3
        + rows_before["Build Cache"].3;
    // Exactly what du lost: removals count files and directories as df does.
    assert_eq!(du - du_after, freed);
    assert_eq!(reclaimed_line, format!("Total reclaimed space: {}", kiln::humanize::table_size(freed)));
}

/// Real build-cache records (left by `kiln build`) keep the layers they name
/// through `rmi`, as docker's build cache does; `system prune -a` frees them
/// and the next build of the same Dockerfile then starts over.
#[test]
fn build_cache_outlives_rmi_until_system_prune() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "cached content").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    let ctx = ctx.to_str().unwrap();
    env.ok(&["build", "-q", "-t", "app:1", ctx]);
    let layers = env.blob_count() - 2; // everything but manifest and config
    assert_eq!(layers, 1);

    env.ok(&["rmi", "app:1"]);
    assert_eq!(env.blob_count(), 1, "the cached layer stays after rmi");
    let again = env.ok(&["build", "-t", "app:1", ctx]);
    assert!(again.contains("--> Using cache"), "{again}");

    env.ok(&["rmi", "app:1"]);
    env.ok(&["system", "prune", "-a", "-f"]);
    assert_eq!(env.blob_count(), 0, "system prune -a drops the build cache and its layers");
    let fresh = env.ok(&["build", "-t", "app:1", ctx]);
    assert!(!fresh.contains("Using cache"), "{fresh}");
}

/// `kiln prune --cache-mounts` (issue 5's spelling of `system prune --volumes`)
/// removes RUN cache mounts; without the flag they stay.
#[test]
fn prune_cache_mounts() {
    let env = Env::new();
    env.build("app:1", &[("f", "f")], "");
    let mount = env.store.join("kiln/cache-mounts/go-build");
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::write(mount.join("obj"), "cached object").unwrap();
    env.ok(&["prune", "-f"]);
    assert!(mount.join("obj").exists(), "cache mounts stay without --cache-mounts");
    env.ok(&["prune", "-f", "--cache-mounts"]);
    assert!(!mount.exists(), "prune --cache-mounts removes them");
    assert!(env.ok(&["images", "-q"]).trim().len() >= 12, "tagged images stay");
}

/// Docker's prune semantics: `prune -f` keeps the build cache tagged images
/// were built from (an unchanged rebuild is all cache hits, metadata steps
/// included, and gives the same image) and drops the rest; `-a` drops all
/// cache and every image in one run.
#[test]
fn prune_keeps_the_cache_of_tagged_images_and_all_drops_it() {
    let env = Env::new();
    let write_ctx = |name: &str, dockerfile: &str| {
        let ctx = env.path(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("f"), format!("{name} f")).unwrap();
        std::fs::write(ctx.join("g"), format!("{name} g")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        ctx.to_str().unwrap().to_string()
    };
    // A stage the image only copies from holds nothing of its own in the
    // image, yet the image was built from it.
    let app = write_ctx(
        "app",
        "FROM scratch AS tools\nCOPY g /tool\nENV T=1\n\
         FROM scratch\nCOPY f /f\nENV A=1\nCOPY --from=tools /tool /g\nLABEL x=y\nCMD [\"/f\"]\n",
    );
    let other = write_ctx("other", "FROM scratch\nCOPY f /other\nENV B=2\n");
    let id = env.ok(&["build", "-q", "-t", "app:1", &app]);
    env.ok(&["build", "-q", &other]); // dangling: nothing tagged was built from it
    let records = |env: &Env| {
        walkdir::WalkDir::new(env.store.join("kiln/cache/steps"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count()
    };
    assert_eq!(records(&env), 9);

    let out = env.ok(&["prune", "-f"]);
    assert!(out.contains("Deleted build cache objects: 2"), "the dangling build's two records go:\n{out}");
    assert_eq!(records(&env), 7, "app:1's records stay, its tools stage's too");
    let again = env.ok(&["build", "-t", "app:1", &app]);
    assert_eq!(again.matches("--> Using cache").count(), 7, "{again}");
    assert!(again.contains(&id.trim()[..12]), "the same image:\n{again}");
    let rebuilt = env.ok(&["build", &other]);
    assert!(!rebuilt.contains("Using cache"), "{rebuilt}");

    // A second prune drops the dangling rebuild again, nothing of app:1's
    // step records; the step images the two builds printed (intermediate
    // images, build cache like docker's) go too.
    let intermediates = walkdir::WalkDir::new(env.store.join("kiln/cache/intermediate"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count();
    assert!(intermediates > 0, "the non-quiet builds wrote step images");
    let out = env.ok(&["prune", "-f"]);
    assert!(out.contains(&format!("Deleted build cache objects: {}", 2 + intermediates)), "{out}");
    assert_eq!(records(&env), 7);
    let out = env.ok(&["prune", "-f"]);
    assert!(!out.contains("build cache"), "{out}");

    // -a: all cache and all images, in one run.
    env.ok(&["system", "prune", "-a", "-f"]);
    assert_eq!(records(&env), 0);
    assert_eq!(env.blob_count(), 0);
    assert_eq!(env.ok(&["images", "-a", "-q"]), "");
    let fresh = env.ok(&["build", "-t", "app:1", &app]);
    assert!(!fresh.contains("Using cache"), "{fresh}");
}

/// kiln as the tests run it, as a std Command that can be spawned.
fn spawnable(env: &Env, args: &[&str]) -> std::process::Command {
    let _ = env.kiln(&[]); // hands the sandbox to the test user
    let mut cmd = if cli_util::is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid", cli_util::TEST_USER, "--regid", cli_util::TEST_USER, "--init-groups", "--"]);
        c.arg(env.path("bin/kiln"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
    };
    cmd.arg("--root")
        .arg(&env.store)
        .args(args)
        .env_remove("KILN_ROOT")
        .env("HOME", env.dir.path())
        .env("TMPDIR", env.dir.path())
        .current_dir(env.dir.path());
    cmd
}

/// Partial blobs and scratch dirs of kiln processes that are gone go with
/// `system prune` (read-only dirs in them too); while a build holds the
/// builds lock, prune waits for it instead of touching its temp files.
#[test]
fn system_prune_removes_temp_files_of_dead_processes_only() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.build("app:1", &[("f", "f")], "");
    let tmp = env.store.join("kiln/tmp");
    std::fs::write(tmp.join("blob-killed"), vec![1u8; 300_000]).unwrap();
    let scratch = tmp.join("build-killed/from-0/etc");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(tmp.join("build-killed/from-0"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // The temp file of an atomic index.json replace: any command may be
    // writing one right now, so only an old one goes.
    std::fs::write(tmp.join(".tmp-old"), "{}").unwrap();
    std::fs::File::open(tmp.join(".tmp-old"))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    std::fs::write(tmp.join(".tmp-fresh"), "{}").unwrap();

    // A running build's hold on the builds lock.
    let lock_file = std::fs::File::options().read(true).write(true).open(env.store.join("kiln/builds.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockSharedNonblock).unwrap();
    let mut prune = spawnable(&env, &["-v", "system", "prune", "-f"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(prune.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "prune ended without waiting:\n{seen}");
        seen.push_str(&line);
        if line.contains("waiting for running kiln builds") {
            break;
        }
    }
    assert!(tmp.join("blob-killed").exists() && tmp.join("build-killed").exists(), "nothing goes while a build runs");
    drop(held);
    let out = prune.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Deleted temp files of stopped kiln processes: 3"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, [".tmp-fresh"]);
    assert!(env.ok(&["images", "-q"]).trim().len() >= 12, "the tagged image stays");
}

#[test]
fn rmi_takes_the_compressed_copies_of_its_layers() {
    let env = Env::new();
    env.build("app:1", &[("f", "content\n")], "");
    // Saved and loaded into another store, where no build cache keeps its layer.
    let archive = env.path("app.tar");
    env.ok(&["save", "-o", cli_util::s(&archive), "app:1"]);
    let other = Env::new();
    other.ok(&["load", "-i", cli_util::s(&archive)]);
    let layer = other.inspect("app:1")["RootFS"]["Layers"][0].as_str().unwrap().to_string();
    assert!(other.has_blob(&layer), "a plain layer: its blob is named by its diff_id");
    let before = other.blob_count();
    assert_eq!(before, 3, "layer, config, manifest");

    // An export makes and keeps one gzip copy, with its record.
    other.ok(&["export-layout", cli_util::s(&other.path("out")), "app:1"]);
    assert_eq!(other.blob_count(), before + 1);
    let records = || std::fs::read_dir(other.store.join("kiln/compressed")).map_or(0, |d| d.count());
    assert_eq!(records(), 1);
    assert!(other.ok(&["system", "check"]).contains("store is consistent"));

    // rmi takes the layer, its copy and the record.
    other.ok(&["rmi", "app:1"]);
    assert_eq!(other.blob_count(), 0);
    assert_eq!(records(), 0);
    assert!(other.ok(&["system", "check"]).contains("store is consistent"));
}
