//! Which id mapping kiln can get, decided once per run: real root needs none;
//! otherwise a full map from /etc/subuid and /etc/subgid (written with
//! newuidmap/newgidmap), a single-id map, or no user namespace at all.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

/// How many subordinate ids the suggested fix hands out (what useradd gives).
pub const SUBID_COUNT: u32 = 65536;

/// Where useradd starts handing out subordinate ids (SUB_UID_MIN).
const SUBID_MIN: u32 = 100_000;

/// Environment marker set inside kiln's user namespace.
pub const INSIDE_ENV: &str = "KILN_USERNS";

/// One line of an id map: `size` ids starting at `container` inside the
/// namespace are `host`.. outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// A subordinate id range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdRange {
    pub start: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapMode {
    /// Real root: no user namespace needed.
    Root,
    /// uid/gid 0 ↔ the caller, 1..N ↔ the subordinate ranges.
    Full { uids: Vec<IdMap>, gids: Vec<IdMap> },
    /// Only the caller's ids ↔ 0.
    Single,
    /// User namespaces are forbidden here; builds without RUN still work.
    Unavailable { reason: String },
}

impl MapMode {
    /// A short name for logs and `kiln info`.
    pub fn name(&self) -> &'static str {
        match self {
            MapMode::Root => "root",
            MapMode::Full { .. } => "full",
            MapMode::Single => "single",
            MapMode::Unavailable { .. } => "unavailable",
        }
    }

    /// The uid map this mode installs, for the given caller uid.
    pub fn uid_maps(&self, caller: u32) -> Vec<IdMap> {
        match self {
            MapMode::Full { uids, .. } => uids.clone(),
            MapMode::Single => vec![IdMap { container: 0, host: caller, size: 1 }],
            MapMode::Root | MapMode::Unavailable { .. } => Vec::new(),
        }
    }

    /// The gid map this mode installs, for the given caller gid.
    pub fn gid_maps(&self, caller: u32) -> Vec<IdMap> {
        match self {
            MapMode::Full { gids, .. } => gids.clone(),
            MapMode::Single => vec![IdMap { container: 0, host: caller, size: 1 }],
            MapMode::Root | MapMode::Unavailable { .. } => Vec::new(),
        }
    }
}

/// Parses /etc/subuid or /etc/subgid text: the ranges of the user named
/// `name` or with numeric id `id`, in file order.
pub fn parse_subid(text: &str, name: Option<&str>, id: u32) -> Vec<SubIdRange> {
    let id_text = id.to_string();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let owner = fields.next()?;
            let start = fields.next()?.trim().parse::<u32>().ok()?;
            let count = fields.next()?.trim().parse::<u32>().ok()?;
            let ours = owner == id_text || Some(owner) == name;
            (ours && count > 0).then_some(SubIdRange { start, count })
        })
        .collect()
}

/// Every range of /etc/subuid or /etc/subgid text, whoever owns it.
pub fn parse_all_subids(text: &str) -> Vec<SubIdRange> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':').skip(1);
            let start = fields.next()?.trim().parse::<u32>().ok()?;
            let count = fields.next()?.trim().parse::<u32>().ok()?;
            Some(SubIdRange { start, count })
        })
        .collect()
}

/// The first `count` ids from 100000 up that no range in `taken` touches,
/// so the suggested fix never hands out another user's ids.
pub fn first_free_subids(taken: &[SubIdRange], count: u32) -> Option<u32> {
    let mut ranges: Vec<(u64, u64)> = taken.iter().map(|r| (r.start as u64, r.start as u64 + r.count as u64)).collect();
    ranges.sort_unstable();
    let mut start = SUBID_MIN as u64;
    for (s, e) in ranges {
        if s >= start + count as u64 {
            break;
        }
        start = start.max(e);
    }
    (start + count as u64 <= u32::MAX as u64).then_some(start as u32)
}

/// The command that gives `user` a range free in both files.
pub fn subid_fix(user: Option<&str>, taken: &[SubIdRange]) -> String {
    let user = user.unwrap_or("$USER");
    match first_free_subids(taken, SUBID_COUNT) {
        Some(start) => {
            let range = format!("{start}-{}", start + (SUBID_COUNT - 1));
            format!("sudo usermod --add-subuids {range} --add-subgids {range} {user}")
        }
        None => format!("give {user} a free range of {SUBID_COUNT} ids in /etc/subuid and /etc/subgid"),
    }
}

/// Builds a full map: container 0 ↔ `caller`, then container 1.. ↔ each
/// range in order. Stops before container ids would overflow.
pub fn build_full_map(caller: u32, ranges: &[SubIdRange]) -> Vec<IdMap> {
    let mut maps = vec![IdMap { container: 0, host: caller, size: 1 }];
    let mut next: u32 = 1;
    for range in ranges {
        let room = u32::MAX - next;
        let size = range.count.min(room);
        if size == 0 {
            break;
        }
        maps.push(IdMap { container: next, host: range.start, size });
        next += size;
    }
    maps
}

/// The ids of `own` (a namespace's map, by its inside ids), each mapped to
/// itself. Extent by extent: the kernel refuses an extent that spans two of
/// the parent's.
pub fn identity(own: &[IdMap]) -> Vec<IdMap> {
    let mut maps: Vec<IdMap> =
        own.iter().map(|m| IdMap { container: m.container, host: m.container, size: m.size }).collect();
    maps.sort_unstable_by_key(|m| m.container);
    maps
}

/// Parses /proc/PID/uid_map or gid_map text.
pub fn parse_proc_map(text: &str) -> Vec<IdMap> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some(IdMap { container: f.next()??, host: f.next()??, size: f.next()?? })
        })
        .collect()
}

/// Renders maps the way /proc/PID/uid_map shows them.
pub fn format_maps(maps: &[IdMap]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.container, m.host, m.size)).collect()
}

/// Kernel and system facts that decide the mode; gathered separately so the
/// decision itself is testable as data.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub euid: u32,
    pub egid: u32,
    pub user_name: Option<String>,
    /// Set when already inside kiln's namespace: the maps in effect.
    pub inside: Option<(Vec<IdMap>, Vec<IdMap>)>,
    pub max_user_namespaces: Option<u64>,
    pub unprivileged_userns_clone: Option<u64>,
    pub apparmor_restrict: Option<u64>,
    /// Whether a probe child could unshare and use its capabilities; `None`
    /// when not probed.
    pub probe: Option<Result<(), String>>,
    pub subuids: Vec<SubIdRange>,
    pub subgids: Vec<SubIdRange>,
    /// Every range in /etc/subuid and /etc/subgid, of every user: what a
    /// suggested new range must not overlap.
    pub taken_subids: Vec<SubIdRange>,
    pub newuidmap: Option<PathBuf>,
    pub newgidmap: Option<PathBuf>,
    /// For root: whether CAP_SYS_ADMIN is in its effective set. Root of a
    /// container without it (docker's and podman's default) can neither
    /// mount nor unshare a mount namespace by itself.
    pub cap_sys_admin: bool,
    /// For root: the ids its own user namespace maps (/proc/self/uid_map
    /// and gid_map), which a namespace of kiln's may map one to one.
    pub own_uids: Vec<IdMap>,
    pub own_gids: Vec<IdMap>,
}

/// The decision and, for a fallback, the one-line warning that says what is
/// lost and how to fix it.
pub fn decide(facts: &Facts) -> (MapMode, Option<String>) {
    if let Some((uids, gids)) = &facts.inside {
        let single = uids.len() <= 1 && uids.iter().all(|m| m.size <= 1);
        let mode = if single { MapMode::Single } else { MapMode::Full { uids: uids.clone(), gids: gids.clone() } };
        return (mode, None);
    }
    if facts.euid == 0 && facts.cap_sys_admin {
        return (MapMode::Root, None);
    }
    if facts.euid == 0 {
        // Root of an unprivileged container: a user namespace of its own
        // gives kiln the capabilities there, with every id the container
        // has (written directly: root needs no newuidmap).
        if let Some(reason) = forbidden(facts) {
            let warning = format!("{reason}; RUN steps are not possible (builds without RUN still work)");
            return (MapMode::Unavailable { reason }, Some(warning));
        }
        return (MapMode::Full { uids: identity(&facts.own_uids), gids: identity(&facts.own_gids) }, None);
    }
    if let Some(reason) = forbidden(facts) {
        let warning = format!("{reason}; RUN steps are not possible (builds without RUN still work)");
        return (MapMode::Unavailable { reason }, Some(warning));
    }
    let missing = if facts.subuids.is_empty() || facts.subgids.is_empty() {
        Some(format!(
            "no subordinate id range for {} in /etc/subuid and /etc/subgid",
            facts.user_name.as_deref().unwrap_or("this user")
        ))
    } else if facts.newuidmap.is_none() || facts.newgidmap.is_none() {
        Some("newuidmap/newgidmap not found (install the uidmap package)".to_string())
    } else {
        None
    };
    if let Some(why) = missing {
        let warning = format!(
            "{why}: using a single-id map, so only uid/gid 0 exist in RUN steps (USER with another id fails; \
             chown and setuid to other ids are pretended: the image records the owner, RUN sees uid 0); fix: {}",
            subid_fix(facts.user_name.as_deref(), &facts.taken_subids)
        );
        return (MapMode::Single, Some(warning));
    }
    let uids = build_full_map(facts.euid, &facts.subuids);
    let gids = build_full_map(facts.egid, &facts.subgids);
    (MapMode::Full { uids, gids }, None)
}

fn forbidden(facts: &Facts) -> Option<String> {
    if facts.max_user_namespaces == Some(0) {
        return Some("user namespaces are disabled (user.max_user_namespaces = 0; fix: sysctl -w user.max_user_namespaces=15000)".into());
    }
    if facts.unprivileged_userns_clone == Some(0) {
        return Some("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0; fix: sysctl -w kernel.unprivileged_userns_clone=1)".into());
    }
    if let Some(Err(why)) = &facts.probe {
        let apparmor = facts.apparmor_restrict == Some(1);
        return Some(if apparmor {
            format!(
                "AppArmor restricts unprivileged user namespaces ({why}; fix: add an AppArmor profile for kiln with \
                 `userns,` or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)"
            )
        } else {
            format!("cannot create a user namespace ({why})")
        });
    }
    None
}

/// Whether CAP_SYS_ADMIN (bit 21) is in this process's effective set.
fn has_cap_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        // Unreadable: assume real root, as before this check existed.
        .is_none_or(|caps| caps & (1 << 21) != 0)
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() && path.is_file()
}

/// Gathers the facts of this process. `probe` runs a child that tries a user
/// namespace; it is only consulted when the AppArmor restriction is on.
pub fn gather_facts(probe: impl FnOnce() -> Result<(), String>) -> Facts {
    let euid = Uid::effective().as_raw();
    let egid = Gid::effective().as_raw();
    let inside = std::env::var_os(INSIDE_ENV).is_some().then(|| {
        let read = |p: &str| parse_proc_map(&std::fs::read_to_string(p).unwrap_or_default());
        (read("/proc/self/uid_map"), read("/proc/self/gid_map"))
    });
    let user_name = User::from_uid(Uid::from_raw(euid)).ok().flatten().map(|u| u.name);
    let mut facts = Facts {
        euid,
        egid,
        user_name,
        inside,
        max_user_namespaces: read_number("/proc/sys/user/max_user_namespaces"),
        unprivileged_userns_clone: read_number("/proc/sys/kernel/unprivileged_userns_clone"),
        apparmor_restrict: read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        ..Facts::default()
    };
    if euid == 0 && facts.inside.is_none() {
        facts.cap_sys_admin = has_cap_sys_admin();
        let read = |p: &str| parse_proc_map(&std::fs::read_to_string(p).unwrap_or_default());
        facts.own_uids = read("/proc/self/uid_map");
        facts.own_gids = read("/proc/self/gid_map");
    }
    if facts.inside.is_some() || euid == 0 {
        return facts;
    }
    if facts.apparmor_restrict == Some(1) {
        facts.probe = Some(probe());
    }
    let name = facts.user_name.clone();
    let read = |p: &str| parse_subid(&std::fs::read_to_string(p).unwrap_or_default(), name.as_deref(), euid);
    facts.subuids = read("/etc/subuid");
    facts.subgids = read("/etc/subgid");
    for file in ["/etc/subuid", "/etc/subgid"] {
        facts.taken_subids.extend(parse_all_subids(&std::fs::read_to_string(file).unwrap_or_default()));
    }
    facts.newuidmap = find_tool("newuidmap");
    facts.newgidmap = find_tool("newgidmap");
    facts
}

#[cfg(test)]
mod tests;
