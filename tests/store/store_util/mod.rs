//! Builds small real images in a store for the store and transport tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use kiln::image::config::{History, ImageConfig, RootFs};
use kiln::image::manifest::{Descriptor, OCI_LAYER_GZIP, OCI_LAYER_TAR};
use kiln::store::{sha256_digest, Store};

/// A tar with the given (path, content) regular files.
pub fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(1_700_000_000);
        builder.append_data(&mut header, path, content.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Stores an image of the given layers (gzip'd when `compress`) and returns
/// its manifest descriptor; `marker` makes configs differ.
pub fn make_image(store: &Store, layers: &[Vec<u8>], compress: bool, marker: &str) -> Descriptor {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        diff_ids.push(sha256_digest(tar));
        let (bytes, media_type) = if compress { (gzip(tar), OCI_LAYER_GZIP) } else { (tar.clone(), OCI_LAYER_TAR) };
        let (digest, size) = store.put_blob(&bytes).unwrap();
        descs.push(Descriptor::new(media_type, digest, size));
    }
    let config = config_for(marker, diff_ids);
    store.write_image(&config, &descs).unwrap()
}

/// An image config whose content depends on `marker`.
pub fn config_for(marker: &str, diff_ids: Vec<String>) -> ImageConfig {
    let n = diff_ids.len();
    let mut config = ImageConfig {
        architecture: kiln_integration::host_arch(),
        os: "linux".into(),
        created: Some("2024-01-01T00:00:00Z".into()),
        rootfs: RootFs { kind: "layers".into(), diff_ids },
        ..Default::default()
    };
    config.config.cmd = Some(vec!["/bin/sh".into(), "-c".into(), format!("echo {marker}")]);
    config.config.env = Some(vec!["PATH=/usr/bin:/bin".into()]);
    config.history = (0..n)
        .map(|_| History {
            // umoci 0.4.7 `stat` crashes on history entries without `created`.
            created: Some("2024-01-01T00:00:00Z".into()),
            created_by: Some(format!("test layer {marker}")),
            ..Default::default()
        })
        .collect();
    config
}

pub fn simple_image(store: &Store, marker: &str, compress: bool) -> Descriptor {
    let l1 = layer_tar(&[("etc/hello", "hello\n"), ("etc/marker", marker)]);
    let l2 = layer_tar(&[("usr/share/doc/readme", "layer two\n")]);
    make_image(store, &[l1, l2], compress, marker)
}

pub use kiln_integration::optional_tool as tool;

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
