//! Network peers are untrusted: a registry, a token server or the server of
//! a remote context may be hostile. So every exchange has deadlines (an
//! idle one for each read and write, an overall one for the answer and its
//! body), downloads stop at a size limit, and credentials only go to the
//! origin (scheme, host and port) they belong to: kiln follows redirects
//! itself and decides at each hop what the request may carry.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use ureq::config::ConfigBuilder;
use ureq::typestate::AgentScope;

/// Seconds to wait for the next byte before giving up on a peer.
pub const IDLE_ENV: &str = "KILN_NET_IDLE_TIMEOUT";
/// Seconds an answer may take (headers, and a body on top of its transfer time).
pub const DEADLINE_ENV: &str = "KILN_NET_TIMEOUT";
/// Bytes per second a body must average once the deadline has passed.
pub const MIN_RATE_ENV: &str = "KILN_NET_MIN_RATE";

const DEFAULT_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
const DEFAULT_MIN_RATE: u64 = 16 << 10;
/// Redirects followed for one request, as browsers and curl allow.
pub const MAX_REDIRECTS: usize = 10;

/// How long kiln waits for network peers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The longest wait for the next byte to arrive (or a write to drain).
    pub idle: Duration,
    /// The time an answer's headers may take, and a body's grace period: a
    /// body of N bytes must be done within `deadline + N / min_rate`, so a
    /// peer that drips a byte a second fails after `deadline` while a large
    /// blob on a slow but working link gets the time it needs.
    pub deadline: Duration,
    /// Bytes per second, see `deadline`.
    pub min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { idle: DEFAULT_IDLE, deadline: DEFAULT_DEADLINE, min_rate: DEFAULT_MIN_RATE }
    }
}

impl Limits {
    /// The defaults, changed by `KILN_NET_IDLE_TIMEOUT`, `KILN_NET_TIMEOUT`
    /// (seconds, fractions allowed) and `KILN_NET_MIN_RATE` (bytes per
    /// second, k/m/g suffixes allowed). A value that does not parse is
    /// ignored with a warning.
    pub fn from_env() -> Limits {
        let mut limits = Limits::default();
        let seconds = |var: &str, default: Duration| -> Duration {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => match v.trim().parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
                    _ => {
                        log::warn!("{var}={v:?} is not a positive number of seconds; using {}", seconds_text(default));
                        default
                    }
                },
                _ => default,
            }
        };
        limits.idle = seconds(IDLE_ENV, limits.idle);
        limits.deadline = seconds(DEADLINE_ENV, limits.deadline);
        if let Ok(v) = std::env::var(MIN_RATE_ENV) {
            match parse_size(&v) {
                Ok(rate) if rate > 0 => limits.min_rate = rate,
                _ if v.trim().is_empty() => {}
                _ => log::warn!("{MIN_RATE_ENV}={v:?} is not a positive number of bytes; using {}", DEFAULT_MIN_RATE),
            }
        }
        limits
    }

    /// The time a body of `bytes` bytes may take.
    pub fn allowed(&self, bytes: u64) -> Duration {
        self.deadline + Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64)
    }

    /// An agent configured with these limits, following no redirects (the
    /// caller does, to decide where credentials go) and answering HTTP
    /// errors as responses.
    pub fn agent_builder(&self) -> ConfigBuilder<AgentScope> {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(self.idle.min(Duration::from_secs(30))))
            .timeout_per_read(Some(self.idle))
            .timeout_per_write(Some(self.idle))
            .timeout_recv_response(Some(self.deadline))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            // Blobs and downloads are read (and digested) as they are.
            .accept_encoding("identity")
    }
}

/// Why kiln gave up on a peer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{host} sent nothing for {}; giving up (set {IDLE_ENV}=SECONDS to wait longer)", seconds_text(*.idle))]
    Idle { host: String, idle: Duration },
    #[error(
        "{host} is too slow: it sent {} in {}, and kiln allows {} plus a second per {} (set {DEADLINE_ENV}=SECONDS or {MIN_RATE_ENV}=BYTES to allow more)",
        human_bytes(*.bytes), seconds_text(*.elapsed), seconds_text(.limits.deadline), human_bytes(.limits.min_rate)
    )]
    TooSlow { host: String, bytes: u64, elapsed: Duration, limits: Limits },
    #[error("{host} did not answer within {} (set {DEADLINE_ENV}=SECONDS to wait longer)", seconds_text(*.deadline))]
    NoAnswer { host: String, deadline: Duration },
    #[error("{what} from {host} is larger than {} ({hint})", human_bytes(*.limit))]
    TooLarge { what: String, host: String, limit: u64, hint: String },
}

impl NetError {
    /// Worth another try: a stalled connection may be a passing failure;
    /// a peer that is too slow overall or too large is not.
    pub fn is_transient(&self) -> bool {
        matches!(self, NetError::Idle { .. })
    }

    pub fn into_io(self) -> io::Error {
        let kind = match self {
            NetError::TooLarge { .. } => io::ErrorKind::FileTooLarge,
            _ => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, self)
    }
}

/// The [`NetError`] inside an io error from a [`Paced`] reader.
pub fn net_error(e: &io::Error) -> Option<&NetError> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<NetError>())
}

/// The [`NetError`] an io error carries, or the error back.
pub fn into_net_error(e: io::Error) -> Result<NetError, io::Error> {
    if net_error(&e).is_none() {
        return Err(e);
    }
    let kind = e.kind();
    match e.into_inner().map(|inner| inner.downcast::<NetError>()) {
        Some(Ok(net)) => Ok(*net),
        Some(Err(other)) => Err(io::Error::new(kind, other)),
        None => Err(io::Error::from(kind)),
    }
}

/// A ureq timeout as what a user reads: which peer, and which deadline.
pub fn timeout_error(host: &str, timeout: ureq::Timeout, limits: &Limits) -> Option<NetError> {
    let host = host.to_string();
    match timeout {
        ureq::Timeout::PerRead | ureq::Timeout::PerWrite => Some(NetError::Idle { host, idle: limits.idle }),
        ureq::Timeout::RecvResponse | ureq::Timeout::Await100 => {
            Some(NetError::NoAnswer { host, deadline: limits.deadline })
        }
        // Connect and resolve timeouts are reported as unreachable hosts.
        _ => None,
    }
}

/// A response body read under the deadlines of [`Limits`]: each read waits
/// at most `idle` (the agent's per-read timeout), and the body as a whole
/// must keep to `deadline + bytes / min_rate`.
pub struct Paced<R> {
    inner: R,
    host: String,
    limits: Limits,
    started: Instant,
    bytes: u64,
}

impl<R: Read> Paced<R> {
    /// `host` names the peer in errors; the clock starts now.
    pub fn new(inner: R, host: &str, limits: Limits) -> Paced<R> {
        Paced { inner, host: host.to_string(), limits, started: Instant::now(), bytes: 0 }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn check(&self) -> io::Result<()> {
        let elapsed = self.started.elapsed();
        if elapsed > self.limits.allowed(self.bytes) {
            return Err(NetError::TooSlow { host: self.host.clone(), bytes: self.bytes, elapsed, limits: self.limits }
                .into_io());
        }
        Ok(())
    }
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        match self.inner.read(buf) {
            Ok(0) => Ok(0),
            Ok(n) => {
                self.bytes += n as u64;
                self.check()?;
                Ok(n)
            }
            Err(e) => Err(self.translate(e)),
        }
    }
}

impl<R> Paced<R> {
    /// ureq reports its timeouts wrapped in io errors; name the peer instead.
    fn translate(&self, e: io::Error) -> io::Error {
        let timeout = match e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()) {
            Some(ureq::Error::Timeout(t)) => Some(*t),
            _ if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                Some(ureq::Timeout::PerRead)
            }
            _ => None,
        };
        match timeout {
            Some(ureq::Timeout::PerRead) => {
                NetError::Idle { host: self.host.clone(), idle: self.limits.idle }.into_io()
            }
            Some(_) => NetError::TooSlow {
                host: self.host.clone(),
                bytes: self.bytes,
                elapsed: self.started.elapsed(),
                limits: self.limits,
            }
            .into_io(),
            None => e,
        }
    }
}

/// Where a URL's requests go: credentials are tied to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute http(s) URL, ports made explicit.
    pub fn of(url: &str) -> Option<Origin> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = uri.authority()?;
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Origin { scheme, host, port: authority.port_u16().unwrap_or(default_port) })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Whether `url` is at `origin`.
pub fn same_origin(origin: &Origin, url: &str) -> bool {
    Origin::of(url).as_ref() == Some(origin)
}

/// `host[:port]` of a URL as written, without any `user:password@`.
pub fn host_of(url: &str) -> String {
    let (_, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_string()
}

/// A URL fit for messages and logs: any `user:password@` is dropped.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{tail}"),
        None => url.to_string(),
    }
}

/// Resolves a `Location` against the URL that answered with it (RFC 3986
/// reference resolution, for the forms servers send). Only http(s) targets
/// are followed. The user information of `base` stays with relative
/// references, which keep its origin, and never moves to another origin.
pub fn join(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or(location);
    let has_scheme = location
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)));
    let joined = if has_scheme {
        location.to_string()
    } else {
        let (scheme, rest) = base.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if let Some(net_path) = location.strip_prefix("//") {
            format!("{scheme}://{net_path}")
        } else if location.starts_with('/') {
            format!("{scheme}://{authority}{location}")
        } else {
            let path_and_query = &rest[end..];
            let path = path_and_query.split(['?', '#']).next().unwrap_or("");
            if location.is_empty() {
                format!("{scheme}://{authority}{path_and_query}")
            } else if location.starts_with('?') {
                format!("{scheme}://{authority}{path}{location}")
            } else {
                let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
                format!("{scheme}://{authority}{dir}{location}")
            }
        }
    };
    Origin::of(&joined)?;
    Some(joined)
}

/// Bytes with an optional suffix, 1024-based as docker's sizes are: `512`,
/// `100k`, `64M`, `2g`, `2GiB`, `1t`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let bad = || format!("invalid size {text:?}: expected bytes with an optional k, m, g or t suffix, e.g. 2g");
    let number_end = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(number_end);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// `2 GiB`, `1.5 MiB`, `300 bytes`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    format!("{} {}", text.strip_suffix(".0").unwrap_or(&text), UNITS[unit])
}

fn seconds_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = Origin::of("https://Reg.Example/v2/").unwrap();
        assert_eq!(o, Origin { scheme: "https".into(), host: "reg.example".into(), port: 443 });
        assert!(same_origin(&o, "https://reg.example:443/v2/x/blobs/uploads/1"));
        assert!(!same_origin(&o, "http://reg.example/v2/"), "a downgrade to http is another origin");
        assert!(!same_origin(&o, "https://reg.example:5000/v2/"));
        assert!(!same_origin(&o, "https://cdn.reg.example/v2/"), "subdomains are other origins");
        assert!(!same_origin(&o, "https://reg.example.evil/v2/"));
        assert!(!same_origin(&o, "ftp://reg.example/"));
        let local = Origin::of("http://127.0.0.1:5000/v2/").unwrap();
        assert!(!same_origin(&local, "http://localhost:5000/v2/"));
        assert!(!same_origin(&local, "http://127.0.0.1:5001/v2/"));
        assert!(same_origin(&local, "http://user:pw@127.0.0.1:5000/x"));
    }

    #[test]
    fn locations_resolve_against_the_answering_url() {
        let base = "http://u:p@h:1/v2/r/blobs/uploads/?mount=x";
        assert_eq!(join(base, "/v2/r/blobs/uploads/abc").unwrap(), "http://u:p@h:1/v2/r/blobs/uploads/abc");
        assert_eq!(join(base, "abc?s=1").unwrap(), "http://u:p@h:1/v2/r/blobs/uploads/abc?s=1");
        assert_eq!(join(base, "?s=2").unwrap(), "http://u:p@h:1/v2/r/blobs/uploads/?s=2");
        assert_eq!(join(base, "https://other:2/up").unwrap(), "https://other:2/up");
        assert_eq!(join(base, "//other:3/up#frag").unwrap(), "http://other:3/up");
        assert_eq!(join(base, "file:///etc/passwd"), None);
        assert_eq!(join(base, "javascript:alert(1)"), None);
    }

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(redact("https://user:secret@h:1/a@b?c"), "https://h:1/a@b?c");
        assert_eq!(redact("http://h/x"), "http://h/x");
        assert_eq!(host_of("https://user:secret@h:1/a"), "h:1");
        assert_eq!(host_of("http://h"), "h");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("100k").unwrap(), 100 << 10);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("64 MB").unwrap(), 64 << 20);
        assert!(parse_size("2x").is_err() && parse_size("").is_err() && parse_size("99999999999t").is_err());
        assert_eq!(human_bytes(2 << 30), "2 GiB");
        assert_eq!(human_bytes(1536 << 10), "1.5 MiB");
        assert_eq!(human_bytes(300), "300 bytes");
    }

    #[test]
    fn paced_reads_fail_a_drip_with_the_host_named() {
        struct Drip;
        impl Read for Drip {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                buf[0] = b'x';
                Ok(1)
            }
        }
        let limits = Limits { idle: Duration::from_secs(1), deadline: Duration::from_millis(100), min_rate: 1 << 20 };
        let started = Instant::now();
        let err = io::copy(&mut Paced::new(Drip, "drip.example:8", limits), &mut io::sink()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        let net = net_error(&err).expect("a NetError");
        assert!(matches!(net, NetError::TooSlow { .. }), "{net}");
        assert!(net.to_string().contains("drip.example:8") && net.to_string().contains(DEADLINE_ENV), "{net}");
        // A fast body passes.
        let data = vec![7u8; 1 << 20];
        let mut out = Vec::new();
        io::copy(&mut Paced::new(&data[..], "h", limits), &mut out).unwrap();
        assert_eq!(out.len(), data.len());
    }
}
