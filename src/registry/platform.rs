//! Choosing an image from an index or Docker manifest list by platform;
//! parsing and matching live in [`crate::image::platform`].

use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Index};
pub use crate::image::platform::Platform as Wanted;

use super::error::ErrorKind;

/// The platform asked for or, without one, the host's.
pub fn wanted(asked: Option<&Wanted>) -> Wanted {
    asked.cloned().unwrap_or_else(Wanted::host)
}

/// The index entry for `wanted`, or docker's "no match for platform" error
/// naming what the index has.
pub fn select<'a>(index: &'a Index, wanted: &Wanted) -> Result<&'a Descriptor, ErrorKind> {
    wanted.select(index).ok_or_else(|| ErrorKind::NoPlatform {
        wanted: wanted.to_string(),
        available: crate::image::platform::available(index),
    })
}

/// Checks that a single-manifest image's config is for `wanted`.
pub fn check_config(config: &ImageConfig, wanted: &Wanted) -> Result<(), ErrorKind> {
    if wanted.matches(&config.os, &config.architecture, config.variant.as_deref()) {
        return Ok(());
    }
    let have = Wanted::new(&config.os, &config.architecture, config.variant.as_deref());
    Err(ErrorKind::NoPlatform { wanted: wanted.to_string(), available: vec![have.to_string()] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_wanted_and_available() {
        let mut d = Descriptor::new("m", format!("sha256:{}", "ab".repeat(32)), 1);
        d.platform = Some(crate::image::manifest::Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            os_version: None,
        });
        let index = Index { manifests: vec![d], ..Default::default() };
        let err = select(&index, &Wanted::parse("linux/arm64").unwrap()).unwrap_err().to_string();
        assert!(
            err.contains("no match for platform in manifest")
                && err.contains("linux/arm64")
                && err.contains("linux/amd64"),
            "{err}"
        );
        let config = ImageConfig { os: "linux".into(), architecture: "amd64".into(), ..Default::default() };
        let err = check_config(&config, &Wanted::parse("linux/arm64").unwrap()).unwrap_err().to_string();
        assert!(err.contains("linux/arm64") && err.contains("linux/amd64"), "{err}");
        assert!(check_config(&config, &Wanted::parse("linux/x86_64").unwrap()).is_ok());
        assert!(Wanted::parse("linux").is_err());
        assert_eq!(wanted(None), Wanted::host());
    }
}
