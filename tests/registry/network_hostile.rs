//! Hostile network peers on 127.0.0.1, served from this process: a registry
//! that sends uploads or blob downloads to another origin (which records any
//! credentials it receives), registries and token servers that drip their
//! answers or stall, and servers of remote contexts with endless bodies.
//! Every case must end quickly with an error that names the host, and the
//! user's credentials must reach only the registry's own origin, never an
//! error message or the debug log.

use crate::registry_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use registry_util::{build_scratch, failed, kiln_env, ok};

const USER: &str = "alice";
const PASSWORD: &str = "pw-Sekr1t-4711";
const TOKEN: &str = "tok-Sekr1t-0815";

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

enum Answer {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Headers announcing `len` bytes, then a byte every `every`.
    DripBody {
        len: u64,
        every: Duration,
    },
    /// The status line and headers themselves, a byte every `every`.
    DripHead {
        every: Duration,
    },
    /// Headers, then nothing at all.
    Stall,
    /// A body that never ends (no length, closed by the server "later").
    Endless,
}

fn full(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Answer {
    Answer::Full {
        status,
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: body.into(),
    }
}

type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// An HTTP/1.1 server answering each connection's one request with what
/// the handler says, logging every request. Its threads end when it is
/// dropped (or after a minute at most).
struct Server {
    port: u16,
    log: Arc<Mutex<Vec<Request>>>,
    /// Body bytes written by `Endless` and `DripBody` answers.
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(handler: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Server { port, log: Arc::default(), sent: Arc::default(), stop: Arc::new(AtomicBool::new(false)) };
        let (log, sent, stop) = (server.log.clone(), server.sent.clone(), server.stop.clone());
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (log, sent, stop, handler) = (log.clone(), sent.clone(), stop.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, &*handler, &log, &sent, &stop));
            }
        });
        server
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>, sent: &AtomicU64, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let request = Request { method, path, headers };
    // Read (and drop) the request body so the client is not stuck sending it.
    if let Some(len) = request.header("content-length").and_then(|v| v.parse::<u64>().ok()) {
        let _ = std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink());
    } else if request.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                break;
            }
            let n = u64::from_str_radix(size.trim(), 16).unwrap_or(0);
            let _ = std::io::copy(&mut (&mut reader).take(n + 2), &mut std::io::sink());
            if n == 0 {
                break;
            }
        }
    }
    log.lock().unwrap().push(request.clone());
    let answer = handler(&request);
    let mut conn = conn;
    let deadline = Instant::now() + Duration::from_secs(60);
    let going = || !stop.load(Ordering::SeqCst) && Instant::now() < deadline;
    match answer {
        Answer::Full { status, headers, body } => {
            let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = conn.write_all(head.as_bytes());
            if request.method != "HEAD" {
                let _ = conn.write_all(&body);
            }
        }
        Answer::DripBody { len, every } => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            let _ = conn.write_all(head.as_bytes());
            while going() && conn.write_all(b"{").is_ok() {
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(every);
            }
        }
        Answer::DripHead { every } => {
            for b in b"HTTP/1.1 200 OK\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
                if !going() || conn.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(every);
            }
        }
        Answer::Stall => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n");
            // Hold the connection open without a byte until the client leaves.
            let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 64];
            while going() {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        }
        Answer::Endless => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'y'; 64 * 1024];
            while going() && conn.write_all(&chunk).is_ok() {
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
    }
}

fn basic_value() -> String {
    format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Fails when any output of kiln holds a credential.
fn assert_no_secret(out: &std::process::Output) {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let encoded = STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for secret in [PASSWORD, TOKEN, encoded.as_str()] {
        assert!(!text.contains(secret), "kiln printed a credential ({secret}):\n{text}");
    }
}

fn write_authfile(path: &Path, registry: &str) {
    let auth = STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(path, format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
}

#[test]
fn upload_locations_on_other_origins_get_no_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    build_scratch(&root, "app:1", &[("x", b"one"), ("y", b"two")], &[]);

    // Takes the uploads kiln is sent to, and notes what came with them.
    let elsewhere = Server::start(|req| match req.method.as_str() {
        "PUT" => full(201, &[], ""),
        _ => full(404, &[], ""),
    });
    let elsewhere_host = elsewhere.host();
    let own_port = Arc::new(AtomicU64::new(0));
    let port = own_port.clone();
    let uploads = AtomicU64::new(0);
    let registry = Server::start(move |req| {
        let authed = req.authorization() == Some(basic_value().as_str());
        let path = req.path.as_str();
        if path.starts_with("/elsewhere/") {
            return full(201, &[], "");
        }
        if !authed && path != "/v2/" {
            return full(401, &[("WWW-Authenticate", r#"Basic realm="kiln-test""#)], "");
        }
        match (req.method.as_str(), path) {
            ("GET", "/v2/") if authed => full(200, &[], "{}"),
            ("GET", "/v2/") => full(401, &[("WWW-Authenticate", r#"Basic realm="kiln-test""#)], ""),
            ("HEAD", p) if p.starts_with("/v2/app/blobs/") => full(404, &[], ""),
            ("POST", "/v2/app/blobs/uploads/") => {
                // The first upload goes to another port, the next to
                // another name of this very host and port.
                let location = match uploads.fetch_add(1, Ordering::SeqCst) {
                    0 => format!("http://{elsewhere_host}/upload/1?_state=s"),
                    n => format!("http://localhost:{}/elsewhere/{n}", port.load(Ordering::SeqCst)),
                };
                full(202, &[("Location", location.as_str())], "")
            }
            ("PUT", "/v2/app/manifests/1") => full(201, &[], ""),
            _ => full(404, &[], ""),
        }
    });
    own_port.store(u64::from(registry.port), Ordering::SeqCst);
    let authfile = tmp.path().join("auth.json");
    let auth_arg = authfile.to_str().unwrap();

    let out =
        kiln_env(&root, &["-vv", "login", "--authfile", auth_arg, "-u", USER, "-p", PASSWORD, &registry.host()], &[]);
    ok(&out);
    assert_no_secret(&out);
    let dest = format!("{}/app:1", registry.host());
    let started = Instant::now();
    let out = kiln_env(&root, &["-vv", "push", "--authfile", auth_arg, "app:1", &dest], &[]);
    ok(&out);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_no_secret(&out);

    // The registry itself got the credentials; nothing else did.
    let own = registry.requests();
    assert!(own.iter().any(|r| r.method == "HEAD" && r.authorization() == Some(basic_value().as_str())), "{own:?}");
    let other_port = elsewhere.requests();
    assert!(other_port.iter().any(|r| r.method == "PUT" && r.path.starts_with("/upload/1")), "{other_port:?}");
    let other_name: Vec<&Request> = own.iter().filter(|r| r.path.starts_with("/elsewhere/")).collect();
    assert!(!other_name.is_empty(), "the second upload went to localhost: {own:?}");
    for r in other_port.iter().chain(other_name.iter().copied()) {
        assert_eq!(r.authorization(), None, "credentials sent to another origin: {r:?}");
    }
}

/// A minimal image: one gzip layer holding `hello`, and its config.
fn tiny_image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut tar_bytes = Vec::new();
    {
        let mut t = tar::Builder::new(&mut tar_bytes);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        t.append_data(&mut h, "hello", &b"hi\n"[..]).unwrap();
        t.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha256(&tar_bytes)
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
        sha256(&config),
        config.len(),
        sha256(&layer),
        layer.len()
    )
    .into_bytes();
    (manifest, config, layer)
}

#[test]
fn redirects_to_other_origins_get_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, config, layer) = tiny_image();
    let (config_digest, layer_digest) = (sha256(&config), sha256(&layer));
    let blobs: Vec<(String, Vec<u8>)> = vec![(config_digest.clone(), config), (layer_digest.clone(), layer)];
    let store_blobs = blobs.clone();
    // A blob store on another port, as registries use CDNs.
    let cdn = Server::start(move |req| match store_blobs.iter().find(|(d, _)| req.path == format!("/cdn/{d}")) {
        Some((_, b)) => full(200, &[], b.clone()),
        None => full(404, &[], ""),
    });
    let cdn_host = cdn.host();
    let own_port = Arc::new(AtomicU64::new(0));
    let port = own_port.clone();
    let registry = Server::start(move |req| {
        let realm = format!("http://127.0.0.1:{}/token", port.load(Ordering::SeqCst));
        let challenge = format!(r#"Bearer realm="{realm}",service="kiln-test""#);
        let bearer = format!("Bearer {TOKEN}");
        if req.path.starts_with("/token") {
            return if req.authorization() == Some(basic_value().as_str()) {
                full(200, &[("Content-Type", "application/json")], format!(r#"{{"token":"{TOKEN}"}}"#))
            } else {
                full(401, &[], "")
            };
        }
        if req.authorization() != Some(bearer.as_str()) {
            return full(401, &[("WWW-Authenticate", challenge.as_str())], "");
        }
        let path = req.path.as_str();
        if path == "/v2/" {
            return full(200, &[], "{}");
        }
        if path == "/v2/app/manifests/1" {
            return full(200, &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")], manifest.clone());
        }
        // The config is redirected to the CDN, the layer to a path of this
        // registry (where the token must still be sent).
        if path == format!("/v2/app/blobs/{config_digest}") {
            return full(307, &[("Location", format!("http://{cdn_host}/cdn/{config_digest}").as_str())], "");
        }
        if path == format!("/v2/app/blobs/{layer_digest}") {
            return full(302, &[("Location", format!("/same-origin/{layer_digest}").as_str())], "");
        }
        match blobs.iter().find(|(d, _)| path == format!("/same-origin/{d}")) {
            Some((_, b)) => full(200, &[], b.clone()),
            None => full(404, &[], ""),
        }
    });
    own_port.store(u64::from(registry.port), Ordering::SeqCst);
    let authfile = tmp.path().join("auth.json");
    write_authfile(&authfile, &registry.host());

    let root = tmp.path().join("store");
    let out = kiln_env(
        &root,
        &["-vv", "pull", "--authfile", authfile.to_str().unwrap(), &format!("{}/app:1", registry.host())],
        &[],
    );
    ok(&out);
    assert_no_secret(&out);
    let cdn_requests = cdn.requests();
    assert!(!cdn_requests.is_empty(), "the config came from the CDN");
    for r in &cdn_requests {
        assert_eq!(r.authorization(), None, "a credential went to the CDN: {r:?}");
    }
    let same = registry.requests();
    assert!(
        same.iter()
            .any(|r| r.path.starts_with("/same-origin/") && r.authorization() == Some(&format!("Bearer {TOKEN}"))),
        "a redirect within the registry keeps the token: {same:?}"
    );
}

/// Runs kiln expecting a failure within `within`; returns its stderr.
fn fails_within(root: &Path, args: &[&str], env: &[(&str, &str)], within: Duration) -> String {
    let started = Instant::now();
    let out = kiln_env(root, args, env);
    let took = started.elapsed();
    let err = failed(&out);
    eprintln!("kiln {} failed in {took:?}:\n{err}", args.join(" "));
    assert!(took < within, "kiln took {took:?} (allowed {within:?}): {err}");
    assert_no_secret(&out);
    err
}

const SHORT: &[(&str, &str)] = &[("KILN_NET_TIMEOUT", "1"), ("KILN_NET_IDLE_TIMEOUT", "1")];

#[test]
fn a_dripping_registry_fails_in_time_naming_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let registry = Server::start(|req| match req.path.as_str() {
        "/v2/" => full(200, &[], "{}"),
        _ => Answer::DripBody { len: 4096, every: Duration::from_millis(200) },
    });
    let err = fails_within(&root, &["pull", &format!("{}/app:1", registry.host())], SHORT, Duration::from_secs(15));
    assert!(err.contains(&registry.host()) && err.contains("too slow") && err.contains("KILN_NET_TIMEOUT"), "{err}");
    assert!(registry.sent.load(Ordering::SeqCst) < 40, "kiln stopped reading the drip");

    // Headers dripped a byte at a time.
    let registry = Server::start(|req| match req.path.as_str() {
        "/v2/" => full(200, &[], "{}"),
        _ => Answer::DripHead { every: Duration::from_millis(100) },
    });
    let err = fails_within(&root, &["pull", &format!("{}/app:1", registry.host())], SHORT, Duration::from_secs(15));
    assert!(err.contains(&registry.host()) && err.contains("did not answer within 1 s"), "{err}");

    // Headers, then silence.
    let registry = Server::start(|req| match req.path.as_str() {
        "/v2/" => full(200, &[], "{}"),
        _ => Answer::Stall,
    });
    let err = fails_within(&root, &["pull", &format!("{}/app:1", registry.host())], SHORT, Duration::from_secs(15));
    assert!(err.contains(&registry.host()) && err.contains("sent nothing for 1 s"), "{err}");
}

#[test]
fn a_dripping_token_server_fails_in_time_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let token = Server::start(|_| Answer::DripBody { len: 100_000, every: Duration::from_millis(100) });
    let realm = format!("http://{}/token", token.host());
    let registry = Server::start(move |_| {
        full(401, &[("WWW-Authenticate", format!(r#"Bearer realm="{realm}",service="s""#).as_str())], "")
    });
    let authfile = tmp.path().join("auth.json");
    write_authfile(&authfile, &registry.host());
    let err = fails_within(
        &root,
        &["pull", "--authfile", authfile.to_str().unwrap(), &format!("{}/app:1", registry.host())],
        SHORT,
        Duration::from_secs(15),
    );
    assert!(err.contains(&token.host()) && err.contains("too slow"), "{err}");
    // The token server is on another port than the registry, but it is
    // the realm the registry named: it gets the credentials, as docker's
    // token protocol has it. No one else did.
    assert!(token.requests().iter().all(|r| r.authorization() == Some(basic_value().as_str())));
    assert!(registry.requests().iter().all(|r| r.authorization().is_none()));
}

#[test]
fn remote_contexts_are_bounded_in_size_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch_arg = scratch.to_str().unwrap();
    // A compressed archive that unpacks to 4 MiB of zeros.
    let bomb = {
        let mut tar_bytes = Vec::new();
        let mut t = tar::Builder::new(&mut tar_bytes);
        let mut h = tar::Header::new_gnu();
        h.set_size(4 << 20);
        h.set_mode(0o644);
        t.append_data(&mut h, "zeros", std::io::repeat(0).take(4 << 20)).unwrap();
        t.finish().unwrap();
        drop(t);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar_bytes).unwrap();
        gz.finish().unwrap()
    };
    assert!(bomb.len() < 64 << 10);
    let server = Server::start(move |req| match req.path.as_str() {
        "/endless" => Answer::Endless,
        "/announced" => full(200, &[("Content-Length", "10737418240")], ""),
        "/bomb.tar.gz" => full(200, &[], bomb.clone()),
        "/drip" => Answer::DripBody { len: 1 << 20, every: Duration::from_millis(200) },
        _ => full(404, &[], ""),
    });
    let env: Vec<(&str, &str)> = SHORT.iter().copied().chain([("TMPDIR", scratch_arg)]).collect();
    let url = |p: &str| format!("http://{}/{p}", server.host());

    let err =
        fails_within(&root, &["build", "--max-context-size", "1m", &url("endless")], &env, Duration::from_secs(20));
    assert!(err.contains("larger than 1 MiB") && err.contains("--max-context-size"), "{err}");
    assert!(err.contains(&server.host()), "{err}");
    // What kiln took: the limit, plus what sat in socket buffers.
    let sent = server.sent.load(Ordering::SeqCst);
    assert!(sent < 16 << 20, "kiln kept reading: {sent} bytes");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "the partial download is removed");

    // A length over the limit is refused before any of the body is read.
    let err =
        fails_within(&root, &["build", "--max-context-size", "1m", &url("announced")], &env, Duration::from_secs(10));
    assert!(err.contains("larger than 1 MiB"), "{err}");

    let err =
        fails_within(&root, &["build", "--max-context-size", "1m", &url("bomb.tar.gz")], &env, Duration::from_secs(20));
    assert!(err.contains("unpacks to more than 1 MiB") && err.contains("--max-context-size"), "{err}");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "the partial context is removed");

    let err = fails_within(&root, &["build", &url("drip")], &env, Duration::from_secs(15));
    assert!(err.contains(&server.host()) && err.contains("too slow"), "{err}");

    let err = failed(&kiln_env(&root, &["build", "--max-context-size", "lots", &url("endless")], &[]));
    assert!(err.contains("lots"), "{err}");
}

#[test]
fn credentials_in_context_urls_stay_out_of_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let server = Server::start(|_| full(404, &[], ""));
    let url = format!("http://{USER}:{PASSWORD}@{}/ctx.tar", server.host());
    let err = fails_within(&root, &["-vv", "build", &url], &[], Duration::from_secs(15));
    assert!(err.contains("404") && err.contains(&format!("http://{}/ctx.tar", server.host())), "{err}");
    // ...yet the server of that URL got them, as the user asked.
    assert_eq!(server.requests()[0].authorization(), Some(basic_value().as_str()));
}

#[test]
fn credentials_echoed_by_a_registry_are_not_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let registry = Server::start(|req| match req.authorization() {
        None => full(401, &[("WWW-Authenticate", r#"Basic realm="r""#)], ""),
        Some(sent) => {
            let body =
                format!(r#"{{"errors":[{{"code":"DENIED","message":"you sent {sent}, that is {USER}:{PASSWORD}"}}]}}"#);
            full(400, &[], body)
        }
    });
    let authfile = tmp.path().join("auth.json");
    write_authfile(&authfile, &registry.host());
    let err = fails_within(
        &root,
        &["-vv", "pull", "--authfile", authfile.to_str().unwrap(), &format!("{}/app:1", registry.host())],
        &[],
        Duration::from_secs(15),
    );
    assert!(err.contains("400") && err.contains("<redacted>"), "{err}");
}
