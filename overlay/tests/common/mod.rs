//! Helpers for the overlay round-trip tests: building layer tars, listing trees and archives.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_overlay::tarfmt::{EntryKind, EntryMeta, TarWriter};
use sha2::{Digest, Sha256};

/// Set in the environment of a test re-run inside a user namespace.
pub const INNER_ENV: &str = "KILN_OVL_INNER";

pub fn is_real_root() -> bool {
    nix::unistd::geteuid().is_root()
        && std::env::var_os(INNER_ENV).is_none()
        && !kiln_overlay::mount::in_user_namespace()
}

/// Whether ids other than 0 can be owners here (real root, or a user namespace with a full map).
pub fn full_id_map() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            map.lines()
                .map(|l| l.split_whitespace().nth(2).and_then(|c| c.parse::<u64>().ok()).unwrap_or(0))
                .sum::<u64>()
                > 65535
        }
        Err(_) => false,
    }
}

/// A scratch directory others can enter (a test may hand it to an unprivileged user).
pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("kiln-ovl-").tempdir_in("/tmp").unwrap();
    fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

pub struct Ent {
    pub meta: EntryMeta,
    pub data: Vec<u8>,
}

pub fn file(path: &str, data: &[u8]) -> Ent {
    let mut meta = EntryMeta::new(path, EntryKind::File);
    meta.size = data.len() as u64;
    meta.mtime = 1_600_000_000;
    Ent { meta, data: data.to_vec() }
}

pub fn dir(path: &str) -> Ent {
    let mut meta = EntryMeta::new(path, EntryKind::Dir);
    meta.mtime = 1_600_000_000;
    Ent { meta, data: Vec::new() }
}

pub fn entry(path: &str, kind: EntryKind) -> Ent {
    let mut meta = EntryMeta::new(path, kind);
    meta.mtime = 1_600_000_000;
    Ent { meta, data: Vec::new() }
}

/// A plain tar of `entries`, in order.
pub fn tar_of(entries: &[Ent]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for e in entries {
        let mut data: &[u8] = &e.data;
        w.append(&e.meta, Some(&mut data)).unwrap();
    }
    w.finish().unwrap()
}

/// A raw ustar header block with any name (even ones TarWriter refuses), for malicious archives.
pub fn raw_entry(name: &str, typeflag: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    {
        let bytes = h.as_mut_bytes();
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        bytes[157..157 + link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::new(typeflag));
    h.set_mtime(0);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

pub fn end_of_archive(mut v: Vec<u8>) -> Vec<u8> {
    v.extend_from_slice(&[0u8; 1024]);
    v
}

/// One path of a tree as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Lists a tree (not the root): type, permissions, owner, content digest or link target, xattrs (overlay
/// ones and the recorded-owner one excluded; a recorded owner replaces the real one, as in a layer).
pub fn list_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap().to_string();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let (kind, content) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            ("symlink", fs::read_link(e.path()).unwrap().display().to_string())
        } else if ft.is_file() {
            ("file", sha256_file(e.path()))
        } else if ft.is_char_device() {
            ("char", format!("{}", md.rdev()))
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("other", String::new())
        };
        let mut xattrs = BTreeMap::new();
        let (mut uid, mut gid, mut mode) = (md.uid(), md.gid(), md.mode() & 0o7777);
        if let Ok(names) = xattr::list(e.path()) {
            for n in names {
                let n = n.to_str().unwrap().to_string();
                let v = xattr::get(e.path(), &n).unwrap().unwrap_or_default();
                if n == "user.containers.override_stat" {
                    let s = String::from_utf8(v).unwrap();
                    let p: Vec<&str> = s.split(':').collect();
                    uid = p[0].parse().unwrap();
                    gid = p[1].parse().unwrap();
                    mode = u32::from_str_radix(p[2], 8).unwrap() & 0o7777;
                } else if !n.starts_with("user.overlay.")
                    && !n.starts_with("trusted.overlay.")
                    && !n.starts_with("user.fuseoverlayfs.")
                {
                    let v = if n == "security.capability" { kiln_overlay::capability_v2(&v).unwrap_or(v) } else { v };
                    xattrs.insert(n, v);
                }
            }
        }
        if ft.is_symlink() {
            mode = 0;
        }
        out.insert(rel, Node { kind: kind.into(), mode, uid, gid, content, xattrs });
    }
    out
}

pub fn sha256_file(p: &Path) -> String {
    let mut f = fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// An archive entry as read back by the `tar` crate (independent of kiln's writer).
#[derive(Debug, Clone)]
pub struct TarItem {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link: String,
    pub size: u64,
}

pub fn list_tar(tar_bytes: &[u8]) -> Vec<TarItem> {
    let mut a = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        out.push(TarItem {
            path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            kind: h.entry_type().as_byte() as char,
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            link: e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap()).unwrap_or_default(),
            size: h.size().unwrap(),
        });
    }
    out
}

/// Every PAX record of every entry, read by GNU-compatible python tarfile (binary-safe), as
/// (entry path, key, hex value).
pub fn pax_records_python(tar_path: &Path) -> Vec<(String, String, String)> {
    let script = r#"
import sys, tarfile
with tarfile.open(sys.argv[1], encoding='utf-8', errors='surrogateescape') as t:
    for m in t:
        for k, v in sorted(m.pax_headers.items()):
            b = v.encode('utf-8', 'surrogateescape') if isinstance(v, str) else v
            print(m.name + '\t' + k + '\t' + b.hex())
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(tar_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.splitn(3, '\t').collect();
            (p[0].to_string(), p[1].to_string(), p[2].to_string())
        })
        .collect()
}

pub fn mkdirs(base: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = base.join(n);
            fs::create_dir_all(&p).unwrap();
            p
        })
        .collect()
}
