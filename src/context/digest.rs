//! Content digests of COPY/ADD sources for the layer cache, with a stat cache
//! so repeat builds only re-read files whose (size, mtime, inode, ctime)
//! changed — the way git's index avoids rehashing the work tree.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ContextError, SourceTree};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    digest: String,
}

/// Remembers file digests by stat identity. Persisted as JSON between builds.
#[derive(Debug, Default)]
pub struct StatCache {
    path: Option<PathBuf>,
    entries: HashMap<String, Stat>,
    dirty: bool,
    /// Files actually read this build (for tests and `-v` output).
    pub hashed: u64,
}

impl StatCache {
    /// Loads the cache kept at `path` (a missing or unreadable file is an empty cache).
    pub fn load(path: &Path) -> StatCache {
        let entries = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        StatCache { path: Some(path.to_path_buf()), entries, dirty: false, hashed: 0 }
    }

    /// The sha256 of a regular file's content, read only when its stat changed.
    pub fn file_digest(&mut self, host: &Path, md: &std::fs::Metadata) -> io::Result<String> {
        let key = stat_key(host);
        let mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        let ctime_ns = md.ctime() * 1_000_000_000 + md.ctime_nsec();
        if let Some(s) = self.entries.get(&key) {
            if s.size == md.size() && s.mtime_ns == mtime_ns && s.ctime_ns == ctime_ns && s.ino == md.ino() {
                return Ok(s.digest.clone());
            }
        }
        let mut hasher = Sha256::new();
        io::copy(&mut File::open(host)?, &mut HashWriter(&mut hasher))?;
        self.hashed += 1;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        // A file modified within the current second could change again
        // without its mtime moving: don't trust such a stat next time.
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        if md.mtime() < now - 1 {
            self.entries
                .insert(key, Stat { size: md.size(), mtime_ns, ctime_ns, ino: md.ino(), digest: digest.clone() });
            self.dirty = true;
        }
        Ok(digest)
    }

    /// Writes the cache back atomically if it changed.
    pub fn save(&self) -> io::Result<()> {
        let (Some(path), true) = (&self.path, self.dirty) else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.entries).map_err(io::Error::other)?)?;
        std::fs::rename(tmp, path)
    }
}

/// A host path as a key of the JSON stat cache: the path itself when it is
/// UTF-8, else `hex:` and its bytes, so two names that differ only in
/// non-UTF-8 bytes never share an entry (host paths are absolute, so no
/// UTF-8 path starts with `hex:`).
fn stat_key(host: &Path) -> String {
    let bytes = host.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!("hex:{}", hex::encode(bytes)),
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a COPY/ADD step would read from the context, per path: enough to
/// key the cache and to say which file changed on a miss.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceDigest {
    /// Context-relative path (bytes: names need not be UTF-8) →
    /// `mode:… link:… sha256:…` description.
    pub files: BTreeMap<BString, String>,
}

impl SourceDigest {
    /// One digest over every file's description, names by their exact
    /// bytes (the same digest as ever for UTF-8 names).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (path, desc) in &self.files {
            h.update(path.as_slice());
            h.update([0]);
            h.update(desc.as_bytes());
            h.update([0]);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// The files by printable name, for the build log that explains cache
    /// misses; a name that is not UTF-8 is shown escaped (`x\xff`).
    pub fn shown(&self) -> BTreeMap<String, String> {
        self.files.iter().map(|(path, desc)| (show_name(path), desc.clone())).collect()
    }
}

/// A name for messages: itself when UTF-8, else with its invalid bytes
/// escaped, which keeps `x\xff` and `x\xfe` apart where lossy text would not.
pub fn show_name(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let quoted = format!("{:?}", name.as_bstr());
            quoted[1..quoted.len() - 1].to_string()
        }
    }
}

/// Digests the sources `words` name in `ctx` (after .dockerignore): content,
/// mode, link targets and xattrs; never mtimes, which don't reach the cache key.
pub fn sources(ctx: &dyn SourceTree, words: &[String], stat: &mut StatCache) -> Result<SourceDigest, ContextError> {
    digest_sources(ctx, words, stat, false)
}

/// Like [`sources`], owners included: for sources whose owners are copied
/// (`COPY --from` a stage or image).
pub fn sources_with_owners(
    ctx: &dyn SourceTree,
    words: &[String],
    stat: &mut StatCache,
) -> Result<SourceDigest, ContextError> {
    digest_sources(ctx, words, stat, true)
}

fn digest_sources(
    ctx: &dyn SourceTree,
    words: &[String],
    stat: &mut StatCache,
    owners: bool,
) -> Result<SourceDigest, ContextError> {
    let mut out = SourceDigest::default();
    for word in words {
        if super::remote::is_remote(word) {
            out.files.insert(word.as_str().into(), "url".into());
            continue;
        }
        for m in ctx.resolve_source(word)? {
            if m.is_dir {
                out.files.insert([&m.rel[..], b"/"].concat().into(), "dir".into());
            }
            for e in ctx.walk(&m)? {
                let rel = match (m.rel.is_empty(), e.rel.is_empty()) {
                    (_, true) => m.rel.clone(),
                    (true, false) => e.rel.clone(),
                    (false, false) => [&m.rel[..], b"/", &e.rel[..]].concat().into(),
                };
                let desc = describe(&e.host, &e.metadata, &e.link_target, stat, owners)?;
                out.files.insert(rel, desc);
            }
        }
    }
    Ok(out)
}

/// A file as COPY would write it: mode, content or link target, xattrs and
/// (`owners`) owner. Keys travel between stores, so a layer dir unpacked in
/// a single-id namespace (owner and mode kept in the override xattr, as
/// COPY reads them) is described as the same file unpacked with subuids.
fn describe(
    host: &Path,
    md: &std::fs::Metadata,
    link: &Option<PathBuf>,
    stat: &mut StatCache,
    owners: bool,
) -> Result<String, ContextError> {
    use kiln_overlay::apply::OVERRIDE_STAT_XATTR;
    let io_err = |source| ContextError::Io { path: host.to_path_buf(), source };
    // One listing per file; values are read only for names it has (most
    // context files have none, and a cached rebuild describes every file).
    let mut names: Vec<String> =
        xattr::list(host).map(|names| names.filter_map(|n| n.into_string().ok()).collect()).unwrap_or_default();
    names.sort();
    let recorded = match names.iter().any(|n| n == OVERRIDE_STAT_XATTR) {
        true => {
            xattr::get(host, OVERRIDE_STAT_XATTR).ok().flatten().and_then(|v| kiln_overlay::parse_override_stat(&v))
        }
        false => None,
    };
    let (uid, gid, mode) = match recorded {
        Some((uid, gid, mode)) => (uid, gid, (md.mode() & 0o170000) | (mode & 0o7777)),
        None => (u64::from(md.uid()), u64::from(md.gid()), md.mode()),
    };
    let mut desc = format!("mode:{:o}", mode);
    if let Some(target) = link {
        // A target that is not UTF-8 is described by its bytes, never lossily.
        match target.to_str() {
            Some(t) => desc.push_str(&format!(" link:{t}")),
            None => desc.push_str(&format!(" link-hex:{}", hex::encode(target.as_os_str().as_bytes()))),
        }
    } else if md.is_file() {
        desc.push_str(&format!(" {}", stat.file_digest(host, md).map_err(io_err)?));
    }
    // Overlay bookkeeping (a layer dir's opaque marks) is never copied, so never keyed.
    let keyed = |n: &&String| {
        !n.starts_with("security.selinux") && !kiln_overlay::whiteout::is_overlay_xattr(n) && *n != OVERRIDE_STAT_XATTR
    };
    for n in names.iter().filter(keyed) {
        if let Ok(Some(v)) = xattr::get(host, n) {
            desc.push_str(&format!(" xattr:{}={}", n, hex::encode(v)));
        }
    }
    if owners {
        desc.push_str(&format!(" owner:{}:{}", uid, gid));
    }
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::BuildContext;

    #[test]
    fn unchanged_files_are_not_reread() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, "one").unwrap();
        // An mtime in the past, so the stat is trusted.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
        let cache_path = dir.path().join("stat.json");
        let mut c = StatCache::load(&cache_path);
        let d1 = c.file_digest(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_eq!(c.hashed, 1);
        c.save().unwrap();
        let mut c = StatCache::load(&cache_path);
        let d2 = c.file_digest(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_eq!((d1.clone(), c.hashed), (d2, 0));
        std::fs::write(&f, "two").unwrap();
        let d3 = c.file_digest(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_ne!(d1, d3);
        assert_eq!(c.hashed, 1);
    }

    #[test]
    fn stat_cache_keeps_names_that_are_not_utf8_apart() {
        use std::ffi::OsStr;
        let dir = tempfile::tempdir().unwrap();
        let (ff, fe) = (dir.path().join(OsStr::from_bytes(b"x\xff")), dir.path().join(OsStr::from_bytes(b"x\xfe")));
        assert_ne!(stat_key(&ff), stat_key(&fe));
        assert!(stat_key(&ff).starts_with("hex:"));
        assert_eq!(stat_key(Path::new("/ctx/a")), "/ctx/a");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for (p, body) in [(&ff, "ff"), (&fe, "fe")] {
            std::fs::write(p, body).unwrap();
            File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
        }
        let cache_path = dir.path().join("stat.json");
        let mut c = StatCache::load(&cache_path);
        let a = c.file_digest(&ff, &std::fs::metadata(&ff).unwrap()).unwrap();
        let b = c.file_digest(&fe, &std::fs::metadata(&fe).unwrap()).unwrap();
        assert_ne!(a, b);
        c.save().unwrap();
        let mut c = StatCache::load(&cache_path);
        assert_eq!(c.file_digest(&ff, &std::fs::metadata(&ff).unwrap()).unwrap(), a);
        assert_eq!(c.file_digest(&fe, &std::fs::metadata(&fe).unwrap()).unwrap(), b);
        assert_eq!(c.hashed, 0, "both came from the saved cache, each under its own key");
    }

    #[test]
    fn single_id_owner_records_describe_the_file_they_stand_for() {
        use std::os::unix::fs::PermissionsExt;
        // A layer dir unpacked in a single-id namespace: the file is the
        // caller's, mode 0600, its real owner and mode in the override xattr.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        xattr::set(&f, kiln_overlay::apply::OVERRIDE_STAT_XATTR, b"1000:100:0755")
            .expect("user xattrs on the source tree's file system");
        let md = std::fs::symlink_metadata(&f).unwrap();
        let desc = describe(&f, &md, &None, &mut StatCache::default(), true).unwrap();
        let content = format!("sha256:{}", hex::encode(Sha256::digest(b"x")));
        assert_eq!(desc, format!("mode:100755 {content} owner:1000:100"));
        // The same file unpacked with subuids says the same.
        let g = dir.path().join("g");
        std::fs::write(&g, "x").unwrap();
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o755)).unwrap();
        let md = std::fs::symlink_metadata(&g).unwrap();
        let plain = describe(&g, &md, &None, &mut StatCache::default(), false).unwrap();
        assert_eq!(plain, format!("mode:100755 {content}"));
    }

    #[test]
    fn digests_follow_content_and_mode_not_mtime() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/x"), "x").unwrap();
        let ctx = BuildContext::from_dir(dir.path(), None).unwrap();
        let mut stat = StatCache::default();
        let a = sources(&ctx, &["src".into()], &mut stat).unwrap();
        File::options()
            .write(true)
            .open(dir.path().join("src/x"))
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        let b = sources(&ctx, &["src".into()], &mut stat).unwrap();
        assert_eq!(a.digest(), b.digest());
        std::fs::write(dir.path().join("src/x"), "y").unwrap();
        let c = sources(&ctx, &["src".into()], &mut stat).unwrap();
        assert_ne!(a.digest(), c.digest());
        assert!(c.files.contains_key(b"src/x".as_slice()));
    }
}
