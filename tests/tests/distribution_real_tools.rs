//! The distribution layouts against the real tools that will read them:
//!
//! - `systemd-analyze verify` (systemd 252) accepts every unit airlock writes, and
//!   refuses one whose `ExecStart` binary is missing (so the check can fail);
//! - every `HelmChart` manifest validates against the `openAPIV3Schema` of
//!   helm-controller's CRD (`shared/k3s/helm.cattle.io_helmcharts.crd.yaml`), closed
//!   the way the API server treats it, so a misspelled field fails;
//! - helm 3.18 (the Helm K3s' helm-controller runs) renders every chart exactly as the
//!   `HelmChart` hands it over: decoded `chartContent`, or the archive served from
//!   `server/static/charts/`, with `valuesContent` and `targetNamespace`;
//! - the teardown scripts parse as POSIX sh (and pass shellcheck where installed).
//!
//! The K3s binary and image tarballs are staged entry names only (no K3s can run
//! here); the charts are real: the demo charts and the official MinIO 5.4.0 chart.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_installer::engine::layout::{FileSource, Layout};
use airlock_installer::render::distribution::{
    render, Artifacts, ChartInput, DistributionInput, Role, TarballEntry, TarballEntryKind, Token, CHART_CONTENT_LIMIT,
};
use airlock_tests::{helm, helm_command, require_tool, workspace_root};
use base64::Engine as _;
use serde_json::Value as Json;

const TOKEN: &str = "K10-real-tools-token::server:0b5e";

fn chart(name: &str, version: &str, namespace: &str, tgz: Vec<u8>, values: &str) -> ChartInput {
    ChartInput {
        name: name.into(),
        version: version.into(),
        namespace: namespace.into(),
        entry: format!("charts/{name}-{version}.tgz"),
        tgz,
        values_yaml: values.into(),
        values_secret: false,
    }
}

/// The demo's `notes` chart and the official MinIO chart (no helm needed to read them).
fn prebuilt_charts() -> Vec<ChartInput> {
    let notes = fs::read(workspace_root().join("examples/demo/charts/notes-0.1.0.tgz")).unwrap();
    let minio = fs::read(workspace_root().join("../shared/charts/minio-5.4.0.tgz")).unwrap();
    vec![
        chart("notes", "0.1.0", "demo", notes, "notes: Rendered offline\n"),
        // contracts: single node **must** set `mode: standalone` (the default is 16
        // replicas in distributed mode).
        chart(
            "minio",
            "5.4.0",
            "minio",
            minio,
            "mode: standalone\nreplicas: 1\nrootUser: airlock\nrootPassword: not-a-real-password\n\
             persistence:\n  size: 1Gi\nresources:\n  requests:\n    memory: 512Mi\n",
        ),
    ]
}

fn input(role: Role, charts: Vec<ChartInput>) -> DistributionInput {
    DistributionInput {
        version: "v1.31.4+k3s1".into(),
        role,
        node_name: "node-1".into(),
        node_ip: vec!["10.0.0.11".parse().unwrap()],
        tls_san: vec![],
        token: Token::new(TOKEN),
        cluster_cidr: vec![],
        service_cidr: vec![],
        cluster_dns: None,
        disable: vec!["traefik".into()],
        embedded_registry: false,
        secrets_encryption: false,
        cis: false,
        kube_apiserver_args: vec![],
        data_dir: None,
        registry_mirror: None,
        artifacts: Artifacts::K3s { binary: "distribution/k3s".into(), images: vec![] },
        image_archive_entry: "images/airlock-images.tar".into(),
        charts,
        proxy_env: vec![],
        rke2_opt_prefix: None,
    }
}

/// An RKE2 CIS server (tarball entries as
/// `read_unpacked_rke2` lists them; the files themselves are not needed here).
fn rke2_input(charts: Vec<ChartInput>) -> DistributionInput {
    let file = |p: &str, executable| TarballEntry { path: p.into(), kind: TarballEntryKind::File { executable } };
    let mut i = input(Role::FirstServer, charts);
    i.version = "v1.31.4+rke2r1".into();
    i.disable = vec![];
    i.cis = true;
    i.artifacts = Artifacts::Rke2 {
        tarball: vec![
            file("bin/rke2", true),
            file("bin/rke2-killall.sh", true),
            file("bin/rke2-uninstall.sh", true),
            file("lib/systemd/system/rke2-server.service", false),
            file("lib/systemd/system/rke2-agent.service", false),
            file("share/rke2/rke2-cis-sysctl.conf", false),
        ],
        images: vec!["distribution/rke2-images.linux-amd64.tar.zst".into()],
    };
    i
}

fn inline_text(layout: &Layout, path: &Path) -> Option<String> {
    layout.files.iter().find(|f| f.path == path).and_then(|f| match &f.source {
        FileSource::Inline(b) => Some(String::from_utf8(b.clone()).unwrap()),
        FileSource::Staged(_) => None,
    })
}

/// Every inline file under `server/manifests/` holding `kind: HelmChart`, parsed.
fn helm_charts(layout: &Layout) -> Vec<(PathBuf, Json)> {
    let mut out = Vec::new();
    for f in &layout.files {
        let (true, FileSource::Inline(bytes)) = (f.path.to_string_lossy().contains("/server/manifests/"), &f.source)
        else {
            continue;
        };
        for doc in serde_yaml::Deserializer::from_str(std::str::from_utf8(bytes).unwrap()) {
            let json: Json = serde::Deserialize::deserialize(doc).unwrap();
            if json["kind"] == "HelmChart" {
                out.push((f.path.clone(), json));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// (a) systemd-analyze verify

#[test]
fn systemd_analyze_verifies_every_unit_we_write() {
    let Some(analyze) = require_tool("systemd-analyze") else { return };
    let layouts = [
        ("k3s server", render(&input(Role::SingleServer, vec![])).unwrap()),
        ("k3s agent", render(&input(Role::Agent { server: "10.0.0.11".into() }, vec![])).unwrap()),
    ];
    for (case, layout) in &layouts {
        let mut verified = 0;
        for unit in &layout.units {
            // The units airlock writes itself; RKE2's come from its tarball as shipped.
            let path = Path::new("/etc/systemd/system").join(unit);
            let text = inline_text(layout, &path).unwrap_or_else(|| panic!("{case}: {unit} is not written inline"));
            let tmp = tempfile::tempdir().unwrap();

            // Control: as written, ExecStart names /usr/local/bin/k3s, which does not exist
            // on this machine, and verify refuses it. This proves the check can fail.
            if !Path::new("/usr/local/bin/k3s").exists() {
                let as_is = tmp.path().join("as-is").join(unit);
                fs::create_dir_all(as_is.parent().unwrap()).unwrap();
                fs::write(&as_is, &text).unwrap();
                let out = Command::new(&analyze).arg("verify").arg(&as_is).output().unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success(), "{case}: verify accepted a unit whose binary is missing");
                assert!(stderr.contains("/usr/local/bin/k3s"), "{case}: {stderr}");
            }

            // `systemd-analyze verify` checks that every Exec*= binary exists and is
            // executable on *this* machine (shared/lab/README.md section 8; `--root=` does
            // not apply to unit files given by path). So every binary that is missing
            // here (/usr/local/bin/k3s, and /sbin/modprobe on hosts without kmod) is
            // replaced by a copy of /bin/true at the same path under a temp root, and the
            // unit is verified with its Exec lines pointing there. Nothing else changes.
            let root = tmp.path().join("root");
            let rewritten = rewrite_exec_paths(&text, &root);
            let unit_file = tmp.path().join("units").join(unit);
            fs::create_dir_all(unit_file.parent().unwrap()).unwrap();
            fs::write(&unit_file, &rewritten).unwrap();
            let out = Command::new(&analyze).arg("verify").arg(&unit_file).output().unwrap();
            assert!(
                out.status.success(),
                "{case}: systemd-analyze verify {unit} failed ({}):\n{}{}\n--- unit as verified:\n{rewritten}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.lines().any(|l| l.contains(unit.as_str())),
                "{case}: systemd-analyze warns about {unit}:\n{stderr}"
            );
            // Control: a misspelled key exits 0 too, but with a warning naming the unit,
            // which the check above turns into a failure.
            let typo = tmp.path().join("typo").join(unit);
            fs::create_dir_all(typo.parent().unwrap()).unwrap();
            fs::write(&typo, rewritten.replace("\nKillMode=", "\nKilMode=")).unwrap();
            let out = Command::new(&analyze).arg("verify").arg(&typo).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.lines().any(|l| l.contains(unit.as_str()) && l.contains("KilMode")), "{case}: {stderr}");
            verified += 1;
        }
        assert_eq!(verified, 1, "{case}: one unit per node");
    }
}

/// Points every `Exec*=` executable that is missing on this machine at a copy of
/// `/bin/true` at the same path below `root`.
fn rewrite_exec_paths(unit: &str, root: &Path) -> String {
    let mut out = String::new();
    for line in unit.lines() {
        let mut line = line.to_string();
        if let Some((key, value)) = line.split_once('=') {
            if key.starts_with("Exec") {
                let command = value.trim_start_matches(['-', '@', ':', '+', '!']);
                let exe = command.split_whitespace().next().unwrap_or("");
                if exe.starts_with('/') && !Path::new(exe).exists() {
                    let stand_in = root.join(exe.trim_start_matches('/'));
                    fs::create_dir_all(stand_in.parent().unwrap()).unwrap();
                    fs::copy("/bin/true", &stand_in).unwrap();
                    fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
                    line = format!("{key}={}", value.replacen(exe, &stand_in.display().to_string(), 1));
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------
// (b) the HelmChart CRD schema

/// The `openAPIV3Schema` of helm-controller's HelmChart CRD, as JSON.
fn crd_schema() -> Json {
    let path = workspace_root().join("../shared/k3s/helm.cattle.io_helmcharts.crd.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd: Json = serde_yaml::from_str(&text).unwrap();
    let versions = crd["spec"]["versions"].as_array().unwrap();
    let v1 = versions.iter().find(|v| v["name"] == "v1").expect("a v1 version");
    v1["schema"]["openAPIV3Schema"].clone()
}

/// Closes every object schema that lists `properties` and says nothing about extra
/// ones: `additionalProperties: false`.
///
/// JSON Schema leaves objects open, but the API server does not: a CRD schema is
/// structural, and a field it does not declare is pruned (silently dropped: a typo like
/// `targetNamespce` would just lose the setting) or, with strict field validation,
/// rejected. Closing the schema makes a local check behave like the latter. Objects
/// marked `x-kubernetes-preserve-unknown-fields` (`spec.values`) and those without
/// `properties` (`metadata`, checked by the API server itself) stay open.
fn close_objects(schema: &mut Json) {
    if let Json::Object(map) = schema {
        let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Json::Bool(true));
        if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserve {
            map.insert("additionalProperties".into(), Json::Bool(false));
        }
        for v in map.values_mut() {
            close_objects(v);
        }
    } else if let Json::Array(items) = schema {
        items.iter_mut().for_each(close_objects);
    }
}

fn validator(schema: &Json) -> jsonschema::Validator {
    // The OpenAPI v3 schema dialect of CRDs is JSON Schema draft 4 plus extensions
    // (`x-kubernetes-*`), which the validator ignores.
    jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(schema).expect("the CRD schema compiles")
}

fn errors(v: &jsonschema::Validator, doc: &Json) -> Vec<String> {
    v.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path)).collect()
}

#[test]
fn every_helm_chart_validates_against_the_crd() {
    let open = crd_schema();
    let mut closed = open.clone();
    close_objects(&mut closed);
    let strict = validator(&closed);
    let lenient = validator(&open);

    let layouts = [
        ("k3s single server", render(&input(Role::SingleServer, prebuilt_charts())).unwrap()),
        ("k3s joining server", render(&input(Role::JoinServer { server: "s1".into() }, prebuilt_charts())).unwrap()),
        ("rke2 cis server", render(&rke2_input(prebuilt_charts())).unwrap()),
    ];
    let mut checked = 0;
    for (case, layout) in &layouts {
        let charts = helm_charts(layout);
        assert_eq!(charts.len(), 2, "{case}: one HelmChart per chart");
        for (path, doc) in charts {
            let errs = errors(&strict, &doc);
            assert!(errs.is_empty(), "{case}: {} is not a valid HelmChart: {errs:#?}", path.display());
            assert_eq!(doc["apiVersion"], "helm.cattle.io/v1");
            assert_eq!(doc["spec"]["failurePolicy"], "abort");
            assert!(doc["spec"].get("repo").is_none(), "offline: no repo");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);

    // The check can fail: a misspelled field, a wrong type, a value outside the enum.
    let (_, good) = helm_charts(&layouts[0].1).remove(0);
    let mut typo = good.clone();
    let ns = typo["spec"].as_object_mut().unwrap().remove("targetNamespace").unwrap();
    typo["spec"]["targetNamespce"] = ns;
    assert!(!errors(&strict, &typo).is_empty(), "`targetNamespce` must fail the closed schema");
    // ... which the CRD schema as published would let through (hence the closing).
    assert!(errors(&lenient, &typo).is_empty(), "the open schema accepts unknown fields");
    let mut wrong_type = good.clone();
    wrong_type["spec"]["createNamespace"] = Json::String("yes".into());
    assert!(!errors(&strict, &wrong_type).is_empty(), "createNamespace must be a boolean");
    let mut wrong_enum = good;
    wrong_enum["spec"]["failurePolicy"] = Json::String("explode".into());
    assert!(!errors(&strict, &wrong_enum).is_empty(), "failurePolicy is an enum");
}

// ---------------------------------------------------------------------------------
// (c) helm 3.18 renders every chart as the HelmChart hands it over

#[test]
fn helm_templates_every_helm_chart() {
    let Some(helm) = helm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();

    // The demo's `hello` chart (with a vendored subchart), packaged as the bundler would.
    let packaged = tmp.path().join("packaged");
    let out = helm_command(&helm, &home)
        .arg("package")
        .arg(workspace_root().join("examples/demo/charts/hello"))
        .arg("-d")
        .arg(&packaged)
        .output()
        .unwrap();
    assert!(out.status.success(), "helm package: {}", String::from_utf8_lossy(&out.stderr));
    let hello = fs::read(packaged.join("hello-0.1.0.tgz")).unwrap();
    let mut charts = prebuilt_charts();
    charts.insert(1, chart("hello", "0.1.0", "demo", hello, "replicaCount: 2\nmessage: Rendered by the test\n"));

    // Stage the archives where the layout's static files come from.
    let staging = tmp.path().join("staging");
    for c in &charts {
        let p = staging.join(&c.entry);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &c.tgz).unwrap();
    }
    let input = input(Role::SingleServer, charts.clone());
    let layout = render(&input).unwrap();
    let manifests = helm_charts(&layout);
    assert_eq!(manifests.len(), 3);

    let static_dir = input.data_dir().join("server/static");
    for (path, doc) in manifests {
        let spec = &doc["spec"];
        let name = doc["metadata"]["name"].as_str().unwrap();
        let source = charts.iter().find(|c| c.name == name).unwrap();
        let tgz = if let Some(content) = spec["chartContent"].as_str() {
            assert!(source.tgz.len() <= CHART_CONTENT_LIMIT, "{name} inlined above the limit");
            base64::engine::general_purpose::STANDARD.decode(content).unwrap()
        } else {
            // `https://%{KUBERNETES_API}%/static/<rest>` is served from
            // `<data-dir>/server/static/<rest>` of the server: find that file in the layout.
            let url = spec["chart"].as_str().unwrap_or_else(|| panic!("{}: no chart", path.display()));
            let rest = url.strip_prefix("https://%{KUBERNETES_API}%/static/").unwrap_or_else(|| panic!("{url}"));
            let file = layout.files.iter().find(|f| f.path == static_dir.join(rest)).expect("the static chart");
            let FileSource::Staged(entry) = &file.source else { panic!("static charts are staged") };
            assert!(source.tgz.len() > CHART_CONTENT_LIMIT, "{name} served statically below the limit");
            fs::read(staging.join(entry)).unwrap()
        };
        assert_eq!(tgz, source.tgz, "{name}: the archive helm-controller gets is the bundled one");
        let work = tmp.path().join("render").join(name);
        fs::create_dir_all(&work).unwrap();
        fs::write(work.join("chart.tgz"), &tgz).unwrap();
        fs::write(work.join("values.yaml"), spec["valuesContent"].as_str().unwrap_or("")).unwrap();
        let namespace = spec["targetNamespace"].as_str().unwrap();
        let out = helm_command(&helm, &home)
            .args(["template", name])
            .arg(work.join("chart.tgz"))
            .arg("-f")
            .arg(work.join("values.yaml"))
            .args(["--namespace", namespace])
            .output()
            .unwrap();
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "helm template {name} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(rendered.contains("kind: "), "{name}: nothing rendered");
        match name {
            // Standalone MinIO is a Deployment; distributed mode would be a StatefulSet.
            "minio" => {
                assert!(rendered.contains("kind: Deployment") && !rendered.contains("kind: StatefulSet"), "{rendered}");
                assert!(rendered.contains("name: minio\n"), "the release is named after the HelmChart");
            }
            // The values reached the chart, and the release name is the HelmChart's.
            "hello" => assert!(rendered.contains("replicas: 2") && rendered.contains("Rendered by the test")),
            "notes" => assert!(rendered.contains("name: notes-notes") && rendered.contains("Rendered offline")),
            other => panic!("unexpected chart {other}"),
        }
    }
}

/// The in-repo local-path provisioner chart as an RKE2 server installs it: packaged by
/// helm, handed over by the `HelmChart` with the node path the installer derives from
/// the data directory, rendered by helm 3.18 into `kube-system`, and every object
/// accepted by `kubernetes-validate --strict` (Kubernetes 1.31 schemas).
#[test]
fn distribution_local_path_chart_renders_with_helm_and_validates_on_rke2() {
    let Some(helm) = helm() else { return };
    let Some(kv) = require_tool("kubernetes-validate") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let packaged = tmp.path().join("packaged");
    let out = helm_command(&helm, &home)
        .arg("package")
        .arg(workspace_root().join("assets/charts/local-path-provisioner"))
        .arg("-d")
        .arg(&packaged)
        .output()
        .unwrap();
    assert!(out.status.success(), "helm package: {}", String::from_utf8_lossy(&out.stderr));
    let tgz = fs::read(packaged.join("local-path-provisioner-0.1.0.tgz")).unwrap();
    let entry = "charts/local-path-provisioner-0.1.0.tgz";
    let values =
        airlock_installer::render::platform::wiring::local_path_values(&[], entry, Path::new("/srv/data/rke2/storage"))
            .unwrap();
    let mut lp = chart("local-path-provisioner", "0.1.0", "kube-system", tgz, &values);
    lp.entry = entry.into();
    let input = rke2_input(vec![lp]);
    let layout = render(&input).unwrap();
    let manifests = helm_charts(&layout);
    assert_eq!(manifests.len(), 1, "one HelmChart: the provisioner");
    let spec = &manifests[0].1["spec"];
    assert_eq!(spec["targetNamespace"], "kube-system");
    let content = base64::engine::general_purpose::STANDARD.decode(spec["chartContent"].as_str().unwrap()).unwrap();
    fs::write(tmp.path().join("chart.tgz"), content).unwrap();
    fs::write(tmp.path().join("values.yaml"), spec["valuesContent"].as_str().unwrap()).unwrap();
    let out = helm_command(&helm, &home)
        .args(["template", "local-path-provisioner"])
        .arg(tmp.path().join("chart.tgz"))
        .arg("-f")
        .arg(tmp.path().join("values.yaml"))
        .args(["--namespace", "kube-system"])
        .output()
        .unwrap();
    let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    assert!(rendered.contains(r#""paths": ["/srv/data/rke2/storage"]"#), "the data directory's path: {rendered}");
    assert!(rendered.contains("image: \"docker.io/rancher/local-path-provisioner:v0.0.31\""), "{rendered}");
    assert!(rendered.contains("storageclass.kubernetes.io/is-default-class: \"true\""), "{rendered}");
    let docs = rendered.matches("\nkind: ").count();
    assert_eq!(docs, 8, "{rendered}");

    let file = tmp.path().join("rendered.yaml");
    fs::write(&file, &rendered).unwrap();
    let out = Command::new(&kv).args(["--strict", "-k", "1.31.0"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubernetes-validate: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().filter(|l| l.contains("passed for resource")).count(), docs, "{stdout}");
    // Control: a misspelled field of the Deployment fails the strict schema.
    fs::write(&file, rendered.replacen("serviceAccountName:", "serviceAccountNam:", 1)).unwrap();
    assert!(!Command::new(&kv).args(["--strict", "-k", "1.31.0"]).arg(&file).status().unwrap().success());
}

// ---------------------------------------------------------------------------------
// (d) the teardown scripts

#[test]
fn teardown_scripts_are_posix_sh() {
    let Some(sh) = require_tool("sh") else { return };
    // shellcheck is not among the packages tests/run.sh installs: used where present.
    let shellcheck = ["/usr/bin/shellcheck", "/usr/local/bin/shellcheck"].into_iter().find(|p| Path::new(p).exists());
    if shellcheck.is_none() {
        eprintln!("NOTE: shellcheck is not installed; the scripts are only checked with `sh -n`");
    }
    let layouts = [
        render(&input(Role::SingleServer, prebuilt_charts())).unwrap(),
        render(&input(Role::Agent { server: "s1".into() }, vec![])).unwrap(),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (layout, uninstall) in layouts.iter().zip(["k3s-uninstall.sh", "k3s-agent-uninstall.sh"]) {
        for name in ["k3s-killall.sh", uninstall] {
            let text = inline_text(layout, &Path::new("/usr/local/bin").join(name)).unwrap();
            assert!(text.starts_with("#!/bin/sh\n"));
            let file = tmp.path().join(name);
            fs::write(&file, &text).unwrap();
            let out = Command::new(&sh).arg("-n").arg(&file).output().unwrap();
            assert!(out.status.success(), "sh -n {name}: {}", String::from_utf8_lossy(&out.stderr));
            if let Some(sc) = shellcheck {
                let out = Command::new(sc).args(["-s", "sh", "-S", "warning"]).arg(&file).output().unwrap();
                assert!(out.status.success(), "shellcheck {name}:\n{}", String::from_utf8_lossy(&out.stdout));
            }
        }
    }
}
