//! Registry references as docker parses them: `busybox` is
//! `docker.io/library/busybox:latest`, a first component with a dot, a port
//! or `localhost` names the registry, and `@sha256:…` pins a digest.

use std::fmt;

use crate::image::reference::{self as local, ReferenceError};

/// The registry docker means when a name has none.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `quay.io`, `127.0.0.1:5000`, `[::1]:5000`
    pub registry: String,
    /// `library/busybox`
    pub repository: String,
    /// `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let text = text.strip_prefix("docker://").unwrap_or(text);
        let parsed = local::parse(text)?;
        let (registry, path) = match parsed.name.split_once('/') {
            Some((first, rest)) if is_registry(first) => (first.to_string(), rest.to_string()),
            _ => (DOCKER_HUB.to_string(), parsed.name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path };
        let tag = match (parsed.tag, parsed.digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(Reference { registry, repository, tag, digest: parsed.digest.map(str::to_string) })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The host (and port) the registry API is reached at.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The same repository with another tag or digest.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference { digest: Some(digest.to_string()), ..self.clone() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// docker's rule for the first of several components.
pub(crate) fn is_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first.starts_with('[') || first == "localhost"
}

/// Whether kiln talks plain HTTP to `registry` without being told: loopback
/// only, as docker allows.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    if host == "localhost" || host == "::1" {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// `host` of `host:port`, `::1` of `[::1]:5000`.
pub fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if registry.parse::<std::net::Ipv6Addr>().is_ok() {
        return registry;
    }
    registry.split(':').next().unwrap_or(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (r.registry, r.repository, r.tag, r.digest)
    }

    #[test]
    fn docker_hub_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(Reference::parse("user/app:1").unwrap().to_string(), "docker.io/user/app:1");
        assert_eq!(Reference::parse("docker.io/busybox").unwrap().to_string(), "docker.io/library/busybox:latest");
        assert_eq!(Reference::parse("index.docker.io/x/y").unwrap().to_string(), "docker.io/x/y:latest");
        assert_eq!(Reference::parse("docker://alpine:3").unwrap().to_string(), "docker.io/library/alpine:3");
    }

    #[test]
    fn registries_ports_and_digests() {
        assert_eq!(parts("127.0.0.1:5000/a/b:v1"), ("127.0.0.1:5000".into(), "a/b".into(), Some("v1".into()), None));
        assert_eq!(parts("localhost/app"), ("localhost".into(), "app".into(), Some("latest".into()), None));
        assert_eq!(parts(&format!("quay.io/x/y@{D}")), ("quay.io".into(), "x/y".into(), None, Some(D.into())));
        let r = Reference::parse(&format!("app:v2@{D}")).unwrap();
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/app:v2@{D}"));
        assert_eq!(parts("[::1]:5000/app").0, "[::1]:5000");
    }

    #[test]
    fn malformed_references_say_why() {
        assert!(Reference::parse("").is_err());
        assert!(matches!(Reference::parse("Busybox"), Err(ReferenceError::Uppercase { .. })));
        assert!(matches!(Reference::parse("host:port/app"), Err(ReferenceError::InvalidDomain { .. })));
        assert!(matches!(Reference::parse("app@sha256:12"), Err(ReferenceError::InvalidDigest { .. })));
        assert!(matches!(Reference::parse("app:-x"), Err(ReferenceError::InvalidTag { .. })));
    }

    #[test]
    fn loopback_hosts() {
        for r in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1"] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["example.com", "10.0.0.1:5000", "docker.io", "localhost.example.com"] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
