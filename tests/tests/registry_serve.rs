//! `airlock registry serve`: the demo bundle served read-only over TLS, pulled by real
//! clients. What is pinned:
//! - `skopeo inspect` of every image gives the digest the signed bundle names, and
//!   `skopeo copy --all` fetches the two-platform image whole;
//! - a real containerd pulls every image (all platforms) and holds the signed digests;
//! - writes are refused (405), unknown names and digests are 404;
//! - a damaged bundle is not served at all.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use airlock_tests::registry::make_tls;
use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir, require_tool, Containerd};

struct Server {
    child: Child,
    host: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn serve_command(bundle: &Path, port: u16, tls: &Path) -> Command {
    let mut c = Command::new(cargo_bin("airlock"));
    c.args(["registry", "serve"])
        .arg(bundle)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--tls-cert")
        .arg(tls.join("server.crt"))
        .arg("--tls-key")
        .arg(tls.join("server.key"))
        .stdin(Stdio::null());
    c
}

/// Starts the server and waits until it accepts connections (it verifies first).
fn start(bundle: &Path, tls: &Path, log: &Path) -> Server {
    let port = free_port();
    let child = serve_command(bundle, port, tls)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Server { child, host: format!("127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&server.host).is_err() {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("serve exited ({status}): {}", std::fs::read_to_string(log).unwrap());
        }
        assert!(Instant::now() < deadline, "serve did not listen: {}", std::fs::read_to_string(log).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn status_of(ca: &Path, method: &str, url: &str) -> String {
    let o = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--cacert"])
        .arg(ca)
        .arg(url));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn serve_gives_skopeo_and_containerd_every_image_at_its_signed_digest_read_only() {
    if require_tool("skopeo").is_none() || require_tool("openssl").is_none() || require_tool("curl").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tls = t.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    make_tls(&tls).unwrap();
    // skopeo trusts the *.crt of --cert-dir as CAs.
    let certs = t.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(tls.join("ca.crt"), certs.join("ca.crt")).unwrap();
    let bundle = build_demo_bundle(t.path(), &[]);
    let m = read_manifest(&BundleFiles::locate(&bundle).unwrap(), None).unwrap().0;
    let log = t.path().join("serve.log");
    let server = start(&bundle, &tls, &log);
    let listing = std::fs::read_to_string(&log).unwrap();

    let cert_dir = format!("--cert-dir={}", certs.display());
    for i in &m.images {
        let at = format!("docker://{}/{}", server.host, i.reference);
        let raw = run(Command::new("skopeo").args(["inspect", "--raw", &cert_dir, &at])).stdout;
        assert_eq!(airlock_format::Sha256Digest::of(&raw), i.digest, "{at}");
        assert!(listing.contains(&format!("{}/{}", server.host, i.reference)), "{listing}");
    }
    let multi = m.images.iter().find(|i| i.platforms.len() > 1).expect("a multi-platform image in the demo");
    let copy = t.path().join("copy");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "-q",
        &format!("--src-{}", &cert_dir[2..]),
        &format!("docker://{}/{}", server.host, multi.reference),
        &format!("oci:{}:x", copy.display()),
    ]));

    let ca = tls.join("ca.crt");
    let base = format!("https://{}/v2", server.host);
    assert_eq!(status_of(&ca, "GET", &format!("{base}/")), "200");
    assert_eq!(status_of(&ca, "PUT", &format!("{base}/docker.io/airlock-demo/api/manifests/evil")), "405");
    assert_eq!(status_of(&ca, "POST", &format!("{base}/docker.io/airlock-demo/api/blobs/uploads/")), "405");
    assert_eq!(status_of(&ca, "GET", &format!("{base}/docker.io/nothing/manifests/1")), "404");
    // A blob of another repository's image is not this repository's.
    let other = m.images.iter().find(|i| !i.reference.starts_with("docker.io/airlock-demo/api:")).unwrap();
    let foreign = other.blobs.iter().find(|b| !m.images[0].blobs.contains(b)).unwrap();
    let first = m.images[0].reference.rsplit_once(':').unwrap().0;
    assert_eq!(status_of(&ca, "GET", &format!("{base}/{first}/blobs/{foreign}")), "404");

    if let Some(cd) = Containerd::start() {
        cd.new_namespace();
        // containerd tries plain HTTP first for a loopback host unless its hosts.toml
        // names the server: as K3s writes it for a registry with a CA.
        let hosts = t.path().join("certs.d");
        std::fs::create_dir_all(hosts.join(&server.host)).unwrap();
        let toml = format!(
            "server = \"https://{h}\"\n[host.\"https://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n",
            h = server.host,
            ca = ca.display()
        );
        std::fs::write(hosts.join(&server.host).join("hosts.toml"), toml).unwrap();
        for i in &m.images {
            let name = format!("{}/{}", server.host, i.reference);
            let o = cd.ctr(&["images", "pull", "--all-platforms", "--hosts-dir", hosts.to_str().unwrap(), &name]);
            assert!(o.status.success(), "ctr pull {name}: {}", String::from_utf8_lossy(&o.stderr));
            let ls = String::from_utf8_lossy(&cd.ctr(&["images", "ls"]).stdout).into_owned();
            let line = ls.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
            assert!(line.contains(&i.digest.to_string()), "{line}");
        }
    }
    drop(server);

    // A damaged bundle: nothing is served.
    let damaged = damage(&bundle, t.path());
    let out = serve_command(&damaged, free_port(), &tls).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("hint:"), "{err}");
    assert!(!err.contains("serving"), "{err}");
}

/// The bundle re-packed with one byte of its largest blob changed.
fn damage(bundle: &Path, dir: &Path) -> PathBuf {
    let m = read_manifest(&BundleFiles::locate(bundle).unwrap(), None).unwrap().0;
    let entry = m.entries.iter().filter(|e| e.path.contains("blobs/")).max_by_key(|e| e.size).unwrap();
    let mut raw = zstd::decode_all(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut offset = None;
    for e in tar::Archive::new(&raw[..]).entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(entry.path.as_str()) {
            offset = Some(e.raw_file_position() as usize + 10);
        }
    }
    raw[offset.expect("blob entry")] ^= 1;
    let out = dir.join("damaged.airlock");
    std::fs::write(&out, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    out
}
