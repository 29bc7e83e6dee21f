//! kiln inside an unprivileged container, as CI runners run it: rootless
//! podman (the test user's), no `--privileged`, no added capabilities, the
//! default seccomp profile, kiln's binary and the host's /usr mounted in.
//! Inside, kiln runs as a user with a subordinate id range (newuidmap and
//! newgidmap carry file capabilities, as in podman's own images: a setuid
//! newuidmap runs as root of the container, which lacks CAP_SYS_ADMIN over
//! the new namespace, and the kernel refuses its map), and as a user without
//! one (the single-id map; also what the first falls back to under
//! no-new-privileges), and as the container's root, which without
//! CAP_SYS_ADMIN maps the container's ids one to one in a namespace of its
//! own. With the store on the container's overlay root,
//! the kernel refuses an overlay there and kiln falls back by itself:
//! fuse-overlayfs with `--device /dev/fuse`, the copy driver without.
//!
//! Every build uses the same SOURCE_DATE_EPOCH, so each must give the image
//! the same build gives outside the container, byte for byte.

use std::path::{Path, PathBuf};

use kiln_integration::*;

const EPOCH: &str = "1700000000";

/// A rootfs for `podman run --rootfs`: users `builder` (1000, subordinate ids
/// 2000-61999 of the container's 65537) and `solo` (1001, none), kiln and
/// the id-map helpers in /opt/bin; /usr comes from the host, read-only.
struct Pod<'a> {
    sb: &'a Sandbox,
    rootfs: PathBuf,
    /// podman's XDG_RUNTIME_DIR: a short path, since conmon's sockets live
    /// there and a socket path longer than 108 bytes (the sandbox's would
    /// be) makes every `podman run` wait 20 s for a socket that never comes.
    runtime_dir: String,
}

impl<'a> Pod<'a> {
    fn new(sb: &'a Sandbox) -> Pod<'a> {
        let runtime_dir = sb.sh("mktemp -d /tmp/kp-XXXXXX").ok().stdout.trim().to_string();
        let rootfs = sb.mkdir("rootfs");
        for dir in
            ["etc", "tmp", "root", "home/builder", "home/solo", "opt/bin", "proc", "sys", "dev", "usr", "run", "ctx"]
        {
            sb.mkdir(&format!("rootfs/{dir}"));
        }
        sb.chmod("rootfs/tmp", 0o1777);
        // Container users other than root write their results here (a
        // volume: with `--rootfs DIR:O` writes to the rootfs stay in the overlay).
        sb.mkdir("out");
        sb.chmod("out", 0o777);
        for (link, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")] {
            sb.symlink(target, &format!("rootfs/{link}"));
        }
        sb.write("rootfs/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\nsolo:x:1001:1001::/home/solo:/bin/sh\n");
        sb.write("rootfs/etc/group", "root:x:0:\nbuilder:x:1000:\nsolo:x:1001:\n");
        sb.write("rootfs/etc/subuid", "builder:2000:60000\n");
        sb.write("rootfs/etc/subgid", "builder:2000:60000\n");
        sb.copy_in(sb.kiln_path(), "rootfs/opt/bin/kiln");
        sb.copy_in(&require_tool("newuidmap"), "rootfs/opt/bin/newuidmap");
        sb.copy_in(&require_tool("newgidmap"), "rootfs/opt/bin/newgidmap");
        // As root of the test user's namespace (the container's root): the
        // homes go to their container users, and the capabilities are
        // written for that namespace.
        let setcap = require_tool("setcap");
        let setcap = setcap.display();
        let pod = Pod { sb, rootfs, runtime_dir };
        pod.podman(&[
            "unshare",
            "sh",
            "-c",
            &format!(
                "set -e; chmod 0755 rootfs/opt/bin/newuidmap rootfs/opt/bin/newgidmap; \
                     {setcap} cap_setuid+ep rootfs/opt/bin/newuidmap; {setcap} cap_setgid+ep rootfs/opt/bin/newgidmap; \
                     chown 1000:1000 rootfs/home/builder; chown 1001:1001 rootfs/home/solo"
            ),
        ])
        .ok();
        pod
    }

    /// podman as the test user, with the pod's runtime dir.
    fn podman(&self, args: &[&str]) -> Output {
        let env = format!("XDG_RUNTIME_DIR={}", self.runtime_dir);
        let mut all = vec![env.as_str(), "podman"];
        all.extend_from_slice(args);
        self.sb.tool("env", &all)
    }

    /// `podman run` of `script` (sh) as `user`, with `flags` before the image
    /// and `rootfs_suffix` (`:O`: an overlay over the rootfs) after it.
    fn run(&self, user: &str, flags: &[&str], rootfs_suffix: &str, script: &str) -> Output {
        let (home, uid) = match user {
            "builder" => ("/home/builder", "1000:1000"),
            "solo" => ("/home/solo", "1001:1001"),
            _ => ("/root", "0:0"),
        };
        let ctx = format!("{}:/ctx:ro", self.sb.ctx().display());
        let out = format!("{}:/out", self.sb.path("out").display());
        let rootfs = format!("{}{rootfs_suffix}", self.rootfs.display());
        let home_env = format!("HOME={home}");
        let mut args = podman_global();
        args.extend([
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            uid,
            "-e",
            &home_env,
            "-e",
            "PATH=/opt/bin:/usr/bin:/usr/sbin",
            "-e",
            "SOURCE_DATE_EPOCH=1700000000",
            "-v",
            "/usr:/usr:ro",
            "-v",
            &ctx,
            "-v",
            &out,
        ]);
        args.extend_from_slice(flags);
        args.extend(["--rootfs", &rootfs, "sh", "-c", script]);
        self.podman(&args)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.sb.path("out").join(name)
    }
}

impl Drop for Pod<'_> {
    /// Rootless podman leaves a pause process holding its namespaces; it is
    /// this test's, and goes with it. Files of the container's users go
    /// through `podman unshare` (the sandbox's owner cannot remove them when
    /// the tests run unprivileged).
    fn drop(&mut self) {
        let (out, containers) = (self.sb.path("out"), Path::new(&self.runtime_dir).join("containers"));
        let gone = [&self.rootfs, &out, &containers].map(|p| p.to_str().unwrap().to_string());
        let _ = self.podman(&["unshare", "rm", "-rf", &gone[0], &gone[1], &gone[2]]);
        let pause = std::fs::read_to_string(Path::new(&self.runtime_dir).join("libpod/tmp/pause.pid"));
        if let Some(pid) = pause.ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// cgroupfs: a user outside a systemd session has no cgroup manager to ask.
/// runc where it is installed: crun refuses hosts with hybrid cgroups.
fn podman_global() -> Vec<&'static str> {
    let mut args = vec!["--cgroup-manager", "cgroupfs"];
    if which("runc").is_some() {
        args.extend(["--runtime", "runc"]);
    }
    args
}

fn which(tool: &str) -> Option<PathBuf> {
    DEFAULT_PATH.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

const DOCKERFILE: &str = "RUN echo hello > /hello && mkdir /owned && chown 7:8 /owned && id -u > /uid\n";

/// The image the sandbox's user builds outside any container, exported as an
/// OCI layout: what every build inside must reproduce.
fn reference(sb: &Sandbox) -> Image {
    let layout = sb.path("host-layout");
    let df = format!("{RUN_BASE}{DOCKERFILE}");
    sb.build_with(
        &df,
        "host",
        &["--source-date-epoch", EPOCH, "-o", &format!("type=oci,dest={},name=img:1", layout.display())],
    );
    read_image(&layout, "img:1")
}

/// Builds inside the container as `user` into the store at `root`, then
/// prints `kiln info`; returns podman's output and the exported image.
fn build_inside(pod: &Pod, user: &str, flags: &[&str], rootfs_suffix: &str, name: &str) -> (Output, Image) {
    let script = format!(
        "set -e; kiln build -t img /ctx -o type=oci,dest=/out/{name},name=img:1; kiln info; \
         kiln run --rm img cat /hello"
    );
    let out = pod.run(user, flags, rootfs_suffix, &script);
    out.ok();
    let img = read_image(&pod.out(name), "img:1");
    (out, img)
}

fn info_line<'o>(out: &'o Output, key: &str) -> &'o str {
    out.stdout.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no `{key}` line\n{}", out.transcript()))
}

fn assert_image(img: &Image, expected: &Image, out: &Output, what: &str) {
    assert_eq!(img.file_str("hello"), "hello\n", "{what}");
    let owned = img.entry("owned").expect("/owned");
    assert_eq!((owned.uid, owned.gid), (7, 8), "{what}: chown is kept (recorded in single-id mode)");
    assert_eq!(img.file_str("uid"), "0\n", "{what}");
    assert_eq!(
        img.manifest_digest,
        expected.manifest_digest,
        "{what}: the same image as outside the container\n{}",
        out.transcript()
    );
}

fn podman_sandbox() -> Option<Sandbox> {
    if which("podman").is_none() {
        eprintln!("NOTICE: skipped: podman is not installed");
        return None;
    }
    // Rootless podman maps the container's ids through the user's range.
    let me = std::env::var("USER").unwrap_or_default();
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !is_root() && !subuid.lines().any(|l| l.split(':').next() == Some(me.as_str())) {
        eprintln!("NOTICE: skipped: rootless podman needs a subordinate id range for {me}");
        return None;
    }
    let sb = Sandbox::new();
    sb.dockerfile(&format!("{RUN_BASE}{DOCKERFILE}"));
    sb.busybox_context();
    Some(sb)
}

/// A subuid user, a single-id user and the container's root, kernel overlay
/// (the store is on the rootfs's own filesystem).
#[test]
fn kiln_builds_in_rootless_podman_without_privileges() {
    let Some(sb) = podman_sandbox() else { return };
    let expected = reference(&sb);
    let pod = Pod::new(&sb);

    let (out, img) = build_inside(&pod, "builder", &[], "", "builder");
    assert!(info_line(&out, "user namespace:").contains("full"), "{}", out.transcript());
    assert!(info_line(&out, "uid map:").contains("1 2000 60000"), "{}", out.transcript());
    assert!(info_line(&out, "storage driver:").ends_with("overlay"), "{}", out.transcript());
    assert!(out.stdout.contains("hello\n"), "kiln run works too\n{}", out.transcript());
    assert_image(&img, &expected, &out, "subuid user");

    let (out, img) = build_inside(&pod, "solo", &[], "", "solo");
    assert!(info_line(&out, "user namespace:").contains("single"), "{}", out.transcript());
    assert!(out.stderr.contains("usermod --add-subuids"), "the single-id warning names the fix\n{}", out.transcript());
    assert_image(&img, &expected, &out, "single-id user");

    // no-new-privileges (Kubernetes' allowPrivilegeEscalation: false): the
    // helpers' file capabilities do not apply, newuidmap fails, and kiln
    // falls back to the single-id map by itself.
    let (out, img) = build_inside(&pod, "builder", &["--security-opt", "no-new-privileges"], "", "nnp");
    assert!(out.stderr.contains("using a single-id map"), "{}", out.transcript());
    assert_image(&img, &expected, &out, "subuid user under no-new-privileges");

    // The container's root, as CI jobs often run: without CAP_SYS_ADMIN it
    // cannot mount, so kiln maps the container's ids one to one in a user
    // namespace of its own (no newuidmap needed).
    let (out, img) = build_inside(&pod, "root", &[], "", "root");
    assert!(info_line(&out, "user namespace:").contains("the container's ids, one to one"), "{}", out.transcript());
    assert!(info_line(&out, "uid map:").contains("0 0 1, 1 1 65536"), "{}", out.transcript());
    assert!(info_line(&out, "storage driver:").ends_with("overlay"), "{}", out.transcript());
    assert_image(&img, &expected, &out, "container root");
}

/// The store on the container's overlay root: kernel overlay cannot use it
/// as an upper dir, so kiln picks fuse-overlayfs when /dev/fuse is passed in,
/// else the copy driver. No flag names a driver.
#[test]
fn kiln_falls_back_to_fuse_overlayfs_then_vfs_in_a_container() {
    let Some(sb) = podman_sandbox() else { return };
    let expected = reference(&sb);
    let pod = Pod::new(&sb);

    let (out, img) = build_inside(&pod, "builder", &["--device", "/dev/fuse"], ":O", "fuse");
    assert!(info_line(&out, "overlay in user namespace:").contains("no"), "{}", out.transcript());
    assert!(info_line(&out, "storage driver:").ends_with("fuse-overlayfs"), "{}", out.transcript());
    assert_image(&img, &expected, &out, "fuse-overlayfs");

    let (out, img) = build_inside(&pod, "builder", &[], ":O", "vfs");
    let driver = info_line(&out, "storage driver:");
    assert!(driver.contains(" vfs ") && driver.contains("--device /dev/fuse"), "{}", out.transcript());
    assert_image(&img, &expected, &out, "vfs");
}
