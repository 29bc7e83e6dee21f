//! Choosing an image from an index or Docker manifest list by platform.

use crate::image::manifest::{Descriptor, Index, Platform};

use super::error::ErrorKind;

/// What to look for: `os/arch[/variant]`, by default the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Wanted {
    pub fn parse(spec: Option<&str>) -> Result<Wanted, ErrorKind> {
        let Some(spec) = spec else {
            return Ok(Wanted {
                os: "linux".into(),
                architecture: crate::exec::host_arch().into(),
                variant: host_variant(),
            });
        };
        let parts: Vec<&str> = spec.split('/').collect();
        let ok = |s: &&str| !s.is_empty();
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => {
                Ok(Wanted { os: os.to_string(), architecture: normalize_arch(arch), variant: None })
            }
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Wanted {
                os: os.to_string(),
                architecture: normalize_arch(arch),
                variant: Some(variant.to_string()),
            }),
            _ => Err(ErrorKind::Platform(spec.to_string())),
        }
    }

    fn matches(&self, p: &Platform) -> bool {
        if p.os != self.os || normalize_arch(&p.architecture) != self.architecture {
            return false;
        }
        match &self.variant {
            None => true,
            Some(want) => {
                let have = p.variant.as_deref().unwrap_or_else(|| default_variant(&self.architecture));
                have == want || (want.is_empty() && have.is_empty())
            }
        }
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The index entry for `wanted`. Without a wanted variant the entry with
/// none (or the architecture's default) wins over others, as containerd picks.
pub fn select<'a>(index: &'a Index, wanted: &Wanted) -> Result<&'a Descriptor, ErrorKind> {
    let candidates: Vec<&Descriptor> =
        index.manifests.iter().filter(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p))).collect();
    let default = default_variant(&wanted.architecture);
    let preferred = candidates.iter().find(|d| {
        let v = d.platform.as_ref().and_then(|p| p.variant.as_deref()).unwrap_or("");
        v.is_empty() || v == default
    });
    if let Some(found) = preferred.or(candidates.first()) {
        return Ok(found);
    }
    Err(ErrorKind::NoPlatform { wanted: wanted.to_string(), available: available(index) })
}

pub fn available(index: &Index) -> Vec<String> {
    index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect()
}

fn normalize_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.to_string(),
    }
}

fn default_variant(arch: &str) -> &'static str {
    match arch {
        "arm64" => "v8",
        "arm" => "v7",
        _ => "",
    }
}

fn host_variant() -> Option<String> {
    match crate::exec::host_arch() {
        "arm" => Some("v7".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        let mut d = Descriptor::new("m", format!("sha256:{}", format!("{n:02x}").repeat(32)), 1);
        d.platform = Some(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
            os_version: None,
        });
        d
    }

    #[test]
    fn picks_by_platform() {
        let index = Index {
            manifests: vec![
                entry("linux", "arm", Some("v6"), 1),
                entry("linux", "arm", Some("v7"), 2),
                entry("linux", "amd64", None, 3),
                entry("linux", "arm64", Some("v8"), 4),
                entry("unknown", "unknown", None, 5),
            ],
            ..Default::default()
        };
        let pick = |s: &str| select(&index, &Wanted::parse(Some(s)).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64").unwrap(), index.manifests[2].digest);
        assert_eq!(pick("linux/arm64").unwrap(), index.manifests[3].digest);
        assert_eq!(pick("linux/arm/v6").unwrap(), index.manifests[0].digest);
        assert_eq!(pick("linux/arm").unwrap(), index.manifests[1].digest);
        let err = pick("linux/s390x").unwrap_err();
        assert!(err.to_string().contains("linux/arm/v7"), "{err}");
        assert!(Wanted::parse(Some("linux")).is_err());
        assert_eq!(Wanted::parse(None).unwrap().os, "linux");
    }
}
