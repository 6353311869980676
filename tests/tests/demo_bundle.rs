//! The embedded example, end to end through the real binaries and real tools:
//! create → stock minisign + sha256sum → verify → extract → skopeo, containerd, helm.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_tests::{build_demo_bundle, cargo_bin, helm, helm_command, require_tool, workspace_root, Containerd};

fn demo() -> PathBuf {
    workspace_root().join("examples/demo")
}

fn pubkey() -> PathBuf {
    demo().join("keys/demo.pub")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("command runs");
    out
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds the demo bundle into `dir/demo.airlock` with extra flags.
fn create(dir: &Path, extra: &[&str]) -> PathBuf {
    build_demo_bundle(dir, extra)
}

fn airlock(args: &[&std::ffi::OsStr]) -> Output {
    run(Command::new(cargo_bin("airlock")).args(args))
}

fn extract(bundle: &Path, dir: &Path, extra: &[&str]) {
    ok(Command::new(cargo_bin("airlock"))
        .arg("extract")
        .arg(bundle)
        .arg("--pubkey")
        .arg(pubkey())
        .arg("-d")
        .arg(dir)
        .args(extra));
}

#[test]
fn stock_minisign_and_sha256sum_check_the_bundle_without_our_binary() {
    let Some(minisign) = require_tool("minisign") else { return };
    let d = tempfile::tempdir().unwrap();
    create(d.path(), &["--split-size", "4K"]);
    assert!(d.path().join("demo.airlock.part003").is_file(), "the demo should need several 4K parts");
    ok(Command::new(&minisign).current_dir(d.path()).args(["-Vm", "demo.airlock.sha256", "-p"]).arg(pubkey()));
    let sums = ok(Command::new("sha256sum").current_dir(d.path()).args(["-c", "demo.airlock.sha256"]));
    let listed = String::from_utf8_lossy(&sums.stdout);
    assert!(listed.contains("demo.airlock.part001: OK") && listed.contains("demo.airlock.part003: OK"), "{listed}");

    // The manifest inside verifies with stock tools too.
    let x = d.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(Command::new("bash")
        .current_dir(&x)
        .arg("-c")
        .arg("cat ../demo.airlock.part* | zstd -dc | tar -xf - airlock/manifest.json airlock/manifest.json.minisig"));
    let v = ok(Command::new(&minisign).current_dir(&x).args(["-Vm", "airlock/manifest.json", "-p"]).arg(pubkey()));
    assert!(String::from_utf8_lossy(&v.stdout).contains("airlock bundle: airlock-demo 1.0.0"));

    // One flipped byte in a part: sha256sum names it, minisign still vouches for the list.
    let p2 = d.path().join("demo.airlock.part002");
    let mut bytes = std::fs::read(&p2).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&p2, bytes).unwrap();
    let bad = run(Command::new("sha256sum").current_dir(d.path()).args(["-c", "demo.airlock.sha256"]));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("demo.airlock.part002: FAILED"));
    // And our verify names the same part.
    let out = airlock(&[
        "verify".as_ref(),
        d.path().join("demo.airlock").as_os_str(),
        "--pubkey".as_ref(),
        pubkey().as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let part2 =
        report["parts"].as_array().unwrap().iter().find(|p| p["path"].as_str().unwrap().ends_with("part002")).unwrap();
    assert_eq!(part2["status"], "mismatch", "{report:#}");
}

#[test]
fn our_signatures_come_from_a_stock_minisign_key_too() {
    let Some(minisign) = require_tool("minisign") else { return };
    let d = tempfile::tempdir().unwrap();
    // A passphrase-protected key made by stock minisign signs our bundle.
    let mut child = Command::new(&minisign)
        .current_dir(d.path())
        .args(["-G", "-p", "v.pub", "-s", "v.key"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"pw\npw\n").unwrap();
    assert!(child.wait().unwrap().success());
    let out = d.path().join("b.airlock");
    ok(Command::new(cargo_bin("airlock-bundler"))
        .env("AIRLOCK_KEY_PASSPHRASE", "pw")
        .arg("create")
        .arg(demo().join("bundle.yaml"))
        .arg("-o")
        .arg(&out)
        .arg("--key")
        .arg(d.path().join("v.key")));
    let v = airlock(&["verify".as_ref(), out.as_os_str(), "--pubkey".as_ref(), d.path().join("v.pub").as_os_str()]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // The demo key is not trusted for it.
    let v = airlock(&["verify".as_ref(), out.as_os_str(), "--pubkey".as_ref(), pubkey().as_os_str()]);
    assert_eq!(v.status.code(), Some(3));
}

#[test]
fn two_builds_with_the_same_inputs_are_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["--split-size", "500K"][..]] {
        create(a.path(), extra);
        create(b.path(), extra);
        let list = |d: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
            v.sort();
            v
        };
        assert_eq!(list(a.path()), list(b.path()));
        for name in list(a.path()) {
            let (x, y) = (std::fs::read(a.path().join(&name)).unwrap(), std::fs::read(b.path().join(&name)).unwrap());
            assert!(x == y, "{name:?} differs between two builds");
        }
    }
}

#[test]
fn extracted_images_keep_their_source_manifest_digests() {
    let Some(skopeo) = require_tool("skopeo") else { return };
    let d = tempfile::tempdir().unwrap();
    let bundle = create(d.path(), &[]);
    let staging = d.path().join("staging");
    extract(&bundle, &staging, &[]);
    let digest = |transport: String| {
        let out = ok(Command::new(&skopeo).args(["inspect", "--raw"]).arg(&transport));
        format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, &out.stdout)))
    };
    let layout = demo().join("images/layout");
    for r in [
        "docker.io/airlock-demo/api:1.0.0",
        "docker.io/airlock-demo/web:1.0.0",
        "docker.io/airlock-demo/worker:1.0.0",
        "docker.io/rancher/klipper-helm:v0.9.3-build20241008",
    ] {
        let src = digest(format!("oci:{}:{r}", layout.display()));
        let got = digest(format!("oci:{}:{r}", staging.join("oci").display()));
        assert_eq!(src, got, "{r}");
        // skopeo can read the whole image (config and layers) from the staged layout.
        ok(Command::new(&skopeo).arg("inspect").arg(format!("oci:{}:{r}", staging.join("oci").display())));
    }
    // The docker-archive image: same config and layers as skopeo sees in the source.
    let cfg = |t: String| {
        let out = ok(Command::new(&skopeo).args(["inspect", "--config", "--raw"]).arg(t));
        String::from_utf8(out.stdout).unwrap()
    };
    let tools = "docker.io/airlock-demo/tools:1.0.0";
    assert_eq!(
        cfg(format!("docker-archive:{}:{tools}", demo().join("images/tools.docker.tar").display())),
        cfg(format!("oci:{}:{tools}", staging.join("oci").display()))
    );
}

#[test]
fn containerd_imports_the_image_archive_under_full_references() {
    let Some(containerd) = Containerd::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let bundle = create(d.path(), &[]);
    let archive = d.path().join("images.tar");
    extract(&bundle, &d.path().join("staging"), &["--image-archive", archive.to_str().unwrap()]);
    let names = containerd.import(&archive).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log()));
    for r in [
        "docker.io/airlock-demo/api:1.0.0",
        "docker.io/airlock-demo/tools:1.0.0",
        "docker.io/airlock-demo/web:1.0.0",
        "docker.io/airlock-demo/worker:1.0.0",
        "docker.io/rancher/klipper-helm:v0.9.3-build20241008",
        "quay.io/keycloak/keycloak:26.5.6",
        "quay.io/minio/minio:RELEASE.2024-12-18T13-15-44Z",
        "quay.io/minio/mc:RELEASE.2024-11-21T17-21-54Z",
        "docker.io/library/postgres:16.6",
        "quay.io/prometheus/prometheus:v3.14.0",
        "docker.io/grafana/grafana:13.2.0",
    ] {
        assert!(names.iter().any(|n| n == r), "{r} not imported: {names:?}");
    }
    assert_eq!(names.len(), 15, "{names:?}");

    // The .tar.zst form keeps the zstd window within containerd's 32 MiB decoder limit
    // and imports the same images once decompressed.
    let zst = d.path().join("images.tar.zst");
    extract(&bundle, &d.path().join("staging2"), &["--image-archive", zst.to_str().unwrap()]);
    let info = ok(Command::new("zstd").arg("-lv").arg(&zst));
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    let window = info.lines().find(|l| l.contains("Window Size")).unwrap_or_else(|| panic!("{info}"));
    let mib: f64 = window.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(window.contains("MiB") && mib <= 32.0, "{window}");
    let plain = d.path().join("from-zst.tar");
    ok(Command::new("zstd").args(["-q", "-d"]).arg(&zst).arg("-o").arg(&plain));
    assert_eq!(containerd.import(&plain).unwrap().len(), 15);
}

#[test]
fn helm_3_18_lints_and_templates_every_chart_taken_out_of_the_bundle() {
    let Some(helm) = helm() else { return };
    let d = tempfile::tempdir().unwrap();
    let bundle = create(d.path(), &[]);
    let staging = d.path().join("staging");
    extract(&bundle, &staging, &[]);
    let home = d.path().join("helm-home");
    let charts: Vec<PathBuf> = std::fs::read_dir(staging.join("charts")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(charts.len(), 7, "{charts:?}");
    // The demo's own charts, and the monitoring charts (their dependencies vendored,
    // so with no repository); keycloakx, MinIO and the app chart need the values the
    // installer renders, and tests/tests/platform_install.rs templates them with
    // those (tests/tests/monitoring_real_tools.rs the monitoring charts).
    for c in charts.into_iter().filter(|c| {
        let n = c.file_name().unwrap().to_string_lossy().to_string();
        ["hello-", "notes-", "prometheus-", "grafana-"].iter().any(|p| n.starts_with(p))
    }) {
        ok(helm_command(&helm, &home).arg("lint").arg(&c));
        let out = ok(helm_command(&helm, &home).args(["template", "x"]).arg(&c));
        assert!(String::from_utf8_lossy(&out.stdout).contains("kind: ConfigMap"), "{c:?}");
    }
}

#[test]
fn verify_names_the_tampered_chart_in_json_and_exits_4() {
    let d = tempfile::tempdir().unwrap();
    let bundle = create(d.path(), &[]);
    // Re-pack the stream with one byte of the hello chart changed (a byte flip in the
    // compressed file would usually break decoding instead of reaching the chart).
    let raw = ok(Command::new("zstd").args(["-dc"]).arg(&bundle)).stdout;
    let mut raw = raw;
    let mut ar = tar::Archive::new(&raw[..]);
    let mut offset = None;
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some("charts/hello-0.1.0.tgz") {
            offset = Some(e.raw_file_position() as usize + 100);
        }
    }
    raw[offset.expect("chart entry")] ^= 1;
    let tampered = d.path().join("tampered.airlock");
    std::fs::write(&tampered, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    let out = airlock(&[
        "verify".as_ref(),
        tampered.as_os_str(),
        "--pubkey".as_ref(),
        pubkey().as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(4));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad: Vec<_> = r["artifacts"].as_array().unwrap().iter().filter(|a| a["status"] != "ok").collect();
    assert_eq!(bad.len(), 1, "{r:#}");
    assert_eq!(bad[0]["kind"], "chart");
    assert_eq!(bad[0]["name"], "hello 0.1.0");
    assert_eq!(r["errors"][0]["subject"], "charts/hello-0.1.0.tgz");
}

#[test]
fn inspect_lists_everything_without_the_key_and_says_unverified() {
    let d = tempfile::tempdir().unwrap();
    let bundle = create(d.path(), &[]);
    let out = airlock(&["inspect".as_ref(), bundle.as_os_str(), "--output".as_ref(), "json".as_ref()]);
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["signature"], "unverified");
    assert_eq!(r["name"], "airlock-demo");
    assert_eq!(r["images"].as_array().unwrap().len(), 15);
    let worker = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == "docker.io/airlock-demo/worker:1.0.0")
        .unwrap();
    assert_eq!(worker["platforms"], serde_json::json!(["linux/amd64", "linux/arm64"]));
    assert_eq!(r["charts"].as_array().unwrap().len(), 7);
    assert!(
        r["compressed_size"].as_u64().unwrap() > 0
            && r["total_size"].as_u64().unwrap() > r["compressed_size"].as_u64().unwrap()
    );
    assert_eq!(r["distribution"]["kind"], "k3s");
    let out = airlock(&[
        "inspect".as_ref(),
        bundle.as_os_str(),
        "--pubkey".as_ref(),
        pubkey().as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["signature"], "verified");
}

#[test]
fn spec_errors_name_the_file_and_the_key_and_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    let spec = std::fs::read_to_string(demo().join("bundle.yaml")).unwrap();
    let cases = [
        (spec.replace("path: files/README.txt", "path: files/NOPE.txt"), "components[1].files[0].path", "NOPE.txt"),
        (spec.replacen("    charts:\n", "    chartz:\n", 1), "components[0]", "chartz"),
        (
            spec.replace("ref: docker.io/airlock-demo/web:1.0.0", "ref: docker.io/Airlock/WEB:1.0.0"),
            "components[1].images[1]",
            "Airlock/WEB",
        ),
    ];
    for (i, (text, key, what)) in cases.iter().enumerate() {
        let f = demo().join(format!(".test-spec-{}-{i}.yaml", std::process::id()));
        std::fs::write(&f, text).unwrap();
        let out_path = d.path().join(format!("b{i}.airlock"));
        let out = run(Command::new(cargo_bin("airlock-bundler"))
            .arg("create")
            .arg(&f)
            .arg("-o")
            .arg(&out_path)
            .arg("--key")
            .arg(demo().join("keys/demo.key")));
        std::fs::remove_file(&f).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(".test-spec-") && err.contains(key) && err.contains(what), "case {i}: {err}");
        assert!(err.contains("hint:"), "case {i}: {err}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "case {i} left files behind");
    }
}

#[test]
fn create_without_the_installer_warns_loudly_that_the_bundle_is_not_self_contained() {
    let d = tempfile::tempdir().unwrap();
    let key = demo().join("keys/demo.key");
    let without =
        run(&mut airlock_tests::create_command(&demo().join("bundle.yaml"), &d.path().join("a.airlock"), &key));
    assert!(without.status.success(), "{}", String::from_utf8_lossy(&without.stderr));
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(
        err.contains("warning: NOT SELF-CONTAINED: this bundle does not carry the installer binary")
            && err.contains("pass --installer PATH"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&without.stdout).contains("NOT SELF-CONTAINED"), "warnings go to stderr");

    let installer = cargo_bin("airlock");
    let with = run(airlock_tests::create_command(&demo().join("bundle.yaml"), &d.path().join("b.airlock"), &key)
        .arg("--installer")
        .arg(&installer));
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    assert!(!String::from_utf8_lossy(&with.stderr).contains("NOT SELF-CONTAINED"));
    let doc = std::fs::read_to_string(workspace_root().join("docs/bundle-spec.md")).unwrap();
    assert!(doc.contains("NOT SELF-CONTAINED"), "docs/bundle-spec.md documents the warning");
}

#[test]
fn a_spec_file_that_links_out_of_the_spec_directory_is_refused_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("files")).unwrap();
    std::fs::write(d.path().join("private.txt"), "not for the bundle").unwrap();
    std::fs::write(src.join("files/inside.txt"), "for the bundle").unwrap();
    let spec =
        "name: linked\nversion: 1.0.0\ncomponents:\n  - name: docs\n    files:\n      - path: files/README.txt\n";
    std::fs::write(src.join("bundle.yaml"), spec).unwrap();
    let create = |out: &Path| {
        run(Command::new(cargo_bin("airlock-bundler"))
            .env("SOURCE_DATE_EPOCH", "1795305600")
            .args(["create", src.join("bundle.yaml").to_str().unwrap(), "-o", out.to_str().unwrap(), "--key"])
            .arg(demo().join("keys/demo.key")))
    };
    // A link that stays in the spec directory is followed.
    std::os::unix::fs::symlink("inside.txt", src.join("files/README.txt")).unwrap();
    let o = create(&d.path().join("ok.airlock"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // One that leads out is refused: exit 5, naming the link and where it points.
    std::fs::remove_file(src.join("files/README.txt")).unwrap();
    std::os::unix::fs::symlink("../../private.txt", src.join("files/README.txt")).unwrap();
    let out = d.path().join("linked.airlock");
    let o = create(&out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("files/README.txt") && err.contains("private.txt") && err.contains("outside"), "{err}");
    assert!(!out.exists(), "a refused create left {}", out.display());
}
