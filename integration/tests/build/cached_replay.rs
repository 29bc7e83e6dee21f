//! A fully cached rebuild is finished by the front-end, without entering
//! kiln's user namespace (no second kiln process, no setuid map tools), and
//! gives what the same rebuild in the namespace gives: the same progress,
//! the same image id. A rebuild that finds a step to run, or that reads a
//! stage's files (whose owners only the namespace sees as the image has
//! them), goes on in the namespace and says each step once. Run as the
//! unprivileged test user, with and without subordinate ids.

use kiln_integration::*;

/// What `-v` says when the front-end finished the build itself.
const REPLAYED: &str = "every step was cached: built without entering kiln's user namespace";

fn build(sb: &Sandbox) -> Output {
    let ctx = sb.ctx();
    let out = sb.kiln(&["-v", "build", "-t", "app", ctx.to_str().unwrap()]);
    out.ok();
    out
}

fn steps(out: &Output) -> Vec<&str> {
    out.stdout.lines().filter(|l| l.starts_with("STEP ")).collect()
}

/// A stage whose RUN makes a file owned by 1000 (a subordinate id on the
/// host), then COPY and metadata steps.
const DOCKERFILE: &str = "FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox touch /owned && /bin/busybox chown 1000:1000 /owned\"]
COPY a.txt /a
ENV X=1
CMD [\"/bin/busybox\", \"true\"]
";

fn replays_a_fully_cached_rebuild(sb: &Sandbox) {
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.write("ctx/a.txt", "a\n");
    sb.dockerfile(DOCKERFILE);
    let first = build(sb);
    assert!(!first.stderr.contains(REPLAYED), "the first build runs its steps\n{}", first.transcript());

    let second = build(sb);
    second.stderr_has(&[REPLAYED]);
    assert_eq!(steps(&second), steps(&first), "the same steps, each once\n{}", second.transcript());
    assert_eq!(second.stdout.matches("--> Using cache").count(), 5, "{}", second.transcript());
    assert!(second.stdout.lines().any(|l| l == "Successfully tagged app:latest"), "{}", second.transcript());
    assert_eq!(second.last_line(), first.last_line(), "a fully cached rebuild gives the same image id");
    let img = sb.image("app");
    assert_eq!(img.id(), second.last_line());
    let owned = img.entry("owned").expect("/owned in the image");
    assert_eq!((owned.uid, owned.gid), (1000, 1000), "{owned:?}");

    // A changed file: the replay stops at its COPY and says nothing; the
    // build in the namespace shows every step once and runs the rest.
    sb.write("ctx/a.txt", "changed\n");
    let third = build(sb);
    assert!(!third.stderr.contains(REPLAYED), "{}", third.transcript());
    assert_eq!(steps(&third), steps(&first), "each step once\n{}", third.transcript());
    assert!(third.stdout.contains("--> cache miss: file a.txt changed (content)"), "{}", third.transcript());
    assert_eq!(third.stdout.matches("--> Using cache").count(), 2, "{}", third.transcript());
    assert_ne!(third.last_line(), first.last_line());
    assert_eq!(sb.image("app").file("a"), b"changed\n");

    // And the next rebuild is a replay again, of the new image.
    let fourth = build(sb);
    fourth.stderr_has(&[REPLAYED]);
    assert_eq!(fourth.last_line(), third.last_line());
    assert_eq!(sb.image("app").id(), third.last_line());

    // Quiet: only the id, as from the namespace.
    let ctx = sb.ctx();
    let quiet = sb.kiln(&["build", "-q", "-t", "app", ctx.to_str().unwrap()]);
    quiet.ok();
    assert_eq!(quiet.stdout.trim(), third.last_line(), "{}", quiet.transcript());
}

#[test]
fn a_fully_cached_rebuild_needs_no_user_namespace() {
    replays_a_fully_cached_rebuild(&Sandbox::new());
}

#[test]
fn a_fully_cached_rebuild_needs_no_user_namespace_with_a_single_id_map() {
    let Some(sb) = Sandbox::without_subids() else {
        eprintln!("skipped: the current user has a subordinate id range and cannot be switched");
        return;
    };
    replays_a_fully_cached_rebuild(&sb);
}

/// `COPY --from` keys the owners of the stage's files, which outside the
/// namespace show as the host's subordinate ids (/owned as 100999, not
/// 1000). A replay takes the digest the build in the namespace remembered
/// for them; where none is remembered it hands over, and never remembers
/// one of its own.
#[test]
fn copy_from_a_stage_is_keyed_with_the_owners_the_image_has() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.write("ctx/a.txt", "a\n");
    sb.dockerfile(&format!("{DOCKERFILE}FROM scratch\nCOPY --from=0 /owned /owned\n"));
    let first = build(&sb);
    let second = build(&sb);
    second.stderr_has(&[REPLAYED]);
    assert_eq!(second.stdout.matches("--> Using cache").count(), 6, "{}", second.transcript());
    assert_eq!(second.last_line(), first.last_line());

    // Without the remembered digest the replay stops at the COPY --from;
    // the build in the namespace digests /owned as the image has it and hits.
    let memos = sb.store().join("kiln/cache/stat/from");
    assert!(memos.is_dir(), "the digests of COPY --from sources are kept in {}", memos.display());
    sb.sh(&format!("rm -rf {}", memos.display())).ok();
    let third = build(&sb);
    assert!(!third.stderr.contains(REPLAYED), "{}", third.transcript());
    assert_eq!(third.stdout.matches("--> Using cache").count(), 6, "{}", third.transcript());
    assert_eq!(steps(&third), steps(&first), "each step once\n{}", third.transcript());
    assert_eq!(third.last_line(), first.last_line());
    let remembered = sb.sh(&format!("cat $(find {} -name '*.json')", memos.display()));
    remembered.ok();
    assert!(remembered.stdout.contains("owner:1000:1000"), "{}", remembered.transcript());
    let owned = sb.image("app").entry("owned").expect("/owned in the image");
    assert_eq!((owned.uid, owned.gid), (1000, 1000), "{owned:?}");
    build(&sb).stderr_has(&[REPLAYED]);
}

/// A base the store lacks is not pulled by the replay (which never asks a
/// registry): the build in the namespace pulls it, or says it cannot.
#[test]
fn a_missing_base_is_left_to_the_build_in_the_namespace() {
    let sb = Sandbox::new();
    sb.dockerfile("FROM 127.0.0.1:9/nothing/here:1\nENV X=1\n");
    let ctx = sb.ctx();
    let out = sb.kiln(&["-v", "build", "--pull=never", "-t", "app", ctx.to_str().unwrap()]);
    assert!(!out.success(), "{}", out.transcript());
    assert!(!out.stderr.contains(REPLAYED), "{}", out.transcript());
    // Said once, by the build in the namespace.
    assert_eq!(out.stderr.matches("no such image in the store").count(), 1, "{}", out.transcript());
}
