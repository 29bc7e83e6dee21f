//! Shared by the fault suites (kill_points, disk_full, store_concurrency): the
//! kiln binary built with the `fault-injection` feature, a local registry,
//! a seeded random source, and a /proc scan for processes a killed kiln left.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kiln_integration::require_tool;

/// kiln built with `--features fault-injection` (see `kiln::fault`), into its
/// own target dir (`target/fault`) so the ordinary `target/debug/kiln` the
/// other suites run stays the production build. Built once per test binary;
/// cargo's lock serialises test binaries that build it at the same time.
/// `KILN_FAULT_BIN` names a prebuilt one instead.
pub fn fault_kiln() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("KILN_FAULT_BIN") {
            return PathBuf::from(p);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
        let target = workspace.join("target/fault");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let started = Instant::now();
        let out = Command::new(&cargo)
            .current_dir(&workspace)
            .args(["build", "--locked", "-p", "kiln", "--bin", "kiln", "--features", "fault-injection"])
            .env("CARGO_TARGET_DIR", &target)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run cargo to build kiln with the fault-injection feature");
        assert!(
            out.status.success(),
            "building kiln with --features fault-injection failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("built kiln with fault injection in {:.1}s", started.elapsed().as_secs_f64());
        target.join("debug/kiln")
    })
    .clone()
}

/// Debian's `docker-registry` on 127.0.0.1 with its storage in a temp dir.
pub struct Registry {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    pub fn start() -> Registry {
        let bin = require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test-secret\n",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen on {port}: {}", reg.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps blob `digest`'s bytes (its filesystem driver's layout).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// The digest tag `repo:tag` points at.
    pub fn tag_digest(&self, repo: &str, tag: &str) -> String {
        let link = self
            .dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link");
        fs::read_to_string(link).unwrap().trim().to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// xorshift64*: reproducible delays and choices from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed of the run: `KILN_KILL_SEED`, else a fixed one.
pub fn seed() -> u64 {
    std::env::var("KILN_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(10)
}

/// `[start, end)` of the uids a test user's processes may run as: its own
/// uid and its subordinate range (ids inside kiln's user namespace).
pub fn user_uids(uid: u32) -> Vec<(u64, u64)> {
    let mut out = vec![(uid as u64, uid as u64 + 1)];
    let name = Command::new("id").args(["-nu", &uid.to_string()]).output().ok();
    let name = name.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    for line in fs::read_to_string("/etc/subuid").unwrap_or_default().lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() == 3 && (f[0] == name || f[0] == uid.to_string()) {
            if let (Ok(s), Ok(c)) = (f[1].parse::<u64>(), f[2].parse::<u64>()) {
                out.push((s, s + c));
            }
        }
    }
    out
}

/// A process that is still there after the kiln that started it was killed.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
}

/// Processes of the test user (uid or subordinate ids) that belong to one
/// kiln run: in its process group, carrying its `marker` (`KEY=VALUE`) in
/// their environment (kiln's re-executed self inherits it), or naming `path`
/// on their command line, as a fuse-overlayfs mount of its store does. Other
/// processes of the same user (another test running at the same time) are
/// not counted. Every fuse-overlayfs naming `path` counts, whatever its uid.
pub fn leftovers(uids: &[(u64, u64)], pgid: u32, marker: &str, path: &Path) -> Vec<Leftover> {
    let me = std::process::id();
    let path = path.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        let comm = field("Name:").unwrap_or_default();
        if field("State:").is_some_and(|s| s.starts_with('Z')) {
            continue; // a zombie holds nothing; its parent reaps it
        }
        let ids: Vec<u64> =
            field("Uid:").unwrap_or_default().split_whitespace().filter_map(|v| v.parse().ok()).collect();
        let ours = ids.iter().any(|id| uids.iter().any(|(s, e)| id >= s && id < e));
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim().to_string())
            .unwrap_or_default();
        let fuse = comm.starts_with("fuse-overlayfs") && cmdline.contains(&path);
        if !ours && !fuse {
            continue;
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 5 (pgrp), counted after the ")" that ends the command name.
        let pgrp = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(2)?.parse::<u32>().ok());
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let marked = environ.split(|b| *b == 0).any(|v| v == marker.as_bytes());
        if fuse || marked || pgrp == Some(pgid) || cmdline.contains(&path) {
            out.push(Leftover { pid, comm, cmdline });
        }
    }
    out
}

/// Waits up to `grace` for a kiln run's processes to go; returns those
/// still there, after SIGKILLing them so the next case starts clean.
pub fn reap_leftovers(uids: &[(u64, u64)], pgid: u32, marker: &str, path: &Path, grace: Duration) -> Vec<Leftover> {
    let deadline = Instant::now() + grace;
    loop {
        let left = leftovers(uids, pgid, marker, path);
        if left.is_empty() {
            return left;
        }
        if Instant::now() > deadline {
            for l in &left {
                let _ = Command::new("kill").args(["-KILL", &l.pid.to_string()]).status();
            }
            let until = Instant::now() + Duration::from_secs(5);
            while !leftovers(uids, pgid, marker, path).is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Mounts left in this (the test's) mount namespace under `path`.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(4).is_some_and(|m| m.starts_with(&p)))
        .map(str::to_string)
        .collect()
}
