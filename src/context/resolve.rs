//! Path resolution scoped to the context root, in the manner of
//! cyphar/filepath-securejoin: every symlink met on the way is read and
//! its target is resolved as if the root were `/` (an absolute target
//! restarts at the root, `..` never climbs above it). The result is a real
//! path inside the root, whatever the links say.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

/// Linux's MAXSYMLINKS: more expansions than this is a loop.
const MAX_LINKS: usize = 40;

#[derive(Debug)]
pub(crate) struct Resolved {
    /// Real path, `root` joined with `rel`.
    pub host: PathBuf,
    /// Real path relative to the root, `/`-separated, "" for the root.
    pub rel: String,
    /// Context-relative paths of the symlinks followed on the way.
    pub links: Vec<String>,
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
pub(crate) fn resolve(root: &Path, rel: &str, follow_final: bool) -> Result<Resolved, ResolveError> {
    let mut pending: VecDeque<String> = split(rel).collect();
    let mut current: Vec<String> = Vec::new();
    let mut links = Vec::new();
    let mut is_dir = true;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "." => continue,
            ".." => {
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
            links.push(current.join("/"));
            let target = std::fs::read_link(&host).map_err(|e| ResolveError::Io(host.clone(), e))?;
            let target = target.to_string_lossy().into_owned();
            current.pop();
            if target.starts_with('/') {
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
    Ok(Resolved { host: join(root, &current), rel: current.join("/"), links, is_dir })
}

fn split(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|p| !p.is_empty()).map(str::to_string)
}

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
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

        let r = resolve(root, "abs/sub/f", true).unwrap();
        assert_eq!(r.rel, "real/sub/f");
        assert_eq!(r.links, vec!["abs".to_string()]);
        let r = resolve(root, "rel/sub", true).unwrap();
        assert_eq!(r.rel, "real/sub");
        assert!(r.is_dir);
        // /etc does not exist inside the root, so the host's is never seen.
        assert!(matches!(resolve(root, "hostetc/passwd", true), Err(ResolveError::NotFound)));
        // The final link is kept when not following.
        let r = resolve(root, "abs", false).unwrap();
        assert_eq!(r.rel, "abs");
        assert!(!r.is_dir);
        assert!(matches!(resolve(root, "real/sub/f/x", true), Err(ResolveError::NotFound)));
    }

    #[test]
    fn loops_end() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        symlink("self/x", root.join("self")).unwrap();
        assert!(matches!(resolve(root, "a", true), Err(ResolveError::Loop)));
        assert!(matches!(resolve(root, "self", true), Err(ResolveError::Loop)));
    }
}
