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
    let built = sb.kiln(&[
        "build",
        "-t",
        "app",
        "-o",
        &format!("type=oci,dest={}", out_dir.display()),
        ctx.to_str().unwrap(),
    ]);
    built.ok();
    // The exported layout holds the same image as the store.
    let exported = read_image(&out_dir, "app:latest");
    assert_eq!(exported.manifest_digest, sb.image("app").manifest_digest);
    sb.tool("oci-image-tool", &["validate", "--type", "imageLayout", "--ref", "app:latest", out_dir.to_str().unwrap()])
        .ok();

    sb.tool("umoci", &["unpack", "--rootless", "--image", &format!("{}:app:latest", out_dir.display()), "bundle"])
        .ok();
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
    let crun_root = sb.path("run/crun");
    let run = sb.tool(
        "crun",
        &[
            "--root",
            crun_root.to_str().unwrap(),
            "--cgroup-manager=disabled",
            "run",
            "--bundle",
            sb.path("bundle").to_str().unwrap(),
            "kiln-it-run",
        ],
    );
    run.ok();
    assert_eq!(run.stdout, "hi\n", "{}", run.transcript());
}
