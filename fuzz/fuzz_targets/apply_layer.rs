//! Any bytes, applied as a layer (whiteouts as overlay markers and as
//! deletions) or as a plain archive, must leave everything outside the root
//! untouched: the directory next to it, with its victim file, and the
//! directory above. Errors are fine; escapes and panics are not.
//!
//! The root is always `/tmp/kiln-fuzz-apply/root`, so seeds can hold
//! absolute symlinks to `/tmp/kiln-fuzz-apply/outside`; run one worker.
#![no_main]

use std::fs;
use std::path::Path;

use kiln_overlay::whiteout::WhiteoutFormat;
use kiln_overlay::{apply_tar, ApplyOptions};
use libfuzzer_sys::fuzz_target;

const BASE: &str = "/tmp/kiln-fuzz-apply";

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fuzz_target!(|data: &[u8]| {
    let base = Path::new(BASE);
    let root = base.join("root");
    let outside = base.join("outside");
    let layer = ApplyOptions { whiteouts: WhiteoutFormat::Overlay, ..ApplyOptions::default() };
    for opts in [ApplyOptions::rootfs(), layer, ApplyOptions::plain()] {
        let _ = fs::remove_dir_all(base);
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(outside.join("dir")).unwrap();
        fs::write(outside.join("victim"), b"safe").unwrap();
        fs::write(outside.join("dir/inner"), b"safe").unwrap();

        let _ = apply_tar(data, &root, &opts);

        assert_eq!(listing(base), ["outside", "root"], "something was created next to the root");
        assert_eq!(listing(&outside), ["dir", "victim"], "the directory next to the root changed");
        assert_eq!(listing(&outside.join("dir")), ["inner"]);
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"safe");
        assert_eq!(fs::read(outside.join("dir/inner")).unwrap(), b"safe");
        let md = fs::symlink_metadata(outside.join("victim")).unwrap();
        assert!(md.file_type().is_file(), "the victim was replaced");
    }
    let _ = fs::remove_dir_all(base);
});
