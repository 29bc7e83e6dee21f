//! File names are bytes end to end: names that are not UTF-8 in the build
//! context, in .dockerignore, in layer tars, in the cache key, and names a RUN
//! creates, are all kept exactly. (Before, `x\xff` and `x\xfe` both became
//! `x\u{FFFD}` and one of them was lost.)

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use kiln_integration::*;

/// `ctx/src/<name>` for a name given as bytes.
fn src(sb: &Sandbox, name: &[u8]) -> PathBuf {
    sb.path("ctx/src").join(OsStr::from_bytes(name))
}

/// A context with two files whose names differ only in a non-UTF-8 byte, a
/// directory with such a name, and another such pair of which .dockerignore
/// excludes one by its raw bytes.
fn context(sb: &Sandbox) {
    sb.busybox_context();
    sb.mkdir("ctx/src");
    fs::write(src(sb, b"x\xff"), "ff\n").unwrap();
    fs::write(src(sb, b"x\xfe"), "fe\n").unwrap();
    fs::create_dir(src(sb, b"d\xfd")).unwrap();
    fs::write(src(sb, b"d\xfd/in\xfc"), "in\n").unwrap();
    fs::write(src(sb, b"y\xff"), "kept\n").unwrap();
    fs::write(src(sb, b"y\xfe"), "ignored\n").unwrap();
    fs::write(sb.path("ctx/.dockerignore"), b"src/y\xfe\n").unwrap();
    sb.give_tree(&sb.path("ctx"));
}

const DOCKERFILE: &str = "COPY src /d/\n\
RUN printf '%s\\n' /d/* > /listing && cat \"/d/$(printf 'x\\377')\" \"/d/$(printf 'x\\376')\" > /both\n\
RUN touch \"/made-$(printf '\\377')\" && mkdir \"/dir-$(printf '\\376')\" && echo hi > \"/dir-$(printf '\\376')/f$(printf '\\375')\"\n\
RUN cat \"/dir-$(printf '\\376')/f$(printf '\\375')\" > /readback && printf '%s\\n' /made-* /dir-* > /made\n";

/// The entry of a layer at exactly these bytes.
fn raw<'a>(layer: &'a Layer, name: &[u8]) -> Option<&'a Entry> {
    layer.entries.iter().find(|e| e.raw_path == name)
}

#[test]
fn non_utf8_names_survive_copy_run_dockerignore_and_the_cache() {
    let sb = Sandbox::new();
    context(&sb);
    let df = format!("{RUN_BASE}{DOCKERFILE}");
    let img = sb.build(&df, "names");

    // The COPY layer holds both files, the directory and its file, by their
    // exact bytes, each with its own content; the ignored one is not there.
    let copy = &img.layers[img.layers.len() - 4];
    for (name, content) in
        [(&b"d/x\xff"[..], "ff\n"), (b"d/x\xfe", "fe\n"), (b"d/d\xfd/in\xfc", "in\n"), (b"d/y\xff", "kept\n")]
    {
        let e = raw(copy, name).unwrap_or_else(|| {
            panic!(
                "{:?} is not in the COPY layer: {:?}",
                OsStr::from_bytes(name),
                copy.entries.iter().map(|e| OsStr::from_bytes(&e.raw_path)).collect::<Vec<_>>()
            )
        });
        assert_eq!(e.data, content.as_bytes(), "{:?}", OsStr::from_bytes(name));
    }
    assert_eq!(raw(copy, b"d/d\xfd").map(|e| e.kind), Some(Kind::Dir));
    assert!(raw(copy, b"d/y\xfe").is_none(), ".dockerignore excludes y\\xfe by its bytes, and only it");
    let lossy = "\u{fffd}".as_bytes();
    assert!(
        !copy.entries.iter().any(|e| e.raw_path.windows(lossy.len()).any(|w| w == lossy)),
        "no name was made lossy"
    );

    // The next RUN sees the names exactly as they were in the context (a
    // shell glob prints them raw; busybox ls would print `?`).
    assert_eq!(img.file("listing"), b"/d/d\xfd\n/d/x\xfe\n/d/x\xff\n/d/y\xff\n");
    assert_eq!(img.file_str("both"), "ff\nfe\n");

    // Names a RUN creates are committed exactly and the next RUN reads them back.
    let made = &img.layers[img.layers.len() - 2];
    assert!(
        raw(made, b"made-\xff").is_some(),
        "{:?}",
        made.entries.iter().map(|e| OsStr::from_bytes(&e.raw_path)).collect::<Vec<_>>()
    );
    assert_eq!(raw(made, b"dir-\xfe/f\xfd").map(|e| e.data.clone()), Some(b"hi\n".to_vec()));
    assert_eq!(img.file_str("readback"), "hi\n");
    assert_eq!(img.file("made"), b"/made-\xff\n/dir-\xfe\n");

    // Unchanged, everything is cached; the ignored file does not count.
    fs::write(src(&sb, b"y\xfe"), "ignored, and changed\n").unwrap();
    let again = sb.try_build(&df, "names", &[]);
    again.ok();
    assert!(!again.stdout.contains("cache miss"), "{}", again.transcript());

    // Changing the content of one of the two names invalidates the COPY, and
    // the log names that file (escaped, not as U+FFFD).
    fs::write(src(&sb, b"x\xfe"), "FE\n").unwrap();
    let changed = sb.try_build(&df, "names", &[]);
    changed.ok();
    assert!(changed.stdout.contains("cache miss: file src/x\\xfe changed (content)"), "{}", changed.transcript());
    assert_eq!(sb.image("names").file_str("both"), "ff\nFE\n");
}

/// With every storage driver, names a RUN creates and removes are committed
/// by their bytes: the whiteout of `x\xff` hides `x\xff` and only it.
#[test]
fn run_commits_and_removes_non_utf8_names_with_every_driver() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "{RUN_BASE}\
RUN mkdir \"/d$(printf '\\375')\" && echo ff > \"/x$(printf '\\377')\" && echo fe > \"/x$(printf '\\376')\" && echo in > \"/d$(printf '\\375')/f$(printf '\\374')\"\n\
RUN rm \"/x$(printf '\\377')\" && rm -r \"/d$(printf '\\375')\"\n\
RUN printf '%s\\n' /x* /d? > /left\n"
    );
    for driver in DRIVERS {
        if driver == "fuse-overlayfs" {
            require_fuse(&sb);
        }
        let (_, img) = sb.build_with(&df, &format!("made:{driver}"), &["--no-cache", "--storage-driver", driver]);
        let made = img.layer_by("echo ff");
        for (name, data) in [(&b"x\xff"[..], "ff\n"), (b"x\xfe", "fe\n"), (b"d\xfd/f\xfc", "in\n")] {
            let e = raw(made, name).unwrap_or_else(|| panic!("{driver}: {:?} not committed", OsStr::from_bytes(name)));
            assert_eq!(e.data, data.as_bytes(), "{driver}");
        }
        let removed = img.layer_by("rm ");
        let mut names: Vec<&[u8]> = removed.entries.iter().map(|e| e.raw_path.as_slice()).collect();
        names.sort();
        assert_eq!(names, vec![&b".wh.d\xfd"[..], b".wh.x\xff"], "{driver}");
        // Applied by the next RUN: only x\xfe is left, under its own name.
        assert_eq!(img.file("left"), b"/x\xfe\n/d?\n", "{driver}");
    }
}
