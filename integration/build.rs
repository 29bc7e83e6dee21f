//! `KILN_SLOW_TESTS=1` at build time turns on the slow tests, which are
//! otherwise `#[ignore]`d through `#[cfg_attr(not(kiln_slow), ignore)]`.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(kiln_slow)");
    println!("cargo::rerun-if-env-changed=KILN_SLOW_TESTS");
    if std::env::var("KILN_SLOW_TESTS").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=kiln_slow");
    }
}
