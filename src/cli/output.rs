//! `--output type=...,dest=...[,name=...]`, as `docker buildx build --output`.

use std::path::PathBuf;

use kiln_overlay::compress::Compression;

/// A layer compression as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionArg {
    Gzip,
    Zstd,
    /// Plain tars (`uncompressed`, as buildx spells it, works too).
    #[value(alias = "uncompressed")]
    None,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::None => Compression::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    Oci,
    OciArchive,
    DockerArchive,
    /// Pushed to `name=` (or the -t names).
    Registry,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub dest: PathBuf,
    /// The reference name written into the layout or archive.
    pub name: Option<String>,
    /// `compression=`: how plain layers leave (default: the build's
    /// `--compression`, else gzip).
    pub compression: Option<Compression>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OutputError {
    #[error("--output {0:?}: missing type= (one of oci, oci-archive, docker-archive)")]
    NoType(String),
    #[error("--output {0:?}: unknown type {1:?} (expected oci, oci-archive, docker-archive or registry)")]
    UnknownType(String, String),
    #[error("--output {0:?}: missing dest=")]
    NoDest(String),
    #[error("--output {0:?}: unknown field {1:?}")]
    UnknownField(String, String),
    #[error("--output {0:?}: unknown compression {1:?} (expected gzip, zstd or uncompressed)")]
    UnknownCompression(String, String),
}

pub fn parse(spec: &str) -> Result<OutputSpec, OutputError> {
    let mut kind = None;
    let mut dest = None;
    let mut name = None;
    let mut compression = None;
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.trim() {
            "type" => {
                kind = Some(match v {
                    "oci" => OutputKind::Oci,
                    "oci-archive" => OutputKind::OciArchive,
                    "docker-archive" | "docker" => OutputKind::DockerArchive,
                    "registry" | "image" => OutputKind::Registry,
                    other => return Err(OutputError::UnknownType(spec.into(), other.into())),
                })
            }
            "dest" => dest = Some(PathBuf::from(v)),
            "name" => name = Some(v.to_string()),
            "compression" => {
                compression = Some(match v {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" | "none" => Compression::None,
                    other => return Err(OutputError::UnknownCompression(spec.into(), other.into())),
                })
            }
            // buildx's spelling for type=image; pushing is what type=registry does anyway
            "push" if v == "true" => {}
            other => return Err(OutputError::UnknownField(spec.into(), other.into())),
        }
    }
    let kind = kind.ok_or_else(|| OutputError::NoType(spec.into()))?;
    if kind == OutputKind::Registry {
        return Ok(OutputSpec { kind, dest: dest.unwrap_or_default(), name, compression });
    }
    Ok(OutputSpec {
        kind,
        dest: dest.filter(|d| !d.as_os_str().is_empty()).ok_or_else(|| OutputError::NoDest(spec.into()))?,
        name,
        compression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let o = parse("type=oci,dest=out,name=app:1").unwrap();
        assert_eq!(
            o,
            OutputSpec { kind: OutputKind::Oci, dest: "out".into(), name: Some("app:1".into()), compression: None }
        );
        let z = parse("type=oci-archive,dest=a.tar,compression=zstd").unwrap();
        assert_eq!(z.compression, Some(Compression::Zstd));
        assert_eq!(parse("type=oci,dest=o,compression=uncompressed").unwrap().compression, Some(Compression::None));
        assert!(matches!(parse("type=oci,dest=o,compression=lz4"), Err(OutputError::UnknownCompression(..))));
        assert_eq!(parse("type=docker-archive,dest=a.tar").unwrap().kind, OutputKind::DockerArchive);
        assert!(matches!(parse("dest=x"), Err(OutputError::NoType(_))));
        assert!(matches!(parse("type=local,dest=x"), Err(OutputError::UnknownType(..))));
        assert!(matches!(parse("type=oci"), Err(OutputError::NoDest(_))));
        assert!(matches!(parse("type=oci,dest=x,foo=1"), Err(OutputError::UnknownField(..))));
        let r = parse("type=registry,name=localhost:5000/app:1").unwrap();
        assert_eq!((r.kind, r.name.as_deref()), (OutputKind::Registry, Some("localhost:5000/app:1")));
    }
}
