//! Content digests of COPY/ADD sources for the layer cache; the stat cache
//! (`stat_cache.rs`) spares a repeat build re-reading unchanged files.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};
use sha2::{Digest, Sha256};

use super::stat_cache::{StatCache, XattrFacts};
use super::{ContextError, SourceTree};

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
    let io_err = |source| ContextError::Io { path: host.to_path_buf(), source };
    let (xattrs, content) = match (link, md.is_file()) {
        (None, true) => {
            let facts = stat.file_facts(host, md).map_err(io_err)?;
            (facts.xattrs, Some(facts.digest))
        }
        _ => (XattrFacts::read(host), None),
    };
    let (uid, gid, mode) = match xattrs.recorded {
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
    } else if let Some(digest) = content {
        desc.push_str(&format!(" {digest}"));
    }
    desc.push_str(&xattrs.keyed);
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
        std::fs::File::options()
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
