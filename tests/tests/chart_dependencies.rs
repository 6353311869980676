//! Chart dependencies vendored by `airlock-bundler create` (helm#11224): a local chart
//! whose `Chart.yaml` names a dependency in a Helm HTTP repository (served by a real
//! `python3 -m http.server` on 127.0.0.1, its index written by real `helm repo index`)
//! by version range, and one by a `file://` path. The bundled chart renders with real
//! helm 3.18 with no repository configured (HELM_REPOSITORY_CONFIG is an empty file,
//! and the repository server is stopped first), the range resolves to the highest
//! matching version, and `bundle.lock` pins the fetched dependency by digest.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_format::Sha256Digest;
use airlock_tests::create_with_cache;
use airlock_tests::http::StaticServer;
use airlock_tests::{helm, helm_command, require_tool};

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// A minimal chart directory: Chart.yaml, a ConfigMap template naming the chart and
/// its version, and `extra` appended to Chart.yaml.
fn chart(dir: &Path, name: &str, version: &str, extra: &str) -> PathBuf {
    let d = dir.join(name);
    fs::create_dir_all(d.join("templates")).unwrap();
    fs::write(d.join("Chart.yaml"), format!("apiVersion: v2\nname: {name}\nversion: {version}\n{extra}")).unwrap();
    fs::write(
        d.join("templates/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-{name}\ndata:\n  chart: \"{{{{ .Chart.Name }}}}-{{{{ .Chart.Version }}}}\"\n"
        ),
    )
    .unwrap();
    d
}

/// The bytes of `entry` in the bundle, read with stock zstd.
fn bundle_entry(bundle: &Path, entry: &str) -> Vec<u8> {
    let raw = ok(Command::new("zstd").arg("-dc").arg(bundle).output().unwrap(), "zstd -dc").stdout;
    let mut ar = tar::Archive::new(&raw[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(entry) {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            return v;
        }
    }
    panic!("{entry} is not in {}", bundle.display());
}

#[test]
fn dependencies_from_an_http_repository_and_file_paths_are_vendored_and_render_offline() {
    let Some(helm) = helm() else { return };
    if require_tool("python3").is_none() || require_tool("zstd").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("helm-home");
    let src = t.path().join("src");
    let www = t.path().join("www");
    fs::create_dir_all(&www).unwrap();
    // Three versions of `db` in the repository; the range 1.2.x must pick 1.2.5.
    for v in ["1.2.0", "1.2.5", "2.0.0"] {
        let d = chart(&src.join(v), "db", v, "");
        ok(helm_command(&helm, &home).arg("package").arg(&d).arg("-d").arg(&www).output().unwrap(), "helm package");
    }
    let server = StaticServer::start(&www);
    let repo = format!("http://127.0.0.1:{}", server.port);
    ok(
        helm_command(&helm, &home).args(["repo", "index"]).arg(&www).args(["--url", &repo]).output().unwrap(),
        "helm repo index",
    );

    let app_dir = t.path().join("app");
    chart(&app_dir, "common", "0.3.0", "");
    chart(
        &app_dir,
        "app",
        "0.1.0",
        &format!(
            "dependencies:\n  - name: db\n    version: \"1.2.x\"\n    repository: {repo}\n  - name: common\n    version: 0.3.0\n    repository: file://../common\n"
        ),
    );
    fs::write(
        t.path().join("bundle.yaml"),
        "name: deps\nversion: '1.0'\ncomponents:\n  - name: app\n    charts:\n      - path: app/app\n",
    )
    .unwrap();
    let cache = t.path().join("cache");
    let out = t.path().join("a.airlock");
    ok(create_with_cache(&t.path().join("bundle.yaml"), &cache, &out), "airlock-bundler create");

    // The lock pins the fetched dependency at the version the range resolved to.
    let lock = fs::read_to_string(t.path().join("bundle.lock")).unwrap();
    let served = fs::read(www.join("db-1.2.5.tgz")).unwrap();
    assert!(lock.contains("name: db") && lock.contains("version: 1.2.5"), "{lock}");
    assert!(lock.contains(&Sha256Digest::of(&served).to_string()), "pinned by digest:\n{lock}");

    // Render with helm and nothing else: the repository is gone, no repo config.
    drop(server);
    let tgz = t.path().join("app-0.1.0.tgz");
    fs::write(&tgz, bundle_entry(&out, "charts/app-0.1.0.tgz")).unwrap();
    let empty_repos = t.path().join("repositories.yaml");
    fs::write(&empty_repos, "").unwrap();
    let rendered = ok(
        helm_command(&helm, &home)
            .env("HELM_REPOSITORY_CONFIG", &empty_repos)
            .args(["template", "x"])
            .arg(&tgz)
            .output()
            .unwrap(),
        "helm template",
    );
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("chart: \"db-1.2.5\""), "the 1.2.x range resolved to 1.2.5:\n{text}");
    assert!(text.contains("chart: \"common-0.3.0\""), "the file:// dependency is vendored:\n{text}");
    assert!(text.contains("chart: \"app-0.1.0\""), "{text}");

    // Same inputs, same lock: same bytes, and the lock is used (a newer 1.2.9 in the
    // repository does not move the pin).
    let d = chart(&src.join("1.2.9"), "db", "1.2.9", "");
    let server = StaticServer::start_at(&www, repo_port(&repo));
    ok(helm_command(&helm, &home).arg("package").arg(&d).arg("-d").arg(&www).output().unwrap(), "helm package");
    ok(
        helm_command(&helm, &home).args(["repo", "index"]).arg(&www).args(["--url", &repo]).output().unwrap(),
        "helm repo index",
    );
    let again = t.path().join("b.airlock");
    ok(create_with_cache(&t.path().join("bundle.yaml"), &cache, &again), "second build");
    assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap(), "the locked dependency gives the same bundle");
    drop(server);
}

fn repo_port(repo: &str) -> u16 {
    repo.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_dependency_range_no_version_satisfies_names_the_chart_and_the_versions_there_are() {
    let Some(helm) = helm() else { return };
    if require_tool("python3").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("helm-home");
    let www = t.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let d = chart(&t.path().join("src"), "db", "1.0.0", "");
    ok(helm_command(&helm, &home).arg("package").arg(&d).arg("-d").arg(&www).output().unwrap(), "helm package");
    let server = StaticServer::start(&www);
    let repo = format!("http://127.0.0.1:{}", server.port);
    ok(
        helm_command(&helm, &home).args(["repo", "index"]).arg(&www).args(["--url", &repo]).output().unwrap(),
        "helm repo index",
    );
    chart(
        t.path(),
        "app",
        "0.1.0",
        &format!("dependencies:\n  - name: db\n    version: \"^2.0.0\"\n    repository: {repo}\n"),
    );
    fs::write(
        t.path().join("bundle.yaml"),
        "name: deps\nversion: '1.0'\ncomponents:\n  - name: app\n    charts:\n      - path: app\n",
    )
    .unwrap();
    let out = t.path().join("out").join("x.airlock");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = create_with_cache(&t.path().join("bundle.yaml"), &t.path().join("cache"), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("dependency db ^2.0.0") && err.contains("no version of db matching `^2.0.0`; it has: 1.0.0"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(fs::read_dir(out.parent().unwrap()).unwrap().count(), 0, "no bundle written");
    assert!(!t.path().join("bundle.lock").exists(), "a failed build writes no lock");
    let _ = server.port;
}
