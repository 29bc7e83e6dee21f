//! The unprivileged accounts tests run kiln as: one home for creating them,
//! shared by every test crate of the workspace (a dev-dependency of kiln,
//! kiln-runtime and kiln-overlay), so that all of them take subordinate id
//! ranges the same way, one at a time, without overlapping anyone's.

use std::fs;
use std::io::Write;
use std::process::Command;

/// Where ranges the tests hand out start (above useradd's usual 100000 +
/// a few users' worth).
const SUBID_START: u64 = 200_000;
const SUBID_COUNT: u64 = 65_536;
/// Serialises user set-up across test processes and crates.
const LOCK_FILE: &str = "/tmp/kiln-integration-user.lock";

/// Whether the user gets a subordinate id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubIds {
    /// A range of 65536 ids in /etc/subuid and /etc/subgid.
    Range,
    /// No line names the user in either file (kiln's single-id mode).
    None,
}

/// A test account as it exists after [`ensure_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The first subordinate uid and gid, with [`SubIds::Range`].
    pub subuid: Option<u64>,
    pub subgid: Option<u64>,
}

/// Creates `name` (with a home, shell /bin/sh and its own group) unless it
/// exists, and gives it a subordinate id range or takes any away. Idempotent;
/// must run as root.
pub fn ensure_user(name: &str, subids: SubIds) -> TestUser {
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .expect("open the user-setup lock file");
    // Held until this function returns (std's File::lock needs Rust 1.89).
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the user-setup lock file");
    if id_of(name, "-u").is_none() {
        let mut useradd = Command::new(crate::require_tool("useradd"));
        useradd.args(["-m", "-s", "/bin/sh", "-U"]);
        if subids == SubIds::None {
            useradd.args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]);
        }
        let out = useradd.arg(name).output().expect("run useradd");
        // 9: the user exists (created meanwhile by someone else).
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let uid: u32 = id_of(name, "-u").and_then(|u| u.parse().ok()).expect("the test user's uid");
    let gid: u32 = id_of(name, "-g").and_then(|g| g.parse().ok()).expect("the test user's gid");
    let mut starts = [None, None];
    for (file, start) in ["/etc/subuid", "/etc/subgid"].into_iter().zip(&mut starts) {
        let owners = [name.to_string(), uid.to_string()];
        *start = match subids {
            SubIds::Range => Some(ensure_range(file, &owners)),
            SubIds::None => {
                remove_ranges(file, &owners);
                None
            }
        };
    }
    TestUser { name: name.to_string(), uid, gid, subuid: starts[0], subgid: starts[1] }
}

/// Whether /etc/subuid gives `user` (by name or uid) a range.
pub fn has_subid_range(user: &str) -> bool {
    let uid = id_of(user, "-u").unwrap_or_default();
    let text = fs::read_to_string("/etc/subuid").unwrap_or_default();
    text.lines().any(|l| matches!(l.split(':').next(), Some(n) if n == user || n == uid))
}

fn id_of(user: &str, flag: &str) -> Option<String> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The start of the owner's range in `file`, appending one after every
/// range already given out when it has none.
fn ensure_range(file: &str, owners: &[String]) -> u64 {
    let text = fs::read_to_string(file).unwrap_or_default();
    let mut end = SUBID_START;
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split(':').collect();
        let [owner, start, count] = f[..] else { continue };
        let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.parse::<u64>()) else { continue };
        if owners.iter().any(|o| o == owner) {
            return start;
        }
        end = end.max(start + count);
    }
    let mut f = fs::OpenOptions::new().create(true).append(true).open(file).expect("open a subordinate id file");
    let sep = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
    writeln!(f, "{sep}{}:{end}:{SUBID_COUNT}", owners[0]).expect("append to a subordinate id file");
    end
}

/// Removes every line of `file` that names one of `owners`.
fn remove_ranges(file: &str, owners: &[String]) {
    let text = fs::read_to_string(file).unwrap_or_default();
    let kept: Vec<&str> = text.lines().filter(|l| !owners.iter().any(|o| l.split(':').next() == Some(o))).collect();
    if kept.len() != text.lines().count() {
        let mut out = kept.join("\n");
        out.push('\n');
        fs::write(file, out).unwrap_or_else(|e| panic!("rewrite {file}: {e}"));
    }
}
