//! File names are bytes: names that are not UTF-8 (`x\xff`, `x\xfe`, long ones past ustar's 100 bytes, link
//! targets) go through the tar writer, GNU tar, kiln's applier and the upper-dir diff exactly, and two names
//! that differ only in their non-UTF-8 bytes stay two entries.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bstr::{BString, ByteSlice};
use kiln_overlay::compress::Compression;
use kiln_overlay::tarfmt::{EntryKind, EntryMeta, TarWriter};
use kiln_overlay::{apply_layer, write_diff, ApplyOptions, DiffOptions, LayerWriter};

fn host(name: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(name))
}

fn long_name() -> Vec<u8> {
    // 130 bytes in one component: too long for ustar's name field, and no '/' to split at.
    [b"d\xff/".as_slice(), &[b'n'; 120], b"\xfe\xfd-long"].concat()
}

/// (name, kind, content): two files whose names differ only in a non-UTF-8 byte, a directory with such a
/// name, a long name inside it, links whose targets are not UTF-8 either.
fn fixtures() -> Vec<(Vec<u8>, EntryKind, Vec<u8>)> {
    vec![
        (b"x\xff".to_vec(), EntryKind::File, b"ff".to_vec()),
        (b"x\xfe".to_vec(), EntryKind::File, b"fe".to_vec()),
        (b"d\xff".to_vec(), EntryKind::Dir, Vec::new()),
        (b"d\xff/in\xfe".to_vec(), EntryKind::File, b"inner".to_vec()),
        (long_name(), EntryKind::File, b"long".to_vec()),
        (b"caf\xc3\xa9".to_vec(), EntryKind::File, b"utf-8".to_vec()),
        (b"l\xfe".to_vec(), EntryKind::Symlink(b"x\xff".as_slice().into()), Vec::new()),
        (
            b"long-link".to_vec(),
            EntryKind::Symlink([b"../".as_slice(), &[b't'; 110], b"\xff"].concat().into()),
            Vec::new(),
        ),
        (b"h\xfd".to_vec(), EntryKind::Hardlink(b"x\xfe".as_slice().into()), Vec::new()),
    ]
}

fn archive() -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for (name, kind, data) in fixtures() {
        let mut meta = EntryMeta::new(name, kind);
        meta.size = data.len() as u64;
        w.append(&meta, Some(&mut &data[..])).unwrap();
    }
    w.finish().unwrap()
}

/// Every name in `root` (relative, as bytes) with what it is: file content, `link:` + target, or `dir`.
fn tree(root: &Path) -> BTreeMap<BString, BString> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = BString::from(e.path().strip_prefix(root).unwrap().as_os_str().as_bytes());
        let ft = e.file_type();
        let what = if ft.is_dir() {
            BString::from("dir")
        } else if ft.is_symlink() {
            BString::from([b"link:".as_slice(), fs::read_link(e.path()).unwrap().as_os_str().as_bytes()].concat())
        } else {
            BString::from(fs::read(e.path()).unwrap())
        };
        out.insert(rel, what);
    }
    out
}

fn want_tree() -> BTreeMap<BString, BString> {
    fixtures()
        .into_iter()
        .map(|(name, kind, data)| {
            let what = match kind {
                EntryKind::Dir => BString::from("dir"),
                EntryKind::Symlink(t) => BString::from([b"link:".as_slice(), &t].concat()),
                EntryKind::Hardlink(_) => BString::from("fe"),
                _ => BString::from(data),
            };
            (BString::from(name), what)
        })
        .collect()
}

#[test]
fn the_tar_crate_reads_every_name_and_target_back_exactly() {
    let bytes = archive();
    let mut a = tar::Archive::new(&bytes[..]);
    let mut got = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let link = e.link_name_bytes().map(|l| BString::from(l.into_owned()));
        let records: Vec<(String, Vec<u8>)> = match e.pax_extensions().unwrap() {
            Some(exts) => {
                exts.map(|x| x.unwrap()).map(|x| (x.key().unwrap().to_string(), x.value_bytes().to_vec())).collect()
            }
            None => Vec::new(),
        };
        // The raw bytes are in the PAX record itself, as GNU tar and Go write them.
        let pax_path = records.iter().find(|(k, _)| k == "path").map(|(_, v)| BString::from(v.clone()));
        got.push((BString::from(e.path_bytes().into_owned()), link, pax_path));
        let mut sink = Vec::new();
        e.read_to_end(&mut sink).unwrap();
    }
    let want: Vec<(BString, Option<BString>, Option<BString>)> = fixtures()
        .into_iter()
        .map(|(name, kind, _)| {
            let mut name = BString::from(name);
            if kind == EntryKind::Dir {
                name.push(b'/');
            }
            let link = match kind {
                EntryKind::Symlink(t) | EntryKind::Hardlink(t) => Some(t),
                _ => None,
            };
            let pax_path = (!name.is_ascii() || name.len() > 100).then(|| name.clone());
            (name, link, pax_path)
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn gnu_tar_extracts_and_lists_the_names_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("a.tar");
    fs::write(&tar_path, archive()).unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let x = Command::new("tar").arg("-xf").arg(&tar_path).arg("-C").arg(&out).env("LC_ALL", "C").output().unwrap();
    assert!(x.status.success());
    assert!(x.stderr.is_empty(), "GNU tar had something to say: {}", x.stderr.as_bstr());
    assert_eq!(tree(&out), want_tree());
    // GNU tar's own listing, names unquoted: the same bytes.
    let listed = Command::new("tar")
        .args(["--quoting-style=literal", "-tf"])
        .arg(&tar_path)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(listed.status.success());
    let names: Vec<&[u8]> = listed.stdout.lines().collect();
    assert!(names.contains(&long_name().as_slice()), "{:?}", listed.stdout.as_bstr());
    assert!(names.contains(&b"x\xff".as_slice()) && names.contains(&b"x\xfe".as_slice()));

    // And an archive GNU tar writes of that tree (its own choice of headers) applies exactly too.
    let theirs = dir.path().join("theirs.tar");
    let st = Command::new("tar")
        .args(["--format=posix", "-cf"])
        .arg(&theirs)
        .arg("-C")
        .arg(&out)
        .arg(".")
        .env("LC_ALL", "C")
        .status()
        .unwrap();
    assert!(st.success());
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    apply_layer(fs::File::open(&theirs).unwrap(), &dest, &ApplyOptions::default()).unwrap();
    assert_eq!(tree(&dest), want_tree());
}

#[test]
fn kilns_applier_then_the_diff_give_the_same_names_back() {
    let dir = common::scratch();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let bytes = archive();
    apply_layer(&bytes[..], &root, &ApplyOptions::default()).unwrap();
    assert_eq!(tree(&root), want_tree());

    // The applied tree as an upper with nothing below: the diff names every entry by its exact bytes.
    let mut w = LayerWriter::new(Vec::new(), Compression::None).unwrap();
    let report = write_diff(&root, &[], &mut w, &DiffOptions::default()).unwrap();
    assert!(report.skipped.is_empty(), "{report:?}");
    let (diff, _) = w.finish().unwrap();
    let again = dir.path().join("again");
    fs::create_dir(&again).unwrap();
    apply_layer(&diff[..], &again, &ApplyOptions::default()).unwrap();
    assert_eq!(tree(&again), want_tree());
    let ino = |p: &[u8]| fs::metadata(again.join(host(p))).unwrap().ino();
    assert_eq!(ino(b"h\xfd"), ino(b"x\xfe"), "the hard link stays a hard link");
}

#[test]
fn a_whiteout_of_a_non_utf8_name_hides_exactly_that_name() {
    let dir = common::scratch();
    let [lower, upper]: [PathBuf; 2] = common::mkdirs(dir.path(), &["lower", "upper"]).try_into().unwrap();
    fs::write(lower.join(host(b"x\xff")), b"ff").unwrap();
    fs::write(lower.join(host(b"x\xfe")), b"fe").unwrap();
    // fuse-overlayfs's spelling where mknod is refused: a file named `.wh.<name>`.
    fs::write(upper.join(host(b".wh.x\xff")), b"").unwrap();
    let mut w = LayerWriter::new(Vec::new(), Compression::None).unwrap();
    let report = write_diff(&upper, std::slice::from_ref(&lower), &mut w, &DiffOptions::default()).unwrap();
    assert_eq!(report.whiteouts, 1);
    let (bytes, _) = w.finish().unwrap();
    let names: Vec<BString> = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| BString::from(e.unwrap().path_bytes().into_owned()))
        .collect();
    assert_eq!(names, vec![BString::from(b".wh.x\xff".as_slice())]);

    // Applied over a copy of the lower as plain deletions: only `x\xff` goes.
    let merged = dir.path().join("merged");
    fs::create_dir(&merged).unwrap();
    fs::write(merged.join(host(b"x\xff")), b"ff").unwrap();
    fs::write(merged.join(host(b"x\xfe")), b"fe").unwrap();
    let opts = ApplyOptions { whiteouts: kiln_overlay::WhiteoutFormat::Naive, ..ApplyOptions::default() };
    apply_layer(&bytes[..], &merged, &opts).unwrap();
    let left: Vec<BString> = tree(&merged).into_keys().collect();
    assert_eq!(left, vec![BString::from(b"x\xfe".as_slice())]);
}
