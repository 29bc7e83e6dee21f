//! Credentials in single-id mode. Only uid/gid 0 exist in the user
//! namespace, so a RUN step's `setuid(42)` fails with EINVAL, and package
//! managers that drop to a sandbox user (apt's `_apt`) stop there. As
//! Charliecloud's seccomp mode does, the set*id calls to ids the namespace
//! lacks are answered by the supervisor (see `fake_chown`): they succeed
//! without changing anything the kernel checks, and the process's ids are
//! remembered, so its get*id calls report what it set. apt verifies the drop
//! (getuid, getresuid, … must show `_apt`), and it sees them change.
//!
//! What stays real: the kernel still runs the process as uid 0, so files it
//! creates are owned by root and permission checks are root's. The remembered
//! ids belong to one process (thread group, identified with its start time so
//! a reused pid starts clean), follow it across exec and are inherited by the
//! children it forks afterwards: a process met for the first time takes the
//! ids its parent had when it started (the supervisor sees no fork, so it
//! goes by start times, in clock ticks; a fork in the same tick as the
//! parent's change counts as after it). A process with remembered ids gets
//! the unprivileged rules: once no id of it is 0 it cannot set one back (apt
//! checks that too), with EPERM as the kernel would.

use std::collections::HashMap;

/// The calls this module answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdCall {
    /// setresuid/setresgid and the older forms mapped onto it; `None` keeps
    /// that id (-1).
    SetRes { group: bool, r: Option<u32>, e: Option<u32>, s: Option<u32> },
    /// setuid/setgid: all three ids when privileged, else the effective one.
    Set { group: bool, id: u32 },
    /// setreuid/setregid.
    SetRe { group: bool, r: Option<u32>, e: Option<u32> },
    /// setfsuid/setfsgid: returns the previous value, never fails.
    SetFs { group: bool, id: u32 },
    /// setgroups(size, list).
    SetGroups { size: u64, list: u64 },
    /// getuid, geteuid, getgid, getegid.
    Get { group: bool, effective: bool },
    /// getresuid/getresgid(r*, e*, s*).
    GetRes { group: bool, addrs: [u64; 3] },
    /// getgroups(size, list).
    GetGroups { size: u64, list: u64 },
}

fn id(arg: u64) -> Option<u32> {
    // The kernel takes the low 32 bits; -1 means "unchanged".
    Some(arg as u32).filter(|id| *id != u32::MAX)
}

/// The call a notification stands for, or `None` for other calls.
pub fn decode(nr: i64, a: &[u64; 6]) -> Option<IdCall> {
    use IdCall::*;
    let call = match nr {
        libc::SYS_setresuid => SetRes { group: false, r: id(a[0]), e: id(a[1]), s: id(a[2]) },
        libc::SYS_setresgid => SetRes { group: true, r: id(a[0]), e: id(a[1]), s: id(a[2]) },
        libc::SYS_setuid => Set { group: false, id: a[0] as u32 },
        libc::SYS_setgid => Set { group: true, id: a[0] as u32 },
        libc::SYS_setreuid => SetRe { group: false, r: id(a[0]), e: id(a[1]) },
        libc::SYS_setregid => SetRe { group: true, r: id(a[0]), e: id(a[1]) },
        libc::SYS_setfsuid => SetFs { group: false, id: a[0] as u32 },
        libc::SYS_setfsgid => SetFs { group: true, id: a[0] as u32 },
        libc::SYS_setgroups => SetGroups { size: a[0], list: a[1] },
        libc::SYS_getuid => Get { group: false, effective: false },
        libc::SYS_geteuid => Get { group: false, effective: true },
        libc::SYS_getgid => Get { group: true, effective: false },
        libc::SYS_getegid => Get { group: true, effective: true },
        libc::SYS_getresuid => GetRes { group: false, addrs: [a[0], a[1], a[2]] },
        libc::SYS_getresgid => GetRes { group: true, addrs: [a[0], a[1], a[2]] },
        libc::SYS_getgroups => GetGroups { size: a[0], list: a[1] },
        _ => return None,
    };
    Some(call)
}

/// The system calls to intercept for this module, on this architecture.
pub const CALLS: &[i64] = &[
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
];

/// Real, effective, saved and filesystem ids of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub r: u32,
    pub e: u32,
    pub s: u32,
    pub fs: u32,
}

impl Ids {
    fn all(id: u32) -> Ids {
        Ids { r: id, e: id, s: id, fs: id }
    }
}

/// A process's remembered credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub uids: Ids,
    pub gids: Ids,
    pub groups: Vec<u32>,
}

impl Creds {
    /// What a process of the namespace starts with: root, no groups beyond.
    pub fn root(groups: Vec<u32>) -> Creds {
        Creds { uids: Ids::all(0), gids: Ids::all(0), groups }
    }

    /// Privileged for both kinds of ids: effective uid 0 (CAP_SETUID and
    /// CAP_SETGID in the namespace).
    fn privileged(&self) -> bool {
        self.uids.e == 0
    }

    fn ids_mut(&mut self, group: bool) -> &mut Ids {
        if group {
            &mut self.gids
        } else {
            &mut self.uids
        }
    }
}

/// What a set*id call does to `creds`, by the kernel's rules
/// (credentials(7)): the new credentials, or the errno to return.
pub fn apply(creds: &Creds, call: IdCall) -> Result<Creds, i32> {
    let privileged = creds.privileged();
    let mut next = creds.clone();
    let ids = *next.ids_mut(matches!(
        call,
        IdCall::SetRes { group: true, .. } | IdCall::Set { group: true, .. } | IdCall::SetRe { group: true, .. }
    ));
    // An unprivileged process may only pick among its current ids.
    let allowed = |id: u32| privileged || id == ids.r || id == ids.e || id == ids.s;
    match call {
        IdCall::SetRes { group, r, e, s } => {
            if ![r, e, s].iter().flatten().all(|id| allowed(*id)) {
                return Err(libc::EPERM);
            }
            let t = next.ids_mut(group);
            t.r = r.unwrap_or(t.r);
            t.e = e.unwrap_or(t.e);
            t.s = s.unwrap_or(t.s);
            t.fs = t.e;
        }
        IdCall::Set { group, id } => {
            let t = next.ids_mut(group);
            if privileged {
                *t = Ids::all(id);
            } else if id == t.r || id == t.s {
                t.e = id;
                t.fs = id;
            } else {
                return Err(libc::EPERM);
            }
        }
        IdCall::SetRe { group, r, e } => {
            // Real may become the effective or the real one; effective any of the three.
            let r_ok = r.is_none_or(|id| privileged || id == ids.r || id == ids.e);
            let e_ok = e.is_none_or(allowed);
            if !(r_ok && e_ok) {
                return Err(libc::EPERM);
            }
            let t = next.ids_mut(group);
            let old_r = t.r;
            t.r = r.unwrap_or(t.r);
            t.e = e.unwrap_or(t.e);
            if r.is_some() || e.is_some_and(|id| id != old_r) {
                t.s = t.e;
            }
            t.fs = t.e;
        }
        IdCall::SetFs { group, id } => {
            let t = next.ids_mut(group);
            if privileged || id == t.r || id == t.e || id == t.s || id == t.fs {
                t.fs = id;
            }
        }
        _ => return Err(libc::EINVAL),
    }
    Ok(next)
}

/// setgroups: only a privileged process may.
pub fn set_groups(creds: &Creds, groups: Vec<u32>) -> Result<Creds, i32> {
    if !creds.privileged() {
        return Err(libc::EPERM);
    }
    if groups.len() > 65536 {
        return Err(libc::EINVAL);
    }
    Ok(Creds { groups, ..creds.clone() })
}

/// Whether the kernel can do this itself: every id it would set exists in
/// the namespace and the process has nothing remembered.
pub fn kernel_can(call: IdCall, mapped: impl Fn(bool, u32) -> bool) -> bool {
    match call {
        IdCall::SetRes { group, r, e, s } => [r, e, s].iter().flatten().all(|id| mapped(group, *id)),
        IdCall::Set { group, id } | IdCall::SetFs { group, id } => mapped(group, id),
        IdCall::SetRe { group, r, e } => [r, e].iter().flatten().all(|id| mapped(group, *id)),
        // setgroups is refused in a single-id namespace (setgroups=deny).
        IdCall::SetGroups { .. } => false,
        IdCall::Get { .. } | IdCall::GetRes { .. } | IdCall::GetGroups { .. } => true,
    }
}

/// A process as the table knows it: thread group id and start time (clock
/// ticks since boot).
pub type ProcessKey = (u32, u64);

/// The remembered credentials of the step's processes: for each, the
/// credentials it had from which tick on. An empty history means the
/// process has the real ids (a known answer, kept so ancestry is walked once).
#[derive(Debug, Default)]
pub struct Table {
    by_process: HashMap<ProcessKey, Vec<(u64, Creds)>>,
}

impl Table {
    /// The remembered credentials of `key` now; `None` when it has the real
    /// ids, or when it is not known yet (see [`Table::known`]).
    pub fn get(&self, key: ProcessKey) -> Option<&Creds> {
        self.by_process.get(&key)?.last().map(|(_, c)| c)
    }

    pub fn known(&self, key: ProcessKey) -> bool {
        self.by_process.contains_key(&key)
    }

    /// The credentials `key` had at `tick` (`None`: the real ids), for a
    /// child that started then.
    pub fn at(&self, key: ProcessKey, tick: u64) -> Option<&Creds> {
        self.by_process.get(&key)?.iter().rev().find(|(from, _)| *from <= tick).map(|(_, c)| c)
    }

    /// `key` sets `creds` at `tick`.
    pub fn set(&mut self, key: ProcessKey, tick: u64, creds: Creds) {
        self.by_process.entry(key).or_default().push((tick, creds));
    }

    /// A process first met: it has what its parent had when it started.
    pub fn inherit(&mut self, key: ProcessKey, from_parent: Option<Creds>) {
        let history = from_parent.map(|c| vec![(key.1, c)]).unwrap_or_default();
        self.by_process.insert(key, history);
    }
}

/// Clock ticks (USER_HZ, 100 on Linux) since boot from a /proc/uptime text,
/// the clock /proc/PID/stat start times use.
pub fn uptime_ticks(uptime: &str) -> Option<u64> {
    let secs = uptime.split_whitespace().next()?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, "0"));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(2).collect();
    Some(whole.parse::<u64>().ok()? * 100 + frac.parse::<u64>().ok()?)
}

/// The parent's pid in a /proc/PID/status text.
pub fn parent_of(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().parse().ok()
}

/// Thread group id and start time (clock ticks since boot) of task `tid`,
/// from /proc/TID/status and /proc/TID/stat texts.
pub fn process_key(status: &str, stat: &str) -> Option<(u32, u64)> {
    let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:"))?.trim().parse().ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields after its last ')'. Start time is field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some((tgid, start))
}

/// The supplementary groups in a /proc/PID/status text.
pub fn groups_of(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Creds {
        Creds::root(vec![])
    }

    #[test]
    fn apt_drops_to_its_sandbox_user_and_cannot_come_back() {
        // What apt's DropPrivileges does, in order.
        let c = set_groups(&root(), vec![65534]).unwrap();
        let c = apply(&c, IdCall::SetRes { group: true, r: Some(65534), e: Some(65534), s: Some(65534) }).unwrap();
        let c = apply(&c, IdCall::SetRes { group: false, r: Some(42), e: Some(42), s: Some(42) }).unwrap();
        assert_eq!(c.uids, Ids::all(42));
        assert_eq!(c.gids, Ids::all(65534));
        assert_eq!(c.groups, vec![65534]);
        // Regaining root fails as the kernel would make it fail.
        assert_eq!(apply(&c, IdCall::Set { group: false, id: 0 }), Err(libc::EPERM));
        assert_eq!(apply(&c, IdCall::Set { group: true, id: 0 }), Err(libc::EPERM));
        assert_eq!(apply(&c, IdCall::SetRe { group: false, r: None, e: Some(0) }), Err(libc::EPERM));
        assert_eq!(set_groups(&c, vec![0]), Err(libc::EPERM));
        // Setting what it already has is allowed.
        assert!(apply(&c, IdCall::Set { group: false, id: 42 }).is_ok());
    }

    #[test]
    fn seteuid_and_back_keeps_the_saved_id() {
        // seteuid(1000) is setresuid(-1, 1000, -1); root stays saved.
        let c = apply(&root(), IdCall::SetRes { group: false, r: None, e: Some(1000), s: None }).unwrap();
        assert_eq!(c.uids, Ids { r: 0, e: 1000, s: 0, fs: 1000 });
        let back = apply(&c, IdCall::SetRes { group: false, r: None, e: Some(0), s: None }).unwrap();
        assert_eq!(back.uids, Ids::all(0));
        // setuid as root sets all three.
        let all = apply(&root(), IdCall::Set { group: false, id: 7 }).unwrap();
        assert_eq!(all.uids, Ids::all(7));
        // setreuid(r, e) with a new real id saves the effective one.
        let re = apply(&root(), IdCall::SetRe { group: false, r: Some(5), e: Some(6) }).unwrap();
        assert_eq!(re.uids, Ids { r: 5, e: 6, s: 6, fs: 6 });
        // setfsuid changes only the filesystem id.
        let fs = apply(&root(), IdCall::SetFs { group: false, id: 9 }).unwrap();
        assert_eq!(fs.uids, Ids { r: 0, e: 0, s: 0, fs: 9 });
    }

    #[test]
    fn only_unmapped_ids_need_faking() {
        let single = |_group: bool, id: u32| id == 0;
        assert!(kernel_can(IdCall::Set { group: false, id: 0 }, single));
        assert!(!kernel_can(IdCall::Set { group: false, id: 42 }, single));
        assert!(kernel_can(IdCall::SetRes { group: true, r: None, e: Some(0), s: None }, single));
        assert!(!kernel_can(IdCall::SetRes { group: true, r: Some(0), e: Some(3), s: None }, single));
        assert!(!kernel_can(IdCall::SetGroups { size: 0, list: 0 }, single));
    }

    #[test]
    fn decodes_minus_one_as_unchanged() {
        let a = [u32::MAX as u64, 42, u64::MAX, 0, 0, 0];
        assert_eq!(
            decode(libc::SYS_setresuid, &a),
            Some(IdCall::SetRes { group: false, r: None, e: Some(42), s: None })
        );
        assert_eq!(decode(libc::SYS_getegid, &a), Some(IdCall::Get { group: true, effective: true }));
        assert_eq!(decode(libc::SYS_write, &a), None);
    }

    #[test]
    fn children_inherit_what_the_parent_had_when_they_started() {
        let dropped = Creds { uids: Ids::all(42), ..root() };
        let mut t = Table::default();
        let parent = (10, 1000);
        t.set(parent, 1500, dropped.clone());
        assert_eq!(t.at(parent, 1499), None, "a child forked before the drop is root");
        assert_eq!(t.at(parent, 1500), Some(&dropped), "the same tick counts as after");
        assert_eq!(t.at(parent, 9999), Some(&dropped));
        t.inherit((11, 1600), t.at(parent, 1600).cloned());
        assert_eq!(t.get((11, 1600)), Some(&dropped));
        t.inherit((12, 1400), t.at(parent, 1400).cloned());
        assert!(t.known((12, 1400)) && t.get((12, 1400)).is_none());
        assert!(!t.known((13, 1)));
        assert_eq!(uptime_ticks("12345.67 999.00\n"), Some(1234567));
        assert_eq!(uptime_ticks("5.1 0"), Some(510));
        assert_eq!(parent_of("Name:\tsh\nPPid:\t77\n"), Some(77));
    }

    #[test]
    fn proc_texts() {
        let status = "Name:\tapt\nTgid:\t123\nPid:\t124\nGroups:\t0 65534 \n";
        let stat = "124 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99887 20 21";
        assert_eq!(process_key(status, stat), Some((123, 99887)));
        assert_eq!(groups_of(status), vec![0, 65534]);
        assert_eq!(groups_of("Groups:\t\n"), Vec::<u32>::new());
    }
}
