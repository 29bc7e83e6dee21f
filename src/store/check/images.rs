//! The blobs and the images they make up: every blob hashes to its name,
//! every reference from index.json, manifests and nested indexes resolves
//! to a blob of the size its descriptor gives, configs parse.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::super::gc::looks_like_image_manifest;
use super::super::{chain_ids, parse_manifest, sha256_hex, StoreError};
use super::report::{Defect, Fix};
use super::{BlobInfo, Walk};
use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Index, DOCKER_MANIFEST_LIST, OCI_INDEX};

/// Manifests, indexes and configs larger than this are not kiln's to parse.
const MAX_JSON: u64 = 4 << 20;
/// How deep indexes may nest before the check stops following them.
const MAX_DEPTH: usize = 8;

/// Which image a reference belongs to, which decides what repair may do.
#[derive(Debug, Clone)]
enum Owner {
    /// Listed in index.json, under this name (a tag, or the manifest digest).
    Indexed(String),
    /// An untagged image manifest found among the blobs.
    Dangling(String),
}

impl Walk<'_> {
    /// Lists the blobs, hashing each when `hash` (else trusting names).
    pub(super) fn scan_blobs(&mut self, hash: bool) -> Result<(), StoreError> {
        let dir = self.store.blob_dir();
        let io = |source| StoreError::Io { action: "list blobs in", path: dir.clone(), source };
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(&dir).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if sha256_hex(&digest).is_none() || !meta.is_file() {
                self.problem(path.clone(), Defect::NotABlobName, Fix::Remove(vec![path]));
                continue;
            }
            self.report.blobs += 1;
            let intact = if hash {
                match hash_file(&path) {
                    Ok((actual, size)) if actual != digest => {
                        self.problem(path.clone(), Defect::WrongContent { actual, size }, Fix::Remove(vec![path]));
                        false
                    }
                    Ok(_) => true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                    Err(source) => return Err(StoreError::Io { action: "read blob", path, source }),
                }
            } else {
                true
            };
            self.blobs.insert(digest, BlobInfo { size: meta.len(), intact });
        }
        Ok(())
    }

    /// Follows index.json's entries, then the untagged image manifests.
    pub(super) fn images(&mut self) -> Result<(), StoreError> {
        let index_path = self.store.index_path();
        let index: Index = match fs::read(&index_path).map(|b| serde_json::from_slice::<Index>(&b)) {
            Ok(Ok(index)) => index,
            Ok(Err(e)) => {
                let hint = "restore it from a backup, or move it away and tag the images again".to_string();
                self.problem(index_path, Defect::BadIndex { error: e.to_string() }, Fix::Manual(hint));
                Index::default()
            }
            Err(source) => return Err(StoreError::Io { action: "read", path: index_path, source }),
        };
        self.indexed = self.store.reachable(index.manifests.iter().map(|d| d.digest.clone()))?;
        for entry in &index.manifests {
            let name = entry.ref_name().map(str::to_string).unwrap_or_else(|| entry.digest.clone());
            let referrer = match entry.ref_name() {
                Some(tag) => format!("tag {tag} in index.json"),
                None => "an untagged entry of index.json".to_string(),
            };
            if sha256_hex(&entry.digest).is_some() && !self.blobs.contains_key(&entry.digest) {
                let defect = Defect::Missing { referrer, role: "manifest" };
                let fix =
                    Fix::DropIndexEntry { digest: entry.digest.clone(), tag: entry.ref_name().map(str::to_string) };
                self.problem(self.store.blob_path(&entry.digest), defect, fix);
                continue;
            }
            let owner = Owner::Indexed(name);
            if self.node(entry, &referrer, "manifest", &owner) {
                self.manifest_or_index(entry, &owner, 0)?;
            }
        }
        // Untagged image manifests: dangling images and the build cache's.
        let known = self.indexed.clone();
        let candidates: Vec<String> =
            self.blobs.iter().filter(|(d, b)| b.intact && !known.contains(*d)).map(|(d, _)| d.clone()).collect();
        for digest in candidates {
            let Some(bytes) = self.store.json_blob(&digest)? else { continue };
            if !looks_like_image_manifest(&digest, &bytes) {
                continue;
            }
            let desc = Descriptor::new(crate::image::manifest::OCI_MANIFEST, digest.clone(), bytes.len() as u64);
            self.manifest_or_index(&desc, &Owner::Dangling(digest), 0)?;
        }
        Ok(())
    }

    /// Whether the blob `desc` names is present, intact and of the
    /// descriptor's size (reporting what is not).
    fn node(&mut self, desc: &Descriptor, referrer: &str, role: &'static str, owner: &Owner) -> bool {
        if sha256_hex(&desc.digest).is_none() {
            let path = self.store.index_path();
            let defect = Defect::InvalidDigest { referrer: referrer.to_string(), digest: desc.digest.clone() };
            let fix = self.fix_for(owner, None);
            self.problem(path, defect, fix);
            return false;
        }
        let path = self.store.blob_path(&desc.digest);
        let Some(info) = self.blobs.get(&desc.digest).copied() else {
            let defect = Defect::Missing { referrer: referrer.to_string(), role };
            let fix = self.fix_for(owner, None);
            self.problem(path, defect, fix);
            return false;
        };
        if !info.intact {
            return false; // reported with the blob
        }
        if info.size != desc.size {
            let defect = Defect::WrongSize { size: info.size, expected: desc.size, referrer: referrer.to_string() };
            let fix = self.fix_for(owner, None);
            self.problem(path, defect, fix);
            return false;
        }
        true
    }

    /// Repair removes a broken untagged image (its manifest, and `blob` when
    /// no tagged image uses it); a tagged one stays for the user to decide.
    fn fix_for(&self, owner: &Owner, blob: Option<&str>) -> Fix {
        match owner {
            Owner::Indexed(name) => {
                Fix::Manual(format!("pull or build {name} again, or remove it with `kiln rmi {name}`"))
            }
            Owner::Dangling(manifest) => {
                let mut paths = vec![self.store.blob_path(manifest)];
                if let Some(blob) = blob.filter(|b| !self.indexed.contains(*b)) {
                    paths.push(self.store.blob_path(blob));
                }
                Fix::Remove(paths)
            }
        }
    }

    fn manifest_or_index(&mut self, desc: &Descriptor, owner: &Owner, depth: usize) -> Result<(), StoreError> {
        let Some(bytes) = self.load(desc) else { return Ok(()) };
        let short = crate::humanize::short(&desc.digest).to_string();
        let is_index = desc.media_type == OCI_INDEX
            || desc.media_type == DOCKER_MANIFEST_LIST
            || serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v.get("manifests").is_some());
        if is_index {
            self.report.images += 1;
            let index = match serde_json::from_slice::<Index>(&bytes) {
                Ok(index) => index,
                Err(e) => {
                    let defect = Defect::Unparsable { referrer: describe(owner), role: "index", error: e.to_string() };
                    let fix = self.fix_for(owner, Some(&desc.digest));
                    self.problem(self.store.blob_path(&desc.digest), defect, fix);
                    return Ok(());
                }
            };
            if depth >= MAX_DEPTH {
                return Ok(());
            }
            for child in &index.manifests {
                let referrer = format!("index {short}");
                if self.node(child, &referrer, "manifest", owner) {
                    self.manifest_or_index(child, owner, depth + 1)?;
                }
            }
            return Ok(());
        }
        self.report.images += 1;
        let manifest = match parse_manifest(&desc.digest, &bytes) {
            Ok(m) => m,
            Err(e) => {
                let defect = Defect::Unparsable { referrer: describe(owner), role: "manifest", error: error_text(&e) };
                let fix = self.fix_for(owner, Some(&desc.digest));
                self.problem(self.store.blob_path(&desc.digest), defect, fix);
                return Ok(());
            }
        };
        let referrer = format!("manifest {short} ({})", describe(owner));
        let config_ok = self.node(&manifest.config, &referrer, "config", owner);
        for layer in &manifest.layers {
            self.node(layer, &referrer, "layer", owner);
        }
        let is_image_config = manifest.config.media_type.contains("image.config")
            || manifest.config.media_type.contains("container.image");
        if !config_ok || !is_image_config {
            return Ok(());
        }
        let Some(config_bytes) = self.load(&manifest.config) else { return Ok(()) };
        let config = match serde_json::from_slice::<ImageConfig>(&config_bytes) {
            Ok(c) => c,
            Err(e) => {
                let defect = Defect::Unparsable { referrer, role: "image config", error: e.to_string() };
                let fix = self.fix_for(owner, Some(&manifest.config.digest));
                self.problem(self.store.blob_path(&manifest.config.digest), defect, fix);
                return Ok(());
            }
        };
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            let defect = Defect::LayerCount { referrer, layers: manifest.layers.len(), diff_ids: diff_ids.len() };
            let fix = self.fix_for(owner, None);
            self.problem(self.store.blob_path(&desc.digest), defect, fix);
            return Ok(());
        }
        self.chains.extend(chain_ids(diff_ids));
        self.diff_ids.insert(desc.digest.clone(), diff_ids.clone());
        Ok(())
    }

    /// The bytes of a blob already found present and intact.
    fn load(&self, desc: &Descriptor) -> Option<Vec<u8>> {
        let info = self.blobs.get(&desc.digest)?;
        if !info.intact || info.size > MAX_JSON {
            return None;
        }
        fs::read(self.store.blob_path(&desc.digest)).ok()
    }
}

fn describe(owner: &Owner) -> String {
    match owner {
        Owner::Indexed(name) => format!("image {name}"),
        Owner::Dangling(digest) => format!("untagged image {}", crate::humanize::short(digest)),
    }
}

/// A store error's own text and its source's, on one line.
fn error_text(e: &StoreError) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// `sha256:<hex>` and size of a file's content.
fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}
