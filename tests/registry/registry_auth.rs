//! kiln against registries that authenticate: TLS with a self-signed CA and
//! htpasswd basic auth, and bearer tokens from a token server the test runs.

use crate::registry_util;

use std::path::Path;

use kiln::store::Store;
use registry_util::*;

fn image_in(root: &Path, name: &str) -> kiln::store::Image {
    let store = Store::open(root).unwrap();
    let desc = store.resolve(name).unwrap().unwrap_or_else(|| panic!("{name} is not in the store"));
    store.load_image(&desc).unwrap()
}

#[test]
fn tls_with_a_private_ca_and_basic_auth() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let secure = SecureRegistry::start(tmp.path());
    let reg = &secure.registry;
    let ca_arg = secure.ca_dir.to_str().unwrap();
    let authfile = &secure.authfile;
    let auth_arg = authfile.to_str().unwrap();
    let root = tmp.path().join("a");
    build_scratch(&root, "app:1", &[("x", &noise(4000, 20))], &[]);
    let dest = format!("{}/secure/app:1", reg.host());

    // Without the CA the certificate is refused (no fallback to plain HTTP).
    let err = failed(&kiln(&root, &["push", "-q", "app:1", &dest]));
    assert!(err.contains(&dest) && err.contains("TLS") && err.contains("--cert-dir"), "{err}");

    // With it, but without credentials: 401, one line.
    let err = failed(&kiln(&root, &["push", "-q", "--cert-dir", ca_arg, "app:1", &dest]));
    assert!(err.contains("401") && err.contains("kiln login"), "{err}");

    // A wrong password does not log in and writes nothing.
    let err = failed(&kiln(
        &root,
        &["login", "--cert-dir", ca_arg, "--authfile", auth_arg, "-u", "alice", "-p", "wrong", &reg.host()],
    ));
    assert!(err.contains("401"), "{err}");
    assert!(!authfile.exists());

    let out = ok(&kiln(
        &root,
        &["login", "--cert-dir", ca_arg, "--authfile", auth_arg, "-u", "alice", "-p", "s3cret", &reg.host()],
    ));
    assert!(out.contains("Login Succeeded"), "{out}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(authfile).unwrap()).unwrap();
    assert!(saved["auths"][reg.host()]["auth"].is_string(), "{saved}");

    let digest =
        last_line(&ok(&kiln(&root, &["push", "-q", "--cert-dir", ca_arg, "--authfile", auth_arg, "app:1", &dest])));
    let inspected = skopeo(&["inspect", "--cert-dir", ca_arg, "--creds", "alice:s3cret", &format!("docker://{dest}")]);
    let json: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(json["Digest"], digest.as_str());

    // Pull into an empty store, with the credentials from $REGISTRY_AUTH_FILE.
    let b = tmp.path().join("b");
    ok(&kiln_env(&b, &["pull", "-q", "--cert-dir", ca_arg, &dest], &[("REGISTRY_AUTH_FILE", auth_arg)]));
    assert_eq!(image_in(&b, &dest).manifest_digest, digest);

    // --tls-verify=false needs no CA.
    let c = tmp.path().join("c");
    ok(&kiln(&c, &["pull", "-q", "--tls-verify=false", "--authfile", auth_arg, &dest]));
    assert_eq!(image_in(&c, &dest).manifest_digest, digest);

    // After logout the registry refuses again.
    ok(&kiln(&root, &["logout", "--authfile", auth_arg, &reg.host()]));
    let err =
        failed(&kiln(&tmp.path().join("d"), &["pull", "-q", "--cert-dir", ca_arg, "--authfile", auth_arg, &dest]));
    assert!(err.contains("401"), "{err}");
    let err = failed(&kiln(&root, &["logout", "--authfile", auth_arg, &reg.host()]));
    assert!(err.contains("not logged in"), "{err}");
}

#[test]
fn bearer_tokens_from_a_token_server() {
    if !tools_present() {
        return;
    }
    let tokens = TokenServer::start("bob", "hunter2");
    let reg = Registry::start_with(None, Auth::Token { realm: tokens.realm(), cert: tokens.cert.clone() });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a");
    build_scratch(&root, "app:1", &[("x", &noise(2000, 30))], &[]);
    let private = format!("{}/team/app:1", reg.host());
    let public = format!("{}/public/app:1", reg.host());

    // Anonymous: the token server grants nothing for a push.
    let err = failed(&kiln(&root, &["push", "-q", "app:1", &private]));
    assert!(err.contains(&private) && err.contains("401"), "{err}");

    // Wrong password: login fails; right one: login writes the default auth file.
    let err = failed(&kiln(&root, &["login", "-u", "bob", "-p", "nope", &reg.host()]));
    assert!(err.contains("401") && err.contains("refused the credentials"), "{err}");
    ok(&kiln(&root, &["login", "-u", "bob", "-p", "hunter2", &reg.host()]));
    assert!(root.join("run/containers/auth.json").is_file(), "login writes ${{XDG_RUNTIME_DIR}}/containers/auth.json");

    let digest = last_line(&ok(&kiln(&root, &["push", "-q", "app:1", &private])));
    assert_eq!(last_line(&ok(&kiln(&root, &["push", "-q", "app:1", &public]))), digest);
    let inspected =
        skopeo(&["inspect", "--tls-verify=false", "--creds", "bob:hunter2", &format!("docker://{private}")]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&inspected).unwrap()["Digest"], digest.as_str());
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(asked.iter().any(|r| r.contains("scope=repository%3Ateam%2Fapp%3Apull%2Cpush")), "{asked:?}");

    // Anonymous pulls: public works, private is refused.
    let anon = tmp.path().join("anon");
    ok(&kiln(&anon, &["pull", "-q", &public]));
    assert_eq!(image_in(&anon, &public).manifest_digest, digest);
    let err = failed(&kiln(&anon, &["pull", "-q", &private]));
    assert!(err.contains(&private) && err.contains("401"), "{err}");

    // A docker identity token is traded for an access token (OAuth2 POST).
    let idfile = tmp.path().join("identity.json");
    std::fs::write(&idfile, format!(r#"{{"auths":{{"{}":{{"identitytoken":"{REFRESH_TOKEN}"}}}}}}"#, reg.host()))
        .unwrap();
    let ident = tmp.path().join("ident");
    ok(&kiln(&ident, &["pull", "-q", "--authfile", idfile.to_str().unwrap(), &private]));
    assert_eq!(image_in(&ident, &private).manifest_digest, digest);
    assert!(tokens.requests.lock().unwrap().iter().any(|r| r.starts_with("POST /token")));

    // Credentials from a docker config.json credential helper.
    let home = tmp.path().join("helper");
    let bin = home.join("bin");
    std::fs::create_dir_all(home.join("home/.docker")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("docker-credential-kilntest");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"bob\",\"Secret\":\"hunter2\"}}'\n", reg.host()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        home.join("home/.docker/config.json"),
        format!(r#"{{"credHelpers":{{"{}":"kilntest"}}}}"#, reg.host()),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    ok(&kiln_env(&home, &["pull", "-q", &private], &[("PATH", &path)]));
    assert_eq!(image_in(&home, &private).manifest_digest, digest);
}
