//! One store, many kilns at once: 4 builds, 2 pulls from a local registry
//! and a `system prune -f` started while the builds are mid-way. Every
//! command succeeds, every image holds exactly what it should (file counts
//! and contents, read from the store and seen by a RUN step), and nothing a
//! running build used was deleted under it.

use crate::fault_util;

use std::time::Duration;

use fault_util::Registry;
use kiln_integration::{read_image, Image, Kind, Sandbox, RUN_BASE};

const FILES: usize = 500;

fn step(dir: &str, tag: &str) -> String {
    format!(
        "RUN mkdir /{dir} && cd /{dir} && i=0 && while [ $i -lt {FILES} ]; do echo {tag}$i > f$i; i=$((i+1)); done\n"
    )
}

fn files(img: &Image, dir: &str) -> Vec<(String, Vec<u8>)> {
    let prefix = format!("{dir}/");
    img.fs()
        .into_iter()
        .filter(|(p, e)| p.starts_with(&prefix) && e.kind == Kind::File)
        .map(|(p, e)| (p, e.data))
        .collect()
}

/// Each of the `FILES` files of `dir` holds `tag` and its number.
#[track_caller]
fn assert_files(img: &Image, dir: &str, tag: &str) {
    let got = files(img, dir);
    assert_eq!(got.len(), FILES, "/{dir} of the {tag} image");
    for (p, data) in got {
        let n = p.rsplit_once("/f").unwrap().1;
        assert_eq!(String::from_utf8_lossy(&data), format!("{tag}{n}\n"), "{p} of the {tag} image");
    }
}

#[test]
fn builds_pulls_and_a_prune_at_once_on_one_store() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let reg = Registry::start();
    let ctx = sb.ctx();
    let ctx_s = ctx.to_str().unwrap().to_string();
    let file = |name: &str| format!("{ctx_s}/{name}.Dockerfile");

    // Two images in the registry, made in another store.
    let other = sb.path("other");
    let other_s = other.to_str().unwrap().to_string();
    sb.write("ctx/base.Dockerfile", RUN_BASE);
    let mut pulled = Vec::new();
    for p in ["pa", "pb"] {
        sb.write(&format!("ctx/{p}.Dockerfile"), format!("FROM base\n{}", step("q", p)));
        sb.kiln_raw(&["--root", &other_s, "build", "-f", &file("base"), "-t", "base", &ctx_s], None, &[]).ok();
        sb.kiln_raw(&["--root", &other_s, "build", "-f", &file(p), "-t", p, &ctx_s], None, &[]).ok();
        let dest = format!("{}/{p}:1", reg.host());
        sb.kiln_raw(&["--root", &other_s, "push", p, &dest], None, &[]).ok();
        pulled.push((p, dest));
    }

    // The shared store: a base, an image that is then untagged and cache for prune to find.
    sb.build(RUN_BASE, "base");
    sb.build(&format!("FROM base\n{}", step("old", "old")), "old");
    sb.kiln(&["rmi", "-f", "old"]).ok();

    // Builds with a pause between steps: prune starts while they are mid-way,
    // with layers committed that no tag references yet.
    for b in 0..4 {
        sb.write(&format!("ctx/b{b}.txt"), format!("b{b}\n"));
        sb.write(
            &format!("ctx/b{b}.Dockerfile"),
            format!(
                "FROM base\nCOPY b{b}.txt /b.txt\n{}RUN sleep 2\n{}RUN echo $(find /d -type f | wc -l) $(find /e -type f | wc -l) > /counts\n",
                step("d", &format!("b{b}d")),
                step("e", &format!("b{b}e")),
            ),
        );
    }
    let mut running = Vec::new();
    for b in 0..4 {
        let f = file(&format!("b{b}"));
        running.push((
            format!("build b{b}"),
            sb.spawn_kiln(&["build", "-f", &f, "-t", &format!("b{b}"), &ctx_s], &format!("b{b}")),
        ));
    }
    for (p, dest) in &pulled {
        running.push((format!("pull {p}"), sb.spawn_kiln(&["pull", dest], &format!("pull-{p}"))));
    }
    std::thread::sleep(Duration::from_millis(1500));
    running.push(("prune".into(), sb.spawn_kiln(&["system", "prune", "-f"], "prune")));
    for (what, mut child) in running {
        let status = child.wait().unwrap();
        let name = what.replace("build ", "").replace(' ', "-");
        let log = format!(
            "{}{}",
            std::fs::read_to_string(sb.path(&format!("{name}.out"))).unwrap_or_default(),
            std::fs::read_to_string(sb.path(&format!("{name}.err"))).unwrap_or_default()
        );
        assert!(status.success(), "{what} failed ({status}):\n{log}");
    }

    for b in 0..4 {
        let img = sb.image(&format!("b{b}"));
        assert_eq!(img.file_str("b.txt"), format!("b{b}\n"));
        assert_eq!(img.file_str("counts").trim(), format!("{FILES} {FILES}"), "RUN of b{b} saw every file");
        assert_files(&img, "d", &format!("b{b}d"));
        assert_files(&img, "e", &format!("b{b}e"));
        let ran = sb.kiln(&["run", &format!("b{b}"), "cat", "/d/f7", "/b.txt"]);
        ran.ok();
        assert_eq!(ran.stdout, format!("b{b}d7\nb{b}\n"), "{}", ran.transcript());
    }
    for (p, dest) in &pulled {
        let img = read_image(&sb.store(), dest);
        assert_files(&img, "q", p);
        // A build FROM it stacks the layer dirs: a RUN sees every file.
        let (_, checked) =
            sb.build_with(&format!("FROM {dest}\nRUN find /q -type f | wc -l > /n\n"), &format!("check-{p}"), &[]);
        assert_eq!(checked.file_str("n").trim(), FILES.to_string());
    }
    sb.kiln(&["images"]).ok();
    let check = sb.kiln(&["system", "check"]);
    assert!(check.success(), "the store is not clean after the concurrent run:\n{}", check.transcript());
}
