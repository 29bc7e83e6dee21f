//! `--retry N` / `--retry-delay D` on pull, push and build (issue 14): a
//! registry request that fails in a way that may pass (503, 429 with
//! Retry-After, a refused connection) is tried again, with a warning naming
//! the attempt; a 404 is not. A small Python proxy in front of a real
//! docker-registry fails the requests the test chooses.

use crate::fault_util;
use crate::proxy::Proxy;

use std::time::{Duration, Instant};

use kiln_integration::Sandbox;

fn attempt_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("retrying in")).collect()
}

#[test]
fn transient_registry_failures_are_retried_and_4xx_are_not() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "retried\n");
    sb.dockerfile("FROM scratch\nCOPY f.txt /f.txt\n");
    let ctx = sb.ctx();
    sb.kiln(&["build", "-q", "-t", "app:1", ctx.to_str().unwrap()]).ok();
    let reg = fault_util::Registry::start();
    sb.kiln(&["push", "-q", "app:1", &format!("{}/app:1", reg.host())]).ok();

    // A pull whose manifest GETs answer 503 twice (Retry-After: 1): it waits
    // as asked, says which attempt comes, and gets the image.
    let proxy = Proxy::start(&sb, &reg.host(), r"^GET /v2/app/manifests/", 2, 503, "1", 0.0);
    proxy.wait_listening();
    let started = Instant::now();
    let out = sb.kiln(&["pull", &format!("{}/app:1", proxy.host())]);
    out.ok();
    let lines = attempt_lines(&out.stderr);
    assert_eq!(lines.len(), 2, "{}", out.transcript());
    assert!(lines[0].contains("503") && lines[0].contains("retrying in 1.0s (attempt 2 of 4)"), "{}", out.transcript());
    assert!(lines[1].contains("(attempt 3 of 4)"), "{}", out.transcript());
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After: 1 was honoured twice");
    let log = proxy.log();
    assert_eq!(log.iter().filter(|l| l.starts_with("FAIL")).count(), 2, "{log:?}");
    let pulled = sb.kiln(&["inspect", "--format", "{{.Id}}", &format!("{}/app:1", proxy.host())]).ok().stdout.clone();
    assert_eq!(pulled, sb.kiln(&["inspect", "--format", "{{.Id}}", "app:1"]).ok().stdout);
    drop(proxy);

    // --retry 0: the first 503 is the answer.
    let proxy = Proxy::start(&sb, &reg.host(), r"^GET /v2/app/manifests/", 1, 503, "", 0.0);
    proxy.wait_listening();
    let out = sb.kiln(&["pull", "--retry", "0", &format!("{}/app:1", proxy.host())]);
    out.fails_with(1).stderr_has(&["503"]);
    assert!(attempt_lines(&out.stderr).is_empty(), "{}", out.transcript());
    drop(proxy);

    // A 404 (no such tag) is not retried: one manifest request.
    let proxy = Proxy::start(&sb, &reg.host(), "^$", 0, 503, "", 0.0);
    proxy.wait_listening();
    let out = sb.kiln(&["pull", &format!("{}/app:missing", proxy.host())]);
    assert!(!out.success(), "{}", out.transcript());
    assert!(attempt_lines(&out.stderr).is_empty(), "{}", out.transcript());
    let manifest_requests = proxy.log().iter().filter(|l| l.contains("/manifests/missing")).count();
    assert_eq!(manifest_requests, 1, "404 is final");
    drop(proxy);

    // A push whose manifest PUT answers 429 (with --retry-delay for the
    // wait the registry does not give) goes through on the second try.
    let proxy = Proxy::start(&sb, &reg.host(), r"^PUT /v2/pushed/manifests/", 1, 429, "", 0.0);
    proxy.wait_listening();
    let out = sb.kiln(&["push", "--retry-delay", "300ms", "app:1", &format!("{}/pushed:1", proxy.host())]);
    out.ok();
    let lines = attempt_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", out.transcript());
    assert!(lines[0].contains("429") && lines[0].contains("retrying in 0.3s (attempt 2 of 4)"), "{}", out.transcript());
    let pushed = sb.tool("skopeo", &["inspect", "--tls-verify=false", &format!("docker://{}/pushed:1", reg.host())]);
    pushed.ok();
    drop(proxy);

    // A registry that is not listening yet (refused), with a build's FROM:
    // retried until it is.
    let proxy = Proxy::start(&sb, &reg.host(), "^$", 0, 503, "", 1.0);
    sb.dockerfile(&format!("FROM {}/app:1\nCOPY f.txt /again.txt\n", proxy.host()));
    let out = sb.kiln(&["build", "--retry", "8", "--retry-delay", "400ms", "-t", "late", ctx.to_str().unwrap()]);
    out.ok();
    let lines = attempt_lines(&out.stderr);
    assert!(
        !lines.is_empty() && lines[0].contains("refused") && lines[0].contains("(attempt 2 of 9)"),
        "{}",
        out.transcript()
    );
    assert_eq!(sb.image("late").file_str("again.txt"), "retried\n");
}
