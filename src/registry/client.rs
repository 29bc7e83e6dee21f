//! HTTP to one registry for one operation: scheme and TLS choice, the auth
//! challenge and tokens, retries with backoff on transient failures.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body, ResponseExt};

use crate::net::{self, Limits, NetError, Origin, Paced};

use super::auth::{self, Challenge, Credentials};
use super::error::{ErrorKind, RegistryError};
use super::reference::{is_loopback, Reference};
use super::{RegistryOptions, RetryPolicy};

/// The user name auth files use for an identity token.
pub const IDENTITY_TOKEN_USER: &str = "<token>";
/// The largest manifest or token answer kiln reads.
const MAX_DOCUMENT: u64 = 8 << 20;
/// The longest `Retry-After` kiln waits for; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Where podman and skopeo look for per-registry CA certificates.
const SYSTEM_CERTS_D: &str = "/etc/containers/certs.d";
const SYSTEM_CA_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
}

/// A request body that can be sent again on a retry.
#[derive(Clone, Copy)]
pub enum SendBody<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A file sent whole, or `len` bytes from `offset`.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    token: Option<String>,
}

pub struct Client {
    agent: Agent,
    pub reference: Reference,
    base: String,
    action: &'static str,
    creds: Option<Credentials>,
    scopes: Vec<String>,
    auth: Mutex<AuthState>,
    limits: Limits,
    retry: RetryPolicy,
}

/// Why a request may be worth another try, and how long the registry asked
/// to wait (`Retry-After`).
struct Retryable {
    why: String,
    after: Option<Duration>,
}

impl Client {
    /// Connects to `reference`'s registry (checking `/v2/` and learning how it
    /// authenticates) for an operation that needs `scopes`
    /// (`repository:NAME:pull[,push]`).
    pub fn connect(
        reference: &Reference,
        scopes: Vec<String>,
        opts: &RegistryOptions,
        action: &'static str,
    ) -> Result<Client, RegistryError> {
        let creds = auth::credentials_for(&reference.registry, &reference.repository, opts.authfile.as_deref())
            .map_err(|kind| RegistryError::new(action, reference, kind))?;
        Client::connect_with(reference, scopes, opts, action, creds)
    }

    /// [`connect`](Self::connect) with the given credentials instead of the auth files'.
    pub fn connect_with(
        reference: &Reference,
        scopes: Vec<String>,
        opts: &RegistryOptions,
        action: &'static str,
        creds: Option<Credentials>,
    ) -> Result<Client, RegistryError> {
        let err = |kind| RegistryError::new(action, reference, kind);
        let host = reference.api_host().to_string();
        let verify = opts.tls_verify.unwrap_or_else(|| !super::config::is_insecure(&reference.registry));
        let cert_dir = cert_dir_for(&reference.registry, opts.cert_dir.as_deref());
        let limits = opts.net.unwrap_or_else(Limits::from_env);
        let tls = tls_config(verify, cert_dir.as_deref()).map_err(err)?;
        let agent = limits.agent_builder().tls_config(tls).build().into();
        let mut client = Client {
            agent,
            reference: reference.clone(),
            base: String::new(),
            action,
            creds,
            scopes,
            auth: Mutex::new(AuthState::default()),
            limits,
            retry: opts.retry,
        };
        // HTTPS first; loopback registries may answer in plain HTTP, as
        // docker allows, and so may any with --tls-verify=false.
        let schemes: &[&str] =
            if is_loopback(&reference.registry) || !verify { &["https", "http"] } else { &["https"] };
        // The first scheme's error is the one worth reporting: a TLS server
        // with an untrusted certificate also fails the HTTP fallback. All
        // schemes are tried again when one failed in a way that may pass
        // (a registry starting, or overloaded).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut first = None;
            let mut retryable = None;
            for scheme in schemes {
                client.base = format!("{scheme}://{host}");
                match client.ping() {
                    Ok(()) => return Ok(client),
                    Err(failed) => {
                        let (e, again) = *failed;
                        log::debug!("{e}");
                        retryable = retryable.or(again);
                        first.get_or_insert(e);
                    }
                }
            }
            let e = first
                .unwrap_or_else(|| err(ErrorKind::Network { host: host.clone(), detail: "no scheme to try".into() }));
            match retryable {
                Some(r) if client.again(attempt, &format!("connect to {}", reference.registry), &r) => {}
                _ => return Err(e),
            }
        }
    }

    /// After failed try number `attempt`: whether to try again, as the
    /// retry policy says; if so, says so (naming the attempt) and waits.
    fn again(&self, attempt: u32, what: &str, r: &Retryable) -> bool {
        if attempt > self.retry.retries {
            return false;
        }
        let wait = match r.after {
            Some(after) => after.min(MAX_RETRY_AFTER),
            None => self.retry.delay.unwrap_or_else(|| backoff_delay(attempt)),
        };
        log::warn!(
            "{what}: {}; retrying in {:.1}s (attempt {} of {})",
            r.why,
            wait.as_secs_f64(),
            attempt + 1,
            self.retry.retries + 1
        );
        std::thread::sleep(wait);
        true
    }

    /// Whether a response or error is worth another try.
    fn retryable(&self, result: &Result<Response<Body>, RegistryError>) -> Option<Retryable> {
        match result {
            Ok(resp) if retryable_status(resp.status().as_u16()) => Some(Retryable {
                why: format!("{} answered {}", net::host_of(&resp.get_uri().to_string()), resp.status()),
                after: retry_after(resp),
            }),
            Ok(_) => None,
            Err(e) if transient(&e.kind) || matches!(e.kind, ErrorKind::Refused(_)) => {
                Some(Retryable { why: e.kind.to_string(), after: None })
            }
            Err(_) => None,
        }
    }

    /// The retry policy, for loops over a whole transfer (a blob body cut off).
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    pub fn err(&self, kind: ErrorKind) -> RegistryError {
        RegistryError::new(self.action, &self.reference, kind)
    }

    /// `/v2/<repository>/<rest>`
    pub fn repo_url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{}", self.base, self.reference.repository, rest)
    }

    /// An upload `Location` as an absolute URL, resolved against the URL
    /// that answered with it. It may name another host: requests there go
    /// without credentials (see [`Client::send`]).
    pub fn absolute(&self, answered: &str, location: &str) -> Result<String, RegistryError> {
        net::join(answered, location).ok_or_else(|| {
            self.err(ErrorKind::Invalid {
                what: "upload location".into(),
                detail: format!("{:?} is not an http(s) URL", net::redact(location)),
            })
        })
    }

    /// The registry's origin: the only one its credentials and tokens go to.
    fn origin(&self) -> Option<Origin> {
        Origin::of(&self.base)
    }

    /// `GET /v2/`; a failure comes with whether it is worth another try.
    fn ping(&self) -> Result<(), Box<(RegistryError, Option<Retryable>)>> {
        let url = format!("{}/v2/", self.base);
        let result = self.once(Method::Get, &url, &[], SendBody::Empty, None);
        let again = self.retryable(&result);
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => return Err(Box::new((e, again))),
        };
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            401 => {
                let challenge = challenge_of(&resp);
                let mut state = self.auth.lock().unwrap_or_else(|p| p.into_inner());
                state.challenge = challenge;
                Ok(())
            }
            status => Err(Box::new((
                self.err(ErrorKind::Status {
                    what: format!("{} is not a registry (GET /v2/)", self.reference.registry),
                    status,
                    detail: self.error_detail(&mut resp),
                }),
                again,
            ))),
        }
    }

    /// Sends a request with authentication, retrying transient failures; a
    /// 401 refreshes the token (once) for the challenge it carries. The
    /// credentials (or token) go only to the registry's own origin: not to
    /// an upload `Location` elsewhere, nor across a redirect to a blob store.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: SendBody<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        let origin = self.origin();
        let mut reauthorized = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let authorization = self.authorization(false)?;
            let credentials = authorization.as_deref().zip(origin.as_ref());
            let result = self.once(method, url, headers, body, credentials);
            match result {
                // Only the registry's own 401 is a challenge for its credentials.
                Ok(resp)
                    if resp.status().as_u16() == 401
                        && !reauthorized
                        && origin.as_ref().is_some_and(|o| net::same_origin(o, &resp.get_uri().to_string())) =>
                {
                    reauthorized = true;
                    let fresh = challenge_of(&resp);
                    {
                        let mut state = self.auth.lock().unwrap_or_else(|p| p.into_inner());
                        if fresh.is_some() {
                            state.challenge = fresh;
                        }
                        state.token = None;
                    }
                    if self.authorization(true)?.is_none() {
                        return Ok(resp);
                    }
                }
                other => match self.retryable(&other) {
                    Some(r) if self.again(attempt, &what_of(method, url), &r) => {}
                    _ => return other,
                },
            }
        }
    }

    /// One request, no retries; HTTP errors come back as responses.
    /// Redirects of GET and HEAD are followed here, not by ureq, so that
    /// `credentials` (an `Authorization` value and the origin it belongs to)
    /// are sent to that origin only.
    fn once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: SendBody<'_>,
        credentials: Option<(&str, &Origin)>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut url = url.to_string();
        for _ in 0..=net::MAX_REDIRECTS {
            let authorization = match credentials {
                Some((value, origin)) if net::same_origin(origin, &url) => Some(value),
                Some(_) => {
                    log::debug!("not sending credentials to {}: not the origin they are for", net::host_of(&url));
                    None
                }
                None => None,
            };
            let resp = self.exchange(method, &url, headers, body, authorization)?;
            let redirect = matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308);
            let location = header(&resp, "location");
            match location {
                Some(location) if redirect && matches!(method, Method::Get | Method::Head) => {
                    let next = net::join(&url, location).ok_or_else(|| {
                        self.err(ErrorKind::Invalid {
                            what: format!("redirect from {}", net::host_of(&url)),
                            detail: format!("{:?} is not an http(s) URL", net::redact(location)),
                        })
                    })?;
                    log::debug!("{} redirects to {}", net::host_of(&url), net::host_of(&next));
                    url = next;
                }
                _ => return Ok(resp),
            }
        }
        Err(self.err(ErrorKind::Invalid {
            what: what_of(method, &url),
            detail: format!("more than {} redirects", net::MAX_REDIRECTS),
        }))
    }

    /// One HTTP exchange under the client's deadlines.
    fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: SendBody<'_>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut builder = ureq::http::Request::builder().uri(url).method(match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        });
        for (k, v) in headers {
            builder = builder.header(*k, v.as_str());
        }
        if let Some(a) = authorization {
            builder = builder.header("Authorization", a);
        }
        let invalid = |e: ureq::http::Error| {
            self.err(ErrorKind::Invalid { what: format!("request {}", net::redact(url)), detail: e.to_string() })
        };
        let result = match body {
            SendBody::Empty if matches!(method, Method::Get | Method::Head) => {
                self.agent.run(builder.body(ureq::SendBody::none()).map_err(invalid)?)
            }
            SendBody::Empty => self.agent.run(builder.header("Content-Length", "0").body(&[][..]).map_err(invalid)?),
            SendBody::Bytes(bytes) => self.agent.run(builder.body(bytes).map_err(invalid)?),
            SendBody::File { path, offset, len } => {
                let file = open_at(path, offset).map_err(|error| {
                    self.err(ErrorKind::Local { action: "read", path: path.display().to_string(), error })
                })?;
                let mut reader = file.take(len);
                let request = builder
                    .header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map_err(invalid)?;
                // An upload gets the time its size needs at the minimum rate.
                let request =
                    self.agent.configure_request(request).timeout_send_body(Some(self.limits.allowed(len))).build();
                self.agent.run(request)
            }
        };
        result.map_err(|e| self.err(classify(&net::host_of(url), e, &self.limits)))
    }

    /// The `Authorization` header for the current challenge; fetches a bearer
    /// token when there is none (or `refresh` asks for a new one).
    fn authorization(&self, refresh: bool) -> Result<Option<String>, RegistryError> {
        let mut state = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let Some(challenge) = state.challenge.clone() else { return Ok(None) };
        match challenge.scheme.as_str() {
            "basic" => Ok(self.creds.as_ref().map(Credentials::basic_header)),
            "bearer" => {
                if state.token.is_none() || refresh {
                    state.token = Some(self.fetch_token(&challenge)?);
                }
                Ok(state.token.as_ref().map(|t| format!("Bearer {t}")))
            }
            _ => Ok(None),
        }
    }

    /// GETs a token from the challenge's realm for this client's scopes,
    /// with the credentials (if any) as basic auth.
    fn fetch_token(&self, challenge: &Challenge) -> Result<String, RegistryError> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let realm = challenge
            .param("realm")
            .ok_or_else(|| self.err(ErrorKind::Invalid { what: "auth challenge".into(), detail: "no realm".into() }))?;
        let realm_origin = Origin::of(realm).ok_or_else(|| {
            self.err(ErrorKind::Invalid {
                what: "auth challenge".into(),
                detail: format!("the realm {:?} is not an http(s) URL", net::redact(realm)),
            })
        })?;
        let mut query: Vec<String> = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(format!("service={}", encode(service)));
        }
        let mut scopes = self.scopes.clone();
        if let Some(wanted) = challenge.param("scope") {
            for s in wanted.split(' ') {
                if !s.is_empty() && !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_string());
                }
            }
        }
        for scope in &scopes {
            query.push(format!("scope={}", encode(scope)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = if query.is_empty() { realm.to_string() } else { format!("{realm}{sep}{}", query.join("&")) };
        // Credentials for a registry reached over TLS never travel in
        // plain HTTP, wherever its challenge points.
        let creds = self.creds.as_ref().filter(|_| {
            let downgrade = realm_origin.scheme == "http" && self.origin().is_some_and(|o| o.scheme == "https");
            if downgrade {
                log::warn!(
                    "{} sends kiln for a token to {} over plain HTTP: asking without credentials",
                    self.reference.registry,
                    net::host_of(realm)
                );
            }
            !downgrade
        });
        let basic = creds.filter(|c| c.username != IDENTITY_TOKEN_USER).map(Credentials::basic_header);
        // An identity token (docker's `identitytoken`) is an OAuth2 refresh
        // token, traded at the realm with a POST.
        let refresh = creds.filter(|c| c.username == IDENTITY_TOKEN_USER).map(|c| {
            let mut form = vec![
                "grant_type=refresh_token".to_string(),
                format!("refresh_token={}", encode(&c.password)),
                "client_id=kiln".to_string(),
            ];
            if let Some(service) = challenge.param("service") {
                form.push(format!("service={}", encode(service)));
            }
            if !scopes.is_empty() {
                form.push(format!("scope={}", encode(&scopes.join(" "))));
            }
            form.join("&")
        });
        let (method, url, body) = match &refresh {
            Some(form) => (Method::Post, realm.to_string(), SendBody::Bytes(form.as_bytes())),
            None => (Method::Get, url, SendBody::Empty),
        };
        let form_type = [("Content-Type", "application/x-www-form-urlencoded".to_string())];
        let headers: &[(&str, String)] = if refresh.is_some() { &form_type } else { &[] };
        let credentials = basic.as_deref().map(|b| (b, &realm_origin));
        let mut attempt = 0;
        let mut resp = loop {
            attempt += 1;
            let result = self.once(method, &url, headers, body, credentials);
            match self.retryable(&result) {
                Some(r) if self.again(attempt, &format!("get a token from {}", net::host_of(&url)), &r) => {}
                _ => break result?,
            }
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.err(ErrorKind::Unauthorized {
                registry: self.reference.registry.clone(),
                detail: format!(
                    "the token server refused {}",
                    if basic.is_some() || refresh.is_some() { "the credentials" } else { "anonymous access" }
                ),
            }));
        }
        if !(200..300).contains(&status) {
            let detail = self.error_detail(&mut resp);
            return Err(self.err(ErrorKind::Status { what: "token request".into(), status, detail }));
        }
        let answer: TokenAnswer = self.read_json(&mut resp, "token answer")?;
        answer.token.or(answer.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
            self.err(ErrorKind::Invalid { what: "token answer".into(), detail: "it holds no token".into() })
        })
    }

    /// Maps an unsuccessful status to an error about `what`.
    pub fn status_error(&self, what: &str, resp: &mut Response<Body>) -> RegistryError {
        let status = resp.status().as_u16();
        let detail = self.error_detail(resp);
        self.err(match status {
            401 => ErrorKind::Unauthorized { registry: self.reference.registry.clone(), detail },
            403 => ErrorKind::Denied { detail },
            _ => ErrorKind::Status { what: what.to_string(), status, detail },
        })
    }

    /// Checks that the registry accepts this client's credentials: a token
    /// for a bearer challenge, `GET /v2/` with them for a basic one.
    pub fn check_credentials(&self) -> Result<(), RegistryError> {
        let challenge = self.auth.lock().unwrap_or_else(|p| p.into_inner()).challenge.clone();
        let Some(challenge) = challenge else { return Ok(()) };
        if challenge.scheme == "bearer" {
            return self.fetch_token(&challenge).map(|_| ());
        }
        let url = format!("{}/v2/", self.base);
        let authorization = self.authorization(false)?;
        let origin = self.origin();
        let credentials = authorization.as_deref().zip(origin.as_ref());
        let mut resp = self.once(Method::Get, &url, &[], SendBody::Empty, credentials)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.status_error("GET /v2/", &mut resp)),
        }
    }

    /// The body of `resp`, read under the client's deadlines; errors name
    /// the host that answered.
    pub fn body<'a>(&self, resp: &'a mut Response<Body>) -> Paced<ureq::BodyReader<'a>> {
        let host = net::host_of(&resp.get_uri().to_string());
        Paced::new(resp.body_mut().as_reader(), &host, self.limits)
    }

    /// Reads a body of at most `limit` bytes (a manifest, a token answer).
    pub fn read_limited(&self, resp: &mut Response<Body>, limit: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
        let host = net::host_of(&resp.get_uri().to_string());
        let mut bytes = Vec::new();
        self.body(resp).take(limit + 1).read_to_end(&mut bytes).map_err(|e| self.read_error(what, e))?;
        if bytes.len() as u64 > limit {
            return Err(self.err(ErrorKind::Net(Box::new(NetError::TooLarge {
                what: what.to_string(),
                host,
                limit,
                hint: "kiln reads no larger manifests or answers".into(),
            }))));
        }
        Ok(bytes)
    }

    /// A failed body read: a deadline or limit as it is, else a transfer cut short.
    pub fn read_error(&self, what: &str, e: std::io::Error) -> RegistryError {
        self.err(match net::into_net_error(e) {
            Ok(net) => ErrorKind::Net(Box::new(net)),
            Err(e) => ErrorKind::Truncated { what: what.to_string(), detail: e.to_string() },
        })
    }

    /// Reads a small JSON document.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        resp: &mut Response<Body>,
        what: &str,
    ) -> Result<T, RegistryError> {
        let bytes = self.read_limited(resp, MAX_DOCUMENT, what)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.err(ErrorKind::Invalid { what: what.to_string(), detail: e.to_string() }))
    }

    /// The registry's own words from an error body (`{"errors":[{"code","message"}]}`).
    pub fn error_detail(&self, resp: &mut Response<Body>) -> String {
        #[derive(Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<ErrorItem>,
        }
        #[derive(Deserialize)]
        struct ErrorItem {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let mut bytes = Vec::new();
        if self.body(resp).take(64 * 1024).read_to_end(&mut bytes).is_err() {
            return String::new();
        }
        let detail = match serde_json::from_slice::<Errors>(&bytes) {
            Ok(e) if !e.errors.is_empty() => e
                .errors
                .iter()
                .map(|i| if i.message.is_empty() { i.code.clone() } else { format!("{} ({})", i.message, i.code) })
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::from_utf8_lossy(&bytes).trim().chars().take(200).collect(),
        };
        self.scrub(detail)
    }

    /// `text` (a server's words) without the user's secrets: a peer that
    /// echoes them back must not get them printed.
    fn scrub(&self, mut text: String) -> String {
        let mut secrets = Vec::new();
        if let Some(c) = &self.creds {
            secrets.push(c.password.clone());
            secrets.push(c.basic_header().trim_start_matches("Basic ").to_string());
        }
        if let Some(token) = self.auth.try_lock().ok().and_then(|s| s.token.clone()) {
            secrets.push(token);
        }
        for secret in secrets.iter().filter(|s| s.len() >= 4) {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        text
    }
}

/// `GET host/path` for messages: the URL without its query, which may
/// carry a registry's upload state or signature.
fn what_of(method: Method, url: &str) -> String {
    let url = net::redact(url);
    let path = url.split(['?', '#']).next().unwrap_or(&url);
    let name = match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
    };
    format!("{name} {path}")
}

fn tls_config(verify: bool, cert_dir: Option<&Path>) -> Result<TlsConfig, ErrorKind> {
    let mut builder = TlsConfig::builder().disable_verification(!verify);
    let extra = match cert_dir {
        Some(dir) => load_certs(dir)?,
        None => Vec::new(),
    };
    if !extra.is_empty() {
        // Custom CAs are added to the system's, not instead of them.
        let mut roots = Vec::new();
        if let Some(bundle) = SYSTEM_CA_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
            roots.extend(pem_certs(bundle)?);
        }
        roots.extend(extra);
        builder = builder.root_certs(RootCerts::Specific(Arc::new(roots)));
    }
    Ok(builder.build())
}

/// `--cert-dir`, else `/etc/containers/certs.d/<registry>` (and the user's
/// `~/.config/containers/certs.d/<registry>`) when it exists.
fn cert_dir_for(registry: &str, cert_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = cert_dir {
        return Some(dir.to_path_buf());
    }
    let mut candidates = vec![Path::new(SYSTEM_CERTS_D).join(registry)];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(config) = config {
        candidates.insert(0, config.join("containers/certs.d").join(registry));
    }
    candidates.into_iter().find(|d| d.is_dir())
}

/// The CA certificates (`*.crt`) in `dir`.
fn load_certs(dir: &Path) -> Result<Vec<Certificate<'static>>, ErrorKind> {
    let entries = std::fs::read_dir(dir).map_err(|error| ErrorKind::Local {
        action: "read certificate directory",
        path: dir.display().to_string(),
        error,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    paths.sort();
    let mut certs = Vec::new();
    for path in paths {
        certs.extend(pem_certs(&path)?);
    }
    Ok(certs)
}

fn pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>, ErrorKind> {
    let pem = std::fs::read(path).map_err(|error| ErrorKind::Local {
        action: "read certificate",
        path: path.display().to_string(),
        error,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(ErrorKind::Invalid {
                    what: format!("certificate file {}", path.display()),
                    detail: e.to_string(),
                })
            }
        }
    }
    Ok(certs)
}

fn open_at(path: &Path, offset: u64) -> std::io::Result<std::fs::File> {
    use std::io::Seek;
    let mut file = std::fs::File::open(path)?;
    if offset > 0 {
        file.seek(std::io::SeekFrom::Start(offset))?;
    }
    Ok(file)
}

fn challenge_of(resp: &Response<Body>) -> Option<Challenge> {
    let mut all: Vec<Challenge> = Vec::new();
    for value in resp.headers().get_all("www-authenticate") {
        if let Ok(text) = value.to_str() {
            all.extend(auth::parse_challenges(text));
        }
    }
    // Prefer bearer: it scopes what a leaked token can do.
    let pick = all.iter().position(|c| c.scheme == "bearer").or_else(|| all.iter().position(|c| c.scheme == "basic"));
    pick.map(|i| all.swap_remove(i))
}

/// Turns a transport failure into what a user can act on.
pub fn classify(host: &str, e: ureq::Error, limits: &Limits) -> ErrorKind {
    if let ureq::Error::Timeout(t) = &e {
        if let Some(net) = net::timeout_error(host, *t, limits) {
            return ErrorKind::Net(Box::new(net));
        }
    }
    let host = host.to_string();
    match e {
        ureq::Error::HostNotFound => ErrorKind::UnknownHost(host),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => ErrorKind::Refused(host),
        ureq::Error::Io(io) if looks_like_dns(&io.to_string()) => ErrorKind::UnknownHost(host),
        ureq::Error::Io(io) if looks_like_tls(&io.to_string()) => ErrorKind::Tls { host, detail: io.to_string() },
        ureq::Error::Tls(detail) => ErrorKind::Tls { host, detail: detail.to_string() },
        ureq::Error::Rustls(e) => ErrorKind::Tls { host, detail: e.to_string() },
        ureq::Error::Pem(e) => ErrorKind::Tls { host, detail: e.to_string() },
        ureq::Error::Timeout(t @ (ureq::Timeout::Connect | ureq::Timeout::Resolve)) => {
            ErrorKind::Unreachable { host, detail: format!("timed out ({t})") }
        }
        ureq::Error::Timeout(t) => ErrorKind::Network { host, detail: format!("timed out ({t})") },
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ErrorKind::Network { host, detail: "the connection closed early".into() }
        }
        other => {
            let detail = other.to_string();
            if looks_like_tls(&detail) {
                ErrorKind::Tls { host, detail }
            } else {
                ErrorKind::Network { host, detail }
            }
        }
    }
}

/// Name lookup failures reach ureq as plain io errors from getaddrinfo.
fn looks_like_dns(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("lookup address") || t.contains("name or service not known") || t.contains("no address associated")
}

fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("certificate") || t.contains("tls") || t.contains("handshake") || t.contains("corrupt message")
}

/// Failures worth another try: dropped connections and timeouts, not a
/// refused connection, an unknown host or a TLS rejection.
pub fn transient(kind: &ErrorKind) -> bool {
    match kind {
        ErrorKind::Network { .. } | ErrorKind::Truncated { .. } => true,
        ErrorKind::Net(e) => e.is_transient(),
        _ => false,
    }
}

fn retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..600).contains(&status) && status != 501 && status != 505
}

/// 0.25 s, 0.5 s, 1 s, … with a little jitter so parallel pulls spread out.
pub fn backoff_delay(attempt: u32) -> Duration {
    let base = 250u64 << attempt.saturating_sub(1).min(5);
    let jitter = (std::process::id() as u64
        ^ std::time::SystemTime::now().elapsed().map(|d| d.as_nanos() as u64).unwrap_or(0))
        % 100;
    Duration::from_millis(base + jitter)
}

/// A `Retry-After` of `429` or `503`: seconds, or an HTTP date.
fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    if !matches!(resp.status().as_u16(), 429 | 503) {
        return None;
    }
    let value = header(resp, "retry-after")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((when.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

pub fn max_document() -> u64 {
    MAX_DOCUMENT
}

pub fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_classified() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let limits = Limits::default();
        assert!(matches!(classify("h:1", ureq::Error::Io(refused), &limits), ErrorKind::Refused(h) if h == "h:1"));
        let dns = std::io::Error::other("failed to lookup address information: Name or service not known");
        assert!(matches!(classify("h", ureq::Error::Io(dns), &limits), ErrorKind::UnknownHost(_)));
        assert!(matches!(classify("h", ureq::Error::HostNotFound, &limits), ErrorKind::UnknownHost(_)));
        let idle = classify("h:2", ureq::Error::Timeout(ureq::Timeout::PerRead), &limits);
        assert!(transient(&idle) && idle.to_string().contains("h:2"), "{idle}");
        let slow = classify("h:3", ureq::Error::Timeout(ureq::Timeout::RecvResponse), &limits);
        assert!(!transient(&slow) && slow.to_string().contains("h:3"), "{slow}");
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let kind = classify("h", ureq::Error::Io(reset), &limits);
        assert!(transient(&kind), "{kind}");
        assert!(!transient(&ErrorKind::Refused("h".into())));
        assert!(retryable_status(503) && retryable_status(429) && !retryable_status(501) && !retryable_status(404));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
    }
}
