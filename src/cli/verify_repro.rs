//! `kiln build --verify-reproducible`: the build runs twice, each time into
//! a scratch store of its own (no cache, no layer dir shared), the second
//! from a copy of the context whose mtimes are a day later and at least a
//! second after the first build ended, as a second CI runner would build the
//! same commit. Equal manifest digests mean the image is reproducible; when
//! they differ, the first difference is named: a file of a layer (path and
//! field: type, content, link target, mode, owner, xattr, mtime), else a
//! field of the config or the manifest.
//!
//! Base images come from the caller's store (as `oci:` imports, so every
//! layer is verified again on the way in); nothing is tagged and no output
//! is written.

use std::collections::BTreeMap;
use std::io::Read;

use kiln::progress::{Event, Reporter};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bstr::{BString, ByteSlice};
use serde_json::Value;

use kiln_overlay::reader::{Kind, Reader};

use crate::report::SourceError;
use kiln::context::BuildContext;
use kiln::exec::{self, BuildOptions, BuildOutput, NamedContext};
use kiln::plan::{Base, BuildPlan, CopyFrom, StepKind};
use kiln::store::Store;
use kiln::transport::{self, Transport};

/// How much later the second build's context files are.
const MTIME_SHIFT: i64 = 24 * 60 * 60;

/// Builds `plan` twice and compares; returns the exit code (1 when the two
/// images differ).
/// `text` is the Dockerfile's, for errors that point into it.
/// Each build's steps are shown through `view`, as a normal build's
/// (nothing with `-q`).
pub fn run(
    store: &Store,
    ctx: &BuildContext,
    plan: &BuildPlan,
    opts: &BuildOptions,
    view: &dyn Reporter,
    text: &str,
) -> anyhow::Result<i32> {
    if opts.source_date_epoch.is_none() {
        eprintln!(
            "warning: no --source-date-epoch and no SOURCE_DATE_EPOCH: `created` and file mtimes are the build time, \
             so the two builds cannot give the same image"
        );
    }
    // `kiln prune` and other builds leave the scratch stores alone meanwhile.
    let _builds = store.builds_lock(|| {})?;
    let scratch = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(store.tmp_dir())
        .with_context(|| format!("create a scratch directory in {}", store.tmp_dir().display()))?;
    let result = verify(store, ctx, plan, opts, view, text, scratch.path());
    // Files of subordinate ids and unwritable directories go too.
    if let Err(e) = kiln::store::remove::remove_tree(scratch.path(), &mut Default::default()) {
        log::warn!("{e}");
    }
    result
}

fn verify(
    store: &Store,
    ctx: &BuildContext,
    plan: &BuildPlan,
    opts: &BuildOptions,
    view: &dyn Reporter,
    text: &str,
    scratch: &Path,
) -> anyhow::Result<i32> {
    let mut opts = opts.clone();
    opts.no_cache = true;
    borrow_bases(store, plan, &mut opts);

    // A quiet view shows none of this.
    let say = |line: &str| view.report(Event::Note(line.to_string()));
    say("==> build 1 of 2, in a scratch store");
    let first_store = Store::open(&scratch.join("store-1"))?;
    let first = exec::build(&first_store, ctx, plan, &opts, view).map_err(|e| SourceError::new(e, text))?;

    // The second runner's checkout: the same files, later mtimes.
    let copy = scratch.join("context");
    copy_shifted(ctx.root(), &copy, MTIME_SHIFT)
        .with_context(|| format!("copy the build context to {}", copy.display()))?;
    let second_ctx = ctx.with_root(&copy);
    // Whatever a step reads from the clock (`date`, an mtime it sets
    // itself) shows at least a second later than in the first build.
    let ended = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    std::thread::sleep(
        Duration::from_nanos(u64::from(1_000_000_000 - ended.subsec_nanos())) + Duration::from_millis(50),
    );

    say(&format!("==> build 2 of 2, in another scratch store, context mtimes {MTIME_SHIFT} s later"));
    let second_store = Store::open(&scratch.join("store-2"))?;
    let second = exec::build(&second_store, &second_ctx, plan, &opts, view).map_err(|e| SourceError::new(e, text))?;

    if first.manifest.digest == second.manifest.digest {
        println!("reproducible: both builds gave manifest {} (image {})", first.manifest.digest, first.image_id);
        return Ok(0);
    }
    let difference = first_difference((&first_store, &first), (&second_store, &second))?;
    eprintln!("not reproducible: the builds gave manifests {} and {}", first.manifest.digest, second.manifest.digest);
    eprintln!("first difference: {}", difference.text);
    if let Some(hint) = difference.hint {
        eprintln!("hint: {hint}");
    }
    Ok(1)
}

/// Every image the plan reads that is in the caller's store is taken from
/// there (an `oci:` import of the store, which is an OCI layout), so the
/// scratch stores need no registry and a local-only base still works.
fn borrow_bases(store: &Store, plan: &BuildPlan, opts: &mut BuildOptions) {
    let mut references = Vec::new();
    for &i in &plan.needed {
        let stage = &plan.stages[i];
        if let Base::Image(r) = &stage.base {
            references.push(r.clone());
        }
        for step in &stage.steps {
            if let StepKind::Copy(c) = &step.kind {
                if let Some(CopyFrom::Image(r)) = &c.from {
                    references.push(r.clone());
                }
            }
        }
    }
    for r in references {
        if opts.named_contexts.contains_key(&r) || !matches!(transport::parse_transport(&r), Transport::Store(_)) {
            continue;
        }
        let Ok(Some(desc)) = store.resolve(&r) else { continue };
        // A layout path ends at its first ':'; such a store is read by name from the registry instead.
        let root = store.root().to_string_lossy();
        if let (Some(tag), false) = (desc.ref_name(), root.contains(':')) {
            opts.named_contexts.insert(r, NamedContext::Image(format!("oci:{root}:{tag}")));
        }
    }
}

/// Copies the tree at `from` to `to` (file types, modes, xattrs, hard links
/// within it), every mtime `shift` seconds later than the original's.
fn copy_shifted(from: &Path, to: &Path, shift: i64) -> anyhow::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let mut links: std::collections::HashMap<(u64, u64), std::path::PathBuf> = Default::default();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(from).sort_by_file_name() {
        let entry = entry?;
        let md = entry.metadata()?;
        let rel = entry.path().strip_prefix(from).expect("walkdir stays below its root");
        let dest = to.join(rel);
        let kind = md.file_type();
        let time = TimeSpec::new(md.mtime() + shift, md.mtime_nsec());
        if kind.is_dir() {
            std::fs::create_dir_all(&dest)?;
            dirs.push((dest.clone(), md.permissions(), time));
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else if kind.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    std::fs::hard_link(first, &dest)?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), dest.clone());
            }
            std::fs::copy(entry.path(), &dest)?;
        } else {
            // A socket or fifo: COPY reads neither's content; an empty file keeps its place.
            std::fs::File::create(&dest)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
        if !kind.is_symlink() {
            for name in xattr::list(entry.path()).into_iter().flatten() {
                if let Ok(Some(value)) = xattr::get(entry.path(), &name) {
                    // Names this namespace may not set (trusted.*) stay behind, as a checkout would lose them.
                    let _ = xattr::set(&dest, &name, &value);
                }
            }
        }
        if !kind.is_dir() {
            utimensat(None, &dest, &time, &time, UtimensatFlags::NoFollowSymlink)?;
        }
    }
    // Directories last, deepest first: filling one moves its mtime, and a
    // read-only one gets its mode once its contents are in.
    for (dir, permissions, time) in dirs.into_iter().rev() {
        std::fs::set_permissions(&dir, permissions)?;
        utimensat(None, &dir, &time, &time, UtimensatFlags::NoFollowSymlink)?;
    }
    Ok(())
}

struct Difference {
    text: String,
    hint: Option<String>,
}

/// One file of a layer as the comparison sees it.
#[derive(PartialEq)]
struct FileState {
    kind: Kind,
    content: Option<String>,
    link: BString,
    mode: u32,
    owner: (u64, u64),
    xattrs: BTreeMap<String, Vec<u8>>,
    mtime: (i64, u32),
}

fn first_difference(a: (&Store, &BuildOutput), b: (&Store, &BuildOutput)) -> anyhow::Result<Difference> {
    let (a_layers, b_layers) = (&a.1.layers, &b.1.layers);
    let non_empty: Vec<&str> =
        a.1.config.history.iter().filter(|h| !h.empty_layer).map(|h| h.created_by.as_deref().unwrap_or("")).collect();
    for (i, (la, lb)) in a_layers.iter().zip(b_layers).enumerate() {
        let (da, db) = (&a.1.config.rootfs.diff_ids[i], &b.1.config.rootfs.diff_ids[i]);
        if da == db {
            continue;
        }
        let fa = layer_files(a.0, &la.digest)?;
        let fb = layer_files(b.0, &lb.digest)?;
        let step = non_empty.get(i).map(|s| format!(" ({s})")).unwrap_or_default();
        let what = format!("layer {} of {}{}", i + 1, a_layers.len(), step);
        return Ok(compare_files(&what, &fa, &fb).unwrap_or_else(|| Difference {
            text: format!("{what}: the same files, in another order or another tar encoding ({da} vs {db})"),
            hint: None,
        }));
    }
    if a_layers.len() != b_layers.len() {
        return Ok(Difference {
            text: format!("the images have {} and {} layers", a_layers.len(), b_layers.len()),
            hint: None,
        });
    }
    let json = |store: &Store, digest: &str| -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&store.read_blob(digest)?)?)
    };
    let (ca, cb) = (json(a.0, &a.1.image_id)?, json(b.0, &b.1.image_id)?);
    if let Some((path, va, vb)) = first_json_difference("", &ca, &cb) {
        let timestamp = path == "created" || path.ends_with(".created");
        return Ok(Difference {
            text: format!("config field {path}: {va} vs {vb}"),
            hint: timestamp
                .then(|| "set --source-date-epoch N (or SOURCE_DATE_EPOCH): `created` is then N".to_string()),
        });
    }
    let (ma, mb) = (json(a.0, &a.1.manifest.digest)?, json(b.0, &b.1.manifest.digest)?);
    let text = match first_json_difference("", &ma, &mb) {
        Some((path, va, vb)) => format!("manifest field {path}: {va} vs {vb}"),
        None => "the manifests differ only in their encoding".to_string(),
    };
    Ok(Difference { text, hint: None })
}

/// The files of a layer blob by path, each file's content as a digest.
fn layer_files(store: &Store, digest: &str) -> anyhow::Result<BTreeMap<BString, FileState>> {
    let blob = store.open_blob(digest)?;
    let (_, plain) = kiln_overlay::compress::decompress(blob)?;
    let mut reader = Reader::new(plain);
    let mut files = BTreeMap::new();
    while let Some(entry) = reader.next_entry()? {
        let content = if entry.kind == Kind::File {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            let mut data = reader.data();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = data.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Some(format!("sha256:{}", hex::encode(hasher.finalize())))
        } else {
            let mut rest = Vec::new();
            reader.data().read_to_end(&mut rest)?;
            None
        };
        let path = BString::from(kiln_overlay::reader::components(&entry.name).join(&b'/'));
        files.insert(
            path,
            FileState {
                kind: entry.kind,
                content,
                link: entry.link.clone().into(),
                mode: entry.mode,
                owner: (entry.uid, entry.gid),
                xattrs: entry.xattrs.clone(),
                mtime: (entry.mtime, entry.mtime_nsec),
            },
        );
    }
    Ok(files)
}

/// The first path (in byte order) whose entry differs, with the first field
/// that differs.
fn compare_files(what: &str, a: &BTreeMap<BString, FileState>, b: &BTreeMap<BString, FileState>) -> Option<Difference> {
    let paths: std::collections::BTreeSet<&BString> = a.keys().chain(b.keys()).collect();
    let differing: Vec<&BString> = paths.into_iter().filter(|p| a.get(*p) != b.get(*p)).collect();
    let path = *differing.first()?;
    let more = match differing.len() - 1 {
        0 => String::new(),
        n => format!(" ({n} more files of this layer differ)"),
    };
    let shown = format!("/{}", path.to_str_lossy());
    let (fa, fb) = match (a.get(path), b.get(path)) {
        (Some(fa), Some(fb)) => (fa, fb),
        (Some(_), None) => {
            return Some(Difference {
                text: format!("{what}: {shown} is only in the first build's layer{more}"),
                hint: None,
            })
        }
        _ => {
            return Some(Difference {
                text: format!("{what}: {shown} is only in the second build's layer{more}"),
                hint: None,
            })
        }
    };
    let (field, detail, hint) = if fa.kind != fb.kind {
        ("type", format!("{:?} vs {:?}", fa.kind, fb.kind), None)
    } else if fa.content != fb.content {
        let hint = "a step wrote something that changes from run to run (a date, a random value, a download); \
                    pin it or derive it from SOURCE_DATE_EPOCH (`ARG SOURCE_DATE_EPOCH` makes it visible to RUN)";
        (
            "content",
            format!("{} vs {}", fa.content.as_deref().unwrap_or("-"), fb.content.as_deref().unwrap_or("-")),
            Some(hint.to_string()),
        )
    } else if fa.link != fb.link {
        ("link target", format!("{:?} vs {:?}", fa.link, fb.link), None)
    } else if fa.mode != fb.mode {
        ("mode", format!("{:o} vs {:o}", fa.mode, fb.mode), None)
    } else if fa.owner != fb.owner {
        ("owner", format!("{}:{} vs {}:{}", fa.owner.0, fa.owner.1, fb.owner.0, fb.owner.1), None)
    } else if fa.xattrs != fb.xattrs {
        let name = fa
            .xattrs
            .keys()
            .chain(fb.xattrs.keys())
            .find(|k| fa.xattrs.get(*k) != fb.xattrs.get(*k))
            .cloned()
            .unwrap_or_default();
        ("xattr", name, None)
    } else {
        let hint = "set --source-date-epoch N (or SOURCE_DATE_EPOCH): later mtimes are then clamped to N";
        ("mtime", format!("{} vs {}", fa.mtime.0, fb.mtime.0), Some(hint.to_string()))
    };
    Some(Difference { text: format!("{what}: {shown}: {field} differs ({detail}){more}"), hint })
}

/// The first JSON path where `a` and `b` differ, with both values (compact).
fn first_json_difference(path: &str, a: &Value, b: &Value) -> Option<(String, String, String)> {
    if a == b {
        return None;
    }
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for k in keys {
                let (va, vb) = (ma.get(k).unwrap_or(&Value::Null), mb.get(k).unwrap_or(&Value::Null));
                if let Some(found) = first_json_difference(&join(k), va, vb) {
                    return Some(found);
                }
            }
            None
        }
        (Value::Array(va), Value::Array(vb)) if va.len() == vb.len() => {
            va.iter().zip(vb).enumerate().find_map(|(i, (x, y))| first_json_difference(&format!("{path}[{i}]"), x, y))
        }
        _ => Some((path.to_string(), a.to_string(), b.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str, mtime: i64) -> FileState {
        FileState {
            kind: Kind::File,
            content: Some(content.into()),
            link: BString::default(),
            mode: 0o644,
            owner: (0, 0),
            xattrs: BTreeMap::new(),
            mtime: (mtime, 0),
        }
    }

    #[test]
    fn the_first_differing_path_and_field_are_named() {
        let a: BTreeMap<BString, FileState> =
            [("a".into(), file("x", 1)), ("f".into(), file("one", 1)), ("z".into(), file("x", 1))]
                .into_iter()
                .collect();
        let mut b: BTreeMap<BString, FileState> =
            [("a".into(), file("x", 1)), ("f".into(), file("two", 1)), ("z".into(), file("x", 2))]
                .into_iter()
                .collect();
        let d = compare_files("layer 2 of 3", &a, &b).expect("a difference");
        assert!(d.text.starts_with("layer 2 of 3: /f: content differs (one vs two) (1 more files"), "{}", d.text);
        b.get_mut(&BString::from("f")).unwrap().content = Some("one".into());
        let d = compare_files("l", &a, &b).expect("a difference");
        assert!(d.text.starts_with("l: /z: mtime differs (1 vs 2)"), "{}", d.text);
        b.get_mut(&BString::from("z")).unwrap().mtime = (1, 0);
        assert!(compare_files("l", &a, &b).is_none());
        b.get_mut(&BString::from("a")).unwrap().owner = (0, 7);
        assert!(compare_files("l", &a, &b).unwrap().text.contains("/a: owner differs (0:0 vs 0:7)"));
        b.remove(&BString::from("a"));
        assert!(compare_files("l", &a, &b).unwrap().text.contains("/a is only in the first build's layer"));
    }

    #[test]
    fn json_differences_name_the_field() {
        let a = serde_json::json!({"created": "1", "history": [{"created": "1"}, {"created": "2"}], "config": {"Env": ["A=1"]}});
        let mut b = a.clone();
        b["history"][1]["created"] = "3".into();
        assert_eq!(
            first_json_difference("", &a, &b),
            Some(("history[1].created".into(), "\"2\"".into(), "\"3\"".into()))
        );
        let mut c = a.clone();
        c["config"]["Env"] = serde_json::json!(["A=1", "B=2"]);
        assert_eq!(first_json_difference("", &a, &c).unwrap().0, "config.Env");
        assert_eq!(first_json_difference("", &a, &a), None);
    }

    #[test]
    fn the_copy_keeps_everything_but_mtimes() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let dest = to.path().join("ctx");
        std::fs::create_dir(from.path().join("d")).unwrap();
        std::fs::write(from.path().join("d/f"), "f").unwrap();
        std::fs::set_permissions(from.path().join("d/f"), std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::hard_link(from.path().join("d/f"), from.path().join("h")).unwrap();
        std::os::unix::fs::symlink("d/f", from.path().join("l")).unwrap();
        copy_shifted(from.path(), &dest, 100).unwrap();
        let (src, out) =
            (std::fs::metadata(from.path().join("d/f")).unwrap(), std::fs::metadata(dest.join("d/f")).unwrap());
        assert_eq!(std::fs::read(dest.join("d/f")).unwrap(), b"f");
        assert_eq!(out.mode() & 0o7777, 0o751);
        assert_eq!(out.mtime(), src.mtime() + 100);
        assert_eq!(out.ino(), std::fs::metadata(dest.join("h")).unwrap().ino(), "hard links stay linked");
        assert_eq!(std::fs::read_link(dest.join("l")).unwrap(), Path::new("d/f"));
        let dir = std::fs::metadata(dest.join("d")).unwrap();
        assert_eq!(dir.mtime(), std::fs::metadata(from.path().join("d")).unwrap().mtime() + 100);
    }
}
