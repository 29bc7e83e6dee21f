//! The id a build prints for each step (`--> <id>`, `--> Using cache <id>`)
//! is an image id that `kiln run`, `kiln inspect` and `FROM` accept, and the
//! same whether the step ran or came from the cache (issue 14).

use kiln_integration::{Output, Sandbox, RUN_BASE};

/// The step ids a build printed, in order: `--> <id> (…)` of a step that
/// ran, `--> Using cache <id>` of a cached one.
fn step_ids(out: &Output) -> Vec<String> {
    let mut ids = Vec::new();
    for line in out.stdout.lines() {
        let Some(rest) = line.strip_prefix("--> ") else { continue };
        if rest.contains("(new layers") {
            continue;
        }
        let rest = rest.strip_prefix("Using cache ").unwrap_or(rest);
        let word = rest.split_whitespace().next().unwrap_or_default();
        if word.len() == 12
            && word.bytes().all(|b| b.is_ascii_hexdigit())
            && rest.contains('(') != line.contains("Using cache")
        {
            ids.push(word.to_string());
        }
    }
    ids
}

fn build(sb: &Sandbox, tag: &str) -> Output {
    let ctx = sb.ctx();
    let out = sb.kiln(&["build", "-t", tag, ctx.to_str().unwrap()]);
    out.ok();
    out
}

#[test]
fn step_ids_are_images_and_stay_the_same_when_cached() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/a.txt", "a\n");
    sb.write("ctx/b.txt", "b\n");
    sb.dockerfile(&format!(
        "{RUN_BASE}COPY a.txt /a\nRUN echo ran > /r\nENV X=1\nWORKDIR /w\nLABEL l=v\nCOPY b.txt /b\n"
    ));
    let cold = build(&sb, "steps");
    let ids = step_ids(&cold);
    // busybox COPY, two RUNs, COPY a, RUN, WORKDIR, COPY b: seven layer steps.
    assert_eq!(ids.len(), 7, "{}", cold.transcript());
    let cached = build(&sb, "steps");
    assert_eq!(cached.stdout.matches("--> Using cache").count(), 9, "{}", cached.transcript());
    assert_eq!(step_ids(&cached), ids, "a cached step prints the id it printed when it ran\n{}", cached.transcript());

    // The last step's image is the image built.
    let image = sb.image("steps");
    let last = ids.last().unwrap();
    assert!(image.id().trim_start_matches("sha256:").starts_with(last.as_str()), "{} vs {last}", image.id());
    assert!(cold.last_line().contains(last.as_str()), "{}", cold.transcript());

    // history names the step images, as docker's does its intermediate
    // images; config-only steps have none.
    let history = sb.kiln(&["history", "-q", "steps"]);
    let listed: Vec<&str> = history.ok().stdout.lines().collect();
    let m = "<missing>";
    let i = |n: usize| ids[n].as_str();
    assert_eq!(listed, [i(6), m, i(5), m, i(4), i(3), i(2), i(1), i(0)], "{}", history.transcript());

    // Each id is an image: inspect, run and FROM take it.
    let (copy_a, ran) = (&ids[3], &ids[4]);
    let inspected = sb.kiln(&["inspect", "--format", "{{.Id}}", ran]);
    inspected.ok();
    assert!(
        inspected.stdout.trim().trim_start_matches("sha256:").starts_with(ran.as_str()),
        "{}",
        inspected.transcript()
    );
    let out = sb.kiln(&["run", "--rm", ran, "/bin/cat", "/r"]);
    out.ok();
    assert_eq!(out.stdout, "ran\n", "{}", out.transcript());
    let before = sb.kiln(&["run", "--rm", copy_a, "/bin/sh", "-c", "cat /a; test -e /r || echo no-r"]);
    before.ok();
    assert_eq!(before.stdout, "a\nno-r\n", "{}", before.transcript());
    let history = sb.kiln(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", copy_a]);
    history.ok();
    let steps: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(steps.len(), 4, "busybox COPY, two RUNs, COPY a\n{}", history.transcript());
    assert!(steps[0].contains("COPY a.txt /a"), "{}", history.transcript());

    sb.write("child/Dockerfile", format!("FROM {copy_a}\nRUN cat /a > /from-step\n"));
    let child_ctx = sb.path("child");
    let child = sb.kiln(&["build", "-t", "child", child_ctx.to_str().unwrap()]);
    child.ok();
    assert!(
        child.stdout.contains(&format!("--> using {copy_a} {copy_a}")),
        "FROM names the image id\n{}",
        child.transcript()
    );
    let child = sb.image("child");
    assert_eq!(child.file_str("from-step"), "a\n");
    assert!(!child.fs().contains_key("r"), "the step's image, not the final one");

    // A prune drops the step images (they are build cache); the cached
    // build writes them again, under the same ids.
    sb.kiln(&["prune", "-f"]).ok();
    assert!(!sb.kiln(&["inspect", ran]).success(), "pruned step images are gone");
    let again = build(&sb, "steps");
    assert_eq!(step_ids(&again), ids, "{}", again.transcript());
    sb.kiln(&["run", "--rm", ran, "/bin/cat", "/r"]).ok();
    // The image built is the last step's image: rmi needs no -f for it,
    // and the earlier steps' images stay (build cache) until a prune.
    sb.kiln(&["rmi", "steps"]).ok();
    assert!(!sb.kiln(&["inspect", last]).success(), "the removed image is gone");
    sb.kiln(&["run", "--rm", ran, "/bin/cat", "/r"]).ok();
    let check = sb.kiln(&["system", "check"]);
    check.ok();
    assert!(check.stdout.contains("store is consistent"), "{}", check.transcript());
}
