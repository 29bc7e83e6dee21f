//! What RUN and `kiln run` start with, and who may read the store.
//!
//! Whatever kiln itself inherited from the shell that started it (an open
//! descriptor, ignored signals), a RUN step or a `kiln run` command starts
//! with descriptors 0–2 only, every signal at its default action and none
//! blocked, as under docker or buildah. The store is its owner's alone
//! (0700, as podman keeps its storage): another local user gets EACCES on
//! everything under it, including a setuid file in a layer directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kiln_integration::*;

/// The second local user, who must not reach the test user's store.
const OTHER_USER: &str = "kilnother";

/// A signal line of /proc/PID/status with nothing set.
const NO_SIGNALS: &str = "0000000000000000";

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `kiln --root <store> ARGS` from a shell that, like a careless
/// caller, left a directory open on descriptor 8 and SIGHUP and SIGPIPE
/// ignored (as `nohup` and Python's subprocess do).
fn kiln_from_leaky_shell(sb: &Sandbox, open_dir: &Path, args: &[&str]) -> Output {
    let mut script = format!(
        "exec 8<{}; trap '' HUP PIPE; exec {} --root {}",
        quote(open_dir.to_str().unwrap()),
        quote(sb.kiln_path().to_str().unwrap()),
        quote(sb.store().to_str().unwrap()),
    );
    for a in args {
        script.push(' ');
        script.push_str(&quote(a));
    }
    sb.sh(&script)
}

/// A directory of the test user's with a file in it, to hold open on fd 8.
fn victim(sb: &Sandbox) -> std::path::PathBuf {
    sb.write("victim/secret", "host secret\n");
    sb.path("victim")
}

/// What the probes below print, as `KEY value` lines: the descriptors the
/// shell has (as `ls` lists them: its own directory handle is 3), whether fd
/// 8 exists, the signal lines of a child's status, and two pipelines whose
/// reader exits first: busybox `yes` stops on EPIPE, `base64` only when
/// SIGPIPE kills it (else `timeout` does: status 137).
const PROBE: &str = "echo FDS $(ls /proc/self/fd); \
if [ -e /proc/self/fd/8 ]; then echo LEAK $(ls /proc/self/fd/8/); touch /proc/self/fd/8/planted; else echo LEAK none; fi; \
grep -E '^Sig(Ign|Blk):' /proc/self/status | tr -d '\\t'; \
echo YES $(timeout -s KILL 60 sh -c 'yes | head -c 1'); \
timeout -s KILL 60 sh -c 'base64 /dev/urandom | head -c 1000 >/dev/null'; echo B64 $?";

/// Checks what [`PROBE`] printed.
#[track_caller]
fn check_probe(text: &str, victim: &Path, what: &str) {
    let line = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{what}: no {key} line in\n{text}"))
            .trim()
            .to_string()
    };
    let fds: Vec<String> = line("FDS").split_whitespace().map(String::from).collect();
    assert!(
        fds.iter().all(|fd| ["0", "1", "2", "3"].contains(&fd.as_str())),
        "{what}: descriptors beyond 0-2 (and ls's own 3) are open: {fds:?}\n{text}"
    );
    assert_eq!(line("LEAK"), "none", "{what}: /proc/self/fd/8 reaches the host directory\n{text}");
    assert_eq!(line("SigIgn:"), NO_SIGNALS, "{what}: signals are ignored\n{text}");
    assert_eq!(line("SigBlk:"), NO_SIGNALS, "{what}: signals are blocked\n{text}");
    assert_eq!(line("YES"), "y", "{what}: `yes | head -c 1`\n{text}");
    assert_eq!(line("B64"), "0", "{what}: `base64 /dev/urandom | head -c 1000` did not end (SIGPIPE ignored)\n{text}");
    let mut names: Vec<String> =
        fs::read_dir(victim).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["secret"], "{what}: the host directory was written through the leaked descriptor");
}

/// A RUN step started by a kiln that inherited fd 8 and ignored signals sees
/// none of it, and a pipeline whose reader exits ends (SIGPIPE at its
/// default), so the build finishes instead of hanging.
#[test]
fn run_step_starts_with_clean_descriptors_and_signals() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let victim = victim(&sb);
    sb.dockerfile(&format!("{RUN_BASE}RUN ({PROBE}) > /probe\nRUN base64 /dev/urandom | head -c 1000 > /random\n"));
    let ctx = sb.ctx();
    let out = kiln_from_leaky_shell(&sb, &victim, &["build", "-t", "clean", ctx.to_str().unwrap()]);
    out.ok();
    let img = sb.image("clean");
    check_probe(&img.file_str("probe"), &victim, "RUN");
    assert_eq!(img.file("random").len(), 1000);
}

/// The same for `kiln run`: the command sees only 0–2 and default signals.
#[test]
fn kiln_run_starts_with_clean_descriptors_and_signals() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.build(RUN_BASE, "base");
    let victim = victim(&sb);
    let out = kiln_from_leaky_shell(&sb, &victim, &["run", "--rm", "base", "sh", "-c", PROBE]);
    out.ok();
    check_probe(&out.stdout, &victim, "kiln run");
    // With stdin kept (-i) too: kiln passes 0-2 on purpose, nothing more.
    let out = kiln_from_leaky_shell(&sb, &victim, &["run", "--rm", "-i", "base", "sh", "-c", PROBE]);
    out.ok();
    check_probe(&out.stdout, &victim, "kiln run -i");
}

/// A file named as /dev/fd/N (bash's `<(…)`) is a descriptor the user passes
/// on purpose: kiln still reads it, though RUN never sees it.
#[test]
fn dockerfile_from_an_inherited_descriptor_still_reads() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("df", format!("{RUN_BASE}RUN ls /proc/self/fd > /fds\n"));
    let ctx = sb.ctx();
    let script = format!(
        "exec 7<{}; exec {} --root {} build -t fromfd -f /dev/fd/7 {}",
        quote(sb.path("df").to_str().unwrap()),
        quote(sb.kiln_path().to_str().unwrap()),
        quote(sb.store().to_str().unwrap()),
        quote(ctx.to_str().unwrap()),
    );
    sb.sh(&script).ok();
    let fds = sb.image("fromfd").file_str("fds");
    assert!(!fds.lines().any(|l| l == "7"), "RUN sees the Dockerfile's descriptor:\n{fds}");
}

// ---------------------------------------------------------------- the store

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode() & 0o7777
}

/// Creates [`OTHER_USER`] (no subordinate ids) if it is missing.
fn ensure_other_user() {
    kiln_integration::users::ensure_user(OTHER_USER, kiln_integration::users::SubIds::None);
}

/// Runs `program ARGS` as [`OTHER_USER`].
fn as_other(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(require_tool("setpriv"));
    cmd.args(["--reuid", OTHER_USER, "--regid", OTHER_USER, "--init-groups", "--", program])
        .args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .current_dir("/");
    let out = cmd.output().expect("run setpriv");
    Output {
        command: format!("({OTHER_USER}) {program} {}", args.join(" ")),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn assert_denied(out: &Output) {
    assert!(
        !out.success() && out.stderr.contains("Permission denied"),
        "another user got past the store's permissions: {}\n{}",
        out.command,
        out.transcript()
    );
}

/// The layer directory holding `rel` in its diff.
fn layer_with(store: &Path, rel: &str) -> std::path::PathBuf {
    let layers = store.join("kiln/layers");
    fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| d.join("diff").join(rel).exists())
        .unwrap_or_else(|| panic!("no layer directory under {} holds {rel}", layers.display()))
}

/// The store root, kiln's private dir and the layer tree are 0700; another
/// local user can neither list nor read nor execute anything under the
/// store, not even a setuid file a RUN step left in a layer; a store found
/// open (0755) is made private again by the next kiln command, with a note.
#[test]
fn store_is_private_to_its_owner() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.build(&format!("{RUN_BASE}RUN cp /bin/busybox /suid && chmod 4755 /suid\n"), "suid");
    let store = sb.store();
    let layer = layer_with(&store, "suid");
    let suid = layer.join("diff/suid");
    assert_eq!(format!("{:o}", mode(&suid)), "4755", "the layer keeps the image's setuid file as it is");
    for dir in [store.clone(), store.join("kiln"), store.join("kiln/layers"), layer.clone()] {
        assert_eq!(format!("{:o}", mode(&dir)), "700", "{} is not private", dir.display());
    }

    if !is_root() {
        eprintln!("NOTICE: the other-user checks need root (to add a user); only the modes were checked");
        return;
    }
    ensure_other_user();
    // Only the store's own permissions may stand in the way: the sandbox
    // above it is opened up.
    fs::set_permissions(sb.root(), fs::Permissions::from_mode(0o755)).unwrap();
    let check_denied = || {
        let s = |p: &Path| p.to_str().unwrap().to_string();
        assert_denied(&as_other("ls", &[&s(&store)]));
        assert_denied(&as_other("cat", &[&s(&store.join("index.json"))]));
        assert_denied(&as_other("ls", &[&s(&store.join("kiln/layers"))]));
        assert_denied(&as_other("stat", &[&s(&layer)]));
        // From a shell of that user's: setpriv's own exec still holds
        // root's capabilities (its saved uid stays 0).
        assert_denied(&as_other("sh", &["-c", &format!("{} id -u", quote(&s(&suid)))]));
    };
    check_denied();

    // An older kiln left the store open: the next command closes it.
    let opened = [store.clone(), store.join("kiln"), store.join("kiln/layers"), layer.clone()];
    for dir in &opened {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // (Proof that the modes are what stands in the way: with them open, the
    // other user reads the index and runs the setuid file, as its owner.)
    as_other("cat", &[store.join("index.json").to_str().unwrap()]).ok();
    let ran = as_other("sh", &["-c", &format!("{} id -u", quote(suid.to_str().unwrap()))]);
    assert!(!ran.stderr.contains("Permission denied"), "{}", ran.transcript());
    let out = sb.kiln(&["images"]);
    out.ok().stderr_has(&[store.to_str().unwrap(), "0700"]);
    for dir in &opened {
        assert_eq!(format!("{:o}", mode(dir)), "700", "{} was not made private again", dir.display());
    }
    assert_eq!(mode(&suid), 0o4755, "the image's own modes below a layer dir are kept");
    check_denied();
    // Once private, kiln says nothing more.
    let out = sb.kiln(&["images"]);
    out.ok();
    assert!(!out.stderr.contains("0700"), "{}", out.transcript());
}

/// The default store (`$XDG_DATA_HOME/kiln`) and one named by KILN_ROOT are
/// created 0700.
#[test]
fn new_stores_are_created_private() {
    let sb = Sandbox::new();
    sb.kiln_raw(&["images"], None, &[]).ok();
    let default = sb.path("home/.local/share/kiln");
    assert_eq!(format!("{:o}", mode(&default)), "700");
    assert_eq!(format!("{:o}", mode(&default.join("kiln/layers"))), "700");
    let named = sb.path("elsewhere/deeper/store");
    sb.kiln_raw(&["images"], None, &[("KILN_ROOT", named.to_str().unwrap())]).ok();
    assert_eq!(format!("{:o}", mode(&named)), "700");
}
