//! Which failures are worth another try, and how long to wait before it.

use std::time::Duration;

use ureq::http::Response;
use ureq::{Body, ResponseExt};

use super::super::error::{ErrorKind, RegistryError};
use super::{header, Client, Retryable};
use crate::net::{self, Limits};

/// The longest `Retry-After` kiln waits for; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Client {
    /// After failed try number `attempt`: whether to try again, as the
    /// retry policy says; if so, says so (naming the attempt) and waits.
    pub(super) fn again(&self, attempt: u32, what: &str, r: &Retryable) -> bool {
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
    pub(super) fn retryable(&self, result: &Result<Response<Body>, RegistryError>) -> Option<Retryable> {
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
}
