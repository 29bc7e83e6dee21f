//! `kiln run` for real: a busybox image built FROM scratch in a temp store,
//! then run with each option. As root the whole file runs as the
//! unprivileged user `kilntest` (with a subuid range), the way kiln's users
//! run it; otherwise as the calling user.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cli_util;
use cli_util::{ensure_test_user, is_root, TEST_USER};

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
COPY passwd group /etc/
ENV GREETING=hello
WORKDIR /srv
CMD ["echo","hello from cmd"]
"#;
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n";
const GROUP: &str = "root:x:0:\nu:x:1000:\n";

/// The built image, shared by every test of this file.
struct Fixture {
    dir: PathBuf,
    kiln: PathBuf,
    image: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        if is_root() {
            ensure_test_user();
        }
        remove_old_fixtures();
        let dir = tempfile::Builder::new().prefix("kiln-cli-run-").tempdir_in("/tmp").unwrap().keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kiln = dir.join("kiln");
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).unwrap();
        let ctx = dir.join("ctx");
        std::fs::create_dir_all(dir.join("host/data")).unwrap();
        std::fs::write(dir.join("host/data/in.txt"), "from the host\n").unwrap();
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        std::fs::write(ctx.join("passwd"), PASSWD).unwrap();
        std::fs::write(ctx.join("group"), GROUP).unwrap();
        std::fs::copy(static_busybox(), ctx.join("busybox")).unwrap();
        if is_root() {
            let out =
                Command::new("chown").args(["-R", &format!("{TEST_USER}:"), dir.to_str().unwrap()]).output().unwrap();
            assert!(out.status.success(), "chown: {}", text(&out.stderr));
        }
        let mut fx = Fixture { dir, kiln, image: String::new() };
        let out = fx.kiln(&["build", "-q", "-t", "bb", fx.dir.join("ctx").to_str().unwrap()], None);
        assert!(out.status.success(), "build failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        fx.image = text(&out.stdout).trim().to_string();
        // One run first, so every layer dir exists before tests compare them.
        fx.ok(&["run", "bb", "true"]);
        fx
    })
}

/// The fixture outlives the test process (there is no hook at its end):
/// each run removes those of runs more than an hour old. Their stores hold
/// files of subordinate ids, which only root or `kiln unshare` can remove.
fn remove_old_fixtures() {
    let Ok(entries) = std::fs::read_dir("/tmp") else { return };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(3600)));
        if !old || !e.file_name().to_string_lossy().starts_with("kiln-cli-run-") {
            continue;
        }
        let path = e.path();
        if is_root() {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            let _ = Command::new(env!("CARGO_BIN_EXE_kiln")).arg("unshare").arg("rm").arg("-rf").arg(&path).status();
        }
    }
}

/// Debian's statically linked busybox (package busybox-static).
fn static_busybox() -> &'static Path {
    let p = Path::new("/bin/busybox");
    let out = Command::new("file").arg("-L").arg(p).output();
    if let Ok(out) = out {
        assert!(
            !text(&out.stdout).contains("dynamically linked"),
            "/bin/busybox must be static: install busybox-static"
        );
    }
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Fixture {
    /// A command run as the test user (as root) or directly, with a clean
    /// environment and the fixture's store.
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", TEST_USER, "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &self.dir)
            .env("KILN_ROOT", self.dir.join("store"))
            .env("TMPDIR", &self.dir)
            .current_dir(&self.dir);
        cmd
    }

    fn kiln(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.command(&self.kiln, args);
        run(&mut cmd, stdin)
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args, None);
        assert!(out.status.success(), "kiln {args:?}: {}\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn store(&self) -> PathBuf {
        self.path("store")
    }
}

/// Runs with a timeout, feeding `stdin` (else /dev/null).
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let _ = pipe.write_all(bytes);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn runs_the_images_cmd() {
    let fx = fixture();
    assert_eq!(fx.ok(&["run", "bb"]), "hello from cmd\n");
    // By id prefix too, and --rm is accepted.
    assert_eq!(fx.ok(&["run", "--rm", &fx.image[..12]]), "hello from cmd\n");
}

#[test]
fn exit_codes_come_back() {
    let fx = fixture();
    assert_eq!(fx.kiln(&["run", "bb", "sh", "-c", "exit 7"], None).status.code(), Some(7));
    let out = fx.kiln(&["run", "bb", "no-such-program"], None);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kiln: exec no-such-program: executable file not found in $PATH"),
        "{}",
        text(&out.stderr)
    );
    let out = fx.kiln(&["run", "bb", "/etc/passwd"], None);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    let out = fx.kiln(&["run", "no-such-image"], None);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("no such image"), "{}", text(&out.stderr));
}

#[test]
fn environment_workdir_and_user() {
    let fx = fixture();
    std::fs::write(fx.path("env.list"), "# a comment\nFROMFILE=f\nA=from-file\n").unwrap();
    let script = "echo $GREETING $A $B $FROMFILE $HOME $HOSTNAME; pwd; id -u; id -g; echo $PATH";
    let out = fx.ok(&["run", "--env-file", "env.list", "-e", "A=1", "-e", "B=two words", "bb", "sh", "-c", script]);
    let lines: Vec<&str> = out.lines().collect();
    let id = &fx.image[..12];
    assert_eq!(lines[0], format!("hello 1 two words f /root {id}"), "{out}");
    assert_eq!(lines[1], "/srv", "the image's WORKDIR");
    assert_eq!(&lines[2..4], ["0", "0"]);
    assert_eq!(lines[4], "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");

    let out = fx.ok(&[
        "run",
        "-w",
        "/tmp/new/dir",
        "-u",
        "1000",
        "--hostname",
        "box",
        "bb",
        "sh",
        "-c",
        "pwd; id -u; id -g; echo $HOME; hostname",
    ]);
    assert_eq!(out, "/tmp/new/dir\n1000\n1000\n/home/u\nbox\n");
    // A uid with no passwd entry gets HOME=/.
    assert_eq!(fx.ok(&["run", "-u", "4242", "bb", "sh", "-c", "id -u; echo $HOME"]), "4242\n/\n");
}

#[test]
fn entrypoint_replaces_and_clears_cmd() {
    let fx = fixture();
    assert_eq!(fx.ok(&["run", "--entrypoint", "echo", "bb", "a", "b"]), "a b\n");
    // The image's CMD is dropped with --entrypoint.
    assert_eq!(fx.ok(&["run", "--entrypoint", "echo", "bb"]), "\n");
    assert_eq!(fx.ok(&["run", "--entrypoint", r#"["sh","-c"]"#, "bb", "echo $0", "zero"]), "zero\n");
}

#[test]
fn volumes_read_only_and_read_write() {
    let fx = fixture();
    let out = fx.kiln(
        &["run", "-v", "./host/data:/mnt/data:ro", "bb", "sh", "-c", "cat /mnt/data/in.txt; echo x > /mnt/data/new"],
        None,
    );
    assert_eq!(text(&out.stdout), "from the host\n");
    assert!(!out.status.success() && text(&out.stderr).contains("Read-only"), "{}", text(&out.stderr));
    assert!(!fx.path("host/data/new").exists());

    let host = fx.path("host/data");
    let spec = format!("{}:/mnt/rw", host.display());
    fx.ok(&["run", "-v", &spec, "bb", "sh", "-c", "echo written > /mnt/rw/out.txt"]);
    assert_eq!(std::fs::read_to_string(host.join("out.txt")).unwrap(), "written\n");
    // The mount point was made for the run only.
    assert_eq!(
        fx.ok(&["run", "bb", "sh", "-c", "ls -d /mnt/rw 2>&1 || true"]),
        "ls: /mnt/rw: No such file or directory\n"
    );

    let out = fx.kiln(&["run", "-v", "/no/such/dir:/x", "bb", "true"], None);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
}

/// Names of every file under `dir`.
fn names_under(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            names_under(&e.path(), out);
        }
    }
}

fn store_state(fx: &Fixture) -> (String, Vec<String>, Vec<String>) {
    let inspect = fx.ok(&["inspect", "bb"]);
    let mut blobs: Vec<String> = std::fs::read_dir(fx.store().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    let mut layers: Vec<String> = std::fs::read_dir(fx.store().join("kiln/layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    layers.sort();
    (inspect, blobs, layers)
}

#[test]
fn writes_never_reach_the_image() {
    let fx = fixture();
    let before = store_state(fx);
    let out = fx.ok(&["run", "bb", "sh", "-c", "echo new > /kiln-marker; rm /bin/ls; cat /kiln-marker"]);
    assert_eq!(out, "new\n");
    assert_eq!(store_state(fx), before, "image, blobs and layer dirs unchanged");
    assert_eq!(
        fx.ok(&["run", "bb", "sh", "-c", "ls /kiln-marker 2>&1; ls /bin/ls"]),
        "ls: /kiln-marker: No such file or directory\n/bin/ls\n"
    );
    let mut names = Vec::new();
    names_under(&fx.store(), &mut names);
    assert!(!names.iter().any(|n| n == "kiln-marker"), "a run's file stayed in the store");
}

#[test]
fn interactive_passes_stdin() {
    let fx = fixture();
    let out = fx.kiln(&["run", "-i", "bb", "cat"], Some(b"hi\nthere\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\nthere\n");
    // Without -i the command reads nothing.
    let out = fx.kiln(&["run", "bb", "cat"], Some(b"hi\n"));
    assert_eq!(text(&out.stdout), "");
    // Without -t there is no terminal.
    let out = fx.kiln(&["run", "bb", "tty"], None);
    assert_eq!(text(&out.stdout), "not a tty\n");
}

#[test]
fn tty_under_a_pseudo_terminal() {
    let fx = fixture();
    let line = format!("{} run -it bb sh -c 'tty; echo ok; echo TERM=$TERM; exit 3'", fx.kiln.display());
    let mut cmd = fx.command(Path::new("/usr/bin/script"), &["-qec", &line, "/dev/null"]);
    let out = run(&mut cmd, None);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("/dev/pts/0\r\n"), "tty names the container's own pts: {stdout:?} {}", text(&out.stderr));
    assert!(stdout.contains("ok\r\n"), "{stdout:?}");
    assert!(stdout.contains("TERM=xterm"), "{stdout:?}");
    assert_eq!(out.status.code(), Some(3), "script -e passes the exit code: {stdout:?}");

    // Typed input reaches the command through the terminal.
    let line = format!("{} run -it bb sh -c 'read x; echo got:$x'", fx.kiln.display());
    let mut cmd = fx.command(Path::new("/usr/bin/script"), &["-qec", &line, "/dev/null"]);
    let out = run(&mut cmd, Some(b"typed\n"));
    assert!(text(&out.stdout).contains("got:typed"), "{:?} {}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn network_none_has_only_loopback() {
    let fx = fixture();
    let interfaces = "sed 1,2d /proc/net/dev | cut -d: -f1 | tr -d ' '";
    assert_eq!(fx.ok(&["run", "--network", "none", "bb", "sh", "-c", interfaces]), "lo\n");
    assert_ne!(fx.ok(&["run", "bb", "sh", "-c", interfaces]), "lo\n", "the host's network by default");
}

#[test]
fn sigterm_reaches_the_command() {
    let fx = fixture();
    let script = "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done";
    let mut cmd = fx.command(&fx.kiln, &["run", "bb", "sh", "-c", script]);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // As root the front-end kiln is runuser's child.
    let target = if is_root() {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
        children.split_whitespace().next().unwrap().parse::<i32>().unwrap()
    } else {
        child.id() as i32
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(target), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "kiln run did not end after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(42));
}

#[test]
fn help_has_an_example() {
    let fx = fixture();
    let help = fx.ok(&["run", "--help"]);
    assert!(help.contains("Examples:") && help.contains("kiln run -it"), "{help}");
    assert!(help.contains("keeps no containers"), "{help}");
}

/// Every descendant of `pid`, depth first.
fn descendants(pid: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut out = Vec::new();
    for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
        out.push(child);
        out.extend(descendants(child));
    }
    out
}

#[test]
fn a_killed_command_gives_128_plus_the_signal() {
    let fx = fixture();
    let mut cmd = fx.command(&fx.kiln, &["run", "bb", "sh", "-c", "echo ready; exec sleep 4711"]);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let sleeper = loop {
        let found = descendants(child.id())
            .into_iter()
            .find(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0")));
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "the command did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleeper as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out.stderr));
}
