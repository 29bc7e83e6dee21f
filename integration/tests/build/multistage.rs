//! Multi-stage builds: COPY --from by name and index, --target, FROM an
//! earlier stage, and only the stages the target needs are built.

use kiln_integration::*;

const DOCKERFILE: &str = "FROM scratch AS builder
COPY f.txt /out/built.txt
COPY g.txt /out/g.txt

FROM scratch AS broken
COPY does-not-exist.txt /x

FROM builder AS derived
COPY h.txt /out/h.txt

FROM scratch AS final
COPY --from=builder /out/built.txt /app/from-name.txt
COPY --from=0 /out/g.txt /app/from-index.txt
COPY --from=derived /out /app/all/
";

fn setup(sb: &Sandbox) -> String {
    sb.write("ctx/f.txt", "f\n");
    sb.write("ctx/g.txt", "g\n");
    sb.write("ctx/h.txt", "h\n");
    sb.dockerfile(DOCKERFILE);
    sb.ctx().to_str().unwrap().to_string()
}

#[test]
fn copy_from_stages_and_targets() {
    let sb = Sandbox::new();
    let ctx = setup(&sb);
    sb.kiln(&["build", "-t", "final", &ctx]).ok();
    sb.kiln(&["build", "--target", "final", "-t", "final-t", &ctx]).ok();
    sb.kiln(&["build", "--target", "builder", "-t", "builder", &ctx]).ok();
    sb.kiln(&["build", "--target", "derived", "-t", "derived", &ctx]).ok();

    let fin = sb.image("final");
    assert_eq!(fin.manifest_digest.len(), 71);
    assert_eq!(fin.file_str("app/from-name.txt"), "f\n");
    assert_eq!(fin.file_str("app/from-index.txt"), "g\n");
    assert_eq!(fin.file_str("app/all/built.txt"), "f\n");
    assert_eq!(fin.file_str("app/all/g.txt"), "g\n");
    assert_eq!(fin.file_str("app/all/h.txt"), "h\n");
    assert_eq!(fin.layers.len(), 3, "the final stage has only its own three layers");
    assert!(fin.entry("out").is_none(), "nothing of the builder's filesystem leaks: {:?}", fin.paths());
    assert_eq!(sb.image("final-t").config["rootfs"], fin.config["rootfs"], "the last stage is the default target");

    let builder = sb.image("builder");
    assert_eq!(builder.layers.len(), 2);
    assert!(builder.entry("out/h.txt").is_none());
    let derived = sb.image("derived");
    assert_eq!(derived.layers.len(), 3);
    let digests = |img: &Image| img.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>();
    assert_eq!(digests(&derived)[..2], digests(&builder)[..], "FROM an earlier stage reuses its layers");
    assert_eq!(derived.file_str("out/h.txt"), "h\n");
    assert_eq!(derived.file_str("out/built.txt"), "f\n");
    assert_eq!(derived.history().len(), 3, "history carries over from the earlier stage");
}

#[test]
fn broken_stage_only_fails_when_needed() {
    let sb = Sandbox::new();
    let ctx = setup(&sb);
    let out = sb.kiln(&["build", "--target", "broken", "-t", "broken", &ctx]);
    out.fails_with(1).stderr_has(&["does-not-exist.txt", "Dockerfile:6"]);
    // The stage with the broken COPY is not built for other targets.
    sb.kiln(&["build", "--target", "derived", "-t", "derived", &ctx]).ok();
    sb.kiln(&["build", "--target", "final", "-t", "final", &ctx]).ok();
    // A broken stage that is needed fails the build.
    sb.dockerfile(&format!("{DOCKERFILE}COPY --from=broken /x /x\n"));
    let out = sb.kiln(&["build", "-t", "needs-broken", &ctx]);
    out.fails_with(1).stderr_has(&["does-not-exist.txt"]);
}

#[test]
fn copy_from_an_image_and_unknown_stage() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.build(BUSYBOX_DOCKERFILE, "bb");
    let img = sb.build("FROM scratch\nCOPY --from=bb /bin/busybox /tools/bb\n", "from-image");
    let host = std::fs::read(static_busybox()).unwrap();
    assert_eq!(sha256_hex(&img.file("tools/bb")), sha256_hex(&host));
    assert_eq!(img.entry("tools/bb").unwrap().mode, 0o755);

    sb.dockerfile("FROM scratch\nCOPY --from=nosuchstage /x /x\n");
    let ctx = sb.ctx();
    sb.kiln(&["build", "-t", "bad", ctx.to_str().unwrap()]).fails_with(1).stderr_has(&["nosuchstage"]);
}
