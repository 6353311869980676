//! `airlock-bundler create` pulling `docker://` images from a real `docker-registry`
//! (started per test on a free 127.0.0.1 port), with images built by umoci and pushed
//! by skopeo. What is pinned:
//! - the digests in the bundle are the ones `skopeo inspect --raw` reports, for a
//!   single manifest, a two-platform index kept whole, and one platform picked out;
//! - `bundle.lock` pins tags: a moved tag changes nothing (same bundle bytes) until
//!   `--update-lock`; `--locked` with a warm cache builds with the registry down;
//! - basic auth over TLS with the CA from the spec; wrong or missing credentials and
//!   an untrusted certificate are clear errors that never show the password;
//! - unknown repository, unknown tag, a blob whose bytes do not match its digest and a
//!   manifest naming a missing blob each fail naming the reference, and leave no
//!   bundle at the output path;
//! - a registry killed in the middle of a download is resumed with a Range request
//!   once it is back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use airlock_tests::http::StaticServer;
use airlock_tests::registry::{add_index, build_image, Registry, RegistryOptions};
use airlock_tests::{cargo_bin, demo_dir, require_tool};

const EPOCH: &str = "1795305600";

fn tools() -> bool {
    require_tool("umoci").is_some() && require_tool("skopeo").is_some()
}

struct Build {
    out: PathBuf,
    output: Output,
}

impl Build {
    fn ok(&self) -> &Self {
        assert!(
            self.output.status.success(),
            "airlock-bundler create failed: {}",
            String::from_utf8_lossy(&self.output.stderr)
        );
        self
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Fails, names `needle` in the error, and leaves nothing at the output path.
    fn fails_with(&self, needle: &str) -> String {
        let err = self.stderr();
        assert!(!self.output.status.success(), "expected a failure mentioning {needle}");
        assert!(err.contains(needle), "error does not mention `{needle}`:\n{err}");
        assert!(err.contains("hint:"), "error has no hint:\n{err}");
        assert!(!self.out.exists(), "a bundle was left at {}", self.out.display());
        let dir = self.out.parent().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("out.airlock"))
            .collect();
        assert!(leftovers.is_empty(), "half-written bundle files left: {leftovers:?}");
        err
    }
    fn manifest(&self) -> airlock_format::manifest::Manifest {
        read_manifest(&BundleFiles::locate(&self.out).unwrap(), None).unwrap().0
    }
}

fn create(spec: &Path, cache: &Path, extra: &[&str], env: &[(&str, &str)]) -> Build {
    let out = spec.parent().unwrap().join("out").join("out.airlock");
    // Each build starts from an empty output directory, so a failure check sees only
    // what this build left.
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut cmd = Command::new(cargo_bin("airlock-bundler"));
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
        .env("HOME", spec.parent().unwrap()) // no stray ~/.docker/config.json
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .arg("create")
        .arg(spec)
        .arg("-o")
        .arg(&out)
        .arg("--key")
        .arg(demo_dir().join("keys/demo.key"))
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Build { out, output: cmd.output().expect("airlock-bundler runs") }
}

fn write_spec(dir: &Path, registries: &str, images: &[(&str, &str, Option<&str>)]) -> PathBuf {
    let mut y = format!("name: pulled\nversion: '1.0'\n{registries}components:\n  - name: app\n    images:\n");
    for (r, from, platforms) in images {
        y.push_str(&format!("      - ref: {r}\n        from: {from}\n"));
        if let Some(p) = platforms {
            y.push_str(&format!("        platforms: {p}\n"));
        }
    }
    let p = dir.join("bundle.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

fn image<'a>(m: &'a airlock_format::manifest::Manifest, reference: &str) -> &'a airlock_format::manifest::Image {
    m.images.iter().find(|i| i.reference == reference).unwrap_or_else(|| panic!("{reference} not in bundle"))
}

#[test]
fn anonymous_pull_matches_skopeo_digests_and_the_lock_pins_tags() {
    if !tools() {
        return;
    }
    let Some(mut reg) = Registry::start(RegistryOptions::default()) else { return };
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    build_image(t.path(), &layout, "amd", "amd64", &[("data.bin", 300_000)]).unwrap();
    build_image(t.path(), &layout, "arm", "arm64", &[("data.bin", 200_000)]).unwrap();
    add_index(&layout, &[("amd", "amd64"), ("arm", "arm64")], "multi").unwrap();
    let l = layout.display();
    reg.push(&format!("oci:{l}:amd"), "lab/one:1", false).unwrap();
    reg.push(&format!("oci:{l}:multi"), "lab/multi:1", true).unwrap();
    // The same images as Docker v2 schema 2: a manifest and a manifest list.
    let h = reg.host();
    for (src, dest) in [(format!("oci:{l}:amd"), "lab/docker:1"), (format!("oci:{l}:multi"), "lab/dockerlist:1")] {
        airlock_tests::registry::run(
            "skopeo",
            &[
                "copy",
                "-q",
                "--all",
                "--format",
                "v2s2",
                "--dest-tls-verify=false",
                &src,
                &format!("docker://{h}/{dest}"),
            ],
        )
        .unwrap();
    }
    let spec = write_spec(
        t.path(),
        &format!("registries:\n  - host: '{h}'\n    insecure: true\n"),
        &[
            ("example.com/one:1", &format!("docker://{h}/lab/one:1"), None),
            ("example.com/multi:1", &format!("docker://{h}/lab/multi:1"), None),
            ("example.com/multi-amd64:1", &format!("docker://{h}/lab/multi:1"), Some("[linux/amd64]")),
            ("example.com/docker:1", &format!("docker://{h}/lab/docker:1"), None),
            ("example.com/dockerlist:1", &format!("docker://{h}/lab/dockerlist:1"), None),
        ],
    );
    let cache = t.path().join("cache");
    let first = create(&spec, &cache, &[], &[]);
    first.ok();
    // Only the warning that this spec's bundle carries no installer: no progress
    // output when stderr is not a terminal.
    let other: Vec<String> =
        first.stderr().lines().filter(|l| !l.starts_with("warning: NOT SELF-CONTAINED")).map(str::to_string).collect();
    assert_eq!(other, Vec::<String>::new(), "no progress output when stderr is not a terminal");
    let m = first.manifest();
    let one = image(&m, "example.com/one:1");
    assert_eq!(one.digest.to_string(), reg.skopeo_digest("lab/one:1").unwrap());
    let multi = image(&m, "example.com/multi:1");
    assert_eq!(multi.digest.to_string(), reg.skopeo_digest("lab/multi:1").unwrap());
    assert_eq!(multi.media_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(multi.platforms, vec!["linux/amd64", "linux/arm64"]);
    // One platform picked out of the index: the root is that platform's manifest.
    let amd = image(&m, "example.com/multi-amd64:1");
    assert_eq!(amd.platforms, vec!["linux/amd64"]);
    assert_eq!(amd.digest, one.digest, "the amd64 manifest of the index is the image pushed as lab/one:1");
    let docker = image(&m, "example.com/docker:1");
    assert_eq!(docker.media_type, "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(docker.digest.to_string(), reg.skopeo_digest("lab/docker:1").unwrap());
    let list = image(&m, "example.com/dockerlist:1");
    assert_eq!(list.media_type, "application/vnd.docker.distribution.manifest.list.v2+json");
    assert_eq!(list.digest.to_string(), reg.skopeo_digest("lab/dockerlist:1").unwrap());
    assert_eq!(list.platforms, vec!["linux/amd64", "linux/arm64"]);

    // The lock pins the roots and travels in the bundle.
    let lock_path = t.path().join("bundle.lock");
    let lock = std::fs::read(&lock_path).expect("bundle.lock written next to the spec");
    let text = String::from_utf8_lossy(&lock);
    assert!(text.contains(&one.digest.to_string()) && text.contains(&multi.digest.to_string()), "{text}");
    let entry = m.entries.iter().find(|e| e.path == "bundle.lock").expect("bundle.lock in the bundle");
    assert_eq!(entry.sha256, airlock_format::Sha256Digest::of(&lock));
    let first_bytes = std::fs::read(&first.out).unwrap();
    // The installer's verifier accepts the pulled bundle, lock entry included.
    let v = Command::new(cargo_bin("airlock"))
        .arg("verify")
        .arg(&first.out)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(v.status.success(), "airlock verify: {}", String::from_utf8_lossy(&v.stderr));

    // Move the tag: the locked build still takes the pinned image, byte for byte.
    reg.push(&format!("oci:{l}:arm"), "lab/one:1", false).unwrap();
    let moved = reg.skopeo_digest("lab/one:1").unwrap();
    assert_ne!(moved, one.digest.to_string());
    let again = create(&spec, &cache, &[], &[]);
    again.ok();
    assert!(std::fs::read(&again.out).unwrap() == first_bytes, "same lock, same bundle bytes");

    // --update-lock follows the tag and rewrites the lock.
    let updated = create(&spec, &cache, &["--update-lock"], &[]);
    updated.ok();
    assert_eq!(image(&updated.manifest(), "example.com/one:1").digest.to_string(), moved);
    assert!(String::from_utf8_lossy(&std::fs::read(&lock_path).unwrap()).contains(&moved));

    // Locked and cached: builds with the registry gone.
    reg.stop();
    let offline = create(&spec, &cache, &["--locked"], &[]);
    offline.ok();
    assert_eq!(image(&offline.manifest(), "example.com/one:1").digest.to_string(), moved);
}

#[test]
fn basic_auth_over_tls_with_the_spec_ca_and_clear_login_errors() {
    if !tools() || require_tool("openssl").is_none() {
        return;
    }
    let (user, pass) = ("vendor", "Pa55-w0rd-xyz");
    let Some(reg) = Registry::start(RegistryOptions {
        login: Some((user.into(), pass.into())),
        tls: true,
        token: false,
        access_log: false,
    }) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    build_image(t.path(), &layout, "app", "amd64", &[]).unwrap();
    reg.push(&format!("oci:{}:app", layout.display()), "secure/app:2", false).unwrap();
    let h = reg.host();
    std::fs::copy(reg.ca_file().unwrap(), t.path().join("ca.pem")).unwrap();
    let from = format!("docker://{h}/secure/app:2");
    let images = [("example.com/app:2", from.as_str(), None)];
    let spec = write_spec(t.path(), &format!("registries:\n  - host: '{h}'\n    ca: ca.pem\n"), &images);
    let cache = t.path().join("cache");
    let docker_config = |dir: &Path, p: &str| {
        use base64::Engine;
        std::fs::create_dir_all(dir).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{p}"));
        std::fs::write(dir.join("config.json"), format!(r#"{{"auths":{{"{h}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    };

    // No credentials at all.
    let err = create(&spec, &cache, &[], &[]).fails_with(&from);
    assert!(err.contains("requires a login"), "{err}");

    // Wrong password from an auth file.
    let bad = t.path().join("bad");
    docker_config(&bad, "wrong-password");
    let bad_file = bad.join("config.json");
    let err = create(&spec, &cache, &["--auth-file", bad_file.to_str().unwrap()], &[]).fails_with(&from);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wrong-password") && !err.contains(pass), "a password in the error:\n{err}");

    // Right password from $DOCKER_CONFIG/config.json: pulled over verified TLS.
    let good = t.path().join("good");
    docker_config(&good, pass);
    let b = create(&spec, &cache, &[], &[("DOCKER_CONFIG", good.to_str().unwrap())]);
    b.ok();
    assert!(!b.stderr().contains(pass));
    assert_eq!(
        image(&b.manifest(), "example.com/app:2").digest.to_string(),
        reg.skopeo_digest("secure/app:2").unwrap()
    );

    // Credentials from --creds and the environment work too.
    std::fs::remove_file(t.path().join("bundle.lock")).unwrap();
    let b = create(
        &spec,
        &t.path().join("cache2"),
        &["--creds", &h],
        &[("AIRLOCK_REGISTRY_USERNAME", user), ("AIRLOCK_REGISTRY_PASSWORD", pass)],
    );
    b.ok();

    // Without the CA the certificate is not trusted, and the hint says how to fix it.
    let spec = write_spec(t.path(), "", &images);
    let err =
        create(&spec, &t.path().join("cache3"), &[], &[("DOCKER_CONFIG", good.to_str().unwrap())]).fails_with(&from);
    assert!(err.to_lowercase().contains("certificate") && err.contains("ca: FILE"), "{err}");
}

#[test]
fn bad_references_and_broken_registry_content_fail_naming_the_reference() {
    if !tools() {
        return;
    }
    let Some(reg) = Registry::start(RegistryOptions::default()) else { return };
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    build_image(t.path(), &layout, "a", "amd64", &[("a.bin", 100_000)]).unwrap();
    build_image(t.path(), &layout, "b", "amd64", &[("b.bin", 100_000)]).unwrap();
    let l = layout.display();
    reg.push(&format!("oci:{l}:a"), "lab/corrupt:1", false).unwrap();
    reg.push(&format!("oci:{l}:b"), "lab/missing:1", false).unwrap();
    let h = reg.host();
    let registries = format!("registries:\n  - host: '{h}'\n    insecure: true\n");
    let layer_of = |tag: &str| -> String {
        let raw = airlock_tests::registry::run(
            "skopeo",
            &["inspect", "--raw", "--tls-verify=false", &format!("docker://{h}/lab/{tag}")],
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    let try_one = |from: &str| {
        let d = tempfile::tempdir_in(t.path()).unwrap();
        let spec = write_spec(d.path(), &registries, &[("example.com/x:1", from, None)]);
        let b = create(&spec, &d.path().join("cache"), &[], &[]);
        let err = b.fails_with(from);
        assert!(!d.path().join("bundle.lock").exists(), "a failed build wrote the lock");
        // Shown with --nocapture: the messages an operator gets.
        eprintln!("{err}");
        err
    };

    let err = try_one(&format!("docker://{h}/lab/nothing-here:1"));
    assert!(err.contains("repository") && err.contains("does not exist"), "{err}");
    let err = try_one(&format!("docker://{h}/lab/corrupt:no-such-tag"));
    assert!(err.contains("has no tag `no-such-tag`") && err.contains("it has: 1"), "{err}");

    // Same size, other bytes: only the digest can tell.
    let corrupt = reg.blob_data(&layer_of("corrupt:1"));
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let err = try_one(&format!("docker://{h}/lab/corrupt:1"));
    assert!(err.contains("whose bytes have digest"), "{err}");

    std::fs::remove_file(reg.blob_data(&layer_of("missing:1"))).unwrap();
    let err = try_one(&format!("docker://{h}/lab/missing:1"));
    assert!(err.contains(&format!("names blob {}", layer_of("missing:1"))), "{err}");
}

#[test]
fn registry_killed_mid_download_is_resumed_with_range_when_it_returns() {
    if !tools() {
        return;
    }
    let Some(mut reg) = Registry::start(RegistryOptions::default()) else { return };
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    // Random bytes do not compress: the gzip layer stays about 12 MiB.
    build_image(t.path(), &layout, "big", "amd64", &[("big.bin", 12 << 20)]).unwrap();
    reg.push(&format!("oci:{}:big", layout.display()), "lab/big:1", false).unwrap();
    let h = reg.host();
    let spec = write_spec(
        t.path(),
        &format!("registries:\n  - host: '{h}'\n    insecure: true\n"),
        &[("example.com/big:1", &format!("docker://{h}/lab/big:1"), None)],
    );
    let cache = t.path().join("cache");
    let out = t.path().join("out/out.airlock");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // 3 MiB/s: about 4 s for the layer, time enough to pull the plug in between.
    let child = Command::new(cargo_bin("airlock-bundler"))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("HOME", t.path())
        .args(["create", spec.to_str().unwrap(), "-o", out.to_str().unwrap(), "--key"])
        .arg(demo_dir().join("keys/demo.key"))
        .args(["--cache-dir", cache.to_str().unwrap(), "--limit-rate", "3M", "--jobs", "1", "--retries", "8"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial_len = || -> u64 {
        std::fs::read_dir(cache.join("partial"))
            .map(|d| d.filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).max().unwrap_or(0))
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while partial_len() < 2 << 20 {
        assert!(Instant::now() < deadline, "the download never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    reg.stop();
    std::thread::sleep(Duration::from_millis(1500));
    reg.restart().unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the build did not survive the restart:\n{err}");
    let line = err.lines().find(|l| l.contains("resuming at byte")).unwrap_or_else(|| panic!("no resume:\n{err}"));
    let at: u64 = line.split("resuming at byte ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(at >= 2 << 20, "resumed from {at}, not from where it stopped: {line}");
    let m = read_manifest(&BundleFiles::locate(&out).unwrap(), None).unwrap().0;
    assert_eq!(image(&m, "example.com/big:1").digest.to_string(), reg.skopeo_digest("lab/big:1").unwrap());
}

#[test]
fn bearer_token_flow_with_a_real_token_auth_registry() {
    if !tools() || require_tool("openssl").is_none() {
        return;
    }
    let (user, pass) = ("ci-bot", "t0ken-pass-123");
    let opts = RegistryOptions { login: Some((user.into(), pass.into())), tls: false, token: true, access_log: false };
    let Some(reg) = Registry::start(opts) else { return };
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    build_image(t.path(), &layout, "app", "amd64", &[]).unwrap();
    // skopeo goes through the same challenge and token service to push.
    reg.push(&format!("oci:{}:app", layout.display()), "tok/app:3", false).unwrap();
    let h = reg.host();
    let from = format!("docker://{h}/tok/app:3");
    let spec = write_spec(
        t.path(),
        &format!("registries:\n  - host: '{h}'\n    insecure: true\n"),
        &[("example.com/app:3", from.as_str(), None)],
    );
    let creds = |p: &'static str| [("AIRLOCK_REGISTRY_USERNAME", user), ("AIRLOCK_REGISTRY_PASSWORD", p)];
    let err = create(&spec, &t.path().join("c1"), &["--creds", &h], &creds("not-it")).fails_with(&from);
    assert!(err.contains("token service") && err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("not-it"), "{err}");
    let b = create(&spec, &t.path().join("c2"), &["--creds", &h], &creds(pass));
    b.ok();
    assert_eq!(image(&b.manifest(), "example.com/app:3").digest.to_string(), reg.skopeo_digest("tok/app:3").unwrap());
}

#[test]
fn progress_on_a_terminal_shows_a_bar_per_transfer_and_a_total_then_clears() {
    let Some(tmux) = require_tool("tmux") else { return };
    if !tools() {
        return;
    }
    let Some(reg) = Registry::start(RegistryOptions::default()) else { return };
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let mut images = Vec::new();
    for i in 1..=3 {
        let tag = format!("p{i}");
        build_image(t.path(), &layout, &tag, "amd64", &[("big.bin", 6 << 20)]).unwrap();
        reg.push(&format!("oci:{}:{tag}", layout.display()), &format!("lab/{tag}:1"), false).unwrap();
        images.push((format!("example.com/{tag}:1"), format!("docker://{}/lab/{tag}:1", reg.host())));
    }
    let list: Vec<(&str, &str, Option<&str>)> = images.iter().map(|(r, f)| (r.as_str(), f.as_str(), None)).collect();
    let spec = write_spec(t.path(), &format!("registries:\n  - host: '{}'\n    insecure: true\n", reg.host()), &list);
    let socket = format!("airlock-progress-{}", std::process::id());
    let tm = |args: &[&str]| -> String {
        let o = Command::new(&tmux).arg("-L").arg(&socket).args(args).stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let cmd = format!(
        "{} pull {} --cache-dir {} --limit-rate 2M --jobs 2; echo EXIT=$?; sleep 60",
        cargo_bin("airlock-bundler").display(),
        spec.display(),
        t.path().join("cache").display()
    );
    tm(&["new-session", "-d", "-s", "pg", "-x", "180", "-y", "30", &cmd]);
    let screen = || tm(&["capture-pane", "-p", "-t", "pg"]);
    let start = Instant::now();
    let mut seen_bars = false;
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        last = screen();
        let transfers = last.lines().filter(|l| l.contains("/lab/p") && l.contains("MiB/")).count();
        if last.contains("downloading 3 blobs") && transfers == 2 {
            seen_bars = true;
        }
        if last.contains("EXIT=") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tm(&["kill-server"]);
    assert!(seen_bars, "never saw the total and two transfer bars at once; last screen:\n{last}");
    assert!(last.contains("EXIT=0"), "{last}");
    assert!(!last.contains("MiB/"), "bars left on the screen after the pull:\n{last}");
    assert!(last.contains("3 registry images cached"), "{last}");
}

#[test]
fn charts_from_an_http_repository_and_from_oci_are_pinned_in_the_lock() {
    let Some(helm) = airlock_tests::helm() else { return };
    if require_tool("python3").is_none() {
        return;
    }
    let Some(reg) = Registry::start(RegistryOptions::default()) else { return };
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("helm-home");
    let helm_ok = |args: &[&str]| {
        let o = airlock_tests::helm_command(&helm, &home).args(args).output().unwrap();
        assert!(o.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let repo = t.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    for (name, version) in [("web", "1.2.3"), ("api", "0.1.0")] {
        let dir = t.path().join("src").join(name);
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(dir.join("Chart.yaml"), format!("apiVersion: v2\nname: {name}\nversion: {version}\n")).unwrap();
        std::fs::write(
            dir.join("templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Chart.Name }}\n",
        )
        .unwrap();
        helm_ok(&["package", dir.to_str().unwrap(), "-d", repo.to_str().unwrap()]);
    }
    let web_tgz = repo.join("web-1.2.3.tgz");
    let api_tgz = repo.join("api-0.1.0.tgz");
    let server = StaticServer::start(&repo);
    let url = format!("http://127.0.0.1:{}", server.port);
    helm_ok(&["repo", "index", repo.to_str().unwrap(), "--url", &url]);
    // The real `helm push` into the registry.
    let h = reg.host();
    helm_ok(&["push", api_tgz.to_str().unwrap(), &format!("oci://{h}/charts"), "--plain-http"]);

    let spec_dir = t.path().join("spec");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let spec = spec_dir.join("bundle.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: charts\nversion: '1'\nregistries:\n  - host: '{h}'\n    insecure: true\ncomponents:\n  - name: app\n    charts:\n      - repo: {url}\n        name: web\n        version: 1.2.3\n      - repo: oci://{h}/charts\n        name: api\n        version: 0.1.0\n"
        ),
    )
    .unwrap();
    let cache = t.path().join("cache");
    let b = create(&spec, &cache, &[], &[]);
    b.ok();
    let m = b.manifest();
    let names: Vec<(String, String)> = m.charts.iter().map(|c| (c.name.clone(), c.version.clone())).collect();
    assert!(names.contains(&("web".into(), "1.2.3".into())) && names.contains(&("api".into(), "0.1.0".into())));
    let lock = std::fs::read_to_string(spec_dir.join("bundle.lock")).unwrap();
    for tgz in [&web_tgz, &api_tgz] {
        let d = airlock_format::Sha256Digest::of(&std::fs::read(tgz).unwrap());
        assert!(lock.contains(&d.to_string()), "{} not pinned:\n{lock}", tgz.display());
    }
    // Locked and cached: no repository needed.
    drop(server);
    create(&spec, &cache, &["--locked"], &[]).ok();

    // A broken index is named, with the chart.
    let bad = t.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("index.yaml"), "entries: [this is: not an index\n").unwrap();
    let bad_server = StaticServer::start(&bad);
    let bad_dir = t.path().join("badspec");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad_spec = bad_dir.join("bundle.yaml");
    std::fs::write(
        &bad_spec,
        format!("name: c\nversion: '1'\ncomponents:\n  - name: app\n    charts:\n      - repo: http://127.0.0.1:{}\n        name: web\n        version: 1.2.3\n", bad_server.port),
    )
    .unwrap();
    let err = create(&bad_spec, &bad_dir.join("cache"), &[], &[]).fails_with("chart web 1.2.3");
    assert!(err.contains("not a Helm repository index"), "{err}");

    // An index whose digest does not match the chart it points at.
    std::fs::copy(&web_tgz, bad.join("web-1.2.3.tgz")).unwrap();
    std::fs::write(
        bad.join("index.yaml"),
        format!(
            "apiVersion: v1\nentries:\n  web:\n    - name: web\n      version: 1.2.3\n      digest: {}\n      urls: [web-1.2.3.tgz]\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let err = create(&bad_spec, &bad_dir.join("cache"), &[], &[]).fails_with("chart web 1.2.3");
    assert!(err.contains("says sha256:0000"), "{err}");
}
