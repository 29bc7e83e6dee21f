//! `COPY --from` rules from BuildKit's dockerfile frontend tests, checked on
//! the built image: owners the source stage gave are kept (with and without
//! subordinate ids), and symlinks on the source path resolve inside the
//! source stage's root.

use kiln_integration::*;

use crate::copy_rules::entry;

/// testCopyChownExistingDir: files copied from a stage keep their owners;
/// the destination made for a directory is root's; --chown gives everything
/// copied (and made) its owner; an existing destination keeps its owner.
/// The classic builder made files from a stage root's.
#[test]
fn copy_from_a_stage_keeps_owners_as_buildkit_does_not_the_classic_builder() {
    copy_from_keeps_owners(&Sandbox::new());
}

/// The same where kiln has no subordinate ids: the unpacked stage records
/// owners it cannot give in an xattr, which COPY --from reads back.
#[test]
fn copy_from_a_stage_keeps_owners_in_a_single_id_namespace_too() {
    let Some(sb) = Sandbox::without_subids() else {
        eprintln!("skipped: the current user has a subordinate id range and cannot be switched");
        return;
    };
    copy_from_keeps_owners(&sb);
}

fn copy_from_keeps_owners(sb: &Sandbox) {
    sb.write("ctx/file", "f\n");
    sb.write("ctx/dir/subdir/nestedfile", "n\n");
    sb.mkdir("ctx/top/dir");
    sb.mkdir("ctx/existing/existingsubdir");
    sb.write("ctx/existing/existingfile", "e\n");
    let img = sb.build(
        "FROM scratch AS source
COPY --chown=100:200 file /file
COPY --chown=101:201 dir/subdir /dir/subdir/
COPY --chown=102:202 dir/subdir/nestedfile /dir/subdir/
# A directory inside a copied tree takes the source's metadata: /dir becomes 100:200.
COPY --chown=100:200 top/ /

FROM scratch AS test_base
COPY --chown=500:600 existing/existingsubdir /existingdir/
COPY --chown=501:601 existing /existingdir/

FROM test_base AS copy_from
COPY --from=source /file .
COPY --from=source /dir /dir
COPY --from=source /dir/. /existingdir

FROM test_base
COPY --from=copy_from / /plain/
COPY --from=source --chown=300:400 /file .
COPY --from=source --chown=300:400 /dir /dir
COPY --from=source --chown=300:400 /dir/. /existingdir
",
        "owners",
    );
    let owner = |p: &str| {
        let e = entry(&img, p);
        (e.uid, e.gid)
    };
    // Without --chown (the copy_from stage, copied whole under /plain).
    assert_eq!(owner("plain/file"), (100, 200));
    assert_eq!(owner("plain/dir"), (0, 0), "the destination made for the directory is root's");
    assert_eq!(entry(&img, "plain/dir").mode, 0o755);
    assert_eq!(owner("plain/dir/subdir"), (101, 201));
    assert_eq!(owner("plain/dir/subdir/nestedfile"), (102, 202));
    assert_eq!(owner("plain/existingdir"), (500, 600), "an existing directory keeps its owner");
    assert_eq!(owner("plain/existingdir/existingsubdir"), (501, 601));
    assert_eq!(owner("plain/existingdir/existingfile"), (501, 601));
    assert_eq!(owner("plain/existingdir/subdir"), (101, 201));
    assert_eq!(owner("plain/existingdir/subdir/nestedfile"), (102, 202));
    // With --chown.
    assert_eq!(owner("file"), (300, 400));
    assert_eq!(owner("dir"), (300, 400));
    assert_eq!(owner("dir/subdir"), (300, 400));
    assert_eq!(owner("dir/subdir/nestedfile"), (300, 400));
    assert_eq!(owner("existingdir"), (500, 600));
    assert_eq!(owner("existingdir/existingsubdir"), (501, 601));
    assert_eq!(owner("existingdir/existingfile"), (501, 601));
    assert_eq!(owner("existingdir/subdir"), (300, 400));
    assert_eq!(owner("existingdir/subdir/nestedfile"), (300, 400));
}

/// testCopyThroughSymlinkMultiStage: in a `--from` stage, symlinks on the
/// source path (absolute ones too) resolve inside that stage's root, and a
/// link named as the source is copied as the file it points to.
#[test]
fn copy_from_a_stage_follows_its_symlinks_inside_its_root() {
    let sb = Sandbox::new();
    sb.write("ctx/build/out/sub/foo", "data");
    sb.symlink("/out/sub", "ctx/build/sub");
    sb.symlink("out/sub", "ctx/build/sub2");
    sb.symlink("/out/sub/foo", "ctx/build/filelink");
    let img = sb.build(
        "FROM scratch AS build
COPY build/ /
FROM scratch
COPY --from=build /sub/foo .
COPY --from=build /sub2/foo bar
COPY --from=build /filelink /followed
",
        "through",
    );
    assert_eq!(img.file_str("foo"), "data");
    assert_eq!(img.file_str("bar"), "data");
    assert_eq!(entry(&img, "followed").kind, Kind::File);
    assert_eq!(img.file_str("followed"), "data");
}
