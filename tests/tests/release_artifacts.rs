//! K3s release artifacts from a URL (`distribution.base_url`, `artifacts[].url`) and
//! from a release directory (`distribution.dir`), checked against the release's own
//! `sha256sum-<arch>.txt`, served by a real `python3 -m http.server` on 127.0.0.1.
//!
//! The served files are small STAND-INS named like K3s's (a shell script that prints
//! "STAND-IN" as `k3s`, a few bytes as the airgap archive), not K3s itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use airlock_format::Sha256Digest;
use airlock_tests::create_with_cache;
use airlock_tests::http::StaticServer;
use airlock_tests::require_tool;

const K3S: &[u8] = b"#!/bin/sh\necho 'STAND-IN for the k3s binary, not K3s'\nexit 1\n";
const AIRGAP: &[u8] = b"STAND-IN for k3s-airgap-images-amd64.tar.zst\n";

fn sums_line(bytes: &[u8], name: &str) -> String {
    format!("{}  {name}\n", Sha256Digest::of(bytes).hex())
}

/// A release directory `dir/<release>/` with the stand-ins and a checksum list; `bad`
/// lists a wrong digest for the airgap archive.
fn publish(root: &Path, release: &str, bad: bool) -> PathBuf {
    let d = root.join(release);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("k3s"), K3S).unwrap();
    fs::write(d.join("k3s-airgap-images-amd64.tar.zst"), AIRGAP).unwrap();
    let airgap_sum = if bad {
        sums_line(b"something else", "k3s-airgap-images-amd64.tar.zst")
    } else {
        sums_line(AIRGAP, "k3s-airgap-images-amd64.tar.zst")
    };
    fs::write(d.join("sha256sum-amd64.txt"), format!("{}{airgap_sum}", sums_line(K3S, "k3s"))).unwrap();
    d
}

fn spec(dir: &Path, distribution_extra: &str, artifacts: &str) -> PathBuf {
    let y = format!(
        "name: rel\nversion: '1.0'\ndistribution:\n  kind: k3s\n  version: v1.31.4+k3s1\n  arch: amd64\n{distribution_extra}  artifacts:\n{artifacts}"
    );
    let p = dir.join("bundle.yaml");
    fs::write(&p, y).unwrap();
    p
}

const BY_NAME: &str = "    - name: k3s\n    - name: k3s-airgap-images-amd64.tar.zst\n";

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "airlock-bundler create failed: {}", String::from_utf8_lossy(&o.stderr));
}

fn artifact_digests(out: &Path) -> Vec<(String, Sha256Digest, bool)> {
    let m = read_manifest(&BundleFiles::locate(out).unwrap(), None).unwrap().0;
    let d = m.distribution.as_ref().expect("distribution");
    d.artifacts
        .iter()
        .map(|a| {
            let e = m.entry(&a.path).unwrap();
            (a.name.clone(), e.sha256, e.executable)
        })
        .collect()
}

#[test]
fn artifacts_from_a_base_url_are_checked_cached_and_bundled() {
    if require_tool("python3").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    let rel = publish(&www, "v1.31.4+k3s1", false);
    let server = StaticServer::start(&www);
    let base = format!("http://127.0.0.1:{}/v1.31.4+k3s1", server.port);
    let cache = t.path().join("cache");
    let s = spec(t.path(), &format!("  base_url: {base}\n"), BY_NAME);
    let out = t.path().join("a.airlock");
    assert_ok(&create_with_cache(&s, &cache, &out));
    let got = artifact_digests(&out);
    assert_eq!(
        got,
        [
            ("k3s".to_string(), Sha256Digest::of(K3S), true),
            ("k3s-airgap-images-amd64.tar.zst".to_string(), Sha256Digest::of(AIRGAP), false),
        ],
        "each artifact is the served file, and k3s stays executable"
    );
    // Cached under the listed digest: a second build does not download the artifacts
    // again (the server now holds different bytes under the same names, but the
    // checksum list still names the first ones).
    fs::write(rel.join("k3s"), b"changed on the server").unwrap();
    fs::write(rel.join("k3s-airgap-images-amd64.tar.zst"), b"changed too").unwrap();
    let again = t.path().join("b.airlock");
    assert_ok(&create_with_cache(&s, &cache, &again));
    assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap(), "the cached artifacts give the same bundle");

    // An artifact URL of its own: the checksum list comes from the same directory.
    let s = spec(
        t.path(),
        "",
        &format!("    - name: k3s-airgap-images-amd64.tar.zst\n      url: {base}/k3s-airgap-images-amd64.tar.zst\n"),
    );
    let one = t.path().join("c.airlock");
    assert_ok(&create_with_cache(&s, &cache, &one));
    assert_eq!(artifact_digests(&one)[0].1, Sha256Digest::of(AIRGAP));
}

#[test]
fn a_download_that_does_not_match_the_release_checksums_names_the_artifact_and_writes_nothing() {
    if require_tool("python3").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    publish(&www, "bad", true);
    let server = StaticServer::start(&www);
    let base = format!("http://127.0.0.1:{}/bad", server.port);
    let cache = t.path().join("cache");
    let s = spec(t.path(), &format!("  base_url: {base}\n"), BY_NAME);
    let out = t.path().join("out").join("x.airlock");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = create_with_cache(&s, &cache, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "a digest mismatch is corrupt input (exit 4): {err}");
    assert!(err.contains("k3s-airgap-images-amd64.tar.zst"), "names the artifact: {err}");
    assert!(err.contains(&format!("{base}/k3s-airgap-images-amd64.tar.zst")), "names the URL: {err}");
    assert!(err.contains("sha256sum-amd64.txt"), "names the checksum list: {err}");
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(fs::read_dir(out.parent().unwrap()).unwrap().count(), 0, "no bundle, no partial file");
    // The mismatching download never entered the cache.
    let cached: Vec<_> = fs::read_dir(cache.join("blobs/sha256")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!cached.iter().any(|n| n.to_string_lossy() == Sha256Digest::of(AIRGAP).hex()), "{cached:?}");

    // An artifact the list does not name is refused before anything is downloaded.
    let s = spec(t.path(), &format!("  base_url: {base}\n"), "    - name: k3s-install.sh\n");
    let o = create_with_cache(&s, &cache, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("`k3s-install.sh` is not listed in"), "{err}");

    // A server that does not have the file: HTTP 404 names the URL.
    let s = spec(t.path(), &format!("  base_url: http://127.0.0.1:{}/missing\n", server.port), BY_NAME);
    let o = create_with_cache(&s, &cache, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("/missing/sha256sum-amd64.txt") && err.contains("404"), "{err}");
}

#[test]
fn artifacts_from_a_release_directory_are_checked_against_its_checksum_list() {
    let t = tempfile::tempdir().unwrap();
    publish(t.path(), "good", false);
    publish(t.path(), "bad", true);
    let cache = t.path().join("cache");
    let s = spec(t.path(), "  dir: good\n", BY_NAME);
    let out = t.path().join("d.airlock");
    assert_ok(&create_with_cache(&s, &cache, &out));
    assert_eq!(artifact_digests(&out)[1].1, Sha256Digest::of(AIRGAP));
    let s = spec(t.path(), "  dir: bad\n", BY_NAME);
    let o = create_with_cache(&s, &cache, &t.path().join("e.airlock"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("bad/k3s-airgap-images-amd64.tar.zst") && err.contains("does not match"), "{err}");
}
