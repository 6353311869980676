//! Upstream cosign signatures checked when a bundle is created: images signed by the
//! real `cosign` (`cosign sign --key … --tlog-upload=false`, no transparency log) in a
//! real docker-registry. What is pinned:
//! - a signature by the spec's key passes, is carried in the signed manifest and is
//!   checked again offline by `airlock verify`;
//! - a signature by another key, a tampered signature and a missing signature (with
//!   `require: true`) are refused, naming the image, and no bundle is left;
//! - an image's own `signatures:` replaces the spec's; `require` on an image read from
//!   a file is refused;
//! - the signature and attestation manifests travel in the bundle's OCI layout: after
//!   `airlock registry push`, and from `airlock registry serve`, the real `cosign
//!   verify` (and `verify-attestation`) succeeds against the site's copy; a damaged
//!   carried signature blob is refused naming its image; a delta bundle carries a new
//!   signature like any changed blob;
//! - OCI 1.1 referrers (cosign's `--registry-referrers-mode=oci-1-1` signature and a
//!   `--new-bundle-format` attestation, kept by the registry's fallback tag) travel in
//!   the bundle: `airlock verify` lists them; on the pushed copy (fallback tag, merged
//!   into what the site's tag listed) and from `registry serve` (referrers API)
//!   `cosign tree --experimental-oci11` finds them and `cosign verify
//!   --experimental-oci11` / `verify-attestation --new-bundle-format` succeed with the
//!   key; a damaged referrer blob fails verify and a referrer of another image is
//!   refused at create, each naming the image.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock_format::manifest::blob_path;
use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use airlock_tests::registry::{build_image, make_tls, Registry, RegistryOptions};
use airlock_tests::{cargo_bin, demo_dir, require_tool};

/// Runs cosign; `ca`: the CA file its TLS connections trust (Go reads SSL_CERT_FILE).
fn cosign_run(cosign: &Path, dir: &Path, ca: Option<&Path>, args: &[&str]) -> Output {
    cosign_with(cosign, dir, ca, "0", args)
}

/// Runs cosign with `COSIGN_EXPERIMENTAL` set to `experimental` (`1` for its OCI 1.1
/// referrers mode).
fn cosign_with(cosign: &Path, dir: &Path, ca: Option<&Path>, experimental: &str, args: &[&str]) -> Output {
    let mut c = Command::new(cosign);
    c.current_dir(dir)
        .env("HOME", dir)
        .env("COSIGN_PASSWORD", "")
        .env("COSIGN_YES", "true")
        .env("COSIGN_EXPERIMENTAL", experimental)
        .args(args)
        .stdin(Stdio::null());
    if let Some(ca) = ca {
        c.env("SSL_CERT_FILE", ca);
    }
    c.output().unwrap()
}

/// cosign in its OCI 1.1 mode; must succeed.
fn cosign_oci11(cosign: &Path, dir: &Path, ca: &Path, args: &[&str]) -> String {
    let o = cosign_with(cosign, dir, Some(ca), "1", args);
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "cosign {args:?}: {said}");
    said
}

fn cosign_ca(bin: &Path, dir: &Path, ca: Option<&Path>, args: &[&str]) -> Output {
    let o = cosign_run(bin, dir, ca, args);
    assert!(
        o.status.success(),
        "cosign {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn cosign(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    cosign_ca(bin, dir, None, args)
}

/// A key pair in `dir/<name>.key` / `dir/<name>.pub`.
fn key_pair(bin: &Path, dir: &Path, name: &str) -> PathBuf {
    cosign(bin, dir, &["generate-key-pair", "--output-key-prefix", name]);
    dir.join(format!("{name}.pub"))
}

fn create(spec: &Path) -> Output {
    let out = spec.parent().unwrap().join("out/out.airlock");
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
    create_to(spec, &out, &[])
}

fn create_to(spec: &Path, out: &Path, extra: &[&str]) -> Output {
    let dir = spec.parent().unwrap();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    Command::new(cargo_bin("airlock-bundler"))
        .env("SOURCE_DATE_EPOCH", "1795305600")
        .env("HOME", dir)
        .env_remove("DOCKER_CONFIG")
        .arg("create")
        .arg(spec)
        .arg("-o")
        .arg(out)
        .arg("--key")
        .arg(demo_dir().join("keys/demo.key"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn airlock(args: &[&str]) -> Output {
    Command::new(cargo_bin("airlock"))
        .env_remove("DOCKER_CONFIG")
        .args(args)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o
}

/// `airlock registry serve`, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(bundle: &Path, tls: &Path, log: &Path) -> (Serve, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host = format!("127.0.0.1:{port}");
    let child = Command::new(cargo_bin("airlock"))
        .args(["registry", "serve"])
        .arg(bundle)
        .args(["--listen", &host, "--pubkey"])
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--tls-cert")
        .arg(tls.join("server.crt"))
        .arg("--tls-key")
        .arg(tls.join("server.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Serve(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&host).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("serve exited ({status}): {}", std::fs::read_to_string(log).unwrap());
        }
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, host)
}

/// The bundle `src` re-packed with one byte of entry `path` changed (in the
/// decompressed stream: a flip in the compressed file would break decoding first).
fn with_damaged_entry(src: &Path, path: &str, out: &Path) {
    let mut raw = zstd::decode_all(std::fs::File::open(src).unwrap()).unwrap();
    let mut offset = None;
    for e in tar::Archive::new(&raw[..]).entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(path) {
            offset = Some(e.raw_file_position() as usize + 10);
        }
    }
    raw[offset.expect("the entry is in the bundle")] ^= 1;
    std::fs::write(out, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
}

fn spec(dir: &Path, reg: &Registry, global: &str, images: &[(&str, &str)]) -> PathBuf {
    let mut y = format!(
        "name: signed\nversion: '1.0'\nregistries:\n  - host: '{}'\n    insecure: true\n{global}components:\n  - name: app\n    images:\n",
        reg.host()
    );
    for (repo, own) in images {
        y.push_str(&format!(
            "      - ref: example.com/{repo}:1\n        from: docker://{}/{repo}:1\n{own}",
            reg.host()
        ));
    }
    let p = dir.join("bundle.yaml");
    std::fs::write(&p, y).unwrap();
    let _ = std::fs::remove_file(dir.join("bundle.lock"));
    p
}

fn refused(o: &Output, image: &str, cause: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "created although {cause}");
    assert!(err.contains(&format!("image {image}")) && err.contains(cause), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn cosign_signatures_are_checked_at_create_and_bad_or_missing_ones_refused_naming_the_image() {
    let (Some(bin), Some(_), Some(_)) = (require_tool("cosign"), require_tool("skopeo"), require_tool("umoci")) else {
        return;
    };
    let Some(reg) = Registry::start(RegistryOptions::default()) else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let layout = d.join("layout");
    build_image(d, &layout, "signed", "amd64", &[("a.bin", 1000)]).unwrap();
    build_image(d, &layout, "unsigned", "amd64", &[("b.bin", 1000)]).unwrap();
    reg.push(&format!("oci:{}:signed", layout.display()), "signed:1", false).unwrap();
    reg.push(&format!("oci:{}:unsigned", layout.display()), "unsigned:1", false).unwrap();
    let vendor = key_pair(&bin, d, "vendor");
    let other = key_pair(&bin, d, "other");
    let digest = reg.skopeo_digest("signed:1").unwrap();
    let signed = format!("{}/signed@{digest}", reg.host());
    cosign(&bin, d, &["sign", "--key", "vendor.key", "--tlog-upload=false", "--allow-http-registry", &signed]);

    let required = |key: &Path| format!("signatures:\n  require: true\n  keys: [{}]\n", key.display());
    // Good: signed by the spec's key.
    let o = create(&spec(d, &reg, &required(&vendor), &[("signed", "")]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Carried into the signed manifest, and checked again offline by `airlock verify`.
    let out = d.join("out/out.airlock");
    let m = read_manifest(&BundleFiles::locate(&out).unwrap(), None).unwrap().0;
    let check = m.images[0].cosign.as_ref().expect("the check is carried");
    assert!(check.required && check.signature.as_ref().unwrap().key == vendor.display().to_string());
    let v = Command::new(cargo_bin("airlock"))
        .arg("verify")
        .arg(&out)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{text}{}", String::from_utf8_lossy(&v.stderr));
    assert!(text.contains(&format!("cosign signature good, key {}", vendor.display())), "{text}");

    // Another key.
    let o = create(&spec(d, &reg, &required(&other), &[("signed", "")]));
    refused(&o, "example.com/signed:1", "does not verify");

    // Missing, and required.
    let o = create(&spec(d, &reg, &required(&vendor), &[("signed", ""), ("unsigned", "")]));
    refused(&o, "example.com/unsigned:1", "has no signature");
    // The image's own setting replaces the spec's: not required for this one.
    let own = "        signatures: {require: false, keys: [vendor.pub]}\n";
    let o = create(&spec(d, &reg, &required(&vendor), &[("signed", ""), ("unsigned", own)]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // An image read from a file has no registry to keep its signature in.
    let from_file = spec(d, &reg, &required(&vendor), &[]);
    let text = std::fs::read_to_string(&from_file).unwrap()
        + &format!("      - ref: example.com/local:1\n        from: oci:{}:signed\n", layout.display());
    std::fs::write(&from_file, text).unwrap();
    refused(&create(&from_file), "example.com/local:1", "not a registry source");

    // Tampered: the signature annotation altered in the registry.
    let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    let url = format!("http://{}/v2/signed/manifests/{tag}", reg.host());
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    let got = Command::new("curl").args(["-sf", "-H", accept, &url]).output().unwrap();
    assert!(got.status.success());
    let mut m: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    let sig = m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap().to_string();
    // One character in the middle (inside r or s): still base64, still DER.
    let mut chars: Vec<char> = sig.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();
    m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] = flipped.into();
    let file = d.join("tampered.json");
    std::fs::write(&file, serde_json::to_vec(&m).unwrap()).unwrap();
    let put = Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let o = create(&spec(d, &reg, &required(&vendor), &[("signed", "")]));
    refused(&o, "example.com/signed:1", "does not verify");
}

#[test]
fn cosign_verify_succeeds_against_the_pushed_and_the_served_copy_of_a_signed_image() {
    let (Some(bin), Some(_), Some(_), Some(_)) =
        (require_tool("cosign"), require_tool("skopeo"), require_tool("umoci"), require_tool("openssl"))
    else {
        return;
    };
    let Some(reg) = Registry::start(RegistryOptions { tls: true, ..Default::default() }) else { return };
    let ca = reg.ca_file().unwrap();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let layout = d.join("layout");
    build_image(d, &layout, "signed", "amd64", &[("a.bin", 1000)]).unwrap();
    build_image(d, &layout, "unsigned", "amd64", &[("b.bin", 1000)]).unwrap();
    reg.push(&format!("oci:{}:signed", layout.display()), "signed:1", false).unwrap();
    reg.push(&format!("oci:{}:unsigned", layout.display()), "unsigned:1", false).unwrap();
    let vendor = key_pair(&bin, d, "vendor");
    let digest = reg.skopeo_digest("signed:1").unwrap();
    let unsigned_digest = reg.skopeo_digest("unsigned:1").unwrap();
    let upstream = format!("{}/signed@{digest}", reg.host());
    let sign = ["sign", "--key", "vendor.key", "--tlog-upload=false", &upstream];
    cosign_ca(&bin, d, Some(&ca), &sign);
    std::fs::write(d.join("predicate.json"), r#"{"built-by":"vendor ci"}"#).unwrap();
    let attest = ["attest", "--key", "vendor.key", "--tlog-upload=false", "--type", "custom"];
    cosign_ca(&bin, d, Some(&ca), &[&attest[..], &["--predicate", "predicate.json", &upstream]].concat());

    // Signatures checked but not required: the unsigned image comes along untouched.
    let global = format!("signatures:\n  require: false\n  keys: [{}]\n", vendor.display());
    let spec = spec(d, &reg, &global, &[("signed", ""), ("unsigned", "")]);
    let v1 = d.join("v1/v1.airlock");
    ok(create_to(&spec, &v1, &[]));
    let m = read_manifest(&BundleFiles::locate(&v1).unwrap(), None).unwrap().0;
    let signed = m.images.iter().find(|i| i.reference == "example.com/signed:1").unwrap();
    let check = signed.cosign.as_ref().unwrap();
    let tags: Vec<&str> = check.objects.iter().map(|o| o.tag.as_str()).collect();
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(tags, [format!("sha256-{hex}.sig"), format!("sha256-{hex}.att")]);
    let unsigned = m.images.iter().find(|i| i.reference == "example.com/unsigned:1").unwrap();
    assert!(unsigned.cosign.as_ref().is_some_and(|c| c.signature.is_none() && c.objects.is_empty()));

    // Pushed: stock cosign finds the signature and the attestation under the prefix.
    let ca_arg = ca.display().to_string();
    let to = format!("{}/site", reg.host());
    let o = ok(airlock(&["registry", "push", v1.to_str().unwrap(), "--to", &to, "--ca-file", &ca_arg]));
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let summary = "2 of 2 images and 2 of 2 cosign signature or attestation manifests pushed";
    assert!(said.contains(summary) && said.contains(&format!(":sha256-{hex}.sig")), "{said}");
    let pushed = format!("{to}/example.com/signed@{digest}");
    let verify = |reference: &str, ca: &Path| {
        let o =
            cosign_run(&bin, d, Some(ca), &["verify", "--key", "vendor.pub", "--insecure-ignore-tlog=true", reference]);
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    let (good, out) = verify(&pushed, &ca);
    assert!(good && out.contains(&digest), "{out}");
    let at = ["verify-attestation", "--key", "vendor.pub", "--insecure-ignore-tlog=true", "--type", "custom"];
    cosign_ca(&bin, d, Some(&ca), &[&at[..], &[pushed.as_str()]].concat());
    // The unsigned image is there at its digest, with nothing for cosign to find.
    assert_eq!(reg.skopeo_digest("site/example.com/unsigned:1").unwrap(), unsigned_digest);
    let (good, out) = verify(&format!("{to}/example.com/unsigned@{unsigned_digest}"), &ca);
    assert!(!good && out.contains("no signatures found"), "{out}");

    // Served from the bundle itself, with the site's TLS.
    let tls = d.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    make_tls(&tls).unwrap();
    let (server, host) = serve(&v1, &tls, &d.join("serve.log"));
    let (good, out) = verify(&format!("{host}/example.com/signed@{digest}"), &tls.join("ca.crt"));
    assert!(good && out.contains(&digest), "{out}");
    drop(server);

    // A carried signature blob damaged in the bundle: refused, naming the image.
    let payload = check.objects[0].blobs.last().copied().unwrap();
    let damaged = d.join("damaged/v1.airlock");
    std::fs::create_dir_all(damaged.parent().unwrap()).unwrap();
    with_damaged_entry(&v1, &blob_path(&payload), &damaged);
    let o = airlock(&["verify", damaged.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{text}");
    assert!(text.contains(&blob_path(&payload)) && text.contains("example.com/signed:1"), "{text}");

    // Signed once more (an annotation makes it a new payload; cosign keeps one
    // signature per payload and key): a delta carries the new signature manifest like
    // any changed blob, and leaves the unchanged image to the base.
    cosign_ca(&bin, d, Some(&ca), &[&sign[..3], &["-a", "release=2"], &sign[3..]].concat());
    let v2 = d.join("v2/v2.airlock");
    ok(create_to(&spec, &v2, &["--base", v1.to_str().unwrap()]));
    let delta = read_manifest(&BundleFiles::locate(&v2).unwrap(), None).unwrap().0;
    let resigned = delta.images.iter().find(|i| i.reference == "example.com/signed:1").unwrap();
    let sig = &resigned.cosign.as_ref().unwrap().objects[0];
    assert_ne!(sig.digest, check.objects[0].digest, "the new signature manifest");
    assert!(delta.entry(&blob_path(&sig.digest)).is_some(), "the delta carries the new signature manifest");
    assert!(delta.base_entry(&blob_path(&signed.digest)).is_some(), "the image itself comes from the base");
    ok(airlock(&["verify", v2.to_str().unwrap()]));
}

#[test]
fn oci_referrers_travel_in_the_bundle_to_the_pushed_and_the_served_copy() {
    let (Some(bin), Some(_), Some(_), Some(_)) =
        (require_tool("cosign"), require_tool("skopeo"), require_tool("umoci"), require_tool("openssl"))
    else {
        return;
    };
    let Some(reg) = Registry::start(RegistryOptions { tls: true, ..Default::default() }) else { return };
    let ca = reg.ca_file().unwrap();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let layout = d.join("layout");
    build_image(d, &layout, "one", "amd64", &[("a.bin", 1000)]).unwrap();
    build_image(d, &layout, "two", "amd64", &[("b.bin", 1000)]).unwrap();
    reg.push(&format!("oci:{}:one", layout.display()), "app:1", false).unwrap();
    reg.push(&format!("oci:{}:two", layout.display()), "app:2", false).unwrap();
    key_pair(&bin, d, "vendor");
    let digest = reg.skopeo_digest("app:1").unwrap();
    let hex = digest.trim_start_matches("sha256:").to_string();
    let upstream = format!("{}/app@{digest}", reg.host());
    let key = ["--key", "vendor.key", "--tlog-upload=false"];
    cosign_oci11(&bin, d, &ca, &[&["sign"][..], &key, &["--registry-referrers-mode=oci-1-1", &upstream]].concat());
    std::fs::write(d.join("predicate.json"), r#"{"sbom":"vendor ci"}"#).unwrap();
    let attest = ["attest", "--new-bundle-format", "--type", "custom", "--predicate", "predicate.json"];
    cosign_oci11(&bin, d, &ca, &[&attest[..], &key, &[upstream.as_str()]].concat());

    // Checked (not required: the OCI 1.1 signature has no `.sig` tag): both referrers
    // are carried and listed by `airlock verify`.
    let vendor = d.join("vendor.pub");
    let global = format!("signatures:\n  require: false\n  keys: [{}]\n", vendor.display());
    let spec = spec(d, &reg, &global, &[("app", "")]);
    let v1 = d.join("v1/v1.airlock");
    ok(create_to(&spec, &v1, &[]));
    let m = read_manifest(&BundleFiles::locate(&v1).unwrap(), None).unwrap().0;
    let check = m.images[0].cosign.as_ref().unwrap();
    assert_eq!(check.referrers.len(), 2, "{check:?}");
    let o = ok(airlock(&["verify", v1.to_str().unwrap()]));
    let text = String::from_utf8_lossy(&o.stdout);
    for r in &check.referrers {
        assert!(text.contains("OCI referrers carried:") && text.contains(&r.digest.to_string()), "{text}");
    }

    // Pushed under a prefix: the referrers by digest and the fallback tag's index,
    // which `cosign tree` reads from a registry without the referrers API.
    let ca_arg = ca.display().to_string();
    let to = format!("{}/site", reg.host());
    ok(airlock(&["registry", "push", v1.to_str().unwrap(), "--to", &to, "--ca-file", &ca_arg]));
    let tree = |reference: &str, ca: &Path| cosign_oci11(&bin, d, ca, &["tree", "--experimental-oci11", reference]);
    let pushed = tree(&format!("{to}/example.com/app@{digest}"), &ca);
    for r in &check.referrers {
        assert!(pushed.contains(&r.digest.to_string()), "{pushed}");
    }
    // And both verify with the vendor's key. cosign wants a trusted root for the
    // Sigstore bundle format even when no transparency log is asked: an empty one.
    std::fs::write(d.join("root.json"), r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#)
        .unwrap();
    let offline = ["--trusted-root", "root.json", "--key", "vendor.pub", "--insecure-ignore-tlog=true"];
    let verify = |reference: &str, ca: &Path| {
        let said =
            cosign_oci11(&bin, d, ca, &[&["verify", "--experimental-oci11"][..], &offline, &[reference]].concat());
        assert!(said.contains(&digest), "{said}");
        let att = ["verify-attestation", "--new-bundle-format", "--type", "custom"];
        cosign_oci11(&bin, d, ca, &[&att[..], &offline, &[reference]].concat());
    };
    verify(&format!("{to}/example.com/app@{digest}"), &ca);
    // Pushing again leaves the site's tag as it is.
    let tag_url = format!("https://{}/v2/site/example.com/app/manifests/sha256-{hex}", reg.host());
    let accept = "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
    let get = |url: &str| {
        let o = Command::new("curl").args(["-sf", "--cacert", &ca_arg, "-H", accept, url]).output().unwrap();
        assert!(o.status.success(), "GET {url}");
        o.stdout
    };
    let put_index = |url: &str, bytes: &[u8]| {
        let file = d.join("index.json");
        std::fs::write(&file, bytes).unwrap();
        let put = Command::new("curl")
            .args([
                "-sf",
                "--cacert",
                &ca_arg,
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/vnd.oci.image.index.v1+json",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(url)
            .output()
            .unwrap();
        assert!(put.status.success(), "PUT {url}: {}", String::from_utf8_lossy(&put.stderr));
    };
    let first = get(&tag_url);
    ok(airlock(&["registry", "push", v1.to_str().unwrap(), "--to", &to, "--ca-file", &ca_arg]));
    assert_eq!(get(&tag_url), first);
    // The site's tag listing a manifest of its own (and not the bundle's referrers): the
    // push adds the bundle's and keeps the site's.
    reg.push(&format!("oci:{}:two", layout.display()), "site/example.com/app:own", false).unwrap();
    let own = reg.skopeo_digest("site/example.com/app:own").unwrap();
    let own_manifest = get(&format!("https://{}/v2/site/example.com/app/manifests/{own}", reg.host()));
    let site = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": own,
                       "size": own_manifest.len(), "artifactType": "application/x-site"}]});
    put_index(&tag_url, &serde_json::to_vec(&site).unwrap());
    ok(airlock(&["registry", "push", v1.to_str().unwrap(), "--to", &to, "--ca-file", &ca_arg]));
    let merged: serde_json::Value = serde_json::from_slice(&get(&tag_url)).unwrap();
    let listed: Vec<&str> =
        merged["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    let mut want: Vec<String> = check.referrers.iter().map(|r| r.digest.to_string()).collect();
    want.push(own.clone());
    assert_eq!(listed, want, "{merged}");

    // Served from the bundle: the referrers API, filtered by artifact type, and the tag.
    let tls = d.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    make_tls(&tls).unwrap();
    let (server, host) = serve(&v1, &tls, &d.join("serve.log"));
    let served = tree(&format!("{host}/example.com/app@{digest}"), &tls.join("ca.crt"));
    for r in &check.referrers {
        assert!(served.contains(&r.digest.to_string()), "{served}");
    }
    verify(&format!("{host}/example.com/app@{digest}"), &tls.join("ca.crt"));
    let bundle_type = check.referrers.iter().find_map(|r| r.artifact_type.clone()).unwrap();
    let filtered = format!(
        "https://{host}/v2/example.com/app/referrers/{digest}?artifactType={}",
        bundle_type.replace('/', "%2F").replace('+', "%2B")
    );
    let o = Command::new("curl").args(["-sf", "--cacert"]).arg(tls.join("ca.crt")).arg(&filtered).output().unwrap();
    let index: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed = index["manifests"].as_array().unwrap();
    let want = check.referrers.iter().filter(|r| r.artifact_type.as_deref() == Some(&bundle_type)).count();
    assert!(listed.len() == want && want < 2, "{index}");
    // The fallback tag, for clients that read it instead of the API: all of them.
    let tag = format!("https://{host}/v2/example.com/app/manifests/sha256-{hex}");
    let o = Command::new("curl").args(["-sf", "--cacert"]).arg(tls.join("ca.crt")).arg(&tag).output().unwrap();
    let index: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let listed: Vec<&str> =
        index["manifests"].as_array().into_iter().flatten().filter_map(|m| m["digest"].as_str()).collect();
    let want: Vec<String> = check.referrers.iter().map(|r| r.digest.to_string()).collect();
    assert_eq!(listed, want, "{index}");
    drop(server);

    // A referrer blob damaged in the bundle: refused, naming the image.
    let blob = *check.referrers[0].blobs.last().unwrap();
    let damaged = d.join("damaged/v1.airlock");
    std::fs::create_dir_all(damaged.parent().unwrap()).unwrap();
    with_damaged_entry(&v1, &blob_path(&blob), &damaged);
    let o = airlock(&["verify", damaged.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{text}");
    assert!(text.contains(&blob_path(&blob)) && text.contains("example.com/app:1"), "{text}");

    // The fallback tag of app:1 rewritten to list a referrer of app:2: refused at
    // create, naming the image.
    let two = reg.skopeo_digest("app:2").unwrap();
    cosign_oci11(
        &bin,
        d,
        &ca,
        &[&["sign"][..], &key, &["--registry-referrers-mode=oci-1-1", &format!("{}/app@{two}", reg.host())]].concat(),
    );
    let other = get(&format!("https://{}/v2/app/manifests/sha256-{}", reg.host(), two.trim_start_matches("sha256:")));
    put_index(&format!("https://{}/v2/app/manifests/sha256-{hex}", reg.host()), &other);
    refused(&create(&spec), "example.com/app:1", "not this image's");
}
