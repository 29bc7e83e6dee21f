//! `kiln build --format docker` (or `BUILDAH_FORMAT=docker`): a Docker v2s2
//! image, as buildah and podman write it, with docker-only config fields
//! kept; read back by skopeo from the store, a registry and an archive
//! (issue 14).

use crate::fault_util;

use kiln_integration::{find_descriptor, Sandbox};
use serde_json::Value;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

const DOCKERFILE: &str = "FROM scratch\n\
COPY hello.txt /hello.txt\n\
SHELL [\"/bin/ash\", \"-c\"]\n\
HEALTHCHECK --interval=30s --timeout=3s CMD [\"/bin/true\"]\n\
ONBUILD COPY . /src\n\
CMD [\"/bin/sh\"]\n";

fn json(out: &kiln_integration::Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.transcript()))
}

/// The docker-only fields the Dockerfile set, in an image config.
fn assert_docker_fields(config: &Value, what: &str) {
    let c = &config["config"];
    assert_eq!(c["Healthcheck"]["Test"], serde_json::json!(["CMD", "/bin/true"]), "{what}: {config}");
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64, "{what}: {config}");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/ash", "-c"]), "{what}: {config}");
    assert_eq!(c["OnBuild"], serde_json::json!(["COPY . /src"]), "{what}: {config}");
}

fn assert_media_types(manifest: &Value, layer: &str, what: &str) {
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST, "{what}: {manifest}");
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG, "{what}: {manifest}");
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty() && layers.iter().all(|l| l["mediaType"] == layer), "{what}: {manifest}");
    assert!(manifest.get("annotations").is_none(), "v2s2 has no annotations: {manifest}");
}

#[test]
fn docker_format_images_are_v2s2_in_the_store_a_registry_and_archives() {
    let sb = Sandbox::new();
    sb.write("ctx/hello.txt", "hello\n");
    sb.dockerfile(DOCKERFILE);
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();
    let store = sb.store();

    // BUILDAH_FORMAT as buildah reads it; --format wins over it.
    sb.kiln_env(&["build", "-q", "-t", "app:docker", ctx], &[("BUILDAH_FORMAT", "docker")]).ok();
    sb.kiln_env(&["build", "-q", "-t", "app:oci", "--format", "oci", ctx], &[("BUILDAH_FORMAT", "docker")]).ok();
    // In the store's index.json and blobs, as kiln keeps a pulled v2s2
    // image. (skopeo's oci: transport lists only OCI manifests of a layout.)
    let blob = |digest: &Value| -> Value {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(store.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let entry = find_descriptor(&store, "app:docker");
    assert_eq!(entry["mediaType"], DOCKER_MANIFEST, "{entry}");
    let stored = blob(&entry["digest"]);
    assert_media_types(&stored, DOCKER_LAYER_TAR, "in the store");
    let oci = json(&sb.tool("skopeo", &["inspect", "--raw", &format!("oci:{}:app:oci", store.display())]));
    assert_eq!(oci["mediaType"], OCI_MANIFEST, "{oci}");
    assert_docker_fields(&blob(&stored["config"]["digest"]), "in the store");
    // The config is the same either way (so is the image id), docker-only fields included.
    let id = |tag: &str| sb.kiln(&["inspect", "--format", "{{.Id}}", tag]).ok().stdout.clone();
    assert_eq!(id("app:docker"), id("app:oci"));
    // kiln's own readers take it: run-less, FROM and COPY --from.
    sb.write("child/Dockerfile", "FROM app:docker\nCOPY --from=app:docker /hello.txt /again.txt\n");
    let child_ctx = sb.path("child");
    sb.kiln(&["build", "-q", "-t", "child", child_ctx.to_str().unwrap()]).ok();
    assert_eq!(sb.image("child").file_str("again.txt"), "hello\n");

    // Pushed: v2s2 with gzip'd layers.
    let reg = fault_util::Registry::start();
    let remote = format!("{}/app:docker", reg.host());
    sb.kiln(&["push", "-q", "app:docker", &remote]).ok();
    let pushed = json(&sb.tool("skopeo", &["inspect", "--raw", "--tls-verify=false", &format!("docker://{remote}")]));
    assert_media_types(&pushed, DOCKER_LAYER_GZIP, "pushed");
    let config = json(
        &sb.tool("skopeo", &["inspect", "--config", "--raw", "--tls-verify=false", &format!("docker://{remote}")]),
    );
    assert_docker_fields(&config, "pushed");
    // build --push of a docker-format image pushes v2s2 too.
    let built_remote = format!("{}/built:1", reg.host());
    sb.kiln(&["build", "-q", "--format", "docker", "--push", "-t", &built_remote, ctx]).ok();
    let built =
        json(&sb.tool("skopeo", &["inspect", "--raw", "--tls-verify=false", &format!("docker://{built_remote}")]));
    assert_media_types(&built, DOCKER_LAYER_GZIP, "build --push");

    // skopeo copies it to an OCI layout and back; kiln pulls both.
    let layout = sb.path("layout");
    sb.tool(
        "skopeo",
        &["copy", "--src-tls-verify=false", &format!("docker://{remote}"), &format!("oci:{}:copied", layout.display())],
    )
    .ok();
    let back = format!("{}/app:back", reg.host());
    sb.tool(
        "skopeo",
        &["copy", "--dest-tls-verify=false", &format!("oci:{}:copied", layout.display()), &format!("docker://{back}")],
    )
    .ok();
    for name in [&remote, &back] {
        let other = Sandbox::new();
        other.kiln(&["pull", "-q", name]).ok();
        let pulled = other.kiln(&["inspect", "--format", "{{json .Config}}", name]);
        let c: Value = serde_json::from_str(&pulled.ok().stdout).unwrap();
        assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh"]), "{name}: {c}");
        if name == &remote {
            assert_docker_fields(&serde_json::json!({ "config": c }), name);
        }
        // skopeo's conversion to OCI drops the docker-only fields (the
        // reason --format docker exists): `back` has none.
        other.write("ctx/Dockerfile", format!("FROM {name}\nCOPY --from={name} /hello.txt /h\n"));
        let ctx = other.ctx();
        other.kiln(&["build", "-q", "-t", "again", ctx.to_str().unwrap()]).ok();
        assert_eq!(other.image("again").file_str("h"), "hello\n", "{name}");
    }

    // A docker archive of it, as docker load reads it.
    let archive = sb.path("app.tar");
    sb.kiln(&["save", "-o", archive.to_str().unwrap(), "app:docker"]).ok();
    let from_archive =
        json(&sb.tool("skopeo", &["inspect", "--config", "--raw", &format!("docker-archive:{}", archive.display())]));
    assert_docker_fields(&from_archive, "docker archive");

    // Docker v2s2 has no zstd layers.
    let zstd = sb.kiln(&["build", "-q", "--format", "docker", "--compression", "zstd", ctx]);
    zstd.fails_with(1).stderr_has(&["--format docker", "zstd", "--format oci"]);
    let bad = sb.kiln(&["build", "--format", "v1", ctx]);
    bad.fails_with(2).stderr_has(&["oci", "docker"]);
}
