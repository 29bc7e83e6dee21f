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
    fn unknown_names_fail() {
        assert_eq!(resolve("nobody", Some(PASSWD), Some(GROUP)), Err(OwnerError::NoUser("nobody".into())));
        assert_eq!(resolve("app:wheel", Some(PASSWD), Some(GROUP)), Err(OwnerError::NoGroup("wheel".into())));
        assert_eq!(resolve("app", None, None), Err(OwnerError::NoUser("app".into())));
    }
}
