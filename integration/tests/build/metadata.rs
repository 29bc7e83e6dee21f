//! Every metadata instruction, field by field, plus history, ENV expansion and
//! ARG scoping.

use kiln_integration::*;
use serde_json::{json, Value};

const DOCKERFILE: &str = r#"FROM scratch
ARG VERSION=1.0
ARG OVERRIDDEN=default
ARG NODEFAULT
ENV A=1 B=$A
ENV C="${A}-${VERSION}" D=${UNSET:-fallback} E=$NODEFAULT F=x${B}x
LABEL org.example.version=$VERSION "multi word"="a b" over=$OVERRIDDEN
MAINTAINER Jane Doe <jane@example.com>
COPY f.txt /srv/f.txt
WORKDIR /srv/$A
USER 1000:1000
EXPOSE 80 443/tcp 53/udp
VOLUME ["/data", "/cache"]
VOLUME /logs
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=3 CMD ["/bin/busybox", "true"]
ONBUILD COPY . /app
SHELL ["/bin/busybox", "sh", "-c"]
ENTRYPOINT echo $A
CMD ["run"]
"#;

fn instructions(df: &str) -> Vec<String> {
    df.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().to_ascii_uppercase())
        .collect()
}

#[test]
fn metadata_instructions_field_by_field() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    sb.dockerfile(DOCKERFILE);
    let ctx = sb.ctx();
    let out = sb.kiln(&[
        "build",
        "-t",
        "meta",
        "--build-arg",
        "OVERRIDDEN=cli",
        "--build-arg",
        "NODEFAULT=given",
        ctx.to_str().unwrap(),
    ]);
    out.ok();
    let img = sb.image("meta");
    let c = img.runtime();
    // One ENV instruction expands with the environment from before it (docker's
    // documented `ENV abc=bye def=$abc` rule), so B is empty; the next sees A and B.
    assert_eq!(c["Env"], json!([SCRATCH_PATH_ENV, "A=1", "B=", "C=1-1.0", "D=fallback", "E=given", "F=xx"]));
    assert_eq!(c["Labels"], json!({"org.example.version": "1.0", "multi word": "a b", "over": "cli"}));
    assert_eq!(img.config["author"], "Jane Doe <jane@example.com>");
    assert_eq!(c["WorkingDir"], "/srv/1");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "443/tcp": {}, "53/udp": {}}));
    assert_eq!(c["Volumes"], json!({"/data": {}, "/cache": {}, "/logs": {}}));
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        c["Healthcheck"],
        json!({
            "Test": ["CMD", "/bin/busybox", "true"],
            "Interval": 30_000_000_000u64,
            "Timeout": 5_000_000_000u64,
            "StartPeriod": 60_000_000_000u64,
            "Retries": 3
        })
    );
    assert_eq!(c["OnBuild"], json!(["COPY . /app"]));
    assert_eq!(c["Shell"], json!(["/bin/busybox", "sh", "-c"]));
    assert_eq!(c["Entrypoint"], json!(["/bin/busybox", "sh", "-c", "echo $A"]), "shell form uses SHELL, unexpanded");
    assert_eq!(c["Cmd"], json!(["run"]));
    assert_eq!(c["ArgsEscaped"], json!(true), "BuildKit sets ArgsEscaped on CMD");

    // skopeo reads the same Env and Labels.
    let store = sb.store();
    let sk = sb.tool("skopeo", &["inspect", &format!("oci:{}:meta:latest", store.display())]);
    sk.ok();
    let sk = sk.json();
    assert_eq!(sk["Env"], c["Env"]);
    assert_eq!(sk["Labels"], c["Labels"]);

    // History: one entry per instruction but FROM and ONBUILD, in order,
    // with the text and empty_layer flag BuildKit gives each (commitToHistory
    // in dockerfile2llb): ARG with its value in effect, CMD and ENTRYPOINT as
    // Go's %q of the argv, VOLUME/EXPOSE/SHELL as Go's %v of the list,
    // HEALTHCHECK as %+v of the config, COPY with ` # buildkit`, WORKDIR with
    // its absolute path and a layer (it creates the directory).
    let history = img.history();
    let got: Vec<(String, bool)> = history
        .iter()
        .map(|h| {
            assert!(h["created"].is_string(), "history entries carry a time: {h}");
            (h["created_by"].as_str().unwrap_or_default().to_string(), h["empty_layer"] == json!(true))
        })
        .collect();
    let expected: Vec<(String, bool)> = [
        ("ARG VERSION=1.0", true),
        ("ARG OVERRIDDEN=cli", true),
        ("ARG NODEFAULT=given", true),
        ("ENV A=1 B=", true),
        ("ENV C=1-1.0 D=fallback E=given F=xx", true),
        ("LABEL org.example.version=1.0 multi word=a b over=cli", true),
        ("MAINTAINER Jane Doe <jane@example.com>", true),
        ("COPY f.txt /srv/f.txt # buildkit", false),
        ("WORKDIR /srv/1", false),
        ("USER 1000:1000", true),
        ("EXPOSE [80/tcp 443/tcp 53/udp]", true),
        ("VOLUME [/data /cache]", true),
        ("VOLUME [/logs]", true),
        ("STOPSIGNAL SIGTERM", true),
        ("HEALTHCHECK {Test:[CMD /bin/busybox true] Interval:30s Timeout:5s StartPeriod:1m0s StartInterval:0s Retries:3}", true),
        ("SHELL [/bin/busybox sh -c]", true),
        (r#"ENTRYPOINT ["/bin/busybox" "sh" "-c" "echo $A"]"#, true),
        (r#"CMD ["run"]"#, true),
    ]
    .iter()
    .map(|(t, e)| (t.to_string(), *e))
    .collect();
    assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&history).unwrap());
    assert_eq!(
        instructions(DOCKERFILE).len(),
        expected.len() + 2,
        "every instruction but FROM and ONBUILD has an entry"
    );
    // umoci sees the same history.
    let stat = sb.tool("umoci", &["stat", "--image", &format!("{}:meta:latest", store.display()), "--json"]);
    stat.ok();
    assert_eq!(stat.json()["history"].as_array().unwrap().len(), history.len());
    // Build args never leak into the image's environment.
    let env = serde_json::to_string(&c["Env"]).unwrap();
    assert!(!env.contains("VERSION=") && !env.contains("OVERRIDDEN"), "{env}");
}

#[test]
fn args_before_from_and_build_arg_overrides() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.build(BUSYBOX_DOCKERFILE, "base:v1");
    sb.build(BUSYBOX_DOCKERFILE.replace("hi", "v2").as_str(), "base:v2");
    let df = "ARG TAG=v1
ARG OUTER=outer-default
FROM base:${TAG}
ARG OUTER
ARG FROMENV
ENV SEEN_OUTER=$OUTER SEEN_TAG=x${TAG}x SEEN_ENV=$FROMENV
";
    sb.dockerfile(df);
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();

    sb.kiln(&["build", "-t", "a1", ctx]).ok();
    let a1 = sb.image("a1");
    let v1 = sb.image("base:v1");
    assert_eq!(a1.layers[0].digest, v1.layers[0].digest, "FROM base:${{TAG}} uses the default v1");
    let env = a1.runtime()["Env"].clone();
    // The base's PATH comes once, then the stage's own variables.
    assert_eq!(env, json!([SCRATCH_PATH_ENV, "SEEN_OUTER=outer-default", "SEEN_TAG=xx", "SEEN_ENV="]));
    assert_eq!(a1.runtime()["Cmd"], json!(["/bin/busybox", "echo", "hi"]), "CMD is inherited from the base");

    let store = sb.store();
    let out = sb.kiln_raw(
        &[
            "--root",
            store.to_str().unwrap(),
            "build",
            "-t",
            "a2",
            "--build-arg",
            "TAG=v2",
            "--build-arg",
            "OUTER=cli",
            "--build-arg",
            "FROMENV",
            ctx,
        ],
        None,
        &[("FROMENV", "from-environment")],
    );
    out.ok();
    let a2 = sb.image("a2");
    assert_eq!(a2.layers[0].digest, sb.image("base:v2").layers[0].digest);
    assert_eq!(a2.runtime()["Cmd"], json!(["/bin/busybox", "echo", "v2"]));
    assert_eq!(
        a2.runtime()["Env"],
        json!([SCRATCH_PATH_ENV, "SEEN_OUTER=cli", "SEEN_TAG=xx", "SEEN_ENV=from-environment"])
    );

    let bad = sb.kiln(&["build", "-t", "a3", "--build-arg", "TAG=nope", ctx]);
    bad.fails_with(1).stderr_has(&["base:nope"]);
}

#[test]
fn env_replaces_and_later_instructions_see_it() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let img = sb.build(
        "FROM scratch
ENV DIR=/opt/app NAME=thing
ENV DIR=${DIR}/v2
WORKDIR $DIR
COPY f.txt ${NAME}.txt
LABEL path=\"$DIR/${NAME}\" literal='$DIR' escaped=\\$DIR
",
        "envx",
    );
    assert_eq!(img.runtime()["Env"], json!([SCRATCH_PATH_ENV, "DIR=/opt/app/v2", "NAME=thing"]));
    assert_eq!(img.runtime()["WorkingDir"], "/opt/app/v2");
    assert_eq!(img.file_str("opt/app/v2/thing.txt"), "f\n");
    let labels: &Value = &img.runtime()["Labels"];
    assert_eq!(labels["path"], "/opt/app/v2/thing");
    assert_eq!(labels["literal"], "$DIR", "single quotes do not expand");
    assert_eq!(labels["escaped"], "$DIR");
}

/// BuildKit's COPY and ADD history entry (dispatchCopy's commitMessage):
/// the command, `--parents`, `--chown`, `--chmod` as written, each source
/// (a heredoc as `<<NAME`), the destination, then ` # buildkit`; `--from`,
/// `--link`, `--exclude` and `--checksum` are left out, variables expanded.
/// The classic builder wrote `COPY file:<digest> in /dest` instead.
#[test]
fn copy_and_add_history_entries_buildkit() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    sb.write("ctx/g.md", "g\n");
    let img = sb.build(
        "FROM scratch AS base
COPY f.txt /f
FROM scratch
ENV D=/dest
COPY --from=base --chown=1:2 --chmod=600 /f $D/a
COPY --link --exclude=*.md --parents f.txt g.md $D/b/
ADD --chmod=644 --link --chown=3 f.txt /c
COPY --chmod=u+x <<EOT f.txt /h/
hi
EOT
",
        "cphist",
    );
    let history = img.created_by();
    assert_eq!(
        history[1..],
        [
            "COPY --chown=1:2 --chmod=600 /f /dest/a # buildkit",
            "COPY --parents f.txt g.md /dest/b/ # buildkit",
            "ADD --chown=3 --chmod=644 f.txt /c # buildkit",
            "COPY --chmod=u+x f.txt <<EOT /h/ # buildkit",
        ]
    );
}
