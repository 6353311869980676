//! `airlock report` through the real binary, on demo installs into target roots: the
//! checklist statuses each site state should give (fresh, with a preflight override
//! and drift, after a failed upgrade that was rolled back, after an upgrade), the page
//! self-contained and free of every generated secret, the JSON signed so that stock
//! `minisign -V` verifies it and a changed byte fails `report --verify`; the page in
//! real headless Chromium, started as for a closed network: it renders the checklist,
//! makes no network request (Chromium's own net log) and prints to A4 pages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_installer::ops::upgrade;
use airlock_tests::{
    airlock_with_answers, build_demo_bundle, build_demo_variant, cargo_bin, demo_dir, is_root, require_tool,
};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn airlock(args: &[&str]) -> Output {
    Command::new(cargo_bin("airlock"))
        .args(args)
        .env_remove("SUDO_USER")
        .env("USER", "field-engineer")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn install(bundle: &Path, root: &Path, extra: &[&str]) {
    std::fs::create_dir_all(root).unwrap();
    let mut args = vec!["--yes"];
    args.extend_from_slice(extra);
    let o = airlock_with_answers("install", bundle, &demo_dir().join("answers.yaml"), root, &args);
    assert!(o.status.success(), "install: {}", text(&o));
}

/// `airlock report --root ROOT -o OUT/report.html`, which must exit 0 (no line
/// failed): the parsed JSON, the page.
fn report(root: &Path, out: &Path) -> (serde_json::Value, String) {
    report_exiting(root, out, 0)
}

/// As [`report`], exiting with `code`: 11 (needs attention, as `airlock status`) when
/// a line failed. The page and the signed JSON are written either way.
fn report_exiting(root: &Path, out: &Path, code: i32) -> (serde_json::Value, String) {
    std::fs::create_dir_all(out).unwrap();
    let html = out.join("report.html");
    let o = airlock(&["report", "--root", root.to_str().unwrap(), "-o", html.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(code), "report: {}", text(&o));
    let json = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    (json, std::fs::read_to_string(html).unwrap())
}

/// The record with what differs from run to run replaced by placeholders: the target
/// root, times, run ids, digests and fingerprints, certificate days, step counts (which
/// follow the demo's content, pinned by the demo install's own golden file).
fn normalised(r: &serde_json::Value, root: &Path) -> serde_json::Value {
    let subs: Vec<(regex::Regex, &str)> = [
        (r"\d{8}T\d{6}Z-\d+-\d+", "<run>"),
        (r"\d{8}T\d{6}Z", "<stamp>"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "<time>"),
        (r"([0-9A-F]{2}:){31}[0-9A-F]{2}", "<fingerprint>"),
        (r"\b[0-9a-f]{64}\b", "<sha256>"),
        (r"\b[0-9a-f]{12}\b", "<id>"),
        (r"\(\d+ days\)", "(<n> days)"),
        (r"\d+ steps applied, \d+ already done", "<n> steps applied, <n> already done"),
    ]
    .iter()
    .map(|(re, to)| (regex::Regex::new(re).unwrap(), *to))
    .collect();
    let root = root.display().to_string();
    fn walk(v: &mut serde_json::Value, key: &str, f: &dyn Fn(&str) -> String) {
        match v {
            serde_json::Value::String(s) => *s = f(s),
            serde_json::Value::Number(_) if key == "days_left" => *v = 0.into(),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, key, f)),
            serde_json::Value::Object(o) => o.iter_mut().for_each(|(k, x)| walk(x, k, f)),
            _ => {}
        }
    }
    let mut v = r.clone();
    walk(&mut v, "", &|s: &str| {
        let mut s = s.replace(&root, "<root>");
        for (re, to) in &subs {
            s = re.replace_all(&s, *to).into_owned();
        }
        s
    });
    v
}

/// Compares the normalised record with `tests/golden/report/NAME.json`;
/// `AIRLOCK_UPDATE_GOLDEN=1` writes it instead (review the diff).
fn golden(name: &str, r: &serde_json::Value, root: &Path) {
    let path = airlock_tests::workspace_root().join(format!("tests/golden/report/{name}.json"));
    let mut got = serde_json::to_string_pretty(&normalised(r, root)).unwrap();
    got.push('\n');
    if std::env::var("AIRLOCK_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (AIRLOCK_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        want == got,
        "{} differs from this report (AIRLOCK_UPDATE_GOLDEN=1 rewrites it; review the diff):\n{got}",
        path.display()
    );
}

/// Checklist id → status.
fn statuses(r: &serde_json::Value) -> BTreeMap<String, String> {
    r["checklist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["id"].as_str().unwrap().to_string(), l["status"].as_str().unwrap().to_string()))
        .collect()
}

fn evidence(r: &serde_json::Value, id: &str) -> String {
    let l = r["checklist"].as_array().unwrap().iter().find(|l| l["id"] == id).unwrap();
    l["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect::<Vec<_>>().join("\n")
}

/// The statuses a demo install in a target root gives: the bundle verified, MinIO
/// documented, everything else without evidence (nothing runs under --root).
fn fresh() -> BTreeMap<String, String> {
    [
        ("distribution", "not-verified"),
        ("bundle", "verified"),
        ("minio", "verified"),
        ("ldap", "not-verified"),
        ("tls", "not-verified"),
        ("backup", "not-verified"),
        ("tenants", "not-verified"),
        ("offline-update", "not-verified"),
        ("monitoring", "not-verified"),
        ("network-policies", "not-verified"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn with(mut base: BTreeMap<String, String>, changes: &[(&str, &str)]) -> BTreeMap<String, String> {
    for (k, v) in changes {
        base.insert(k.to_string(), v.to_string());
    }
    base
}

#[test]
fn report_of_a_fresh_install_is_signed_for_stock_minisign_self_contained_and_free_of_secrets() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    install(&b, &root, &[]);
    // The install made the site's report key: 0600, its public half beside.
    let key = root.join("var/lib/airlock/secrets/report-signing.key");
    let pubkey = root.join("var/lib/airlock/report-signing.pub");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let installed_pubkey = std::fs::read(&pubkey).unwrap();
    let out = d.path().join("out");
    let (r, html) = report(&root, &out);
    assert_eq!(std::fs::read(&pubkey).unwrap(), installed_pubkey, "the report signs with the install's key");

    assert_eq!(statuses(&r), fresh(), "{r:#}");
    golden("fresh-install", &r, &root);
    assert_eq!(r["operator"], "field-engineer");
    assert_eq!(r["release"]["bundle"], "airlock-demo");
    let signer = r["release"]["signer"].as_str().unwrap();
    let demo_key = std::fs::read_to_string(demo_dir().join("keys/demo.pub")).unwrap();
    let demo_id = airlock_format::minisign::PublicKey::parse(&demo_key).unwrap().key_id_hex();
    assert_eq!(signer, demo_id);
    assert!(evidence(&r, "bundle").contains(r["release"]["manifest_sha256"].as_str().unwrap()));
    // The PKI with fingerprints and expiry, as `airlock pki status` has them.
    let certs = r["certificates"].as_array().unwrap();
    assert!(certs.iter().any(|c| c["name"] == "ca"), "{certs:#?}");
    assert!(certs.iter().all(|c| c["sha256"].as_str().unwrap().len() == 95 && c["days_left"].as_i64().unwrap() > 0));
    assert!(evidence(&r, "tls").contains(certs[0]["sha256"].as_str().unwrap()));
    // Where the credentials are, 0600; never what.
    let files = r["credential_files"].as_array().unwrap();
    assert!(files.iter().any(|c| c["path"] == "/var/lib/airlock/secrets/minio-root-password" && c["mode"] == "0600"));
    assert!(r["drift"].as_array().unwrap().is_empty() && r["overrides"].as_array().unwrap().is_empty());
    assert!(r.get("last_upgrade").is_none());
    // This node and what runs on it, with versions.
    assert_eq!((r["node"]["name"].as_str(), r["node"]["role"].as_str()), (Some("demo-node"), Some("server")), "{r:#}");
    let components = r["components"].as_array().unwrap();
    assert!(components.iter().any(|c| c["name"] == "k3s" && c["version"] == "v1.31.4+k3s1"), "{components:#?}");
    assert!(components.iter().any(|c| c["name"] == "keycloak" && c["kind"] == "chart"), "{components:#?}");
    assert!(html.contains("demo-node") && html.contains("v1.31.4+k3s1"));

    // No generated secret, no secret answer, not the signing key, anywhere in the output.
    let mut secrets: Vec<String> = std::fs::read_dir(root.join("var/lib/airlock/secrets"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .flat_map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| l.len() >= 8 && !l.starts_with("untrusted comment"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    secrets.push("demo-bind-password-not-a-real-one".into());
    assert!(secrets.len() >= 8, "{secrets:?}");
    let json_text = std::fs::read_to_string(out.join("report.json")).unwrap();
    for s in &secrets {
        assert!(
            !html.contains(s.as_str()) && !json_text.contains(s.as_str()),
            "a secret is in the report: {}…",
            &s[..4]
        );
    }

    // Self-contained: nothing fetched when it is opened; the checklist starts an A4 page.
    for outside in ["<script", "<link", "<img", "src=", "url(", "@import", "href="] {
        assert!(!html.contains(outside), "the page refers to something outside it: {outside}");
    }
    assert!(html.contains("<table id=\"checklist\">") && html.contains("@page { size: A4"));
    assert!(html.contains("section.checklist { break-before: page; }"));
    for l in r["checklist"].as_array().unwrap() {
        assert!(html.contains(l["item"].as_str().unwrap()), "{}", l["item"]);
    }

    // Stock minisign verifies the JSON with the site key; so does `report --verify`.
    let json = out.join("report.json");
    if let Some(minisign) = require_tool("minisign") {
        let o = Command::new(minisign).args(["-V", "-m"]).arg(&json).arg("-p").arg(&pubkey).output().unwrap();
        assert!(o.status.success(), "minisign -V: {}", text(&o));
        assert!(text(&o).contains("airlock readiness report: airlock-demo 1.0.0"), "{}", text(&o));
    }
    let verify = |extra: &[&str]| {
        let mut args = vec!["report", "--verify", json.to_str().unwrap()];
        args.extend_from_slice(extra);
        airlock(&args)
    };
    let ok = verify(&["--root", root.to_str().unwrap()]);
    assert!(ok.status.success() && text(&ok).contains(": valid"), "{}", text(&ok));
    // An auditor's machine has only the public key.
    assert!(verify(&["--pubkey", pubkey.to_str().unwrap()]).status.success());

    // One changed byte fails it (exit 3, a signature error), naming the file.
    let mut bytes = std::fs::read(&json).unwrap();
    let at = json_text.find("\"verified\"").unwrap() + 1;
    bytes[at] = b'V';
    std::fs::write(&json, &bytes).unwrap();
    let bad = verify(&["--root", root.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(3), "{}", text(&bad));
    assert!(text(&bad).contains("does not match its signature") && text(&bad).contains("hint:"), "{}", text(&bad));

    // A second report signs with the same key.
    let (again, _) = report(&root, &d.path().join("again"));
    assert_eq!(statuses(&again), fresh());
    let o = airlock(&[
        "report",
        "--verify",
        d.path().join("again/report.json").to_str().unwrap(),
        "--pubkey",
        pubkey.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn report_names_a_journaled_override_and_drift_fails_the_installation_line() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    // Something of another install is there: preflight fails, the operator overrides it.
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::write(root.join("usr/local/bin/rke2"), "leftover\n").unwrap();
    install(&b, &root, &["--override", "existing-install"]);
    let (r, html) = report(&root, &d.path().join("override"));
    assert_eq!(statuses(&r), fresh(), "an override alone changes no status: {r:#}");
    golden("install-with-override", &r, &root);
    let o = &r["overrides"][0];
    assert_eq!(o["check"], "existing-install", "{r:#}");
    assert!(evidence(&r, "distribution").contains("preflight check `existing-install` failed and was overridden"));
    assert!(html.contains("existing-install"));

    // Someone edits the unit afterwards: drift, and the installation line fails.
    let unit = root.join("etc/systemd/system/k3s.service");
    let mut text_unit = std::fs::read_to_string(&unit).unwrap();
    text_unit.push_str("# edited by hand\n");
    std::fs::write(&unit, text_unit).unwrap();
    let (r, html) = report_exiting(&root, &d.path().join("drift"), 11);
    assert_eq!(statuses(&r), with(fresh(), &[("distribution", "failed")]), "{r:#}");
    golden("drift", &r, &root);
    assert_eq!(r["drift"][0]["path"], "/etc/systemd/system/k3s.service");
    assert!(html.contains("/etc/systemd/system/k3s.service") && html.contains("class=\"bad\""));
}

#[test]
fn report_after_a_rolled_back_upgrade_then_one_that_went_through_keeps_the_whole_history() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("v1")).unwrap();
    let v1 = build_demo_bundle(&d.path().join("v1"), &[]);
    let spec = std::fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap();
    std::fs::create_dir_all(d.path().join("v2")).unwrap();
    let v2 = build_demo_variant(&spec.replace("version: 1.0.0\n", "version: 1.1.0\n"), &d.path().join("v2"), &[]);
    let upgrade_to = |root: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(cargo_bin("airlock"));
        c.arg("upgrade")
            .arg(&v2)
            .arg("--pubkey")
            .arg(demo_dir().join("keys/demo.pub"))
            .arg("--root")
            .arg(root)
            .arg("--yes")
            .args(extra)
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    // Crashed once the new release was in place, then rolled back.
    let rolled: PathBuf = d.path().join("rolled-back");
    install(&v1, &rolled, &[]);
    let crashed = upgrade_to(&rolled, &[], &[(upgrade::CRASH_AFTER_PHASE_ENV, "flipped")]);
    assert!(!crashed.status.success(), "{}", text(&crashed));
    let back = upgrade_to(&rolled, &["--rollback"], &[]);
    assert!(back.status.success(), "{}", text(&back));
    let (r, html) = report(&rolled, &d.path().join("out-rolled"));
    assert_eq!(statuses(&r), fresh(), "{r:#}");
    golden("failed-upgrade-rolled-back", &r, &rolled);
    assert_eq!(r["last_upgrade"]["outcome"], "rolled-back", "{r:#}");
    assert_eq!(r["release"]["version"], "1.0.0");
    assert!(evidence(&r, "offline-update").contains("upgrade 1.0.0 → 1.1.0: rolled-back"), "{r:#}");
    let backup = r["last_upgrade"]["backup"].as_str().unwrap();
    assert!(evidence(&r, "backup").contains(backup) && html.contains("rolled-back"), "{r:#}");

    // The same site upgraded again, this time through: the offline update process is
    // shown to work, and the report keeps the whole history, the rollback included.
    let o = upgrade_to(&rolled, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let (r, html) = report(&rolled, &d.path().join("out-upgraded"));
    assert_eq!(statuses(&r), with(fresh(), &[("offline-update", "verified")]), "{r:#}");
    assert_eq!(r["release"]["version"], "1.1.0");
    let history: Vec<(&str, &str)> = r["upgrades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["to_version"].as_str().unwrap(), u["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(history, [("1.1.0", "rolled-back"), ("1.1.0", "succeeded")], "{r:#}");
    let ev = evidence(&r, "offline-update");
    assert!(ev.contains("2 upgrade(s) recorded") && ev.contains(": rolled-back") && ev.contains(": succeeded"), "{ev}");
    assert!(html.contains("<h2>Upgrades</h2>") && html.matches("<td>1.1.0</td>").count() == 2, "{html}");
}

/// Runs Debian's headless Chromium on `page` with `args`, as on a closed network: its
/// own background services off, a throwaway profile, and (as root) in a network
/// namespace of its own. Returns stdout and the page's own network requests from
/// Chromium's net log: the requests whose isolation key is the `file://` site of the
/// page (Chromium's updater and the like are "not an origin").
fn chromium(chromium: &Path, work: &Path, page: &Path, args: &[String]) -> (String, Vec<String>) {
    let profile = tempfile::tempdir_in(work).unwrap();
    let netlog = profile.path().join("net.json");
    let mut c = if is_root() {
        let mut c = Command::new("unshare");
        c.arg("--net").arg(chromium).arg("--no-sandbox");
        c
    } else {
        Command::new(chromium)
    };
    c.args([
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--log-net-log={}", netlog.display()))
    .args(args)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null());
    let o = c.output().unwrap();
    assert!(o.status.success(), "chromium: {}", text(&o));
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(&netlog).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_i64().unwrap();
    let requests = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_i64() == Some(start_job))
        .filter(|e| {
            e["params"]["network_isolation_key"].as_str().is_some_and(|k| k.starts_with("file://"))
                || e["params"]["initiator"].as_str().is_some_and(|i| i != "not an origin")
        })
        .map(|e| e["params"]["url"].as_str().unwrap_or_default().to_string())
        .collect();
    (String::from_utf8_lossy(&o.stdout).into_owned(), requests)
}

#[test]
fn report_page_renders_in_headless_chromium_fetching_nothing_and_prints_to_a4_pages() {
    let Some(browser) = require_tool("chromium") else { return };
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    install(&b, &root, &[]);
    let out = d.path().join("out");
    let (r, _) = report(&root, &out);
    let page = out.join("report.html");

    // The net log sees a page's own requests: a page with an outside image and style
    // sheet shows both (so an empty list below means something).
    let control = d.path().join("control.html");
    std::fs::write(&control, "<!DOCTYPE html><p>x</p><img src=\"http://192.0.2.1/x.png\"><link rel=\"stylesheet\" href=\"https://fonts.example.test/a.css\">").unwrap();
    let (_, seen) =
        chromium(&browser, d.path(), &control, &[format!("--screenshot={}", d.path().join("control.png").display())]);
    assert!(
        seen.iter().any(|u| u.contains("192.0.2.1")) && seen.iter().any(|u| u.contains("fonts.example.test")),
        "{seen:?}"
    );

    // The rendered DOM has the checklist, one row per line with its status.
    let (dom, requests) = chromium(&browser, d.path(), &page, &["--dump-dom".into()]);
    assert!(requests.is_empty(), "the page made network requests: {requests:?}");
    assert!(dom.contains("<table id=\"checklist\">"), "{dom}");
    let rows = dom.matches("<tr class=\"").count();
    assert_eq!(rows, r["checklist"].as_array().unwrap().len(), "{dom}");
    assert!(
        dom.contains("<td class=\"status\">verified</td>") && dom.contains("<td class=\"status\">not verified</td>")
    );

    // A screenshot tall enough for the whole page, taken without a request either: in
    // it, the checklist's status column, one cell per line in the colour of its status
    // (green for verified, grey for not verified), top to bottom in checklist order.
    let png = d.path().join("report.png");
    let (_, requests) = chromium(
        &browser,
        d.path(),
        &page,
        &[format!("--screenshot={}", png.display()), "--window-size=1200,6000".into()],
    );
    assert!(requests.is_empty(), "{requests:?}");
    let shot = Png::decode(&std::fs::read(&png).unwrap());
    assert_eq!((shot.width, shot.height), (1200, 6000));
    const VERIFIED: [u8; 3] = [0xd8, 0xf0, 0xd8];
    const NOT_VERIFIED: [u8; 3] = [0xf3, 0xf3, 0xf3];
    let green: Vec<(u32, u32)> = shot.pixels().filter(|(_, _, c)| *c == VERIFIED).map(|(x, y, _)| (x, y)).collect();
    assert!(green.len() > 500, "no verified status cell in the screenshot ({} pixels)", green.len());
    // Inside the status cells' right padding, where no glyph is drawn.
    let x = green.iter().map(|(x, _)| *x).max().unwrap() - 2;
    let cells = shot.runs_down(x, &[VERIFIED, NOT_VERIFIED], 8);
    let want: Vec<[u8; 3]> = r["checklist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| if l["status"] == "verified" { VERIFIED } else { NOT_VERIFIED })
        .collect();
    assert_eq!(cells, want, "the status column at x={x} is not the checklist's");

    // Printed: A4 from the page's own @page rule, the overview first and the checklist
    // starting a page of its own, so never fewer than two pages.
    let pdf = d.path().join("report.pdf");
    let (_, requests) = chromium(
        &browser,
        d.path(),
        &page,
        &[format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer".into()],
    );
    assert!(requests.is_empty(), "{requests:?}");
    let bytes = std::fs::read(&pdf).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let pages = text.match_indices("/Type /Page").filter(|(i, _)| !text[i + 11..].starts_with('s')).count();
    assert!(pages >= 2, "{pages} pages");
    // A4 is 595 x 842 points.
    let media = text.split("/MediaBox [0 0 ").nth(1).expect("a MediaBox");
    let size: Vec<f64> = media.split(']').next().unwrap().split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!((size[0].round(), size[1].round()), (595.0, 842.0), "not A4: {size:?}");
}

/// A decoded PNG as Chromium writes screenshots (8-bit RGB or RGBA, not interlaced).
struct Png {
    width: u32,
    height: u32,
    /// Bytes per pixel: 3 or 4.
    bpp: usize,
    data: Vec<u8>,
}

impl Png {
    fn decode(bytes: &[u8]) -> Png {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let (mut at, mut idat) = (8, Vec::new());
        let (mut width, mut height, mut bpp) = (0, 0, 0);
        while at + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind = &bytes[at + 4..at + 8];
            let body = &bytes[at + 8..at + 8 + len];
            match kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(body[0..4].try_into().unwrap());
                    height = u32::from_be_bytes(body[4..8].try_into().unwrap());
                    assert_eq!((body[8], body[12]), (8, 0), "8-bit, not interlaced");
                    bpp = match body[9] {
                        2 => 3,
                        6 => 4,
                        t => panic!("PNG colour type {t}"),
                    };
                }
                b"IDAT" => idat.extend_from_slice(body),
                _ => {}
            }
            at += 12 + len;
        }
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(idat.as_slice()), &mut raw).unwrap();
        // Undo each row's filter (PNG spec, section 9).
        let stride = width as usize * bpp;
        let mut data = vec![0u8; stride * height as usize];
        for y in 0..height as usize {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for i in 0..stride {
                let a = if i >= bpp { data[y * stride + i - bpp] as i32 } else { 0 };
                let b = if y > 0 { data[(y - 1) * stride + i] as i32 } else { 0 };
                let c = if y > 0 && i >= bpp { data[(y - 1) * stride + i - bpp] as i32 } else { 0 };
                let predicted = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => {
                        let p = a + b - c;
                        let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                        if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        }
                    }
                    f => panic!("PNG filter {f}"),
                };
                data[y * stride + i] = (line[i] as i32 + predicted) as u8;
            }
        }
        Png { width, height, bpp, data }
    }

    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * self.bpp;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    fn pixels(&self) -> impl Iterator<Item = (u32, u32, [u8; 3])> + '_ {
        (0..self.height).flat_map(move |y| (0..self.width).map(move |x| (x, y, self.at(x, y))))
    }

    /// Going down column `x`: each run of at least `min` pixels of one of `colours`, as
    /// that colour (a table cell filled with it; borders and gaps split the runs).
    fn runs_down(&self, x: u32, colours: &[[u8; 3]], min: u32) -> Vec<[u8; 3]> {
        let mut out = Vec::new();
        let (mut current, mut len) = (None, 0);
        for y in 0..=self.height {
            let c = (y < self.height).then(|| self.at(x, y)).filter(|c| colours.contains(c));
            if c == current {
                len += 1;
                continue;
            }
            if let Some(done) = current {
                if len >= min {
                    out.push(done);
                }
            }
            (current, len) = (c, 1);
        }
        out
    }
}
