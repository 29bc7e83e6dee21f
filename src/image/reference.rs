//! Local image references: the names tags carry in kiln's store.
//!
//! The grammar is the distribution reference grammar
//! (`[domain[:port]/]path[:tag][@digest]`); a local name is not expanded to
//! `docker.io/library/…`, only completed with `:latest` when it has neither a
//! tag nor a digest.

use thiserror::Error;

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("image name '{name}' is longer than {MAX_NAME_LEN} characters")]
    NameTooLong { name: String },
    #[error("image name '{name}' must be lowercase")]
    Uppercase { name: String },
    #[error(
        "invalid path component '{component}' in image name '{name}' (use [a-z0-9] separated by '.', '_', '__' or '-')"
    )]
    InvalidComponent { name: String, component: String },
    #[error("invalid registry host '{domain}' in image name '{name}'")]
    InvalidDomain { name: String, domain: String },
    #[error("invalid tag '{tag}' in '{reference}' (use up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-')")]
    InvalidTag { reference: String, tag: String },
    #[error("invalid digest '{digest}' in '{reference}' (expected algorithm:hex, e.g. sha256:<64 hex digits>)")]
    InvalidDigest { reference: String, digest: String },
}

/// A reference split into its parts, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRef<'a> {
    /// `[domain/]path`, without tag or digest.
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

/// The name a store tag is called: `app` → `app:latest`, `app:v1` stays,
/// `localhost:5000/x/app` → `localhost:5000/x/app:latest`; a reference with a
/// digest is kept as given.
pub fn normalize_local(name: &str) -> Result<String, ReferenceError> {
    let parsed = parse(name)?;
    if parsed.tag.is_some() || parsed.digest.is_some() {
        Ok(name.to_string())
    } else {
        Ok(format!("{name}:latest"))
    }
}

/// Splits and validates a reference without completing it.
pub fn parse(reference: &str) -> Result<LocalRef<'_>, ReferenceError> {
    if reference.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => {
            if !valid_digest(digest) {
                return Err(ReferenceError::InvalidDigest {
                    reference: reference.to_string(),
                    digest: digest.to_string(),
                });
            }
            (rest, Some(digest))
        }
        None => (reference, None),
    };
    // A colon after the last '/' separates the tag; one before it is a port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        if !valid_tag(tag) {
            return Err(ReferenceError::InvalidTag { reference: reference.to_string(), tag: tag.to_string() });
        }
    }
    validate_name(name)?;
    Ok(LocalRef { name, tag, digest })
}

fn validate_name(name: &str) -> Result<(), ReferenceError> {
    if name.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ReferenceError::NameTooLong { name: name.to_string() });
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && looks_like_domain(components[0]) {
        let domain = components.remove(0);
        if !valid_domain(domain) {
            return Err(ReferenceError::InvalidDomain { name: name.to_string(), domain: domain.to_string() });
        }
    }
    for component in components {
        if !valid_path_component(component) {
            if component.chars().any(|c| c.is_ascii_uppercase())
                && valid_path_component(&component.to_ascii_lowercase())
            {
                return Err(ReferenceError::Uppercase { name: name.to_string() });
            }
            return Err(ReferenceError::InvalidComponent { name: name.to_string(), component: component.to_string() });
        }
    }
    Ok(())
}

/// docker's rule: the first of several components is a registry host when it
/// has a dot or a port, is `localhost`, or has uppercase letters (which a path
/// may not).
fn looks_like_domain(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase())
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(bracketed) = domain.strip_prefix('[') {
        // IPv6 literal: [addr] or [addr]:port
        let Some((addr, after)) = bracketed.split_once(']') else { return false };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => return valid_port(port),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if !valid_port(port) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.chars().all(|c| c.is_ascii_digit())
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separator `.`, `_`, `__` or `-+`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if expect_alnum {
            if !alnum(bytes[i]) {
                return false;
            }
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            expect_alnum = false;
        } else {
            let start = i;
            match bytes[i] {
                b'.' => i += 1,
                b'_' => {
                    i += 1;
                    if i < bytes.len() && bytes[i] == b'_' {
                        i += 1;
                    }
                }
                b'-' => {
                    while i < bytes.len() && bytes[i] == b'-' {
                        i += 1;
                    }
                }
                _ => return false,
            }
            debug_assert!(i > start);
            expect_alnum = true;
        }
    }
    // Must end on an alphanumeric run, and must not be empty.
    !bytes.is_empty() && !expect_alnum
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-';
    !tag.is_empty() && tag.len() <= MAX_TAG_LEN && tag.chars().all(ok) && !tag.starts_with('.') && !tag.starts_with('-')
}

/// `algorithm:encoded` with a registered-looking algorithm and at least 32 hex
/// digits; sha256 must have exactly 64 lowercase ones.
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else { return false };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.starts_with(|c: char| c.is_ascii_alphabetic())
        && algorithm.chars().all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c));
    if !algorithm_ok || encoded.len() < 32 || !encoded.chars().all(|c| c.is_ascii_hexdigit()) {
        return false;
    }
    algorithm != "sha256" || (encoded.len() == 64 && !encoded.chars().any(|c| c.is_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn completes_missing_tag() {
        assert_eq!(normalize_local("app").unwrap(), "app:latest");
        assert_eq!(normalize_local("app:v1").unwrap(), "app:v1");
        assert_eq!(normalize_local("x/y/app").unwrap(), "x/y/app:latest");
        assert_eq!(normalize_local("localhost:5000/x/app").unwrap(), "localhost:5000/x/app:latest");
        assert_eq!(normalize_local("localhost:5000/x/app:1.0").unwrap(), "localhost:5000/x/app:1.0");
        assert_eq!(normalize_local("quay.io/a/b_c__d-e--f.g").unwrap(), "quay.io/a/b_c__d-e--f.g:latest");
        assert_eq!(normalize_local("[::1]:5000/app").unwrap(), "[::1]:5000/app:latest");
    }

    #[test]
    fn keeps_digest_references() {
        let r = format!("app@{D}");
        assert_eq!(normalize_local(&r).unwrap(), r);
        let r = format!("reg.io/app:v1@{D}");
        assert_eq!(normalize_local(&r).unwrap(), r);
        let p = parse(&r).unwrap();
        assert_eq!((p.name, p.tag, p.digest), ("reg.io/app", Some("v1"), Some(D)));
    }

    #[test]
    fn names_the_bad_part() {
        let err = normalize_local("App").unwrap_err();
        assert_eq!(err, ReferenceError::Uppercase { name: "App".into() });
        assert!(err.to_string().contains("lowercase"));

        let err = normalize_local("my/ap$p:v1").unwrap_err();
        assert!(matches!(&err, ReferenceError::InvalidComponent { component, .. } if component == "ap$p"));
        assert!(err.to_string().contains("'ap$p'"));

        let err = normalize_local("app:-bad").unwrap_err();
        assert!(matches!(&err, ReferenceError::InvalidTag { tag, .. } if tag == "-bad"));
        assert!(normalize_local("app:.x").is_err());
        assert!(normalize_local(&format!("app:{}", "a".repeat(129))).is_err());
        assert!(normalize_local(&format!("app:{}", "a".repeat(128))).is_ok());

        let err = normalize_local("app@sha256:abc").unwrap_err();
        assert!(matches!(&err, ReferenceError::InvalidDigest { digest, .. } if digest == "sha256:abc"));

        assert!(matches!(normalize_local("bad_host.:80/app"), Err(ReferenceError::InvalidDomain { .. })));
        assert!(matches!(normalize_local("host:port/app"), Err(ReferenceError::InvalidDomain { .. })));
        assert_eq!(normalize_local(""), Err(ReferenceError::Empty));
        assert_eq!(normalize_local(":tag"), Err(ReferenceError::Empty));
        for bad in ["a//b", "a/", "/a", "-a", "a-", "a..b", "a___b", "a:"] {
            assert!(normalize_local(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(normalize_local(&"a".repeat(256)), Err(ReferenceError::NameTooLong { .. })));
    }
}
