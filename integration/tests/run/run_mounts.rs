//! `RUN --mount`: cache, bind, tmpfs, secret and ssh mounts on real rootless
//! builds, and that nothing a mount exposes reaches a layer.

use std::path::Path;

use kiln_integration::*;

/// Every path any layer of `img` holds.
fn layer_paths(img: &Image) -> Vec<String> {
    img.layers.iter().flat_map(|l| l.entries.iter().map(|e| e.path.clone())).collect()
}

/// Which blobs of the store contain `needle` (layers decompressed).
fn blobs_containing(store: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let dir = store.join("blobs/sha256");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let raw = std::fs::read(&path).unwrap();
        for data in [decompress_any(&raw), raw] {
            if data.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
                break;
            }
        }
    }
    hits
}

/// A second build's RUN (forced to run with --no-cache) sees what the first
/// build's RUN left in the cache mount; the cache is in no layer, and neither
/// is the mount point the step needed.
#[test]
fn cache_mount_persists_across_builds_and_stays_out_of_layers() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "{RUN_BASE}\
RUN --mount=type=cache,target=/root/.cache/app,id=app \
    (cat /root/.cache/app/runs 2>/dev/null || true) > /seen && echo run >> /root/.cache/app/runs && echo cache-content-$((6*7))xyz > /root/.cache/app/big
"
    );
    let (_, first) = sb.build_with(&df, "cache:1", &[]);
    assert_eq!(first.file_str("seen"), "", "a new cache mount starts empty");
    let (_, second) = sb.build_with(&df, "cache:2", &["--no-cache"]);
    assert_eq!(second.file_str("seen"), "run\n", "the second build's RUN does not see the first build's cache");
    for img in [&first, &second] {
        let paths = layer_paths(img);
        assert!(
            !paths.iter().any(|p| p == "root" || p.starts_with("root/")),
            "the cache mount point reached a layer: {paths:?}"
        );
    }
    assert!(blobs_containing(&sb.store(), b"cache-content-42xyz").is_empty(), "the cache's content reached a blob");
    assert!(sb.store().join("kiln/cache-mounts/app/big").exists(), "the cache lives under kiln/cache-mounts");
}

/// Binds from the context and from another stage are readable and read-only
/// by default; a rw bind's writes are discarded.
#[test]
fn bind_mounts_from_context_and_stage() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/src/hello.txt", "from the context\n");
    let df = format!(
        "{RUN_BASE}\
RUN mkdir /built && echo from the stage > /built/out.txt
FROM scratch AS final
COPY busybox /bin/busybox
RUN --mount=type=bind,source=src,target=/mnt/ctx --mount=type=bind,from=0,source=/built,target=/mnt/stage \
    [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox cat /mnt/ctx/hello.txt /mnt/stage/out.txt > /seen && (/bin/busybox touch /mnt/ctx/x 2>/dev/null && echo writable || echo readonly) >> /seen\"]
RUN --mount=type=bind,source=src,target=/mnt/rw,rw [\"/bin/busybox\", \"sh\", \"-c\", \"echo changed > /mnt/rw/hello.txt && /bin/busybox cat /mnt/rw/hello.txt > /rw-seen\"]
"
    );
    let img = sb.build(&df, "bind");
    assert_eq!(img.file_str("seen"), "from the context\nfrom the stage\nreadonly\n");
    assert_eq!(img.file_str("rw-seen"), "changed\n");
    assert_eq!(
        std::fs::read_to_string(sb.path("ctx/src/hello.txt")).unwrap(),
        "from the context\n",
        "a rw bind changed the context"
    );
    assert!(!layer_paths(&img).iter().any(|p| p.starts_with("mnt")), "a bind mount point reached a layer");

    // The bound files are part of the step's cache key, as in docker.
    let (again, _) = sb.build_with(&df, "bind", &[]);
    assert!(!again.stdout.contains("cache miss"), "an unchanged build missed\n{}", again.transcript());
    sb.write("ctx/src/hello.txt", "edited\n");
    let (edited, img) = sb.build_with(&df, "bind", &[]);
    assert!(edited.stdout.contains("src/hello.txt"), "the miss does not name the bound file\n{}", edited.transcript());
    assert_eq!(
        img.file_str("seen"),
        "edited\nfrom the stage\nreadonly\n",
        "a changed bound file did not re-run the step"
    );
}

/// As in docker, where the context arrives already filtered, a bind from the
/// context or from a named context shows nothing its ignore file excludes.
#[test]
fn bind_mounts_leave_out_ignored_files() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/src/hello.txt", "hello\n");
    sb.write("ctx/src/secret.key", "context secret\n");
    sb.write("ctx/src/sub/keep.key", "kept\n");
    sb.write("ctx/.dockerignore", "**/*.key\n!src/sub/keep.key\n");
    sb.write("extra/data.txt", "data\n");
    sb.write("extra/private.pem", "named secret\n");
    sb.write("extra/.dockerignore", "*.pem\n");
    let extra = sb.path("extra");
    let df = format!(
        "{RUN_BASE}\
RUN --mount=type=bind,source=src,target=/mnt/ctx --mount=type=bind,from=extra,target=/mnt/extra \
    find /mnt/ctx /mnt/extra | sort > /seen && cat /mnt/ctx/sub/keep.key /mnt/extra/data.txt >> /seen
RUN --mount=type=bind,source=src,target=/mnt/rw,rw ls /mnt/rw > /rw-seen
"
    );
    let (_, img) = sb.build_with(&df, "bindign", &["--build-context", &format!("extra={}", extra.display())]);
    let seen = img.file_str("seen");
    assert_eq!(
        seen,
        "/mnt/ctx\n/mnt/ctx/hello.txt\n/mnt/ctx/sub\n/mnt/ctx/sub/keep.key\n/mnt/extra\n/mnt/extra/.dockerignore\n/mnt/extra/data.txt\nkept\ndata\n",
        "ignored files showed in a bind mount"
    );
    assert_eq!(img.file_str("rw-seen"), "hello.txt\nsub\n");

    // A named context's files are in the step's cache key.
    sb.write("extra/data.txt", "edited\n");
    let (_, img) = sb.build_with(&df, "bindign", &["--build-context", &format!("extra={}", extra.display())]);
    assert!(img.file_str("seen").ends_with("kept\nedited\n"), "a changed named-context file did not re-run the step");

    // Naming an ignored file is an error, as COPY's is.
    let bad = format!("{RUN_BASE}RUN --mount=type=bind,source=src/secret.key,target=/k cat /k\n");
    sb.try_build(&bad, "bindbad", &[]).fails_with(1).stderr_has(&["secret.key"]);
}

/// A tmpfs mount starts empty and what the step writes there is not committed.
#[test]
fn tmpfs_mount_is_empty_and_not_committed() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "{RUN_BASE}\
RUN mkdir /scratch && echo image > /scratch/old
RUN --mount=type=tmpfs,target=/scratch,size=1m ls -A /scratch > /listing && echo new > /scratch/new && grep -q tmpfs /proc/mounts && echo ok >> /listing
"
    );
    let img = sb.build(&df, "tmpfs");
    assert_eq!(img.file_str("listing"), "ok\n", "the tmpfs was not empty, or not a tmpfs");
    assert_eq!(img.file_str("scratch/old"), "image\n");
    assert!(!img.fs().contains_key("scratch/new"), "a file written to the tmpfs was committed");
}

/// Secrets from a file and from the environment are readable in RUN (as a
/// file and as a variable); their bytes are in no blob of the store and not
/// in the history.
#[test]
fn secrets_are_readable_and_never_stored() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let file_secret = "file-secret-8c1f5e2a";
    let env_secret = "env-secret-3b9d7741";
    let secret_file = sb.write("secret.txt", file_secret);
    let df = format!(
        "{RUN_BASE}\
RUN --mount=type=secret,id=tok --mount=type=secret,id=envtok,env=ENV_TOK \
    sha256sum < /run/secrets/tok > /result && printf %s \"$ENV_TOK\" | sha256sum >> /result \
    && stat -c %a /run/secrets/tok >> /result
RUN --mount=type=secret,id=tok,target=/etc/tok.txt,mode=0444 wc -c < /etc/tok.txt > /size
"
    );
    sb.dockerfile(&df);
    let store = sb.store();
    let ctx = sb.ctx();
    let secret_arg = format!("id=tok,src={}", secret_file.display());
    let args = [
        "--root",
        store.to_str().unwrap(),
        "build",
        "-t",
        "secret",
        "--secret",
        &secret_arg,
        "--secret",
        "id=envtok,env=MY_SECRET",
        ctx.to_str().unwrap(),
    ];
    let out = sb.kiln_raw(&args, None, &[("MY_SECRET", env_secret)]);
    out.ok();
    let img = sb.image("secret");
    // Hashes only: the secrets' bytes must not be in the image.
    let expected =
        format!("{}  -\n{}  -\n400\n", sha256_hex(file_secret.as_bytes()), sha256_hex(env_secret.as_bytes()));
    assert_eq!(img.file_str("result"), expected);
    assert_eq!(img.file_str("size").trim(), file_secret.len().to_string());
    let paths = layer_paths(&img);
    assert!(
        !paths.iter().any(|p| p.starts_with("run") || p == "etc/tok.txt"),
        "a secret mount point reached a layer: {paths:?}"
    );
    for secret in [file_secret, env_secret] {
        let hits = blobs_containing(&store, secret.as_bytes());
        assert!(hits.is_empty(), "secret {secret} is in blobs {hits:?}");
        assert!(!img.config.to_string().contains(secret), "secret {secret} is in the config/history");
        assert!(!out.stdout.contains(secret), "secret {secret} was printed");
    }

    // A required secret that was not given fails the step.
    let out = sb.try_build(&format!("{RUN_BASE}RUN --mount=type=secret,id=nope,required true\n"), "secret2", &[]);
    assert!(!out.success(), "{}", out.transcript());
    out.stderr_has(&["nope"]);
}

/// `--ssh default=SOCKET` forwards the agent socket at BuildKit's path and
/// sets SSH_AUTH_SOCK to it.
#[test]
fn ssh_mount_forwards_the_agent_socket() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let sock = sb.path("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("listen on the agent socket");
    sb.give_tree(&sock);
    let df = format!("{RUN_BASE}RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock\n");
    let ssh_arg = format!("default={}", sock.display());
    let (_, img) = sb.build_with(&df, "ssh", &["--ssh", &ssh_arg]);
    assert_eq!(img.file_str("sock"), "/run/buildkit/ssh_agent.0\n");
    assert!(!layer_paths(&img).iter().any(|p| p.starts_with("run")), "the ssh mount point reached a layer");
}
