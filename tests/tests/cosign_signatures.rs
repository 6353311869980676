//! Upstream cosign signatures checked when a bundle is created: images signed by the
//! real `cosign` (`cosign sign --key … --tlog-upload=false`, no transparency log) in a
//! real docker-registry. What is pinned:
//! - a signature by the spec's key passes, is carried in the signed manifest and is
//!   checked again offline by `airlock verify`;
//! - a signature by another key, a tampered signature and a missing signature (with
//!   `require: true`) are refused, naming the image, and no bundle is left;
//! - an image's own `signatures:` replaces the spec's; `require` on an image read from
//!   a file is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use airlock_tests::registry::{build_image, Registry, RegistryOptions};
use airlock_tests::{cargo_bin, demo_dir, require_tool};

fn cosign(cosign: &Path, dir: &Path, args: &[&str]) -> Output {
    let o = Command::new(cosign)
        .current_dir(dir)
        .env("HOME", dir)
        .env("COSIGN_PASSWORD", "")
        .env("COSIGN_YES", "true")
        .env("COSIGN_EXPERIMENTAL", "0")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cosign {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A key pair in `dir/<name>.key` / `dir/<name>.pub`.
fn key_pair(bin: &Path, dir: &Path, name: &str) -> PathBuf {
    cosign(bin, dir, &["generate-key-pair", "--output-key-prefix", name]);
    dir.join(format!("{name}.pub"))
}

fn create(spec: &Path) -> Output {
    let dir = spec.parent().unwrap();
    let out = dir.join("out/out.airlock");
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    Command::new(cargo_bin("airlock-bundler"))
        .env("SOURCE_DATE_EPOCH", "1795305600")
        .env("HOME", dir)
        .env_remove("DOCKER_CONFIG")
        .arg("create")
        .arg(spec)
        .arg("-o")
        .arg(&out)
        .arg("--key")
        .arg(demo_dir().join("keys/demo.key"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
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
