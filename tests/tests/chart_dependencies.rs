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
use airlock_tests::registry::{Registry, RegistryOptions};
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

/// `airlock-bundler create` with the registry login in the environment (`--creds`).
fn create_with_login(spec: &Path, cache: &Path, out: &Path, host: &str, login: (&str, &str)) -> Output {
    airlock_tests::create_command(spec, out, &airlock_tests::demo_dir().join("keys/demo.key"))
        .env("HOME", spec.parent().unwrap())
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("AIRLOCK_REGISTRY_USERNAME", login.0)
        .env("AIRLOCK_REGISTRY_PASSWORD", login.1)
        .args(["--creds", host, "--cache-dir"])
        .arg(cache)
        .output()
        .expect("airlock-bundler runs")
}

/// A chart family as the big upstream families declare it: an umbrella chart `app`
/// with an `oci://` dependency by range (`db ~2.0`) and a `file://` one (`common`),
/// and `common` itself with an `oci://` dependency by range (`lib ^1.0.0`). Each has
/// the `Chart.lock` real `helm dependency update` wrote, and no charts/. The registry
/// is a real docker-registry with basic auth over TLS, filled with `helm push`; newer
/// versions in range were pushed after the locks were written. The bundle must hold
/// exactly the locked versions at both levels and render offline.
#[test]
fn oci_dependencies_with_ranges_are_vendored_at_the_versions_chart_lock_pins_at_every_level() {
    let Some(helm) = helm() else { return };
    if require_tool("zstd").is_none() {
        return;
    }
    let login = ("vendor", "chart-Pa55");
    let Some(reg) = Registry::start(RegistryOptions {
        login: Some((login.0.into(), login.1.into())),
        tls: true,
        ..Default::default()
    }) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("helm-home");
    let h = reg.host();
    let ca = reg.ca_file().unwrap();
    let ca_arg = ca.to_str().unwrap();
    let helm_ok = |args: &[&str], what: &str| ok(helm_command(&helm, &home).args(args).output().unwrap(), what);
    helm_ok(&["registry", "login", &h, "--username", login.0, "--password", login.1, "--ca-file", ca_arg], "login");
    let push = |name: &str, version: &str| {
        let d = chart(&t.path().join("pkg").join(version), name, version, "");
        let out = t.path().join("pkg");
        helm_ok(&["package", d.to_str().unwrap(), "-d", out.to_str().unwrap()], "helm package");
        let tgz = out.join(format!("{name}-{version}.tgz"));
        helm_ok(&["push", tgz.to_str().unwrap(), &format!("oci://{h}/charts"), "--ca-file", ca_arg], "helm push");
    };
    for (name, version) in [("lib", "1.0.0"), ("lib", "1.1.0"), ("lib", "2.0.0"), ("db", "2.0.0"), ("db", "3.0.0")] {
        push(name, version);
    }
    let family = t.path().join("family");
    let common = chart(
        &family,
        "common",
        "0.1.0",
        &format!("dependencies:\n  - name: lib\n    version: \"^1.0.0\"\n    repository: oci://{h}/charts\n"),
    );
    let app = chart(
        &family,
        "app",
        "0.1.0",
        &format!(
            "dependencies:\n  - name: db\n    version: \"~2.0\"\n    repository: oci://{h}/charts\n  - name: common\n    version: \">=0.1.0 <1.0.0\"\n    repository: file://../common\n"
        ),
    );
    for dir in [&common, &app] {
        helm_ok(&["dependency", "update", dir.to_str().unwrap(), "--ca-file", ca_arg], "helm dependency update");
        fs::remove_dir_all(dir.join("charts")).unwrap();
    }
    let lock = fs::read_to_string(app.join("Chart.lock")).unwrap();
    assert!(lock.contains("version: 2.0.0"), "helm locked db 2.0.0:\n{lock}");
    assert!(fs::read_to_string(common.join("Chart.lock")).unwrap().contains("version: 1.1.0"));
    // Newer versions in range appear after the locks were written.
    push("lib", "1.2.0");
    push("db", "2.0.5");

    fs::copy(&ca, family.join("ca.pem")).unwrap();
    let spec = family.join("bundle.yaml");
    fs::write(
        &spec,
        format!("name: family\nversion: '1.0'\nregistries:\n  - host: '{h}'\n    ca: ca.pem\ncomponents:\n  - name: app\n    charts:\n      - path: app\n"),
    )
    .unwrap();
    let out = t.path().join("family.airlock");
    let started = std::time::Instant::now();
    ok(create_with_login(&spec, &t.path().join("cache"), &out, &h, login), "airlock-bundler create");
    eprintln!("bundled the chart family in {:?}", started.elapsed());
    let bundle_lock = fs::read_to_string(family.join("bundle.lock")).unwrap();
    assert!(bundle_lock.contains("name: db") && bundle_lock.contains("version: 2.0.0"), "{bundle_lock}");
    assert!(bundle_lock.contains("name: lib") && bundle_lock.contains("version: 1.1.0"), "{bundle_lock}");

    // Render with nothing but helm: no registry, no repositories, no dependency build.
    drop(reg);
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
    for want in ["db-2.0.0", "common-0.1.0", "lib-1.1.0", "app-0.1.0"] {
        assert!(text.contains(&format!("chart: \"{want}\"")), "{want} is not what rendered:\n{text}");
    }
}

/// Without a `Chart.lock`, an `oci://` range resolves through the registry's tag list
/// (with the registry's login) to the highest matching version, as `helm dependency
/// update` resolves it; a range nothing matches names the tags there are.
#[test]
fn without_a_lock_an_oci_range_resolves_to_the_highest_tag_in_range() {
    let Some(helm) = helm() else { return };
    if require_tool("zstd").is_none() {
        return;
    }
    let login = ("vendor", "chart-Pa55");
    let Some(reg) = Registry::start(RegistryOptions {
        login: Some((login.0.into(), login.1.into())),
        tls: true,
        ..Default::default()
    }) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("helm-home");
    let h = reg.host();
    let ca = reg.ca_file().unwrap();
    let ca_arg = ca.to_str().unwrap();
    let login_args = ["registry", "login", &h, "--username", login.0, "--password", login.1, "--ca-file", ca_arg];
    ok(helm_command(&helm, &home).args(login_args).output().unwrap(), "helm registry login");
    for version in ["1.0.0", "1.4.1", "1.5.0-rc.1", "2.0.0"] {
        let d = chart(&t.path().join("pkg").join(version), "lib", version, "");
        let pkg = t.path().join("pkg");
        ok(helm_command(&helm, &home).arg("package").arg(&d).arg("-d").arg(&pkg).output().unwrap(), "helm package");
        let tgz = pkg.join(format!("lib-{version}.tgz"));
        ok(
            helm_command(&helm, &home)
                .arg("push")
                .arg(&tgz)
                .arg(format!("oci://{h}/charts"))
                .args(["--ca-file", ca_arg])
                .output()
                .unwrap(),
            "helm push",
        );
    }
    let build = |range: &str, name: &str| {
        let dir = t.path().join(name);
        chart(
            &dir,
            "app",
            "0.1.0",
            &format!("dependencies:\n  - name: lib\n    version: \"{range}\"\n    repository: oci://{h}/charts\n"),
        );
        fs::copy(&ca, dir.join("ca.pem")).unwrap();
        let spec = dir.join("bundle.yaml");
        fs::write(
            &spec,
            format!("name: x\nversion: '1.0'\nregistries:\n  - host: '{h}'\n    ca: ca.pem\ncomponents:\n  - name: app\n    charts:\n      - path: app\n"),
        )
        .unwrap();
        let out = dir.join("out").join("x.airlock");
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        (create_with_login(&spec, &dir.join("cache"), &out, &h, login), out, dir)
    };
    let (o, out, _) = build(">=1.0.0 <2.0.0", "in-range");
    ok(o, "airlock-bundler create");
    let tgz = t.path().join("app.tgz");
    fs::write(&tgz, bundle_entry(&out, "charts/app-0.1.0.tgz")).unwrap();
    let names = tgz_names(&tgz);
    assert!(names.iter().any(|n| n == "app/charts/lib-1.4.1.tgz"), "1.4.1 is the highest release in range: {names:?}");

    let (o, out, dir) = build("^3.0.0", "none");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{h}/charts/lib has no tag of lib matching `^3.0.0`; it has: 1.0.0, 1.4.1, 1.5.0-rc.1, 2.0.0"
        )),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!out.exists() && !dir.join("bundle.lock").exists(), "a failed build writes nothing");
}

/// A `Chart.lock` whose digest no longer matches `Chart.yaml` (a range edited after
/// `helm dependency update`) is refused, as real `helm dependency build` refuses it.
#[test]
fn a_chart_lock_out_of_sync_with_chart_yaml_is_refused_like_helm_does() {
    let Some(helm) = helm() else { return };
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("helm-home");
    chart(t.path(), "common", "0.3.0", "");
    let app = chart(
        t.path(),
        "app",
        "0.1.0",
        "dependencies:\n  - name: common\n    version: \"0.3.x\"\n    repository: file://../common\n    condition: common.enabled\n    import-values: [defaults]\n",
    );
    ok(helm_command(&helm, &home).args(["dependency", "update"]).arg(&app).output().unwrap(), "helm dependency update");
    fs::remove_dir_all(app.join("charts")).unwrap();
    fs::write(
        t.path().join("bundle.yaml"),
        "name: deps\nversion: '1.0'\ncomponents:\n  - name: app\n    charts:\n      - path: app\n",
    )
    .unwrap();
    // helm's own lock, untouched, is accepted.
    let out = t.path().join("out").join("x.airlock");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    ok(create_with_cache(&t.path().join("bundle.yaml"), &t.path().join("cache"), &out), "with helm's lock");
    let out = t.path().join("out2").join("x.airlock");
    fs::create_dir_all(out.parent().unwrap()).unwrap();

    let chart_yaml = fs::read_to_string(app.join("Chart.yaml")).unwrap();
    fs::write(app.join("Chart.yaml"), chart_yaml.replace("0.3.x", ">=0.3.0")).unwrap();
    let helm_says = helm_command(&helm, &home).args(["dependency", "build"]).arg(&app).output().unwrap();
    assert!(!helm_says.status.success());
    assert!(String::from_utf8_lossy(&helm_says.stderr).contains("out of sync"), "helm refuses it too");

    let o = create_with_cache(&t.path().join("bundle.yaml"), &t.path().join("cache"), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("/app (app): Chart.lock is out of sync with the dependencies in Chart.yaml"), "{err}");
    assert!(err.contains("hint:") && err.contains("helm dependency update"), "{err}");
    assert_eq!(fs::read_dir(out.parent().unwrap()).unwrap().count(), 0, "no bundle written");
}

/// The entry names of a `.tgz`.
fn tgz_names(path: &Path) -> Vec<String> {
    let f = fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let names: Vec<String> =
        ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
    names
}
