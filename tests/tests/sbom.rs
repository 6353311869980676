//! The bundle's CycloneDX SBOM, end to end with real tools: images built with umoci
//! whose layers hold a small Debian `var/lib/dpkg/status` (one image) and an Alpine
//! `lib/apk/db/installed` (another), a third whose second layer whites the dpkg status
//! out (`umoci insert --whiteout`), bundled by `airlock-bundler create` and read back
//! with `airlock inspect --sbom`.
//!
//! The package files are small hand-written stand-ins in the real formats, not copies
//! of a distribution's database.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use airlock_tests::{cargo_bin, require_tool, workspace_root};
use serde_json::Value;

const DPKG_STATUS: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n\
Source: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library: Shared libraries\n Contains the standard libraries.\n\n\
Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n\n\
Package: removed-pkg\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 0.1\n";

const APK_INSTALLED: &str = "C:Q1stand-in=\nP:musl\nV:1.2.5-r0\nA:x86_64\nL:MIT\no:musl\n\n\
C:Q1stand-in=\nP:busybox\nV:1.36.1-r29\nA:x86_64\nL:GPL-2.0-only\no:busybox\n";

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn umoci(args: &[&str]) {
    let root = airlock_tests::is_root();
    let mut c = Command::new("umoci");
    if !root {
        c.arg("--rootless");
    }
    run(c.args(args));
}

/// One image `layout:tag`: a first layer with `files` (path, content), then one
/// `umoci insert --whiteout` layer per path in `whiteouts`.
fn build_image(work: &Path, layout: &Path, tag: &str, files: &[(&str, &str)], whiteouts: &[&str]) {
    let rootfs = work.join(format!("rootfs-{tag}"));
    for (p, text) in files {
        let f = rootfs.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, text).unwrap();
    }
    let l = layout.to_str().unwrap();
    let image = format!("{l}:{tag}");
    if !layout.exists() {
        umoci(&["init", "--layout", l]);
    }
    umoci(&["new", "--image", &image]);
    umoci(&["insert", "--image", &image, rootfs.to_str().unwrap(), "/"]);
    for w in whiteouts {
        umoci(&["insert", "--image", &image, "--whiteout", w]);
    }
    umoci(&["config", "--image", &image, "--os", "linux", "--architecture", "amd64"]);
    fs::remove_dir_all(rootfs).unwrap();
}

fn build_bundle(dir: &Path, out: &Path) {
    run(Command::new(cargo_bin("airlock-bundler"))
        .env("SOURCE_DATE_EPOCH", "1795305600")
        .arg("create")
        .arg(dir.join("bundle.yaml"))
        .arg("-o")
        .arg(out)
        .arg("--key")
        .arg(workspace_root().join("examples/demo/keys/demo.key")));
}

fn components<'a>(doc: &'a Value, purl_prefix: &str) -> Vec<&'a Value> {
    doc["components"]
        .as_array()
        .expect("components is an array")
        .iter()
        .filter(|c| c["purl"].as_str().is_some_and(|p| p.starts_with(purl_prefix)))
        .collect()
}

fn property<'a>(c: &'a Value, name: &str) -> Vec<&'a str> {
    c["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == name)
        .filter_map(|p| p["value"].as_str())
        .collect()
}

#[test]
fn sbom_lists_images_charts_files_and_os_packages_from_layers() {
    if require_tool("umoci").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layout = dir.join("layout");
    build_image(
        dir,
        &layout,
        "deb",
        &[("var/lib/dpkg/status", DPKG_STATUS), ("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")],
        &[],
    );
    build_image(dir, &layout, "apk", &[("lib/apk/db/installed", APK_INSTALLED)], &[]);
    build_image(dir, &layout, "gone", &[("var/lib/dpkg/status", DPKG_STATUS)], &["/var/lib/dpkg/status"]);
    fs::write(dir.join("notes.txt"), "operator notes\n").unwrap();
    fs::write(
        dir.join("bundle.yaml"),
        "name: sbom-test\nversion: 0.1.0\ncomponents:\n  - name: app\n    images:\n\
         \x20     - ref: registry.local/team/deb:1.0\n        from: oci:layout:deb\n\
         \x20     - ref: registry.local/team/apk:1.0\n        from: oci:layout:apk\n\
         \x20     - ref: registry.local/team/gone:1.0\n        from: oci:layout:gone\n\
         \x20   charts:\n      - path: ../../examples/demo/charts/notes-0.1.0.tgz\n\
         \x20   files:\n      - path: notes.txt\n",
    )
    .unwrap();
    // The chart path is relative to the spec: point it at the demo chart instead.
    let spec = fs::read_to_string(dir.join("bundle.yaml")).unwrap().replace(
        "../../examples/demo/charts/notes-0.1.0.tgz",
        workspace_root().join("examples/demo/charts/notes-0.1.0.tgz").to_str().unwrap(),
    );
    fs::write(dir.join("bundle.yaml"), spec).unwrap();
    let out = dir.join("b.airlock");
    build_bundle(dir, &out);

    let bytes = run(Command::new(cargo_bin("airlock")).arg("inspect").arg("--sbom").arg(&out));
    let doc: Value = serde_json::from_slice(&bytes).expect("inspect --sbom prints JSON");
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(doc["specVersion"], "1.5");
    assert!(doc["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
    assert_eq!(doc["metadata"]["component"]["name"], "sbom-test");

    // Images: reference, digest and platform, with an oci purl.
    let images = components(&doc, "pkg:oci/");
    assert_eq!(images.len(), 3, "{images:#?}");
    let deb_img = images.iter().find(|c| property(c, "airlock:reference") == ["registry.local/team/deb:1.0"]).unwrap();
    assert_eq!(deb_img["type"], "container");
    assert_eq!(property(deb_img, "airlock:platform"), ["linux/amd64"]);
    let digest = deb_img["hashes"][0]["content"].as_str().unwrap();
    assert_eq!(
        deb_img["purl"].as_str().unwrap(),
        format!("pkg:oci/deb@sha256%3A{digest}?repository_url=registry.local/team/deb&tag=1.0")
    );
    // The digest is the one the bundle's manifest lists (airlock inspect --output json).
    let summary: Value = serde_json::from_slice(&run(Command::new(cargo_bin("airlock"))
        .args(["inspect", "--output", "json"])
        .arg(&out)))
    .unwrap();
    let listed =
        summary["images"].as_array().unwrap().iter().find(|i| i["reference"] == "registry.local/team/deb:1.0").unwrap();
    assert_eq!(listed["digest"].as_str().unwrap(), format!("sha256:{digest}"));

    // Debian packages, installed ones only, with the distro from os-release.
    let debs = components(&doc, "pkg:deb/");
    let mut got: Vec<(&str, &str, &str)> = debs
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["version"].as_str().unwrap(), c["purl"].as_str().unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("base-files", "12.4+deb12u5", "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12"),
            ("libc6", "2.36-9+deb12u4", "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"),
        ],
        "the whited-out image and the removed package contribute nothing"
    );
    assert!(debs.iter().all(|c| property(c, "airlock:image") == ["registry.local/team/deb:1.0"]));

    // Alpine packages with versions and licenses.
    let apks = components(&doc, "pkg:apk/");
    let mut got: Vec<(&str, &str, &str)> = apks
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["version"].as_str().unwrap(), c["purl"].as_str().unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("busybox", "1.36.1-r29", "pkg:apk/alpine/busybox@1.36.1-r29?arch=x86_64"),
            ("musl", "1.2.5-r0", "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64"),
        ]
    );
    let musl = apks.iter().find(|c| c["name"] == "musl").unwrap();
    assert_eq!(musl["licenses"][0]["expression"], "MIT");

    // The chart (name, version, digest) and the file (SHA-256 of its bytes).
    let all = doc["components"].as_array().unwrap();
    let chart = all.iter().find(|c| property(c, "airlock:kind") == ["chart"]).expect("chart listed");
    assert_eq!((chart["name"].as_str(), chart["version"].as_str()), (Some("notes"), Some("0.1.0")));
    let chart_digest = summary["charts"][0]["digest"].as_str().unwrap();
    assert_eq!(format!("sha256:{}", chart["hashes"][0]["content"].as_str().unwrap()), chart_digest);
    let file = all.iter().find(|c| property(c, "airlock:kind") == ["file"]).expect("file listed");
    assert_eq!(file["name"], "notes.txt");
    assert_eq!(
        file["hashes"][0]["content"].as_str().unwrap(),
        airlock_format::Sha256Digest::of(b"operator notes\n").hex()
    );

    // Every bom-ref is unique, and each image's packages hang off it.
    let refs: Vec<&str> = all.iter().map(|c| c["bom-ref"].as_str().unwrap()).collect();
    let unique: std::collections::BTreeSet<_> = refs.iter().collect();
    assert_eq!(unique.len(), refs.len(), "bom-refs must be unique");
    let deps = doc["dependencies"].as_array().unwrap();
    let deb_deps = deps.iter().find(|d| d["ref"] == "image:registry.local/team/deb:1.0").unwrap();
    assert_eq!(deb_deps["dependsOn"].as_array().unwrap().len(), 2);

    // The SBOM is part of the same bytes on a rebuild.
    let again = dir.join("again.airlock");
    build_bundle(dir, &again);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap(), "the bundle with its SBOM repeats byte for byte");
}

#[test]
fn inspect_sbom_refuses_a_bundle_whose_manifest_is_signed_by_an_untrusted_key() {
    // With --pubkey the manifest's signature is checked before the SBOM is shown.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = airlock_tests::build_demo_bundle(tmp.path(), &[]);
    let ok = run(Command::new(cargo_bin("airlock"))
        .args(["inspect", "--sbom", "--pubkey"])
        .arg(workspace_root().join("examples/demo/keys/demo.pub"))
        .arg(&bundle));
    let doc: Value = serde_json::from_slice(&ok).unwrap();
    assert!(!components(&doc, "pkg:oci/").is_empty(), "the demo's images are listed");
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let other_pub = other.join("other.pub");
    run(Command::new(cargo_bin("airlock-bundler"))
        .args(["keygen", "--unencrypted", "--public"])
        .arg(&other_pub)
        .arg("--secret")
        .arg(other.join("other.key")));
    let o = Command::new(cargo_bin("airlock"))
        .args(["inspect", "--sbom", "--pubkey"])
        .arg(&other_pub)
        .arg(&bundle)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "untrusted signature: {}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "nothing printed from an unverified bundle");
}
