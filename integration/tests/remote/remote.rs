//! Remote sources: build contexts from git and http(s) URLs, ADD from URLs.
//! A `git daemon` and a small HTTP server on 127.0.0.1 stand in for the
//! network.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_integration::*;

type Routes = Arc<Mutex<Vec<(&'static str, Vec<u8>, Option<&'static str>)>>>;

/// Serves fixed paths; each answer is (body, extra header line).
fn http_server(routes: Vec<(&'static str, Vec<u8>, Option<&'static str>)>) -> u16 {
    http_server_shared(Arc::new(Mutex::new(routes)))
}

/// Like [`http_server`], with routes the test can change between requests.
fn http_server_shared(routes: Routes) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let found = routes.lock().unwrap().iter().find(|(p, _, _)| *p == path).cloned();
                let (status, body, extra) = match found {
                    Some((_, b, e)) => ("200 OK", b, e.map(|e| format!("{e}\r\n")).unwrap_or_default()),
                    None => ("404 Not Found", b"no\n".to_vec(), String::new()),
                };
                let head =
                    format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n", body.len());
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            });
        }
    });
    port
}

struct Daemon(Child, u16);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `git daemon` exporting every repository under `base`.
fn git_daemon(base: &std::path::Path) -> Daemon {
    let git = require_tool("git");
    // `git daemon` runs git-daemon as a child of its own, which killing `git`
    // would leave running: start git-daemon itself.
    let exec_path = Command::new(&git).arg("--exec-path").output().expect("git --exec-path");
    let daemon_bin = std::path::PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(daemon_bin)
        .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1", &format!("--port={port}")])
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        // The repositories belong to the sandbox user; the daemon may not.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start git daemon");
    // Dropping the daemon kills it, on the panic below too.
    let daemon = Daemon(child, port);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return daemon;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("git daemon did not listen on port {port}");
}

const GIT: &str =
    "git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main -c protocol.file.allow=always";

/// Repositories `sub.git` and `app.git` (branch `dev` with `svc/` and a
/// submodule `svc/vendor` → sub.git) under `repos/`, served by a daemon.
fn repos(sb: &Sandbox) -> Daemon {
    sb.mkdir("repos");
    let daemon = git_daemon(&sb.path("repos"));
    let port = daemon.1;
    let script = format!(
        r#"set -e
export HOME="$PWD/home"
mkdir -p w/sub && cd w/sub && {GIT} init -q && echo vendored > lib.txt && {GIT} add . && {GIT} commit -qm sub
cd .. && {GIT} clone -q --bare sub ../repos/sub.git
mkdir app && cd app && {GIT} init -q && echo top > top.txt && {GIT} add . && {GIT} commit -qm one
{GIT} checkout -q -b dev
mkdir svc && printf 'FROM scratch\nCOPY . /app/\n' > svc/Dockerfile && echo hello > svc/hello.txt
echo secret > svc/secret.txt && echo secret.txt > svc/.dockerignore
{GIT} submodule -q add git://127.0.0.1:{port}/sub.git svc/vendor
{GIT} add . && {GIT} commit -qm two
{GIT} tag v2
cd .. && {GIT} clone -q --bare app ../repos/app.git
{GIT} -C app rev-parse HEAD > ../dev.commit
"#
    );
    sb.sh(&script).ok();
    daemon
}

#[test]
fn build_from_git_url_with_ref_subdir_and_submodule() {
    let sb = Sandbox::new();
    let daemon = repos(&sb);
    let url = format!("git://127.0.0.1:{}/app.git#dev:svc", daemon.1);
    let out = sb.kiln(&["build", "-t", "fromgit", &url]);
    out.ok();
    let img = sb.image("fromgit");
    assert_eq!(img.file_str("app/hello.txt"), "hello\n");
    assert_eq!(img.file_str("app/vendor/lib.txt"), "vendored\n", "the submodule is checked out");
    assert!(!img.paths().iter().any(|p| p.split('/').any(|c| c == ".git")), "{:?}", img.paths());
    assert!(!img.paths().contains("app/top.txt"), "only the subdir is the context");
    assert!(!img.paths().contains("app/secret.txt"), "the context's .dockerignore applies");
    // A tag works as the ref too, and `-f` names a file inside the context.
    let url = format!("git://127.0.0.1:{}/app.git#v2", daemon.1);
    sb.kiln(&["build", "-f", "svc/Dockerfile", "-t", "tag", &url]).ok();
    assert_eq!(sb.image("tag").file_str("app/top.txt"), "top\n");
    // So does a commit id.
    let commit = std::fs::read_to_string(sb.path("dev.commit")).unwrap();
    let url = format!("git://127.0.0.1:{}/app.git#{}:svc", daemon.1, commit.trim());
    sb.kiln(&["build", "-t", "commit", &url]).ok();
    assert_eq!(sb.image("commit").file_str("app/vendor/lib.txt"), "vendored\n");
    // A missing subdir is a clear error.
    let url = format!("git://127.0.0.1:{}/app.git#main:svc", daemon.1);
    sb.kiln(&["build", "-t", "bad", &url]).fails_with(1).stderr_has(&["svc"]);
}

/// `--build-context NAME=` takes git and http(s) tar URLs as the main context
/// does; `COPY --from=NAME` and `RUN --mount=from=NAME` read them, filtered by
/// their own .dockerignore.
#[test]
fn named_contexts_from_git_and_http() {
    let sb = Sandbox::new();
    let daemon = repos(&sb);
    sb.write("tarred/t.txt", "from the tar\n");
    sb.write("tarred/skip.log", "ignored\n");
    sb.write("tarred/.dockerignore", "*.log\n");
    sb.tool("tar", &["-C", "tarred", "-czf", "named.tar.gz", "."]).ok();
    let port = http_server(vec![
        ("/named.tar.gz", std::fs::read(sb.path("named.tar.gz")).unwrap(), None),
        ("/plain.txt", b"just a file\n".to_vec(), None),
    ]);
    let git = format!("--build-context=repo=git://127.0.0.1:{}/app.git#dev:svc", daemon.1);
    let tar = format!("--build-context=tarball=http://127.0.0.1:{port}/named.tar.gz");
    let (_, img) =
        sb.build_with("FROM scratch\nCOPY --from=repo / /repo/\nCOPY --from=tarball / /tar/\n", "named", &[&git, &tar]);
    let paths = img.paths();
    assert_eq!(img.file_str("repo/hello.txt"), "hello\n");
    assert_eq!(img.file_str("repo/vendor/lib.txt"), "vendored\n", "submodules are checked out");
    assert!(!paths.contains("repo/secret.txt"), "the repository's .dockerignore applies: {paths:?}");
    assert!(!paths.iter().any(|p| p.split('/').any(|c| c == ".git")), "{paths:?}");
    assert_eq!(img.file_str("tar/t.txt"), "from the tar\n");
    assert!(!paths.contains("tar/skip.log"), "the archive's .dockerignore applies: {paths:?}");

    // A URL of a lone file is no context.
    let plain = format!("--build-context=f=http://127.0.0.1:{port}/plain.txt");
    sb.try_build("FROM scratch\nCOPY --from=f / /f/\n", "plain", &[&plain])
        .fails_with(1)
        .stderr_has(&["plain.txt", "neither a git repository nor a tar archive"]);
}

#[test]
fn build_from_http_tar_and_dockerfile() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    sb.dockerfile("FROM scratch\nCOPY f.txt /f.txt\n");
    sb.tool("tar", &["-C", "ctx", "-czf", "ctx.tar.gz", "."]).ok();
    sb.tool("tar", &["-C", "ctx", "-cf", "ctx.tar", "."]).ok();
    let port = http_server(vec![
        ("/ctx.tar.gz", std::fs::read(sb.path("ctx.tar.gz")).unwrap(), None),
        ("/ctx.tar", std::fs::read(sb.path("ctx.tar")).unwrap(), None),
        ("/Dockerfile", b"FROM scratch\nLABEL from=http\n".to_vec(), None),
    ]);
    for name in ["ctx.tar.gz", "ctx.tar"] {
        sb.kiln(&["build", "-t", "tarctx", &format!("http://127.0.0.1:{port}/{name}")]).ok();
        assert_eq!(sb.image("tarctx").file_str("f.txt"), "f\n");
    }
    sb.kiln(&["build", "-t", "dfctx", &format!("http://127.0.0.1:{port}/Dockerfile")]).ok();
    assert_eq!(sb.image("dfctx").runtime()["Labels"]["from"], "http");
    sb.kiln(&["build", "-t", "missing", &format!("http://127.0.0.1:{port}/nothing")])
        .fails_with(1)
        .stderr_has(&["404"]);
}

#[test]
fn add_from_url() {
    let sb = Sandbox::new();
    let body = b"payload\n".to_vec();
    let sum = format!("sha256:{}", sha256_hex(&body));
    let mut tgz = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut tgz, flate2::Compression::default());
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        t.append_data(&mut h, "inner.txt", &b"i\n"[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    let port = http_server(vec![
        ("/files/data.txt", body.clone(), Some("Last-Modified: Sat, 29 Oct 1994 19:43:31 GMT")),
        ("/plain.bin", b"x".to_vec(), None),
        ("/a.tar.gz", tgz.clone(), None),
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let img = sb.build(
        &format!(
            "FROM scratch\nADD {base}/files/data.txt /dl/\nADD --checksum={sum} {base}/files/data.txt /named\n\
             ADD --chown=7:8 --chmod=644 {base}/plain.bin /p.bin\nADD {base}/a.tar.gz /arch/\n"
        ),
        "addurl",
    );
    let e = img.entry("dl/data.txt").unwrap();
    assert_eq!((e.mode, e.mtime, e.data.as_slice()), (0o600, 783459811, &body[..]));
    assert_eq!(img.file("named"), body);
    let p = img.entry("p.bin").unwrap();
    assert_eq!((p.mode, p.uid, p.gid, p.mtime), (0o644, 7, 8, 0));
    assert_eq!(img.file("arch/a.tar.gz"), tgz, "a downloaded archive is not unpacked");
    assert!(img.entry("arch/inner.txt").is_none());

    let bad = format!("sha256:{}", "0".repeat(64));
    sb.dockerfile(&format!("FROM scratch\nADD --checksum={bad} {base}/files/data.txt /x\n"));
    let ctx = sb.ctx();
    sb.kiln(&["build", "-t", "bad", ctx.to_str().unwrap()]).fails_with(1).stderr_has(&["checksum", &sum]);
    sb.dockerfile(&format!("FROM scratch\nADD {base}/gone.txt /x\n"));
    sb.kiln(&["build", "-t", "gone", ctx.to_str().unwrap()]).fails_with(1).stderr_has(&["gone.txt", "404"]);
}

#[test]
fn add_url_cache_follows_content() {
    let sb = Sandbox::new();
    let routes: Routes = Arc::new(Mutex::new(vec![("/v.txt", b"one\n".to_vec(), None)]));
    let port = http_server_shared(routes.clone());
    sb.dockerfile(&format!("FROM scratch\nADD http://127.0.0.1:{port}/v.txt /v.txt\n"));
    let ctx = sb.ctx();
    let build = |tag: &str| {
        let out = sb.kiln(&["build", "-t", tag, ctx.to_str().unwrap()]);
        out.ok();
        (sb.image(tag).file_str("v.txt"), out.stdout.contains("Using cache"))
    };
    assert_eq!(build("c1"), ("one\n".to_string(), false));
    assert_eq!(build("c2"), ("one\n".to_string(), true), "same content: the step is cached");
    routes.lock().unwrap()[0].1 = b"two\n".to_vec();
    assert_eq!(build("c3"), ("two\n".to_string(), false), "new content behind the same URL: the step runs again");
}

#[test]
fn add_from_git_url() {
    let sb = Sandbox::new();
    let daemon = repos(&sb);
    let p = daemon.1;
    let img = sb.build(
        &format!("FROM scratch\nADD git://127.0.0.1:{p}/app.git#dev /src\nADD --keep-git-dir=true git://127.0.0.1:{p}/sub.git /withgit\n"),
        "addgit",
    );
    assert_eq!(img.file_str("src/top.txt"), "top\n");
    assert_eq!(img.file_str("src/svc/hello.txt"), "hello\n");
    assert_eq!(img.file_str("src/svc/vendor/lib.txt"), "vendored\n");
    assert!(
        !img.paths().iter().filter(|p| p.starts_with("src/")).any(|p| p.split('/').any(|c| c == ".git")),
        "{:?}",
        img.paths()
    );
    assert_eq!(img.file_str("withgit/lib.txt"), "vendored\n");
    assert!(img.paths().contains("withgit/.git/HEAD"), "--keep-git-dir keeps .git");
}

/// A hostile server: `/endless` never ends its body, `/drip` sends a byte
/// every 200 ms. Returns its port and the body bytes it managed to send.
fn hostile_server() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let sent = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                // Bounded, so a broken kiln fails the test instead of hanging it.
                let until = Instant::now() + Duration::from_secs(60);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                if path == "/drip" {
                    while Instant::now() < until && conn.write_all(b"#").is_ok() {
                        sent.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                } else {
                    let chunk = vec![b'y'; 64 * 1024];
                    while Instant::now() < until && conn.write_all(&chunk).is_ok() {
                        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (port, sent)
}

/// Bytes in the files under `dir`.
fn disk_use(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_use(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[test]
fn endless_and_dripping_downloads_stop_with_a_clear_error() {
    let sb = Sandbox::new();
    let (port, sent) = hostile_server();
    let host = format!("127.0.0.1:{port}");
    let store = sb.store();
    let ctx = sb.ctx();
    let run = |args: &[&str]| {
        let mut all = vec!["--root", store.to_str().unwrap()];
        all.extend_from_slice(args);
        let started = Instant::now();
        let out = sb.kiln_raw(&all, None, &[("KILN_NET_TIMEOUT", "1"), ("KILN_NET_IDLE_TIMEOUT", "2")]);
        (out, started.elapsed())
    };

    // ADD <url> stops at the limit instead of filling the disk.
    sb.dockerfile(&format!("FROM scratch\nADD http://{host}/endless /f\n"));
    let (out, took) = run(&["build", "--max-context-size", "2m", "-t", "endless", ctx.to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["larger than 2 MiB", "--max-context-size", &host]);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(sent.load(Ordering::SeqCst) < 32 << 20, "kiln kept reading");
    let left = disk_use(&store) + disk_use(&sb.path("tmp"));
    assert!(left < 2 << 20, "{left} bytes of the download stayed on disk");

    // So does a remote context.
    let url = format!("http://{host}/endless");
    let (out, took) = run(&["build", "--max-context-size", "2m", "-t", "ctx", &url]);
    out.fails_with(1).stderr_has(&["larger than 2 MiB", "--max-context-size", &host]);
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // A server that drips is given up on after the deadline, by name.
    sb.dockerfile(&format!("FROM scratch\nADD http://{host}/drip /f\n"));
    let (out, took) = run(&["build", "-t", "drip", ctx.to_str().unwrap()]);
    out.fails_with(1).stderr_has(&[&host, "too slow", "KILN_NET_TIMEOUT"]);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let (out, took) = run(&["build", "-t", "drip", &format!("http://{host}/drip")]);
    out.fails_with(1).stderr_has(&[&host, "too slow"]);
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
