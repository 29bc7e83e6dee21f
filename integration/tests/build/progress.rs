//! Progress output as docker users know it: `--progress=plain` prints the
//! lines kiln always printed, `quiet` (and `-q`) only the image id, `tty`
//! (the default on a terminal) a live view redrawn in place on stderr, with
//! a line per running step and its elapsed time; push, save and
//! export-layout show each layer moving. Terminals are real pseudo-terminals
//! (`script`), and every kiln runs as the unprivileged test user.

use crate::fault_util;

use fault_util::Registry;
use kiln_integration::{require_tool, static_busybox, Output, Sandbox};

const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

fn prepare(sb: &Sandbox) {
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.build(BASE, "base");
}

/// `kiln --root STORE ARGS` under a pseudo-terminal (stdin, stdout and
/// stderr all on it, as in an interactive shell), with `env` set; what the
/// terminal received, escape sequences included.
fn kiln_on_terminal(sb: &Sandbox, args: &[&str], env: &str) -> Output {
    require_tool("script");
    let store = sb.store();
    let mut line = format!("{env} exec {} --root {}", sb.kiln_path().display(), store.display());
    for a in args {
        line.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
    }
    // -e: script exits with kiln's code; -f: flush as it comes.
    sb.tool("script", &["-qfec", &line, "/dev/null"])
}

/// Runs `kiln --root STORE ARGS` on a pseudo-terminal and types Ctrl-C
/// (the terminal's interrupt character, so the kernel signals the
/// foreground process group, as in a shell) once `ready` shows; what the
/// terminal received and kiln's exit code.
fn ctrl_c_on_terminal(sb: &Sandbox, args: &[&str], ready: &str) -> (String, i32) {
    const DRIVER: &str = r#"
import os, pty, select, sys, time
ready, argv = sys.argv[1].encode(), sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, sent, deadline = b"", False, time.time() + 120
while time.time() < deadline:
    if select.select([fd], [], [], 0.2)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    if not sent and ready in out:
        time.sleep(0.5)
        os.write(fd, b"\x03")
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let store = sb.store();
    let kiln = sb.kiln_path().to_str().unwrap().to_string();
    let mut all = vec!["-c", DRIVER, ready, &kiln, "--root", store.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = sb.tool("python3", &all);
    (out.stdout.clone(), out.code().unwrap_or(-1))
}

/// Whether `text` holds a step line for `step` with an elapsed time
/// (`1.2s`) after it, as the live view draws running steps.
fn step_with_elapsed(text: &str, step: &str) -> bool {
    text.split(['\r', '\n']).any(|l| {
        l.contains(step)
            && l.split_whitespace().any(|w| {
                let w = w.trim_end_matches("\x1b[0m");
                w.strip_suffix('s').is_some_and(|n| n.contains('.') && n.parse::<f64>().is_ok())
            })
    })
}

#[test]
fn plain_keeps_the_lines_and_quiet_prints_only_the_id() {
    let sb = Sandbox::new();
    prepare(&sb);
    sb.dockerfile("FROM base\nCOPY busybox /copied\nRUN echo hello from run\n");
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();
    let store = sb.store();
    let root = store.to_str().unwrap();

    let plain = sb.kiln(&["build", "--progress=plain", "-t", "app", ctx]);
    plain.ok();
    let id = sb.image("app").id().to_string();
    // (The cache explains its misses: the base's steps were other instructions.)
    let lines: Vec<&str> = plain.stdout.lines().filter(|l| !l.starts_with("--> cache miss: ")).collect();
    assert_eq!(lines[0], "STEP 1/3: FROM base", "{}", plain.transcript());
    assert!(lines[1].starts_with("--> using base "), "{}", plain.transcript());
    assert_eq!(lines[2], "STEP 2/3: COPY busybox /copied", "{}", plain.transcript());
    assert!(lines[3].starts_with("--> ") && lines[3].contains(" files, "), "{}", plain.transcript());
    assert_eq!(lines[4], "STEP 3/3: RUN echo hello from run", "{}", plain.transcript());
    assert_eq!(lines[5], "#3 hello from run", "{}", plain.transcript());
    assert!(lines[7].starts_with(&format!("--> {} (new layers ", &id[..12])), "{}", plain.transcript());
    assert_eq!(lines[8], "Successfully tagged app:latest", "{}", plain.transcript());
    assert_eq!(lines[9], id, "{}", plain.transcript());
    // Not on a terminal, auto is plain: the same lines (cached now).
    let auto = sb.kiln(&["build", "-t", "app", ctx]);
    auto.ok();
    assert!(auto.stdout.contains("STEP 3/3: RUN echo hello from run\n--> Using cache "), "{}", auto.transcript());

    // quiet, -q, and the environment variables: only the id, nothing on stderr.
    for (args, env) in [
        (vec!["build", "--progress=quiet", "--no-cache", "-t", "app", ctx], vec![]),
        (vec!["build", "-q", "--no-cache", "-t", "app", ctx], vec![]),
        (vec!["build", "--no-cache", "-t", "app", ctx], vec![("KILN_PROGRESS", "quiet")]),
        (vec!["build", "--no-cache", "-t", "app", ctx], vec![("BUILDKIT_PROGRESS", "quiet")]),
    ] {
        let mut all = vec!["--root", root];
        all.extend(args);
        let out = sb.kiln_raw(&all, None, &env);
        out.ok();
        let id = sb.image("app").id().to_string();
        assert_eq!(out.stdout, format!("{id}\n"), "{}", out.transcript());
        assert_eq!(out.stderr, "", "{}", out.transcript());
    }
    // The flag wins over the environment; KILN_PROGRESS over BUILDKIT_PROGRESS.
    let flag = sb.kiln_raw(
        &["--root", root, "build", "--progress=plain", "-t", "app", ctx],
        None,
        &[("KILN_PROGRESS", "quiet")],
    );
    flag.ok();
    assert!(flag.stdout.starts_with("STEP 1/3: FROM base\n"), "{}", flag.transcript());
    let both = sb.kiln_raw(
        &["--root", root, "build", "-t", "app", ctx],
        None,
        &[("KILN_PROGRESS", "quiet"), ("BUILDKIT_PROGRESS", "plain")],
    );
    both.ok();
    assert_eq!(both.stdout.lines().count(), 1, "{}", both.transcript());

    // Mistakes say what to do.
    let bogus = sb.kiln_raw(&["--root", root, "build", "-t", "app", ctx], None, &[("KILN_PROGRESS", "fancy")]);
    bogus.fails_with(1);
    assert!(bogus.stderr.contains("KILN_PROGRESS=\"fancy\" is not a progress type"), "{}", bogus.transcript());
    let tty = sb.kiln(&["build", "--progress=tty", "-t", "app", ctx]);
    tty.fails_with(1);
    assert!(tty.stderr.contains("--progress=tty needs a terminal"), "{}", tty.transcript());
    let typo = sb.kiln(&["build", "--progres=plain", ctx]);
    assert!(!typo.success());
    assert!(typo.stderr.contains("a similar argument exists: '--progress'"), "{}", typo.transcript());
}

#[test]
fn tty_view_redraws_running_steps_and_ends_with_the_summary() {
    let sb = Sandbox::new();
    prepare(&sb);
    sb.dockerfile(
        "FROM base\nCOPY busybox /copied\nRUN for i in 1 2 3 4 5 6 7 8; do echo tick-$i; sleep 0.25; done\nENV DONE=1\n",
    );
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();

    let out = kiln_on_terminal(&sb, &["build", "-t", "live", ctx], "");
    out.ok();
    let text = &out.stdout;
    let id = sb.image("live").id().to_string();
    // Redrawn in place: lines cleared and the cursor moved up.
    assert!(text.contains("\x1b[2K") && text.contains("\x1b[1A"), "no redraw:\n{text:?}");
    // The running RUN with its elapsed time, and its output under it.
    assert!(step_with_elapsed(text, "STEP 3/4: RUN for i in"), "no running step with elapsed time:\n{text:?}");
    assert!(text.contains("tick-1") && text.contains("tick-8"), "no RUN output:\n{text:?}");
    // Finished steps collapse to one line with their layer and time.
    assert!(text.contains("=> STEP 2/4: COPY busybox /copied --> "), "{text:?}");
    assert!(text.contains("=> STEP 4/4: ENV DONE=1  "), "{text:?}");
    // The summary plain mode prints.
    assert!(text.contains(&format!("--> {} (new layers ", &id[..12])), "{text:?}");
    assert!(text.contains("Successfully tagged live:latest"), "{text:?}");
    assert!(text.trim_end().ends_with(&id), "{text:?}");
    // Plain lines of the RUN output are not printed in the live view.
    assert!(!text.contains("#3 tick-1"), "{text:?}");

    // A big layer's commit shows its progress, and the rate stays on its line.
    sb.dockerfile("FROM base\nRUN head -c 30000000 /dev/urandom > /big\n");
    let big = kiln_on_terminal(&sb, &["build", "-t", "big", ctx], "");
    big.ok();
    assert!(big.stdout.contains("30MB, committed at "), "{:?}", big.stdout);
    sb.dockerfile(
        "FROM base\nCOPY busybox /copied\nRUN for i in 1 2 3 4 5 6 7 8; do echo tick-$i; sleep 0.25; done\nENV DONE=1\n",
    );

    // Cached steps say so.
    let again = kiln_on_terminal(&sb, &["build", "-t", "live", ctx], "");
    again.ok();
    assert!(again.stdout.contains("=> CACHED STEP 3/4: RUN for i in"), "{:?}", again.stdout);
    assert!(again.stdout.trim_end().ends_with(&id), "{:?}", again.stdout);

    // --progress=plain and BUILDKIT_PROGRESS=plain on a terminal: lines, no redraw.
    for (args, env) in [
        (vec!["build", "--progress=plain", "-t", "live", ctx], ""),
        (vec!["build", "-t", "live", ctx], "BUILDKIT_PROGRESS=plain"),
    ] {
        let plain = kiln_on_terminal(&sb, &args, env);
        plain.ok();
        assert!(plain.stdout.contains("STEP 3/4: RUN for i in"), "{:?}", plain.stdout);
        assert!(!plain.stdout.contains("\x1b[1A"), "{:?}", plain.stdout);
    }

    // A failing step's last output lines come with its error: the live view
    // showed only a few of them.
    sb.dockerfile("FROM base\nRUN echo first-words; echo last-words; exit 3\n");
    let failed = kiln_on_terminal(&sb, &["build", "-t", "broken", ctx], "");
    assert!(!failed.success(), "{}", failed.transcript());
    assert!(failed.stdout.contains("=> ERROR STEP 2/2: RUN echo first-words"), "{:?}", failed.stdout);
    assert!(failed.stdout.contains("RUN exited with code 3"), "{:?}", failed.stdout);
    assert!(failed.stdout.contains("  last-words"), "{:?}", failed.stdout);
}

/// A store with `app:1`: three layers of 3 MB of random data each.
fn big_image(sb: &Sandbox) -> Vec<String> {
    prepare(sb);
    let image = sb.build(
        "FROM base\nRUN head -c 3000000 /dev/urandom > /a\nRUN head -c 3000000 /dev/urandom > /b\nRUN head -c 3000000 /dev/urandom > /c\n",
        "app:1",
    );
    image.layers.iter().map(|l| l.digest.trim_start_matches("sha256:")[..12].to_string()).collect()
}

#[test]
fn push_save_and_export_show_each_layer() {
    let sb = Sandbox::new();
    let layers = big_image(&sb);
    let reg = Registry::start();
    let dest = format!("{}/progress/app:1", reg.host());

    // Not on a terminal: a line when each layer starts and when it is done.
    // The store's plain layers are compressed on their way out, once.
    let push = sb.kiln(&["push", "--tls-verify=false", "app:1", &dest]);
    push.ok();
    assert_eq!(push.stderr.matches("Compressing layer ").count(), layers.len(), "{}", push.transcript());
    // Each layer and the config: compressed blobs, so named by their new digests.
    let copying: Vec<&str> = push.stderr.lines().filter(|l| l.starts_with("Copying blob ")).collect();
    assert_eq!(copying.iter().filter(|l| l.ends_with(" done")).count(), layers.len() + 1, "{}", push.transcript());
    assert_eq!(copying.iter().filter(|l| l.ends_with("B)")).count(), layers.len() + 1, "{}", push.transcript());
    assert!(push.stderr.contains("Writing manifest to image destination"), "{}", push.transcript());

    let tar = sb.path("app.tar");
    let save = sb.kiln(&["save", "-o", tar.to_str().unwrap(), "app:1"]);
    save.ok();
    for short in &layers {
        assert!(save.stderr.contains(&format!("Writing blob {short} (")), "{short}:\n{}", save.transcript());
        assert!(save.stderr.contains(&format!("Writing blob {short} done")), "{short}:\n{}", save.transcript());
    }
    assert!(std::fs::metadata(&tar).unwrap().len() > 9_000_000);
    let layout = sb.path("layout");
    let export = sb.kiln(&["export-layout", layout.to_str().unwrap(), "app:1"]);
    export.ok();
    // The layers leave gzip-compressed, as pushed: each blob starts and is done.
    assert_eq!(export.stderr.matches("Writing blob ").count(), 2 * layers.len(), "{}", export.transcript());
    // Pulled into another store: each layer, as pushed.
    let other = sb.path("other");
    let pull = sb.kiln_raw(&["--root", other.to_str().unwrap(), "pull", &dest], None, &[]);
    pull.ok();
    assert_eq!(
        pull.stderr.lines().filter(|l| l.starts_with("Copying blob ") && l.ends_with(" done")).count(),
        layers.len(),
        "{}",
        pull.transcript()
    );
    let quiet = sb.kiln(&["push", "-q", "app:1", &format!("{}/progress/quiet:1", reg.host())]);
    quiet.ok();
    assert_eq!(quiet.stderr, "", "{}", quiet.transcript());

    // On a terminal: a bar per layer (bytes of the total), redrawn in place.
    let pushed = kiln_on_terminal(&sb, &["push", "app:1", &format!("{}/progress/again:1", reg.host())], "");
    pushed.ok();
    assert!(pushed.stdout.contains("Copying blob "), "{:?}", pushed.stdout);
    let saved = kiln_on_terminal(&sb, &["save", "-o", sb.path("again.tar").to_str().unwrap(), "app:1"], "");
    saved.ok();
    for short in &layers {
        assert!(saved.stdout.contains(&format!("Writing blob {short} done")), "{short}: {:?}", saved.stdout);
    }
    assert!(saved.stdout.contains("\x1b[2K"), "no redraw: {:?}", saved.stdout);
    // The saved archive is the same either way.
    assert_eq!(std::fs::read(&tar).unwrap(), std::fs::read(sb.path("again.tar")).unwrap());
}

#[test]
fn ctrl_c_in_the_live_view_names_the_step_and_leaves_the_store_consistent() {
    let sb = Sandbox::new();
    prepare(&sb);
    sb.dockerfile("FROM base\nRUN X=ready; echo \"$X-now\"; sleep 30; touch /finished\n");
    let ctx = sb.ctx();
    let (text, code) = ctrl_c_on_terminal(&sb, &["build", "-t", "stopped", ctx.to_str().unwrap()], "ready-now");
    assert_eq!(code, 130, "{text:?}");
    let run = "STEP 2/2: RUN X=ready; echo \"$X-now\"; sleep 30; touch /finished";
    assert!(text.contains(&format!("=> CANCELED {run}")), "{text:?}");
    assert!(text.contains(&format!("interrupted: {run} (after ")), "{text:?}");
    assert!(text.contains("interrupted: nothing was tagged; the store is intact"), "{text:?}");
    assert!(!sb.kiln(&["images"]).stdout.contains("stopped"));
    let check = sb.kiln(&["system", "check"]);
    check.ok();
    assert!(check.stdout.contains("store is consistent"), "{}", check.transcript());
}
