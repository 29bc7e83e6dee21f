//! Runs the built kiln binary against temp stores for the CLI tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;

/// The unprivileged user the CLI tests run kiln as when they run as root:
/// kiln's users are not root (the integration harness makes the same user).
pub const TEST_USER: &str = "kilntest";

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    /// As root: a copy of kiln the test user can run.
    kiln: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("kiln-cli-").tempdir_in("/tmp").unwrap();
        let store = dir.path().join("store");
        let kiln = if is_root() {
            ensure_test_user();
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).unwrap();
            // A hard link writes nothing: a copy is open for writing while
            // other test threads fork, and their children then make the exec
            // fail with "text file busy".
            let src = env!("CARGO_BIN_EXE_kiln");
            if std::fs::hard_link(src, bin.join("kiln")).is_err() {
                let tmp = bin.join(".kiln.tmp");
                std::fs::copy(src, &tmp).unwrap();
                std::fs::rename(&tmp, bin.join("kiln")).unwrap();
            }
            bin.join("kiln")
        } else {
            PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
        };
        Env { dir, store, kiln }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `kiln --root <store> args…`, as the test user when the tests run as
    /// root (the sandbox is handed to that user first, so whatever the test
    /// wrote as root is theirs).
    pub fn kiln(&self, args: &[&str]) -> Command {
        let mut cmd = if is_root() {
            let st =
                StdCommand::new("chown").args(["-R", &format!("{TEST_USER}:")]).arg(self.dir.path()).status().unwrap();
            assert!(st.success(), "chown the sandbox to {TEST_USER}");
            let mut c = Command::new("setpriv");
            c.args(["--reuid", TEST_USER, "--regid", TEST_USER, "--init-groups", "--"]).arg(&self.kiln);
            c
        } else {
            Command::new(&self.kiln)
        };
        cmd.arg("--root")
            .arg(&self.store)
            .args(args)
            .env_remove("KILN_ROOT")
            .env("HOME", self.dir.path())
            .env("TMPDIR", self.dir.path())
            .current_dir(self.dir.path());
        cmd
    }

    /// Runs kiln, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args).output().unwrap();
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kiln, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kiln(args).output().unwrap();
        assert!(!out.status.success(), "kiln {args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    /// Builds `FROM scratch` + one COPY per file + `extra` Dockerfile lines;
    /// returns the image id (hex). `tag` may be empty for an untagged image.
    pub fn build(&self, tag: &str, files: &[(&str, &str)], extra: &str) -> String {
        let ctx = tempfile::tempdir_in(self.dir.path()).unwrap();
        let mut dockerfile = String::from("FROM scratch\n");
        for (name, content) in files {
            let path = ctx.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            // A fixed mtime: the same file in two builds gives the same layer
            // whatever second each build ran in.
            let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(epoch).unwrap();
            dockerfile.push_str(&format!("COPY {name} /{name}\n"));
        }
        dockerfile.push_str(extra);
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let ctx_path = ctx.path().to_str().unwrap();
        let mut args = vec!["build", "-q"];
        if !tag.is_empty() {
            args.extend(["-t", tag]);
        }
        args.push(ctx_path);
        let id = self.ok(&args).trim().to_string();
        // The store-management tests place their own build-cache records
        // where they need one; the records a real build leaves would keep
        // blobs alive and change every count they check.
        let _ = std::fs::remove_dir_all(self.store.join("kiln/cache"));
        id
    }

    pub fn blob_count(&self) -> usize {
        std::fs::read_dir(self.store.join("blobs/sha256")).unwrap().count()
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.store.join("blobs/sha256").join(digest.trim_start_matches("sha256:")).exists()
    }

    /// `kiln inspect IMAGE` as JSON.
    pub fn inspect(&self, image: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", image])).unwrap();
        v[0].clone()
    }
}

pub use kiln_integration::optional_tool as tool;

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `du -sb DIR` in bytes.
pub fn du_sb(dir: &Path) -> Option<u64> {
    let out = tool("du", &["-sb", s(dir)])?;
    Some(out.split_whitespace().next().unwrap().parse().unwrap())
}

/// Table rows of kiln's output, split on runs of 2+ spaces (cells hold single spaces).
pub fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines().map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()).collect()
}

/// Creates `kilntest` with a subordinate id range unless it exists (the
/// same user the integration harness runs kiln as).
pub fn ensure_test_user() {
    kiln_integration::users::ensure_user(TEST_USER, kiln_integration::users::SubIds::Range);
}
