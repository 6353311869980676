//! `airlock registry serve`: a verified bundle's images, read-only, over the OCI
//! Distribution API, for sites without a registry of their own.
//!
//! The bundle is verified into a private temporary directory first (signature, then
//! every entry's digest, as every reader does); only then does the server answer, and
//! only from those verified files. Each image is served under the repository `airlock
//! registry push --to HOST` would give it (its full reference, a port's `:` as `_`):
//! `docker.io/library/nginx:1.27` is `HOST/docker.io/library/nginx:1.27`, so the
//! `registries.yaml` a site-registry install writes (prefix empty) works against it.
//! The carried cosign signature and attestation manifests are served beside their
//! image under cosign's tags (`sha256-<hex>.sig`, `.att`), for `cosign verify`.
//!
//! Carried OCI 1.1 referrers are served by digest, listed by the referrers API
//! (`/v2/<name>/referrers/<digest>`, `?artifactType=` filtered) and by the fallback
//! tag `sha256-<hex>`.
//!
//! Read-only: `GET`/`HEAD` on `/v2/`, `/v2/<name>/manifests/<tag or digest>`,
//! `/v2/<name>/blobs/<digest>`, `/v2/<name>/referrers/<digest>` and
//! `/v2/<name>/tags/list`; everything else is `405 UNSUPPORTED`. A repository serves
//! only the manifests and blobs of its own images. One request per connection
//! (`Connection: close`), a thread each; TLS with the given certificate and key (the
//! site PKI's), or plain HTTP only when asked.

// The server has no target root: it reads the bundle and writes only its private
// verification directory under $TMPDIR.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::blob_path;
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::report::Reporter;
use airlock_format::Sha256Digest;
use serde::{Deserialize, Serialize};

use crate::bundle::staging;
use crate::ops::push::target_for;

/// The largest request head read (request line and headers).
const MAX_HEAD: usize = 16 << 10;

/// One repository: its tags and the manifests and blobs of its images.
#[derive(Default)]
struct Repository {
    tags: BTreeMap<String, Sha256Digest>,
    /// Manifests (roots and, for an index, its children) with their media types.
    manifests: BTreeMap<Sha256Digest, String>,
    blobs: BTreeSet<Sha256Digest>,
    /// Images with carried OCI 1.1 referrers, by digest: the referrers API answers from
    /// them.
    subjects: BTreeMap<Sha256Digest, airlock_format::manifest::Image>,
    /// Manifests made here, not blobs of the bundle: the referrers fallback tags'
    /// indexes, by digest.
    generated: BTreeMap<Sha256Digest, Vec<u8>>,
}

/// A verified bundle, ready to serve.
pub struct Store {
    /// Keeps the verified files for as long as the store lives.
    _scratch: tempfile::TempDir,
    dir: PathBuf,
    repositories: BTreeMap<String, Repository>,
    /// What is served, for the binary to list.
    pub images: Vec<ServedImage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServedImage {
    /// The reference in the bundle.
    pub source: String,
    /// `<repository>:<tag>` (or `@digest`) as clients ask for it, without the host.
    pub served_as: String,
    pub digest: Sha256Digest,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Sha256Digest,
}

impl Store {
    /// Verifies the bundle into a private temporary directory and indexes its images.
    pub fn open(files: &BundleFiles, trusted: &[PublicKey], reporter: &dyn Reporter) -> Result<Self> {
        let scratch = tempfile::Builder::new().prefix("airlock-serve-").tempdir().map_err(|e| {
            Error::io(std::env::temp_dir(), e)
                .with_hint("serving verifies the bundle into a temporary directory; point TMPDIR at one with room")
        })?;
        let dir = scratch.path().join("bundle");
        let staged = staging::extract(files, trusted, &dir, reporter)?;
        let bundle = files.base.display().to_string();
        if staged.manifest.is_delta() {
            return Err(Error::input(&bundle, "is a delta bundle: it carries only what changed since its base")
                .with_hint("serve the full bundle of this release"));
        }
        if staged.manifest.images.is_empty() {
            return Err(Error::input(&bundle, "carries no images").with_hint("nothing to serve"));
        }
        let mut repositories: BTreeMap<String, Repository> = BTreeMap::new();
        let mut images = Vec::new();
        for i in &crate::ops::push::with_cosign_objects(&staged.manifest.images) {
            let target = target_for("", "", &i.reference)?;
            let repo = repositories.entry(target.repo.repository.clone()).or_default();
            if let Some(tag) = &target.tag {
                repo.tags.insert(tag.clone(), i.digest);
            }
            repo.manifests.insert(i.digest, i.media_type.clone());
            repo.blobs.extend(i.blobs.iter().copied());
            if i.media_type.contains("index") || i.media_type.contains("manifest.list") {
                let path = staged.path(&blob_path(&i.digest));
                let bytes = std::fs::read(&path).at(&path)?;
                let index: IndexDoc = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::corrupt(format!("image {}", i.reference), format!("its index is not JSON: {e}"))
                })?;
                for m in index.manifests {
                    repo.manifests.insert(m.digest, m.media_type);
                }
            }
            let served_as = match &target.tag {
                Some(t) => format!("{}:{t}", target.repo.repository),
                None => format!("{}@{}", target.repo.repository, i.digest),
            };
            images.push(ServedImage { source: i.reference.clone(), served_as, digest: i.digest });
        }
        // The referrers fallback tag of each image with referrers, for clients that read
        // the tag instead of the API (as they do with a registry before OCI 1.1).
        for i in staged.manifest.images.iter().filter(|i| i.cosign.as_ref().is_some_and(|c| !c.referrers.is_empty())) {
            let target = target_for("", "", &i.reference)?;
            let repo = repositories.entry(target.repo.repository.clone()).or_default();
            let index = i.referrers_index(None, &[]);
            let digest = Sha256Digest::of(&index);
            let tag = airlock_format::manifest::referrers_tag(&i.digest);
            repo.tags.insert(tag.clone(), digest);
            repo.manifests.insert(digest, airlock_format::oci::MEDIA_TYPE_OCI_INDEX.to_string());
            repo.generated.insert(digest, index);
            repo.subjects.insert(i.digest, i.clone());
            let served_as = format!("{}:{tag}", target.repo.repository);
            images.push(ServedImage { source: format!("{} (referrers)", i.reference), served_as, digest });
        }
        Ok(Self { _scratch: scratch, dir: staged.dir, repositories, images })
    }

    fn blob_file(&self, digest: &Sha256Digest) -> PathBuf {
        self.dir.join(blob_path(digest))
    }
}

/// TLS for the server from PEM files: the certificate chain (leaf first) and its key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::input(cert.display().to_string(), format!("is not a PEM certificate chain: {e}"))
                .with_hint("give the server certificate the site PKI issued (PEM), leaf first")
        })?;
    if certs.is_empty() {
        return Err(Error::input(cert.display().to_string(), "holds no certificate")
            .with_hint("give the server certificate the site PKI issued (PEM)"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::input(key.display().to_string(), format!("is not a PEM private key: {e}"))
            .with_hint("give the private key of that certificate (PEM)")
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::input("TLS", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            Error::input(key.display().to_string(), format!("does not go with {}: {e}", cert.display()))
                .with_hint("give the certificate and the key made together")
        })?;
    Ok(Arc::new(config))
}

/// Answers requests on `listener` until the process ends. Each connection runs on a
/// thread of its own; a failed connection ends only that connection.
pub fn serve(store: Arc<Store>, listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Result<()> {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let store = Arc::clone(&store);
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(30)));
            match tls {
                Some(cfg) => {
                    let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
                    let mut s = rustls::StreamOwned::new(conn, stream);
                    let _ = handle(&store, &mut s);
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
                None => {
                    let mut s: TcpStream = stream;
                    let _ = handle(&store, &mut s);
                }
            }
        });
    }
    Ok(())
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Base,
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: String,
    },
    Tags {
        name: String,
    },
    /// `GET /v2/<name>/referrers/<digest>[?artifactType=…]` (OCI Distribution 1.1).
    Referrers {
        name: String,
        digest: String,
        artifact_type: Option<String>,
    },
    Unknown,
}

fn route(path: &str) -> Route {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path == "/v2/" || path == "/v2" {
        return Route::Base;
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return Route::Unknown };
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        let artifact_type = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("artifactType="))
            .map(percent_decoded)
            .filter(|t| !t.is_empty());
        return Route::Referrers { name: name.into(), digest: digest.into(), artifact_type };
    }
    for (marker, kind) in [("/manifests/", 0), ("/blobs/", 1)] {
        if let Some((name, reference)) = rest.rsplit_once(marker) {
            return match kind {
                0 => Route::Manifest { name: name.into(), reference: reference.into() },
                _ => Route::Blob { name: name.into(), digest: reference.into() },
            };
        }
    }
    match rest.strip_suffix("/tags/list") {
        Some(name) => Route::Tags { name: name.into() },
        None => Route::Unknown,
    }
}

/// A query value with its `%XX` escapes (and `+` for a space) undone.
fn percent_decoded(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    File(PathBuf, u64),
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string().into_bytes();
    Response { status, headers: vec![("Content-Type", "application/json".into())], body: Body::Bytes(body) }
}

fn json(value: serde_json::Value) -> Response {
    Response {
        status: 200,
        headers: vec![("Content-Type", "application/json".into())],
        body: Body::Bytes(value.to_string().into_bytes()),
    }
}

fn answer(store: &Store, method: &str, path: &str) -> Response {
    if method != "GET" && method != "HEAD" {
        return error(405, "UNSUPPORTED", "this registry serves a verified bundle read-only");
    }
    let repo = |name: &str| store.repositories.get(name);
    match route(path) {
        Route::Base => json(serde_json::json!({})),
        Route::Tags { name } => match repo(&name) {
            Some(r) => json(serde_json::json!({"name": name, "tags": r.tags.keys().collect::<Vec<_>>()})),
            None => error(404, "NAME_UNKNOWN", "no such repository in this bundle"),
        },
        Route::Manifest { name, reference } => {
            let Some(r) = repo(&name) else { return error(404, "NAME_UNKNOWN", "no such repository in this bundle") };
            let digest = match reference.parse::<Sha256Digest>() {
                Ok(d) => Some(d),
                Err(_) => r.tags.get(&reference).copied(),
            };
            match digest.and_then(|d| r.manifests.get(&d).map(|m| (d, m))) {
                Some((d, media_type)) if r.generated.contains_key(&d) => Response {
                    status: 200,
                    headers: vec![("Content-Type", media_type.clone()), ("Docker-Content-Digest", d.to_string())],
                    body: Body::Bytes(r.generated[&d].clone()),
                },
                Some((d, media_type)) => file(store, &d, media_type),
                None => error(404, "MANIFEST_UNKNOWN", "no such manifest in this repository"),
            }
        }
        Route::Blob { name, digest } => {
            let Some(r) = repo(&name) else { return error(404, "NAME_UNKNOWN", "no such repository in this bundle") };
            match digest.parse::<Sha256Digest>().ok().filter(|d| r.blobs.contains(d)) {
                Some(d) => file(store, &d, "application/octet-stream"),
                None => error(404, "BLOB_UNKNOWN", "no such blob in this repository"),
            }
        }
        Route::Referrers { name, digest, artifact_type } => {
            let Some(r) = repo(&name) else { return error(404, "NAME_UNKNOWN", "no such repository in this bundle") };
            let Ok(digest) = digest.parse::<Sha256Digest>() else {
                return error(400, "DIGEST_INVALID", "the referrers API takes a sha256 digest");
            };
            // An image without referrers has an empty list, not a 404 (OCI 1.1).
            let body = match r.subjects.get(&digest) {
                Some(i) => i.referrers_index(artifact_type.as_deref(), &[]),
                None => airlock_format::manifest::Image::empty_referrers_index(),
            };
            let mut headers = vec![("Content-Type", airlock_format::oci::MEDIA_TYPE_OCI_INDEX.to_string())];
            if artifact_type.is_some() {
                headers.push(("OCI-Filters-Applied", "artifactType".into()));
            }
            Response { status: 200, headers, body: Body::Bytes(body) }
        }
        Route::Unknown => error(404, "NOT_FOUND", "not an OCI Distribution API path"),
    }
}

fn file(store: &Store, digest: &Sha256Digest, media_type: &str) -> Response {
    let path = store.blob_file(digest);
    match std::fs::metadata(&path) {
        Ok(m) => Response {
            status: 200,
            headers: vec![("Content-Type", media_type.to_string()), ("Docker-Content-Digest", digest.to_string())],
            body: Body::File(path, m.len()),
        },
        Err(_) => error(404, "BLOB_UNKNOWN", "not in the verified bundle"),
    }
}

fn handle<S: Read + Write>(store: &Store, stream: &mut S) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *stream);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader.by_ref().take((MAX_HEAD - head.len()) as u64).read_until(b'\n', &mut line)?;
        if n == 0 || head.len() + n >= MAX_HEAD {
            return Ok(());
        }
        let end = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if end {
            break;
        }
    }
    drop(reader);
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let r = answer(store, method, path);
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let len = match &r.body {
        Body::Bytes(b) => b.len() as u64,
        Body::File(_, n) => *n,
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", r.status);
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {len}\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n\r\n"
    ));
    stream.write_all(out.as_bytes())?;
    if method == "HEAD" {
        return stream.flush();
    }
    match r.body {
        Body::Bytes(b) => stream.write_all(&b)?,
        Body::File(p, _) => {
            let mut f = std::fs::File::open(p)?;
            std::io::copy(&mut f, stream)?;
        }
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_manifests_blobs_and_tags_by_their_last_marker() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(
            route("/v2/docker.io/library/nginx/manifests/1.27"),
            Route::Manifest { name: "docker.io/library/nginx".into(), reference: "1.27".into() }
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/x/blobs/sha256:00?x=1"),
            Route::Blob { name: "a/blobs/uploads/x".into(), digest: "sha256:00".into() }
        );
        assert_eq!(route("/v2/quay.io/x/tags/list?n=10"), Route::Tags { name: "quay.io/x".into() });
        assert_eq!(route("/v3/x"), Route::Unknown);
        assert_eq!(
            route("/v2/a/b/referrers/sha256:00?n=1&artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson"),
            Route::Referrers {
                name: "a/b".into(),
                digest: "sha256:00".into(),
                artifact_type: Some("application/vnd.dev.sigstore.bundle.v0.3+json".into())
            }
        );
    }
}
