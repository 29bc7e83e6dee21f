//! Reading a registry's answers: bodies under the client's deadlines and
//! limits, small JSON documents, and error bodies in the user's words
//! without their secrets.

use std::io::Read;

use serde::Deserialize;

use ureq::http::Response;
use ureq::{Body, ResponseExt};

use super::super::error::{ErrorKind, RegistryError};
use super::Client;
use crate::net::{self, NetError, Paced};

/// The largest manifest or token answer kiln reads.
const MAX_DOCUMENT: u64 = 8 << 20;

impl Client {
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

pub fn max_document() -> u64 {
    MAX_DOCUMENT
}

pub fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}
