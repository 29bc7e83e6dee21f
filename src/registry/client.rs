//! HTTP to one registry for one operation: scheme and TLS choice, the auth
//! challenge and tokens, retries with backoff on transient failures.

mod response;
mod retry;
mod tls;
mod token;

use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::Response;
use ureq::{Agent, Body, ResponseExt};

use crate::net::{self, Limits, Origin};

use super::auth::{self, Challenge, Credentials};
use super::error::{ErrorKind, RegistryError};
use super::reference::{is_loopback, Reference};
use super::{RegistryOptions, RetryPolicy};

/// The user name auth files use for an identity token.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

pub use response::{header, max_document};
pub use retry::{backoff_delay, classify, transient, MAX_RETRY_AFTER};
use tls::{cert_dir_for, tls_config};
use token::challenge_of;

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

fn open_at(path: &Path, offset: u64) -> std::io::Result<std::fs::File> {
    use std::io::Seek;
    let mut file = std::fs::File::open(path)?;
    if offset > 0 {
        file.seek(std::io::SeekFrom::Start(offset))?;
    }
    Ok(file)
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
    fn query_values_are_encoded() {
        assert_eq!(encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
    }
}
