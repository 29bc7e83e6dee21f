//! Real registries for the registry tests: Debian's `docker-registry`
//! (Distribution 2.x) started per test on 127.0.0.1 with a free port and its
//! storage in a temp dir, optionally with TLS (a CA made with openssl),
//! htpasswd basic auth, or bearer tokens from a small token server run here.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Whether the tools these tests need are installed; CI installs them.
pub fn tools_present() -> bool {
    let ok = Path::new(REGISTRY_BIN).exists() && which("skopeo") && which("openssl") && which("htpasswd");
    if !ok {
        eprintln!("skipping: needs docker-registry, skopeo and openssl (apt-get install docker-registry skopeo openssl apache2-utils)");
        if std::env::var_os("CI").is_some() {
            panic!("registry test tools are missing in CI");
        }
    }
    ok
}

pub fn which(program: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
}

pub fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub enum Auth {
    None,
    /// htpasswd file with this user and password.
    Basic {
        user: String,
        password: String,
    },
    /// Tokens from a realm at this URL, signed with the key whose
    /// certificate is at `cert`.
    Token {
        realm: String,
        cert: PathBuf,
    },
}

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None, Auth::None)
    }

    /// `tls`: (certificate, key) files.
    pub fn start_with(tls: Option<(&Path, &Path)>, auth: Auth) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
        }
        match &auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let out = Command::new("htpasswd").args(["-Bbn", user, password]).output().expect("run htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).unwrap();
                config.push_str(&format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", file.display()));
            }
            Auth::Token { realm, cert } => config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            )),
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { port, dir, child };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on {}: {}", self.port, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file that holds a blob in the registry's storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs kiln with `args` against the store at `root`.
pub fn kiln(root: &Path, args: &[&str]) -> Output {
    kiln_env(root, args, &[])
}

pub fn kiln_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(kiln_bin());
    cmd.arg("--root").arg(root).args(args).stdin(Stdio::null());
    // Keep the host's auth files out of the tests.
    cmd.env_remove("REGISTRY_AUTH_FILE").env("XDG_RUNTIME_DIR", root.join("run")).env("HOME", root.join("home"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kiln")
}

pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "command failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "command should fail\nstdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

pub fn last_line(text: &str) -> String {
    text.lines().last().unwrap_or("").trim().to_string()
}

/// Builds `FROM scratch` + one COPY of `files` with kiln; returns the context dir.
pub fn build_scratch(root: &Path, tag: &str, files: &[(&str, &[u8])], extra: &[&str]) -> (tempfile::TempDir, String) {
    let ctx = tempfile::tempdir().unwrap();
    let mut dockerfile = String::from("FROM scratch\n");
    for (name, content) in files {
        std::fs::write(ctx.path().join(name), content).unwrap();
        dockerfile.push_str(&format!("COPY {name} /{name}\n"));
    }
    dockerfile.push_str("CMD [\"/x\"]\n");
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let mut args = vec!["build", "-t", tag];
    args.extend_from_slice(extra);
    let ctx_path = ctx.path().to_str().unwrap().to_string();
    args.push(&ctx_path);
    let out = ok(&kiln(root, &args));
    (ctx, last_line(&out))
}

/// Bytes that differ per call (and do not compress away).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state =
        seed ^ std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    state ^= t;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo inspect`'s Digest of a registry image.
pub fn skopeo_digest(reference: &str, extra: &[&str]) -> String {
    let mut args = vec!["inspect", "--tls-verify=false"];
    args.extend_from_slice(extra);
    let docker_ref = format!("docker://{reference}");
    args.push(&docker_ref);
    let json: serde_json::Value = serde_json::from_str(&skopeo(&args)).unwrap();
    json["Digest"].as_str().unwrap().to_string()
}

/// The digest of the manifest (or index) the registry serves for `reference`.
pub fn raw_digest(reference: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect --raw {reference}: {}", String::from_utf8_lossy(&out.stderr));
    kiln::store::sha256_digest(&out.stdout)
}

pub fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for 127.0.0.1 signed by it:
/// (ca.crt, server.crt, server.key) in `dir`.
pub fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
    (dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key"))
}

pub const TOKEN_SERVICE: &str = "kiln-test-registry";
pub const TOKEN_ISSUER: &str = "kiln-test-issuer";
/// The OAuth2 refresh token (docker's `identitytoken`) the token server honours.
pub const REFRESH_TOKEN: &str = "kiln-refresh-token";

/// A registry behind TLS with a private CA and basic auth (alice / s3cret),
/// with the CA in a `--cert-dir` and an authfile path under `dir`.
pub struct SecureRegistry {
    pub registry: Registry,
    /// `--cert-dir` for kiln: holds the CA as ca.crt.
    pub ca_dir: PathBuf,
    /// Where `kiln login --authfile` writes.
    pub authfile: PathBuf,
}

impl SecureRegistry {
    pub fn start(dir: &Path) -> SecureRegistry {
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let (ca, cert, key) = make_tls(&certs);
        let registry =
            Registry::start_with(Some((&cert, &key)), Auth::Basic { user: "alice".into(), password: "s3cret".into() });
        let ca_dir = dir.join("ca");
        std::fs::create_dir_all(&ca_dir).unwrap();
        std::fs::copy(&ca, ca_dir.join("ca.crt")).unwrap();
        SecureRegistry { registry, ca_dir, authfile: dir.join("auth.json") }
    }
}

/// A token server: grants what a request's scopes ask for to `user` with
/// `password`, and only `pull` on repositories under `public/` to anyone
/// else; refuses wrong passwords. Tokens are RS256 JWTs signed with openssl.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    pub dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TokenServer {
    pub fn start(user: &str, password: &str) -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "token.key",
                "-out",
                "token.crt",
                "-days",
                "2",
                "-subj",
                "/CN=kiln test token signer",
            ],
            dir.path(),
        );
        let kid = libtrust_key_id(&dir.path().join("token.crt"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let key = dir.path().join("token.key");
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let (stop2, requests2, user) = (stop.clone(), requests.clone(), user.to_string());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve_token(stream, &key, &kid, &expected, &user, &requests2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TokenServer { port, cert: dir.path().join("token.crt"), dir, stop, thread: Some(thread), requests }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_token(
    stream: TcpStream,
    key: &Path,
    kid: &str,
    expected_auth: &str,
    user: &str,
    log: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; content_length.min(64 * 1024)];
    reader.read_exact(&mut body)?;
    let target = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(format!(
        "{} {target} auth={}",
        request_line.split_whitespace().next().unwrap_or(""),
        authorization.is_some()
    ));
    // GET carries the scopes in the query; the OAuth2 POST in a form body,
    // space-separated, with the refresh token.
    let query = target.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    let form = String::from_utf8_lossy(&body).into_owned();
    let mut scopes = Vec::new();
    let mut refresh_token = None;
    for pair in query.split('&').chain(form.split('&')) {
        if let Some(v) = pair.strip_prefix("scope=") {
            scopes.extend(percent_decode(v).split(' ').filter(|s| !s.is_empty()).map(str::to_string));
        }
        if let Some(v) = pair.strip_prefix("refresh_token=") {
            refresh_token = Some(percent_decode(v));
        }
    }
    let mut out = stream;
    let (subject, full) = match (&authorization, refresh_token.as_deref()) {
        (_, Some(REFRESH_TOKEN)) => (user.to_string(), true),
        (_, Some(_)) => {
            let body = r#"{"error":"invalid_grant"}"#;
            write!(out, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
            return Ok(());
        }
        (Some(a), None) if a == expected_auth => (user.to_string(), true),
        (Some(_), None) => {
            let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
            write!(out, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
            return Ok(());
        }
        (None, None) => (String::new(), false),
    };
    let mut access = Vec::new();
    for scope in &scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let granted: Vec<&str> =
            actions.split(',').filter(|a| full || (*a == "pull" && name.starts_with("public/"))).collect();
        access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": kid});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
        "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(signing_input.as_bytes())?;
    let mut signature = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut signature)?;
    child.wait()?;
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let body = if refresh_token.is_some() {
        serde_json::json!({"access_token": token, "expires_in": 600, "scope": scopes.join(" ")}).to_string()
    } else {
        serde_json::json!({"token": token, "expires_in": 600}).to_string()
    };
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libtrust's key id, which Distribution matches a token's `kid` against:
/// base32 of the first 240 bits of the SHA-256 of the DER public key, in
/// colon-separated groups of four.
fn libtrust_key_id(cert: &Path) -> String {
    let pem = Command::new("openssl").args(["x509", "-pubkey", "-noout", "-in"]).arg(cert).output().unwrap();
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&pem.stdout).unwrap();
    let der = child.wait_with_output().unwrap().stdout;
    let hash = Sha256::digest(&der);
    let encoded = base32(&hash[..30]);
    encoded.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":")
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// What a [`FaultProxy`] does to requests on their way to the registry.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Answers this many manifest requests with 503 before letting them through.
    ServerErrors(usize),
    /// Cuts every blob download off after half its body.
    TruncateBlobs,
}

/// A proxy in front of a registry that injects failures: one request per
/// connection (it answers with `Connection: close`), so it can inspect each.
pub struct FaultProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// `METHOD path -> what happened`
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl FaultProxy {
    pub fn start(upstream: u16, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, log2) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut errors_left = match fault {
                Fault::ServerErrors(n) => n,
                Fault::TruncateBlobs => 0,
            };
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = proxy_one(stream, upstream, fault, &mut errors_left, &log2);
            }
        });
        FaultProxy { port, stop, thread: Some(thread), log }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_one(
    stream: TcpStream,
    upstream: u16,
    fault: Fault,
    errors_left: &mut usize,
    log: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("host") {
                continue;
            }
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let request_line = head.lines().next().unwrap_or("").to_string();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut out = stream;
    if matches!(fault, Fault::ServerErrors(_)) && path.contains("/manifests/") && *errors_left > 0 {
        *errors_left -= 1;
        log.lock().unwrap().push(format!("{method} {path} -> 503"));
        return write!(out, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let (first, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
    write!(up, "{first}\r\nHost: 127.0.0.1:{upstream}\r\nConnection: close\r\n{rest}\r\n")?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let cut = matches!(fault, Fault::TruncateBlobs) && method == "GET" && path.contains("/blobs/sha256:");
    if cut {
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(response.len());
        let keep = split + (response.len() - split) / 2;
        log.lock().unwrap().push(format!("{method} {path} -> cut at {}", keep - split));
        out.write_all(&response[..keep])?;
        return Ok(());
    }
    log.lock().unwrap().push(format!("{method} {path} -> passed"));
    out.write_all(&response)
}
