//! The push side of the OCI Distribution API: what a registry already has (`HEAD` on
//! blobs and manifests), cross-repository mounts, blob uploads and manifest uploads.
//!
//! Blob uploads are chunked (`PATCH` with `Content-Range`, then `PUT ?digest=`), each
//! chunk read from a file at its offset, so memory stays at one buffer per transfer.
//! A chunk that fails is not blindly re-sent: the upload's status (`GET` on its
//! location) says how many bytes the registry holds, and the upload continues from
//! there; the same query lets a later run continue an upload a killed run left (the
//! caller keeps the location). The registry checks the digest when the upload is
//! committed, so nothing arrives under a name its bytes do not have.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::Sha256Digest;

use crate::client::{is_certificate_error, transport_error, Client, Repo, LOG, MANIFEST_ACCEPT};

/// What a request sends.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `path` from `offset`: re-read on every attempt.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        limit_rate: Option<u64>,
    },
}

/// The answer to a mount request.
#[derive(Debug, PartialEq, Eq)]
pub enum Mount {
    /// The registry linked the blob into the repository: nothing to upload.
    Mounted,
    /// The registry does not mount (or does not have the blob there) and opened an
    /// upload at this location instead.
    Upload(String),
}

/// Where an upload stands on the registry.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadStatus {
    /// The registry holds this many bytes of the upload.
    Offset(u64),
    /// The registry no longer knows the upload (expired, or purged by a restart).
    Gone,
}

impl Client {
    /// One request with auth and, when `retry` (idempotent requests only), retries on
    /// transport errors, 429 and 5xx. `target` is a path below `/v2/<repository>/` or
    /// an absolute URL (an upload location). Other statuses come back as errors
    /// naming `what` and the registry.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        method: &str,
        repo: &Repo,
        target: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
        retry: bool,
        what: &str,
    ) -> Result<ureq::Response> {
        let ep = self.endpoint(&repo.registry)?;
        let url = self.url_for(repo, target);
        let actions = if method == "GET" || method == "HEAD" { "pull" } else { "pull,push" };
        let retries = if retry { self.opts.retries } else { 0 };
        let mut attempt = 0;
        let mut authed_after_challenge = false;
        loop {
            log::info!(target: LOG, "{method} {}", url.split('?').next().unwrap_or(&url));
            let mut req = ep.agent.request(method, &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = self.auth.lock().expect("auth lock").get(repo) {
                req = req.set("Authorization", a);
            }
            let result = match &body {
                Body::Empty => req.set("Content-Length", "0").call(),
                Body::Bytes(b) => req.send_bytes(b),
                Body::File { path, offset, len, limit_rate } => {
                    let mut f = File::open(path).at(path)?;
                    f.seek(SeekFrom::Start(*offset)).at(path)?;
                    let reader = Paced::new(f.take(*len), *limit_rate);
                    req.set("Content-Length", &len.to_string()).send(reader)
                }
            };
            match result {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if !authed_after_challenge => {
                    let header = r.header("www-authenticate").unwrap_or("").to_string();
                    self.authenticate_for(repo, &header, actions, what)?;
                    authed_after_challenge = true;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(Error::input(what, format!("registry {} refused the credentials", repo.registry))
                        .with_hint(push_login_hint(&repo.registry)));
                }
                Err(ureq::Error::Status(code, r)) if (code == 429 || code >= 500) && attempt < retries => {
                    let _ = r.into_string();
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(ureq::Error::Status(code, r)) => return Err(push_status_error(what, repo, target, code, r)),
                Err(ureq::Error::Transport(t)) if attempt < retries && !is_certificate_error(&t) => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(ureq::Error::Transport(t)) => return Err(push_transport_error(what, repo, &t)),
            }
        }
    }

    fn url_for(&self, repo: &Repo, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            return target.to_string();
        }
        let ep = self.endpoint(&repo.registry).expect("endpoint made by send");
        let base = self.base(&repo.registry, &ep);
        if target.starts_with('/') {
            // A location relative to the registry (`/v2/<name>/blobs/uploads/<id>?…`).
            format!("{base}{target}")
        } else {
            format!("{base}/v2/{}/{target}", repo.repository)
        }
    }

    /// Whether `repo` has blob `digest` (`HEAD`).
    pub fn has_blob(&self, repo: &Repo, digest: &Sha256Digest, what: &str) -> Result<bool> {
        match self.send("HEAD", repo, &format!("blobs/{digest}"), &[], Body::Empty, true, what) {
            Ok(_) => Ok(true),
            Err(e) if e.cause.contains("HTTP 404") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The digest `reference` (tag or digest) resolves to in `repo` (`HEAD` with every
    /// manifest type accepted), `None` when the registry has no such manifest.
    pub fn manifest_digest(&self, repo: &Repo, reference: &str, what: &str) -> Result<Option<Sha256Digest>> {
        let headers = [("Accept", MANIFEST_ACCEPT.to_string())];
        match self.send("HEAD", repo, &format!("manifests/{reference}"), &headers, Body::Empty, true, what) {
            Ok(r) => {
                let header = r.header("docker-content-digest").unwrap_or("").to_string();
                match header.parse::<Sha256Digest>() {
                    Ok(d) => Ok(Some(d)),
                    // Without the header a tag cannot be compared; a digest names itself.
                    Err(_) => Ok(reference.parse::<Sha256Digest>().ok()),
                }
            }
            Err(e) if e.cause.contains("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks the registry to link blob `digest` from repository `from` (same registry)
    /// into `repo`. Registries that do not mount open an ordinary upload instead.
    pub fn mount_blob(&self, repo: &Repo, digest: &Sha256Digest, from: &str, what: &str) -> Result<Mount> {
        let target = format!("blobs/uploads/?mount={digest}&from={from}");
        let r = self.send("POST", repo, &target, &[], Body::Empty, true, what)?;
        if r.status() == 201 {
            return Ok(Mount::Mounted);
        }
        Ok(Mount::Upload(location(&r, repo, what)?))
    }

    /// Opens an upload in `repo` and returns its location.
    pub fn start_upload(&self, repo: &Repo, what: &str) -> Result<String> {
        let r = self.send("POST", repo, "blobs/uploads/", &[], Body::Empty, true, what)?;
        location(&r, repo, what)
    }

    /// How many bytes the registry holds of the upload at `location` (`GET`; its
    /// `Range: 0-<last>` header).
    pub fn upload_status(&self, repo: &Repo, location: &str, what: &str) -> Result<UploadStatus> {
        match self.send("GET", repo, location, &[], Body::Empty, true, what) {
            Ok(r) => {
                let end = r
                    .header("range")
                    .and_then(|v| v.split('-').nth(1))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .map(|last| last + 1);
                // "0-0" is ambiguous (no byte or one byte); distribution sends it for
                // an empty upload. Taking 0 costs at most one byte sent again.
                let held = match (r.header("range"), end) {
                    (Some(v), _) if v.trim() == "0-0" => 0,
                    (_, Some(n)) => n,
                    (None, _) => 0,
                    (Some(_), None) => 0,
                };
                Ok(UploadStatus::Offset(held))
            }
            Err(e) if e.cause.contains("HTTP 404") || e.cause.contains("BLOB_UPLOAD_UNKNOWN") => Ok(UploadStatus::Gone),
            Err(e) => Err(e),
        }
    }

    /// Sends bytes `offset..offset+len` of `file` as the next chunk of the upload at
    /// `location`, returning the location for the next request. Not retried here: a
    /// failed chunk may have partly arrived, so the caller asks [`Client::upload_status`].
    pub fn upload_chunk(
        &self,
        repo: &Repo,
        location: &str,
        file: &Path,
        offset: u64,
        len: u64,
        what: &str,
    ) -> Result<String> {
        let headers = [
            ("Content-Type", "application/octet-stream".to_string()),
            ("Content-Range", format!("{offset}-{}", offset + len - 1)),
        ];
        let body = Body::File { path: file, offset, len, limit_rate: self.opts.limit_rate };
        let r = self.send("PATCH", repo, location, &headers, body, false, what)?;
        Ok(location_or(&r, location))
    }

    /// Commits the upload at `location` as blob `digest`; the registry checks the
    /// digest against what it received.
    pub fn finish_upload(&self, repo: &Repo, location: &str, digest: &Sha256Digest, what: &str) -> Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{sep}digest={digest}");
        self.send("PUT", repo, &target, &[], Body::Empty, false, what).map(drop)
    }

    /// Uploads a small blob (a config) in one `PUT` to a fresh upload.
    pub fn put_blob(&self, repo: &Repo, digest: &Sha256Digest, bytes: &[u8], what: &str) -> Result<()> {
        let loc = self.start_upload(repo, what)?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let target = format!("{loc}{sep}digest={digest}");
        let headers = [("Content-Type", "application/octet-stream".to_string())];
        self.send("PUT", repo, &target, &headers, Body::Bytes(bytes), false, what).map(drop)
    }

    /// Uploads a manifest or index as `reference` (a tag, or its digest).
    pub fn put_manifest(&self, repo: &Repo, reference: &str, media_type: &str, bytes: &[u8], what: &str) -> Result<()> {
        let headers = [("Content-Type", media_type.to_string())];
        self.send("PUT", repo, &format!("manifests/{reference}"), &headers, Body::Bytes(bytes), true, what).map(drop)
    }
}

fn location(r: &ureq::Response, repo: &Repo, what: &str) -> Result<String> {
    match r.header("location") {
        Some(l) if !l.is_empty() => Ok(l.to_string()),
        _ => Err(Error::input(what, format!("registry {} opened an upload without a Location", repo.registry))
            .with_hint("the registry does not speak the OCI Distribution API for uploads here")),
    }
}

/// The next location, or the current one when the registry sends none.
fn location_or(r: &ureq::Response, current: &str) -> String {
    r.header("location").filter(|l| !l.is_empty()).unwrap_or(current).to_string()
}

fn push_login_hint(registry: &str) -> String {
    format!(
        "check the login for {registry}: `docker login {registry}` (or --auth-file FILE, or AIRLOCK_REGISTRY_USERNAME and AIRLOCK_REGISTRY_PASSWORD)"
    )
}

/// A refused push in words: the registry, the request and the code it sent.
fn push_status_error(what: &str, repo: &Repo, target: &str, code: u16, resp: ureq::Response) -> Error {
    let mut body = Vec::new();
    let _ = resp.into_reader().take(64 << 10).read_to_end(&mut body);
    let errors: Vec<(String, String)> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(|c| c.as_str()).unwrap_or("").to_string();
            (s("code"), s("message"))
        })
        .collect();
    let has = |c: &str| errors.iter().any(|(x, _)| x == c);
    let detail = errors
        .iter()
        .map(|(c, m)| if m.is_empty() { c.clone() } else { format!("{c}: {m}") })
        .collect::<Vec<_>>()
        .join("; ");
    let detail = if detail.is_empty() { String::new() } else { format!(" ({detail})") };
    if code == 403 || has("DENIED") {
        return Error::input(what, format!("registry {} denied the push to {repo} (HTTP {code}){detail}", repo.registry))
            .with_hint("the login needs push permission on this repository (in Harbor: a project member with the Developer role or more)");
    }
    if target.starts_with("manifests/")
        && (code == 415 || has("MANIFEST_INVALID") || has("UNSUPPORTED") || has("MANIFEST_BLOB_UNKNOWN"))
    {
        return Error::input(
            what,
            format!("registry {} refused the manifest for {repo} (HTTP {code}){detail}", repo.registry),
        )
        .with_hint("the registry does not accept this manifest's media type or content; check its supported formats (OCI image index and manifest) and its policies");
    }
    if code == 404 {
        // Lets `has_blob` and friends tell "not there" from every other failure.
        return Error::input(what, format!("registry {} has no {target} in {repo} (HTTP 404){detail}", repo.registry));
    }
    if code == 416 {
        return Error::input(
            what,
            format!("registry {} refused a chunk of an upload to {repo} (HTTP 416)", repo.registry),
        )
        .with_hint("run the push again: it asks the registry where the upload stands");
    }
    Error::input(what, format!("registry {} answered HTTP {code} for {repo}{detail}", repo.registry))
        .with_hint("check the registry's log; run the push again to retry")
}

fn push_transport_error(what: &str, repo: &Repo, t: &ureq::Transport) -> Error {
    let e = transport_error(what, repo, t);
    if is_certificate_error(t) {
        return Error { hint: None, ..e }.with_hint(format!(
            "trust the registry's CA with --ca-file FILE (PEM); the system's CAs do not sign the certificate of {}",
            repo.registry
        ));
    }
    Error { hint: None, ..e }.with_hint(format!(
        "check that {} is reachable from this machine; run the push again to continue",
        repo.registry
    ))
}

/// Holds a transfer to `--limit-rate` bytes per second.
struct Paced<R> {
    inner: R,
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl<R> Paced<R> {
    fn new(inner: R, rate: Option<u64>) -> Self {
        Self { inner, rate: rate.filter(|r| *r > 0), start: Instant::now(), sent: 0 }
    }
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let max = match self.rate {
            // Small reads keep the pace even within one chunk.
            Some(rate) => buf.len().min((rate / 10).max(1) as usize),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..max])?;
        self.sent += n as u64;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16, body: &str) -> ureq::Response {
        ureq::Response::new(code, "status", body).expect("a response")
    }

    #[test]
    fn a_refused_manifest_names_the_image_the_registry_and_the_registry_s_reason() {
        let repo = Repo { registry: "harbor.example".into(), repository: "platform/docker.io/library/nginx".into() };
        let body = r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"unsupported media type"}]}"#;
        let e =
            push_status_error("image docker.io/library/nginx:1.27", &repo, "manifests/1.27", 400, answer(400, body));
        let text = e.to_string();
        assert!(text.contains("docker.io/library/nginx:1.27") && text.contains("harbor.example"), "{text}");
        assert!(text.contains("refused the manifest") && text.contains("MANIFEST_INVALID"), "{text}");
        assert!(e.hint.as_deref().unwrap_or("").contains("media type"), "{e:?}");

        let e = push_status_error("image x", &repo, "manifests/1", 415, answer(415, ""));
        assert!(e.to_string().contains("refused the manifest"), "{e}");
    }

    #[test]
    fn a_denied_push_says_which_permission_is_missing() {
        let repo = Repo { registry: "harbor.example".into(), repository: "platform/a".into() };
        let body = r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let e = push_status_error("image a:1", &repo, "blobs/uploads/", 403, answer(403, body));
        assert!(e.to_string().contains("denied the push"), "{e}");
        assert!(e.hint.as_deref().unwrap_or("").contains("push permission"), "{e:?}");
    }

    #[test]
    fn a_missing_blob_or_manifest_is_told_apart_from_other_failures() {
        let repo = Repo { registry: "r:5000".into(), repository: "a".into() };
        let e = push_status_error("image a:1", &repo, "blobs/sha256:00", 404, answer(404, ""));
        assert!(e.cause.contains("HTTP 404"), "{e}");
        let e = push_status_error("image a:1", &repo, "blobs/uploads/", 500, answer(500, ""));
        assert!(!e.cause.contains("HTTP 404") && e.cause.contains("HTTP 500"), "{e}");
    }
}
