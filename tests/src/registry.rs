//! A real `docker-registry` (distribution v2.8) for tests, as in
//! `shared/lab/01-registry.sh`: its own config, storage and port on 127.0.0.1 in a
//! temp dir, optionally with htpasswd basic auth and TLS from a CA made by openssl.
//! Killed by its PID when dropped; [`Registry::stop`] and [`Registry::restart`] take it
//! down and bring it back on the same port and storage (for interrupted transfers).
//!
//! Also here: building small real images with umoci and pushing them with skopeo.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::require_tool;

/// What the registry asks of its clients.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// htpasswd basic auth with this user and password.
    pub login: Option<(String, String)>,
    /// Serve HTTPS with a certificate for 127.0.0.1 signed by a fresh test CA.
    pub tls: bool,
    /// Bearer token auth: the registry sends clients to a token service (run by the
    /// fixture on another port), which checks `login` and signs JWTs (RS256, x5c).
    pub token: bool,
    /// Log every request (the access log), for tests that count what a build fetches:
    /// [`Registry::requests`].
    pub access_log: bool,
}

impl RegistryOptions {
    /// A site registry as a customer runs one: htpasswd login, TLS from the test CA,
    /// and the access log, so a test can count what a push sent ([`Registry::uploads`]).
    pub fn site(user: &str, password: &str) -> Self {
        Self { login: Some((user.into(), password.into())), tls: true, access_log: true, ..Default::default() }
    }
}

pub struct Registry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    opts: RegistryOptions,
    token_service: Option<TokenService>,
}

/// Runs a command, failing with its output when it does not succeed.
pub fn run(program: &str, args: &[&str]) -> Result<Vec<u8>> {
    let out =
        Command::new(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!("{program} {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Registry {
    /// Starts a registry, or skips (`None`) / fails (`AIRLOCK_REQUIRE_TOOLS=1`) when
    /// `docker-registry` (or `htpasswd`, `openssl` for auth and TLS) is missing.
    pub fn start(opts: RegistryOptions) -> Option<Registry> {
        require_tool("docker-registry")?;
        if opts.login.is_some() && !opts.token {
            require_tool("htpasswd")?;
        }
        if opts.tls || opts.token {
            require_tool("openssl")?;
        }
        Some(Self::start_with(opts).expect("start a docker-registry"))
    }

    fn start_with(opts: RegistryOptions) -> Result<Registry> {
        let dir = tempfile::Builder::new().prefix("airlock-registry.").tempdir()?;
        let d = dir.path();
        let port = free_port()?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            !opts.access_log,
            d.join("data").display()
        );
        if opts.tls {
            make_tls(d)?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            ));
        }
        let mut token_service = None;
        if opts.token {
            let t = TokenService::start(d, opts.login.clone())?;
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                t.realm(),
                d.join("token.crt").display()
            ));
            token_service = Some(t);
        } else if let Some((user, pass)) = &opts.login {
            let h = run("htpasswd", &["-Bbn", user, pass])?;
            fs::write(d.join("htpasswd"), h)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: airlock-test\n    path: {}\n",
                d.join("htpasswd").display()
            ));
        }
        fs::write(d.join("config.yml"), config)?;
        let mut r = Registry { dir, child: None, port, opts, token_service };
        r.restart()?;
        Ok(r)
    }

    /// (Re)starts the process on the same port and storage and waits until it listens.
    pub fn restart(&mut self) -> Result<()> {
        let d = self.dir.path();
        let log = fs::OpenOptions::new().create(true).append(true).open(d.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn docker-registry")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("docker-registry exited early ({status}); log:\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on port {} within 20 s; log:\n{}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL, as a crash would); the storage stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `127.0.0.1:PORT`, as image references write the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that signed the server certificate, with `tls`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.opts.tls.then(|| self.dir.path().join("ca.crt"))
    }

    /// Where the registry keeps blob `digest` (`sha256:…`) on disk.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// skopeo's flags to talk to this registry (`--creds`, no TLS verification).
    pub fn skopeo_flags(&self, direction: &str) -> Vec<String> {
        let mut f = vec![format!("--{direction}-tls-verify=false")];
        if let Some((u, p)) = &self.opts.login {
            f.push(format!("--{direction}-creds={u}:{p}"));
        }
        f
    }

    /// `skopeo copy [--all] SRC docker://HOST/REPO`.
    pub fn push(&self, src: &str, repo_tag: &str, all: bool) -> Result<()> {
        let dest = format!("docker://{}/{repo_tag}", self.host());
        let mut args: Vec<String> = vec!["copy".into(), "-q".into()];
        if all {
            args.push("--all".into());
        }
        args.extend(self.skopeo_flags("dest"));
        args.push(src.into());
        args.push(dest);
        run("skopeo", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(())
    }

    /// `skopeo inspect --raw` digest (the root: index or manifest) of `repo_tag`.
    pub fn skopeo_digest(&self, repo_tag: &str) -> Result<String> {
        let mut args: Vec<String> = vec!["inspect".into(), "--raw".into()];
        args.extend(self.skopeo_flags("src").into_iter().map(|f| f.replace("--src-", "--")));
        args.push(format!("docker://{}/{repo_tag}", self.host()));
        let raw = run("skopeo", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, &raw))))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Every request served so far as `METHOD /path`, in order, from the access log
    /// (needs [`RegistryOptions::access_log`]).
    pub fn requests(&self) -> Vec<String> {
        assert!(self.opts.access_log, "the registry was started without its access log");
        self.log()
            .lines()
            .filter_map(|l| {
                // Combined log format: `HOST - USER [TIME] "METHOD PATH PROTO" STATUS ...`.
                let quoted = l.split('"').nth(1)?;
                let mut words = quoted.split(' ');
                let (method, path) = (words.next()?, words.next()?);
                path.starts_with('/').then(|| format!("{method} {path}"))
            })
            .collect()
    }

    /// Blob upload requests served so far (each chunk `PATCH`, each upload's closing
    /// `PUT`): what a push that should send nothing must leave unchanged.
    pub fn uploads(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("PATCH ") || r.starts_with("PUT ") && r.contains("/blobs/uploads/"))
            .count()
    }

    /// Asserts every image is in the registry under `prefix/<its reference>` at the
    /// digest the signed bundle names (`skopeo inspect`).
    pub fn assert_pushed(&self, prefix: &str, images: &[airlock_format::manifest::Image]) {
        for i in images {
            let at = format!("{prefix}/{}", i.reference);
            assert_eq!(self.skopeo_digest(&at).unwrap(), i.digest.to_string(), "{at}");
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.token_service.take() {
            t.stop();
        }
    }
}

const TOKEN_SERVICE: &str = "airlock-test-registry";
const TOKEN_ISSUER: &str = "airlock-test-token-issuer";

/// A minimal token service for distribution's `auth: token:` (the flow Docker Hub,
/// GHCR and Harbor use): `GET /token?service=…&scope=…` with optional Basic auth
/// answers `{"token": JWT}`, the JWT signed RS256 by a key whose self-signed
/// certificate is the registry's `rootcertbundle` and travels in the `x5c` header.
/// Every requested action is granted to a client that passes the login check.
struct TokenService {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenService {
    fn start(d: &Path, login: Option<(String, String)>) -> Result<TokenService> {
        let p = |n: &str| d.join(n).display().to_string();
        run("openssl", &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &p("token.key")])?;
        run(
            "openssl",
            &["pkcs8", "-topk8", "-nocrypt", "-in", &p("token.key"), "-outform", "DER", "-out", &p("token.p8")],
        )?;
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-key",
                &p("token.key"),
                "-subj",
                "/CN=airlock token signer",
                "-days",
                "2",
                "-out",
                &p("token.crt"),
            ],
        )?;
        run("openssl", &["x509", "-in", &p("token.crt"), "-outform", "DER", "-out", &p("token.der")])?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(&fs::read(d.join("token.p8"))?)
            .map_err(|e| anyhow::anyhow!("token key: {e}"))?;
        let cert_b64 = b64_std(&fs::read(d.join("token.der"))?);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    let _ = serve_token(c, &key, &cert_b64, login.as_ref());
                }
            }
        });
        Ok(TokenService { port, stop, thread: Some(thread) })
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn b64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(
    mut c: TcpStream,
    key: &ring::signature::RsaKeyPair,
    cert_b64: &str,
    login: Option<&(String, String)>,
) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(c.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| percent_decode(v))
        .collect();
    let authorized = match login {
        None => true,
        Some((u, p)) => {
            authorization.as_deref() == Some(format!("Basic {}", b64_std(format!("{u}:{p}").as_bytes())).as_str())
        }
    };
    if !authorized {
        let body = r#"{"details":"invalid credentials"}"#;
        write!(c, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        return Ok(());
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [cert_b64]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": login.map(|l| l.0.as_str()).unwrap_or(""), "aud": TOKEN_SERVICE,
        "exp": now + 600, "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input =
        format!("{}.{}", b64_url(&serde_json::to_vec(&header)?), b64_url(&serde_json::to_vec(&claims)?));
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut sig)
        .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
    let token = format!("{signing_input}.{}", b64_url(&sig));
    let body = serde_json::to_string(&serde_json::json!({"token": token, "access_token": token}))?;
    write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1 signed by it (openssl).
pub fn make_tls(d: &Path) -> Result<()> {
    let p = |n: &str| d.join(n).display().to_string();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=airlock test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ],
    )?;
    fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")?;
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &p("server.crt"),
            "-extfile",
            &p("ext.cnf"),
        ],
    )?;
    Ok(())
}

/// Builds a small real image with umoci into `layout` under `tag`: busybox (if
/// installed, else a shell script) plus `extra` files of random bytes (name, size), so
/// tests can make layers as big as they need. Config linux/`arch`.
pub fn build_image(work: &Path, layout: &Path, tag: &str, arch: &str, extra: &[(&str, usize)]) -> Result<()> {
    let l = layout.display().to_string();
    if !layout.join("oci-layout").exists() {
        run("umoci", &["init", "--layout", &l])?;
    }
    let image = format!("{l}:{tag}");
    let rootfs = work.join(format!("rootfs-{tag}"));
    fs::create_dir_all(rootfs.join("bin"))?;
    fs::write(rootfs.join("bin/hello"), format!("#!/bin/sh\necho {tag}\n"))?;
    for (name, size) in extra {
        let mut buf = vec![0u8; *size];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
            .map_err(|_| anyhow::anyhow!("random bytes"))?;
        fs::write(rootfs.join(name), buf)?;
    }
    run("umoci", &["new", "--image", &image])?;
    run("umoci", &["insert", "--image", &image, &rootfs.display().to_string(), "/"])?;
    run(
        "umoci",
        &["config", "--image", &image, "--config.cmd", "/bin/hello", "--os", "linux", "--architecture", arch],
    )?;
    run("umoci", &["gc", "--layout", &l])?;
    Ok(())
}

/// Adds to `layout`'s index.json an OCI index named `name` over the images tagged
/// `tags` (each `(tag, arch)`), as `skopeo copy --all` pushes it.
pub fn add_index(layout: &Path, tags: &[(&str, &str)], name: &str) -> Result<()> {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&index_path)?)?;
    let mut manifests = Vec::new();
    for (tag, arch) in tags {
        let entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == *tag)
            .with_context(|| format!("tag {tag} in {}", layout.display()))?;
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": entry["digest"], "size": entry["size"],
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let doc = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
    }))?;
    let hex = hex::encode(ring::digest::digest(&ring::digest::SHA256, &doc));
    fs::write(layout.join("blobs/sha256").join(&hex), &doc)?;
    index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{hex}"), "size": doc.len(),
        "annotations": {"org.opencontainers.image.ref.name": name},
    }));
    fs::write(&index_path, serde_json::to_vec(&index)?)?;
    Ok(())
}
