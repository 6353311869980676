//! The HTTP side of a registry pull: one `ureq` agent per registry (its own TLS
//! settings), the auth dance (anonymous, Basic, Bearer token), retries with
//! exponential backoff, and blob downloads that resume with `Range` and hash while
//! they stream.
//!
//! ureq (blocking, rustls on ring) was chosen over reqwest because the bundler is
//! synchronous: an async runtime would buy nothing but build time, and rustls keeps
//! native OpenSSL out of the static packaging build.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use airlock_format::digest::Sha256Hasher;
use airlock_format::error::{Error, ErrorKind, IoContext, Result};
use airlock_format::report::{Event, Reporter};
use airlock_format::Sha256Digest;
use base64::Engine;

use crate::challenge::{self, Challenge};
use crate::{ClientOptions, RegistryTls, MAX_JSON_BYTES};

/// The `log` target of `airlock-bundler --verbose`'s registry requests; URLs only,
/// never the Authorization header.
pub(crate) const LOG: &str = "airlock::registry";

/// Every manifest type we can bundle; registries pick what to send from this list
/// (distribution answers 404 for an OCI manifest when Accept lacks the OCI type).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// One image repository on one registry, as requests address it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repo {
    /// `127.0.0.1:5000`, `docker.io`.
    pub registry: String,
    /// `lab/busybox`.
    pub repository: String,
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

pub(crate) struct Endpoint {
    pub(crate) agent: ureq::Agent,
    tls: RegistryTls,
    /// `https` or (insecure registries that do not speak TLS) `http`, decided once.
    scheme: OnceLock<&'static str>,
}

pub struct Client {
    pub(crate) opts: ClientOptions,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    /// `Authorization` header values by (registry, repository).
    pub(crate) auth: Mutex<HashMap<Repo, String>>,
    next_transfer: AtomicU64,
}

/// A downloaded manifest.
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Sha256Digest,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Self {
        Self { opts, endpoints: Mutex::new(HashMap::new()), auth: Mutex::new(HashMap::new()), next_transfer: 0.into() }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    pub(crate) fn endpoint(&self, host: &str) -> Result<Arc<Endpoint>> {
        let mut map = self.endpoints.lock().expect("endpoint lock");
        if let Some(e) = map.get(host) {
            return Ok(e.clone());
        }
        let tls = self.opts.registries.get(host).cloned().unwrap_or_default();
        let config = tls_config(host, &tls)?;
        let mut builder = ureq::AgentBuilder::new();
        if let Some((var, url)) = proxy_for(host, |k| std::env::var(k).ok()) {
            // The value may carry a proxy password: name the variable, never the value.
            let proxy = ureq::Proxy::new(&url).map_err(|e| {
                Error::input(format!("${var}"), format!("is not a usable proxy URL ({})", e.kind()))
                    .with_hint("write it as http://[user:password@]proxy.example:3128")
            })?;
            builder = builder.proxy(proxy);
        }
        let agent = builder
            .tls_config(Arc::new(config))
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .redirects(5)
            .user_agent(&self.opts.user_agent)
            .build();
        let e = Arc::new(Endpoint { agent, tls, scheme: OnceLock::new() });
        map.insert(host.to_string(), e.clone());
        Ok(e)
    }

    /// The base URL of a registry: Docker Hub's API lives on another host.
    pub(crate) fn base(&self, registry: &str, ep: &Endpoint) -> String {
        let host = if registry == "docker.io" { "registry-1.docker.io" } else { registry };
        let scheme = *ep.scheme.get_or_init(|| {
            if ep.tls.plain_http {
                return "http";
            }
            if !ep.tls.insecure {
                return "https";
            }
            // An insecure lab registry may be plain HTTP: probe TLS once.
            match ep.agent.get(&format!("https://{host}/v2/")).call() {
                Ok(_) | Err(ureq::Error::Status(..)) => "https",
                Err(ureq::Error::Transport(_)) => "http",
            }
        });
        format!("{scheme}://{host}")
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.opts.backoff.saturating_mul(1 << attempt.min(8))
    }

    /// A GET with auth, retries on transport errors, 429 and 5xx.
    fn get(&self, repo: &Repo, path: &str, headers: &[(&str, String)], what: &str) -> Result<ureq::Response> {
        Ok(self.get_or_missing(repo, path, headers, what, false)?.expect("a 404 is an error here"))
    }

    /// [`Client::get`], but a 404 is `Ok(None)` when `missing_ok`.
    fn get_or_missing(
        &self,
        repo: &Repo,
        path: &str,
        headers: &[(&str, String)],
        what: &str,
        missing_ok: bool,
    ) -> Result<Option<ureq::Response>> {
        let ep = self.endpoint(&repo.registry)?;
        let url = format!("{}/v2/{}/{path}", self.base(&repo.registry, &ep), repo.repository);
        let mut attempt = 0;
        let mut authed_after_challenge = false;
        loop {
            log::info!(target: LOG, "GET {url}");
            let mut req = ep.agent.get(&url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = self.auth.lock().expect("auth lock").get(repo) {
                req = req.set("Authorization", a);
            }
            match req.call() {
                Ok(r) => return Ok(Some(r)),
                Err(ureq::Error::Status(404, _)) if missing_ok => return Ok(None),
                Err(ureq::Error::Status(401, r)) if !authed_after_challenge => {
                    let header = r.header("www-authenticate").unwrap_or("").to_string();
                    self.authenticate(repo, &header, what)?;
                    authed_after_challenge = true;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(Error::input(what, format!("registry {} refused the credentials", repo.registry))
                        .with_hint(self.login_hint(&repo.registry)));
                }
                Err(ureq::Error::Status(code, r)) if (code == 429 || code >= 500) && attempt < self.opts.retries => {
                    let _ = r.into_string();
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(ureq::Error::Status(code, r)) => return Err(status_error(what, repo, path, code, r)),
                Err(ureq::Error::Transport(t)) if attempt < self.opts.retries && !is_certificate_error(&t) => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(ureq::Error::Transport(t)) => return Err(transport_error(what, repo, &t)),
            }
        }
    }

    pub(crate) fn login_hint(&self, registry: &str) -> String {
        format!(
            "check the login for {registry}: `docker login {registry}` (or --auth-file FILE, or --creds {registry} with AIRLOCK_REGISTRY_USERNAME/AIRLOCK_REGISTRY_PASSWORD)"
        )
    }

    /// Answers a `WWW-Authenticate` challenge and remembers the header for the repo.
    fn authenticate(&self, repo: &Repo, header: &str, what: &str) -> Result<()> {
        self.authenticate_for(repo, header, "pull", what)
    }

    /// As [`Client::authenticate`]; `actions` (`pull`, `pull,push`) is the scope asked
    /// for when the challenge names none.
    pub(crate) fn authenticate_for(&self, repo: &Repo, header: &str, actions: &str, what: &str) -> Result<()> {
        let login = self.opts.credentials.get(&repo.registry);
        let value = match challenge::parse(header) {
            Some(Challenge::Basic) => {
                let Some(l) = login else {
                    return Err(Error::input(what, format!("registry {} requires a login", repo.registry))
                        .with_hint(self.login_hint(&repo.registry)));
                };
                basic(&l.username, &l.password)
            }
            Some(Challenge::Bearer { realm, service, scope }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:{actions}", repo.repository));
                let mut url = realm.clone();
                url.push(if realm.contains('?') { '&' } else { '?' });
                let mut q = Vec::new();
                if let Some(s) = service {
                    q.push(format!("service={}", urlencode(&s)));
                }
                // A mount asks for two repositories at once: distribution sends them
                // space-separated, token services want one `scope` parameter each.
                for one in scope.split_whitespace() {
                    q.push(format!("scope={}", urlencode(one)));
                }
                url.push_str(&q.join("&"));
                let token_host = realm.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("").to_string();
                let ep = self.endpoint(&token_host)?;
                log::info!(target: LOG, "GET {url}");
                let mut req = ep.agent.get(&url);
                if let Some(l) = login {
                    req = req.set("Authorization", &basic(&l.username, &l.password));
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(401 | 403, _)) => {
                        return Err(Error::input(
                            what,
                            format!("the token service of {} refused the credentials", repo.registry),
                        )
                        .with_hint(self.login_hint(&repo.registry)))
                    }
                    Err(ureq::Error::Status(code, _)) => {
                        return Err(Error::input(
                            what,
                            format!("the token service {realm} of {} answered HTTP {code}", repo.registry),
                        )
                        .with_hint("check that the registry's token service is up"))
                    }
                    Err(ureq::Error::Transport(t)) => {
                        return Err(Error::input(what, format!("cannot reach the token service {realm}: {}", t.kind()))
                            .with_hint("check the network path to the registry's token service"))
                    }
                };
                let mut body = Vec::new();
                resp.into_reader().take(1 << 20).read_to_end(&mut body).at(&realm)?;
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Token = serde_json::from_slice(&body).map_err(|_| {
                    Error::input(what, format!("the token service {realm} did not answer with a token"))
                })?;
                match t.token.or(t.access_token) {
                    Some(tok) if !tok.is_empty() => format!("Bearer {tok}"),
                    _ => {
                        return Err(Error::input(what, format!("the token service {realm} sent an empty token"))
                            .with_hint(self.login_hint(&repo.registry)))
                    }
                }
            }
            None => {
                return Err(Error::input(
                    what,
                    format!("registry {} asks for authentication this client does not support", repo.registry),
                )
                .with_hint("only Basic and Bearer token authentication are supported"))
            }
        };
        self.auth.lock().expect("auth lock").insert(repo.clone(), value);
        Ok(())
    }

    /// A GET of a plain URL with its host's TLS settings and Basic credentials, sent up
    /// front as Helm does: what `get_url` and `download_url` both send.
    fn url_request(&self, url: &str, host: &str) -> Result<ureq::Request> {
        let ep = self.endpoint(host)?;
        log::info!(target: LOG, "GET {url}");
        let mut req = ep.agent.get(url);
        if let Some(l) = self.opts.credentials.get(host) {
            req = req.set("Authorization", &basic(&l.username, &l.password));
        }
        Ok(req)
    }

    /// GETs a whole URL (a Helm repository's `index.yaml` or chart) into memory, at most
    /// `limit` bytes: TLS settings and credentials of the URL's host (Basic, sent up
    /// front, as Helm does), retries like registry requests.
    pub fn get_url(&self, url: &str, limit: u64, what: &str) -> Result<Vec<u8>> {
        let host = url_host(url);
        let repo = Repo { registry: host.clone(), repository: String::new() };
        let mut attempt = 0;
        loop {
            let resp = match self.url_request(url, &host)?.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(401, _)) => {
                    let cause = if self.opts.credentials.get(&host).is_some() {
                        format!("{host} refused the credentials")
                    } else {
                        format!("{host} requires a login")
                    };
                    return Err(Error::input(what, cause).with_hint(self.login_hint(&host)));
                }
                Err(ureq::Error::Status(404, _)) => {
                    return Err(Error::input(what, format!("{url} does not exist (HTTP 404)"))
                        .with_hint("check the repository URL, chart name and version"));
                }
                Err(ureq::Error::Status(code, r)) if (code == 429 || code >= 500) && attempt < self.opts.retries => {
                    let _ = r.into_string();
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                    continue;
                }
                Err(ureq::Error::Status(code, _)) => {
                    return Err(Error::input(what, format!("{url} answered HTTP {code}"))
                        .with_hint("check the repository URL and that the server is up"));
                }
                Err(ureq::Error::Transport(t)) if attempt < self.opts.retries && !is_certificate_error(&t) => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                    continue;
                }
                Err(ureq::Error::Transport(t)) => return Err(transport_error(what, &repo, &t)),
            };
            let mut body = Vec::new();
            match resp.into_reader().take(limit + 1).read_to_end(&mut body) {
                Ok(_) if body.len() as u64 > limit => {
                    return Err(Error::input(what, format!("{url} is larger than {limit} bytes"))
                        .with_hint("this does not look like a Helm repository index or chart"))
                }
                Ok(_) => return Ok(body),
                Err(_) if attempt < self.opts.retries => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(Error::new(ErrorKind::Io, what, format!("reading {url} failed: {e}"))),
            }
        }
    }

    /// Streams a URL (a release artifact) into `dest`, hashing as it goes, and returns
    /// the SHA-256 of what arrived. TLS and Basic credentials of the URL's host as for
    /// [`Client::get_url`]; a transfer broken off is retried from the start.
    pub fn download_url(&self, url: &str, dest: &Path, what: &str) -> Result<Sha256Digest> {
        let mut attempt = 0;
        loop {
            // `get_url`'s error handling, without its in-memory body.
            let host = url_host(url);
            let resp = match self.url_request(url, &host)?.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(404, _)) => {
                    return Err(Error::input(what, format!("{url} does not exist (HTTP 404)"))
                        .with_hint("check `base_url` / `url` and the artifact name the release publishes"))
                }
                Err(ureq::Error::Status(code, r)) if (code == 429 || code >= 500) && attempt < self.opts.retries => {
                    let _ = r.into_string();
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                    continue;
                }
                Err(ureq::Error::Status(code, _)) => {
                    return Err(Error::input(what, format!("{url} answered HTTP {code}"))
                        .with_hint("check the URL and that the server is up"))
                }
                Err(ureq::Error::Transport(t)) if attempt < self.opts.retries && !is_certificate_error(&t) => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                    continue;
                }
                Err(ureq::Error::Transport(t)) => {
                    let repo = Repo { registry: host, repository: String::new() };
                    return Err(transport_error(what, &repo, &t));
                }
            };
            let mut f = std::fs::File::create(dest).at(dest)?;
            let mut r = airlock_format::digest::HashingReader::new(resp.into_reader());
            match std::io::copy(&mut r, &mut f) {
                Ok(_) => {
                    f.sync_all().at(dest)?;
                    return Ok(r.finish().0);
                }
                Err(_) if attempt < self.opts.retries => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(Error::new(ErrorKind::Io, what, format!("reading {url} failed: {e}"))),
            }
        }
    }

    /// GETs a manifest by tag or digest. A manifest asked for by digest is checked
    /// against it; one asked for by tag is named by the digest of its bytes.
    pub fn manifest(&self, repo: &Repo, reference: &str, what: &str) -> Result<Manifest> {
        let resp = self
            .get(repo, &format!("manifests/{reference}"), &[("Accept", MANIFEST_ACCEPT.to_string())], what)
            .map_err(|e| {
                if e.cause.contains("MANIFEST_UNKNOWN") {
                    self.explain_unknown(repo, reference, what, e)
                } else {
                    e
                }
            })?;
        let media_type = resp.header("content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_JSON_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::input(what, format!("reading manifest {reference} from {repo} failed: {e}")))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(Error::input(what, format!("manifest {reference} of {repo} is over {MAX_JSON_BYTES} bytes"))
                .with_hint("this is not an image manifest"));
        }
        let digest = Sha256Digest::of(&bytes);
        if let Some(want) = reference.strip_prefix("sha256:") {
            if digest.hex() != want {
                return Err(Error::corrupt(
                    what,
                    format!("registry {} sent manifest sha256:{want} with digest {digest}", repo.registry),
                )
                .with_hint("the registry's storage is damaged or something rewrites the traffic; pull again or tell the registry's operator"));
            }
        }
        Ok(Manifest { bytes, media_type, digest })
    }

    /// GETs the OCI 1.1 referrers index of `digest` (`GET /v2/<name>/referrers/<digest>`).
    /// `Ok(None)`: the registry does not answer that API (404, or an answer that is not
    /// an image index, as registries before OCI 1.1 give), so the fallback tag is
    /// where its referrers are.
    pub fn referrers(&self, repo: &Repo, digest: &Sha256Digest, what: &str) -> Result<Option<Vec<u8>>> {
        let accept = [("Accept", "application/vnd.oci.image.index.v1+json".to_string())];
        let Some(resp) = self.get_or_missing(repo, &format!("referrers/{digest}"), &accept, what, true)? else {
            return Ok(None);
        };
        if !resp.header("content-type").unwrap_or("").starts_with("application/vnd.oci.image.index.v1+json") {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_JSON_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::input(what, format!("reading the referrers of {digest} from {repo} failed: {e}")))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(Error::input(
                what,
                format!("the referrers index of {digest} in {repo} is over {MAX_JSON_BYTES} bytes"),
            ));
        }
        Ok(Some(bytes))
    }

    /// GETs a small blob (a signature payload) whole, up to [`MAX_JSON_BYTES`]. The
    /// caller checks its digest.
    pub fn small_blob(&self, repo: &Repo, digest: &Sha256Digest, what: &str) -> Result<Vec<u8>> {
        let resp = self.get(repo, &format!("blobs/{digest}"), &[], what)?;
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_JSON_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::input(what, format!("reading blob {digest} from {repo} failed: {e}")))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(Error::input(what, format!("blob {digest} of {repo} is over {MAX_JSON_BYTES} bytes")));
        }
        Ok(bytes)
    }

    /// Every tag of `repo` (`GET /v2/<name>/tags/list`), following the `Link: <…>;
    /// rel="next"` pages the OCI Distribution spec allows, with the same auth and
    /// retries as every other request. An unknown repository is an error naming it.
    pub fn tags(&self, repo: &Repo, what: &str) -> Result<Vec<String>> {
        // Enough pages for any real chart; a registry that keeps sending `next` links
        // past this is broken.
        const MAX_PAGES: usize = 100;
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut path = "tags/list".to_string();
        for _ in 0..MAX_PAGES {
            let resp = self.get(repo, &path, &[], what)?;
            let next = resp.header("link").and_then(next_page);
            let mut body = Vec::new();
            resp.into_reader()
                .take(MAX_JSON_BYTES + 1)
                .read_to_end(&mut body)
                .map_err(|e| Error::input(what, format!("reading the tag list of {repo} failed: {e}")))?;
            if body.len() as u64 > MAX_JSON_BYTES {
                return Err(Error::input(what, format!("the tag list of {repo} is over {MAX_JSON_BYTES} bytes")));
            }
            let page: Tags = serde_json::from_slice(&body).map_err(|e| {
                Error::input(
                    what,
                    format!("registry {} sent a tag list for {repo} that is not valid: {e}", repo.registry),
                )
                .with_hint("the registry does not speak the OCI Distribution API here; check the oci:// location")
            })?;
            out.extend(page.tags.unwrap_or_default());
            match next {
                // The link is absolute (`/v2/<name>/tags/list?…`); `get` wants the part
                // after the repository.
                Some(link) => match link.split_once("/tags/list") {
                    Some((_, query)) => path = format!("tags/list{query}"),
                    None => break,
                },
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    /// distribution answers MANIFEST_UNKNOWN both for an unknown tag and an unknown
    /// repository; the tag list tells them apart and shows what there is.
    fn explain_unknown(&self, repo: &Repo, reference: &str, what: &str, original: Error) -> Error {
        let Ok(resp) = self.get(repo, "tags/list", &[], what) else {
            return Error::input(what, format!("repository {repo} does not exist (or has no tags)"))
                .with_hint("check the image name in `from:`");
        };
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut body = Vec::new();
        let _ = resp.into_reader().take(1 << 20).read_to_end(&mut body);
        let tags = serde_json::from_slice::<Tags>(&body).ok().and_then(|t| t.tags).unwrap_or_default();
        if tags.is_empty() {
            return Error::input(what, format!("repository {repo} does not exist (or has no tags)"))
                .with_hint("check the image name in `from:`");
        }
        if reference.starts_with("sha256:") {
            return original;
        }
        let mut shown: Vec<&str> = tags.iter().map(String::as_str).take(20).collect();
        shown.sort_unstable();
        let more =
            if tags.len() > shown.len() { format!(" and {} more", tags.len() - shown.len()) } else { String::new() };
        Error::input(what, format!("{repo} has no tag `{reference}`; it has: {}{more}", shown.join(", ")))
            .with_hint("use one of those tags in `from:`")
    }

    /// Downloads blob `digest` (of `size` bytes) to `dest`, resuming from `partial`
    /// across retries (and across runs), hashing while it streams. `dest` appears only
    /// when the bytes match the digest.
    #[allow(clippy::too_many_arguments)]
    pub fn download_blob(
        &self,
        repo: &Repo,
        digest: &Sha256Digest,
        size: u64,
        partial: &Path,
        dest: &Path,
        what: &str,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let id = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let short = &digest.hex()[..12];
        reporter.event(Event::TransferStart { id, name: &format!("{repo} {short}"), total: Some(size) });
        let r = self.download_inner(repo, digest, size, partial, dest, what, reporter, id);
        reporter.event(Event::TransferDone { id });
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn download_inner(
        &self,
        repo: &Repo,
        digest: &Sha256Digest,
        size: u64,
        partial: &Path,
        dest: &Path,
        what: &str,
        reporter: &dyn Reporter,
        id: u64,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            let have = match std::fs::metadata(partial) {
                Ok(m) if m.len() <= size => m.len(),
                _ => 0,
            };
            let mut headers = Vec::new();
            if have > 0 {
                headers.push(("Range", format!("bytes={have}-")));
            }
            // Failures to connect or bad statuses have had their retries inside `get`;
            // here only a transfer broken off midway is retried, from where it stopped.
            let resp = self.get(repo, &format!("blobs/{digest}"), &headers, what)?;
            match self.stream_to(resp, have, size, partial, what, reporter, id) {
                Ok(got) => {
                    if got != *digest {
                        let _ = std::fs::remove_file(partial);
                        return Err(Error::corrupt(
                            what,
                            format!("registry {} sent blob {digest} whose bytes have digest {got}", repo.registry),
                        )
                        .with_hint("the blob is damaged in the registry's storage; push the image again, or tell the registry's operator"));
                    }
                    break;
                }
                Err(e) if e.kind == ErrorKind::Io && attempt < self.opts.retries => {
                    let now = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
                    reporter.event(Event::Warning(&format!(
                        "{what}: blob {digest} interrupted ({}); resuming at byte {now} of {size} (retry {} of {})",
                        e.cause,
                        attempt + 1,
                        self.opts.retries
                    )));
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(partial, dest).at(dest)
    }

    /// Appends the response body to `partial` (or rewrites it when the server ignored
    /// the Range), honouring the rate limit, and returns the SHA-256 of the whole file:
    /// the bytes are hashed as they stream past (a resumed prefix is hashed from the
    /// file first). Interruptions are `Io` errors so the caller retries them.
    #[allow(clippy::too_many_arguments)]
    fn stream_to(
        &self,
        resp: ureq::Response,
        have: u64,
        size: u64,
        partial: &Path,
        what: &str,
        reporter: &dyn Reporter,
        id: u64,
    ) -> Result<Sha256Digest> {
        let resumed = resp.status() == 206 && have > 0;
        let mut f = OpenOptions::new().create(true).write(true).truncate(false).open(partial).at(partial)?;
        let start = if resumed { have } else { 0 };
        f.set_len(start).at(partial)?;
        f.seek(SeekFrom::Start(start)).at(partial)?;
        let mut hasher = Sha256Hasher::new();
        if start > 0 {
            let mut prefix = File::open(partial).at(partial)?.take(start);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = prefix.read(&mut buf).at(partial)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            reporter.event(Event::TransferProgress { id, bytes: start });
        }
        let mut body = resp.into_reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut written = start;
        let t0 = Instant::now();
        let mut since_start = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    f.flush().at(partial)?;
                    return Err(Error::new(ErrorKind::Io, what, format!("connection lost: {e}")));
                }
            };
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > size {
                let _ = std::fs::remove_file(partial);
                return Err(Error::corrupt(what, format!("the registry sent more than the {size} bytes of the blob"))
                    .with_hint("the blob is damaged in the registry's storage; push the image again"));
            }
            f.write_all(&buf[..n]).at(partial)?;
            hasher.update(&buf[..n]);
            reporter.event(Event::TransferProgress { id, bytes: n as u64 });
            reporter.event(Event::Progress { bytes: n as u64 });
            since_start += n as u64;
            if let Some(rate) = self.opts.limit_rate.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(since_start as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        f.flush().at(partial)?;
        if written < size {
            return Err(Error::new(
                ErrorKind::Io,
                what,
                format!("the connection closed after {written} of {size} bytes"),
            ));
        }
        Ok(hasher.finish())
    }
}

/// The proxy for `host` (`host[:port]`) from the usual variables (`HTTPS_PROXY`,
/// `HTTP_PROXY`, `ALL_PROXY`, lower case first as curl does), unless `NO_PROXY` names
/// the host or a parent domain (`.example.com` or `example.com`), or is `*`. Loopback
/// addresses are never proxied. ureq 2 reads no `NO_PROXY`, hence this.
fn proxy_for(host: &str, env: impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    }
    .to_ascii_lowercase();
    if name == "localhost" || name.starts_with("127.") || name == "::1" {
        return None;
    }
    let get = |k: &str| env(&k.to_ascii_lowercase()).or_else(|| env(k)).filter(|v| !v.trim().is_empty());
    if let Some(no) = get("NO_PROXY") {
        for entry in no.split(',').map(|e| e.trim().to_ascii_lowercase()) {
            let entry = entry.trim_start_matches('.');
            let entry = entry.rsplit_once(':').map_or(entry, |(h, _)| h);
            if entry == "*" || (!entry.is_empty() && (name == entry || name.ends_with(&format!(".{entry}")))) {
                return None;
            }
        }
    }
    ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"].into_iter().find_map(|k| get(k).map(|v| (k.to_string(), v)))
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Turns a registry's error answer into words: distribution sends
/// `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"..."}]}`.
/// The target of a `Link: <URL>; rel="next"` header (RFC 8288, as registries page
/// tag lists).
fn next_page(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

fn status_error(what: &str, repo: &Repo, path: &str, code: u16, resp: ureq::Response) -> Error {
    let mut body = Vec::new();
    let _ = resp.into_reader().take(64 << 10).read_to_end(&mut body);
    let codes: Vec<String> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("code").and_then(|c| c.as_str()).map(str::to_string))
        .collect();
    let has = |c: &str| codes.iter().any(|x| x == c);
    if code == 404 && has("NAME_UNKNOWN") {
        return Error::input(what, format!("repository {repo} does not exist (NAME_UNKNOWN)"))
            .with_hint("check the image name in `from:`");
    }
    if code == 404 && has("MANIFEST_UNKNOWN") {
        return Error::input(what, format!("{repo} has no such tag or digest (MANIFEST_UNKNOWN)"))
            .with_hint("check the tag; `skopeo list-tags docker://REPOSITORY` shows the tags the registry has");
    }
    if code == 404 && has("BLOB_UNKNOWN") {
        let blob = path.strip_prefix("blobs/").unwrap_or(path);
        return Error::corrupt(
            what,
            format!("the manifest names blob {blob}, which registry {} does not have (BLOB_UNKNOWN)", repo.registry),
        )
        .with_hint("the image in the registry is incomplete; push it again");
    }
    if code == 403 {
        return Error::input(what, format!("registry {} denied access (HTTP 403)", repo.registry))
            .with_hint("the login has no pull permission on this repository");
    }
    let detail = if codes.is_empty() { String::new() } else { format!(" ({})", codes.join(", ")) };
    Error::input(what, format!("registry {} answered HTTP {code}{detail}", repo.registry))
        .with_hint("check the registry and the image name; run again to retry")
}

/// The transport error with its causes: ureq says "tls connection init failed", the
/// rustls error below it says why (unknown issuer, wrong name).
fn transport_text(t: &ureq::Transport) -> String {
    let mut msg = t.message().map(|m| format!(": {m}")).unwrap_or_default();
    let mut src = std::error::Error::source(t);
    while let Some(e) = src {
        msg.push_str(&format!(": {e}"));
        src = e.source();
    }
    msg
}

/// Certificate problems do not go away by retrying.
pub(crate) fn is_certificate_error(t: &ureq::Transport) -> bool {
    transport_text(t).to_ascii_lowercase().contains("certificate")
}

pub(crate) fn transport_error(what: &str, repo: &Repo, t: &ureq::Transport) -> Error {
    let msg = transport_text(t);
    let tls = is_certificate_error(t);
    let hint = if tls {
        format!("trust the registry's CA with `registries: [{{host: {}, ca: FILE}}]` in the spec (or `insecure: true` for a lab registry)", repo.registry)
    } else {
        format!(
            "check that {} is reachable from this machine; the pull was retried and failed each time",
            repo.registry
        )
    };
    Error::new(ErrorKind::Io, what, format!("cannot reach registry {} ({}{msg})", repo.registry, t.kind()))
        .with_hint(hint)
}

/// rustls settings for one registry: system roots plus its CA file, or no
/// verification at all for an explicitly insecure lab registry.
fn tls_config(host: &str, tls: &RegistryTls) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::input(host, format!("TLS setup failed: {e}")))?;
    if tls.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(native) = rustls_native_certs::load_native_certs() {
        roots.add_parsable_certificates(native);
    }
    if let Some(ca) = &tls.ca {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .map_err(|e| {
                Error::input(ca.display().to_string(), format!("cannot read the CA file for {host}: {e}"))
                    .with_hint("give a PEM file with the CA certificate(s)")
            })?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| {
                Error::input(ca.display().to_string(), format!("is not a PEM certificate file: {e}"))
                    .with_hint("give a PEM file with the CA certificate(s)")
            })?;
        if certs.is_empty() {
            return Err(Error::input(ca.display().to_string(), "holds no certificate")
                .with_hint("give a PEM file with -----BEGIN CERTIFICATE----- blocks"));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                Error::input(ca.display().to_string(), format!("a certificate in it is not usable as a CA: {e}"))
            })?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts any certificate: only for registries the spec marks `insecure: true`.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `host[:port]` of a URL (empty when it has none).
fn url_host(url: &str) -> String {
    url.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_comes_from_the_environment_except_for_no_proxy_hosts_and_loopback() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let e = env(&[("HTTPS_PROXY", "http://p:3128"), ("no_proxy", "internal.example, .corp.example,10.0.0.5:5000")]);
        assert_eq!(proxy_for("ghcr.io", e), Some(("HTTPS_PROXY".into(), "http://p:3128".into())));
        assert_eq!(proxy_for("registry.internal.example:5000", e), None);
        assert_eq!(proxy_for("internal.example", e), None);
        assert_eq!(proxy_for("a.corp.example", e), None);
        assert_eq!(proxy_for("10.0.0.5:5000", e), None);
        assert!(proxy_for("notinternal.example", e).is_some());
        for lo in ["127.0.0.1:5000", "localhost:5000", "[::1]:5000"] {
            assert_eq!(proxy_for(lo, e), None, "{lo}");
        }
        assert_eq!(proxy_for("ghcr.io", env(&[("http_proxy", "http://q:8080")])).unwrap().1, "http://q:8080");
        assert_eq!(proxy_for("ghcr.io", env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "*")])), None);
        assert_eq!(proxy_for("ghcr.io", env(&[])), None);
    }

    #[test]
    fn tag_list_pages_follow_the_next_link_only() {
        let link = r#"</v2/charts/db/tags/list?last=1.2.0&n=2>; rel="next""#;
        assert_eq!(next_page(link).as_deref(), Some("/v2/charts/db/tags/list?last=1.2.0&n=2"));
        assert_eq!(next_page(r#"</v2/x/tags/list?n=1>; rel="prev""#), None);
        assert_eq!(next_page(r#"<a>; rel="prev", <b>; rel = "next""#).as_deref(), Some("b"));
    }

    #[test]
    fn token_query_values_are_percent_encoded() {
        assert_eq!(urlencode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(urlencode("registry.docker.io"), "registry.docker.io");
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ca.pem");
        std::fs::write(&f, "not a pem").unwrap();
        let e =
            tls_config("r:5000", &RegistryTls { ca: Some(f.clone()), insecure: false, plain_http: false }).unwrap_err();
        assert!(e.subject.contains("ca.pem") && e.hint.is_some(), "{e}");
        let e = tls_config(
            "r:5000",
            &RegistryTls { ca: Some(d.path().join("nope.pem")), insecure: false, plain_http: false },
        )
        .unwrap_err();
        assert!(e.subject.contains("nope.pem"), "{e}");
    }
}
