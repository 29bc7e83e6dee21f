//! The stat cache of COPY/ADD sources: what describing a regular file reads
//! besides its stat (content digest, xattrs), remembered by the file's stat
//! identity so repeat builds only re-read files whose (size, mtime, inode,
//! ctime) changed — the way git's index avoids rehashing the work tree.
//! Persisted as JSON between builds, one file per context directory.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_overlay::digest::HashingWriter;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    digest: String,
    /// None until read at a moment the ctime could be trusted (entries
    /// written before xattrs were kept have none either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xattrs: Option<XattrFacts>,
}

/// What a file's xattrs add to its description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XattrFacts {
    /// Owner and mode a single-id unpack kept in the override xattr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<(u64, u64, u32)>,
    /// The xattrs a copy carries, as ` xattr:name=hex` words in name order.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyed: String,
}

impl XattrFacts {
    /// Reads `host`'s xattrs (by path, without following a symlink). One
    /// listing; values are read only for names it has (most context files
    /// have none). A file system without xattrs has none to copy either.
    pub fn read(host: &Path) -> XattrFacts {
        use kiln_overlay::apply::OVERRIDE_STAT_XATTR;
        let mut names: Vec<String> =
            xattr::list(host).map(|names| names.filter_map(|n| n.into_string().ok()).collect()).unwrap_or_default();
        if names.is_empty() {
            return XattrFacts::default();
        }
        names.sort();
        let recorded = match names.iter().any(|n| n == OVERRIDE_STAT_XATTR) {
            true => {
                xattr::get(host, OVERRIDE_STAT_XATTR).ok().flatten().and_then(|v| kiln_overlay::parse_override_stat(&v))
            }
            false => None,
        };
        // Overlay bookkeeping (a layer dir's opaque marks) is never copied, so never keyed.
        let keyed = |n: &&String| {
            !n.starts_with("security.selinux")
                && !kiln_overlay::whiteout::is_overlay_xattr(n)
                && *n != OVERRIDE_STAT_XATTR
        };
        let mut words = String::new();
        for n in names.iter().filter(keyed) {
            if let Ok(Some(v)) = xattr::get(host, n) {
                words.push_str(&format!(" xattr:{}={}", n, hex::encode(v)));
            }
        }
        XattrFacts { recorded, keyed: words }
    }
}

/// A regular file's content digest and xattrs.
pub struct FileFacts {
    pub digest: String,
    pub xattrs: XattrFacts,
}

/// Remembers file facts by stat identity.
#[derive(Debug)]
pub struct StatCache {
    path: Option<PathBuf>,
    entries: HashMap<String, Stat>,
    /// The saved entries while a thread still parses them (see `load`).
    loading: Option<std::thread::JoinHandle<HashMap<String, Stat>>>,
    dirty: bool,
    /// Times (seconds) before this are out of the current clock tick: a
    /// file whose mtime (content) or ctime (xattrs) is older cannot change
    /// again without moving it.
    settled_before: i64,
    /// Files actually read this build (for tests and `-v` output).
    pub hashed: u64,
}

impl Default for StatCache {
    fn default() -> StatCache {
        StatCache {
            path: None,
            entries: HashMap::new(),
            loading: None,
            dirty: false,
            settled_before: now_secs() - 1,
            hashed: 0,
        }
    }
}

/// A build that stops before it looked anything up leaves no thread
/// behind: kiln's front-end forwards signals from its one thread (a replay
/// of the cache that hands over to the namespace drops its cache here).
impl Drop for StatCache {
    fn drop(&mut self) {
        if let Some(handle) = self.loading.take() {
            let _ = handle.join();
        }
    }
}

impl StatCache {
    /// Loads the cache kept at `path` (a missing or unreadable file is an
    /// empty cache). Parsed by a thread of its own: a big context's cache
    /// takes milliseconds, which a build spends on its first steps and on
    /// listing the context before the first file is looked up.
    pub fn load(path: &Path) -> StatCache {
        let file = path.to_path_buf();
        let parse = move || std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let loading = std::thread::Builder::new().name("kiln-statcache".into()).spawn(parse.clone());
        let (entries, loading) = match loading {
            Ok(handle) => (HashMap::new(), Some(handle)),
            Err(_) => (parse(), None),
        };
        let mut cache = StatCache::default();
        (cache.path, cache.entries, cache.loading) = (Some(path.to_path_buf()), entries, loading);
        cache
    }

    /// The saved entries, once parsed.
    fn loaded(&mut self) -> &mut HashMap<String, Stat> {
        if let Some(handle) = self.loading.take() {
            self.entries = handle.join().unwrap_or_default();
        }
        &mut self.entries
    }

    /// The sha256 of a regular file's content, read only when its stat changed.
    fn file_digest(&mut self, host: &Path, md: &std::fs::Metadata) -> io::Result<String> {
        let key = stat_key(host);
        match self.loaded().get(&key).filter(|s| s.matches(md)) {
            Some(s) => Ok(s.digest.clone()),
            None => Ok(self.hash_and_remember(key, host, md)?.digest),
        }
    }

    /// A regular file's digest and xattrs; a file whose stat is unchanged
    /// since it was last read is not read again, its xattrs not listed (any
    /// change to them moves its ctime).
    pub fn file_facts(&mut self, host: &Path, md: &std::fs::Metadata) -> io::Result<FileFacts> {
        let key = stat_key(host);
        if let Some(s) = self.loaded().get(&key).filter(|s| s.matches(md)) {
            if let Some(xattrs) = &s.xattrs {
                return Ok(FileFacts { digest: s.digest.clone(), xattrs: xattrs.clone() });
            }
        }
        let xattrs = XattrFacts::read(host);
        let digest = self.file_digest(host, md)?;
        // A change within the clock tick of the last one need not move the
        // ctime: keep what was read only from a ctime in the past.
        if let Some(s) = self.entries.get_mut(&key).filter(|_| md.ctime() < self.settled_before) {
            s.xattrs = Some(xattrs.clone());
            self.dirty = true;
        }
        Ok(FileFacts { digest, xattrs })
    }

    fn hash_and_remember(&mut self, key: String, host: &Path, md: &std::fs::Metadata) -> io::Result<Stat> {
        let mut hasher = HashingWriter::new(io::sink());
        io::copy(&mut File::open(host)?, &mut hasher)?;
        self.hashed += 1;
        let digest = hasher.digest();
        let stat = Stat {
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
            digest,
            xattrs: None,
        };
        // A file modified within the current second could change again
        // without its mtime moving: don't trust such a stat next time.
        if md.mtime() < self.settled_before {
            self.entries.insert(key, stat.clone());
            self.dirty = true;
        }
        Ok(stat)
    }

    /// Writes the cache back atomically if it changed.
    pub fn save(&self) -> io::Result<()> {
        // Not dirty while loading: nothing was looked up, so nothing changed.
        let (Some(path), true) = (&self.path, self.dirty) else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.entries).map_err(io::Error::other)?)?;
        std::fs::rename(tmp, path)
    }
}

impl Stat {
    fn matches(&self, md: &std::fs::Metadata) -> bool {
        self.size == md.size()
            && self.mtime_ns == md.mtime() * 1_000_000_000 + md.mtime_nsec()
            && self.ctime_ns == md.ctime() * 1_000_000_000 + md.ctime_nsec()
            && self.ino == md.ino()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn xattrs_are_listed_once_and_again_when_they_change() {
        // On the source tree's file system: user xattrs are needed.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        xattr::set(&f, "user.one", b"1").expect("user xattrs on the source tree's file system");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
        let cache_path = dir.path().join("stat.json");
        // As if the build ran a while after the file was made.
        let later = |mut c: StatCache| {
            c.settled_before = now_secs() + 100;
            c
        };
        let mut c = later(StatCache::load(&cache_path));
        let first = c.file_facts(&f, &std::fs::symlink_metadata(&f).unwrap()).unwrap();
        assert_eq!(first.xattrs.keyed, format!(" xattr:user.one={}", hex::encode("1")));
        c.save().unwrap();
        let saved = std::fs::read_to_string(&cache_path).unwrap();
        assert!(saved.contains("user.one"), "{saved}");

        // Listed from the cache: a value that is not the file's shows it was not read.
        let mut c = later(StatCache::load(&cache_path));
        let key = stat_key(&f);
        c.loaded().get_mut(&key).unwrap().xattrs.as_mut().unwrap().keyed = " xattr:user.one=cached".into();
        let again = c.file_facts(&f, &std::fs::symlink_metadata(&f).unwrap()).unwrap();
        assert_eq!((again.xattrs.keyed.as_str(), c.hashed), (" xattr:user.one=cached", 0));

        // Setting an xattr moves the ctime: listed again, content not re-read.
        std::thread::sleep(std::time::Duration::from_millis(20));
        xattr::set(&f, "user.two", b"2").unwrap();
        let changed = c.file_facts(&f, &std::fs::symlink_metadata(&f).unwrap()).unwrap();
        assert_eq!(
            changed.xattrs.keyed,
            format!(" xattr:user.one={} xattr:user.two={}", hex::encode("1"), hex::encode("2"))
        );
        assert_eq!(changed.digest, first.digest);
    }

    #[test]
    fn xattrs_read_in_the_current_tick_are_not_kept() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
        // The ctime is now: the digest is kept (mtime is old), the xattrs not.
        let mut c = StatCache::default();
        c.file_facts(&f, &std::fs::symlink_metadata(&f).unwrap()).unwrap();
        let entry = &c.entries[&stat_key(&f)];
        assert!(entry.xattrs.is_none());
    }
}
