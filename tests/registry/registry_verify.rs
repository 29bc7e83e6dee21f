//! Pulling checks every layer against its config's diff_id, with the
//! compressed stream read to its end, before anything is stored: a registry
//! (here a tiny static one on 127.0.0.1) that serves an image whose config
//! lies about a layer, or a gzip layer with a corrupt CRC, gets the pull
//! refused and leaves neither blob nor tag behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flate2::write::GzEncoder;
use kiln::image::manifest::{Descriptor, Manifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use kiln::registry::{self, ErrorKind, RegistryOptions};
use kiln::store::{sha256_digest, LayerError, Store};
use kiln_overlay::verify::VerifyError;

/// Serves fixed documents by path, one request per connection.
struct StaticRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Routes = HashMap<String, (String, Vec<u8>)>;

impl StaticRegistry {
    fn start(routes: Routes) -> StaticRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve_one(stream, &routes);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StaticRegistry { port, stop, thread: Some(thread) }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for StaticRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(stream: TcpStream, routes: &Routes) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut first = [0u8; 1];
    stream.peek(&mut first)?;
    if first[0] == 0x16 {
        // A TLS handshake: this registry speaks plain HTTP only.
        return Ok(());
    }
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = stream;
    match routes.get(path) {
        Some((content_type, body)) => {
            let digest = sha256_digest(body);
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nDocker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method != "HEAD" {
                out.write_all(body)?;
            }
        }
        None => write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?,
    }
    out.flush()
}

fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Routes for `repo:tag`: one gzip layer `blob`, a config listing `diff_id`.
fn image_routes(routes: &mut Routes, repo: &str, tag: &str, blob: &[u8], diff_id: &str) -> String {
    let config = serde_json::json!({
        "architecture": arch(), "os": "linux",
        "config": {}, "rootfs": { "type": "layers", "diff_ids": [diff_id] }
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor::new(OCI_CONFIG, sha256_digest(&config), config.len() as u64),
        layers: vec![Descriptor::new(OCI_LAYER_GZIP, sha256_digest(blob), blob.len() as u64)],
        annotations: None,
    };
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha256_digest(&manifest);
    routes.insert("/v2/".into(), ("application/json".into(), b"{}".to_vec()));
    for reference in [tag.to_string(), manifest_digest.clone()] {
        routes.insert(format!("/v2/{repo}/manifests/{reference}"), (OCI_MANIFEST.into(), manifest.clone()));
    }
    routes.insert(format!("/v2/{repo}/blobs/{}", sha256_digest(&config)), ("application/octet-stream".into(), config));
    routes.insert(
        format!("/v2/{repo}/blobs/{}", sha256_digest(blob)),
        ("application/octet-stream".into(), blob.to_vec()),
    );
    manifest_digest
}

fn options(dir: &std::path::Path) -> RegistryOptions {
    RegistryOptions { authfile: Some(dir.join("no-auth.json")), ..Default::default() }
}

fn refused(err: &registry::RegistryError) -> &VerifyError {
    match &err.kind {
        ErrorKind::Layer(layer) => match layer.as_ref() {
            LayerError::Refused { source, .. } => source,
            other => panic!("expected a refused layer, got {other:?} ({err})"),
        },
        other => panic!("expected a refused layer, got {other:?} ({err})"),
    }
}

#[test]
fn pulls_refuse_forged_diff_ids_and_corrupt_streams() {
    let honest = layer_tar(&[("bin/sh", "the real shell\n")]);
    let evil = layer_tar(&[("POISONED", "gotcha\n")]);
    let honest_gz = gzip(&honest);
    let evil_gz = gzip(&evil);
    let mut corrupt_gz = honest_gz.clone();
    let at = corrupt_gz.len() - 8;
    corrupt_gz[at] ^= 0xff;

    let mut routes = Routes::new();
    image_routes(&mut routes, "t/forged", "1", &evil_gz, &sha256_digest(&honest));
    image_routes(&mut routes, "t/crc", "1", &corrupt_gz, &sha256_digest(&honest));
    image_routes(&mut routes, "t/honest", "1", &honest_gz, &sha256_digest(&honest));
    // The honest blob, claimed by another image with the evil layer's diff_id.
    image_routes(&mut routes, "t/reuse", "1", &honest_gz, &sha256_digest(&evil));
    let reg = StaticRegistry::start(routes);

    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let opts = options(tmp.path());
    let pull = |name: &str| registry::pull(&store, &format!("{}/{name}", reg.host()), &opts, &kiln::progress::Silent);

    let err = pull("t/forged:1").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&sha256_digest(&evil_gz))
            && text.contains(&sha256_digest(&honest))
            && text.contains(&sha256_digest(&evil))
            && text.contains("t/forged:1"),
        "names the image, the layer and both digests: {text}"
    );
    assert!(matches!(refused(&err), VerifyError::DiffId { .. }), "{err}");
    assert!(!store.has_blob(&sha256_digest(&evil_gz)), "the forged layer was not stored");
    assert!(store.resolve(&format!("{}/t/forged:1", reg.host())).unwrap().is_none(), "no tag");

    let err = pull("t/crc:1").unwrap_err();
    assert!(matches!(refused(&err), VerifyError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("gzip stream is corrupt"), "{err}");
    assert!(!store.has_blob(&sha256_digest(&corrupt_gz)));

    let image = pull("t/honest:1").unwrap();
    assert_eq!(store.verified_diff_id(&image.manifest.layers[0].digest), Some(sha256_digest(&honest)));

    // The store has the blob: the new diff_id claim is checked all the same.
    let err = pull("t/reuse:1").unwrap_err();
    assert!(matches!(refused(&err), VerifyError::DiffId { .. }), "{err}");
    assert!(store.resolve(&format!("{}/t/reuse:1", reg.host())).unwrap().is_none());
    // ... also when it has no record of the blob (an older kiln pulled it).
    std::fs::remove_dir_all(store.root().join("kiln/diffids")).unwrap();
    assert!(matches!(refused(&pull("t/reuse:1").unwrap_err()), VerifyError::DiffId { .. }));
    pull("t/honest:1").unwrap();

    let leftovers: Vec<_> = std::fs::read_dir(store.tmp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}
