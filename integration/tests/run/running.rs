//! The image runs: exported as an OCI layout, unpacked by umoci and run by
//! crun, all as the unprivileged user.

use kiln_integration::*;

#[test]
fn busybox_image_runs_under_crun_rootless() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.dockerfile(BUSYBOX_DOCKERFILE);
    let out_dir = sb.path("out");
    let ctx = sb.ctx();
    let built =
        sb.kiln(&["build", "-t", "app", "-o", &format!("type=oci,dest={}", out_dir.display()), ctx.to_str().unwrap()]);
    built.ok();
    // The exported layout holds the same image as the store (its plain layer gzip'd).
    let exported = read_image(&out_dir, "app:latest");
    assert_eq!(exported.config_digest, sb.image("app").config_digest);
    assert_eq!(exported.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    sb.validate_layout(&out_dir, "app:latest");

    sb.tool("umoci", &["unpack", "--rootless", "--image", &format!("{}:app:latest", out_dir.display()), "bundle"]).ok();
    assert!(sb.path("bundle/rootfs/bin/busybox").is_file());

    // crun needs a terminal-less process to capture stdout.
    let cfg_path = sb.path("bundle/config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["process"]["args"], serde_json::json!(["/bin/busybox", "echo", "hi"]));
    cfg["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

    require_tool("crun");
    let userns = sb.tool("unshare", &["--user", "--map-root-user", "true"]);
    if !userns.success() {
        eprintln!(
            "NOTICE: skipping the crun run: user namespaces are not available to an unprivileged user here\n{}",
            userns.transcript()
        );
        return;
    }
    let run = run_bundle(&sb, "crun");
    // crun 1.8 refuses hosts with hybrid cgroup hierarchies even with its
    // cgroup manager disabled; runc runs the same bundle there.
    let run = if !run.success() && run.stderr.contains("hybrid mode not supported") {
        eprintln!(
            "NOTICE: crun refuses this host's hybrid cgroups; running the bundle with runc instead\n{}",
            run.transcript()
        );
        run_bundle(&sb, "runc")
    } else {
        run
    };
    run.ok();
    assert_eq!(run.stdout, "hi\n", "{}", run.transcript());
}

/// Runs bundle/ with an OCI runtime as the unprivileged user, its state kept in the sandbox.
fn run_bundle(sb: &Sandbox, runtime: &str) -> Output {
    let state = sb.path(&format!("run/{runtime}"));
    let bundle = sb.path("bundle");
    let mut args = vec!["--root", state.to_str().unwrap()];
    if runtime == "crun" {
        args.push("--cgroup-manager=disabled");
    }
    args.extend(["run", "--bundle", bundle.to_str().unwrap(), "kiln-it-run"]);
    sb.tool(runtime, &args)
}
