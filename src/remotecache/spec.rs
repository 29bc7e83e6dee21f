//! `--cache-to` / `--cache-from` values, in docker's syntax: comma-separated
//! `key=value` pairs (`type=registry,ref=REG/REPO:TAG,mode=max`), or for
//! `--cache-from` a bare reference, which means `type=registry`.

use std::path::PathBuf;

use kiln_overlay::compress::Compression;

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A repository tag in a registry (`ref=`).
    Registry(String),
    /// An OCI image layout directory (`dest=` / `src=`), its cache manifest
    /// tagged `tag` (default `latest`) in its index.
    Local { dir: PathBuf, tag: String },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Registry(r) => write!(f, "{r}"),
            Location::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

impl Location {
    /// How a hit from this cache is shown: `--> Using cache (registry)`.
    pub fn kind(&self) -> &'static str {
        match self {
            Location::Registry(_) => "registry",
            Location::Local { .. } => "local",
        }
    }
}

/// Which steps `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The steps whose layers are in the final image (the target stage and
    /// the stages it is built `FROM`).
    #[default]
    Min,
    /// Every step of every stage the build ran.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheTo {
    pub location: Location,
    pub mode: Mode,
    /// Plain layers are compressed with this on the way out (gzip unless
    /// `compression=` says otherwise); compressed ones go as they are.
    pub compression: Compression,
    /// `ignore-error=true`: a failed export is a warning, not a failed build.
    pub ignore_error: bool,
}

/// Keys docker's flags accept that say nothing kiln needs (kiln always
/// writes an OCI image manifest with OCI media types).
const ACCEPTED: &[&str] = &["oci-mediatypes", "image-manifest", "compression-level", "force-compression"];

fn pairs(flag: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).ok_or_else(|| {
                format!("{flag} {text:?}: `{p}` is not key=value (e.g. type=registry,ref=registry.example/app:cache)")
            })
        })
        .collect()
}

fn location(flag: &str, text: &str, kind: &str, pairs: &[(String, String)], dir_key: &str) -> Result<Location, String> {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match kind {
        "registry" => match get("ref") {
            Some(r) if !r.is_empty() => Ok(Location::Registry(r)),
            _ => Err(format!("{flag} {text:?}: type=registry needs ref=REGISTRY/REPOSITORY:TAG")),
        },
        "local" => match get(dir_key) {
            Some(d) if !d.is_empty() => {
                // Absolute now: the engine may run elsewhere than the shell's directory.
                let dir = std::path::absolute(&d).unwrap_or_else(|_| PathBuf::from(&d));
                Ok(Location::Local { dir, tag: get("tag").unwrap_or_else(|| "latest".into()) })
            }
            _ => Err(format!("{flag} {text:?}: type=local needs {dir_key}=DIR")),
        },
        "inline" => Err(format!(
            "{flag} {text:?}: type=inline is not supported by kiln; use type=registry,ref=… (a cache tag beside the image) or type=local"
        )),
        other => Err(format!("{flag} {text:?}: unknown cache type {other:?} (expected registry or local)")),
    }
}

fn check_keys(flag: &str, text: &str, pairs: &[(String, String)], known: &[&str]) -> Result<(), String> {
    for (k, _) in pairs {
        if !known.contains(&k.as_str()) && !ACCEPTED.contains(&k.as_str()) {
            return Err(format!("{flag} {text:?}: unknown key {k:?} (kiln knows {})", known.join(", ")));
        }
    }
    Ok(())
}

/// Parses one `--cache-from` value.
pub fn parse_from(text: &str) -> Result<Location, String> {
    let flag = "--cache-from";
    if !text.contains('=') {
        return location(flag, text, "registry", &[("ref".into(), text.trim().to_string())], "src");
    }
    let pairs = pairs(flag, text)?;
    check_keys(flag, text, &pairs, &["type", "ref", "src", "tag", "digest"])?;
    let kind = pairs.iter().find(|(k, _)| k == "type").map_or("registry", |(_, v)| v.as_str());
    location(flag, text, kind, &pairs, "src")
}

/// Parses one `--cache-to` value.
pub fn parse_to(text: &str) -> Result<CacheTo, String> {
    let flag = "--cache-to";
    let pairs = pairs(flag, text)?;
    check_keys(flag, text, &pairs, &["type", "ref", "dest", "tag", "mode", "compression", "ignore-error"])?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let kind = get("type").unwrap_or("registry");
    let location = location(flag, text, kind, &pairs, "dest")?;
    let mode = match get("mode") {
        None | Some("min") => Mode::Min,
        Some("max") => Mode::Max,
        Some(other) => return Err(format!("{flag} {text:?}: unknown mode {other:?} (expected min or max)")),
    };
    let compression = match get("compression") {
        None | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("uncompressed") => Compression::None,
        Some(other) => {
            return Err(format!("{flag} {text:?}: unknown compression {other:?} (expected gzip, zstd or uncompressed)"))
        }
    };
    let ignore_error = match get("ignore-error") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(format!("{flag} {text:?}: ignore-error={other:?} is not true or false")),
    };
    Ok(CacheTo { location, mode, compression, ignore_error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax() {
        assert_eq!(
            parse_from("localhost:5000/app:cache").unwrap(),
            Location::Registry("localhost:5000/app:cache".into())
        );
        assert_eq!(parse_from("type=registry,ref=r/a:c").unwrap(), Location::Registry("r/a:c".into()));
        assert_eq!(
            parse_from("type=local,src=/tmp/c").unwrap(),
            Location::Local { dir: "/tmp/c".into(), tag: "latest".into() }
        );
        let to = parse_to("type=registry,ref=r/a:c,mode=max,compression=zstd,oci-mediatypes=true").unwrap();
        assert_eq!((to.mode, to.compression), (Mode::Max, Compression::Zstd));
        assert_eq!(parse_to("type=local,dest=d").unwrap().mode, Mode::Min);
        assert_eq!(parse_to("ref=r/a:c").unwrap().compression, Compression::Gzip);
        assert!(parse_to("type=registry").unwrap_err().contains("needs ref="));
        assert!(parse_to("type=local").unwrap_err().contains("needs dest="));
        assert!(parse_to("type=local,src=d").unwrap_err().contains("unknown key \"src\""));
        assert!(parse_to("type=registry,ref=r,mode=all").unwrap_err().contains("unknown mode"));
        assert!(parse_to("type=registry,ref=r,colour=red").unwrap_err().contains("unknown key \"colour\""));
        assert!(parse_to("type=inline").unwrap_err().contains("not supported"));
        assert!(parse_from("type=s3,ref=x").unwrap_err().contains("unknown cache type"));
    }
}
