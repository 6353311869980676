//! The MinIO buckets the app uses, mirrored into and out of a backup over S3.
//!
//! Where: the site's S3 API as clients outside the cluster reach it, `https://s3.<ingress
//! domain>` through the ingress on the node's address (port 443), with the **site CA as
//! the only trust root** (the same path the install's endpoint check proves). Who: the
//! app's own S3 credentials (`app-s3-access-key`, `app-s3-secret-key` under the 0600
//! secrets directory, read through the host): they reach exactly the app's buckets,
//! where MinIO's root account could also change users and policies, which a backup has
//! no business doing.
//!
//! How: every request is signed with SigV4 (presigned URLs, `rusty-s3`) and sent with
//! `ureq`; nothing is buffered whole. A backup lists each bucket (ListObjectsV2, page by
//! page, each page's objects archived before the next page is asked for) and streams each object from its GET response into the archive as its own part
//! (`buckets/<bucket>/<n>`, the key and content type in the manifest). A restore creates a
//! missing bucket and streams each part back: a single PUT up to the chunk size, above it
//! a multipart upload of chunk-sized parts, each part's body read from the archive as it
//! is sent. Credentials never appear in errors or the manifest: a presigned URL carries
//! the access key, so no error text is made from one.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_format::error::{Error, ErrorKind, Result};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::state;

/// Objects up to this size go back with one PUT; larger ones as a multipart upload of
/// parts this size (S3 allows at most 10,000 parts: 640 GiB per object at this size).
pub const DEFAULT_CHUNK: u64 = 64 << 20;
/// How long a presigned request stays valid: it is sent at once; the margin is for a
/// slow part upload of a large object.
const VALID_FOR: Duration = Duration::from_secs(3600);
/// MinIO ignores the region; SigV4 needs one.
const REGION: &str = "us-east-1";
/// User metadata a restore puts on each object: the SHA-256 (hex) of its whole content,
/// as the verified manifest has it. A resumed restore skips an object the server has
/// with this value and the same size ([`S3::stored`]): it can only be there from a PUT
/// (single or multipart) that completed with exactly those bytes. An object the app
/// wrote since has no such value (S3 replaces metadata on every write) and is put again.
pub const SHA256_META: &str = "x-amz-meta-airlock-sha256";
/// The app's S3 credentials, as the install generates them.
pub const ACCESS_KEY_FILE: &str = "app-s3-access-key";
pub const SECRET_KEY_FILE: &str = "app-s3-secret-key";

/// How the S3 API is reached; the defaults are the site's.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// The address the S3 host name is connected to; `None`: the node's address, port
    /// 443 (the ingress). The TLS name and SigV4 host stay `s3.<ingress domain>`.
    pub connect: Option<SocketAddr>,
    /// The single-PUT limit and multipart part size in bytes; 0: [`DEFAULT_CHUNK`].
    pub chunk: u64,
    /// Keys per listing page; `None`: the server's default (1,000).
    pub page: Option<usize>,
}

/// Which object a bucket part holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// One mirrored bucket: what the backup holds of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEntry {
    pub name: String,
    /// The S3 endpoint it was read from.
    pub endpoint: String,
    pub objects: u64,
    pub bytes: u64,
}

/// An object as a listing shows it.
pub(super) struct Listed {
    pub key: String,
    pub size: u64,
}

/// An object being read.
pub(super) struct Fetched {
    pub body: Box<dyn Read + Send>,
    pub content_type: Option<String>,
    /// `Content-Length`, when the server sent it.
    pub len: Option<u64>,
}

/// A connection to the site's S3 API.
pub(super) struct S3 {
    agent: ureq::Agent,
    endpoint: url::Url,
    /// `https://s3.<domain>` (and where it is connected to, when not the name's own).
    shown: String,
    creds: Credentials,
    chunk: u64,
    page: Option<usize>,
}

/// The S3 API's host for the site whose ingress domain is `domain`.
pub fn endpoint_of(domain: &str) -> String {
    format!("https://{}", crate::render::platform::minio::api_host(domain))
}

/// The buckets the app uses on a site whose release has MinIO (the ones the MinIO
/// chart is told to create).
pub fn app_buckets() -> Vec<String> {
    crate::render::platform::wiring::app_buckets()
}

impl S3 {
    /// The site's S3 API for `domain`, reached at `node_ip:443` unless `opts` says
    /// otherwise, trusting only the site CA, with the app's credentials (read from the
    /// target through `host`).
    pub(super) fn connect(host: &dyn Host, domain: &str, node_ip: IpAddr, opts: &S3Options) -> Result<Self> {
        let endpoint_s = endpoint_of(domain);
        let endpoint = url::Url::parse(&endpoint_s)
            .map_err(|e| Error::input("cluster.ingress_domain", format!("makes no S3 URL ({endpoint_s}): {e}")))?;
        let addr = opts.connect.unwrap_or(SocketAddr::new(node_ip, 443));
        let ca = host.read_file(Path::new(state::CA_CERT))?.ok_or_else(|| {
            Error::input(state::CA_CERT, "does not exist: the site CA is the S3 API's only trust root")
                .with_hint("run the install again; it writes the site PKI")
        })?;
        let tls = tls_config(&ca)?;
        let secret = |file: &str| -> Result<String> {
            let path = PathBuf::from(state::SECRETS_DIR).join(file);
            let v = host.read_file(&path)?.map(|b| String::from_utf8_lossy(&b).trim().to_string());
            v.filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::input(path.display().to_string(), "is missing or empty: the app's S3 credentials are kept there")
                    .with_hint("run the install again; it keeps the generated credentials")
            })
        };
        let creds = Credentials::new(secret(ACCESS_KEY_FILE)?, secret(SECRET_KEY_FILE)?);
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            // The name stays the site's (TLS, Host, signature); only the address is ours.
            .resolver(move |_: &str| -> io::Result<Vec<SocketAddr>> { Ok(vec![addr]) })
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .redirects(0)
            .build();
        let shown = if opts.connect.is_some() { format!("{endpoint_s} (at {addr})") } else { endpoint_s.clone() };
        let chunk = if opts.chunk == 0 { DEFAULT_CHUNK } else { opts.chunk };
        Ok(Self { agent, endpoint, shown, creds, chunk, page: opts.page })
    }

    /// The endpoint as shown in records and errors.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    fn bucket(&self, name: &str) -> Result<Bucket> {
        Bucket::new(self.endpoint.clone(), UrlStyle::Path, name.to_string(), REGION)
            .map_err(|e| Error::input(format!("bucket {name}"), format!("is not a usable bucket name: {e}")))
    }

    /// Every object in `bucket`, page by page: `each` is given each page as it arrives
    /// (and may fetch its objects before the next page is asked for).
    pub(super) fn list_pages(&self, bucket: &str, each: &mut dyn FnMut(Vec<Listed>) -> Result<()>) -> Result<()> {
        let b = self.bucket(bucket)?;
        let mut token: Option<String> = None;
        loop {
            let mut action = b.list_objects_v2(Some(&self.creds));
            if let Some(n) = self.page {
                action.with_max_keys(n);
            }
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let resp = self.send(bucket, "", self.agent.request_url("GET", &action.sign(VALID_FOR)).call())?;
            let body = read_small(resp, 64 << 20).map_err(|e| self.io_error(bucket, "", &e))?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&body).map_err(|e| {
                Error::new(ErrorKind::Io, self.subject(bucket), format!("sent a listing that cannot be read: {e}"))
                    .with_hint("check that the endpoint is MinIO's S3 API")
            })?;
            let next = page.next_continuation_token.filter(|t| !t.is_empty());
            each(page.contents.into_iter().map(|c| Listed { key: decode_key(&c.key), size: c.size }).collect())?;
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(())
    }

    /// The object's bytes as they arrive, its content type and length.
    pub(super) fn get(&self, bucket: &str, key: &str) -> Result<Fetched> {
        let b = self.bucket(bucket)?;
        let action = b.get_object(Some(&self.creds), key);
        let resp = self.send(bucket, key, self.agent.request_url("GET", &action.sign(VALID_FOR)).call())?;
        let ct = resp.header("Content-Type").map(str::to_string);
        let len = resp.header("Content-Length").and_then(|l| l.parse().ok());
        Ok(Fetched { body: resp.into_reader(), content_type: ct, len })
    }

    /// The size of `key` in `bucket` and its [`SHA256_META`] value, when it exists.
    pub(super) fn stored(&self, bucket: &str, key: &str) -> Result<Option<(u64, Option<String>)>> {
        let b = self.bucket(bucket)?;
        let url = b.head_object(Some(&self.creds), key).sign(VALID_FOR);
        match self.agent.request_url("HEAD", &url).call() {
            Ok(resp) => {
                let len = resp.header("Content-Length").and_then(|l| l.parse().ok()).unwrap_or(u64::MAX);
                Ok(Some((len, resp.header(SHA256_META).map(str::to_string))))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.error(bucket, key, e)),
        }
    }

    /// Creates `bucket` unless it exists.
    pub(super) fn ensure_bucket(&self, bucket: &str) -> Result<bool> {
        let b = self.bucket(bucket)?;
        match self.agent.request_url("HEAD", &b.head_bucket(Some(&self.creds)).sign(VALID_FOR)).call() {
            Ok(_) => return Ok(false),
            Err(ureq::Error::Status(404, _)) => {}
            Err(e) => return Err(self.error(bucket, "", e)),
        }
        let resp = self.agent.request_url("PUT", &b.create_bucket(&self.creds).sign(VALID_FOR)).send_bytes(&[]);
        self.send(bucket, "", resp).map(|_| true)
    }

    /// Puts `size` bytes read from `r` as `key`, with `sha256` (their hex digest, from
    /// the verified manifest) as [`SHA256_META`]: one PUT up to the chunk size, a
    /// multipart upload above it. Reads exactly `size` bytes.
    pub(super) fn put(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        sha256: &str,
        content_type: Option<&str>,
        r: &mut dyn Read,
    ) -> Result<()> {
        let b = self.bucket(bucket)?;
        if size <= self.chunk {
            let mut action = b.put_object(Some(&self.creds), key);
            // Signed, so the server stores exactly this value.
            action.headers_mut().insert(SHA256_META, sha256);
            let url = action.sign(VALID_FOR);
            let req = with_type(self.agent.request_url("PUT", &url), content_type).set(SHA256_META, sha256);
            let resp = req.set("Content-Length", &size.to_string()).send(r.take(size));
            return self.send(bucket, key, resp).map(|_| ());
        }
        // A multipart object's metadata is given when the upload is made.
        let mut create = b.create_multipart_upload(Some(&self.creds), key);
        create.headers_mut().insert(SHA256_META, sha256);
        let req =
            with_type(self.agent.request_url("POST", &create.sign(VALID_FOR)), content_type).set(SHA256_META, sha256);
        let resp = self.send(bucket, key, req.send_bytes(&[]))?;
        let body = read_small(resp, 1 << 20).map_err(|e| self.io_error(bucket, key, &e))?;
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&body).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                self.subject_key(bucket, key),
                format!("sent an upload id that cannot be read: {e}"),
            )
        })?;
        let upload = created.upload_id().to_string();
        let result = self.upload_parts(&b, bucket, key, &upload, size, r);
        if result.is_err() {
            // Best effort: the error that stopped the upload is what matters.
            let _ = self
                .agent
                .request_url("DELETE", &b.abort_multipart_upload(Some(&self.creds), key, &upload).sign(VALID_FOR))
                .call();
        }
        result
    }

    fn upload_parts(
        &self,
        b: &Bucket,
        bucket: &str,
        key: &str,
        upload: &str,
        size: u64,
        r: &mut dyn Read,
    ) -> Result<()> {
        let mut etags = Vec::new();
        let mut left = size;
        let mut number: u16 = 1;
        while left > 0 {
            let n = left.min(self.chunk);
            let url = b.upload_part(Some(&self.creds), key, number, upload).sign(VALID_FOR);
            let resp =
                self.agent.request_url("PUT", &url).set("Content-Length", &n.to_string()).send((&mut *r).take(n));
            let resp = self.send(bucket, key, resp)?;
            let etag = resp.header("ETag").map(str::to_string).ok_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    self.subject_key(bucket, key),
                    format!("part {number} was stored without an ETag"),
                )
                .with_hint("check that the endpoint is MinIO's S3 API")
            })?;
            etags.push(etag);
            left -= n;
            number = number.checked_add(1).ok_or_else(|| {
                Error::input(self.subject_key(bucket, key), "needs more than 65,535 parts at this chunk size")
            })?;
        }
        let complete = b.complete_multipart_upload(Some(&self.creds), key, upload, etags.iter().map(String::as_str));
        let url = complete.sign(VALID_FOR);
        let resp = self.agent.request_url("POST", &url).send_string(&complete.body());
        let resp = self.send(bucket, key, resp)?;
        // S3 may answer 200 with an error document once the parts are joined.
        let body = read_small(resp, 1 << 20).map_err(|e| self.io_error(bucket, key, &e))?;
        let text = String::from_utf8_lossy(&body);
        if text.contains("<Error>") {
            let (code, message) = error_fields(&text);
            return Err(Error::new(
                ErrorKind::Io,
                self.subject_key(bucket, key),
                format!("the multipart upload was not completed: {code} {message}"),
            )
            .with_hint("run the restore again: it resumes at this step"));
        }
        Ok(())
    }

    fn subject(&self, bucket: &str) -> String {
        format!("bucket {bucket} at {}", self.shown)
    }

    fn subject_key(&self, bucket: &str, key: &str) -> String {
        format!("object {key:?} of bucket {bucket} at {}", self.shown)
    }

    fn send(
        &self,
        bucket: &str,
        key: &str,
        r: std::result::Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response> {
        r.map_err(|e| self.error(bucket, key, e))
    }

    /// `key` empty: a request about the bucket itself (S3 keys are never empty).
    fn io_error(&self, bucket: &str, key: &str, e: &io::Error) -> Error {
        let subject = if key.is_empty() { self.subject(bucket) } else { self.subject_key(bucket, key) };
        Error::new(ErrorKind::Io, subject, format!("the answer broke off: {e}")).with_hint(
            "check the network to the node and MinIO's pods (`kubectl -n minio get pods`), then run it again",
        )
    }

    /// An S3 failure in words, with what to do; never from the error's `Display`, which
    /// holds the presigned URL (and so the access key).
    fn error(&self, bucket: &str, key: &str, e: ureq::Error) -> Error {
        let subject = if key.is_empty() { self.subject(bucket) } else { self.subject_key(bucket, key) };
        match e {
            ureq::Error::Status(status, resp) => {
                let body = read_small(resp, 64 << 10).unwrap_or_default();
                let (code, message) = error_fields(&String::from_utf8_lossy(&body));
                let hint = match (status, code.as_str()) {
                    (403, _) | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => format!(
                        "MinIO does not accept the app's S3 credentials ({dir}/{ACCESS_KEY_FILE}, {SECRET_KEY_FILE}): \
                         check that MinIO's user setup ran (`kubectl -n minio get jobs`) and that the files are the \
                         site's; after a restore, the secrets step puts them back",
                        dir = state::SECRETS_DIR
                    ),
                    (404, _) => format!(
                        "the bucket {bucket} does not exist on MinIO: check the MinIO chart's bucket setup \
                         (`kubectl -n minio get jobs`)"
                    ),
                    _ => "look at MinIO's logs (`kubectl -n minio logs deploy/minio`), then run it again".to_string(),
                };
                let what = if code.is_empty() { String::new() } else { format!(" {code}") };
                let message = if message.is_empty() { String::new() } else { format!(": {message}") };
                Error::new(ErrorKind::Io, subject, format!("the S3 API answered {status}{what}{message}"))
                    .with_hint(hint)
            }
            ureq::Error::Transport(t) => {
                let mut cause = t.kind().to_string();
                let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&t);
                while let Some(s) = src {
                    cause.push_str(&format!(": {s}"));
                    src = s.source();
                }
                let tls = cause.contains("certificate") || cause.contains("Certificate");
                let hint = if tls {
                    format!(
                        "the S3 endpoint's certificate is not one the site CA ({}) vouches for under that name; \
                         it must be the ingress certificate the install issued",
                        state::CA_CERT
                    )
                } else {
                    "the S3 API did not answer: check that the ingress and MinIO run (`kubectl -n minio get pods`) \
                     and that this node reaches its own address on port 443, then run it again"
                        .to_string()
                };
                Error::new(ErrorKind::Io, subject, cause).with_hint(hint)
            }
        }
    }
}

fn with_type(req: ureq::Request, content_type: Option<&str>) -> ureq::Request {
    match content_type {
        Some(ct) => req.set("Content-Type", ct),
        None => req,
    }
}

/// A small answer body (a listing, an error document), at most `limit` bytes.
fn read_small(resp: ureq::Response, limit: u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    resp.into_reader().take(limit).read_to_end(&mut body)?;
    Ok(body)
}

/// `<Code>` and `<Message>` of an S3 error document (empty when absent).
fn error_fields(xml: &str) -> (String, String) {
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        xml.split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&close))
            .map(|(v, _)| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("Code"), field("Message"))
}

/// A key from a listing with `encoding-type=url`: percent-encoded, with `+` for a
/// space in some servers (a literal `+` is always `%2B` there).
fn decode_key(k: &str) -> String {
    let plus = k.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

/// A rustls client config trusting exactly the CA certificates in `pem`.
fn tls_config(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| Error::corrupt(state::CA_CERT, format!("is not PEM: {e}")))?;
        roots.add(c).map_err(|e| Error::corrupt(state::CA_CERT, format!("holds a certificate rustls refuses: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::corrupt(state::CA_CERT, "holds no certificate").with_hint("run the install again"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Io, "TLS", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_bucket_keys_from_a_url_encoded_listing_decode_spaces_unicode_and_plus() {
        assert_eq!(decode_key("a%20b/c+d%2Be%C3%A4"), "a b/c d+eä");
        assert_eq!(decode_key("plain/key.txt"), "plain/key.txt");
    }

    #[test]
    fn backup_s3_error_documents_give_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(error_fields(xml), ("NoSuchBucket".into(), "The specified bucket does not exist".into()));
        assert_eq!(error_fields(""), (String::new(), String::new()));
    }
}
