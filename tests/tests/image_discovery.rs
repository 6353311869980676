//! Image discovery with real tools: a chart whose Deployment (with an initContainer)
//! and CronJob reference images pushed by skopeo to a real `docker-registry` on
//! 127.0.0.1 (images built with umoci), marked `discover_images: true` with a values
//! file. `airlock-bundler create` renders it with real helm 3.18 and bundles both
//! images at the digests the registry serves; the SBOM names the chart, manifest and
//! container that asked for each. Without helm, discovery is a clear error, and an
//! explicit image list still builds. With discovery on, each registry source (the
//! listed image, the chart from `oci://`, the discovered image) is fetched once: the
//! registry's access log shows no manifest or blob asked for twice.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use airlock_tests::registry::{build_image, Registry, RegistryOptions};
use airlock_tests::{cargo_bin, create_command, demo_dir, helm, require_tool};

fn create(spec: &Path, cache: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = create_command(spec, out, &demo_dir().join("keys/demo.key"));
    cmd.env("HOME", spec.parent().unwrap())
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .arg("--cache-dir")
        .arg(cache);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("airlock-bundler runs")
}

/// Builds the `web` and `job` images (umoci) and pushes them as `lab/web:1` and
/// `lab/job:1` (skopeo).
fn push_web_and_job(reg: &Registry, dir: &Path) {
    let layout = dir.join("layout");
    build_image(dir, &layout, "web", "amd64", &[]).unwrap();
    build_image(dir, &layout, "job", "amd64", &[]).unwrap();
    let l = layout.display();
    reg.push(&format!("oci:{l}:web"), "lab/web:1", false).unwrap();
    reg.push(&format!("oci:{l}:job"), "lab/job:1", false).unwrap();
}

/// `dir/bundle.yaml` with one component `app` (`component`: its lines after the
/// name) and the registry at `h`, and `dir/site-values.yaml` pointing the chart's
/// workloads at `lab/web:1` (web and its migrate init container) and `lab/job:1`.
fn write_spec(dir: &Path, h: &str, component: &str) -> PathBuf {
    fs::write(
        dir.join("site-values.yaml"),
        format!("image: {h}/lab/web:1\nmigrate: {h}/lab/web:1\njob: {h}/lab/job:1\n"),
    )
    .unwrap();
    let spec = dir.join("bundle.yaml");
    fs::write(
        &spec,
        format!("name: disc\nversion: '1.0'\nregistries:\n  - host: '{h}'\n    insecure: true\ncomponents:\n  - name: app\n{component}"),
    )
    .unwrap();
    spec
}

fn chart(dir: &Path) -> PathBuf {
    let d = dir.join("web");
    fs::create_dir_all(d.join("templates")).unwrap();
    fs::write(d.join("Chart.yaml"), "apiVersion: v2\nname: web\nversion: 0.1.0\n").unwrap();
    fs::write(d.join("values.yaml"), "image: example.invalid/placeholder:0\nmigrate: example.invalid/placeholder:0\njob: example.invalid/placeholder:0\n").unwrap();
    fs::write(
        d.join("templates/deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      initContainers:\n        - name: migrate\n          image: {{ .Values.migrate }}\n      containers:\n        - name: web\n          image: {{ .Values.image }}\n",
    )
    .unwrap();
    fs::write(
        d.join("templates/cron.yaml"),
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n            - name: job\n              image: {{ .Values.job }}\n",
    )
    .unwrap();
    d
}

#[test]
fn images_in_rendered_workloads_are_pulled_bundled_and_attributed() {
    let Some(helm) = helm() else { return };
    if require_tool("umoci").is_none() || require_tool("skopeo").is_none() {
        return;
    }
    let Some(reg) = Registry::start(RegistryOptions::default()) else { return };
    let t = tempfile::tempdir().unwrap();
    push_web_and_job(&reg, t.path());
    let h = reg.host();
    chart(t.path());
    // The values file points the workloads at the fixture; the migrate init
    // container reuses the web image (one image, two requesters).
    let spec = write_spec(
        t.path(),
        &h,
        "    charts:\n      - path: web\n        discover_images: true\n        values_files: [site-values.yaml]\n",
    );
    let cache = t.path().join("cache");
    let out = t.path().join("a.airlock");
    let o = create(&spec, &cache, &out, &[("AIRLOCK_HELM", helm.to_str().unwrap())]);
    assert!(o.status.success(), "create failed: {}", String::from_utf8_lossy(&o.stderr));

    let m = read_manifest(&BundleFiles::locate(&out).unwrap(), None).unwrap().0;
    let refs: Vec<(&str, String)> = m.images.iter().map(|i| (i.reference.as_str(), i.digest.to_string())).collect();
    assert_eq!(
        refs,
        [
            (format!("{h}/lab/job:1").as_str(), reg.skopeo_digest("lab/job:1").unwrap()),
            (format!("{h}/lab/web:1").as_str(), reg.skopeo_digest("lab/web:1").unwrap()),
        ],
        "both discovered images, at the digests the registry serves"
    );
    assert_eq!(m.components[0].images.len(), 2);
    let lock = fs::read_to_string(t.path().join("bundle.lock")).unwrap();
    assert!(lock.contains(&format!("docker://{h}/lab/web:1")), "discovered images are locked:\n{lock}");

    // The SBOM says who asked for each image.
    let sbom: serde_json::Value = serde_json::from_slice(
        &Command::new(cargo_bin("airlock")).args(["inspect", "--sbom"]).arg(&out).output().unwrap().stdout,
    )
    .unwrap();
    let web =
        sbom["components"].as_array().unwrap().iter().find(|c| c["bom-ref"] == format!("image:{h}/lab/web:1")).unwrap();
    let asked: Vec<&str> = web["properties"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "airlock:requestedBy")
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked.iter().any(|a| a.contains("Deployment/web (web/templates/deploy.yaml) initContainers migrate")),
        "{asked:?}"
    );
    assert!(asked.iter().any(|a| a.contains("Deployment/web (web/templates/deploy.yaml) containers web")), "{asked:?}");
    // And the build's summary reports it.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&format!("discovered image {h}/lab/job:1")), "{stdout}");
    assert!(
        stdout.contains("asked for by chart web: CronJob/nightly (web/templates/cron.yaml) containers job"),
        "{stdout}"
    );

    // No helm: discovery fails with a hint and writes nothing; listing the images
    // explicitly instead builds without helm.
    let no_helm = t.path().join("out").join("x.airlock");
    fs::create_dir_all(no_helm.parent().unwrap()).unwrap();
    let o = create(&spec, &cache, &no_helm, &[("AIRLOCK_HELM", ""), ("PATH", "/nonexistent")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("discover_images") && err.contains("needs helm") && err.contains("hint:"), "{err}");
    assert!(err.contains("components[0].charts[0]"), "names the chart: {err}");
    assert_eq!(fs::read_dir(no_helm.parent().unwrap()).unwrap().count(), 0);
    fs::write(
        &spec,
        format!(
            "name: disc\nversion: '1.0'\nregistries:\n  - host: '{h}'\n    insecure: true\ncomponents:\n  - name: app\n    images:\n      - ref: {h}/lab/web:1\n        from: docker://{h}/lab/web:1\n    charts:\n      - path: web\n"
        ),
    )
    .unwrap();
    let o = create(&spec, &cache, &no_helm, &[("AIRLOCK_HELM", ""), ("PATH", "/nonexistent")]);
    assert!(o.status.success(), "explicit images need no helm: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn with_discovery_each_registry_source_is_fetched_once() {
    let Some(helm) = helm() else { return };
    if require_tool("umoci").is_none() || require_tool("skopeo").is_none() {
        return;
    }
    let Some(reg) = Registry::start(RegistryOptions { access_log: true, ..Default::default() }) else { return };
    let t = tempfile::tempdir().unwrap();
    push_web_and_job(&reg, t.path());
    let h = reg.host();
    // The chart comes from the registry too (`helm push`), and is rendered for
    // discovery: it asks for web (discovered) and job (also listed in the spec).
    let home = t.path().join("helm-home");
    let helm_ok = |args: &[&str]| {
        let o = airlock_tests::helm_command(&helm, &home).args(args).output().unwrap();
        assert!(o.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let src = chart(t.path());
    helm_ok(&["package", src.to_str().unwrap(), "-d", t.path().to_str().unwrap()]);
    let tgz = t.path().join("web-0.1.0.tgz");
    helm_ok(&["push", tgz.to_str().unwrap(), &format!("oci://{h}/charts"), "--plain-http"]);
    let body = format!("    images:\n      - ref: {h}/lab/job:1\n        from: docker://{h}/lab/job:1\n    charts:\n      - repo: oci://{h}/charts\n        name: web\n        version: 0.1.0\n        discover_images: true\n        values_files: [site-values.yaml]\n");
    let spec = write_spec(t.path(), &h, &body);
    let before = reg.requests().len();
    let out = t.path().join("a.airlock");
    let o = create(&spec, &t.path().join("cache"), &out, &[("AIRLOCK_HELM", helm.to_str().unwrap())]);
    assert!(o.status.success(), "create failed: {}", String::from_utf8_lossy(&o.stderr));
    let m = read_manifest(&BundleFiles::locate(&out).unwrap(), None).unwrap().0;
    let refs: Vec<&str> = m.images.iter().map(|i| i.reference.as_str()).collect();
    assert_eq!(refs, [format!("{h}/lab/job:1"), format!("{h}/lab/web:1")]);
    assert_eq!(m.charts.len(), 1);

    // Manifests (by tag and by digest) and blobs: each asked for once.
    let requests = reg.requests().split_off(before);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in requests.iter().filter(|r| r.contains("/manifests/") || r.contains("/blobs/")) {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    for name in ["lab/job/manifests/1", "lab/web/manifests/1", "charts/web/manifests/0.1.0"] {
        assert!(counts.keys().any(|r| r.ends_with(name)), "{name} was not fetched: {requests:#?}");
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fetched more than once: {twice:#?}");
}
