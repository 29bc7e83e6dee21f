//! Harness for kiln's end-to-end tests.
//!
//! Every test gets its own [`Sandbox`]: a private directory holding the build
//! context, the image store and a home directory. kiln's users are not root,
//! so when the tests run as root (as in CI) the harness creates an
//! unprivileged user, copies the kiln binary into the sandbox (the checkout
//! may not be readable by that user) and runs kiln and every checking tool as
//! that user. Run as a normal user, everything runs directly.
//!
//! Images are read back from the store by following the OCI layout by hand
//! (index.json → manifest → config and layers), checking every digest, size
//! and diff_id on the way, so that a test never has to trust kiln's own view.

// A test harness: a failed step is a failed test, so it may unwrap.
#![allow(clippy::unwrap_used)]

pub mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The unprivileged user the tests run kiln as when they run as root.
pub const TEST_USER: &str = "kilntest";
/// Where the subordinate id range for [`TEST_USER`] starts when one is added.
/// No single command in these tests should come near this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------
// Tools

/// The Debian package that provides `tool`, for the message when it is missing.
fn package_of(tool: &str) -> &str {
    match tool {
        "busybox" => "busybox-static",
        "xz" => "xz-utils",
        "newuidmap" | "newgidmap" => "uidmap",
        "setpriv" | "runuser" => "util-linux",
        "useradd" => "passwd",
        "cc" => "gcc libc6-dev",
        other => other,
    }
}

/// The absolute path of `tool`; panics naming the package to install when it
/// is not there (tests that need a tool fail rather than skip).
pub fn require_tool(tool: &str) -> PathBuf {
    for dir in DEFAULT_PATH.split(':') {
        let p = Path::new(dir).join(tool);
        if let Ok(md) = fs::metadata(&p) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return p;
            }
        }
    }
    panic!(
        "`{tool}` is not installed: this test needs it (apt-get install {}; .ci/run installs everything)",
        package_of(tool)
    )
}

/// Debian's statically linked busybox (package busybox-static). A dynamic one
/// would not run in an image built FROM scratch, so it is refused.
pub fn static_busybox() -> PathBuf {
    let p = PathBuf::from("/bin/busybox");
    let bytes =
        fs::read(&p).unwrap_or_else(|_| panic!("/bin/busybox is missing: install the Debian package busybox-static"));
    assert!(
        !elf_has_interpreter(&bytes),
        "/bin/busybox is dynamically linked: install the Debian package busybox-static"
    );
    p
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn elf_has_interpreter(b: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    assert!(b.len() > 64 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 1, "not a 64-bit LE ELF file");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3
    })
}

/// Runs an external tool; `None` (with a notice) when it is not installed.
pub fn optional_tool(name: &str, args: &[&str]) -> Option<String> {
    let out = match std::process::Command::new(name).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("notice: {name} not installed; skipping its check");
            return None;
        }
        Err(e) => panic!("run {name}: {e}"),
    };
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------
// Users

/// Who runs kiln and the tools.
#[derive(Debug, Clone)]
enum Runner {
    /// The tests run as root: drop to this unprivileged user.
    User { name: String, uid: u32, gid: u32 },
    /// The tests already run unprivileged.
    Direct,
}

/// Whether the tests run as root (and so drop to [`TEST_USER`] for kiln).
pub fn is_root() -> bool {
    // /proc/self/status "Uid:" line: real, effective, ...
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|e| e == "0")
        .unwrap_or(false)
}

fn runner() -> &'static Runner {
    static RUNNER: OnceLock<Runner> = OnceLock::new();
    RUNNER.get_or_init(|| if is_root() { ensure_test_user() } else { Runner::Direct })
}

/// [`TEST_USER`] with a subordinate id range.
fn ensure_test_user() -> Runner {
    let u = users::ensure_user(TEST_USER, users::SubIds::Range);
    Runner::User { name: u.name, uid: u.uid, gid: u.gid }
}

/// A second unprivileged user, with no subordinate id range, for kiln's single-id fallback.
pub const NOSUBID_USER: &str = "kilnnosub";

fn ensure_nosubid_user() -> Runner {
    let u = users::ensure_user(NOSUBID_USER, users::SubIds::None);
    Runner::User { name: u.name, uid: u.uid, gid: u.gid }
}

/// The blob files of the OCI layout (or store) at `root`, with inode and
/// mtime, sorted: a blob written again would change them.
pub fn blob_files(root: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(root.join("blobs/sha256")) else { return Vec::new() };
    let mut out: Vec<_> = entries
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (e.file_name().to_string_lossy().into_owned(), meta.ino(), meta.modified().unwrap())
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// The kiln binary

/// KILN_BIN, else the workspace's target/debug/kiln.
pub fn kiln_binary() -> PathBuf {
    let path = match std::env::var_os("KILN_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/kiln"),
    };
    assert!(
        path.is_file(),
        "the kiln binary is missing at {}: build it first (`make build` or `cargo build`), or set KILN_BIN",
        path.display()
    );
    path.canonicalize().unwrap()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

// ---------------------------------------------------------------------------
// Command results

#[derive(Debug)]
pub struct Output {
    /// The command line, for failure messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole transcript unless the command succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert!(self.success(), "command failed: {}\n{}", self.command, self.transcript());
        self
    }

    /// Panics unless the command exited with `code`.
    #[track_caller]
    pub fn fails_with(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "expected exit code {code} from: {}\n{}", self.command, self.transcript());
        self
    }

    /// Panics unless stderr contains every one of `needles`.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}: {}\n{}", self.command, self.transcript());
        }
        self
    }

    /// The last non-empty line of stdout (the image id after a build).
    pub fn last_line(&self) -> &str {
        self.stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{} did not print JSON ({e}):\n{}", self.command, self.transcript()))
    }

    pub fn transcript(&self) -> String {
        format!("--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `cmd` with a timeout, feeding `stdin`, capturing both outputs.
fn run_command(cmd: Command, stdin: Option<Vec<u8>>, shown: String) -> Output {
    run_command_for(cmd, stdin, shown, COMMAND_TIMEOUT)
}

/// [`run_command`] with a timeout of its own, for the few slow commands.
fn run_command_for(mut cmd: Command, stdin: Option<Vec<u8>>, shown: String, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {shown}: {e}"));
    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            // The command may exit without reading everything; that is its business.
            let _ = pipe.write_all(&bytes);
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for command") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Output {
        command: shown,
        status,
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// ---------------------------------------------------------------------------
// Sandbox

/// A private directory for one test: `ctx/` (the build context), `store/`
/// (kiln's image store, created by kiln), `home/`, `tmp/`, and in root mode
/// `bin/kiln`. Removed on drop unless KILN_TEST_KEEP is set.
pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    kiln: PathBuf,
    runner: Runner,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::for_runner(runner().clone())
    }

    /// A sandbox whose commands run as a user with no subordinate id range
    /// ([`NOSUBID_USER`], created when the tests run as root). When the tests
    /// run unprivileged, only the current user can be used, so this is `None`
    /// unless that user has no range either.
    pub fn without_subids() -> Option<Sandbox> {
        static NOSUB: OnceLock<Option<Runner>> = OnceLock::new();
        let runner = NOSUB.get_or_init(|| {
            if is_root() {
                Some(ensure_nosubid_user())
            } else {
                let me = std::env::var("USER").unwrap_or_default();
                (!users::has_subid_range(&me)).then_some(Runner::Direct)
            }
        });
        runner.clone().map(Sandbox::for_runner)
    }

    /// A sandbox that runs `kiln` (another build of kiln, e.g. one with the
    /// `fault-injection` feature) instead of [`kiln_binary`].
    pub fn with_kiln(kiln: &Path) -> Sandbox {
        Sandbox::for_runner_with(runner().clone(), kiln.to_path_buf())
    }

    fn for_runner(runner: Runner) -> Sandbox {
        Sandbox::for_runner_with(runner, kiln_binary())
    }

    fn for_runner_with(runner: Runner, kiln_src: PathBuf) -> Sandbox {
        let label: String = std::thread::current()
            .name()
            .unwrap_or("test")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let base = match runner {
            Runner::User { .. } => PathBuf::from("/tmp"),
            Runner::Direct => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("kiln-it-{label}-"))
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .expect("create the sandbox directory");
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        let mut sb = Sandbox { dir: Some(dir), root: root.clone(), kiln: kiln_src.clone(), runner };
        sb.give(&root);
        for sub in ["ctx", "home", "home/.local/share", "home/.config", "tmp", "run"] {
            sb.mkdir(sub);
        }
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        if let Runner::User { .. } = sb.runner {
            let bin = sb.mkdir("bin").join("kiln");
            // Copied by another process: a write fd opened here could be inherited by a
            // child another test thread forks meanwhile, and exec would fail with ETXTBSY.
            let copied = Command::new("cp").arg(&kiln_src).arg(&bin).status().expect("run cp");
            assert!(copied.success(), "copy the kiln binary into the sandbox");
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
            sb.give(&bin);
            sb.kiln = bin;
        }
        sb
    }

    /// The sandbox directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The kiln binary the sandbox runs (a copy the test user can read).
    pub fn kiln_path(&self) -> &Path {
        &self.kiln
    }

    /// The default build context directory.
    pub fn ctx(&self) -> PathBuf {
        self.path("ctx")
    }

    /// kiln's image store (`--root`).
    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// Whether kiln runs as a user created for the tests (tests run as root).
    pub fn drops_privileges(&self) -> bool {
        matches!(self.runner, Runner::User { .. })
    }

    /// The uid/gid kiln runs as.
    pub fn ids(&self) -> (u32, u32) {
        match self.runner {
            Runner::User { uid, gid, .. } => (uid, gid),
            Runner::Direct => {
                let md = fs::metadata(&self.root).unwrap();
                use std::os::unix::fs::MetadataExt;
                (md.uid(), md.gid())
            }
        }
    }

    /// Hands a path the harness created over to the test user.
    fn give(&self, path: &Path) {
        if let Runner::User { uid, gid, .. } = self.runner {
            lchown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    /// Hands a whole tree over to the test user (after the harness wrote it as root).
    pub fn give_tree(&self, path: &Path) {
        if let Runner::User { uid, gid, .. } = self.runner {
            let md = fs::symlink_metadata(path).unwrap();
            lchown(path, Some(uid), Some(gid)).unwrap();
            if md.is_dir() {
                for e in fs::read_dir(path).unwrap() {
                    self.give_tree(&e.unwrap().path());
                }
            }
        }
    }

    /// Creates the parents of `path` (inside the sandbox) owned by the test user.
    fn make_parents(&self, path: &Path) {
        let parent = path.parent().unwrap();
        if !parent.exists() {
            self.make_parents(parent);
            // Another test thread may make the same parent meanwhile.
            match fs::create_dir(parent) {
                Ok(()) => self.give(parent),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("mkdir {}: {e}", parent.display()),
            }
        }
    }

    /// Creates directory `rel` (and its parents); returns its path.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        if !p.exists() {
            self.make_parents(&p);
            fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
            self.give(&p);
        }
        p
    }

    /// Writes a file at `rel` (mode 0644), creating parent dirs; returns its path.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        self.write_mode(rel, content, 0o644)
    }

    pub fn write_mode(&self, rel: &str, content: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let p = self.path(rel);
        self.make_parents(&p);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        self.give(&p);
        p
    }

    /// Sets the mode of `rel`.
    pub fn chmod(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Creates a symlink at `rel` pointing to `target` (taken literally).
    pub fn symlink(&self, target: &str, rel: &str) -> PathBuf {
        let p = self.path(rel);
        self.make_parents(&p);
        std::os::unix::fs::symlink(target, &p).unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
        self.give(&p);
        p
    }

    /// Copies a host file into the sandbox at `rel`, keeping its mode.
    pub fn copy_in(&self, host: &Path, rel: &str) -> PathBuf {
        let p = self.path(rel);
        self.make_parents(&p);
        fs::copy(host, &p).unwrap_or_else(|e| panic!("copy {} to {}: {e}", host.display(), p.display()));
        self.give(&p);
        p
    }

    /// Copies a fixture from integration/fixtures into the sandbox.
    pub fn fixture(&self, name: &str, rel: &str) -> PathBuf {
        self.copy_in(&fixture(name), rel)
    }

    /// Writes `ctx/Dockerfile`.
    pub fn dockerfile(&self, text: &str) -> PathBuf {
        self.write("ctx/Dockerfile", text)
    }

    /// The environment every command gets: nothing inherited but RUST_LOG.
    fn command(&self, program: &OsStr, args: &[&OsStr]) -> (Command, String) {
        let mut shown = shell_quote(&program.to_string_lossy());
        for a in args {
            shown.push(' ');
            shown.push_str(&shell_quote(&a.to_string_lossy()));
        }
        let mut cmd = match &self.runner {
            Runner::User { name, .. } => {
                let mut c = Command::new(require_tool("setpriv"));
                c.args(["--reuid", name, "--regid", name, "--init-groups", "--"]).arg(program);
                c.env("USER", name).env("LOGNAME", name);
                c
            }
            Runner::Direct => Command::new(program),
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("home/.local/share"))
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("TMPDIR", self.path("tmp"))
            .env("RUST_BACKTRACE", "1")
            .current_dir(&self.root);
        if let Some(v) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", v);
        }
        (cmd, shown)
    }

    /// A command running kiln with exactly `args` as the test user, with the
    /// sandbox's environment, for tests that manage the process themselves
    /// (own process group, kill at a moment of their choosing).
    pub fn kiln_command(&self, args: &[&OsStr]) -> Command {
        self.command(self.kiln.as_os_str(), args).0
    }

    /// Runs kiln with exactly `args` (no `--root` added), in the sandbox dir.
    pub fn kiln_raw(&self, args: &[&str], stdin: Option<Vec<u8>>, env: &[(&str, &str)]) -> Output {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let (mut cmd, shown) = self.command(self.kiln.as_os_str(), &args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_command(cmd, stdin, format!("kiln{}", shown.strip_prefix(&*self.kiln.to_string_lossy()).unwrap_or(&shown)))
    }

    /// Runs `kiln --root <store> ARGS...` in the sandbox dir.
    pub fn kiln(&self, args: &[&str]) -> Output {
        let store = self.store();
        let mut all = vec!["--root", store.to_str().unwrap()];
        all.extend_from_slice(args);
        self.kiln_raw(&all, None, &[])
    }

    /// Like [`Sandbox::kiln`], feeding `stdin`.
    pub fn kiln_stdin(&self, args: &[&str], stdin: impl Into<Vec<u8>>) -> Output {
        let store = self.store();
        let mut all = vec!["--root", store.to_str().unwrap()];
        all.extend_from_slice(args);
        self.kiln_raw(&all, Some(stdin.into()), &[])
    }

    /// Writes `ctx/Dockerfile`, builds it as `tag` from `ctx`, demands success
    /// and returns the image read from the store.
    #[track_caller]
    pub fn build(&self, dockerfile: &str, tag: &str) -> Image {
        self.dockerfile(dockerfile);
        let ctx = self.ctx();
        let out = self.kiln(&["build", "-t", tag, ctx.to_str().unwrap()]);
        out.ok();
        let img = self.image(tag);
        assert_eq!(
            out.last_line(),
            img.id(),
            "the last line of build output is not the image id (config digest)\n{}",
            out.transcript()
        );
        img
    }

    /// Runs a tool (by name, looked up in PATH) as the test user in the sandbox dir.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Output {
        let prog = require_tool(tool);
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let (cmd, shown) = self.command(prog.as_os_str(), &args);
        run_command(cmd, None, shown.replacen(&*prog.to_string_lossy(), tool, 1))
    }

    /// Like [`Sandbox::tool`], feeding `stdin`.
    pub fn tool_stdin(&self, tool: &str, args: &[&str], stdin: impl Into<Vec<u8>>) -> Output {
        let prog = require_tool(tool);
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let (cmd, shown) = self.command(prog.as_os_str(), &args);
        run_command(cmd, Some(stdin.into()), shown.replacen(&*prog.to_string_lossy(), tool, 1))
    }

    /// Runs `sh -c script` as the test user in the sandbox dir.
    pub fn sh(&self, script: &str) -> Output {
        self.tool("sh", &["-c", script])
    }

    /// Reads image `tag` from the store (names normalised like kiln: `app` → `app:latest`).
    #[track_caller]
    pub fn image(&self, tag: &str) -> Image {
        read_image(&self.store(), &normalize_tag(tag))
    }

    /// Whether a plain file or directory exists in the sandbox.
    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if std::env::var_os("KILN_TEST_KEEP").is_some() {
            if let Some(d) = self.dir.take() {
                let p = d.keep();
                eprintln!("sandbox kept at {}", p.display());
            }
        } else if failed {
            eprintln!("(sandbox {} removed; set KILN_TEST_KEEP=1 to keep it)", self.root.display());
        }
    }
}

/// `app` → `app:latest`; names with a tag or digest are kept.
pub fn normalize_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

// ---------------------------------------------------------------------------
// Reading images

/// The kind of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    Other(u8),
}

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative, without `./` or a trailing `/` (`bin/busybox`); shown lossily
    /// when the name is not UTF-8 (see `raw_path`).
    pub path: String,
    /// The same name as the exact bytes of the archive.
    pub raw_path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (mode & 0o7777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Symlink or hardlink target.
    pub link: Option<String>,
    /// The target as the exact bytes of the archive.
    pub raw_link: Option<Vec<u8>>,
    pub size: u64,
    pub mtime: u64,
    /// From `SCHILY.xattr.*` PAX records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub media_type: String,
    pub digest: String,
    pub entries: Vec<Entry>,
}

impl Layer {
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.path == path)
    }

    pub fn paths(&self) -> BTreeSet<String> {
        self.entries.iter().map(|e| e.path.clone()).collect()
    }
}

/// An image read from an OCI layout, verified on the way in.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:…` of the manifest.
    pub manifest_digest: String,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
    pub layers: Vec<Layer>,
}

impl Image {
    /// The image id: the config digest without `sha256:`.
    pub fn id(&self) -> &str {
        self.config_digest.trim_start_matches("sha256:")
    }

    /// `config.config` (the runtime part of the image config).
    pub fn runtime(&self) -> &Value {
        &self.config["config"]
    }

    pub fn history(&self) -> Vec<Value> {
        self.config["history"].as_array().cloned().unwrap_or_default()
    }

    /// Each history entry's `created_by` (empty when it has none).
    pub fn created_by(&self) -> Vec<String> {
        self.history().iter().map(|h| h["created_by"].as_str().unwrap_or_default().to_string()).collect()
    }

    /// The merged filesystem: later layers win, whiteouts (`.wh.X`, `.wh..wh..opq`) delete.
    pub fn fs(&self) -> BTreeMap<String, Entry> {
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        for layer in &self.layers {
            for e in &layer.entries {
                let (dir, base) = match e.path.rsplit_once('/') {
                    Some((d, b)) => (d.to_string(), b),
                    None => (String::new(), e.path.as_str()),
                };
                let under = |p: &str, d: &str| d.is_empty() || p.starts_with(&format!("{d}/"));
                if base == ".wh..wh..opq" {
                    merged.retain(|p, _| !(under(p, &dir) && p != &dir));
                } else if let Some(victim) = base.strip_prefix(".wh.") {
                    let victim = if dir.is_empty() { victim.to_string() } else { format!("{dir}/{victim}") };
                    merged.retain(|p, _| p != &victim && !p.starts_with(&format!("{victim}/")));
                }
            }
            for e in &layer.entries {
                let base = e.path.rsplit('/').next().unwrap();
                if !base.starts_with(".wh.") {
                    // A non-directory replacing a directory takes its content
                    // with it (as docker's layer apply removes the old tree).
                    if e.kind != Kind::Dir {
                        let prefix = format!("{}/", e.path);
                        merged.retain(|p, _| !p.starts_with(&prefix));
                    }
                    merged.insert(e.path.clone(), e.clone());
                }
            }
        }
        merged
    }

    /// The entry at `path` in the merged filesystem (no symlinks followed).
    pub fn entry(&self, path: &str) -> Option<Entry> {
        self.fs().remove(path.trim_start_matches('/').trim_end_matches('/'))
    }

    /// The content of the regular file at `path` (hard links followed); panics if absent.
    #[track_caller]
    pub fn file(&self, path: &str) -> Vec<u8> {
        let fs = self.fs();
        let mut p = path.trim_start_matches('/').to_string();
        for _ in 0..8 {
            let e = fs.get(&p).unwrap_or_else(|| {
                panic!("{path} is not in the image; it has:\n{}", fs.keys().cloned().collect::<Vec<_>>().join("\n"))
            });
            match e.kind {
                Kind::File => return e.data.clone(),
                Kind::Hardlink => p = e.link.clone().unwrap().trim_start_matches('/').to_string(),
                k => panic!("{path} is a {k:?}, not a file"),
            }
        }
        panic!("hard link chain too long at {path}")
    }

    pub fn file_str(&self, path: &str) -> String {
        String::from_utf8(self.file(path)).expect("utf-8 file content")
    }

    /// All paths in the merged filesystem.
    pub fn paths(&self) -> BTreeSet<String> {
        self.fs().into_keys().collect()
    }
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The path of blob `digest` in a layout, after checking the blob hashes to it.
fn blob(layout: &Path, digest: &str, size: Option<u64>) -> Vec<u8> {
    let (alg, hex) = digest.split_once(':').unwrap_or_else(|| panic!("bad digest {digest}"));
    assert_eq!(alg, "sha256", "unexpected digest algorithm in {digest}");
    let path = layout.join("blobs").join(alg).join(hex);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()));
    assert_eq!(sha256_hex(&bytes), hex, "blob {} does not hash to its name", path.display());
    if let Some(size) = size {
        assert_eq!(bytes.len() as u64, size, "blob {digest} size differs from its descriptor");
    }
    bytes
}

/// The manifest descriptors in an OCI layout's index.json.
pub fn index_manifests(layout: &Path) -> Vec<Value> {
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2, "index.json schemaVersion");
    index["manifests"].as_array().cloned().unwrap_or_default()
}

/// The descriptor tagged `reference` (the `org.opencontainers.image.ref.name`
/// annotation) in the layout's index.json.
#[track_caller]
pub fn find_descriptor(layout: &Path, reference: &str) -> Value {
    let all = index_manifests(layout);
    all.iter().find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == reference).cloned().unwrap_or_else(
        || {
            panic!(
                "no manifest tagged {reference:?} in {}/index.json; it has: {}",
                layout.display(),
                serde_json::to_string_pretty(&all).unwrap()
            )
        },
    )
}

/// Reads image `reference` from the OCI layout at `layout`, checking every
/// digest, size and diff_id.
#[track_caller]
pub fn read_image(layout: &Path, reference: &str) -> Image {
    let layout_file = read_json(&layout.join("oci-layout"));
    assert_eq!(layout_file["imageLayoutVersion"], "1.0.0", "oci-layout version");
    let mut desc = find_descriptor(layout, reference);
    let mut manifest_bytes;
    loop {
        let digest = desc["digest"].as_str().unwrap().to_string();
        manifest_bytes = blob(layout, &digest, desc["size"].as_u64());
        let m: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        if desc["mediaType"] == "application/vnd.oci.image.index.v1+json" {
            desc = m["manifests"][0].clone();
            continue;
        }
        break;
    }
    let manifest_digest = desc["digest"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    let config_digest = manifest["config"]["digest"].as_str().expect("manifest config digest").to_string();
    let config: Value =
        serde_json::from_slice(&blob(layout, &config_digest, manifest["config"]["size"].as_u64())).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
    let layer_descs = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(diff_ids.len(), layer_descs.len(), "config diff_ids and manifest layers differ in number");
    let layers: Vec<Layer> = layer_descs
        .iter()
        .zip(&diff_ids)
        .map(|(d, diff_id)| {
            let digest = d["digest"].as_str().unwrap().to_string();
            let media_type = d["mediaType"].as_str().unwrap().to_string();
            let raw = blob(layout, &digest, d["size"].as_u64());
            let tar = decompress(&media_type, &raw);
            assert_eq!(
                format!("sha256:{}", sha256_hex(&tar)),
                diff_id.as_str().unwrap(),
                "diff_id of layer {digest} does not match its uncompressed content"
            );
            Layer { media_type, digest, entries: tar_entries(&tar) }
        })
        .collect();
    // OCI: the history entries that are not empty_layer match the layers one to one.
    if let Some(history) = config["history"].as_array() {
        let non_empty = history.iter().filter(|h| h["empty_layer"] != Value::Bool(true)).count();
        assert_eq!(
            non_empty,
            layers.len(),
            "history has {non_empty} non-empty entries but the image has {} layers: {}",
            layers.len(),
            serde_json::to_string_pretty(history).unwrap()
        );
    }
    Image { manifest_digest, manifest, config_digest, config, layers }
}

/// Decompresses a layer by what its media type says (a mismatch is a bug, so
/// the content is not sniffed).
pub fn decompress(media_type: &str, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if media_type.ends_with("gzip") {
        assert!(raw.starts_with(&[0x1f, 0x8b]), "{media_type} layer is not gzip data");
        flate2::read::MultiGzDecoder::new(raw).read_to_end(&mut out).expect("gunzip layer");
    } else if media_type.ends_with("zstd") {
        assert!(raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "{media_type} layer is not zstd data");
        zstd::stream::read::Decoder::new(raw).unwrap().read_to_end(&mut out).expect("unzstd layer");
    } else {
        assert!(media_type.ends_with(".tar") || media_type.ends_with("tar"), "unknown layer media type {media_type}");
        out = raw.to_vec();
    }
    out
}

/// Decompresses gzip / zstd / xz-less data by magic (for archives the tests write).
pub fn decompress_any(raw: &[u8]) -> Vec<u8> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        decompress("tar+gzip", raw)
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        decompress("tar+zstd", raw)
    } else {
        raw.to_vec()
    }
}

/// The entries of an uncompressed tar, with PAX overrides applied.
pub fn tar_entries(tar_bytes: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut entries = Vec::new();
    for e in archive.entries().expect("read tar") {
        let mut e = e.expect("read tar entry");
        let bytes = e.path_bytes().into_owned();
        let mut raw = bytes.as_slice();
        while let Some(rest) = raw.strip_prefix(b"./").or_else(|| raw.strip_prefix(b"/")) {
            raw = rest;
        }
        while let Some(rest) = raw.strip_suffix(b"/") {
            raw = rest;
        }
        let raw_path = raw.to_vec();
        let path = String::from_utf8_lossy(&raw_path).into_owned();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            other => Kind::Other(other.as_byte()),
        };
        let raw_link = e.link_name_bytes().map(|l| l.into_owned());
        let link = raw_link.as_ref().map(|l| String::from_utf8_lossy(l).into_owned());
        let mut uid = h.uid().expect("tar uid");
        let mut gid = h.gid().expect("tar gid");
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = e.pax_extensions().expect("pax extensions") {
            for ext in pax {
                let ext = ext.expect("pax record");
                let key = ext.key().expect("pax key").to_string();
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                } else if key == "uid" {
                    uid = ext.value().unwrap().parse().unwrap();
                } else if key == "gid" {
                    gid = ext.value().unwrap().parse().unwrap();
                }
            }
        }
        let size = e.size();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read tar entry data");
        if path.is_empty() {
            continue; // the "./" root entry
        }
        entries.push(Entry {
            path,
            raw_path,
            kind,
            mode: h.mode().expect("tar mode") & 0o7777,
            uid,
            gid,
            link,
            raw_link,
            size,
            mtime: h.mtime().unwrap_or(0),
            xattrs,
            data,
        });
    }
    entries
}

// ---------------------------------------------------------------------------
// Host-side trees, to compare an image against what a reference tool produced

/// A file tree as (kind, mode, symlink target, content) per relative path.
pub type Tree = BTreeMap<String, (Kind, u32, Option<String>, Vec<u8>)>;

/// Reads a directory on the host (no symlinks followed).
pub fn host_tree(dir: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap().to_string_lossy().into_owned();
                out.insert(rel, (Kind::Symlink, 0o777, Some(t), Vec::new()));
            } else if md.is_dir() {
                out.insert(rel, (Kind::Dir, mode, None, Vec::new()));
                walk(root, &p, out);
            } else {
                out.insert(rel, (Kind::File, mode, None, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Tree::new();
    walk(dir, dir, &mut out);
    out
}

/// The part of an image's filesystem under `prefix`, in the shape of [`host_tree`]
/// (symlink modes normalised to 0777, hard links resolved to their content).
pub fn image_tree(img: &Image, prefix: &str) -> Tree {
    let prefix = prefix.trim_matches('/');
    let mut out = Tree::new();
    for (path, e) in img.fs() {
        let Some(rel) = path.strip_prefix(&format!("{prefix}/")) else { continue };
        let v = match e.kind {
            Kind::Symlink => (Kind::Symlink, 0o777, e.link.clone(), Vec::new()),
            Kind::Hardlink => (Kind::File, e.mode, None, img.file(&path)),
            k => (k, e.mode, None, e.data.clone()),
        };
        out.insert(rel.to_string(), v);
    }
    out
}

/// Panics listing the differences between two trees.
#[track_caller]
pub fn assert_same_tree(expected: &Tree, actual: &Tree, what: &str) {
    let mut diffs = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => diffs.push(format!("missing {p}")),
            Some(a) if a != e => diffs.push(format!(
                "{p}: expected {:?} mode {:o} link {:?} ({} bytes), got {:?} mode {:o} link {:?} ({} bytes)",
                e.0,
                e.1,
                e.2,
                e.3.len(),
                a.0,
                a.1,
                a.2,
                a.3.len()
            )),
            _ => {}
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected {p}"));
        }
    }
    assert!(diffs.is_empty(), "{what}: trees differ:\n{}", diffs.join("\n"));
}

/// The OCI architecture name of this machine, from `uname -m`.
pub fn host_arch() -> String {
    let out = Command::new("uname").arg("-m").output().expect("run uname -m");
    let m = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match m.as_str() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" | "armv6l" => "arm",
        "i686" | "i386" => "386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => panic!("unknown machine {other}"),
    }
    .to_string()
}

/// BuildKit's PATH for images built FROM scratch.
pub const SCRATCH_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The Dockerfile of the smallest useful image: Debian's static busybox FROM scratch.
pub const BUSYBOX_DOCKERFILE: &str =
    "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\",\"echo\",\"hi\"]\n";

impl Sandbox {
    /// Copies /bin/busybox into the context and builds [`BUSYBOX_DOCKERFILE`] as `tag`.
    #[track_caller]
    pub fn build_busybox(&self, tag: &str) -> Image {
        self.copy_in(&static_busybox(), "ctx/busybox");
        self.build(BUSYBOX_DOCKERFILE, tag)
    }
}

impl Sandbox {
    /// Validates image `reference` in the OCI layout at `layout` with
    /// oci-image-tool. Debian ships 1.0.0-rc1, whose spelling is
    /// `--type image --ref name=REF` (it has no `imageLayout` type) and
    /// which predates the zstd layer media type.
    #[track_caller]
    pub fn validate_layout(&self, layout: &Path, reference: &str) {
        let out = self.tool(
            "oci-image-tool",
            &["validate", "--type", "image", "--ref", &format!("name={reference}"), layout.to_str().unwrap()],
        );
        out.ok();
        assert!(out.stdout.contains("Validation succeeded"), "{}", out.transcript());
    }
}

// ---------------------------------------------------------------------------
// RUN steps

/// The first lines of every RUN test's Dockerfile: Debian's static busybox
/// FROM scratch, its applets installed as symlinks by a RUN step, and a
/// world-writable /tmp. The context must hold `busybox` ([`Sandbox::busybox_context`]).
pub const RUN_BASE: &str = "FROM scratch\n\
COPY busybox /bin/busybox\n\
RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n\
RUN mkdir -m 1777 /tmp\n";

/// The storage drivers kiln has for RUN steps.
pub const DRIVERS: [&str; 3] = ["overlay", "fuse-overlayfs", "vfs"];

/// A C program that sets one extended attribute: `xattr-set PATH NAME VALUE`,
/// VALUE taken literally or, with a `0x` prefix, as hex bytes. busybox has no
/// setfattr/setcap and the host's are dynamically linked, so the tests build
/// this statically and COPY it into the image.
const XATTR_SET_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
int main(int argc, char **argv) {
    unsigned char buf[1024];
    size_t n = 0;
    if (argc != 4) { fprintf(stderr, "usage: xattr-set PATH NAME VALUE\n"); return 2; }
    const char *v = argv[3];
    if (strncmp(v, "0x", 2) == 0) {
        for (v += 2; v[0] && v[1] && n < sizeof buf; v += 2) {
            unsigned int b;
            if (sscanf(v, "%2x", &b) != 1) { fprintf(stderr, "bad hex\n"); return 2; }
            buf[n++] = (unsigned char)b;
        }
    } else {
        n = strlen(v);
        if (n > sizeof buf) return 2;
        memcpy(buf, v, n);
    }
    if (lsetxattr(argv[1], argv[2], buf, n, 0) != 0) { perror("lsetxattr"); return 1; }
    return 0;
}
"#;

impl Sandbox {
    /// Puts Debian's static busybox into the context as `busybox` (for [`RUN_BASE`]).
    pub fn busybox_context(&self) {
        if !self.exists("ctx/busybox") {
            self.copy_in(&static_busybox(), "ctx/busybox");
        }
    }

    /// Compiles the static `xattr-set` helper into the context at `rel`.
    pub fn xattr_helper(&self, rel: &str) -> PathBuf {
        self.static_c_program(rel, XATTR_SET_C)
    }

    /// Compiles C `source` statically (busybox images have no libc) into the
    /// sandbox at `rel`, mode 0755.
    pub fn static_c_program(&self, rel: &str, source: &str) -> PathBuf {
        let cc = require_tool("cc");
        let dir = tempfile::tempdir().expect("temp dir for the program source");
        let src = dir.path().join("program.c");
        fs::write(&src, source).unwrap();
        let bin = dir.path().join("program");
        let out = Command::new(cc).args(["-static", "-Os", "-o"]).arg(&bin).arg(&src).output().expect("run cc");
        assert!(
            out.status.success(),
            "cc -static failed (needs gcc and libc6-dev): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!elf_has_interpreter(&fs::read(&bin).unwrap()), "{rel} came out dynamically linked");
        let p = self.copy_in(&bin, rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Runs `kiln --root <store> ARGS...` allowing it `timeout` (for the slow tests).
    pub fn kiln_slow(&self, args: &[&str], timeout: Duration) -> Output {
        let store = self.store();
        let mut all: Vec<&OsStr> = vec![OsStr::new("--root"), store.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        let (cmd, shown) = self.command(self.kiln.as_os_str(), &all);
        run_command_for(cmd, None, shown, timeout)
    }

    /// Starts `kiln --root <store> ARGS...` in the background, its stdout and
    /// stderr going to `<sandbox>/NAME.out` and `NAME.err`. In root mode
    /// setpriv execs kiln, so the child's pid is kiln's.
    pub fn spawn_kiln(&self, args: &[&str], name: &str) -> std::process::Child {
        let store = self.store();
        let mut all: Vec<&OsStr> = vec![OsStr::new("--root"), store.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        let (mut cmd, shown) = self.command(self.kiln.as_os_str(), &all);
        let out = fs::File::create(self.path(&format!("{name}.out"))).unwrap();
        let err = fs::File::create(self.path(&format!("{name}.err"))).unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.spawn().unwrap_or_else(|e| panic!("start {shown}: {e}"))
    }

    /// Runs `kiln --root <store> ARGS...` with extra environment variables.
    pub fn kiln_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let store = self.store();
        let mut all = vec!["--root", store.to_str().unwrap()];
        all.extend_from_slice(args);
        self.kiln_raw(&all, None, env)
    }

    /// Writes `ctx/Dockerfile` and runs `kiln build -t TAG EXTRA... ctx`, returning the output.
    pub fn try_build(&self, dockerfile: &str, tag: &str, extra: &[&str]) -> Output {
        self.dockerfile(dockerfile);
        let ctx = self.ctx();
        let mut args = vec!["build", "-t", tag];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.kiln(&args)
    }

    /// Like [`Sandbox::build`] with extra `kiln build` arguments; returns the output too.
    #[track_caller]
    pub fn build_with(&self, dockerfile: &str, tag: &str, extra: &[&str]) -> (Output, Image) {
        let out = self.try_build(dockerfile, tag, extra);
        out.ok();
        let img = self.image(tag);
        assert_eq!(
            out.last_line(),
            img.id(),
            "the last line of build output is not the image id\n{}",
            out.transcript()
        );
        (out, img)
    }
}

/// Panics unless /dev/fuse can be opened by the test user (fuse-overlayfs needs it).
pub fn require_fuse(sb: &Sandbox) {
    require_tool("fuse-overlayfs");
    let probe = sb.sh("exec 3<>/dev/fuse");
    assert!(
        probe.success(),
        "/dev/fuse is not usable by the unprivileged test user, so the fuse-overlayfs driver cannot be \
         tested: run `chmod 0666 /dev/fuse` (Debian's udev rules set that mode)\n{}",
        probe.transcript()
    );
}

/// A description of every path of an image's merged filesystem, for comparing
/// images built different ways: kind, mode, owner, link target, content
/// digest, xattrs and, for hard links, the other names of the same file.
/// Timestamps are left out.
pub fn fs_summary(img: &Image) -> BTreeMap<String, String> {
    let fs = img.fs();
    // Hard link groups, keyed by the path of the file the links point to.
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, e) in &fs {
        if e.kind == Kind::Hardlink {
            let target = e.link.clone().unwrap().trim_start_matches('/').to_string();
            let g = groups.entry(target.clone()).or_default();
            g.insert(target);
            g.insert(p.clone());
        }
    }
    let mut out = BTreeMap::new();
    for (p, e) in &fs {
        let (kind, data) = match e.kind {
            Kind::Hardlink => (Kind::File, img.file(p)),
            k => (k, e.data.clone()),
        };
        let group = groups
            .values()
            .find(|g| g.contains(p))
            .map(|g| g.iter().filter(|o| *o != p).cloned().collect::<Vec<_>>().join(","));
        let xattrs: Vec<String> = e.xattrs.iter().map(|(k, v)| format!("{k}={}", hex::encode(v))).collect();
        let link = if kind == Kind::Symlink { e.link.clone() } else { None };
        out.insert(
            p.clone(),
            format!(
                "{kind:?} {:o} {}:{} link={link:?} sha256={} xattrs=[{}] hardlinks=[{}]",
                e.mode,
                e.uid,
                e.gid,
                sha256_hex(&data),
                xattrs.join(" "),
                group.unwrap_or_default()
            ),
        );
    }
    out
}

/// Panics listing how two [`fs_summary`]s differ.
#[track_caller]
pub fn assert_same_summary(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    let mut diffs = Vec::new();
    for (p, x) in a {
        match b.get(p) {
            None => diffs.push(format!("only in the first: {p}: {x}")),
            Some(y) if x != y => diffs.push(format!("{p}:\n    {x}\n    {y}")),
            _ => {}
        }
    }
    for (p, y) in b {
        if !a.contains_key(p) {
            diffs.push(format!("only in the second: {p}: {y}"));
        }
    }
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
}

impl Image {
    /// The merged filesystem of the first `n` layers.
    pub fn fs_upto(&self, n: usize) -> BTreeMap<String, Entry> {
        Image { layers: self.layers[..n].to_vec(), ..self.clone() }.fs()
    }

    /// The layer made by the step whose history `created_by` contains `needle`
    /// (the only such step that made a layer).
    #[track_caller]
    pub fn layer_by(&self, needle: &str) -> &Layer {
        let made: Vec<Value> = self.history().into_iter().filter(|h| h["empty_layer"] != Value::Bool(true)).collect();
        let hits: Vec<usize> = made
            .iter()
            .enumerate()
            .filter(|(_, h)| h["created_by"].as_str().unwrap_or("").contains(needle))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits.len(), 1, "{} layer-making steps match {needle:?}: {made:#?}", hits.len());
        &self.layers[hits[0]]
    }

    /// Whiteouts (`.wh.X`) that delete nothing: X does not exist in the layers below.
    /// docker never writes these; they are noise at best.
    pub fn stray_whiteouts(&self) -> Vec<String> {
        let mut stray = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let below = self.fs_upto(i);
            for e in &layer.entries {
                let (dir, base) = match e.path.rsplit_once('/') {
                    Some((d, b)) => (format!("{d}/"), b),
                    None => (String::new(), e.path.as_str()),
                };
                if base == ".wh..wh..opq" {
                    continue;
                }
                if let Some(victim) = base.strip_prefix(".wh.") {
                    let victim = format!("{dir}{victim}");
                    if !below.contains_key(&victim) {
                        stray.push(format!("layer {i}: {}", e.path));
                    }
                }
            }
        }
        stray
    }
}

/// The pids of processes whose command line is exactly `argv` (NUL-separated in /proc).
pub fn pids_with_cmdline(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}
