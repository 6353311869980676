//! The bundler's image sources against the real tools that write them: a tiny image
//! built with umoci, copied by skopeo into `oci-archive:` and `docker-archive:`, and a
//! hand-made two/three-platform index as in the lab (`../shared/lab/01-registry.sh`).
//!
//! What is pinned: `load_image` yields the same root digest skopeo reports for OCI
//! sources; for docker-archive it yields the config and layer digests skopeo reports;
//! and what it loads, written back out as a layout, is something skopeo copies (which
//! re-verifies every blob digest) and inspects to the same digests. Charts: what
//! `load_chart` packages, helm 3.18 lints and renders; what `helm package` writes,
//! `load_chart` reads; a dependency counts once `helm dependency build` vendored it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use airlock_bundler::sources::{load_image, ImageSpec, LoadedImage};
use airlock_format::write::Content;
use airlock_format::Sha256Digest;
use airlock_tests::require_tool;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn tools() -> bool {
    require_tool("umoci").is_some() && require_tool("skopeo").is_some()
}

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON")
}

fn umoci(args: &[&str]) {
    let root = String::from_utf8(run("id", &["-u"])).unwrap().trim() == "0";
    let mut all: Vec<&str> = if root { vec![] } else { vec!["--rootless"] };
    all.extend_from_slice(args);
    run("umoci", &all);
}

/// `build_busybox_image` from the lab's lib.sh: busybox-static and a few applet
/// symlinks in one layer, config for linux/amd64, then `umoci gc`.
fn build_busybox_image(work: &Path, layout: &Path, tag: &str) {
    let rootfs = work.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    if Path::new("/bin/busybox").exists() {
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    } else {
        fs::write(rootfs.join("bin/busybox"), b"stand-in for busybox-static").unwrap();
    }
    for a in ["sh", "ls", "cat", "echo", "sleep", "wget"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let l = layout.to_str().unwrap();
    let image = format!("{l}:{tag}");
    if !layout.exists() {
        umoci(&["init", "--layout", l]);
    }
    umoci(&["new", "--image", &image]);
    umoci(&["insert", "--image", &image, rootfs.to_str().unwrap(), "/"]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/bin/sh",
        "--config.env",
        "PATH=/bin",
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--author",
        "lab",
    ]);
    umoci(&["gc", "--layout", l]);
    fs::remove_dir_all(rootfs).unwrap();
}

fn spec(reference: &str, from: &str) -> ImageSpec {
    ImageSpec { reference: reference.into(), from: from.into(), platforms: None }
}

fn bytes_of(c: &Content) -> Vec<u8> {
    match c {
        Content::Bytes(b) => b.clone(),
        Content::File(p) => fs::read(p).unwrap(),
        Content::FileRange { path, offset, len } => {
            let mut f = fs::File::open(path).unwrap();
            f.seek(SeekFrom::Start(*offset)).unwrap();
            let mut v = Vec::new();
            f.take(*len).read_to_end(&mut v).unwrap();
            v
        }
    }
}

/// Every blob's bytes (file, range or generated) hash to its digest and have its size.
fn assert_blobs_are_what_they_claim(img: &LoadedImage) {
    for b in &img.blobs {
        let data = bytes_of(&b.content);
        assert_eq!(data.len() as u64, b.size, "{}", b.digest);
        assert_eq!(Sha256Digest::of(&data), b.digest);
    }
    assert!(img.blobs.iter().any(|b| b.digest == img.digest), "root blob included");
}

/// Writes a loaded image out as an OCI layout, named `name`, as the bundle would carry it.
fn materialize(img: &LoadedImage, dir: &Path, name: &str) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for b in &img.blobs {
        fs::write(dir.join("blobs/sha256").join(b.digest.hex()), bytes_of(&b.content)).unwrap();
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": img.media_type, "digest": img.digest.to_string(), "size": img.size,
        "annotations": {"org.opencontainers.image.ref.name": name, "io.containerd.image.name": img.reference},
    }]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Root digest as skopeo sees it: sha256 of `skopeo inspect --raw`.
fn skopeo_raw_digest(source: &str) -> Sha256Digest {
    Sha256Digest::of(&run("skopeo", &["inspect", "--raw", source]))
}

#[test]
fn oci_layout_and_oci_archive_root_digest_match_skopeo() {
    if !tools() {
        return;
    }
    let t = tempfile::TempDir::new().unwrap();
    let l = t.path().join("layout");
    build_busybox_image(t.path(), &l, "busybox");
    let ls = l.to_str().unwrap();
    let archive = t.path().join("busybox-oci.tar");
    let full_ref = "docker.io/lab/busybox:1.35";
    run(
        "skopeo",
        &["copy", "-q", &format!("oci:{ls}:busybox"), &format!("oci-archive:{}:{full_ref}", archive.display())],
    );

    let want = skopeo_raw_digest(&format!("oci:{ls}:busybox"));
    assert_eq!(want, skopeo_raw_digest(&format!("oci-archive:{}", archive.display())));

    // Relative paths resolve against the spec's directory.
    let from_dir = load_image(&spec("lab/busybox:1.35", "oci:layout:busybox"), t.path()).unwrap();
    assert_eq!(from_dir.digest, want);
    assert_eq!(from_dir.reference, full_ref);
    // umoci writes manifests without mediaType; the type is inferred.
    assert_eq!(from_dir.media_type, OCI_MANIFEST);
    assert_eq!(from_dir.platforms, vec!["linux/amd64"]);
    // Layers are read from the layout's files while the bundle is written; manifest and
    // config, read and checked while loading, are carried as those bytes.
    for b in &from_dir.blobs {
        match &b.content {
            Content::File(p) => assert!(p.starts_with(&l), "{p:?}"),
            Content::Bytes(bytes) => assert!(b.size < 64 << 10 && bytes.len() as u64 == b.size, "{b:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(from_dir.blobs.iter().any(|b| matches!(b.content, Content::File(_))));
    assert_blobs_are_what_they_claim(&from_dir);

    for from in [
        "oci-archive:busybox-oci.tar",
        &format!("oci-archive:busybox-oci.tar:{full_ref}"),
        "oci-archive:busybox-oci.tar:lab/busybox:1.35",
    ] {
        let got = load_image(&spec(full_ref, from), t.path()).unwrap_or_else(|e| panic!("{from}: {e}"));
        assert_eq!(got.digest, want, "{from}");
        // Layers are byte ranges of the archive; manifest and config the bytes read.
        assert!(got.blobs.iter().all(|b| match &b.content {
            Content::FileRange { path, .. } => *path == archive,
            Content::Bytes(bytes) => bytes.len() as u64 == b.size,
            Content::File(_) => false,
        }));
        assert!(got.blobs.iter().any(|b| matches!(b.content, Content::FileRange { .. })));
        assert_blobs_are_what_they_claim(&got);
        let digests =
            |i: &LoadedImage| i.blobs.iter().map(|b| (b.digest, b.size, b.media_type.clone())).collect::<Vec<_>>();
        assert_eq!(digests(&got), digests(&from_dir));
    }
}

#[test]
fn docker_archive_conversion_matches_skopeo_config_and_layers() {
    if !tools() {
        return;
    }
    let t = tempfile::TempDir::new().unwrap();
    let l = t.path().join("layout");
    build_busybox_image(t.path(), &l, "busybox");
    let archive = t.path().join("busybox-docker.tar");
    let full_ref = "127.0.0.1:5000/lab/busybox:1.35";
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:busybox", l.display()),
            &format!("docker-archive:{}:{full_ref}", archive.display()),
        ],
    );
    let src = format!("docker-archive:{}", archive.display());
    let inspect = json(&run("skopeo", &["inspect", &src]));
    let raw = json(&run("skopeo", &["inspect", "--raw", &src]));
    let want_layers: Vec<String> =
        inspect["Layers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let want_config = raw["config"]["digest"].as_str().unwrap().to_string();

    let got = load_image(&spec(full_ref, "docker-archive:busybox-docker.tar"), t.path()).unwrap();
    let by_tag =
        load_image(&spec(full_ref, &format!("docker-archive:busybox-docker.tar:{full_ref}")), t.path()).unwrap();
    assert_eq!(got, by_tag);
    assert_eq!(got.reference, full_ref);
    assert_eq!(got.media_type, OCI_MANIFEST);
    assert_eq!(got.platforms, vec!["linux/amd64"]);
    let root = got.blobs.iter().find(|b| b.digest == got.digest).unwrap();
    let manifest = json(&bytes_of(&root.content));
    assert_eq!(manifest["config"]["digest"].as_str().unwrap(), want_config);
    let layers: Vec<String> =
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    assert_eq!(layers, want_layers);
    // skopeo writes docker-archive layers uncompressed.
    assert!(manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar"));
    assert_blobs_are_what_they_claim(&got);

    // What was converted is an image skopeo accepts and re-verifies end to end.
    let out = t.path().join("out");
    materialize(&got, &out, "bb");
    let out2 = t.path().join("out2");
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            "--preserve-digests",
            &format!("oci:{}:bb", out.display()),
            &format!("oci:{}:bb", out2.display()),
        ],
    );
    let back = json(&run("skopeo", &["inspect", &format!("oci:{}:bb", out2.display())]));
    assert_eq!(back["Layers"], inspect["Layers"]);
    assert_eq!(skopeo_raw_digest(&format!("oci:{}:bb", out.display())), got.digest);
}

/// Writes the archive Docker 25.0.0–25.0.2 `docker save IMAGE@DIGEST` writes for the
/// image `tag` of `layout` (moby/moby#47210): an OCI layout whose `index.json` says
/// `"manifests": null`, and a valid `manifest.json` (no RepoTags: saved by digest)
/// pointing at the config and the uncompressed layers under `blobs/sha256/`.
fn write_docker_25_untagged_save(layout: &Path, tag: &str, archive: &Path) {
    let index = json(&fs::read(layout.join("index.json")).unwrap());
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let blob = |d: &str| fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest = json(&blob(entry["digest"].as_str().unwrap()));
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut files: Vec<(String, Vec<u8>)> =
        vec![(format!("blobs/sha256/{}", &config_digest[7..]), blob(&config_digest))];
    let mut layers = Vec::new();
    let mut layer_names = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        // Docker stores layers uncompressed; umoci wrote them gzipped.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob(l["digest"].as_str().unwrap())[..]).read_to_end(&mut tar).unwrap();
        let d = Sha256Digest::of(&tar);
        layers.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": tar.len()}));
        layer_names.push(format!("blobs/sha256/{}", d.hex()));
        files.push((format!("blobs/sha256/{}", d.hex()), tar));
    }
    let docker_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": manifest["config"], "layers": layers,
    }))
    .unwrap();
    files.push((format!("blobs/sha256/{}", Sha256Digest::of(&docker_manifest).hex()), docker_manifest));
    files.push((
        "index.json".into(),
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#.to_vec(),
    ));
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&serde_json::json!([{"Config": format!("blobs/sha256/{}", &config_digest[7..]), "RepoTags": null, "Layers": layer_names}])).unwrap(),
    ));
    files.push(("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
    let mut b = tar::Builder::new(fs::File::create(archive).unwrap());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, dir, std::io::empty()).unwrap();
    }
    for (name, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn a_docker_25_save_with_a_null_oci_index_is_read_through_manifest_json_like_skopeo() {
    if !tools() {
        return;
    }
    let t = tempfile::TempDir::new().unwrap();
    let l = t.path().join("layout");
    build_busybox_image(t.path(), &l, "busybox");
    let archive = t.path().join("docker25.tar");
    write_docker_25_untagged_save(&l, "busybox", &archive);
    // skopeo reads the fixture (through manifest.json): it is a faithful archive.
    let src = format!("docker-archive:{}", archive.display());
    let inspect = json(&run("skopeo", &["inspect", &src]));
    let raw = json(&run("skopeo", &["inspect", "--raw", &src]));

    let got = load_image(&spec("lab/busybox:1.35", "docker-archive:docker25.tar"), t.path())
        .unwrap_or_else(|e| panic!("the Docker 25 archive is refused: {e}"));
    let root = got.blobs.iter().find(|b| b.digest == got.digest).unwrap();
    let manifest = json(&bytes_of(&root.content));
    assert_eq!(manifest["config"]["digest"], raw["config"]["digest"]);
    let layers: Vec<&serde_json::Value> = manifest["layers"].as_array().unwrap().iter().map(|l| &l["digest"]).collect();
    let want: Vec<&serde_json::Value> = inspect["Layers"].as_array().unwrap().iter().collect();
    assert_eq!(layers, want, "the layers skopeo reports");
    assert_eq!(got.platforms, vec!["linux/amd64"]);
    assert_blobs_are_what_they_claim(&got);
    // A position selects it too (it has no tag), as for any docker-archive.
    assert_eq!(
        load_image(&spec("lab/busybox:1.35", "docker-archive:docker25.tar:@0"), t.path()).unwrap().digest,
        got.digest
    );
}

/// Adds an index of the given tags' manifests (platform from each config) to the
/// layout's index.json under `name`; returns the manifests' digests by architecture.
fn add_index(layout: &Path, tags: &[&str], name: &str) -> BTreeMap<String, Sha256Digest> {
    let index_path = layout.join("index.json");
    let mut index = json(&fs::read(&index_path).unwrap());
    let mut by_arch = BTreeMap::new();
    let mut manifests = Vec::new();
    for tag in tags {
        let d = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == *tag)
            .unwrap()
            .clone();
        let digest: Sha256Digest = d["digest"].as_str().unwrap().parse().unwrap();
        let manifest = json(&fs::read(layout.join("blobs/sha256").join(digest.hex())).unwrap());
        let config_digest: Sha256Digest = manifest["config"]["digest"].as_str().unwrap().parse().unwrap();
        let config = json(&fs::read(layout.join("blobs/sha256").join(config_digest.hex())).unwrap());
        let arch = config["architecture"].as_str().unwrap().to_string();
        manifests.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest.to_string(), "size": d["size"],
            "platform": {"architecture": arch, "os": "linux"},
        }));
        by_arch.insert(arch, digest);
    }
    let idx =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
            .unwrap();
    let idx_digest = Sha256Digest::of(&idx);
    fs::write(layout.join("blobs/sha256").join(idx_digest.hex()), &idx).unwrap();
    index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": OCI_INDEX, "digest": idx_digest.to_string(), "size": idx.len(),
        "annotations": {"org.opencontainers.image.ref.name": name},
    }));
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    by_arch
}

/// The manifest skopeo picks from an index for `arch` (a plain copy picks one).
fn skopeo_pick(work: &Path, source: &str, arch: &str) -> Sha256Digest {
    let dest = work.join(format!("pick-{arch}"));
    let dest = format!("oci:{}:x", dest.display());
    run("skopeo", &["--override-arch", arch, "copy", "-q", "--preserve-digests", source, &dest]);
    skopeo_raw_digest(&dest)
}

#[test]
fn multi_platform_index_whole_and_filtered() {
    if !tools() {
        return;
    }
    let t = tempfile::TempDir::new().unwrap();
    let l = t.path().join("layout");
    build_busybox_image(t.path(), &l, "busybox");
    let ls = l.to_str().unwrap().to_string();
    // As in the lab: the same filesystem re-labelled for other architectures.
    umoci(&["config", "--image", &format!("{ls}:busybox"), "--tag", "busybox-arm64", "--architecture", "arm64"]);
    umoci(&["config", "--image", &format!("{ls}:busybox"), "--tag", "busybox-s390x", "--architecture", "s390x"]);
    let two = add_index(&l, &["busybox", "busybox-arm64"], "multi");
    let three = add_index(&l, &["busybox", "busybox-arm64", "busybox-s390x"], "multi3");

    // Whole index: the root is the index skopeo sees, every platform kept.
    let whole = load_image(&spec("lab/multi:1", "oci:layout:multi"), t.path()).unwrap();
    assert_eq!(whole.digest, skopeo_raw_digest(&format!("oci:{ls}:multi")));
    assert_eq!(whole.media_type, OCI_INDEX);
    assert_eq!(whole.platforms, vec!["linux/amd64", "linux/arm64"]);
    assert_blobs_are_what_they_claim(&whole);

    // Through skopeo copy --all into an oci-archive: same index digest.
    let archive = t.path().join("multi.tar");
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            "--all",
            &format!("oci:{ls}:multi"),
            &format!("oci-archive:{}:docker.io/lab/multi:1", archive.display()),
        ],
    );
    let from_archive = load_image(&spec("lab/multi:1", "oci-archive:multi.tar"), t.path()).unwrap();
    assert_eq!(from_archive.digest, whole.digest);
    assert_eq!(from_archive.platforms, whole.platforms);

    // One platform: the root becomes that platform's manifest, the one skopeo picks.
    let mut arm = spec("lab/multi:1", "oci:layout:multi");
    arm.platforms = Some(vec!["linux/arm64".into()]);
    let arm = load_image(&arm, t.path()).unwrap();
    assert_eq!(arm.digest, two["arm64"]);
    assert_eq!(arm.digest, skopeo_pick(t.path(), &format!("oci:{ls}:multi"), "arm64"));
    assert_eq!(arm.platforms, vec!["linux/arm64"]);
    assert_eq!(arm.media_type, OCI_MANIFEST);

    // Two of three: a new index, which skopeo copies completely (--all) and reads back.
    let mut pair = spec("lab/multi:3", "oci:layout:multi3");
    pair.platforms = Some(vec!["linux/s390x".into(), "linux/amd64".into()]);
    let pair = load_image(&pair, t.path()).unwrap();
    assert_eq!(pair.media_type, OCI_INDEX);
    assert_eq!(pair.platforms, vec!["linux/amd64", "linux/s390x"]);
    assert!(!pair.blobs.iter().any(|b| b.digest == three["arm64"]));
    assert_blobs_are_what_they_claim(&pair);
    let out = t.path().join("out");
    materialize(&pair, &out, "pair");
    assert_eq!(skopeo_raw_digest(&format!("oci:{}:pair", out.display())), pair.digest);
    let out2 = format!("oci:{}:pair", t.path().join("out2").display());
    run("skopeo", &["copy", "-q", "--all", "--preserve-digests", &format!("oci:{}:pair", out.display()), &out2]);
    assert_eq!(skopeo_raw_digest(&out2), pair.digest);
    assert_eq!(skopeo_pick(t.path(), &format!("oci:{}:pair", out.display()), "s390x"), three["s390x"]);

    // A platform the index does not have is named with the ones it has.
    let mut bad = spec("lab/multi:1", "oci:layout:multi");
    bad.platforms = Some(vec!["linux/ppc64le".into()]);
    let e = load_image(&bad, t.path()).unwrap_err();
    assert!(e.cause.contains("linux/ppc64le") && e.cause.contains("linux/amd64, linux/arm64"), "{e}");
}

/// Charts packaged by `load_chart` are charts helm 3.18 (the Helm K3s runs) accepts,
/// and charts packaged by helm load; dependencies count only once vendored.
#[test]
fn charts_round_trip_with_real_helm() {
    let Some(helm) = airlock_tests::helm() else {
        return;
    };
    let t = tempfile::TempDir::new().unwrap();
    let home = t.path().join("home");
    let helm_ok = |args: &[&str]| -> Vec<u8> {
        let out = airlock_tests::helm_command(&helm, &home).current_dir(t.path()).args(args).output().unwrap();
        assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    helm_ok(&["create", "demo"]);
    // `helm create` writes a .helmignore that lists *.bak.
    fs::write(t.path().join("demo/notes.bak"), "must not be packaged").unwrap();

    // Our packaging of the directory: deterministic, and helm lints and renders it.
    let ours = airlock_bundler::sources::load_chart(&t.path().join("demo"), 1_700_000_000).unwrap();
    let again = airlock_bundler::sources::load_chart(&t.path().join("demo"), 1_700_000_000).unwrap();
    assert_eq!(ours, again);
    assert_eq!((ours.name.as_str(), ours.version.as_str()), ("demo", "0.1.0"));
    assert_eq!(ours.app_version.as_deref(), Some("1.16.0"));
    let tgz = t.path().join("ours-demo-0.1.0.tgz");
    fs::write(&tgz, bytes_of(&ours.content)).unwrap();
    assert_eq!(Sha256Digest::of(&fs::read(&tgz).unwrap()), ours.sha256);
    helm_ok(&["lint", "--strict", tgz.to_str().unwrap()]);
    let rendered = String::from_utf8(helm_ok(&["template", "x", tgz.to_str().unwrap()])).unwrap();
    assert!(rendered.contains("kind: Deployment"), "{rendered}");
    let listed = tar_names(&tgz);
    assert!(listed.contains(&"demo/Chart.yaml".to_string()), "{listed:?}");
    assert!(!listed.iter().any(|n| n.ends_with(".bak")), "{listed:?}");

    // helm's own package is taken as it is.
    helm_ok(&["package", "demo", "-d", "pkg"]);
    let pkg = t.path().join("pkg/demo-0.1.0.tgz");
    let theirs = airlock_bundler::sources::load_chart(&pkg, 0).unwrap();
    assert_eq!(theirs.content, Content::Bytes(fs::read(&pkg).unwrap()));
    assert_eq!((theirs.name.as_str(), theirs.version.as_str()), ("demo", "0.1.0"));
    assert_eq!(theirs.sha256, Sha256Digest::of(&fs::read(&pkg).unwrap()));

    // A parent depending on demo: refused until `helm dependency build` vendors it
    // (file:// repositories work offline, so this needs no network).
    helm_ok(&["create", "parent"]);
    let chart_yaml = t.path().join("parent/Chart.yaml");
    let mut y = fs::read_to_string(&chart_yaml).unwrap();
    y.push_str("dependencies:\n  - name: demo\n    version: 0.1.0\n    repository: file://../demo\n");
    fs::write(&chart_yaml, y).unwrap();
    let e = airlock_bundler::sources::load_chart(&t.path().join("parent"), 0).unwrap_err();
    assert!(e.cause.contains("`demo`") && e.hint.as_deref().unwrap().contains("helm dependency build"), "{e}");
    helm_ok(&["dependency", "build", "parent"]);
    let parent = airlock_bundler::sources::load_chart(&t.path().join("parent"), 0).unwrap();
    assert_eq!(parent.dependencies, vec!["demo 0.1.0"]);
    let ptgz = t.path().join("parent.tgz");
    fs::write(&ptgz, bytes_of(&parent.content)).unwrap();
    let rendered = String::from_utf8(helm_ok(&["template", "x", ptgz.to_str().unwrap()])).unwrap();
    assert!(rendered.contains("x-demo"), "subchart rendered: {rendered}");
}

fn tar_names(tgz: &Path) -> Vec<String> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(tgz).unwrap()));
    a.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect()
}
