//! ADD extracts local tar archives (by content, whatever the compression);
//! everything else, and every COPY, lands as the file it is.

use kiln_integration::*;

/// A small tree with the things extraction must keep: modes, a nested dir,
/// relative and absolute symlinks, a hard link.
fn make_tree(sb: &Sandbox) {
    sb.write("src/top.txt", "top\n");
    sb.write_mode("src/bin/run.sh", "#!/bin/sh\necho run\n", 0o755);
    sb.write_mode("src/dir/nested.txt", "nested\n", 0o600);
    sb.chmod("src/dir", 0o750);
    sb.write_mode("src/dir/deeper/x.bin", [0u8, 1, 2, 255], 0o640);
    sb.symlink("top.txt", "src/link");
    sb.symlink("/etc/hostname", "src/dir/abs");
    sb.sh("ln src/top.txt src/hard").ok();
}

#[test]
fn add_extracts_every_compression_by_content() {
    let sb = Sandbox::new();
    for t in ["tar", "gzip", "xz", "bzip2", "zstd"] {
        require_tool(t);
    }
    make_tree(&sb);
    sb.sh("set -e
         tar -C src -cf ctx/a.tar .
         tar -C src -cf - . | gzip -9 > ctx/b.tar.gz
         tar -C src -cf - . | xz > ctx/c.tar.xz
         tar -C src -cf - . | bzip2 > ctx/d.tar.bz2
         tar -C src -cf - . | zstd -q > ctx/e.tar.zst
         cp ctx/c.tar.xz ctx/f.data")
        .ok();
    let img = sb.build(
        "FROM scratch
ADD a.tar /x/tar/
ADD b.tar.gz /x/gz/
ADD c.tar.xz /x/xz/
ADD d.tar.bz2 /x/bz2/
ADD e.tar.zst /x/zst/
ADD f.data /x/sniffed/
ADD a.tar /x/noslash
",
        "arch",
    );

    // What the system tar makes of the same archive is the reference.
    for (archive, dest) in [
        ("a.tar", "x/tar"),
        ("b.tar.gz", "x/gz"),
        ("c.tar.xz", "x/xz"),
        ("d.tar.bz2", "x/bz2"),
        ("e.tar.zst", "x/zst"),
        ("f.data", "x/sniffed"),
        ("a.tar", "x/noslash"),
    ] {
        let refdir = format!("ref-{}", dest.replace('/', "-"));
        sb.mkdir(&refdir);
        let flag = match archive {
            "b.tar.gz" => "-z",
            "c.tar.xz" | "f.data" => "-J",
            "d.tar.bz2" => "-j",
            "e.tar.zst" => "--zstd",
            _ => "-f-",
        };
        let script = if flag == "-f-" {
            format!("tar -C {refdir} -xpf ctx/{archive}")
        } else {
            format!("tar -C {refdir} -xp {flag} -f ctx/{archive}")
        };
        sb.sh(&script).ok();
        assert_same_tree(&host_tree(&sb.path(&refdir)), &image_tree(&img, dest), &format!("ADD {archive} {dest}"));
    }

    // Extracted entries keep the archive's owner (the user who ran tar), as docker does.
    let (uid, gid) = sb.ids();
    let e = img.entry("x/gz/dir/nested.txt").unwrap();
    assert_eq!((e.uid, e.gid), (uid as u64, gid as u64), "ADD keeps the ownership recorded in the archive");
    // The symlinks stay symlinks, the absolute one untouched.
    assert_eq!(img.entry("x/zst/dir/abs").unwrap().link.as_deref(), Some("/etc/hostname"));
    assert_eq!(img.entry("x/zst/link").unwrap().kind, Kind::Symlink);
    // The archives themselves are not in the image.
    assert!(!img.paths().iter().any(|p| p.ends_with(".tar") || p.ends_with(".zst") || p.ends_with(".data")));
}

#[test]
fn non_archives_and_copy_are_never_extracted() {
    let sb = Sandbox::new();
    make_tree(&sb);
    sb.write("ctx/plain.txt", "just text, not a tar\n".repeat(20));
    sb.write("ctx/notes.txt", "notes\n");
    sb.sh("set -e
         gzip -k ctx/plain.txt
         tar -C src -cf - . | gzip > ctx/b.tar.gz
         tar -C src -cf ctx/a.tar .")
        .ok();
    let img = sb.build(
        "FROM scratch
ADD plain.txt.gz /x/gz-not-tar/
ADD notes.txt /x/text/
COPY b.tar.gz /x/copied/
COPY a.tar /x/copied-plain/
ADD --unpack=false b.tar.gz /x/kept/
",
        "noextract",
    );
    let host = |p: &str| std::fs::read(sb.path(p)).unwrap();
    assert_eq!(img.file("x/gz-not-tar/plain.txt.gz"), host("ctx/plain.txt.gz"), "a gzip of a non-tar is copied as is");
    assert_eq!(img.file("x/text/notes.txt"), host("ctx/notes.txt"));
    assert_eq!(img.file("x/copied/b.tar.gz"), host("ctx/b.tar.gz"), "COPY never extracts");
    assert_eq!(img.file("x/copied-plain/a.tar"), host("ctx/a.tar"), "COPY never extracts");
    assert_eq!(img.file("x/kept/b.tar.gz"), host("ctx/b.tar.gz"), "ADD --unpack=false keeps the archive");
    for dir in ["x/gz-not-tar", "x/text", "x/copied", "x/copied-plain", "x/kept"] {
        let n = img.paths().iter().filter(|p| p.starts_with(&format!("{dir}/"))).count();
        assert_eq!(n, 1, "{dir} holds exactly the one file: {:?}", img.paths());
    }
}

/// Appends a raw entry: the name and link target go into the header as they
/// are (the tar crate refuses absolute link names and `..`, which these
/// tests need).
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: Option<&str>, body: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_size(body.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, body).unwrap();
}

fn write_tar(sb: &Sandbox, rel: &str, entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, body) in entries {
        raw_entry(&mut b, name, *kind, *link, body);
    }
    sb.write(rel, b.into_inner().unwrap());
}

/// An archive entry whose path goes through a symlink the same archive made
/// lands where the symlink leads inside the image, as docker extracts it;
/// hard links whose target is absolute are taken relative to the extraction
/// directory, as docker takes them. The next RUN applies the layer and reads
/// every file.
#[test]
fn add_resolves_archive_symlinks_inside_the_image_and_the_next_run_applies_it() {
    let sb = Sandbox::new();
    sb.busybox_context();
    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};
    write_tar(
        &sb,
        "ctx/links.tar",
        &[
            ("sub/", D, None, b""),
            ("rel", S, Some("sub"), b""),
            ("rel/through-rel", F, None, b"through a relative link\n"),
            ("abs", S, Some("/etc"), b""),
            ("abs/through-abs", F, None, b"through an absolute link\n"),
            ("hard-abs", H, Some("/sub/through-rel"), b""),
            ("hard-via-link", H, Some("rel/through-rel"), b""),
            ("abs/hard-in-etc", H, Some("abs/through-abs"), b""),
        ],
    );
    let img = sb.build(
        &format!(
            "{RUN_BASE}\
ADD links.tar /x/
RUN cat /x/sub/through-rel /etc/through-abs /x/hard-abs /x/hard-via-link /etc/hard-in-etc > /seen && \
    stat -c %h /x/sub/through-rel >> /seen && test -L /x/rel && test -L /x/abs
"
        ),
        "links",
    );
    assert_eq!(
        img.file_str("seen"),
        "through a relative link\nthrough an absolute link\nthrough a relative link\nthrough a relative link\n\
         through an absolute link\n3\n",
        "files through archive symlinks land inside the image and hard links stay hard links"
    );
    assert!(img.entry("x/rel/through-rel").is_none() && img.entry("x/abs/through-abs").is_none());
    assert!(img.entry("etc/through-abs").is_some(), "/x/abs -> /etc resolves to the image's /etc");
}

/// Entries that would leave the destination or link to what the layer does
/// not hold are refused with an error that names the archive and the entry,
/// and nothing is built.
#[test]
fn add_refuses_archive_entries_it_cannot_place() {
    let sb = Sandbox::new();
    sb.busybox_context();
    use tar::EntryType::{Link as H, Regular as F, Symlink as S};
    type Entry<'a> = (&'a str, tar::EntryType, Option<&'a str>, &'a [u8]);
    let cases: &[(&str, &[Entry], &str)] = &[
        ("escape.tar", &[("../../escape", F, None, b"x")], "../../escape"),
        ("hard-out.tar", &[("h", H, Some("../../../etc/passwd"), b"")], "\"h\""),
        // The image has /bin/busybox, but a layer cannot link to another layer's file.
        ("hard-image.tar", &[("h", H, Some("/bin/busybox"), b"")], "\"h\""),
        ("hard-missing.tar", &[("h", H, Some("nowhere"), b"")], "\"h\""),
        ("file-parent.tar", &[("f", F, None, b"x"), ("f/inside", F, None, b"y")], "\"f/inside\""),
        ("loop.tar", &[("a", S, Some("b"), b""), ("b", S, Some("a"), b""), ("a/x", F, None, b"x")], "\"a/x\""),
        ("whiteout.tar", &[(".wh.busybox", F, None, b"")], ".wh.busybox"),
    ];
    for (archive, entries, entry) in cases {
        write_tar(&sb, &format!("ctx/{archive}"), entries);
        let out = sb.try_build(&format!("{RUN_BASE}ADD {archive} /\nRUN echo applied\n"), "refused", &[]);
        assert!(!out.success(), "ADD {archive} must fail:\n{}", out.transcript());
        out.stderr_has(&[archive, entry]);
    }
}
