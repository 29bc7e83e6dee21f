//! Platforms (`os/arch[/variant]`): parsing, normalising and matching, in
//! one place for the registry, the OCI layout/archive reader and the
//! executor. Names are OCI's (Go's), normalised as containerd does, so
//! `x86_64`, `aarch64` and `armhf` mean what docker means by them.

use std::fmt;

use super::manifest::{Descriptor, Index};

/// A platform asked for or described, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// As containerd normalises it: `arm` always has one (`v7` by
    /// default), `arm64`'s default `v8` is left out.
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7")]
pub struct PlatformError(pub String);

impl Platform {
    /// Parses `os/arch[/variant]` (or `os/arch` with an alias such as
    /// `x86_64`), normalising names.
    pub fn parse(spec: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = spec.trim().split('/').collect();
        // OCI names: letters, digits, `_`, `.` and `-` (for `x86-64`).
        let ok = |s: &&str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(PlatformError(spec.to_string())),
        }
    }

    /// A platform from its parts, normalised.
    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let arch = arch.to_ascii_lowercase();
        let variant = variant.map(str::to_ascii_lowercase).filter(|v| !v.is_empty());
        let (architecture, variant) = match (arch.as_str(), variant) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64".to_string(), v),
            ("aarch64" | "arm64", Some(v)) if v == "v8" || v == "8" => ("arm64".to_string(), None),
            ("aarch64" | "arm64", v) => ("arm64".to_string(), v),
            ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", None) => ("arm".to_string(), Some("v7".to_string())),
            ("arm", Some(v)) if v.len() == 1 && v.as_bytes()[0].is_ascii_digit() => {
                ("arm".to_string(), Some(format!("v{v}")))
            }
            ("i386" | "i686" | "x86" | "386", v) => ("386".to_string(), v),
            (other, v) => (other.to_string(), v),
        };
        Platform { os, architecture, variant }
    }

    /// The machine kiln runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    /// The variant as an image config spells it.
    pub fn variant_for_config(&self) -> Option<String> {
        self.variant.clone()
    }

    /// Whether an image of `os/arch/variant` (as an index or config states
    /// it) serves this platform. Variants are compared after normalising,
    /// so a missing variant is the architecture's default.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let have = Platform::new(os, arch, variant);
        have.os == self.os && have.architecture == self.architecture && have.variant == self.variant
    }

    /// The index entry for this platform, if the index has one.
    pub fn select<'a>(&self, index: &'a Index) -> Option<&'a Descriptor> {
        index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| self.matches(&p.os, &p.architecture, p.variant.as_deref())))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// As `os/arch[/variant]` (a plan's JSON shows it so).
impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The platforms an index offers, normalised, as errors list them.
pub fn available(index: &Index) -> Vec<String> {
    index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref()).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::Platform as Entry;

    fn entry(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        let mut d = Descriptor::new("m", format!("sha256:{}", format!("{n:02x}").repeat(32)), 1);
        d.platform = Some(Entry {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
            os_version: None,
        });
        d
    }

    #[test]
    fn parses_and_normalises_like_containerd() {
        let p = |s: &str| Platform::parse(s).unwrap().to_string();
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("Linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/7"), "linux/arm/v7");
        assert_eq!(p("linux/arm/6"), "linux/arm/v6");
        assert_eq!(p("linux/i686"), "linux/386");
        assert_eq!(p("linux/s390x"), "linux/s390x");
        for bad in ["linux", "linux/", "/amd64", "linux/arm/v7/x", "", "linux//x", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Platform::parse("linux/arm").unwrap().variant_for_config().as_deref(), Some("v7"));
        assert_eq!(Platform::parse("linux/arm64").unwrap().variant_for_config(), None);
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn matching_uses_default_variants() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(arm64.matches("linux", "arm64", Some("v8")));
        assert!(arm64.matches("linux", "aarch64", None));
        assert!(!arm64.matches("linux", "amd64", None));
        assert!(!arm64.matches("windows", "arm64", None));
        let arm = Platform::parse("linux/arm").unwrap();
        assert!(arm.matches("linux", "arm", Some("v7")));
        assert!(!arm.matches("linux", "arm", Some("v6")));
    }

    #[test]
    fn selects_from_an_index() {
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
        let pick = |s: &str| Platform::parse(s).unwrap().select(&index).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(index.manifests[2].digest.clone()));
        assert_eq!(pick("linux/arm64"), Some(index.manifests[3].digest.clone()));
        assert_eq!(pick("linux/arm/v6"), Some(index.manifests[0].digest.clone()));
        assert_eq!(pick("linux/arm"), Some(index.manifests[1].digest.clone()));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(
            available(&index),
            ["linux/arm/v6", "linux/arm/v7", "linux/amd64", "linux/arm64", "unknown/unknown"]
        );
    }
}
