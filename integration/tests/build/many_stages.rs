//! A Dockerfile of thousands of stages builds in linear time and memory:
//! scheduling used to scan every stage after each finished one (2,000
//! chained stages: 151 s), and every finished stage's config stayed in
//! memory (10,000 chained stages: 16 GB). Run as the unprivileged test user
//! when the tests run as root.

use std::time::{Duration, Instant};

use kiln_integration::Sandbox;

#[test]
fn a_chain_of_2000_stages_builds() {
    let sb = Sandbox::new();
    sb.write("ctx/a.txt", "a\n");
    let mut dockerfile = String::from("FROM scratch AS s0\nCOPY a.txt /a\n");
    for i in 0..2000 {
        dockerfile.push_str(&format!("FROM s{i} AS s{}\nLABEL l{i}=v\n", i + 1));
    }
    // A stage read as a base and by COPY --from at once, and by a sibling.
    dockerfile.push_str("FROM s2000 AS last\nCOPY --from=s2000 /a /b\nCOPY --from=s1999 /a /c\n");
    sb.dockerfile(&dockerfile);
    let ctx = sb.ctx();
    let started = Instant::now();
    sb.kiln(&["build", "-q", "-t", "chain", ctx.to_str().unwrap()]).ok();
    // Loose: it takes a few seconds in a debug build; the cubic scheduler
    // took minutes.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "2,000 stages took {took:?}");
    let image = sb.image("chain");
    assert_eq!(image.runtime()["Labels"].as_object().unwrap().len(), 2000);
    let fs = image.fs();
    assert!(
        fs.contains_key("a") && fs.contains_key("b") && fs.contains_key("c"),
        "{:?}",
        fs.keys().collect::<Vec<_>>()
    );
}
