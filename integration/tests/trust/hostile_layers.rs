//! Hostile images against every entry point that reads a layer (issue 9).
//!
//! Each test is one entry point (FROM + RUN, COPY --from an image, COPY --from
//! a stage, a named context, a bind mount from an image, --squash, ADD of a
//! local tar, `kiln run`, `kiln load` of both archive formats) run against the
//! whole matrix of hostile layer classes, each in one layer and split across
//! layers. Every case gets a fresh store; all cases run, failures are
//! collected and reported together as `entry × class × variant`.
//!
//! The victim is a directory in the test user's home holding files. After
//! every case it must be byte-for-byte what it was: same names, kinds, modes,
//! contents, link targets, nothing added. A case that must fail (an escape
//! through `..`, a forged diff_id, a corrupt or truncated stream) must exit
//! non-zero, without a panic, with an error naming the refused entry or layer.
//! Where docker resolves a name inside the image root (absolute names,
//! symlinks planted by the image), success is accepted only if the victim is
//! untouched and what the probe sees inside the image matches the resolution
//! inside the root.
//!
//! The layer tars are written here byte by byte (ustar headers, PAX records
//! for long names), because the tar crate refuses to write `..` and absolute
//! names.
//!
//! `HOSTILE_CASES=substring` runs only the cases whose name contains it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use kiln_integration::*;
use serde_json::{json, Value};

/// What the hostile layers write where they can.
const PAYLOAD: &str = "PWNED";
/// The file the base layer puts at the victim's path inside the image.
const DECOY: &str = "inside";
/// The victim file's content on the host; must never reach an image.
const PRECIOUS: &str = "precious";
/// Enough `..` to climb from any unpack directory to `/`.
const DOTS: &str = "../../../../../../../../../../../../../../../../../../../../../../../../../../../../";
/// The hard link entry the link classes use.
const LINK: &str = "hardlink-out";
/// The symlink entry the symlink classes plant.
const EVIL: &str = "evil";

// ---------------------------------------------------------------------------
// Writing tars by hand

#[derive(Clone, Debug)]
enum E {
    Dir(String),
    File(String, Vec<u8>, u32),
    Symlink(String, String),
    Hardlink(String, String),
}

fn file(name: &str, content: &str) -> E {
    E::File(name.to_string(), content.as_bytes().to_vec(), 0o644)
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    assert!(s.len() == width, "{value} does not fit a {width}-digit tar field");
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n", where <len> counts the whole record, itself included.
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    assert_eq!(rec.len(), len);
    rec
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % 512 != 0 {
        out.push(0);
    }
}

fn raw_header(out: &mut Vec<u8>, name: &[u8], typeflag: u8, size: u64, link: &[u8], mode: u32) {
    let mut h = [0u8; 512];
    let name = &name[..name.len().min(100)];
    let link = &link[..link.len().min(100)];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
}

/// One entry: a PAX header first when the name or link does not fit ustar.
fn header(out: &mut Vec<u8>, name: &str, typeflag: u8, size: u64, link: &str, mode: u32) {
    let (n, l) = (name.as_bytes(), link.as_bytes());
    if n.len() > 100 || l.len() > 100 {
        let mut recs = Vec::new();
        if n.len() > 100 {
            recs.extend(pax_record("path", n));
        }
        if l.len() > 100 {
            recs.extend(pax_record("linkpath", l));
        }
        raw_header(out, b"./PaxHeaders/entry", b'x', recs.len() as u64, b"", 0o644);
        out.extend_from_slice(&recs);
        pad(out);
    }
    raw_header(out, n, typeflag, size, l, mode);
}

/// The tar of `entries`, with the two zero blocks that end it.
fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        match e {
            E::Dir(name) => header(&mut out, &format!("{}/", name.trim_end_matches('/')), b'5', 0, "", 0o755),
            E::File(name, data, mode) => {
                header(&mut out, name, b'0', data.len() as u64, "", *mode);
                out.extend_from_slice(data);
                pad(&mut out);
            }
            E::Symlink(name, target) => header(&mut out, name, b'2', 0, target, 0o777),
            E::Hardlink(name, target) => header(&mut out, name, b'1', 0, target, 0o644),
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Bytes that do not compress, so a truncated stream is cut mid-deflate.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

fn hex12(digest: &str) -> String {
    digest.trim_start_matches("sha256:")[..12].to_string()
}

/// A layer blob as an image carries it.
#[derive(Clone)]
struct Blob {
    /// What the context file of ADD and the layer blob hold (gzip).
    gz: Vec<u8>,
    /// The blob digest (of `gz`).
    digest: String,
    /// The diff_id the config claims.
    diff_id: String,
    /// The diff_id of what is really in it, when it differs (forged).
    true_diff_id: Option<String>,
}

impl Blob {
    fn of(entries: &[E]) -> Blob {
        let tar = tar_of(entries);
        let gz = gzip(&tar);
        Blob { digest: digest(&gz), diff_id: digest(&tar), gz, true_diff_id: None }
    }

    /// Digest prefixes an error about this layer may name it by.
    fn names(&self) -> Vec<String> {
        let mut v = vec![hex12(&self.digest), hex12(&self.diff_id)];
        v.extend(self.true_diff_id.as_deref().map(hex12));
        v
    }
}

// ---------------------------------------------------------------------------
// Hostile classes

/// What the probe must see at the victim's path inside the image when an
/// entry point accepts a case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Inside {
    /// The base layer's decoy, untouched.
    Decoy,
    /// The hostile layer's content (the name resolved inside the root).
    Payload,
    /// Gone (a whiteout or opaque marker resolved inside the root).
    Gone,
    /// Anything: docker's outcome is no better defined.
    Any,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The control: must succeed and see this.
    Succeed(Inside),
    /// Must exit non-zero naming the entry or layer.
    Refuse,
    /// Refused, or accepted with the victim untouched and this inside.
    RefuseOr(Inside),
}

/// How the last part's layer is spoiled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mangle {
    None,
    /// The config claims the diff_id of another (legitimate) layer.
    ForgeDiffId,
    /// The gzip trailer's CRC is wrong.
    CorruptCrc,
    /// The gzip stream ends halfway.
    TruncateGzip,
    /// The gzip stream is whole but the tar in it ends in the middle of a file
    /// (the diff_id matches what is there).
    TruncateTar,
}

struct Class {
    name: &'static str,
    /// The hostile entries; `split` puts each part in a layer of its own.
    parts: Vec<Vec<E>>,
    mangle: Mangle,
    expect: Expect,
    /// What a refusal must name (besides the hostile layers' digests).
    needle: String,
}

struct Victim {
    /// Absolute path on the host.
    abs: String,
    /// The same path without the leading `/`: where the decoy is inside the image.
    rel: String,
}

fn classes(v: &Victim) -> Vec<Class> {
    let (abs, rel) = (&v.abs, &v.rel);
    let up = format!("{DOTS}{rel}");
    let sym = |name, target: &str, last: E, inside| Class {
        name,
        parts: vec![vec![E::Symlink(EVIL.into(), target.to_string())], vec![last]],
        mangle: Mangle::None,
        expect: Expect::RefuseOr(inside),
        needle: EVIL.into(),
    };
    let one = |name, e: E, expect, needle: &str| Class {
        name,
        parts: vec![vec![e]],
        mangle: Mangle::None,
        expect,
        needle: needle.to_string(),
    };
    let spoiled = |name, entries: Vec<E>, mangle| Class {
        name,
        parts: vec![entries],
        mangle,
        expect: Expect::Refuse,
        needle: "\u{0}never".into(),
    };
    let opq = || E::File(format!("{EVIL}/.wh..wh..opq"), Vec::new(), 0o644);
    let wh = || E::File(format!("{EVIL}/.wh.file"), Vec::new(), 0o644);
    let write = || file(&format!("{EVIL}/file"), PAYLOAD);
    let big = noise(256 * 1024);
    vec![
        Class {
            name: "benign-control",
            parts: vec![vec![file("ok/a", "a")], vec![file("ok/b", "b")]],
            mangle: Mangle::None,
            expect: Expect::Succeed(Inside::Decoy),
            needle: "\u{0}never".into(),
        },
        sym("abs-symlink-then-opaque", abs, opq(), Inside::Gone),
        sym("abs-symlink-then-whiteout", abs, wh(), Inside::Gone),
        sym("abs-symlink-then-write", abs, write(), Inside::Payload),
        sym("rel-symlink-then-opaque", &up, opq(), Inside::Gone),
        sym("rel-symlink-then-whiteout", &up, wh(), Inside::Gone),
        sym("rel-symlink-then-write", &up, write(), Inside::Payload),
        one("dotdot-write", file(&format!("{up}/file"), PAYLOAD), Expect::Refuse, "victim/file"),
        one(
            "dotdot-opaque",
            E::File(format!("{up}/.wh..wh..opq"), Vec::new(), 0o644),
            Expect::Refuse,
            "victim/.wh..wh..opq",
        ),
        one("dotdot-whiteout", E::File(format!("{up}/.wh.file"), Vec::new(), 0o644), Expect::Refuse, "victim/.wh.file"),
        one("absolute-write", file(&format!("{abs}/file"), PAYLOAD), Expect::RefuseOr(Inside::Payload), "victim/file"),
        one(
            "absolute-opaque",
            E::File(format!("{abs}/.wh..wh..opq"), Vec::new(), 0o644),
            Expect::RefuseOr(Inside::Gone),
            "victim/.wh..wh..opq",
        ),
        one("hardlink-absolute", E::Hardlink(LINK.into(), format!("{abs}/file")), Expect::RefuseOr(Inside::Any), LINK),
        one("hardlink-dotdot", E::Hardlink(LINK.into(), format!("{up}/file")), Expect::Refuse, LINK),
        Class {
            name: "hardlink-absolute-then-write",
            parts: vec![vec![E::Hardlink(LINK.into(), format!("{abs}/file"))], vec![file(LINK, PAYLOAD)]],
            mangle: Mangle::None,
            expect: Expect::RefuseOr(Inside::Any),
            needle: LINK.into(),
        },
        Class {
            name: "hardlink-dotdot-then-write",
            parts: vec![vec![E::Hardlink(LINK.into(), format!("{up}/file"))], vec![file(LINK, PAYLOAD)]],
            mangle: Mangle::None,
            expect: Expect::Refuse,
            needle: LINK.into(),
        },
        Class {
            name: "symlink-then-hardlink-through-it-then-write",
            parts: vec![
                vec![E::Symlink(EVIL.into(), abs.clone())],
                vec![E::Hardlink(LINK.into(), format!("{EVIL}/file"))],
                vec![file(LINK, PAYLOAD)],
            ],
            mangle: Mangle::None,
            expect: Expect::RefuseOr(Inside::Any),
            needle: LINK.into(),
        },
        spoiled("forged-diff-id", vec![file("POISONED", PAYLOAD)], Mangle::ForgeDiffId),
        spoiled("corrupt-gzip-crc", vec![file("crc", PAYLOAD)], Mangle::CorruptCrc),
        spoiled("truncated-gzip", vec![E::File("big".into(), big.clone(), 0o644)], Mangle::TruncateGzip),
        spoiled("truncated-tar", vec![E::File("big".into(), big, 0o644)], Mangle::TruncateTar),
    ]
}

/// The layers below every hostile one: Debian's static busybox and the decoy
/// at the victim's path.
fn base_layer(v: &Victim) -> Blob {
    let mut entries =
        vec![E::Dir("bin".into()), E::File("bin/busybox".into(), fs::read(static_busybox()).unwrap(), 0o755)];
    let comps: Vec<&str> = v.rel.split('/').collect();
    for i in 1..=comps.len() {
        entries.push(E::Dir(comps[..i].join("/")));
    }
    entries.push(file(&format!("{}/file", v.rel), &format!("{DECOY}\n")));
    Blob::of(&entries)
}

fn filler_layer() -> Blob {
    Blob::of(&[E::Dir("filler".into()), file("filler/f", "filler\n")])
}

/// What stands in for the forged layer in the legitimate image whose diff_id it claims.
fn legit_layer() -> Blob {
    Blob::of(&[file("legit", "legit\n")])
}

fn spoil(entries: &[E], mangle: Mangle) -> Blob {
    let mut b = Blob::of(entries);
    match mangle {
        Mangle::None => {}
        Mangle::ForgeDiffId => {
            b.true_diff_id = Some(b.diff_id.clone());
            b.diff_id = legit_layer().diff_id;
        }
        Mangle::CorruptCrc => {
            let n = b.gz.len();
            b.gz[n - 8] ^= 0xff;
            b.digest = digest(&b.gz);
        }
        Mangle::TruncateGzip => {
            b.gz.truncate(b.gz.len() / 2);
            b.digest = digest(&b.gz);
        }
        Mangle::TruncateTar => {
            let tar = tar_of(entries);
            let cut = &tar[..512 * 2 + 10_000];
            b.gz = gzip(cut);
            b.digest = digest(&b.gz);
            b.diff_id = digest(cut);
        }
    }
    b
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    /// Every hostile entry in one layer.
    One,
    /// Each part in its own layer (a lone part goes on top of a harmless layer).
    Split,
}

/// The hostile layers of a class (above the base layer) and, for a forged
/// diff_id, the legitimate layers whose identity they claim.
fn hostile_layers(class: &Class, variant: Variant) -> (Vec<Blob>, Vec<Blob>) {
    let mut parts: Vec<Vec<E>> = match variant {
        Variant::One => vec![class.parts.concat()],
        Variant::Split if class.parts.len() == 1 => vec![Vec::new(), class.parts[0].clone()],
        Variant::Split => class.parts.clone(),
    };
    let last = parts.pop().unwrap();
    let mut layers: Vec<Blob> = parts.iter().map(|p| if p.is_empty() { filler_layer() } else { Blob::of(p) }).collect();
    let mut legit = layers.clone();
    layers.push(spoil(&last, class.mangle));
    legit.push(legit_layer());
    (layers, legit)
}

// ---------------------------------------------------------------------------
// Images: OCI layout, oci-archive, docker-archive

struct ImageFiles {
    /// `(path inside the layout, bytes)`.
    files: Vec<(String, Vec<u8>)>,
    config: (String, Vec<u8>),
    layers: Vec<Blob>,
}

fn image_files(layers: &[Blob], name: &str) -> ImageFiles {
    let config = json!({
        "created": "2020-01-01T00:00:00Z",
        "architecture": host_arch(),
        "os": "linux",
        "config": { "Env": [SCRATCH_PATH_ENV], "Cmd": ["/bin/busybox", "true"] },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
        "history": layers.iter().enumerate().map(|(i, _)| json!({"created_by": format!("hostile layer {i}")})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l.digest, "size": l.gz.len(),
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": name,
                "io.containerd.image.name": format!("{name}:latest"),
            },
        }],
    });
    let blob_path = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let mut files = vec![
        ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json".to_string(), serde_json::to_vec(&index).unwrap()),
        (blob_path(&digest(&manifest)), manifest),
        (blob_path(&digest(&config)), config.clone()),
    ];
    for l in layers {
        if !files.iter().any(|(p, _)| *p == blob_path(&l.digest)) {
            files.push((blob_path(&l.digest), l.gz.clone()));
        }
    }
    ImageFiles { files, config: (digest(&config), config), layers: layers.to_vec() }
}

fn tar_archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

impl ImageFiles {
    fn write_layout(&self, sb: &Sandbox, dir: &str) {
        for (p, data) in &self.files {
            sb.write(&format!("{dir}/{p}"), data);
        }
    }

    fn oci_archive(&self) -> Vec<u8> {
        tar_archive(&self.files)
    }

    /// `docker save`'s format, layers as gzip under legacy `<id>/layer.tar` names.
    fn docker_archive(&self, name: &str) -> Vec<u8> {
        let hex = self.config.0.trim_start_matches("sha256:");
        let layer_names: Vec<String> =
            self.layers.iter().map(|l| format!("{}/layer.tar", l.digest.trim_start_matches("sha256:"))).collect();
        let manifest =
            json!([{ "Config": format!("{hex}.json"), "RepoTags": [format!("{name}:latest")], "Layers": layer_names }]);
        let mut files = vec![(format!("{hex}.json"), self.config.1.clone())];
        for (n, l) in layer_names.iter().zip(&self.layers) {
            if !files.iter().any(|(p, _)| p == n) {
                files.push((n.clone(), l.gz.clone()));
            }
        }
        files.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
        tar_archive(&files)
    }
}

// ---------------------------------------------------------------------------
// The victim

/// Kind, mode and content (or link target) of every path under `dir`, and of `dir` itself.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = match fs::symlink_metadata(p) {
            Ok(md) => md,
            Err(e) => {
                out.insert(rel, format!("unreadable: {e}"));
                return;
            }
        };
        let mode = md.permissions().mode() & 0o7777;
        if md.file_type().is_symlink() {
            out.insert(rel, format!("symlink -> {}", fs::read_link(p).unwrap().display()));
        } else if md.is_dir() {
            out.insert(rel, format!("dir {mode:o}"));
            let mut names: Vec<PathBuf> = fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
            names.sort();
            for n in names {
                walk(root, &n, out);
            }
        } else {
            let data = fs::read(p).unwrap_or_default();
            out.insert(rel, format!("file {mode:o} {:?}", String::from_utf8_lossy(&data)));
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn make_victim(sb: &Sandbox) -> Victim {
    sb.mkdir("home/victim");
    sb.write("home/victim/file", format!("{PRECIOUS}\n"));
    sb.write("home/victim/keep", "keep me\n");
    sb.write("home/victim/sub/inner", "inner\n");
    let abs = sb.path("home/victim").to_str().unwrap().to_string();
    assert!(abs.starts_with('/') && !abs.contains(',') && !abs.contains(' '), "victim path {abs}");
    Victim { rel: abs.trim_start_matches('/').to_string(), abs }
}

fn restore_victim(sb: &Sandbox) {
    let p = sb.path("home/victim");
    match fs::symlink_metadata(&p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(&p).unwrap(),
        Ok(_) => fs::remove_file(&p).unwrap(),
        Err(_) => {}
    }
    make_victim(sb);
}

// ---------------------------------------------------------------------------
// Entry points

#[derive(Clone, Copy, Debug, PartialEq)]
enum EntryPoint {
    /// `FROM <layout>` + RUN.
    FromRun,
    /// `COPY --from=oci:<layout>`.
    CopyFromImage,
    /// `COPY --from=<stage>` where the stage is `FROM <layout>`.
    CopyFromStage,
    /// `--build-context n=oci-layout://<layout>` + `COPY --from=n`.
    NamedContext,
    /// `RUN --mount=type=bind,from=oci:<layout>`.
    BindMount,
    /// `FROM <layout>` + RUN steps with `--squash`, then `kiln run` of the result.
    Squash,
    /// `ADD` of the hostile layer tars (gzip) from the context, then RUN.
    AddTar,
    /// `ADD` of the hostile tars with `--squash`, then `kiln run` of the result.
    AddTarSquash,
    /// `kiln run` of the image (imported by a build `FROM` it with no steps).
    KilnRun,
    /// `kiln load` of a docker-archive, then `kiln run`.
    LoadDockerArchive,
    /// `kiln load` of an oci-archive, then `kiln run`.
    LoadOciArchive,
}

impl EntryPoint {
    fn is_add(self) -> bool {
        matches!(self, EntryPoint::AddTar | EntryPoint::AddTarSquash)
    }
}

/// What the probe saw inside the image: the victim's path, the hard link, and
/// `evil/file` (where a write through the planted symlink lands when the
/// symlink is replaced by a directory, as podman and docker's overlay2 do when
/// they apply a layer into a directory of its own).
#[derive(Debug)]
struct Probe {
    victim: String,
    link: String,
    evil: String,
}

/// A shell script printing what is at the victim's path and at the hard link
/// under `root` (an empty string for `/`).
fn probe_script(v: &Victim, root: &str) -> String {
    format!(
        "p() {{ if [ -f \"$1\" ]; then echo \"$2:$(/bin/busybox cat \"$1\")\"; else echo \"$2:ABSENT\"; fi; }}; \
         p {root}/{}/file PROBE; p {root}/{LINK} LINK; p {root}/{EVIL}/file EVIL",
        v.rel
    )
}

fn parse_probe(text: &str, what: &str) -> Result<Probe, String> {
    let find = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(str::to_string)
            .ok_or_else(|| format!("{what}: no {key} line in the probe output {text:?}"))
    };
    Ok(Probe { victim: find("PROBE")?, link: find("LINK")?, evil: find("EVIL")? })
}

/// A RUN step (exec form, so no shell is needed in the image to parse it)
/// writing the probe to /probe.
fn run_probe(v: &Victim, root: &str) -> String {
    let script = format!("( {} ) > /probe", probe_script(v, root));
    serde_json::to_string(&["/bin/busybox", "sh", "-c", &script]).unwrap()
}

/// What one case does and sees.
enum Outcome {
    /// A kiln command failed; the rest were not run.
    Failed(Output),
    /// Every command succeeded; what the probe saw, or why it could not look.
    Accepted(Result<Probe, String>),
}

struct Case<'a> {
    sb: &'a Sandbox,
    /// Relative to the sandbox.
    dir: String,
    victim: &'a Victim,
}

impl Case<'_> {
    fn store(&self) -> PathBuf {
        self.sb.path(&format!("{}/store", self.dir))
    }

    fn kiln(&self, args: &[&str]) -> Output {
        let store = self.store();
        let mut all = vec!["--root", store.to_str().unwrap()];
        all.extend_from_slice(args);
        self.sb.kiln_raw(&all, None, &[])
    }

    fn layout(&self) -> String {
        self.sb.path(&format!("{}/layout", self.dir)).to_str().unwrap().to_string()
    }

    fn ctx(&self) -> PathBuf {
        self.sb.path(&format!("{}/ctx", self.dir))
    }

    /// `kiln build -t TAG EXTRA... ctx` with `dockerfile`.
    fn build(&self, dockerfile: &str, tag: &str, extra: &[&str]) -> Output {
        self.sb.write(&format!("{}/ctx/Dockerfile", self.dir), dockerfile);
        let ctx = self.ctx();
        let mut args = vec!["build", "-t", tag];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.kiln(&args)
    }

    /// `kiln run --rm IMAGE` of the probe; its stdout.
    fn run_probe(&self, image: &str) -> Output {
        self.kiln(&["run", "--rm", image, "/bin/busybox", "sh", "-c", &probe_script(self.victim, "")])
    }

    fn image(&self, tag: &str) -> Image {
        read_image(&self.store(), &normalize_tag(tag))
    }

    /// The entries of the last layer of image `tag` in the store. Unlike
    /// [`read_image`], this checks no diff_id of the layers below, which a
    /// wrongly accepted hostile image may have forged.
    fn last_layer(&self, tag: &str) -> Result<Vec<kiln_integration::Entry>, String> {
        let store = self.store();
        let desc = find_descriptor(&store, &normalize_tag(tag));
        let blob = |d: &Value| {
            let d = d.as_str().ok_or("descriptor without a digest")?;
            let path = store.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
            fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))
        };
        let manifest: Value = serde_json::from_slice(&blob(&desc["digest"])?).map_err(|e| e.to_string())?;
        let last = manifest["layers"].as_array().and_then(|l| l.last()).ok_or("the image has no layers")?;
        let raw = blob(&last["digest"])?;
        Ok(tar_entries(&decompress(last["mediaType"].as_str().unwrap_or_default(), &raw)))
    }

    /// The probe a RUN step left in /probe, in the image's last layer.
    fn probe_in_last_layer(&self, tag: &str) -> Result<Probe, String> {
        let entries = self.last_layer(tag)?;
        let e = entries.iter().rev().find(|e| e.path == "probe").ok_or("the image's last layer has no /probe")?;
        parse_probe(&String::from_utf8_lossy(&e.data), "/probe")
    }

    /// The probe of an image built `FROM scratch` + `COPY --from=X / /c/`.
    fn probe_in_copy(&self, tag: &str) -> Result<Probe, String> {
        let img = self.image(tag);
        let fs = img.fs();
        let get = |p: &str| match fs.get(p).map(|e| e.kind) {
            Some(Kind::File) | Some(Kind::Hardlink) => String::from_utf8_lossy(&img.file(p)).trim_end().to_string(),
            Some(k) => format!("{k:?}"),
            None => "ABSENT".to_string(),
        };
        if let Some((p, _)) = fs.iter().find(|(_, e)| e.kind == Kind::File && e.data.starts_with(PRECIOUS.as_bytes())) {
            return Err(format!("the host victim's content was copied into the image at {p}"));
        }
        Ok(Probe {
            victim: get(&format!("c/{}/file", self.victim.rel)),
            link: get(&format!("c/{LINK}")),
            evil: get(&format!("c/{EVIL}/file")),
        })
    }

    /// Runs the entry point: the first kiln command that fails, or what the
    /// probe saw once all succeeded.
    fn attempt(&self, entry: EntryPoint, layers: usize) -> Outcome {
        match self.try_attempt(entry, layers) {
            Ok(outcome) => outcome,
            Err(why) => Outcome::Accepted(Err(why)),
        }
    }

    /// `Err`: every command succeeded, but the probe could not be read.
    fn try_attempt(&self, entry: EntryPoint, layers: usize) -> Result<Outcome, String> {
        use EntryPoint::*;
        let v = self.victim;
        let href = format!("oci:{}:hostile", self.layout());
        let plain = format!("oci:{}:plain", self.sb.path("plain").display());
        macro_rules! step {
            ($out:expr) => {{
                let out = $out;
                if !out.success() {
                    return Ok(Outcome::Failed(out));
                }
                out
            }};
        }
        let probe = match entry {
            FromRun => {
                step!(self.build(&format!("FROM {href}\nRUN {}\n", run_probe(v, "")), "t", &[]));
                guard(|| self.probe_in_last_layer("t"))?
            }
            CopyFromImage => {
                step!(self.build(&format!("FROM scratch\nCOPY --from={href} / /c/\n"), "t", &[]));
                guard(|| self.probe_in_copy("t"))?
            }
            CopyFromStage => {
                let df = format!("FROM {href} AS s\nLABEL stage=hostile\nFROM scratch\nCOPY --from=s / /c/\n");
                step!(self.build(&df, "t", &[]));
                guard(|| self.probe_in_copy("t"))?
            }
            NamedContext => {
                let bc = format!("hostile-ctx=oci-layout://{}:hostile", self.layout());
                step!(self.build("FROM scratch\nCOPY --from=hostile-ctx / /c/\n", "t", &["--build-context", &bc]));
                guard(|| self.probe_in_copy("t"))?
            }
            BindMount => {
                let df = format!("FROM {plain}\nRUN --mount=type=bind,from={href},target=/m {}\n", run_probe(v, "/m"));
                step!(self.build(&df, "t", &[]));
                guard(|| self.probe_in_last_layer("t"))?
            }
            Squash => {
                let df = format!("FROM {href}\nRUN {}\nRUN [\"/bin/busybox\",\"true\"]\n", run_probe(v, ""));
                step!(self.build(&df, "t", &["--squash"]));
                let p = guard(|| self.probe_in_last_layer("t"))?;
                step!(self.run_probe("t"));
                p
            }
            AddTar | AddTarSquash => {
                let mut df = format!("FROM {plain}\n");
                for i in 0..layers {
                    df.push_str(&format!("ADD h{i}.tar.gz /\n"));
                }
                if entry == AddTar {
                    df.push_str(&format!("RUN {}\n", run_probe(v, "")));
                    step!(self.build(&df, "t", &[]));
                    guard(|| self.probe_in_last_layer("t"))?
                } else {
                    df.push_str("RUN [\"/bin/busybox\",\"true\"]\n");
                    step!(self.build(&df, "t", &["--squash"]));
                    let out = step!(self.run_probe("t"));
                    parse_probe(&out.stdout, "kiln run")?
                }
            }
            KilnRun => {
                step!(self.build(&format!("FROM {href}\n"), "h", &[]));
                let out = step!(self.run_probe("h"));
                parse_probe(&out.stdout, "kiln run")?
            }
            LoadDockerArchive | LoadOciArchive => {
                let file = self.sb.path(&format!(
                    "{}/{}",
                    self.dir,
                    if entry == LoadDockerArchive { "image.docker.tar" } else { "image.oci.tar" }
                ));
                step!(self.kiln(&["load", "-i", file.to_str().unwrap()]));
                let out = step!(self.run_probe("hostile:latest"));
                parse_probe(&out.stdout, "kiln run")?
            }
        };
        Ok(Outcome::Accepted(Ok(probe)))
    }
}

/// Runs `f`, turning a panic (a harness assertion about what kiln wrote) into an error.
fn guard<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => Err(panic_message(&*panic)),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs the whole matrix against `entry`; panics listing every failed case.
fn matrix(entry: EntryPoint) {
    let sb = Sandbox::new();
    sb.busybox_context();
    let victim = make_victim(&sb);
    let before = snapshot(&sb.path("home/victim"));
    let base = base_layer(&victim);
    image_files(std::slice::from_ref(&base), "plain").write_layout(&sb, "plain");
    let filter = std::env::var("HOSTILE_CASES").unwrap_or_default();

    let mut failures = Vec::new();
    let mut verdicts = Vec::new();
    let mut ran = 0;
    for class in classes(&victim) {
        for variant in [Variant::One, Variant::Split] {
            let name = format!("{entry:?} × {} × {variant:?}", class.name);
            if !name.contains(&filter) {
                continue;
            }
            ran += 1;
            let dir = format!("cases/{}-{:?}", class.name, variant);
            let case = Case { sb: &sb, dir, victim: &victim };
            let result = catch_unwind(AssertUnwindSafe(|| run_case(&case, entry, &class, variant, &base)));
            let problems = match result {
                Ok(Ok(verdict)) => {
                    verdicts.push(format!("{name}: {verdict}"));
                    Vec::new()
                }
                Ok(Err(problems)) => {
                    verdicts.push(format!("{name}: FAILED"));
                    problems
                }
                Err(panic) => {
                    let msg = panic_message(&*panic);
                    verdicts.push(format!("{name}: FAILED (test step panicked)"));
                    vec![format!("a test step panicked: {msg}")]
                }
            };
            // Whatever else happened, the victim must be as it was.
            let after = snapshot(&sb.path("home/victim"));
            let mut problems = problems;
            if after != before {
                problems.insert(0, format!("THE VICTIM CHANGED:\n{}", diff_snapshots(&before, &after)));
                restore_victim(&sb);
            }
            if !problems.is_empty() {
                failures.push(format!("=== {name}\n{}", problems.join("\n")));
            }
            // Each case has a store of its own; drop it to keep /tmp small.
            let _ = fs::remove_dir_all(sb.path(&format!("{}/store", case.dir)));
        }
    }
    eprintln!("{entry:?}: {ran} cases\n{}", verdicts.join("\n"));
    assert!(ran > 0, "HOSTILE_CASES={filter:?} matches no case");
    assert!(
        failures.is_empty(),
        "{} of {ran} hostile cases failed against {entry:?}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn diff_snapshots(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let mut out = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => out.push(format!("  removed {p:?} ({b})")),
            Some(a) if a != b => out.push(format!("  changed {p:?}: {b} -> {a}")),
            _ => {}
        }
    }
    for (p, a) in after {
        if !before.contains_key(p) {
            out.push(format!("  added {p:?} ({a})"));
        }
    }
    out.join("\n")
}

/// One case: writes its image in every form, runs the entry point, judges the
/// outcome. `Ok` carries a one-word verdict for the summary.
fn run_case(
    case: &Case,
    entry: EntryPoint,
    class: &Class,
    variant: Variant,
    base: &Blob,
) -> Result<String, Vec<String>> {
    let sb = case.sb;
    let (hostile, legit) = hostile_layers(class, variant);
    let mut layers = vec![base.clone()];
    layers.extend(hostile.iter().cloned());
    let img = image_files(&layers, "hostile");
    img.write_layout(sb, &format!("{}/layout", case.dir));
    sb.write(&format!("{}/image.oci.tar", case.dir), img.oci_archive());
    sb.write(&format!("{}/image.docker.tar", case.dir), img.docker_archive("hostile"));
    for (i, l) in hostile.iter().enumerate() {
        sb.write(&format!("{}/ctx/h{i}.tar.gz", case.dir), &l.gz);
    }

    // ADD extracts an archive as files: whiteout names are plain names there
    // and no diff_id is claimed, so those classes only have to leave the victim alone.
    let mut expect = class.expect;
    if entry.is_add() {
        let whiteouts = class.name.contains("opaque") || class.name.contains("whiteout");
        if whiteouts || class.mangle != Mangle::None {
            expect = Expect::RefuseOr(Inside::Any);
        }
    }

    let outcome = case.attempt(entry, hostile.len());
    let mut problems = Vec::new();
    let verdict = match (&outcome, expect) {
        (Outcome::Failed(out), Expect::Succeed(_)) => {
            problems.push(format!("the harmless control image was refused:\n{}\n{}", out.command, out.transcript()));
            "refused"
        }
        (Outcome::Failed(out), Expect::Refuse | Expect::RefuseOr(_)) => {
            let mut names: Vec<String> = hostile.iter().flat_map(Blob::names).collect();
            names.push(class.needle.clone());
            // ADD's layers are context files, named by their file names.
            if entry.is_add() {
                names.extend((0..hostile.len()).map(|i| format!("h{i}.tar.gz")));
            }
            if out.code().is_none() {
                problems.push(format!("kiln was killed by a signal:\n{}\n{}", out.command, out.transcript()));
            } else if out.stderr.contains("panicked at") {
                problems.push(format!("kiln panicked:\n{}\n{}", out.command, out.transcript()));
            } else if entry.is_add() && !(out.command.contains(" build ") && out.stderr.contains("ADD h")) {
                // Issue 9 item 6: ADD resolves names inside the image or
                // refuses the entry; a layer the next step (or `kiln run`)
                // cannot apply is neither.
                problems.push(format!(
                    "ADD was accepted, but what it made fails later:\n{}\n{}",
                    out.command,
                    out.transcript()
                ));
            } else if !names.iter().any(|n| out.stderr.contains(n.as_str())) {
                problems.push(format!(
                    "refused, but the error names neither the entry ({:?}) nor the layer ({}):\n{}\n{}",
                    class.needle,
                    hostile.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>().join(", "),
                    out.command,
                    out.transcript()
                ));
            }
            "refused"
        }
        (Outcome::Accepted(_), Expect::Refuse) => {
            problems.push("accepted, but this image must be refused".to_string());
            "accepted"
        }
        (Outcome::Accepted(Err(why)), Expect::Succeed(_) | Expect::RefuseOr(_)) => {
            problems.push(format!("accepted, but what kiln made cannot be read: {why}"));
            "accepted"
        }
        (Outcome::Accepted(Ok(p)), Expect::Succeed(inside) | Expect::RefuseOr(inside)) => {
            // Through a planted symlink, the name resolves inside the root
            // (docker with containerd) or the symlink gives way to a directory
            // of that name (a layer applied into a directory of its own, as
            // podman and docker's overlay2 do). Either keeps the effect inside.
            let (ok, want) = match inside {
                Inside::Decoy => (p.victim == DECOY, "the decoy, untouched"),
                Inside::Payload => (
                    p.victim == PAYLOAD || (p.victim == DECOY && p.evil == PAYLOAD),
                    "the payload there, or the decoy and the payload at /evil/file",
                ),
                Inside::Gone => (p.victim == "ABSENT" || p.victim == DECOY, "nothing, or the decoy"),
                Inside::Any => (true, ""),
            };
            if !ok {
                problems.push(format!(
                    "accepted, but inside the image the victim's path holds {:?} (and /{EVIL}/file {:?}), where \
                     applying the hostile names inside the root gives {want}",
                    p.victim, p.evil
                ));
            }
            if p.link.starts_with(PRECIOUS) || p.victim.starts_with(PRECIOUS) {
                problems.push(format!("the host victim's content reached the image: {p:?}"));
            }
            "accepted"
        }
    };

    // A forged diff_id must not poison the layer a legitimate image with
    // that diff_id uses, in the same store.
    if class.mangle == Mangle::ForgeDiffId && !entry.is_add() {
        let mut legit_layers = vec![base.clone()];
        legit_layers.extend(legit);
        image_files(&legit_layers, "legit").write_layout(sb, &format!("{}/legit", case.dir));
        let lref = format!("oci:{}:legit", sb.path(&format!("{}/legit", case.dir)).display());
        let script = "( echo \"PROBE:$(/bin/busybox cat /POISONED 2>/dev/null || echo ABSENT)\"; \
                      echo \"LINK:$(/bin/busybox cat /legit)\"; echo EVIL:none ) > /probe";
        let run = serde_json::to_string(&["/bin/busybox", "sh", "-c", script]).unwrap();
        let out = case.build(&format!("FROM {lref}\nRUN {run}\n"), "legit", &[]);
        if !out.success() {
            problems.push(format!("the legitimate image failed after the forged one:\n{}", out.transcript()));
        } else {
            match case.probe_in_last_layer("legit") {
                Ok(p) if p.victim == "ABSENT" && p.link == "legit" => {}
                Ok(p) => problems.push(format!("the forged layer poisoned a legitimate image's layer: {p:?}")),
                Err(e) => problems.push(e),
            }
        }
    }
    if problems.is_empty() {
        Ok(verdict.to_string())
    } else {
        Err(problems)
    }
}

// ---------------------------------------------------------------------------
// One test per entry point

#[test]
fn hostile_from_and_run() {
    matrix(EntryPoint::FromRun);
}

#[test]
fn hostile_copy_from_image() {
    matrix(EntryPoint::CopyFromImage);
}

#[test]
fn hostile_copy_from_stage() {
    matrix(EntryPoint::CopyFromStage);
}

#[test]
fn hostile_named_context() {
    matrix(EntryPoint::NamedContext);
}

#[test]
fn hostile_bind_mount_from_image() {
    matrix(EntryPoint::BindMount);
}

#[test]
fn hostile_squash() {
    matrix(EntryPoint::Squash);
}

#[test]
fn hostile_add_local_tar() {
    matrix(EntryPoint::AddTar);
}

#[test]
fn hostile_add_local_tar_squashed() {
    matrix(EntryPoint::AddTarSquash);
}

#[test]
fn hostile_kiln_run() {
    matrix(EntryPoint::KilnRun);
}

#[test]
fn hostile_load_docker_archive() {
    matrix(EntryPoint::LoadDockerArchive);
}

#[test]
fn hostile_load_oci_archive() {
    matrix(EntryPoint::LoadOciArchive);
}

/// The tar writer itself: the system tar reads what it writes, long names
/// included, so a refusal is about the content and not a malformed archive.
#[test]
fn hand_written_tars_are_well_formed() {
    let sb = Sandbox::new();
    let long = format!("{}/file", "d".repeat(150));
    let tar = tar_of(&[
        E::Dir("d".into()),
        file("d/x", "x\n"),
        file(&long, "long\n"),
        E::Symlink("s".into(), format!("/{}", "t".repeat(150))),
        E::Hardlink("h".into(), "d/x".into()),
    ]);
    sb.write("t.tar", &tar);
    let out = sb.tool("tar", &["-tvf", "t.tar"]);
    out.ok();
    for want in ["d/x", &long, &format!("s -> /{}", "t".repeat(150)), "h link to d/x"] {
        assert!(out.stdout.contains(want), "tar -t lacks {want:?}:\n{}", out.stdout);
    }
    let entries = tar_entries(&tar);
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[2].path, long);
    assert_eq!(entries[2].data, b"long\n");
    // The spoiled streams really are spoiled, and the others really are not.
    let gunzip = |gz: &[u8]| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out).map(|_| out)
    };
    let good = spoil(&[file("a", "a")], Mangle::None);
    assert_eq!(digest(&gunzip(&good.gz).unwrap()), good.diff_id);
    assert!(gunzip(&spoil(&[file("a", "a")], Mangle::CorruptCrc).gz).is_err());
    assert!(gunzip(&spoil(&[E::File("b".into(), noise(1 << 18), 0o644)], Mangle::TruncateGzip).gz).is_err());
    let cut = spoil(&[E::File("b".into(), noise(1 << 18), 0o644)], Mangle::TruncateTar);
    assert_eq!(digest(&gunzip(&cut.gz).unwrap()), cut.diff_id);
    let forged = spoil(&[file("a", "a")], Mangle::ForgeDiffId);
    assert_ne!(Some(forged.diff_id.clone()), forged.true_diff_id);
}
