//! Vendor key rotation and revocation through the real binaries, with keys made by stock
//! `minisign -G` and statements checked (and, where it matters, signed) by stock
//! `minisign`: a bundle signed by the current key introduces the next one and the site
//! trusts it from then on; a revoked key is refused even when passed with `--pubkey`; a
//! statement from a key the site does not trust changes nothing; and a bundle cannot take
//! its own signing key out of trust.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_format::key_statement::KeyStatement;
use airlock_format::minisign::PublicKey;
use airlock_tests::{cargo_bin, create_command, demo_dir, require_tool};

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("command runs")
}

/// A key pair made by stock `minisign -G` (unencrypted, `-W`, so no passphrase).
struct Key {
    public: PathBuf,
    secret: PathBuf,
    id: String,
}

fn minisign_key(minisign: &Path, dir: &Path, name: &str) -> Key {
    let (public, secret) = (dir.join(format!("{name}.pub")), dir.join(format!("{name}.key")));
    let o = run(Command::new(minisign).args(["-G", "-W", "-p"]).arg(&public).arg("-s").arg(&secret));
    assert!(o.status.success(), "minisign -G: {}", show(&o));
    let id = PublicKey::from_file(&public).unwrap().key_id_hex();
    Key { public, secret, id }
}

/// The demo spec (examples/demo/bundle.yaml) as `version`, with every path made
/// absolute so the copy can live in a temp dir, and `key_statements` (YAML) added.
fn spec(dir: &Path, version: &str, key_statements: &str) -> PathBuf {
    let demo = demo_dir();
    let abs = |v: &mut serde_yaml::Value| {
        let s = v.as_str().unwrap().to_string();
        *v = serde_yaml::Value::String(demo.join(s).display().to_string());
    };
    let mut y: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(demo.join("bundle.yaml")).unwrap()).unwrap();
    y["version"] = version.into();
    abs(&mut y["distribution"]["checksums"]);
    for a in y["distribution"]["artifacts"].as_sequence_mut().unwrap() {
        abs(&mut a["path"]);
    }
    for c in y["components"].as_sequence_mut().unwrap() {
        for i in c.get_mut("images").and_then(|v| v.as_sequence_mut()).into_iter().flatten() {
            // `oci:DIR:REF` / `docker-archive:FILE:REF`: the path follows the transport.
            let from = i["from"].as_str().unwrap().to_string();
            let (transport, rest) = from.split_once(':').unwrap();
            i["from"] = format!("{transport}:{}", demo.join(rest).display()).into();
        }
        for key in ["charts", "files"] {
            for x in c.get_mut(key).and_then(|v| v.as_sequence_mut()).into_iter().flatten() {
                abs(&mut x["path"]);
            }
        }
    }
    for p in y["profiles"].as_sequence_mut().unwrap() {
        abs(p);
    }
    let mut text = serde_yaml::to_string(&y).unwrap();
    text.push_str(key_statements);
    let path = dir.join(format!("bundle-{version}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn build(spec: &Path, key: &Key, out: &Path) -> Output {
    run(&mut create_command(spec, out, &key.secret))
}

fn bundle(dir: &Path, version: &str, key: &Key, key_statements: &str) -> PathBuf {
    let out = dir.join(format!("demo-{version}.airlock"));
    let o = build(&spec(dir, version, key_statements), key, &out);
    assert!(o.status.success(), "airlock-bundler create {version}: {}", show(&o));
    out
}

/// `airlock install` into `root`, trusting `pubkey` or (None) the site's keys only.
fn install(bundle: &Path, root: &Path, pubkey: Option<&Path>) -> Output {
    let mut c = Command::new(cargo_bin("airlock"));
    c.arg("install").arg(bundle);
    if let Some(p) = pubkey {
        c.arg("--pubkey").arg(p);
    }
    run(c.arg("--answers").arg(demo_dir().join("answers.yaml")).arg("--root").arg(root).arg("--yes"))
}

fn site_key(root: &Path, id: &str) -> PathBuf {
    root.join(format!("etc/airlock/keys/{id}.pub"))
}

fn revoked(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("etc/airlock/keys/revoked.json")).unwrap()).unwrap()
}

#[test]
fn an_introduced_key_is_trusted_from_then_on_and_a_revoked_key_is_refused_even_with_pubkey() {
    let Some(minisign) = require_tool("minisign") else { return };
    let d = tempfile::tempdir().unwrap();
    let (k1, k2) = (minisign_key(&minisign, d.path(), "key1"), minisign_key(&minisign, d.path(), "key2"));
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();

    // A, signed by key1, introduces key2.
    let a = bundle(
        d.path(),
        "1.0.0",
        &k1,
        &format!("key_statements:\n  - sequence: 1\n    action: introduce\n    key: {}\n", k2.public.display()),
    );
    // B and D carry no statements; B is signed by key2, D by key1.
    let b = bundle(d.path(), "1.0.1", &k2, "");

    // Control: before A, nothing trusts key2, so B is refused on a site without --pubkey.
    let o = install(&b, &root, None);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));

    // The statement in A checks with stock minisign against key1, not key2.
    let x = d.path().join("a-extracted");
    let o = run(Command::new(cargo_bin("airlock"))
        .arg("extract")
        .arg(&a)
        .arg("--pubkey")
        .arg(&k1.public)
        .arg("-d")
        .arg(&x));
    assert!(o.status.success(), "{}", show(&o));
    let stmt = x.join(format!("keys/statements/0001-introduce-{}.json", k2.id));
    let check = |p: &Path| run(Command::new(&minisign).arg("-V").arg("-m").arg(&stmt).arg("-p").arg(p));
    let o = check(&k1.public);
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("introduce {}", k2.id)), "{}", show(&o));
    assert!(!check(&k2.public).status.success());

    let o = install(&a, &root, Some(&k1.public));
    assert!(o.status.success(), "install A: {}", show(&o));
    let k2_file = site_key(&root, &k2.id);
    assert_eq!(PublicKey::from_file(&k2_file).unwrap().key_id_hex(), k2.id);
    assert_eq!(std::fs::metadata(&k2_file).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(revoked(&root)["sequence"], 1);
    let journal = std::fs::read_to_string(root.join("var/lib/airlock/journal.json")).unwrap();
    assert!(journal.contains("keys/statements"), "the key step is journaled: {journal}");

    // B, signed by key2, now installs with the site's keys alone.
    let o = install(&b, &root, None);
    assert!(o.status.success(), "install B with site keys only: {}", show(&o));

    // C, signed by key2, revokes key1.
    let c = bundle(
        d.path(),
        "1.0.2",
        &k2,
        &format!(
            "key_statements:\n  - sequence: 2\n    action: revoke\n    key: {}\n    reason: key1 leaked\n",
            k1.public.display()
        ),
    );
    let o = install(&c, &root, None);
    assert!(o.status.success(), "install C: {}", show(&o));
    let list = revoked(&root);
    assert_eq!(list["sequence"], 2);
    assert_eq!(list["keys"][0]["key_id"], k1.id.as_str());
    assert_eq!(list["keys"][0]["action"], "revoke");

    // D, signed by key1: refused with exit 3, also when key1 is passed explicitly.
    let dd = bundle(d.path(), "1.0.3", &k1, "");
    for pubkey in [Some(k1.public.as_path()), None] {
        let o = install(&dd, &root, pubkey);
        assert_eq!(o.status.code(), Some(3), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&k1.id) && err.contains("hint:"), "{err}");
        assert!(err.contains("revoked") && err.contains("key1 leaked"), "{err}");
    }
    // Replaying A (which introduced key2 and is signed by the revoked key1) is refused too.
    assert_eq!(install(&a, &root, Some(&k1.public)).status.code(), Some(3));
    // The site still takes key2's bundles.
    assert!(install(&b, &root, None).status.success());
}

/// A statement signed with stock `minisign -S` by `signer`, introducing `key`.
fn stock_signed_statement(minisign: &Path, dir: &Path, name: &str, signer: &Key, key: &Key) -> PathBuf {
    let k = PublicKey::from_file(&key.public).unwrap();
    let s = KeyStatement::introduce(1, "2026-11-22T00:00:00Z".into(), &k, None);
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, s.to_bytes()).unwrap();
    let o = run(Command::new(minisign)
        .arg("-S")
        .arg("-s")
        .arg(&signer.secret)
        .arg("-m")
        .arg(&path)
        .arg("-t")
        .arg(s.trusted_comment()));
    assert!(o.status.success(), "minisign -S: {}", show(&o));
    path
}

#[test]
fn a_statement_signed_by_an_untrusted_key_changes_no_trust_and_the_install_is_refused() {
    let Some(minisign) = require_tool("minisign") else { return };
    let d = tempfile::tempdir().unwrap();
    let (k1, k2, kx) = (
        minisign_key(&minisign, d.path(), "key1"),
        minisign_key(&minisign, d.path(), "key2"),
        minisign_key(&minisign, d.path(), "stranger"),
    );
    let carried = |stmt: &Path| format!("key_statements:\n  - statement: {}\n", stmt.display());

    // Signed by a stranger: the bundle (signed by trusted key1) is refused before any change.
    let forged = stock_signed_statement(&minisign, d.path(), "forged", &kx, &k2);
    let b = bundle(d.path(), "1.0.0", &k1, &carried(&forged));
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let o = install(&b, &root, Some(&k1.public));
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&kx.id) && err.contains("hint:"), "{err}");
    assert!(!root.join("etc/airlock/keys").exists(), "trust changed");
    assert!(!root.join("etc/rancher").exists() && !root.join("usr").exists(), "the install went ahead");

    // Control: the same statement signed (with stock minisign) by key1 is accepted.
    let genuine = stock_signed_statement(&minisign, d.path(), "genuine", &k1, &k2);
    let b = bundle(d.path(), "1.0.1", &k1, &carried(&genuine));
    let o = install(&b, &root, Some(&k1.public));
    assert!(o.status.success(), "{}", show(&o));
    assert!(site_key(&root, &k2.id).is_file());
}

#[test]
fn the_bundler_refuses_a_bundle_that_revokes_or_retires_its_own_signing_key() {
    let Some(minisign) = require_tool("minisign") else { return };
    let d = tempfile::tempdir().unwrap();
    let k1 = minisign_key(&minisign, d.path(), "key1");
    for action in ["revoke", "retire"] {
        let s = spec(
            d.path(),
            "1.0.0",
            &format!("key_statements:\n  - sequence: 1\n    action: {action}\n    key_id: {}\n", k1.id.to_lowercase()),
        );
        let out = d.path().join(format!("{action}.airlock"));
        let o = build(&s, &k1, &out);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("key_statements[0]") && err.contains(&k1.id) && err.contains("hint:"), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn the_key_step_is_planned_and_an_install_crashed_around_it_resumes_to_the_same_trust() {
    let Some(minisign) = require_tool("minisign") else { return };
    let d = tempfile::tempdir().unwrap();
    let (k1, k2) = (minisign_key(&minisign, d.path(), "key1"), minisign_key(&minisign, d.path(), "key2"));
    let a = bundle(
        d.path(),
        "1.0.0",
        &k1,
        &format!("key_statements:\n  - sequence: 1\n    action: introduce\n    key: {}\n", k2.public.display()),
    );
    // `inspect` lists the statement from the manifest.
    let o = run(Command::new(cargo_bin("airlock")).arg("inspect").arg(&a));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("#1 introduce {}", k2.id)), "{}", show(&o));

    let fresh = d.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let mut dry = Command::new(cargo_bin("airlock"));
    dry.arg("install").arg(&a).arg("--pubkey").arg(&k1.public).arg("--answers").arg(demo_dir().join("answers.yaml"));
    let o = run(dry.arg("--root").arg(&fresh).args(["--dry-run", "--output", "json"]));
    assert!(o.status.success(), "{}", show(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = plan["plan"]["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    assert_eq!(last["id"], "keys/statements");
    assert!(last["description"].as_str().unwrap().contains(&format!("#1 introduce {}", k2.id)), "{last}");
    assert!(!fresh.join("etc/airlock/keys").exists(), "a dry run changed trust");

    let before_last = steps[steps.len() - 2]["id"].as_str().unwrap().to_string();
    for (i, crash_after) in [before_last.as_str(), "keys/statements"].into_iter().enumerate() {
        let root = d.path().join(format!("crash-{i}"));
        std::fs::create_dir(&root).unwrap();
        let mut c = Command::new(cargo_bin("airlock"));
        c.env("AIRLOCK_TEST_CRASH_AFTER", crash_after).arg("install").arg(&a).arg("--pubkey").arg(&k1.public);
        let crashed =
            run(c.arg("--answers").arg(demo_dir().join("answers.yaml")).arg("--root").arg(&root).arg("--yes"));
        assert!(!crashed.status.success(), "no crash after {crash_after}");
        assert_eq!(site_key(&root, &k2.id).is_file(), crash_after == "keys/statements");
        let resumed = install(&a, &root, Some(&k1.public));
        assert!(resumed.status.success(), "resume after {crash_after}: {}", show(&resumed));
        assert!(site_key(&root, &k2.id).is_file());
        assert_eq!(revoked(&root)["sequence"], 1);
        // And the site now takes key2's bundles on its own keys.
        let o = install(&bundle(d.path(), &format!("2.0.{i}"), &k2, ""), &root, None);
        assert!(o.status.success(), "{}", show(&o));
    }
}
