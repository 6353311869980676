//! A real S3 API server for the backup's bucket mirror: moto's server (`moto[server]`
//! from PyPI, installed by tests/run.sh in its own venv under `$AIRLOCK_TOOLS_DIR`),
//! serving HTTPS with a certificate for the demo site's S3 host issued by a test CA
//! (made with openssl). Sites that talk to it are installed with that CA as their
//! `customer-ca`, so the site CA is the S3 client's only trust root, as on a real site.
//!
//! Why moto: it implements the S3 REST API the mirror uses (SigV4 presigned requests,
//! ListObjectsV2 with continuation tokens and `encoding-type=url`, multipart uploads
//! with the 5 MiB minimum part size, S3 error documents) and runs here from PyPI; the
//! MinIO server itself is AGPL and not built for the tests. `boto3` (the AWS SDK, in
//! the same venv) seeds and reads the buckets: a client independent of the one tested.
//!
//! One server per test binary (started on first use); [`S3Server::lock`] serialises the
//! tests that share its buckets. It is stopped when the test binary exits: a shell
//! watches its standard input, which only the test process holds open.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The demo answers' ingress domain: the server's certificate names `s3.<it>`.
pub const DOMAIN: &str = "platform.example.test";

/// The credentials the tests give the sites (moto accepts any; the mirror signs every
/// request with them all the same).
pub const ACCESS_KEY: &str = "app-0123456789abcdef";
pub const SECRET_KEY: &str = "5ecret0f7he4pp5s3cl1ent0123456789abcdef";

/// The running server.
pub struct S3Server {
    pub addr: SocketAddr,
    dir: PathBuf,
    python: PathBuf,
    // Its standard input is held open for the process's life: its end stops the server.
    _watcher: Mutex<Child>,
    shared: RwLock<()>,
}

static SERVER: OnceLock<Option<S3Server>> = OnceLock::new();

fn openssl(args: &[&str], dir: &Path) {
    let o = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

impl S3Server {
    /// The binary's server, started on first use; `None` (skipped) when moto is not
    /// installed, a failure under `AIRLOCK_REQUIRE_TOOLS=1`.
    pub fn get() -> Option<&'static S3Server> {
        SERVER.get_or_init(Self::start).as_ref()
    }

    fn start() -> Option<S3Server> {
        let moto = crate::require_tool("moto_server")?;
        crate::require_tool("openssl")?;
        // The venv's python (boto3 beside moto).
        let python = std::fs::canonicalize(&moto).ok()?.parent()?.join("python");
        let dir = std::env::temp_dir().join(format!("airlock-s3-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key"], &dir);
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-days",
                "2",
                "-subj",
                "/CN=Airlock test S3 CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "ca.crt",
            ],
            &dir,
        );
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "s3.key"], &dir);
        openssl(&["req", "-new", "-key", "s3.key", "-subj", &format!("/CN=s3.{DOMAIN}"), "-out", "s3.csr"], &dir);
        std::fs::write(
            dir.join("s3.ext"),
            format!("subjectAltName=DNS:s3.{DOMAIN}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "s3.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "s3.ext",
                "-out",
                "s3.crt",
            ],
            &dir,
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("sh")
            .arg("-c")
            // The server runs until this shell's standard input ends (the test process exits).
            .arg(r#""$0" "$@" & p=$!; read _ || true; kill $p; rm -rf "$S3_TEST_DIR""#)
            .arg(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-c", "s3.crt", "-k", "s3.key"])
            .current_dir(&dir)
            .env("S3_TEST_DIR", &dir)
            // Path-style requests to `s3.<domain>`: the host is not a bucket name.
            .env("S3_IGNORE_SUBDOMAIN_BUCKETNAME", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let server = S3Server {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            python,
            _watcher: Mutex::new(child),
            shared: RwLock::new(()),
        };
        Some(server)
    }

    /// For a test that changes the buckets: no other test uses them meanwhile.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.shared.write().unwrap_or_else(|e| e.into_inner())
    }

    /// For a test that only reads the buckets.
    pub fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The answers of a site whose CA is the test CA (`customer-ca`), and the files they
    /// name: (target path, the file here) to put into the target root before the install.
    pub fn ca_answers(&self) -> (String, Vec<(&'static str, PathBuf)>) {
        let (cert, key) = ("/root/site/s3-test-ca.crt", "/root/site/s3-test-ca.key");
        (
            format!("pki:\n  mode: customer-ca\n  ca_cert: {cert}\n  ca_key: {key}\n"),
            vec![(cert, self.dir.join("ca.crt")), (key, self.dir.join("ca.key"))],
        )
    }

    /// `https://s3.<domain>:<port>` as boto3 reaches it (the name resolved to 127.0.0.1
    /// by the script; the test CA trusted).
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Runs `script` with boto3's S3 client as `s3` (credentials `key`/`secret`),
    /// `args` as `sys.argv[1:]`; its standard output.
    pub fn boto(&self, key: &str, secret: &str, script: &str, args: &[&str]) -> Result<String, String> {
        let prelude = format!(
            "import sys, boto3, botocore\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id=sys.stdin.readline().strip(), \
             aws_secret_access_key=sys.stdin.readline().strip(), region_name='us-east-1', verify=False, \
             config=botocore.config.Config(s3={{'addressing_style': 'path'}}))\n",
            self.url()
        );
        let mut child = Command::new(&self.python)
            .arg("-W")
            .arg("ignore")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child.stdin.take().unwrap().write_all(format!("{key}\n{secret}\n").as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }
}

impl S3Server {
    /// The server certificate and key (for `s3.<DOMAIN>`, issued by the test CA).
    pub fn cert_files(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("s3.crt"), self.dir.join("s3.key"))
    }
}

/// A second real S3 server, versitygw (Apache-2.0, `go install` by tests/run.sh), for
/// what moto does not do: it checks the signature of presigned requests, so refused
/// credentials are tested against it. Its buckets are directories (posix backend).
pub struct Versity {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Versity {
    /// Serves HTTPS with `cert`/`key` for the root user `access`/`secret`; `None`
    /// (skipped) when versitygw is not installed, a failure under AIRLOCK_REQUIRE_TOOLS=1.
    pub fn start(access: &str, secret: &str, cert: &Path, key: &Path) -> Option<Versity> {
        let bin = crate::require_tool("versitygw")?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .args(["--port", &format!("127.0.0.1:{port}")])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("posix")
            .arg(dir.path())
            // The root user's keys go through the environment, not the command line.
            .env("ROOT_ACCESS_KEY", access)
            .env("ROOT_SECRET_KEY", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("versitygw runs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "versitygw did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Versity { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir })
    }
}

impl Versity {
    /// Where its posix backend keeps the buckets: `<dir>/<bucket>/<key>` is an object.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Versity {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
