//! Which certificates a client trusts: `--cert-dir`, the per-registry
//! directories podman and skopeo use, and the system bundle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::super::error::ErrorKind;

/// Where podman and skopeo look for per-registry CA certificates.
const SYSTEM_CERTS_D: &str = "/etc/containers/certs.d";
const SYSTEM_CA_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

pub(super) fn tls_config(verify: bool, cert_dir: Option<&Path>) -> Result<TlsConfig, ErrorKind> {
    let mut builder = TlsConfig::builder().disable_verification(!verify);
    let extra = match cert_dir {
        Some(dir) => load_certs(dir)?,
        None => Vec::new(),
    };
    if !extra.is_empty() {
        // Custom CAs are added to the system's, not instead of them.
        let mut roots = Vec::new();
        if let Some(bundle) = SYSTEM_CA_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
            roots.extend(pem_certs(bundle)?);
        }
        roots.extend(extra);
        builder = builder.root_certs(RootCerts::Specific(Arc::new(roots)));
    }
    Ok(builder.build())
}

/// `--cert-dir`, else `/etc/containers/certs.d/<registry>` (and the user's
/// `~/.config/containers/certs.d/<registry>`) when it exists.
pub(super) fn cert_dir_for(registry: &str, cert_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = cert_dir {
        return Some(dir.to_path_buf());
    }
    let mut candidates = vec![Path::new(SYSTEM_CERTS_D).join(registry)];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(config) = config {
        candidates.insert(0, config.join("containers/certs.d").join(registry));
    }
    candidates.into_iter().find(|d| d.is_dir())
}

/// The CA certificates (`*.crt`) in `dir`.
fn load_certs(dir: &Path) -> Result<Vec<Certificate<'static>>, ErrorKind> {
    let entries = std::fs::read_dir(dir).map_err(|error| ErrorKind::Local {
        action: "read certificate directory",
        path: dir.display().to_string(),
        error,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    paths.sort();
    let mut certs = Vec::new();
    for path in paths {
        certs.extend(pem_certs(&path)?);
    }
    Ok(certs)
}

fn pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>, ErrorKind> {
    let pem = std::fs::read(path).map_err(|error| ErrorKind::Local {
        action: "read certificate",
        path: path.display().to_string(),
        error,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(ErrorKind::Invalid {
                    what: format!("certificate file {}", path.display()),
                    detail: e.to_string(),
                })
            }
        }
    }
    Ok(certs)
}
