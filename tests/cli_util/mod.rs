//! Runs the built kiln binary against temp stores for the CLI tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        Env { dir, store }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `kiln --root <store> args…`
    pub fn kiln(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("--root").arg(&self.store).args(args).env_remove("KILN_ROOT");
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

/// Runs a tool; `None` (with a notice) when it is not installed.
pub fn tool(name: &str, args: &[&str]) -> Option<String> {
    let out = match StdCommand::new(name).args(args).output() {
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
