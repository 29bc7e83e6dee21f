//! The shared build cache (`--cache-to`/`--cache-from type=registry`)
//! through registries that authenticate: TLS with a private CA and htpasswd
//! basic auth, and bearer tokens from a token server. The cache goes where
//! the image would, with the same credentials (`kiln login`, `--authfile`).

use crate::registry_util;

use std::path::Path;
use std::process::Output;

use registry_util::*;

/// Builds the context at `ctx` into the store at `root`.
fn build(root: &Path, ctx: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["build", "-t", "app:1"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    kiln(root, &args)
}

fn context(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("x"), noise(3000, 1)).unwrap();
    std::fs::write(dir.join("y"), noise(3000, 2)).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY x /x\nCOPY y /y\nCMD [\"/x\"]\n").unwrap();
}

#[test]
fn cache_through_tls_and_basic_auth() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let secure = SecureRegistry::start(tmp.path());
    let reg = &secure.registry;
    let ca_arg = secure.ca_dir.to_str().unwrap();
    let authfile = &secure.authfile;
    let auth_arg = authfile.to_str().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let cache = format!("{}/cache/app:buildcache", reg.host());
    let to = format!("type=registry,ref={cache},mode=max");

    // No credentials: the export is refused with the registry's 401.
    let a = tmp.path().join("a");
    let err = failed(&build(&a, &ctx, &["--cert-dir", ca_arg, "--cache-to", &to]));
    assert!(err.contains("401") && err.contains(&cache), "{err}");
    // `ignore-error=true` makes that a warning, as in BuildKit.
    ok(&build(&a, &ctx, &["--cert-dir", ca_arg, "--cache-to", &format!("{to},ignore-error=true")]));

    ok(&kiln(&a, &["login", "--cert-dir", ca_arg, "--authfile", auth_arg, "-u", "alice", "-p", "s3cret", &reg.host()]));
    let out = ok(&build(&a, &ctx, &["--cert-dir", ca_arg, "--authfile", auth_arg, "--cache-to", &to]));
    assert!(out.contains(&format!("--> cache exported to {cache}")), "{out}");
    let id = last_line(&out);

    // Importing needs the credentials too; with them every step hits.
    let b = tmp.path().join("b");
    let err = failed(&build(&b, &ctx, &["--cert-dir", ca_arg, "--cache-from", &cache]));
    assert!(err.contains("401"), "{err}");
    let out = ok(&build(&b, &ctx, &["--cert-dir", ca_arg, "--authfile", auth_arg, "--cache-from", &cache]));
    assert_eq!(out.matches("--> Using cache (registry)").count(), 3, "{out}");
    assert_eq!(last_line(&out), id, "the same image id");
}

#[test]
fn cache_through_bearer_tokens() {
    if !tools_present() {
        return;
    }
    let tokens = TokenServer::start("bob", "hunter2");
    let reg = Registry::start_with(None, Auth::Token { realm: tokens.realm(), cert: tokens.cert.clone() });
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let cache = format!("{}/team/app:buildcache", reg.host());
    let a = tmp.path().join("a");
    ok(&kiln(&a, &["login", "-u", "bob", "-p", "hunter2", &reg.host()]));
    let out = ok(&build(&a, &ctx, &["--cache-to", &format!("type=registry,ref={cache}")]));
    let id = last_line(&out);
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(asked.iter().any(|r| r.contains("scope=repository%3Ateam%2Fapp%3Apull%2Cpush")), "{asked:?}");

    // Another runner, its own login.
    let b = tmp.path().join("b");
    ok(&kiln(&b, &["login", "-u", "bob", "-p", "hunter2", &reg.host()]));
    let out = ok(&build(&b, &ctx, &["--cache-from", &format!("type=registry,ref={cache}")]));
    assert_eq!(out.matches("--> Using cache (registry)").count(), 3, "{out}");
    assert_eq!(last_line(&out), id);
}
