//! Shared build caches (issue 15): `--cache-to` / `--cache-from` through a
//! local docker-registry and through an OCI layout directory. Each "runner"
//! is its own sandbox: its own empty store, its context at another path,
//! with other mtimes. A runner importing another's cache runs no step whose
//! key matches, fetches only the layers the final image holds, and a miss
//! says why as a local miss does.

use crate::fault_util;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::proxy::Proxy;
use fault_util::Registry;
use kiln_integration::*;
use serde_json::Value;

/// A builder stage with RUN steps (its layers never reach the final image)
/// and a final stage of COPYs and a LABEL.
const DOCKERFILE: &str = "FROM scratch AS builder\n\
COPY busybox /bin/busybox\n\
RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n\
COPY src.txt /src.txt\n\
RUN cat /src.txt > /built.txt && echo RAN\"\"STEP && echo built >> /built.txt\n\
FROM scratch\n\
COPY --from=builder /built.txt /built.txt\n\
COPY a.txt /a.txt\n\
COPY b.txt /b.txt\n\
LABEL x=y\n";

/// A runner: its own sandbox and store, the same checkout.
fn runner(mtime: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/src.txt", "source\n");
    sb.write("ctx/a.txt", "a\n");
    sb.write("ctx/b.txt", "b\n");
    sb.dockerfile(DOCKERFILE);
    // Another checkout: other mtimes (keys do not depend on them).
    sb.sh(&format!("touch -d '{mtime}' ctx/src.txt ctx/a.txt ctx/b.txt ctx/busybox")).ok();
    sb
}

fn build(sb: &Sandbox, tag: &str, extra: &[&str]) -> Output {
    let ctx = sb.ctx();
    let mut args = vec!["build", "-t", tag];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    sb.kiln(&args)
}

/// The short keys of the steps a build took from a cache, in order.
fn hit_keys(out: &Output) -> Vec<String> {
    out.stdout
        .lines()
        .filter(|l| l.contains("--> Using cache"))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

fn count(out: &Output, needle: &str) -> usize {
    out.stdout.matches(needle).count()
}

/// Every blob in a store.
/// The layer blobs in the store: every blob but JSON documents (the
/// manifests and configs of the image and of its step images).
fn store_blobs(store: &Path) -> BTreeSet<String> {
    fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| serde_json::from_slice::<Value>(&fs::read(e.path()).unwrap()).is_err())
        .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
        .collect()
}

/// The layer blobs image `img` needs.
fn image_blobs(img: &Image) -> BTreeSet<String> {
    img.manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

fn diff_ids(img: &Image) -> Value {
    img.config["rootfs"]["diff_ids"].clone()
}

#[test]
fn registry_cache_round_trip_is_lazy_and_explains_misses() {
    let reg = Registry::start();
    let max = format!("{}/app/cache:max", reg.host());
    let min = format!("{}/app/cache:min", reg.host());

    // Runner A: a cold build exporting both modes.
    let a = runner("2001-01-01 00:00:00");
    let to_max = format!("type=registry,ref={max},mode=max");
    let to_min = format!("type=registry,ref={min},mode=min");
    let first = build(&a, "app", &["--cache-to", &to_max, "--cache-to", &to_min]);
    first.ok();
    assert!(first.stdout.contains("RANSTEP"), "{}", first.transcript());
    assert!(first.stdout.contains(&format!("--> cache exported to {max}")), "{}", first.transcript());
    let a_img = a.image("app");
    // A's own keys, as a repeat build shows them.
    let again = build(&a, "app", &[]);
    again.ok();
    assert_eq!(count(&again, "--> Using cache"), 8, "{}", again.transcript());

    // Runner B: empty store, context elsewhere, other mtimes.
    let b = runner("2010-06-01 12:00:00");
    assert_ne!(a.ctx(), b.ctx());
    let out = build(&b, "app", &["--cache-from", &max]);
    out.ok();
    assert_eq!(count(&out, "--> Using cache (registry)"), 8, "every step hits: {}", out.transcript());
    // Every key B computed from its own checkout is one A exported: the keys
    // travel between stores and checkouts. A shared-cache hit names its key.
    let keys = hit_keys(&out);
    assert!(keys.iter().all(|k| k.len() == 12 && k.bytes().all(|b| b.is_ascii_hexdigit())), "{keys:?}");
    assert!(!out.stdout.contains("RANSTEP") && !out.stdout.contains("cache miss"), "{}", out.transcript());
    let b_img = b.image("app");
    // The same image: same config (so same id), layers compressed by the cache.
    assert_eq!(b_img.config_digest, a_img.config_digest, "{}", out.transcript());
    assert_eq!(diff_ids(&b_img), diff_ids(&a_img));
    // And the manifest A pushes (its plain layers gzip-compressed, the very
    // blobs its cache holds) is the manifest B has.
    let a_push = a.kiln(&["push", "app", &format!("{}/runner-a/app:1", reg.host())]);
    a_push.ok();
    assert_eq!(a_push.last_line(), b_img.manifest_digest, "{}", a_push.transcript());
    assert_eq!(b_img.file_str("built.txt"), "source\nbuilt\n");
    assert_eq!(b_img.file_str("a.txt"), "a\n");
    // Nothing but the final image came: the builder's layers (busybox and
    // all) were never downloaded.
    assert_eq!(store_blobs(&b.store()), image_blobs(&b_img), "{}", out.transcript());
    assert_eq!(count(&out, "--> fetched layer"), 3, "{}", out.transcript());
    b.kiln(&["system", "check"]).ok();
    // Pushing the result works; its layers are mounted from the cache's
    // repository, not uploaded again.
    let pushed = b.kiln(&["push", "app", &format!("{}/app:pushed", reg.host())]);
    pushed.ok();
    assert_eq!(pushed.stderr.matches(" mounted").count(), 3, "{}", pushed.transcript());
    // An image is not a cache: said so, not taken for an empty one.
    let err = build(&b, "app", &["--cache-from", &format!("{}/app:pushed", reg.host())]);
    err.fails_with(1).stderr_has(&["is not a kiln build cache", "application/vnd.oci.image.config.v1+json"]);
    // A cache not written yet (a pipeline's first build) is a warning.
    let first = build(&b, "app", &["--cache-from", &format!("{}/app/none:yet", reg.host())]);
    first.ok();
    assert!(first.stderr.contains("does not exist yet; building without it"), "{}", first.transcript());
    // The hits whose layers came are now the store's own: the final
    // stage's steps hit without --cache-from (the builder's, whose layers
    // never came, run).
    let local = build(&b, "app", &[]);
    local.ok();
    assert_eq!(count(&local, "[2/2] --> Using cache"), 4, "{}", local.transcript());
    assert!(!local.stdout.contains("(registry)"), "{}", local.transcript());
    assert_eq!(b.image("app").config_digest, a_img.config_digest);

    // Runner C: b.txt changed. Only its COPY and what follows miss, and the
    // miss says why, as a local one does.
    let c = runner("2020-02-02 02:02:02");
    c.write("ctx/b.txt", "changed\n");
    let out = build(&c, "app", &["--cache-from", &max]);
    out.ok();
    assert!(out.stdout.contains("--> cache miss: file b.txt changed (content)"), "{}", out.transcript());
    assert!(out.stdout.contains("--> cache miss: an earlier step changed"), "{}", out.transcript());
    assert_eq!(count(&out, "--> Using cache (registry)"), 6, "{}", out.transcript());
    assert!(!out.stdout.contains("RANSTEP"), "{}", out.transcript());
    let c_img = c.image("app");
    assert_eq!(c_img.file_str("b.txt"), "changed\n");
    assert_eq!(c_img.file_str("built.txt"), "source\nbuilt\n");
    // The layers under the COPY that ran were fetched; the builder's were not.
    assert_eq!(store_blobs(&c.store()), image_blobs(&c_img), "{}", out.transcript());

    // Runner D, mode=min: the builder stage is not in the cache and runs;
    // the final stage's steps hit (COPY --from reads the same files).
    let d = runner("2005-05-05 05:05:05");
    let out = build(&d, "app", &["--cache-from", &format!("type=registry,ref={min}")]);
    out.ok();
    assert!(out.stdout.contains("RANSTEP"), "{}", out.transcript());
    assert_eq!(count(&out, "--> Using cache (registry)"), 4, "{}", out.transcript());
    assert_eq!(d.image("app").config_digest, a_img.config_digest);
}

/// A builder stage FROM an image in a registry: when every step of the
/// stage hits, the image is never pulled (its config is read to plan the
/// stage); a stage that needs its files pulls it whole, as without a cache.
#[test]
fn a_base_whose_stage_hits_is_not_pulled() {
    let reg = Registry::start();
    let base = format!("{}/lazy/base:1", reg.host());
    let cache = format!("type=registry,ref={}/lazy/cache:1,mode=max", reg.host());
    let cache2 = format!("type=registry,ref={}/lazy/cache:2", reg.host());
    let builder = format!(
        "FROM {base} AS builder\nCOPY src.txt /src.txt\nRUN cat /src.txt > /built.txt && echo RAN\"\"STEP\n\
         FROM scratch\nCOPY --from=builder /built.txt /built.txt\nCOPY a.txt /a.txt\n"
    );
    let on_base = format!("FROM {base}\nCOPY a.txt /a.txt\n");

    let a = runner("2001-01-01 00:00:00");
    a.dockerfile("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n");
    build(&a, "base", &[]).ok();
    a.kiln(&["push", "base", &base]).ok();
    a.dockerfile(&builder);
    build(&a, "app", &["--cache-to", &cache]).ok();
    a.write("ctx/on-base.Dockerfile", &on_base);
    let ctx = a.ctx();
    let file = ctx.join("on-base.Dockerfile");
    a.kiln(&["build", "-t", "onbase", "-f", file.to_str().unwrap(), "--cache-to", &cache2, ctx.to_str().unwrap()]).ok();
    let from = cache.replace(",mode=max", "");

    // Runner B: every step hits; the base's layers never come.
    let b = runner("2011-11-11 11:11:11");
    b.dockerfile(&builder);
    let out = build(&b, "app", &["--cache-from", &from]);
    out.ok();
    assert!(!out.stdout.contains("RANSTEP"), "{}", out.transcript());
    assert!(!out.stdout.contains("Pulling"), "{}", out.transcript());
    let b_img = b.image("app");
    assert_eq!(b_img.file_str("built.txt"), "source\n");
    assert_eq!(store_blobs(&b.store()), image_blobs(&b_img), "{}", out.transcript());
    let images = b.kiln(&["images", "--format", "{{.Repository}}"]);
    assert!(!images.ok().stdout.contains("lazy/base"), "the base was not pulled: {}", images.transcript());
    b.kiln(&["system", "check"]).ok();

    // A final stage FROM the base: its layers are the image's, so they come (the pull is whole and tagged).
    b.write("ctx/on-base.Dockerfile", &on_base);
    let (ctx, file) = (b.ctx(), b.ctx().join("on-base.Dockerfile"));
    let out = b.kiln(&[
        "build",
        "-t",
        "onbase",
        "-f",
        file.to_str().unwrap(),
        "--cache-from",
        &cache2,
        ctx.to_str().unwrap(),
    ]);
    out.ok();
    assert_eq!(count(&out, "--> Using cache (registry)"), 1, "{}", out.transcript());
    let img = b.image("onbase");
    assert_eq!(img.file_str("a.txt"), "a\n");
    assert!(img.fs().contains_key("bin/busybox"), "the base's files are in the image");
    assert_eq!(img.config_digest, a.image("onbase").config_digest, "the same image id");
    let images = b.kiln(&["images", "--format", "{{.Repository}}"]);
    assert!(images.ok().stdout.contains("lazy/base"), "{}", images.transcript());
    b.kiln(&["system", "check"]).ok();

    // Runner C: src.txt changed, so the builder's RUN runs: the base is pulled for it.
    let c = runner("2020-02-02 02:02:02");
    c.write("ctx/src.txt", "changed\n");
    c.dockerfile(&builder);
    let out = build(&c, "app", &["--cache-from", &from]);
    out.ok();
    assert!(out.stdout.contains("RANSTEP"), "{}", out.transcript());
    assert_eq!(c.image("app").file_str("built.txt"), "changed\n");
    let images = c.kiln(&["images", "--format", "{{.Repository}}"]);
    assert!(images.ok().stdout.contains("lazy/base"), "{}", images.transcript());
    c.kiln(&["system", "check"]).ok();
}

/// A base read by manifest and config only (its stage hits a shared
/// cache) is read once: the planner's read (for the stage's env and ONBUILD
/// triggers) is the image the executor builds on, so a tag that moves in
/// between cannot give a stage planned from one image and built on another.
#[test]
fn a_deferred_base_is_read_from_the_registry_once() {
    let reg = Registry::start();
    let a = runner("2001-01-01 00:00:00");
    let proxy = Proxy::start(&a, &reg.host(), "^$", 0, 200, "", 0.0);
    proxy.wait_listening();
    // The same image under two names: pushed straight, read through the proxy.
    let (pushed, read) = (format!("{}/once/base:1", reg.host()), format!("{}/once/base:1", proxy.host()));
    let cache = format!("type=registry,ref={}/once/cache:1,mode=max", reg.host());
    a.dockerfile(
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         ONBUILD RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo from-trigger > /trigger\"]\n",
    );
    build(&a, "base", &[]).ok();
    a.kiln(&["push", "base", &pushed]).ok();
    let dockerfile = |base: &str| {
        format!("FROM {base} AS builder\nCOPY a.txt /a.txt\nFROM scratch\nCOPY --from=builder /trigger /trigger\n")
    };
    a.dockerfile(&dockerfile(&pushed));
    build(&a, "app", &["--cache-to", &cache]).ok();

    let b = runner("2011-11-11 11:11:11");
    b.dockerfile(&dockerfile(&read));
    let out = build(&b, "app", &["--cache-from", &cache.replace(",mode=max", "")]);
    out.ok();
    assert!(!out.stdout.contains("Pulling"), "the base's layers are not needed: {}", out.transcript());
    let img = b.image("app");
    assert_eq!(img.file_str("trigger"), "from-trigger\n", "the trigger planned from the base");
    assert_eq!(img.config_digest, a.image("app").config_digest, "the same image id");
    let tag_reads: Vec<String> = proxy.log().into_iter().filter(|l| l.contains("/v2/once/base/manifests/1")).collect();
    assert_eq!(tag_reads.len(), 1, "the base's tag was read {} times: {tag_reads:?}", tag_reads.len());

    // A final stage FROM the base needs its layers: they are pulled for the
    // manifest the build planned from (by digest), not for what the tag
    // names by then, and the base is tagged in the store as a pull tags it.
    let on_base = |base: &str| format!("FROM {base}\nCOPY a.txt /a.txt\n");
    let cache2 = format!("type=registry,ref={}/once/cache:2", reg.host());
    a.dockerfile(&on_base(&pushed));
    build(&a, "onbase", &["--cache-to", &cache2]).ok();
    let c = runner("2020-02-02 02:02:02");
    c.dockerfile(&on_base(&read));
    let out = build(&c, "onbase", &["--cache-from", &cache2]);
    out.ok();
    let reads = proxy.log();
    let tag_reads = reads.iter().filter(|l| l.contains("/v2/once/base/manifests/1")).count();
    let pinned_reads = reads.iter().filter(|l| l.contains("/v2/once/base/manifests/sha256:")).count();
    assert_eq!((tag_reads, pinned_reads), (1, 1), "{reads:?}\n{}", out.transcript());
    let img = c.image("onbase");
    assert!(img.fs().contains_key("bin/busybox"), "the base's files are in the image");
    assert_eq!(img.config_digest, a.image("onbase").config_digest, "the same image id");
    let images = c.kiln(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.ok().stdout.contains(&format!("{}/once/base:1", proxy.host())), "{}", images.transcript());
    c.kiln(&["system", "check"]).ok();
}

#[test]
fn local_directory_cache_round_trip() {
    let a = runner("2001-01-01 00:00:00");
    let dir = a.path("cachedir");
    let to = format!("type=local,dest={},mode=max,compression=uncompressed", dir.display());
    build(&a, "app", &["--cache-to", &to]).ok();
    assert!(dir.join("index.json").is_file() && dir.join("oci-layout").is_file());
    let a_img = a.image("app");

    let b = runner("2011-11-11 11:11:11");
    let from = format!("type=local,src={}", dir.display());
    let out = build(&b, "app", &["--cache-from", &from]);
    out.ok();
    assert_eq!(count(&out, "--> Using cache (local)"), 8, "{}", out.transcript());
    assert!(!out.stdout.contains("RANSTEP"), "{}", out.transcript());
    // Uncompressed, the cache holds the very blobs A built: the same manifest.
    let b_img = b.image("app");
    assert_eq!(b_img.manifest_digest, a_img.manifest_digest);
    assert_eq!(store_blobs(&b.store()), image_blobs(&b_img));
}

#[test]
fn tampered_cache_layer_is_refused_and_named() {
    let reg = Registry::start();
    let cache = format!("{}/tamper/cache:1", reg.host());
    let a = runner("2001-01-01 00:00:00");
    build(&a, "app", &["--cache-to", &format!("type=registry,ref={cache},mode=max")]).ok();

    // Replace the last layer (COPY b.txt) of the cache with other bytes.
    let manifest: Value =
        serde_json::from_slice(&fs::read(reg.blob_data(&reg.tag_digest("tamper/cache", "1"))).unwrap()).unwrap();
    let layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"].as_str().unwrap().to_string();
    let data = reg.blob_data(&layer);
    let mut bytes = fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&data, &bytes).unwrap();

    let b = runner("2010-06-01 12:00:00");
    let out = build(&b, "app", &["--cache-from", &cache]);
    out.fails_with(1).stderr_has(&[&format!("cache layer {layer}"), "cannot be used", "damaged or was tampered with"]);
    // Nothing of it reached the store, no image was written, and the store is sound.
    assert!(!store_blobs(&b.store()).contains(&layer));
    assert!(!b.kiln(&["images"]).stdout.contains("app"));
    b.kiln(&["system", "check"]).ok();
    // Without the cache the build works.
    build(&b, "app", &[]).ok();
}

#[test]
fn keys_match_across_users_and_id_modes() {
    // Runner B is another unprivileged user, one without a subuid range
    // (single-id mode: owners it cannot map are kept in an xattr).
    let Some(b) = Sandbox::without_subids() else {
        eprintln!("NOTICE: skipped: no second user without subordinate ids is available");
        return;
    };
    let reg = Registry::start();
    let cache = format!("{}/users/cache:min", reg.host());
    let df = "FROM scratch AS builder\n\
COPY --chown=1000:100 src.txt /src/owned.txt\n\
COPY a.txt /src/a.txt\n\
FROM scratch\n\
COPY --from=builder /src /src\n\
COPY b.txt /b.txt\n";
    let a = Sandbox::new();
    for sb in [&a, &b] {
        sb.write("ctx/src.txt", "source\n");
        sb.write("ctx/a.txt", "a\n");
        sb.write("ctx/b.txt", "b\n");
        sb.dockerfile(df);
    }
    assert_ne!(a.ids(), b.ids(), "two users");
    build(&a, "app", &["--cache-to", &format!("type=registry,ref={cache}")]).ok();
    let a_img = a.image("app");

    // The builder stage is not in a mode=min cache: B builds it itself, in
    // its own id mode; the COPY --from key (the content, owners included,
    // of what it reads) comes out the same, so the final stage hits.
    let out = build(&b, "app", &["--cache-from", &cache]);
    out.ok();
    assert_eq!(count(&out, "[2/2] --> Using cache (registry)"), 2, "{}", out.transcript());
    let b_img = b.image("app");
    assert_eq!(b_img.config_digest, a_img.config_digest);
    let owned = b_img.entry("src/owned.txt").expect("src/owned.txt");
    assert_eq!((owned.uid, owned.gid), (1000, 100));
}
