//! Proves the test harness works against the real tools, and that the demo example's
//! inputs (examples/demo) are real and valid: a private containerd imports the demo's
//! OCI layout, docker-archive and stand-in airgap archive under their full references,
//! and helm 3.18 lints and renders the demo charts.

use std::fs;
use std::process::Command;

use airlock_tests::{helm, helm_command, require_tool, tar_directory, workspace_root, Containerd};

const LAYOUT_REFS: [&str; 14] = [
    "docker.io/airlock-demo/api:1.0.0",
    "docker.io/airlock-demo/web:1.0.0",
    "docker.io/airlock-demo/worker:1.0.0",
    "docker.io/grafana/grafana:13.2.0",
    "docker.io/library/postgres:16.6",
    "docker.io/rancher/klipper-helm:v0.9.3-build20241008",
    "quay.io/keycloak/keycloak:26.5.6",
    "quay.io/minio/mc:RELEASE.2024-11-21T17-21-54Z",
    "quay.io/minio/minio:RELEASE.2024-12-18T13-15-44Z",
    "quay.io/prometheus-operator/prometheus-config-reloader:v0.93.1",
    "quay.io/prometheus/alertmanager:v0.34.0",
    "quay.io/prometheus/node-exporter:v1.12.1",
    "quay.io/prometheus/prometheus:v3.14.0",
    "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0",
];

#[test]
fn containerd_imports_the_demo_images() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let demo = workspace_root().join("examples/demo");
    let tmp = tempfile::tempdir().unwrap();

    // The OCI layout, tarred as an OCI archive (entries without "./", with oci-layout).
    let layout_tar = tmp.path().join("layout.tar");
    tar_directory(&demo.join("images/layout"), &layout_tar).unwrap();
    let names: Vec<String> = tar::Archive::new(fs::File::open(&layout_tar).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "oci-layout"), "no oci-layout entry in {names:?}");
    assert!(names.iter().all(|n| !n.starts_with("./")), "{names:?}");

    // --all-platforms: every blob of both worker platforms must be present.
    let images = cd.import(&layout_tar).unwrap_or_else(|e| panic!("{e:#}\n{}", cd.log()));
    assert_eq!(images, LAYOUT_REFS.to_vec(), "images imported from the demo layout");
    let ls = cd.ctr(&["images", "ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    let worker = ls
        .lines()
        .find(|l| l.starts_with("docker.io/airlock-demo/worker:1.0.0"))
        .unwrap_or_else(|| panic!("worker missing from:\n{ls}"));
    assert!(worker.contains("linux/amd64,linux/arm64"), "worker platforms: {worker}");
    // containerd checked the content: every image's content is complete here.
    let check = cd.ctr(&["images", "check"]);
    let check = String::from_utf8_lossy(&check.stdout);
    for r in LAYOUT_REFS {
        let line = check
            .lines()
            .find(|l| l.starts_with(r))
            .unwrap_or_else(|| panic!("{r} missing from `ctr images check`:\n{check}"));
        assert!(line.contains("complete"), "{line}");
    }

    // The harness catches what K3s would trip over: the same layout without the arm64
    // worker manifest fails, although the daemon holds that blob from the import above
    // (in another namespace).
    let broken = tmp.path().join("broken");
    copy_dir(&demo.join("images/layout"), &broken);
    let blob = |d: &str| broken.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index: serde_json::Value = serde_json::from_slice(&fs::read(broken.join("index.json")).unwrap()).unwrap();
    let worker_index = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == LAYOUT_REFS[2])
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let worker: serde_json::Value = serde_json::from_slice(&fs::read(blob(&worker_index)).unwrap()).unwrap();
    let arm64 =
        worker["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == "arm64").unwrap()
            ["digest"]
            .as_str()
            .unwrap()
            .to_string();
    fs::remove_file(blob(&arm64)).unwrap();
    let broken_tar = tmp.path().join("broken.tar");
    tar_directory(&broken, &broken_tar).unwrap();
    let err = cd.import(&broken_tar).expect_err("a partial multi-platform index must not import");
    assert!(format!("{err:#}").contains("not found"), "{err:#}");

    // The docker-archive, as docker save / skopeo write it.
    let images = cd.import(&demo.join("images/tools.docker.tar")).unwrap();
    assert_eq!(images, vec!["docker.io/airlock-demo/tools:1.0.0".to_string()]);

    // The stand-in K3s airgap archive is a real zstd-compressed docker-archive
    // (ctr 1.6 does not decompress: decompress first, as K3s does by suffix).
    let zst = fs::File::open(demo.join("dist/k3s-airgap-images-amd64.tar.zst")).unwrap();
    let airgap_tar = tmp.path().join("airgap.tar");
    let mut out = fs::File::create(&airgap_tar).unwrap();
    std::io::copy(&mut zstd::Decoder::new(zst).unwrap(), &mut out).unwrap();
    let images = cd.import(&airgap_tar).unwrap();
    assert_eq!(images, vec!["docker.io/airlock-demo/k3s-airgap-images-stand-in:v1.31.4-k3s1".to_string()]);
}

#[test]
fn skopeo_reads_the_demo_images() {
    let Some(skopeo) = require_tool("skopeo") else {
        return;
    };
    let demo = workspace_root().join("examples/demo/images");
    let mut sources: Vec<String> =
        LAYOUT_REFS.iter().map(|r| format!("oci:{}:{r}", demo.join("layout").display())).collect();
    sources.push(format!("docker-archive:{}", demo.join("tools.docker.tar").display()));
    for src in sources {
        let out = Command::new(&skopeo).args(["inspect", &src]).output().unwrap();
        assert!(out.status.success(), "skopeo inspect {src}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Os"], "linux", "{src}");
        assert!(!v["Layers"].as_array().unwrap().is_empty(), "{src}");
    }
}

#[test]
fn helm_318_lints_and_renders_the_demo_charts() {
    let Some(helm) = helm() else { return };
    let charts = workspace_root().join("examples/demo/charts");
    let home = tempfile::tempdir().unwrap();

    for chart in ["hello", "notes-0.1.0.tgz"] {
        let out = helm_command(&helm, home.path()).arg("lint").arg(charts.join(chart)).output().unwrap();
        assert!(
            out.status.success(),
            "helm lint {chart}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = helm_command(&helm, home.path())
        .args(["template", "demo"])
        .arg(charts.join("hello"))
        .args(["--kube-version", "1.31.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(rendered.contains("image: \"docker.io/airlock-demo/web:1.0.0\""), "{rendered}");
    assert!(rendered.contains("kind: Deployment"), "{rendered}");
    // the vendored subchart is rendered too, with the parent's value
    assert!(rendered.contains("# Source: hello/charts/greeting/templates/configmap.yaml"), "{rendered}");
    assert!(rendered.contains("Welcome to the Airlock demo"), "{rendered}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}
