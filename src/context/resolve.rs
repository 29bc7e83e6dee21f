//! Path resolution scoped to the context root, in the manner of
//! cyphar/filepath-securejoin: every symlink met on the way is read and
//! its target is resolved as if the root were `/` (an absolute target
//! restarts at the root, `..` never climbs above it). The result is a real
//! path inside the root, whatever the links say. Names and link targets
//! are bytes: none of them need be UTF-8.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};

/// Linux's MAXSYMLINKS: more expansions than this is a loop.
const MAX_LINKS: usize = 40;

#[derive(Debug)]
pub(crate) struct Resolved {
    /// Real path, `root` joined with `rel`.
    pub host: PathBuf,
    /// Real path relative to the root, `/`-separated, "" for the root.
    pub rel: BString,
    /// Context-relative paths of the symlinks followed on the way.
    pub links: Vec<BString>,
    pub is_dir: bool,
}

#[derive(Debug)]
pub(crate) enum ResolveError {
    NotFound,
    Loop,
    Io(PathBuf, io::Error),
}

/// Resolves the `/`-separated `rel` under `root`. Symlinks in non-final
/// components are always followed; the final one only if `follow_final`.
pub(crate) fn resolve(root: &Path, rel: &[u8], follow_final: bool) -> Result<Resolved, ResolveError> {
    let mut pending: VecDeque<Vec<u8>> = split(rel).collect();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut links = Vec::new();
    let mut is_dir = true;
    while let Some(part) = pending.pop_front() {
        match part.as_slice() {
            b"." => continue,
            b".." => {
                current.pop();
                is_dir = true;
                continue;
            }
            _ => {}
        }
        if !is_dir {
            // A non-directory cannot have children (ENOTDIR).
            return Err(ResolveError::NotFound);
        }
        current.push(part);
        let host = join(root, &current);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Err(ResolveError::NotFound)
            }
            Err(e) => return Err(ResolveError::Io(host, e)),
        };
        let last = pending.is_empty();
        if meta.file_type().is_symlink() && (!last || follow_final) {
            if links.len() >= MAX_LINKS {
                return Err(ResolveError::Loop);
            }
            links.push(current.join(&b'/').into());
            let target = std::fs::read_link(&host).map_err(|e| ResolveError::Io(host.clone(), e))?;
            let target = target.into_os_string().into_vec();
            current.pop();
            if target.starts_with(b"/") {
                current.clear();
            }
            for part in split(&target).collect::<Vec<_>>().into_iter().rev() {
                pending.push_front(part);
            }
            is_dir = true;
            continue;
        }
        is_dir = meta.is_dir();
    }
    Ok(Resolved { host: join(root, &current), rel: current.join(&b'/').into(), links, is_dir })
}

fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split_str("/").filter(|p| !p.is_empty()).map(<[u8]>::to_vec)
}

fn join(root: &Path, parts: &[Vec<u8>]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts.iter().map(|part| OsStr::from_bytes(part)));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_stay_inside_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::write(root.join("real/sub/f"), "x").unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../real", root.join("rel")).unwrap();
        symlink("/etc", root.join("hostetc")).unwrap();

        let r = resolve(root, b"abs/sub/f", true).unwrap();
        assert_eq!(r.rel, "real/sub/f");
        assert_eq!(r.links, vec!["abs"]);
        let r = resolve(root, b"rel/sub", true).unwrap();
        assert_eq!(r.rel, "real/sub");
        assert!(r.is_dir);
        // /etc does not exist inside the root, so the host's is never seen.
        assert!(matches!(resolve(root, b"hostetc/passwd", true), Err(ResolveError::NotFound)));
        // The final link is kept when not following.
        let r = resolve(root, b"abs", false).unwrap();
        assert_eq!(r.rel, "abs");
        assert!(!r.is_dir);
        assert!(matches!(resolve(root, b"real/sub/f/x", true), Err(ResolveError::NotFound)));
    }

    #[test]
    fn names_and_targets_are_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let name = |b: &[u8]| root.join(OsStr::from_bytes(b));
        std::fs::create_dir(name(b"d\xff")).unwrap();
        std::fs::write(name(b"d\xff/x\xfe"), "fe").unwrap();
        std::fs::write(name(b"d\xff/x\xfd"), "fd").unwrap();
        symlink(OsStr::from_bytes(b"/d\xff/x\xfe"), name(b"l\xfc")).unwrap();
        let r = resolve(root, b"l\xfc", true).unwrap();
        assert_eq!(r.rel, &b"d\xff/x\xfe"[..]);
        assert_eq!(r.links, vec![BString::from(&b"l\xfc"[..])]);
        assert_eq!(std::fs::read(r.host).unwrap(), b"fe");
        assert!(matches!(resolve(root, b"d\xff/x\xfb", true), Err(ResolveError::NotFound)));
    }

    #[test]
    fn loops_end() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        symlink("self/x", root.join("self")).unwrap();
        assert!(matches!(resolve(root, b"a", true), Err(ResolveError::Loop)));
        assert!(matches!(resolve(root, b"self", true), Err(ResolveError::Loop)));
    }
}
