//! `COPY --from` reads the source stage's or image's layer dirs path by path
//! (nothing else of the source is copied or unpacked): what it copies is the
//! source's merged filesystem, whiteouts and opaque directories included,
//! symlinks resolved inside the source, with every storage driver; its cache
//! key is the content of what it copies, not the rest of the source.

use std::collections::BTreeSet;

use kiln_integration::*;

/// A source stage with many files and a big one, then deletions: a file
/// removed by a later RUN (a whiteout) and a directory replaced by a new one
/// (an opaque directory).
const SOURCE: &str = "\
RUN mkdir -p /out/many /out/d/sub \
 && for i in $(seq 1 300); do echo $i > /out/many/f$i; done \
 && head -c 3000000 /dev/urandom > /out/big \
 && printf 'one\\n' > /out/one.bin && chown 1234:2345 /out/one.bin && chmod 0640 /out/one.bin \
 && touch -d '2001-02-03 04:05:06' /out/one.bin
RUN rm /out/many/f1 && mkdir /out/opq && echo old > /out/opq/old && echo gone > /out/opq/gone
RUN rm -rf /out/opq && mkdir /out/opq && echo new > /out/opq/new \
 && ln -s /out/one.bin /out/link && ln -s ../one.bin /out/d/rel \
 && echo a > /out/d/a.txt && echo b > /out/d/sub/b.txt && echo c > /out/d/c.md
";

#[test]
fn copy_from_takes_exactly_the_named_paths_with_every_driver() {
    let sb = Sandbox::new();
    sb.busybox_context();
    for driver in DRIVERS {
        let df = format!(
            "{RUN_BASE}{SOURCE}\
FROM scratch
COPY --from=0 /out/one.bin /
COPY --from=0 /out/link /via-link
COPY --from=0 /out/d/rel /via-rel
COPY --from=0 /out/opq /opq/
COPY --from=0 /out/d/*.txt /txt/
COPY --from=0 /out/d /d
"
        );
        let tag = format!("pick-{driver}");
        let (out, img) = sb.build_with(&df, &tag, &["--storage-driver", driver]);
        let what = format!("{driver}:\n{}", out.transcript());

        // The first COPY's layer holds the one file and nothing else.
        let first = &img.layers[0];
        let names: Vec<&str> = first.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["one.bin"], "{what}");
        let one = &first.entries[0];
        assert_eq!(one.data, b"one\n", "{what}");
        assert_eq!(one.mode, 0o640, "{what}");
        // The source's owner is kept (BuildKit keeps it without --chown), and its mtime.
        assert_eq!((one.uid, one.gid), (1234, 2345), "{what}");
        assert_eq!(one.mtime, 981_173_106, "{what}");

        // Symlink sources resolve inside the stage; what lands is the file.
        for p in ["via-link", "via-rel"] {
            let e = img.entry(p).unwrap_or_else(|| panic!("{p} missing: {what}"));
            assert_eq!((e.kind, e.data.as_slice(), e.mode), (Kind::File, &b"one\n"[..], 0o640), "{p} {what}");
        }
        // The opaque directory shows only what the last RUN put there.
        assert_eq!(img.file_str("opq/new"), "new\n", "{what}");
        assert!(img.entry("opq/old").is_none() && img.entry("opq/gone").is_none(), "{what}");
        // A wildcard matches in the merged directory, not below it.
        assert_eq!(img.file_str("txt/a.txt"), "a\n", "{what}");
        // A directory comes whole, its symlinks as symlinks.
        assert_eq!(img.file_str("d/sub/b.txt"), "b\n", "{what}");
        let rel = img.entry("d/rel").unwrap();
        assert_eq!((rel.kind, rel.link.as_deref()), (Kind::Symlink, Some("../one.bin")), "{what}");

        let paths = img.paths();
        let expected: BTreeSet<String> = [
            "one.bin",
            "via-link",
            "via-rel",
            "opq",
            "opq/new",
            "txt",
            "txt/a.txt",
            "d",
            "d/a.txt",
            "d/c.md",
            "d/rel",
            "d/sub",
            "d/sub/b.txt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(paths, expected, "{what}");
    }
}

#[test]
fn deleted_files_of_the_source_cannot_be_copied() {
    let sb = Sandbox::new();
    sb.busybox_context();
    for (word, driver) in [("/out/many/f1", "overlay"), ("/out/opq/old", "overlay"), ("/out/many/f1", "vfs")] {
        let df = format!("{RUN_BASE}{SOURCE}FROM scratch\nCOPY --from=0 {word} /x\n");
        let out = sb.try_build(&df, "deleted", &["--storage-driver", driver]);
        assert!(!out.success(), "{word} was copied after it was deleted ({driver}):\n{}", out.transcript());
        out.stderr_has(&[word]);
    }
    // A file next to the deleted ones still is.
    let df = format!("{RUN_BASE}{SOURCE}FROM scratch\nCOPY --from=0 /out/many/f2 /x\n");
    let img = sb.build(&df, "kept");
    assert_eq!(img.file_str("x"), "2\n");
}

#[test]
fn the_cache_key_is_the_content_copied() {
    let sb = Sandbox::new();
    sb.write("ctx/sel.txt", "selected 1\n");
    sb.write("ctx/other.txt", "other 1\n");
    let df = "FROM scratch AS src\nCOPY sel.txt /out/sel.txt\nCOPY other.txt /out/other.txt\n\
FROM scratch\nCOPY --from=src /out/sel.txt /sel.txt\n";
    let (_, img) = sb.build_with(df, "key", &[]);
    assert_eq!(img.file_str("sel.txt"), "selected 1\n");

    // Another file of the source stage changes: the stage's step runs, the COPY --from is a hit.
    sb.write("ctx/other.txt", "other 2\n");
    let (out, again) = sb.build_with(df, "key", &[]);
    let hits = out.stdout.matches("Using cache").count();
    assert_eq!(hits, 2, "COPY sel.txt and COPY --from should be cache hits:\n{}", out.transcript());
    let tail = out.stdout.split("COPY --from=src").nth(1).unwrap();
    assert!(tail.contains("Using cache"), "{}", out.transcript());
    assert_eq!(again.layers.last().unwrap().digest, img.layers.last().unwrap().digest);

    // The copied file changes: the COPY --from runs again.
    sb.write("ctx/sel.txt", "selected 2\n");
    let (out, changed) = sb.build_with(df, "key", &[]);
    let tail = out.stdout.split("COPY --from=src").nth(1).unwrap();
    assert!(!tail.contains("Using cache"), "{}", out.transcript());
    assert_eq!(changed.file_str("sel.txt"), "selected 2\n");
}

#[test]
fn copy_from_an_image_in_the_store() {
    let sb = Sandbox::new();
    sb.write("ctx/a/f.txt", "from the image\n");
    sb.write("ctx/b.txt", "b\n");
    sb.build("FROM scratch\nCOPY a /srv/a\nCOPY b.txt /srv/b.txt\n", "srcimg");
    for driver in DRIVERS {
        let df = "FROM scratch\nCOPY --from=srcimg /srv/a/ /got/\nCOPY --from=srcimg /srv/*.txt /\n";
        let (out, img) = sb.build_with(df, &format!("fromimg-{driver}"), &["--pull=never", "--storage-driver", driver]);
        assert_eq!(img.file_str("got/f.txt"), "from the image\n", "{}", out.transcript());
        assert_eq!(img.file_str("b.txt"), "b\n");
        assert_eq!(img.paths(), ["got", "got/f.txt", "b.txt"].iter().map(|s| s.to_string()).collect());
    }
}

#[test]
fn bind_from_a_stage_shows_its_merged_files_with_every_driver() {
    let sb = Sandbox::new();
    sb.busybox_context();
    for driver in DRIVERS {
        let base = RUN_BASE.replacen("FROM scratch", "FROM scratch AS src", 1);
        let df = format!(
            "{base}{SOURCE}\
FROM src
RUN --mount=type=bind,from=src,source=/out,target=/m \
 cat /m/one.bin /m/d/a.txt /m/opq/new > /seen \
 && if test -e /m/many/f1 || test -e /m/opq/old; then echo deleted files show; exit 1; fi
"
        );
        let (out, img) = sb.build_with(&df, &format!("bind-{driver}"), &["--storage-driver", driver]);
        assert_eq!(img.file_str("seen"), "one\na\nnew\n", "{driver}:\n{}", out.transcript());
    }
}
