//! Credentials and registry authentication.
//!
//! Credentials come from, in order: `--authfile` (alone, when given), else
//! `$REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`,
//! `~/.config/containers/auth.json` and `~/.docker/config.json`. In each
//! file `credHelpers` and `credsStore` name `docker-credential-*` programs
//! that are asked instead of the file's `auths`.
//!
//! Registries challenge with `WWW-Authenticate`: `Basic` gets the
//! credentials on every request, `Bearer` sends kiln to a token server for
//! a token covering the repositories and actions at hand.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;

use super::error::ErrorKind;
use super::reference::DOCKER_HUB;

/// The key docker's tools use for Docker Hub.
const DOCKER_HUB_LEGACY_KEY: &str = "https://index.docker.io/v1/";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: <hidden> }}", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!("Basic {}", BASE64.encode(format!("{}:{}", self.username, self.password)))
    }
}

/// The files credentials are read from, most important first.
pub fn read_paths(authfile: Option<&Path>) -> Vec<PathBuf> {
    if let Some(file) = authfile {
        return vec![file.to_path_buf()];
    }
    let env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut paths = Vec::new();
    if let Some(file) = env("REGISTRY_AUTH_FILE") {
        paths.push(file);
    }
    if let Some(run) = env("XDG_RUNTIME_DIR") {
        paths.push(run.join("containers/auth.json"));
    }
    let config = env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config")));
    if let Some(config) = config {
        paths.push(config.join("containers/auth.json"));
    }
    if let Some(docker) = env("DOCKER_CONFIG") {
        paths.push(docker.join("config.json"));
    } else if let Some(home) = env("HOME") {
        paths.push(home.join(".docker/config.json"));
    }
    paths
}

/// The file `kiln login` writes and `kiln logout` edits: `--authfile`, else
/// `$REGISTRY_AUTH_FILE`, else `${XDG_RUNTIME_DIR}/containers/auth.json`,
/// else `~/.config/containers/auth.json`.
pub fn write_path(authfile: Option<&Path>) -> PathBuf {
    if let Some(file) = authfile {
        return file.to_path_buf();
    }
    let env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(file) = env("REGISTRY_AUTH_FILE") {
        return file;
    }
    if let Some(run) = env("XDG_RUNTIME_DIR") {
        return run.join("containers/auth.json");
    }
    let config = env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config")));
    config.unwrap_or_else(|| PathBuf::from(".")).join("containers/auth.json")
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// Credentials for `registry` (and, for namespaced entries, `repository`),
/// or `None` to go anonymous.
pub fn credentials_for(
    registry: &str,
    repository: &str,
    authfile: Option<&Path>,
) -> Result<Option<Credentials>, ErrorKind> {
    for path in read_paths(authfile) {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && authfile.is_none() => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(ErrorKind::Local { action: "read auth file", path: path.display().to_string(), error })
            }
        };
        let file: AuthFile = serde_json::from_slice(&bytes)
            .map_err(|e| ErrorKind::Credentials(format!("cannot parse {}: {e}", path.display())))?;
        if let Some(found) = lookup(&file, registry, repository)? {
            log::debug!("credentials for {registry} from {}", path.display());
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn lookup(file: &AuthFile, registry: &str, repository: &str) -> Result<Option<Credentials>, ErrorKind> {
    if let Some(helper) = file.cred_helpers.get(registry) {
        return helper_get(helper, registry);
    }
    // Most specific first: registry/ns/repo, registry/ns, registry.
    let full = format!("{registry}/{repository}");
    let mut keys: Vec<&str> = vec![full.as_str()];
    let mut rest = full.as_str();
    while let Some((parent, _)) = rest.rsplit_once('/') {
        keys.push(parent);
        rest = parent;
    }
    for key in keys {
        let entry = file.auths.iter().find(|(k, _)| normalize_key(k) == key).map(|(_, v)| v);
        if let Some(entry) = entry {
            if let Some(creds) = decode_entry(entry, key)? {
                return Ok(Some(creds));
            }
        }
    }
    match &file.creds_store {
        Some(store) => helper_get(store, registry),
        None => Ok(None),
    }
}

/// `https://index.docker.io/v1/` → `docker.io`, `http://host:5000` → `host:5000`;
/// a key without a scheme is kept (it may name a namespace).
fn normalize_key(key: &str) -> &str {
    let stripped = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://"));
    let host = match stripped {
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => key.trim_end_matches('/'),
    };
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

fn decode_entry(entry: &AuthEntry, key: &str) -> Result<Option<Credentials>, ErrorKind> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || ErrorKind::Credentials(format!("the auth entry for {key} is not base64 of user:password"));
        let decoded = BASE64.decode(auth.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials { username: username.to_string(), password: password.to_string() }));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials { username: u.clone(), password: p.clone() }));
    }
    if let Some(token) = &entry.identity_token {
        return Ok(Some(Credentials { username: "<token>".to_string(), password: token.clone() }));
    }
    Ok(None)
}

/// Asks `docker-credential-<helper> get` for `registry`'s credentials.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>, ErrorKind> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperAnswer {
        username: String,
        secret: String,
    }
    let program = format!("docker-credential-{helper}");
    let server = if registry == DOCKER_HUB { DOCKER_HUB_LEGACY_KEY } else { registry };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ErrorKind::Credentials(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its status below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| ErrorKind::Credentials(format!("{program} get: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // The protocol's answer for "no credentials stored".
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = if stdout.trim().is_empty() { stderr.trim().to_string() } else { stdout.trim().to_string() };
        return Err(ErrorKind::Credentials(format!("{program} get failed ({}): {said}", output.status)));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|e| ErrorKind::Credentials(format!("{program} get printed no credentials JSON: {e}")))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials { username: answer.username, password: answer.secret }))
}

/// Records `creds` for `registry` in the auth file at `path`, keeping
/// everything else the file holds. The file is replaced atomically, mode 0600.
pub fn store_credentials(path: &Path, registry: &str, creds: &Credentials) -> Result<(), ErrorKind> {
    let mut doc = read_json_or_empty(path)?;
    let auth = BASE64.encode(format!("{}:{}", creds.username, creds.password));
    let root = doc.as_object_mut().ok_or_else(|| not_an_object(path))?;
    let auths = root.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| not_an_object(path))?;
    auths.insert(registry.to_string(), serde_json::json!({ "auth": auth }));
    write_json(path, &doc)
}

/// Removes `registry`'s entry (or, with `None`, all entries); returns whether
/// anything was removed.
pub fn remove_credentials(path: &Path, registry: Option<&str>) -> Result<bool, ErrorKind> {
    if !path.exists() {
        return Ok(false);
    }
    let mut doc = read_json_or_empty(path)?;
    let root = doc.as_object_mut().ok_or_else(|| not_an_object(path))?;
    let Some(auths) = root.get_mut("auths").and_then(|a| a.as_object_mut()) else { return Ok(false) };
    let removed = match registry {
        Some(registry) => {
            let keys: Vec<String> = auths.keys().filter(|k| normalize_key(k) == registry).cloned().collect();
            keys.iter().filter(|k| auths.remove(k.as_str()).is_some()).count() > 0
        }
        None => {
            let any = !auths.is_empty();
            auths.clear();
            any
        }
    };
    if removed {
        write_json(path, &doc)?;
    }
    Ok(removed)
}

fn not_an_object(path: &Path) -> ErrorKind {
    ErrorKind::Credentials(format!("{} does not hold a JSON object with an \"auths\" object", path.display()))
}

fn read_json_or_empty(path: &Path) -> Result<serde_json::Value, ErrorKind> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(serde_json::json!({})),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ErrorKind::Credentials(format!("cannot parse {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(error) => Err(ErrorKind::Local { action: "read auth file", path: path.display().to_string(), error }),
    }
}

fn write_json(path: &Path, doc: &serde_json::Value) -> Result<(), ErrorKind> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let local = |action: &'static str, p: &Path| {
        let p = p.display().to_string();
        move |error| ErrorKind::Local { action, path: p, error }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(local("create directory", &dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .map_err(local("create temp file in", &dir))?;
    let mut bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
    bytes.push(b'\n');
    tmp.write_all(&bytes).map_err(local("write", tmp.path()))?;
    tmp.as_file().sync_all().map_err(local("fsync", tmp.path()))?;
    tmp.persist(path).map_err(|e| ErrorKind::Local {
        action: "replace",
        path: path.display().to_string(),
        error: e.error,
    })?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercase: `bearer`, `basic`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235: challenges of a scheme and
/// comma-separated `key=value` or `key="quoted"` parameters).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Lexer { s: header.as_bytes(), i: 0 };
    loop {
        p.skip(|c| c == b' ' || c == b'\t' || c == b',');
        let token = p.token();
        if token.is_empty() {
            break;
        }
        p.skip(|c| c == b' ' || c == b'\t');
        if p.peek() == Some(b'=') {
            // A parameter of the current challenge.
            p.i += 1;
            p.skip(|c| c == b' ' || c == b'\t');
            let value = if p.peek() == Some(b'"') { p.quoted() } else { p.token() };
            if let Some(current) = out.last_mut() {
                current.params.insert(token.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge { scheme: token.to_ascii_lowercase(), params: BTreeMap::new() });
        }
    }
    out
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> String {
        let start = self.i;
        self.skip(|c| !matches!(c, b' ' | b'\t' | b',' | b'=' | b'"'));
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut value = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        value.push(next);
                        self.i += 1;
                    }
                }
                _ => value.push(c),
            }
        }
        String::from_utf8_lossy(&value).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull,push"));
        let c = parse_challenges(r#"Basic realm="Registry \"x\"", Bearer realm=http://t/token"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("Registry \"x\""));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("http://t/token"));
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn auth_file_entries_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        let creds = Credentials { username: "u".into(), password: "p:w".into() };
        store_credentials(&file, "reg.example:5000", &creds).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(credentials_for("reg.example:5000", "a/b", Some(&file)).unwrap(), Some(creds.clone()));
        assert_eq!(credentials_for("other.example", "a/b", Some(&file)).unwrap(), None);

        // docker's legacy keys and namespaced entries
        let bob = BASE64.encode("bob:pw");
        let ns = BASE64.encode("ns:pw2");
        std::fs::write(
            &file,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{bob}"}},"quay.io/team":{{"auth":"{ns}"}},"other":{{}}}},"x":1}}"#),
        )
        .unwrap();
        assert_eq!(credentials_for("docker.io", "library/busybox", Some(&file)).unwrap().unwrap().username, "bob");
        assert_eq!(credentials_for("quay.io", "team/app", Some(&file)).unwrap().unwrap().username, "ns");
        assert_eq!(credentials_for("quay.io", "other/app", Some(&file)).unwrap(), None);

        assert!(remove_credentials(&file, Some("docker.io")).unwrap());
        assert!(!remove_credentials(&file, Some("docker.io")).unwrap());
        let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(kept["x"], 1, "unrelated keys survive");
        assert!(remove_credentials(&file, None).unwrap());
        assert_eq!(credentials_for("quay.io", "team/app", Some(&file)).unwrap(), None);
    }

    #[test]
    fn credential_helpers_are_asked() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-kilntest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nif [ \"$server\" = reg.example ]; then echo '{\"ServerURL\":\"reg.example\",\"Username\":\"helper\",\"Secret\":\"s3\"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, r#"{"credHelpers":{"reg.example":"kilntest"},"credsStore":"kilntest"}"#).unwrap();
        let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
        // Only this test's helper is found through this PATH entry.
        let file_auth: AuthFile = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let with_path = |f: &dyn Fn() -> Result<Option<Credentials>, ErrorKind>| {
            let old = std::env::var_os("PATH");
            std::env::set_var("PATH", &path);
            let r = f();
            if let Some(old) = old {
                std::env::set_var("PATH", old);
            }
            r
        };
        let got = with_path(&|| lookup(&file_auth, "reg.example", "x")).unwrap().unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("helper", "s3"));
        assert_eq!(with_path(&|| lookup(&file_auth, "elsewhere.example", "x")).unwrap(), None);
    }
}
