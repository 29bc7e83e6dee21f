//! `--chown=user[:group]` resolved against the image's /etc/passwd and
//! /etc/group, as docker does: names are looked up in the image (never on the
//! host); a user without a group uses the same number for the group.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OwnerError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("empty --chown value")]
    Empty,
    #[error("--chown: id {0} is out of range (user and group ids go from 0 to 4294967294)")]
    OutOfRange(u64),
}

/// Ids a file can have: 32-bit, and 2^32-1 means "unchanged" to chown(2).
const MAX_ID: u64 = u32::MAX as u64 - 1;

/// Resolves `spec` to numeric ids. `passwd` and `group` are the image's files.
pub fn resolve(spec: &str, passwd: Option<&[u8]>, group: Option<&[u8]>) -> Result<(u64, u64), OwnerError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(OwnerError::Empty);
    }
    let uid = match user.parse::<u64>() {
        Ok(n) => n,
        Err(_) => lookup(passwd, user, 2).ok_or_else(|| OwnerError::NoUser(user.to_string()))?,
    };
    let gid = match grp {
        None | Some("") => uid,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => lookup(group, g, 2).ok_or_else(|| OwnerError::NoGroup(g.to_string()))?,
        },
    };
    for id in [uid, gid] {
        if id > MAX_ID {
            return Err(OwnerError::OutOfRange(id));
        }
    }
    Ok((uid, gid))
}

/// Finds `name` in a colon-separated database and returns field `index` as a number.
fn lookup(db: Option<&[u8]>, name: &str, index: usize) -> Option<u64> {
    let text = String::from_utf8_lossy(db?);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(index)?.trim().parse().ok())
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
        assert_eq!(resolve("app", Some(PASSWD), Some(GROUP)), Ok((1000, 1000)));
        assert_eq!(resolve("app:staff", Some(PASSWD), Some(GROUP)), Ok((1000, 50)));
        assert_eq!(resolve("1:app", Some(PASSWD), Some(GROUP)), Ok((1, 1001)));
    }

    #[test]
    fn ids_beyond_32_bits_are_refused() {
        assert_eq!(resolve("4294967294", None, None), Ok((4_294_967_294, 4_294_967_294)));
        assert_eq!(resolve("4294967295", None, None), Err(OwnerError::OutOfRange(4_294_967_295)));
        assert_eq!(resolve("1:99999999999", None, None), Err(OwnerError::OutOfRange(99_999_999_999)));
        let passwd = b"big:x:5000000000:1::/:/bin/sh\n";
        assert_eq!(resolve("big", Some(passwd), None), Err(OwnerError::OutOfRange(5_000_000_000)));
    }

    #[test]
    fn unknown_names_fail() {
        assert_eq!(resolve("nobody", Some(PASSWD), Some(GROUP)), Err(OwnerError::NoUser("nobody".into())));
        assert_eq!(resolve("app:wheel", Some(PASSWD), Some(GROUP)), Err(OwnerError::NoGroup("wheel".into())));
        assert_eq!(resolve("app", None, None), Err(OwnerError::NoUser("app".into())));
    }
}
