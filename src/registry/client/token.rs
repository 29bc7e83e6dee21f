//! The auth challenge and tokens: the `Authorization` header a request
//! carries, fetched from the challenge's realm when it is a bearer one.

use serde::Deserialize;
use ureq::http::Response;
use ureq::Body;

use super::super::auth::{self, Challenge, Credentials};
use super::super::error::{ErrorKind, RegistryError};
use super::{encode, Client, Method, SendBody, IDENTITY_TOKEN_USER};
use crate::net::{self, Origin};

impl Client {
    /// The `Authorization` header for the current challenge; fetches a bearer
    /// token when there is none (or `refresh` asks for a new one).
    pub(super) fn authorization(&self, refresh: bool) -> Result<Option<String>, RegistryError> {
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
}

pub(super) fn challenge_of(resp: &Response<Body>) -> Option<Challenge> {
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
