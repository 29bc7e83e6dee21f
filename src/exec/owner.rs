//! `--chown=user[:group]` resolved against the image's /etc/passwd and
//! /etc/group, as BuildKit's readUser (solver/llbsolver/ops/user_linux.go)
//! does: names are looked up in the image (never on the host); without a
//! group, a number is the gid too and a name takes its passwd entry's
//! primary gid (the classic builder looked up a group of the user's name).

use crate::dockerfile::ids::{numeric_id, MAX_ID};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OwnerError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("empty --chown value")]
    Empty,
    /// A number in the Dockerfile (the planner refuses those) or in the
    /// image's passwd or group file.
    #[error("--chown: {0}")]
    OutOfRange(String),
}

/// Resolves `spec` to numeric ids. `passwd` and `group` are the image's files.
pub fn resolve(spec: &str, passwd: Option<&[u8]>, group: Option<&[u8]>) -> Result<(u64, u64), OwnerError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(OwnerError::Empty);
    }
    let (uid, primary_gid) = match numeric_id(user).map_err(OwnerError::OutOfRange)? {
        Some(n) => (n, n),
        None => {
            let field = |index| lookup(passwd, user, index).ok_or_else(|| OwnerError::NoUser(user.to_string()));
            (field(2)?, field(3)?)
        }
    };
    let gid = match grp {
        None | Some("") => primary_gid,
        Some(g) => match numeric_id(g).map_err(OwnerError::OutOfRange)? {
            Some(n) => n,
            None => lookup(group, g, 2).ok_or_else(|| OwnerError::NoGroup(g.to_string()))?,
        },
    };
    Ok((uid, gid))
}

/// Finds `name` in a colon-separated database and returns field `index` as
/// a number. An id out of range (an image's passwd is untrusted) counts as
/// no match.
fn lookup(db: Option<&[u8]>, name: &str, index: usize) -> Option<u64> {
    let text = String::from_utf8_lossy(db?);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(index)?.trim().parse().ok())
        .filter(|&id| id <= MAX_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &[u8] = b"root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    #[test]
    fn numbers_and_names() {
        assert_eq!(resolve("10", None, None), Ok((10, 10)));
        assert_eq!(resolve("10:11", None, None), Ok((10, 11)));
        assert_eq!(resolve("app", Some(PASSWD), Some(GROUP)), Ok((1000, 1001)), "the primary gid, not the uid");
        assert_eq!(resolve("app:", Some(PASSWD), Some(GROUP)), Ok((1000, 1001)));
        assert_eq!(resolve("1000", Some(PASSWD), Some(GROUP)), Ok((1000, 1000)), "a number is not looked up");
        assert_eq!(resolve("app:staff", Some(PASSWD), Some(GROUP)), Ok((1000, 50)));
        assert_eq!(resolve("1:app", Some(PASSWD), Some(GROUP)), Ok((1, 1001)));
    }

    #[test]
    fn unknown_names_fail() {
        assert_eq!(resolve("nobody", Some(PASSWD), Some(GROUP)), Err(OwnerError::NoUser("nobody".into())));
        assert_eq!(resolve("app:wheel", Some(PASSWD), Some(GROUP)), Err(OwnerError::NoGroup("wheel".into())));
        assert_eq!(resolve("app", None, None), Err(OwnerError::NoUser("app".into())));
    }

    #[test]
    fn ids_beyond_the_kernels_are_refused() {
        assert_eq!(resolve("4294967294", None, None), Ok((4294967294, 4294967294)));
        assert!(matches!(resolve("99999999999", None, None), Err(OwnerError::OutOfRange(_))));
        assert!(matches!(resolve("1:4294967295", None, None), Err(OwnerError::OutOfRange(_))));
        let passwd = b"big:x:99999999999:0::/:/bin/sh\n";
        assert_eq!(resolve("big", Some(passwd), None), Err(OwnerError::NoUser("big".into())));
    }
}
