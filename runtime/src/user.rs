//! USER resolution against the image's own /etc/passwd and /etc/group, with
//! docker's rules: a uid needs no passwd entry, an unknown name is an error,
//! supplementary groups only when no group was given.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::spec::UserSpec;
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("find user {name}: no matching entry in the image's /etc/passwd")]
    UnknownUser { name: String },
    #[error("find group {name}: no matching entry in the image's /etc/group")]
    UnknownGroup { name: String },
    #[error("parse USER {spec:?}: an empty user name")]
    Empty { spec: String },
    #[error("read {path} in the image")]
    Read { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() || line.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).unwrap_or(&"/").to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() || line.starts_with('#') {
                return None;
            }
            let members =
                f.get(3).map(|m| m.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect());
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members: members.unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user` (`name|uid[:group|gid]`, empty = root) with the given
/// database contents.
pub fn resolve_with(user: &str, passwd: &[PasswdEntry], groups: &[GroupEntry]) -> Result<UserSpec, UserError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if user_part.is_empty() {
        if user.is_empty() {
            return Ok(UserSpec::default());
        }
        return Err(UserError::Empty { spec: user.to_string() });
    }
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|p| p.uid == uid).cloned(),
        Err(_) => Some(
            passwd
                .iter()
                .find(|p| p.name == user_part)
                .cloned()
                .ok_or_else(|| UserError::UnknownUser { name: user_part.to_string() })?,
        ),
    };
    let uid = entry.as_ref().map_or_else(|| user_part.parse().unwrap_or(0), |e| e.uid);
    let mut spec = UserSpec { uid, gid: entry.as_ref().map_or(0, |e| e.gid), additional_gids: Vec::new() };
    match group_part.filter(|g| !g.is_empty()) {
        Some(group) => {
            spec.gid = match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => groups
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.gid)
                    .ok_or_else(|| UserError::UnknownGroup { name: group.to_string() })?,
            };
        }
        None => {
            if let Some(entry) = &entry {
                for g in groups.iter().filter(|g| g.members.contains(&entry.name)) {
                    if g.gid != spec.gid && !spec.additional_gids.contains(&g.gid) {
                        spec.additional_gids.push(g.gid);
                    }
                }
            }
        }
    }
    Ok(spec)
}

/// Resolves `user` against the rootfs's /etc/passwd and /etc/group, read
/// with every path resolved inside the rootfs (symlinks cannot leave it).
pub fn resolve(rootfs: &Path, user: &str) -> Result<UserSpec, UserError> {
    if user.is_empty() || user == "0" || user == "0:0" {
        return Ok(UserSpec::default());
    }
    let passwd = parse_passwd(&read_in_root(rootfs, "etc/passwd")?);
    let groups = parse_group(&read_in_root(rootfs, "etc/group")?);
    resolve_with(user, &passwd, &groups)
}

/// Reads a text file of the image; a missing file reads as empty.
pub fn read_in_root(rootfs: &Path, path: &str) -> Result<String, UserError> {
    let err = |source| UserError::Read { path: PathBuf::from("/").join(path), source };
    let root = std::fs::File::open(rootfs).map_err(err)?;
    let fd = match sys::open_in_root(&root, Path::new(path), libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(err(e)),
    };
    let mut bytes = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut bytes).map_err(err)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:bob, alice\nstaff:x:50:\n";

    fn res(user: &str) -> Result<UserSpec, UserError> {
        resolve_with(user, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(res("").unwrap(), UserSpec::default());
        assert_eq!(res("alice").unwrap(), UserSpec { uid: 1000, gid: 1000, additional_gids: vec![10, 29] });
        assert_eq!(res("1000").unwrap(), UserSpec { uid: 1000, gid: 1000, additional_gids: vec![10, 29] });
        assert_eq!(res("_apt").unwrap(), UserSpec { uid: 42, gid: 65534, additional_gids: vec![] });
        // A uid without an entry is fine and gets gid 0.
        assert_eq!(res("4242").unwrap(), UserSpec { uid: 4242, gid: 0, additional_gids: vec![] });
    }

    #[test]
    fn explicit_group_drops_supplementary() {
        assert_eq!(res("alice:staff").unwrap(), UserSpec { uid: 1000, gid: 50, additional_gids: vec![] });
        assert_eq!(res("1000:1000").unwrap(), UserSpec { uid: 1000, gid: 1000, additional_gids: vec![] });
        assert_eq!(res("4242:777").unwrap(), UserSpec { uid: 4242, gid: 777, additional_gids: vec![] });
    }

    #[test]
    fn unknown_names_fail() {
        assert!(matches!(res("bob"), Err(UserError::UnknownUser { .. })));
        assert!(matches!(res("alice:nogroup"), Err(UserError::UnknownGroup { .. })));
        assert!(matches!(res(":10"), Err(UserError::Empty { .. })));
    }

    #[test]
    fn reads_through_absolute_symlinks_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/passwd"), PASSWD).unwrap();
        std::os::unix::fs::symlink("/data/passwd", dir.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/shadow", dir.path().join("etc/group")).unwrap();
        let spec = resolve(dir.path(), "alice").unwrap();
        assert_eq!((spec.uid, spec.gid), (1000, 1000));
        assert!(spec.additional_gids.is_empty(), "the escaping group symlink must read as missing");
    }
}
