//! Failed builds: exit 1, a message naming what is wrong, and the store left
//! as it was.

use kiln_integration::*;

#[test]
fn failed_build_keeps_the_earlier_image() {
    let sb = Sandbox::new();
    let before = sb.build_busybox("app");
    let store = sb.store();
    let store_s = store.to_str().unwrap();
    let index_before = std::fs::read(store.join("index.json")).unwrap();

    sb.write("ctx/present.txt", "p\n");
    sb.dockerfile("FROM scratch\nCOPY present.txt /p.txt\nCOPY missing-source.txt /m.txt\n");
    let ctx = sb.ctx();
    let out = sb.kiln(&["build", "-t", "app", ctx.to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["missing-source.txt", "Dockerfile:3"]);
    assert!(out.stderr.starts_with("error:"), "{}", out.transcript());
    assert!(!out.stdout.contains("Successfully tagged"), "{}", out.transcript());

    let after = sb.image("app");
    assert_eq!(after.manifest_digest, before.manifest_digest, "the tag still names the earlier image");
    assert_eq!(std::fs::read(store.join("index.json")).unwrap(), index_before, "index.json unchanged");
    sb.validate_layout(&store, "app:latest");
    sb.tool("umoci", &["stat", "--image", &format!("{store_s}:app:latest")]).ok();
    sb.tool("skopeo", &["inspect", &format!("oci:{store_s}:app:latest")]).ok();
    let images = sb.kiln(&["images", "-q"]);
    images.ok();
    assert!(before.id().starts_with(images.stdout.trim().trim_start_matches("sha256:")), "{}", images.transcript());
}

#[test]
fn run_is_refused_clearly() {
    let sb = Sandbox::new();
    sb.dockerfile("FROM scratch\nLABEL a=b\nRUN echo hi\n");
    let ctx = sb.ctx();
    let out = sb.kiln(&["build", "-t", "run", ctx.to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["Dockerfile:3", "RUN"]);
    assert!(out.stderr.starts_with("error:"), "{}", out.transcript());
}

#[test]
fn missing_context_and_dockerfile() {
    let sb = Sandbox::new();
    let ctx = sb.ctx();
    // No Dockerfile in the context.
    let out = sb.kiln(&["build", "-t", "x", ctx.to_str().unwrap()]);
    out.fails_with(1);
    assert!(out.stderr.contains("Dockerfile"), "{}", out.transcript());
    // A context that does not exist.
    let gone = sb.path("no-such-dir");
    let out = sb.kiln(&["build", "-t", "x", gone.to_str().unwrap()]);
    out.fails_with(1);
    assert!(out.stderr.contains("no-such-dir"), "{}", out.transcript());
    // A base that is not in the store.
    sb.dockerfile("FROM not-built-here:1\n");
    let out = sb.kiln(&["build", "-t", "x", ctx.to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["not-built-here"]);
}
