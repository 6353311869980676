//! `airlock backup create` and `airlock backup verify` on the embedded example installed
//! into a target root: the archive holds every part byte for byte and opens with the
//! real `age` (Debian's) and the recovery key; no generated secret is readable in it;
//! verify says what a restore brings back, refuses a wrong key clearly and names a
//! changed part. On a live site (the recording host standing in for K3s and kubectl),
//! the databases of a real PostgreSQL are dumped with the real `pg_dump`, listed by the
//! real `pg_restore --list` and restored with equal row counts and checksums. The app's
//! MinIO bucket is mirrored over HTTPS from and back into a real S3 server (moto, see
//! `airlock_tests::s3`), trusted through the site CA.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_format::report::Silent;
use airlock_installer::host::{CommandOutput, Effects, HostCall, RecordingHost, RootedHost};
use airlock_installer::ops::backup::buckets::S3Options;
use airlock_installer::ops::backup::{self, restore, CreateOptions, PartKind, RestoreOptions, VerifyOptions};
use airlock_tests::postgres::TlsPostgres;
use airlock_tests::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir, require_tool};

/// A demo install in `root` whose answers name the recovery key `key`.
struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
    key: PathBuf,
    public: String,
}

/// A new recovery key made by the real `age-keygen`: its file and public key.
fn age_keygen(dir: &Path, name: &str) -> Option<(PathBuf, String)> {
    let keygen = require_tool("age-keygen")?;
    let key = dir.join(name);
    let o = Command::new(&keygen).arg("-o").arg(&key).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(&keygen).arg("-y").arg(&key).output().unwrap();
    Some((key, String::from_utf8(o.stdout).unwrap().trim().to_string()))
}

/// The demo installed into a fresh root with the demo answers, `backup.recipients`
/// naming a new recovery key (unless `recipients` is false), and `extra` answers.
fn installed_site(recipients: bool, extra: &str) -> Option<Site> {
    installed_site_with(recipients, extra, &[], None)
}

/// [`installed_site`] with `files` (target path, source) put into the root first (the
/// customer's files the answers name, which the install reads there), from the bundle
/// of the demo spec `spec` when given.
fn installed_site_with(recipients: bool, extra: &str, files: &[(&str, PathBuf)], spec: Option<&str>) -> Option<Site> {
    require_tool("age")?;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = age_keygen(dir.path(), "recovery.key")?;
    let bundle = match spec {
        Some(spec) => airlock_tests::build_demo_variant(spec, dir.path(), &[]),
        None => build_demo_bundle(dir.path(), &[]),
    };
    let mut answers = std::fs::read_to_string(demo_dir().join("answers.yaml")).unwrap();
    if recipients {
        answers.push_str(&format!("backup:\n  recipients:\n    - {public}\n"));
    }
    answers.push_str(extra);
    let answers_file = write_answers(dir.path(), "answers.yaml", &answers);
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    for (target, source) in files {
        let to = on_site(&root, target);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(source, &to).unwrap();
    }
    let o = airlock_tests::airlock_with_answers("install", &bundle, &answers_file, &root, &["--yes"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(Site { dir, root, key, public })
}

fn write_answers(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

fn airlock(args: &[&str]) -> Output {
    Command::new(cargo_bin("airlock")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `airlock backup create --root ROOT -o DIR --output json`: the archive and the report.
fn create(site: &Site) -> (PathBuf, serde_json::Value) {
    let out = site.dir.path().join("backups");
    std::fs::create_dir_all(&out).unwrap();
    let o = airlock(&[
        "backup",
        "create",
        "--root",
        site.root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (PathBuf::from(r["file"].as_str().unwrap()), r)
}

/// The tar inside `archive`, decrypted by the real `age` with `key`.
fn decrypt(archive: &Path, key: &Path) -> Vec<u8> {
    let age = require_tool("age").expect("checked by installed_site");
    let o = Command::new(age).arg("-d").arg("-i").arg(key).arg(archive).output().unwrap();
    assert!(o.status.success(), "age -d: {}", String::from_utf8_lossy(&o.stderr));
    zstd::decode_all(o.stdout.as_slice()).unwrap()
}

/// The tar's entries, by name, in order.
fn entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn on_site(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

#[test]
fn backup_create_archives_pki_answers_secrets_and_release_and_the_age_tool_opens_it() {
    let Some(site) = installed_site(true, "") else { return };
    let (file, report) = create(&site);
    assert!(file.starts_with(site.dir.path().join("backups")), "{}", file.display());
    assert!(file.to_string_lossy().ends_with(".airlock-backup"));
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let names: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "only the archive, no partial file: {names:?}");

    let got = entries(&decrypt(&file, &site.key));
    assert_eq!(got.last().unwrap().0, "manifest.json", "the manifest comes last");
    let got: BTreeMap<String, Vec<u8>> = got.into_iter().collect();
    let parts = report["manifest"]["parts"].as_array().unwrap();
    for p in parts {
        let name = p["name"].as_str().unwrap();
        let on_disk = std::fs::read(on_site(&site.root, p["source"].as_str().unwrap())).unwrap();
        assert_eq!(got[name], on_disk, "{name} holds the site's file byte for byte");
        assert_eq!(p["size"].as_u64().unwrap(), on_disk.len() as u64);
    }
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in [
        "files/etc/airlock/pki/ca.key",
        "files/etc/airlock/pki/ca.crt",
        "files/var/lib/airlock/answers.yaml",
        "files/var/lib/airlock/secrets/cluster-token",
        "files/var/lib/airlock/release.json",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let manifest: serde_json::Value = serde_json::from_slice(&got["manifest.json"]).unwrap();
    assert_eq!(manifest, report["manifest"]);
    assert_eq!(manifest["release"]["bundle"], "airlock-demo");
    assert_eq!(manifest["node"], "demo-node");
    // Under a target root nothing runs: what could not be taken is said, with why.
    let skipped: Vec<&str> =
        manifest["skipped"].as_array().unwrap().iter().map(|s| s["part"].as_str().unwrap()).collect();
    assert!(skipped.contains(&"datastore") && skipped.contains(&"databases/app.dump"), "{skipped:?}");
    assert!(!on_site(&site.root, backup::STAGING).exists(), "staging is cleaned up");
}

#[test]
fn backup_archive_holds_no_generated_secret_in_plaintext() {
    let Some(site) = installed_site(true, "") else { return };
    let (file, _) = create(&site);
    let raw = std::fs::read(&file).unwrap();
    let secrets = on_site(&site.root, "/var/lib/airlock/secrets");
    let mut checked = 0;
    for e in std::fs::read_dir(&secrets).unwrap() {
        let value = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for needle in value.lines().map(str::trim).filter(|l| l.len() >= 8) {
            assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()), "a secret is readable in the archive");
            checked += 1;
        }
    }
    let ca_key = std::fs::read_to_string(on_site(&site.root, "/etc/airlock/pki/ca.key")).unwrap();
    let body = ca_key.lines().nth(1).unwrap();
    assert!(!raw.windows(body.len()).any(|w| w == body.as_bytes()), "the CA key is readable in the archive");
    assert!(checked >= 10, "only {checked} secret values were looked for");
}

#[test]
fn backup_verify_says_what_a_restore_brings_back_and_from_when() {
    let Some(site) = installed_site(true, "") else { return };
    let (file, report) = create(&site);
    let key = site.key.to_str().unwrap();
    let o = airlock(&["backup", "verify", file.to_str().unwrap(), "--identity", key, "--output", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["created"], report["manifest"]["created"]);
    assert!(v["age_secs"].as_u64().unwrap() < 600);
    assert_eq!(v["release"]["manifest_sha256"], report["manifest"]["release"]["manifest_sha256"]);
    assert_eq!(v["parts"].as_array().unwrap().len(), report["manifest"]["parts"].as_array().unwrap().len());

    let o = airlock(&["backup", "verify", file.to_str().unwrap(), "--identity", key]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("every part matches its manifest"), "{out}");
    assert!(out.contains("release airlock-demo 1.0.0"), "{out}");
    assert!(out.contains("a restore would bring back:"), "{out}");
    assert!(out.contains("datastore: /var/lib/rancher/k3s/server/db does not exist yet"), "{out}");
}

#[test]
fn backup_verify_refuses_a_wrong_identity_clearly() {
    let Some(site) = installed_site(true, "") else { return };
    let (file, _) = create(&site);
    let (other, _) = age_keygen(site.dir.path(), "other.key").unwrap();
    let o = airlock(&["backup", "verify", file.to_str().unwrap(), "--identity", other.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("was not encrypted to the given identity"), "{out}");
    assert!(out.contains("hint:") && out.contains("backup.recipients"), "{out}");
    // The stock tool agrees that this key does not open it.
    let age = require_tool("age").unwrap();
    let o = Command::new(age).arg("-d").arg("-i").arg(&other).arg(&file).output().unwrap();
    assert!(!o.status.success());
}

#[test]
fn backup_verify_names_the_changed_part() {
    let Some(site) = installed_site(true, "") else { return };
    let (file, _) = create(&site);
    // Re-made with the real age to the same key: the encryption is intact, the
    // answers inside are not what the manifest says.
    let mut tar_bytes = decrypt(&file, &site.key);
    let at = tar_bytes.windows(20).position(|w| w == b"profile: single-node").expect("the kept answers");
    tar_bytes[at + 9] = b'S';
    let compressed = zstd::encode_all(tar_bytes.as_slice(), 3).unwrap();
    let changed = site.dir.path().join("changed.airlock-backup");
    let mut age = Command::new(require_tool("age").unwrap())
        .args(["-r", &site.public, "-o"])
        .arg(&changed)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(age.stdin.as_mut().unwrap(), &compressed).unwrap();
    drop(age.stdin.take());
    assert!(age.wait().unwrap().success());
    let o = airlock(&["backup", "verify", changed.to_str().unwrap(), "--identity", site.key.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(out.contains("part files/var/lib/airlock/answers.yaml: does not match the manifest"), "{out}");
}

#[test]
fn backup_verify_refuses_a_damaged_archive() {
    let Some(site) = installed_site(true, "") else { return };
    let (file, _) = create(&site);
    let mut raw = std::fs::read(&file).unwrap();
    let at = raw.len() - 40;
    raw[at] ^= 0x55;
    std::fs::write(&file, raw).unwrap();
    let o = airlock(&["backup", "verify", file.to_str().unwrap(), "--identity", site.key.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(out.contains("part") && out.contains("damaged or was changed"), "{out}");
}

#[test]
fn backup_without_recovery_keys_is_refused_and_writes_nothing() {
    let Some(site) = installed_site(false, "") else { return };
    let out = site.dir.path().join("backups");
    std::fs::create_dir_all(&out).unwrap();
    let o = airlock(&["backup", "create", "--root", site.root.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let said = text(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.contains("backup.recipients") && said.contains("age-keygen"), "{said}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

/// The demo spec with the reference app's consistency check shipped as the app
/// component's file `exports-have-objects.sql` and named by `backup.drill_checks`.
fn spec_shipping_the_reference_check() -> String {
    let spec = std::fs::read_to_string(airlock_tests::demo_dir().join("bundle.yaml")).unwrap();
    let readme = "      - path: files/README.txt\n        name: README.txt\n        mode: \"0644\"\n";
    assert!(spec.contains(readme), "the demo's app component has its README file");
    let spec = spec.replace(
        readme,
        &format!(
            "{readme}      - path: ../../assets/backup/drill-check-reference-app.sql\n        name: exports-have-objects.sql\n"
        ),
    );
    format!("{spec}backup:\n  drill_checks:\n    - files/app/exports-have-objects.sql\n")
}

/// A site installed with the test S3 server's CA as its CA (`customer-ca`) and the
/// server's credentials as the app's S3 credentials; the app's bucket exists there.
fn s3_site(s3: &S3Server, extra: &str) -> Option<Site> {
    s3_site_of(s3, extra, None)
}

/// [`s3_site`] from the bundle of the demo spec `spec`, when given.
fn s3_site_of(s3: &S3Server, extra: &str, spec: Option<&str>) -> Option<Site> {
    let (answers, files) = s3.ca_answers();
    let files: Vec<(&str, PathBuf)> = files.iter().map(|(t, s)| (*t, s.clone())).collect();
    let site = installed_site_with(true, &format!("{answers}{extra}"), &files, spec)?;
    for (file, value) in [("app-s3-access-key", ACCESS_KEY), ("app-s3-secret-key", SECRET_KEY)] {
        std::fs::write(on_site(&site.root, &format!("/var/lib/airlock/secrets/{file}")), format!("{value}\n")).unwrap();
    }
    let _exclusive = s3.exclusive();
    s3.boto(
        ACCESS_KEY,
        SECRET_KEY,
        "try:\n    s3.create_bucket(Bucket=sys.argv[1])\nexcept s3.exceptions.BucketAlreadyOwnedByYou:\n    pass\n",
        &[APP_BUCKET],
    )
    .unwrap();
    Some(site)
}

const APP_BUCKET: &str = "airlock-app";

/// The test server as the site's S3 API: its address, 5 MiB parts (S3's smallest), and
/// three keys a listing page, so a few objects take several pages.
fn s3_options(s3: &S3Server) -> S3Options {
    S3Options { connect: Some(s3.addr), chunk: 5 << 20, page: Some(3) }
}

fn live_options(output: PathBuf, s3: &S3Server) -> CreateOptions {
    CreateOptions { output: Some(output), keep: None, s3: s3_options(s3) }
}

/// The live site's scripted commands: the etcd snapshot (a stand-in file where K3s
/// would write it), and the two dumps' bytes.
fn script_live_site(host: &RecordingHost, app_dump: Vec<u8>, keycloak_dump: Vec<u8>) {
    let snapshot = Path::new(backup::STAGING).join("datastore/airlock-backup-demo-node-1765130400");
    host.expect_command_with(
        &["k3s", "etcd-snapshot", "save"],
        CommandOutput::ok(""),
        Effects { stdout: Vec::new(), files: vec![(snapshot, b"etcd snapshot stand-in".to_vec())] },
    );
    host.expect_command_with(
        &["/usr/local/bin/kubectl"],
        CommandOutput::ok(""),
        Effects { stdout: app_dump, files: Vec::new() },
    );
    host.expect_command_with(&["env"], CommandOutput::ok(""), Effects { stdout: keycloak_dump, files: Vec::new() });
}

fn commands(host: &RecordingHost) -> Vec<String> {
    host.calls()
        .into_iter()
        .filter_map(|c| match c {
            HostCall::Run { argv } => Some(argv.join(" ")),
            _ => None,
        })
        .collect()
}

#[test]
fn backup_failure_leaves_no_archive_under_the_final_name_and_no_staged_dump() {
    let Some(site) = installed_site(true, "") else { return };
    std::fs::create_dir_all(on_site(&site.root, "/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    let host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    script_live_site(&host, Vec::new(), Vec::new());
    host.expect_command(
        &["/usr/local/bin/kubectl"],
        CommandOutput::exit(1, "error: pod airlock-app-postgresql-0 is not running"),
    );
    let out = site.dir.path().join("out.airlock-backup");
    let opts = CreateOptions { output: Some(out.clone()), keep: None, s3: Default::default() };
    let e = backup::create(&host, &opts, &Silent).unwrap_err().to_string();
    assert!(e.contains("databases/app.dump") && e.contains("is not running"), "{e}");
    assert!(!out.exists());
    assert!(!site.dir.path().join("out.airlock-backup.partial").exists());
    assert!(!on_site(&site.root, backup::STAGING).exists(), "the staged snapshot is gone");
    assert!(commands(&host).iter().any(|c| c.starts_with("k3s etcd-snapshot save")));
}

/// Rows and a checksum over every row of `table`, ordered by `id`.
fn fingerprint(pg: &TlsPostgres, db: &str, table: &str) -> String {
    pg.psql(
        "airlock",
        db,
        &format!("SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM {table} t"),
    )
    .unwrap()
}

fn pg_dump(pg: &TlsPostgres, db: &str) -> Vec<u8> {
    let o = pg.client("pg_dump", "airlock").args(["-Fc", "-d", db]).stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "pg_dump: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn backup_of_a_live_site_dumps_app_and_keycloak_databases_that_restore_with_equal_rows() {
    let Some(pg) = TlsPostgres::start("airlock", "pg-Pa55:word\\x", "app") else { return };
    let Some(_) = require_tool("pg_restore") else { return };
    pg.psql("airlock", "postgres", "CREATE DATABASE keycloak").unwrap();
    pg.psql(
        "airlock",
        "app",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, payload bytea);
         INSERT INTO items (name, payload) SELECT 'item ' || g, sha256(g::text::bytea) FROM generate_series(1, 5000) g;",
    )
    .unwrap();
    // Keycloak-shaped: a realm, its users and their credentials, with foreign keys.
    pg.psql(
        "airlock",
        "keycloak",
        "CREATE TABLE realm (id varchar(36) PRIMARY KEY, name varchar(255) UNIQUE);
         CREATE TABLE user_entity (id varchar(36) PRIMARY KEY, realm_id varchar(36) REFERENCES realm(id), username varchar(255), email varchar(255));
         CREATE TABLE credential (id varchar(36) PRIMARY KEY, user_id varchar(36) REFERENCES user_entity(id), secret_data text);
         INSERT INTO realm VALUES ('r1', 'airlock');
         INSERT INTO user_entity SELECT 'u' || g, 'r1', 'user' || g, 'user' || g || '@example.test' FROM generate_series(1, 300) g;
         INSERT INTO credential SELECT 'c' || g, 'u' || g, md5(g::text) FROM generate_series(1, 300) g;",
    )
    .unwrap();
    let extra = format!(
        "keycloak_database:\n  host: localhost\n  port: {}\n  name: keycloak\n  username: airlock\n  password: 'pg-Pa55:word\\x'\n  ca_file: {}\n",
        pg.port,
        pg.ca_pem().display()
    );
    let Some(s3) = S3Server::get() else { return };
    let Some(site) = s3_site(s3, &extra) else { return };
    let _shared = s3.shared();
    std::fs::create_dir_all(on_site(&site.root, "/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    let host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    script_live_site(&host, pg_dump(&pg, "app"), pg_dump(&pg, "keycloak"));
    let out = site.dir.path().join("live.airlock-backup");
    let r = backup::create(&host, &live_options(out.clone(), s3), &Silent).unwrap();

    // The commands the site ran: the distribution's snapshot into staging, the dumps.
    let ran = commands(&host);
    assert!(
        ran.contains(
            &"k3s etcd-snapshot save --name airlock-backup --dir /var/lib/airlock/staging/backup/datastore".into()
        ),
        "{ran:#?}"
    );
    assert!(
        ran.iter().any(|c| c.contains(" exec statefulset/airlock-app-postgresql ") && c.contains("pg_dump -Fc")),
        "{ran:#?}"
    );
    let kc = ran.iter().find(|c| c.starts_with("env ")).expect("the Keycloak dump");
    assert!(kc.contains("PGSSLMODE=verify-full") && kc.contains("pg_dump -Fc -h localhost"), "{kc}");
    assert!(!ran.iter().any(|c| c.contains("Pa55")), "no password on a command line: {ran:#?}");
    assert!(!ran.iter().any(|c| c.starts_with("systemctl")), "etcd is saved without stopping the unit");
    assert!(!on_site(&site.root, backup::STAGING).exists(), "no unencrypted dump is left behind");
    let kinds: Vec<(String, PartKind)> = r.manifest.parts.iter().map(|p| (p.name.clone(), p.kind)).collect();
    assert!(kinds.contains(&("datastore/etcd-snapshot".into(), PartKind::EtcdSnapshot)), "{kinds:?}");

    // verify lists each dump with the real pg_restore.
    let live = RootedHost::new(PathBuf::from("/"), true).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let v =
        backup::verify(&live, &VerifyOptions { file: out.clone(), identity: site.key.clone(), now_unix: now }, &Silent)
            .unwrap();
    let tables: BTreeMap<&str, usize> =
        v.parts_of(PartKind::Database).map(|p| (p.name.as_str(), p.tables.unwrap())).collect();
    assert_eq!(tables, BTreeMap::from([("databases/app.dump", 1), ("databases/keycloak.dump", 3)]));

    // restore's datastore and database steps on the live site: the distribution resets
    // the cluster from the snapshot; each dump streams into pg_restore.
    let restore_host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    restore_host.expect_command(&["systemctl"], CommandOutput::ok(""));
    restore_host.expect_command(&["k3s", "server", "--cluster-reset"], CommandOutput::ok(""));
    restore_host.expect_command(&["/usr/local/bin/kubectl"], CommandOutput::ok(""));
    restore_host.expect_command(&["env"], CommandOutput::ok(""));
    let ropts = RestoreOptions {
        file: out.clone(),
        identity: site.key.clone(),
        install: Default::default(),
        now_unix: now,
        s3: s3_options(s3),
    };
    let ids = backup::load_identities(&site.key).unwrap();
    let mut journal = restore::RestoreJournal::default();
    restore::restore_datastore(&restore_host, &ropts, &ids, &v, &mut journal).unwrap();
    restore::restore_databases(&restore_host, &ropts, &ids, &v, &mut journal).unwrap();
    let ran = commands(&restore_host);
    let snapshot = "/var/lib/rancher/k3s/server/db/snapshots/airlock-restore-demo-node";
    assert_eq!(
        ran[..3],
        [
            "systemctl stop k3s.service".to_string(),
            format!("k3s server --cluster-reset --cluster-reset-restore-path={snapshot}"),
            "systemctl start k3s.service".to_string()
        ],
        "{ran:#?}"
    );
    assert_eq!(std::fs::read(on_site(&site.root, snapshot)).unwrap(), b"etcd snapshot stand-in");
    assert!(
        ran[3].contains(" exec -i statefulset/airlock-app-postgresql ") && ran[3].contains("pg_restore --clean"),
        "{ran:#?}"
    );
    assert!(
        ran[4].starts_with("env PGPASSFILE=")
            && ran[4].contains("pg_restore --clean --if-exists --no-owner -h localhost"),
        "{ran:#?}"
    );
    assert!(!ran.iter().any(|c| c.contains("Pa55")), "no password on a command line: {ran:#?}");
    let fed: BTreeMap<String, Vec<u8>> = restore_host
        .inputs()
        .into_iter()
        .map(|(argv, bytes)| (if argv[0] == "env" { "keycloak" } else { "app" }.to_string(), bytes))
        .collect();

    // What restore streamed into pg_restore, restored by the real pg_restore: the same rows.
    let got: BTreeMap<String, Vec<u8>> = entries(&decrypt(&out, &site.key)).into_iter().collect();
    for (db, tables) in [("app", &["items"][..]), ("keycloak", &["realm", "user_entity", "credential"][..])] {
        assert_eq!(fed[db], got[&format!("databases/{db}.dump")], "restore streams the {db} dump as archived");
        let restored = format!("{db}_restored");
        pg.psql("airlock", "postgres", &format!("CREATE DATABASE {restored}")).unwrap();
        let mut p = pg
            .client("pg_restore", "airlock")
            .args(["--exit-on-error", "-d", &restored])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(p.stdin.as_mut().unwrap(), &fed[db]).unwrap();
        drop(p.stdin.take());
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "pg_restore {db}: {}", String::from_utf8_lossy(&o.stderr));
        for t in tables {
            assert_eq!(fingerprint(&pg, &restored, t), fingerprint(&pg, db, t), "{db}.{t}");
        }
    }
    assert!(fingerprint(&pg, "app", "items").starts_with("5000 "));
}

/// The site CA may certify the whole documentation network, so a node restored at
/// another address of it gets its certificates from the same CA (the default
/// constrains the CA to exactly the node addresses).
const PKI_RANGE: &str = "pki:\n  ip_ranges:\n    - 192.0.2.0/24\n";

/// The answers of the node a restore brings the site back on: another name and address.
fn new_node_answers(site: &Site) -> PathBuf {
    let a = std::fs::read_to_string(site.dir.path().join("answers.yaml")).unwrap();
    let b = a.replace("name: demo-node", "name: restored-node").replace("ip: 192.0.2.10", "ip: 192.0.2.20");
    assert_ne!(a, b);
    write_answers(site.dir.path(), "new-node.yaml", &b)
}

fn restore_into(site: &Site, file: &Path, answers: &Path, root: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(cargo_bin("airlock"));
    c.arg("restore")
        .arg(file)
        .arg("--identity")
        .arg(&site.key)
        .arg("--bundle")
        .arg(site.dir.path().join("demo.airlock"))
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--answers")
        .arg(answers)
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Every file below `dir` of the root, by path, with its bytes.
fn files_below(root: &Path, dir: &str) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(on_site(root, dir))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn assert_restored_like_a(site: &Site, b: &Path) {
    assert_eq!(files_below(b, "/var/lib/airlock/secrets"), files_below(&site.root, "/var/lib/airlock/secrets"));
    for f in ["/etc/airlock/pki/ca.crt", "/etc/airlock/pki/ca.key"] {
        assert_eq!(std::fs::read(on_site(b, f)).unwrap(), std::fs::read(on_site(&site.root, f)).unwrap(), "{f}");
    }
}

#[test]
fn restore_onto_an_empty_root_with_another_node_is_a_fresh_install_with_the_sites_pki_and_secrets() {
    let Some(site) = installed_site(true, PKI_RANGE) else { return };
    let (file, _) = create(&site);
    let answers = new_node_answers(&site);
    let b = site.dir.path().join("b");
    let o = restore_into(&site, &file, &answers, &b, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("install    done"), "{out}");
    // A fresh install with the new node's answers: the same tree, secrets and
    // certificates apart (masked), which are the site's own.
    let c = site.dir.path().join("c");
    std::fs::create_dir(&c).unwrap();
    let o =
        airlock_tests::airlock_with_answers("install", &site.dir.path().join("demo.airlock"), &answers, &c, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(airlock_tests::tree::installed_tree(&b), airlock_tests::tree::installed_tree(&c));
    assert_restored_like_a(&site, &b);
    assert_ne!(files_below(&c, "/var/lib/airlock/secrets"), files_below(&site.root, "/var/lib/airlock/secrets"));
    // Run again, it has nothing left to do.
    let o = restore_into(&site, &file, &answers, &b, &[]);
    assert!(o.status.success() && text(&o).contains("databases  done"), "{}", text(&o));
    // Onto a site that is installed (and was not being restored): refused, unchanged.
    let before = files_below(&c, "/var/lib/airlock/secrets");
    let o = restore_into(&site, &file, &answers, &c, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("a release is installed here already"), "{}", text(&o));
    assert_eq!(files_below(&c, "/var/lib/airlock/secrets"), before);
}

#[test]
fn restore_resumes_after_a_crash_at_each_step_and_converges() {
    let Some(site) = installed_site(true, PKI_RANGE) else { return };
    let (file, _) = create(&site);
    let answers = new_node_answers(&site);
    let clean = site.dir.path().join("clean");
    assert!(restore_into(&site, &file, &answers, &clean, &[]).status.success());
    let want = airlock_tests::tree::installed_tree(&clean);
    for step in ["state", "install", "datastore", "databases"] {
        let b = site.dir.path().join(format!("crash-{step}"));
        let o = restore_into(&site, &file, &answers, &b, &[(restore::CRASH_AFTER_ENV, step)]);
        assert!(!o.status.success(), "the run crashed after {step}");
        let journal: serde_json::Value =
            serde_json::from_slice(&std::fs::read(on_site(&b, restore::JOURNAL_PATH)).unwrap()).unwrap();
        assert_eq!(journal["done"].as_array().unwrap().last().unwrap(), step);
        let o = restore_into(&site, &file, &answers, &b, &[]);
        assert!(o.status.success(), "resumed after {step}: {}", text(&o));
        assert_eq!(airlock_tests::tree::installed_tree(&b), want, "after a crash at {step}");
        assert_restored_like_a(&site, &b);
    }
}

#[test]
fn restore_refuses_the_bundle_of_another_release_before_installing() {
    let Some(site) = installed_site(true, PKI_RANGE) else { return };
    let (file, _) = create(&site);
    let other = site.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let bundle = airlock_tests::build_demo_variant(
        &std::fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap().replacen(
            "version: 1.0.0",
            "version: 1.0.1",
            1,
        ),
        &other,
        &[],
    );
    let answers = new_node_answers(&site);
    let b = site.dir.path().join("b");
    let o = Command::new(cargo_bin("airlock"))
        .arg("restore")
        .arg(&file)
        .arg("--identity")
        .arg(&site.key)
        .arg("--bundle")
        .arg(&bundle)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--answers")
        .arg(&answers)
        .arg("--root")
        .arg(&b)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("but the backup was taken of airlock-demo 1.0.0"), "{out}");
    assert!(!on_site(&b, "/var/lib/airlock/release.json").exists(), "nothing was installed");
}

fn status_json(root: &Path) -> (Option<i32>, serde_json::Value) {
    let o = airlock(&["status", "--root", root.to_str().unwrap(), "--output", "json"]);
    (o.status.code(), serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o))))
}

fn schedule(site: &Site, every: &str, airlock_path: &Path) -> Output {
    airlock(&[
        "backup",
        "schedule",
        "--every",
        every,
        "--keep",
        "2",
        "--to",
        "/srv/backups",
        "--airlock",
        airlock_path.to_str().unwrap(),
        "--root",
        site.root.to_str().unwrap(),
    ])
}

#[test]
fn backup_schedule_writes_a_timer_systemd_accepts_and_enables_it() {
    let Some(analyze) = require_tool("systemd-analyze") else { return };
    let Some(site) = installed_site(true, "") else { return };
    let units = on_site(&site.root, "/etc/systemd/system");
    let verify = || {
        Command::new(&analyze)
            .arg("verify")
            .arg(units.join("airlock-backup.service"))
            .arg(units.join("airlock-backup.timer"))
            .output()
            .unwrap()
    };
    // Control: a service whose airlock is missing here is refused (the check can fail).
    let o = schedule(&site, "24h", Path::new("/nonexistent/airlock"));
    assert!(o.status.success(), "{}", text(&o));
    let o = verify();
    assert!(!o.status.success() && text(&o).contains("/nonexistent/airlock"), "{}", text(&o));
    // `systemd-analyze verify` checks the Exec binary on this machine: the one built here.
    let o = schedule(&site, "24h", &cargo_bin("airlock"));
    assert!(o.status.success(), "{}", text(&o));
    let o = verify();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("airlock-backup"), "systemd warns about the units: {}", text(&o));
    let service = std::fs::read_to_string(units.join("airlock-backup.service")).unwrap();
    assert!(service.contains("backup create --output-file /srv/backups --keep 2"), "{service}");
    let timer = std::fs::read_to_string(units.join("airlock-backup.timer")).unwrap();
    assert!(timer.contains("OnUnitActiveSec=86400s"), "{timer}");
    let link = units.join("timers.target.wants/airlock-backup.timer");
    assert_eq!(std::fs::read_link(link).unwrap(), Path::new("/etc/systemd/system/airlock-backup.timer"));
    assert!(on_site(&site.root, "/srv/backups").is_dir());
    let o = airlock(&["backup", "schedule", "--every", "soon", "--keep", "2", "--to", "/srv/b"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn backup_status_shows_the_last_backup_and_keeps_the_newest_ones() {
    let Some(site) = installed_site(true, "") else { return };
    let out = site.dir.path().join("kept");
    std::fs::create_dir(&out).unwrap();
    for _ in 0..3 {
        let o = airlock(&[
            "backup",
            "create",
            "--root",
            site.root.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--keep",
            "2",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        // One archive a second: the names carry the time to the second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2, "the newest two are kept");
    let (code, s) = status_json(&site.root);
    assert_eq!(code, Some(0), "{s:#}");
    assert_eq!(s["backup"]["last_ok"]["ok"], true);
    assert!(s["backup"]["age_secs"].as_u64().unwrap() < 600);
    let o = airlock(&["report", "--root", site.root.to_str().unwrap(), "--output", "json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let line = r["checklist"].as_array().unwrap().iter().find(|l| l["id"] == "backup").unwrap();
    assert!(line["evidence"][0].as_str().unwrap().starts_with("last good backup (airlock backup create)"), "{line:#}");
}

#[test]
fn backup_missed_or_failed_is_a_status_problem() {
    let Some(site) = installed_site(true, "") else { return };
    assert!(schedule(&site, "1h", &cargo_bin("airlock")).status.success());
    let (code, s) = status_json(&site.root);
    assert_eq!(code, Some(11), "{s:#}");
    assert!(s["problems"].to_string().contains("no backup was taken yet"), "{s:#}");
    // A good backup, then one that is too old: missed.
    let (file, _) = create(&site);
    assert_eq!(status_json(&site.root).0, Some(0));
    let last = on_site(&site.root, "/var/lib/airlock/backup-last.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&last).unwrap()).unwrap();
    rec["last_ok"]["finished"] = "2020-01-01T00:00:00Z".into();
    rec["last"] = rec["last_ok"].clone();
    std::fs::write(&last, rec.to_string()).unwrap();
    let (code, s) = status_json(&site.root);
    assert_eq!(code, Some(11), "{s:#}");
    assert!(s["problems"].to_string().contains("a backup was missed"), "{s:#}");
    let o = airlock(&["status", "--root", site.root.to_str().unwrap()]);
    assert!(text(&o).contains("backup      last 2020-01-01T00:00:00Z"), "{}", text(&o));
    // A run that fails (the output cannot be written) is recorded and is a problem.
    let o = airlock(&[
        "backup",
        "create",
        "--root",
        site.root.to_str().unwrap(),
        "-o",
        file.parent().unwrap().join("missing-dir/x.airlock-backup").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let (code, s) = status_json(&site.root);
    assert_eq!(code, Some(11), "{s:#}");
    assert!(s["problems"].to_string().contains("the last backup failed"), "{s:#}");
}

/// The site on the machine running the test, except `kubectl exec`: there is no
/// cluster here, so a stand-in runs the shell command the installer sends into the app's
/// PostgreSQL pod right here, against the test's real PostgreSQL, with the environment
/// the pod's container has (`POSTGRES_USER`, `POSTGRES_DB`) and the connection the pod's
/// local socket would give. Every other call is the real host rooted at the site.
struct PodExecStandIn {
    /// The site's files.
    inner: RootedHost,
    /// Commands: they run on this machine.
    runner: RootedHost,
    pod_env: Vec<String>,
}

impl PodExecStandIn {
    fn new(root: &Path, pg: &TlsPostgres, pgpass: &Path) -> Self {
        let pod_env = vec![
            "env".to_string(),
            "POSTGRES_USER=airlock".to_string(),
            "POSTGRES_DB=app".to_string(),
            "PGHOST=localhost".to_string(),
            format!("PGPORT={}", pg.port),
            format!("PGPASSFILE={}", pgpass.display()),
            "PGSSLMODE=verify-full".to_string(),
            format!("PGSSLROOTCERT={}", pg.ca_pem().display()),
        ];
        Self {
            inner: RootedHost::new(root.to_path_buf(), false).unwrap(),
            runner: RootedHost::new(PathBuf::from("/"), true).unwrap(),
            pod_env,
        }
    }

    /// `kubectl ... exec -i statefulset/... -- sh -c SCRIPT` becomes `env POD_ENV sh -c SCRIPT`.
    fn translate(&self, argv: &[&str]) -> Vec<String> {
        if argv.first() != Some(&"/usr/local/bin/kubectl") {
            return argv.iter().map(|a| a.to_string()).collect();
        }
        let dashdash = argv.iter().position(|a| *a == "--").expect("kubectl exec ... -- command");
        let mut out = self.pod_env.clone();
        out.extend(argv[dashdash + 1..].iter().map(|a| a.to_string()));
        out
    }
}

impl airlock_installer::host::Host for PodExecStandIn {
    fn root(&self) -> &Path {
        self.inner.root()
    }
    fn live(&self) -> bool {
        true
    }
    fn metadata(&self, p: &Path) -> airlock_format::error::Result<Option<airlock_installer::host::Metadata>> {
        self.inner.metadata(p)
    }
    fn open_file(&self, p: &Path) -> airlock_format::error::Result<Option<Box<dyn Read>>> {
        self.inner.open_file(p)
    }
    fn read_file(&self, p: &Path) -> airlock_format::error::Result<Option<Vec<u8>>> {
        self.inner.read_file(p)
    }
    fn read_link(&self, p: &Path) -> airlock_format::error::Result<Option<PathBuf>> {
        self.inner.read_link(p)
    }
    fn list_dir(&self, p: &Path) -> airlock_format::error::Result<Option<Vec<airlock_installer::host::DirEntry>>> {
        self.inner.list_dir(p)
    }
    fn real_path(&self, p: &Path) -> airlock_format::error::Result<PathBuf> {
        self.inner.real_path(p)
    }
    fn write_file(
        &self,
        p: &Path,
        c: &mut dyn Read,
        perms: airlock_installer::host::Perms,
    ) -> airlock_format::error::Result<u64> {
        self.inner.write_file(p, c, perms)
    }
    fn copy_file(
        &self,
        s: &Path,
        p: &Path,
        perms: airlock_installer::host::Perms,
    ) -> airlock_format::error::Result<u64> {
        self.inner.copy_file(s, p, perms)
    }
    fn create_dir(&self, p: &Path, mode: u32) -> airlock_format::error::Result<()> {
        self.inner.create_dir(p, mode)
    }
    fn symlink(&self, p: &Path, t: &Path) -> airlock_format::error::Result<()> {
        self.inner.symlink(p, t)
    }
    fn remove(&self, p: &Path) -> airlock_format::error::Result<()> {
        self.inner.remove(p)
    }
    fn remove_dir(&self, p: &Path) -> airlock_format::error::Result<bool> {
        self.inner.remove_dir(p)
    }
    fn remove_all(&self, p: &Path) -> airlock_format::error::Result<()> {
        self.inner.remove_all(p)
    }
    fn rename(&self, f: &Path, t: &Path) -> airlock_format::error::Result<()> {
        self.inner.rename(f, t)
    }
    fn resolve_dir(&self, p: &Path, mode: u32) -> airlock_format::error::Result<PathBuf> {
        self.inner.resolve_dir(p, mode)
    }
    fn durable_together(
        &self,
        work: &mut dyn FnMut() -> airlock_format::error::Result<()>,
    ) -> airlock_format::error::Result<()> {
        self.inner.durable_together(work)
    }
    fn user_exists(&self, n: &str) -> airlock_format::error::Result<bool> {
        self.inner.user_exists(n)
    }
    fn ensure_user(&self, u: &airlock_installer::host::PlannedUser) -> airlock_format::error::Result<bool> {
        self.inner.ensure_user(u)
    }
    fn unit_enabled(&self, u: &str) -> airlock_format::error::Result<bool> {
        self.inner.unit_enabled(u)
    }
    fn enable_unit(&self, u: &str) -> airlock_format::error::Result<()> {
        self.inner.enable_unit(u)
    }
    fn disable_unit(&self, u: &str) -> airlock_format::error::Result<()> {
        self.inner.disable_unit(u)
    }
    fn run(&self, argv: &[&str]) -> airlock_format::error::Result<CommandOutput> {
        let argv = self.translate(argv);
        self.runner.run(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    }
    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: Option<&mut dyn Read>,
        stdout_to: Option<&Path>,
    ) -> airlock_format::error::Result<CommandOutput> {
        let argv = self.translate(argv);
        self.runner.run_streaming(&argv.iter().map(String::as_str).collect::<Vec<_>>(), stdin, stdout_to)
    }
    fn lock(&self, p: &Path) -> airlock_format::error::Result<airlock_installer::host::HostLock> {
        self.inner.lock(p)
    }
    fn lock_holder(&self, p: &Path) -> airlock_format::error::Result<Option<airlock_installer::host::LockHolder>> {
        self.inner.lock_holder(p)
    }
}

/// The databases of the test's PostgreSQL other than the templates, sorted.
fn databases(pg: &TlsPostgres) -> Vec<String> {
    let all =
        pg.psql("airlock", "postgres", "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1").unwrap();
    all.lines().map(str::to_string).collect()
}

fn report_backup_line(root: &Path) -> serde_json::Value {
    let o = airlock(&["report", "--root", root.to_str().unwrap(), "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    v["checklist"].as_array().unwrap().iter().find(|l| l["id"] == "backup").cloned().expect("the backup line")
}

#[test]
fn restore_drill_of_a_good_backup_passes_leaves_no_copy_and_changes_no_live_row_and_a_failing_check_fails_it() {
    let Some(pg) = TlsPostgres::start("airlock", "pg-Pa55:word\\x", "app") else { return };
    let Some(_) = require_tool("pg_restore") else { return };
    let Some(_) = require_tool("psql") else { return };
    pg.psql("airlock", "postgres", "CREATE DATABASE keycloak").unwrap();
    pg.psql(
        "airlock",
        "app",
        "CREATE TABLE exports (id serial PRIMARY KEY, name text NOT NULL);
         CREATE TABLE export_objects (id serial PRIMARY KEY, export_id int, object_key text);
         INSERT INTO exports (name) SELECT 'export ' || g FROM generate_series(1, 200) g;
         INSERT INTO export_objects (export_id, object_key) SELECT g, 'obj/' || g FROM generate_series(1, 200) g;",
    )
    .unwrap();
    pg.psql(
        "airlock",
        "keycloak",
        "CREATE TABLE realm (id varchar(36) PRIMARY KEY, name varchar(255));
         INSERT INTO realm VALUES ('r1', 'airlock');",
    )
    .unwrap();
    let extra = format!(
        "keycloak_database:\n  host: localhost\n  port: {}\n  name: keycloak\n  username: airlock\n  password: 'pg-Pa55:word\\x'\n  ca_file: {}\n",
        pg.port,
        pg.ca_pem().display()
    );
    let Some(s3) = S3Server::get() else { return };
    // The vendor ships the reference app's check in the bundle (`backup.drill_checks`).
    let Some(site) = s3_site_of(s3, &extra, Some(&spec_shipping_the_reference_check())) else { return };
    let _shared = s3.shared();
    std::fs::create_dir_all(on_site(&site.root, "/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    let host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    script_live_site(&host, pg_dump(&pg, "app"), pg_dump(&pg, "keycloak"));
    let out = site.dir.path().join("good.airlock-backup");
    backup::create(&host, &live_options(out.clone(), s3), &Silent).unwrap();

    let pgpass = site.dir.path().join("pod.pgpass");
    std::fs::write(&pgpass, "*:*:*:airlock:pg-Pa55\\:word\\\\x\n").unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let site_host = PodExecStandIn::new(&site.root, &pg, &pgpass);
    let live = RootedHost::new(PathBuf::from("/"), true).unwrap();
    let before_dbs = databases(&pg);
    let before = (fingerprint(&pg, "app", "exports"), fingerprint(&pg, "keycloak", "realm"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // The release's check (every export's object row exists) runs by default; one given
    // as with --check runs after it.
    let check = backup::ConsistencyCheck { name: "given-check".into(), sql: "SELECT 1 WHERE false".into() };
    let opts =
        backup::DrillOptions { file: out.clone(), identity: site.key.clone(), checks: vec![check], now_unix: now };
    let r = backup::drill(&site_host, &live, &opts, &Silent).unwrap();
    assert!(r.passed, "{:#?}", r);
    let ran: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(ran, ["exports-have-objects", "given-check"]);
    let tables: BTreeMap<&str, Vec<(String, u64)>> =
        r.databases.iter().map(|d| (d.part.as_str(), d.tables.clone())).collect();
    assert_eq!(
        tables,
        BTreeMap::from([
            ("databases/app.dump", vec![("public.export_objects".into(), 200), ("public.exports".into(), 200)]),
            ("databases/keycloak.dump", vec![("public.realm".into(), 1)]),
        ])
    );
    assert!(r.databases.iter().all(|d| d.dropped && d.temporary.contains("_drill_")));
    assert_eq!(databases(&pg), before_dbs, "no temporary database is left behind");
    assert_eq!((fingerprint(&pg, "app", "exports"), fingerprint(&pg, "keycloak", "realm")), before);
    let rec = on_site(&site.root, backup::drill::RECORD_PATH);
    assert_eq!(std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777, 0o644);
    let rec_text = std::fs::read_to_string(&rec).unwrap();
    assert!(!rec_text.contains("Pa55"), "the record holds no secret");
    assert!(!on_site(&site.root, backup::STAGING).exists(), "no pgpass is left behind");
    let line = report_backup_line(&site.root);
    assert_eq!(line["status"], "verified", "{line:#}");

    // The same check on a backup where an export lost its object fails, naming the check.
    pg.psql("airlock", "app", "DELETE FROM export_objects WHERE export_id IN (7, 9)").unwrap();
    let host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    script_live_site(&host, pg_dump(&pg, "app"), pg_dump(&pg, "keycloak"));
    let bad = site.dir.path().join("orphans.airlock-backup");
    backup::create(&host, &live_options(bad.clone(), s3), &Silent).unwrap();
    let r = backup::drill(&site_host, &live, &backup::DrillOptions { file: bad, ..opts }, &Silent).unwrap();
    assert!(!r.passed);
    let failures = r.failures().join("\n");
    assert!(failures.contains("consistency check exports-have-objects: returned 2 row(s)"), "{failures}");
    assert_eq!(databases(&pg), before_dbs, "the copies are dropped when a check fails too");
    let line = report_backup_line(&site.root);
    assert_eq!(line["status"], "failed", "{line:#}");
    assert!(line["evidence"].to_string().contains("exports-have-objects"), "{line:#}");
}

#[test]
fn restore_drill_of_a_backup_with_a_damaged_dump_fails_naming_the_part() {
    let Some(s3) = S3Server::get() else { return };
    let Some(site) = s3_site(s3, "") else { return };
    let _shared = s3.shared();
    let Some(_) = require_tool("pg_restore") else { return };
    std::fs::create_dir_all(on_site(&site.root, "/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    let host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    // The app's dump came out damaged (a custom-format header, then garbage).
    script_live_site(&host, b"PGDMP\x01\x0e\x00garbage, not a dump".to_vec(), Vec::new());
    let out = site.dir.path().join("damaged.airlock-backup");
    backup::create(&host, &live_options(out.clone(), s3), &Silent).unwrap();
    let o = airlock(&[
        "restore",
        "--drill",
        out.to_str().unwrap(),
        "--identity",
        site.key.to_str().unwrap(),
        "--root",
        site.root.to_str().unwrap(),
    ]);
    // Under a target root nothing runs: the drill is refused before it starts.
    assert!(!o.status.success());
    assert!(text(&o).contains("live site"), "{}", text(&o));
    let site_host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    let live = RootedHost::new(PathBuf::from("/"), true).unwrap();
    let opts =
        backup::DrillOptions { file: out, identity: site.key.clone(), checks: Vec::new(), now_unix: 1_765_130_400 };
    let r = backup::drill(&site_host, &live, &opts, &Silent).unwrap();
    assert!(!r.passed);
    let failures = r.failures().join("\n");
    assert!(failures.contains("databases/app.dump") && failures.contains("verification"), "{failures}");
    assert!(commands(&site_host).is_empty(), "nothing ran on the site: {:?}", commands(&site_host));
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(on_site(&site.root, backup::drill::RECORD_PATH)).unwrap()).unwrap();
    assert_eq!(rec["passed"], false);
    let line = report_backup_line(&site.root);
    assert_eq!(line["status"], "failed", "{line:#}");
}

/// Deterministic bytes that do not compress away.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// As the manifest writes a digest.
fn sha256_hex(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, b)))
}

/// Puts each `(key, bytes, content type)` into `bucket` with boto3.
fn s3_put(s3: &S3Server, dir: &Path, bucket: &str, objects: &[(String, Vec<u8>, Option<&str>)]) {
    let mut spec = Vec::new();
    for (i, (key, bytes, ct)) in objects.iter().enumerate() {
        let file = dir.join(format!("object-{i}"));
        std::fs::write(&file, bytes).unwrap();
        spec.push(serde_json::json!({"key": key, "file": file, "type": ct}));
    }
    let spec_file = dir.join("objects.json");
    std::fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let script = "import json\n\
        for o in json.load(open(sys.argv[2])):\n    \
            extra = {'ContentType': o['type']} if o['type'] else {}\n    \
            s3.put_object(Bucket=sys.argv[1], Key=o['key'], Body=open(o['file'], 'rb').read(), **extra)\n";
    s3.boto(ACCESS_KEY, SECRET_KEY, script, &[bucket, spec_file.to_str().unwrap()]).unwrap();
}

/// Every object of `bucket` as boto3 reads it: key -> (SHA-256, size, content type, ETag).
fn s3_objects(s3: &S3Server, bucket: &str) -> BTreeMap<String, (String, u64, String, String)> {
    let script = "import json, hashlib\n\
        out = {}\n\
        for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[1]):\n    \
            for c in page.get('Contents', []):\n        \
                o = s3.get_object(Bucket=sys.argv[1], Key=c['Key'])\n        \
                body = o['Body'].read()\n        \
                out[c['Key']] = [hashlib.sha256(body).hexdigest(), len(body), o['ContentType'], o['ETag']]\n\
        print(json.dumps(out))\n";
    let out = s3.boto(ACCESS_KEY, SECRET_KEY, script, &[bucket]).unwrap();
    let v: BTreeMap<String, (String, u64, String, String)> = serde_json::from_str(&out).unwrap();
    v
}

/// The objects versitygw keeps under `dir` (its posix backend): key -> ((inode,
/// modification time in ns), bytes); its own temporary and upload files left out.
fn stored_files(dir: &Path) -> BTreeMap<String, ((u64, i128), Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with(".sgw") {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                todo.push(path);
            } else if m.is_file() {
                let key = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                let when = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
                out.insert(key, ((m.ino(), when), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// Removes every object of `bucket` and the bucket itself.
fn s3_remove_bucket(s3: &S3Server, bucket: &str) {
    let script = "for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[1]):\n    \
            for c in page.get('Contents', []):\n        \
                s3.delete_object(Bucket=sys.argv[1], Key=c['Key'])\n\
        s3.delete_bucket(Bucket=sys.argv[1])\n";
    s3.boto(ACCESS_KEY, SECRET_KEY, script, &[bucket]).unwrap();
}

#[test]
fn backup_mirrors_the_app_bucket_and_restore_puts_every_object_back_byte_for_byte() {
    let Some(s3) = S3Server::get() else { return };
    let Some(site) = s3_site(s3, "") else { return };
    let _exclusive = s3.exclusive();
    // Over the 5 MiB chunk (a multipart upload on restore), names with spaces, unicode,
    // slashes and URL-special characters, an empty object, and enough objects for four
    // listing pages of three.
    let big = noise((5 << 20) + 1234, 7);
    let mut objects: Vec<(String, Vec<u8>, Option<&str>)> = vec![
        ("big.bin".into(), big.clone(), None),
        ("reports/2026/Q4 summary.pdf".into(), b"%PDF-1.7 the quarterly summary".to_vec(), Some("application/pdf")),
        ("ünïcödé/名前 with spaces.txt".into(), "grüße".as_bytes().to_vec(), Some("text/plain; charset=utf-8")),
        ("a/b/c/deep+plus&amp=1?.txt".into(), b"deep".to_vec(), None),
        ("empty".into(), Vec::new(), None),
    ];
    for i in 1..=5 {
        objects.push((format!("exports/{i:02}.csv"), noise(100 + i, i as u64), Some("text/csv")));
    }
    s3_put(s3, site.dir.path(), APP_BUCKET, &objects);
    let before = s3_objects(s3, APP_BUCKET);
    assert_eq!(before.len(), objects.len());

    std::fs::create_dir_all(on_site(&site.root, "/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    let host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    script_live_site(&host, b"app dump stand-in".to_vec(), Vec::new());
    let out = site.dir.path().join("buckets.airlock-backup");
    let r = backup::create(&host, &live_options(out.clone(), s3), &Silent).unwrap();

    // The manifest: one part per object with its key, size and SHA-256; the bucket's totals.
    let total: u64 = objects.iter().map(|o| o.1.len() as u64).sum();
    assert_eq!(r.manifest.buckets.len(), 1, "{:?}", r.manifest.buckets);
    let b = &r.manifest.buckets[0];
    assert_eq!((b.name.as_str(), b.objects, b.bytes), (APP_BUCKET, objects.len() as u64, total));
    assert!(b.endpoint.starts_with("https://s3.platform.example.test"), "{}", b.endpoint);
    let by_key: BTreeMap<String, &backup::Part> = r
        .manifest
        .parts
        .iter()
        .filter(|p| p.kind == PartKind::Object)
        .map(|p| (p.object.as_ref().unwrap().key.clone(), p))
        .collect();
    for (key, bytes, ct) in &objects {
        let p = by_key.get(key).unwrap_or_else(|| panic!("{key} is in the manifest: {by_key:?}"));
        assert_eq!((p.size, p.sha256.clone()), (bytes.len() as u64, sha256_hex(bytes)), "{key}");
        if let Some(ct) = ct {
            assert_eq!(p.object.as_ref().unwrap().content_type.as_deref(), Some(*ct), "{key}");
        }
    }
    // Each object's bytes are in the archive as its part, as the real age opens it.
    let archived: BTreeMap<String, Vec<u8>> = entries(&decrypt(&out, &site.key)).into_iter().collect();
    for (key, bytes, _) in &objects {
        assert_eq!(&archived[&by_key[key].name], bytes, "{key}");
    }
    let manifest_text = String::from_utf8(archived["manifest.json"].clone()).unwrap();
    assert!(
        !manifest_text.contains(SECRET_KEY) && !manifest_text.contains(ACCESS_KEY),
        "no credential in the manifest"
    );

    // verify checks each object and says what each bucket holds.
    let verifier = RecordingHost::with_root(site.root.clone(), true).unwrap();
    verifier.expect_command(&["pg_restore", "--list"], CommandOutput::ok(""));
    let vopts = VerifyOptions { file: out.clone(), identity: site.key.clone(), now_unix: 1_765_130_400 };
    let v = backup::verify(&verifier, &vopts, &Silent).unwrap();
    assert_eq!(v.buckets, r.manifest.buckets);
    assert_eq!(v.parts_of(PartKind::Object).count(), objects.len());
    let shown = serde_json::to_string(&v).unwrap();
    assert!(!shown.contains(SECRET_KEY) && !shown.contains(ACCESS_KEY), "no credential in verify's report");

    // An archive whose object was changed (re-made with the real age) is refused, naming its part.
    let pdf_part = by_key["reports/2026/Q4 summary.pdf"].name.clone();
    let mut tar_bytes = decrypt(&out, &site.key);
    let at = tar_bytes.windows(9).position(|w| w == b"quarterly").unwrap();
    tar_bytes[at] = b'Q';
    let changed = site.dir.path().join("changed.airlock-backup");
    let mut age = Command::new(require_tool("age").unwrap())
        .args(["-r", &site.public, "-o"])
        .arg(&changed)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(age.stdin.as_mut().unwrap(), &zstd::encode_all(tar_bytes.as_slice(), 3).unwrap())
        .unwrap();
    drop(age.stdin.take());
    assert!(age.wait().unwrap().success());
    let e =
        backup::verify(&verifier, &VerifyOptions { file: changed, ..vopts.clone() }, &Silent).unwrap_err().to_string();
    assert!(e.contains(&format!("part {pdf_part}: does not match the manifest")), "{e}");

    // Restore into an emptied server: the bucket is made again and every object comes
    // back byte for byte with its content type; the big one as a multipart upload.
    s3_remove_bucket(s3, APP_BUCKET);
    let ropts = RestoreOptions {
        file: out.clone(),
        identity: site.key.clone(),
        install: Default::default(),
        now_unix: 1_765_130_400,
        s3: s3_options(s3),
    };
    let ids = backup::load_identities(&site.key).unwrap();
    let mut journal = restore::RestoreJournal::default();
    let restore_host = RecordingHost::with_root(site.root.clone(), true).unwrap();
    restore::restore_buckets(&restore_host, &ropts, &ids, &v, &mut journal).unwrap();
    assert!(journal.notes.iter().any(|n| n.contains("made bucket airlock-app")), "{:?}", journal.notes);
    let after = s3_objects(s3, APP_BUCKET);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    for (key, (sha, size, ct, etag)) in &after {
        let (bsha, bsize, bct, _) = &before[key];
        assert_eq!((sha, size, ct), (bsha, bsize, bct), "{key} is back as it was");
        // S3 marks an object made of parts with `-<parts>` in its ETag.
        assert_eq!(etag.ends_with("-2\""), key == "big.bin", "{key}: {etag}");
    }
    let journal_text = serde_json::to_string(&journal).unwrap();
    assert!(!journal_text.contains(SECRET_KEY) && !journal_text.contains(ACCESS_KEY));

    // A restore cut short after two objects (the multipart one among them), then run
    // again: the second run puts only the rest. Against versitygw, which checks every
    // signature (the SHA-256 mark is a signed header) and keeps each object as a file,
    // so an object PUT again is a new file there, whatever the client says.
    let (cert, cert_key) = s3.cert_files();
    if let Some(gw) = airlock_tests::s3::Versity::start(ACCESS_KEY, SECRET_KEY, &cert, &cert_key) {
        let gw_opts = RestoreOptions { s3: S3Options { connect: Some(gw.addr), ..s3_options(s3) }, ..ropts.clone() };
        let bucket_dir = gw.dir().join(APP_BUCKET);
        std::env::set_var(restore::FAIL_AFTER_OBJECTS_ENV, "2");
        let mut journal = restore::RestoreJournal::default();
        let e = restore::restore_buckets(&restore_host, &gw_opts, &ids, &v, &mut journal).unwrap_err().to_string();
        std::env::remove_var(restore::FAIL_AFTER_OBJECTS_ENV);
        assert!(e.contains("test fault"), "{e}");
        let first = stored_files(&bucket_dir);
        assert_eq!(first.len(), 2, "{:?}", first.keys());
        assert!(first.contains_key("big.bin"), "the multipart object is among the first two: {:?}", first.keys());
        let mut journal = restore::RestoreJournal::default();
        restore::restore_buckets(&restore_host, &gw_opts, &ids, &v, &mut journal).unwrap();
        let n = objects.len() - 2;
        assert!(
            journal.notes.iter().any(|l| l.contains(&format!("{n} objects put back"))
                && l.contains("2 already there with the same size and SHA-256")),
            "{:?}",
            journal.notes
        );
        let second = stored_files(&bucket_dir);
        for (key, (file, bytes)) in &first {
            assert_eq!(&second[key].0, file, "{key} was not put again (same file, same modification time)");
            assert_eq!(&second[key].1, bytes);
        }
        assert_eq!(second.len(), objects.len(), "{:?}", second.keys());
        for (key, bytes, _) in &objects {
            assert_eq!(&second[key].1, bytes, "{key} is back byte for byte");
        }
        // A third run finds everything there and puts nothing.
        let mut journal = restore::RestoreJournal::default();
        restore::restore_buckets(&restore_host, &gw_opts, &ids, &v, &mut journal).unwrap();
        assert!(journal.notes.iter().any(|l| l.contains("0 objects put back")), "{:?}", journal.notes);
        assert_eq!(
            stored_files(&bucket_dir).into_iter().map(|(k, v)| (k, v.0)).collect::<BTreeMap<_, _>>(),
            second.into_iter().map(|(k, v)| (k, v.0)).collect::<BTreeMap<_, _>>()
        );
    }
    // The others find the bucket empty again.
    s3_remove_bucket(s3, APP_BUCKET);
    s3.boto(ACCESS_KEY, SECRET_KEY, "s3.create_bucket(Bucket=sys.argv[1])\n", &[APP_BUCKET]).unwrap();
}

#[test]
fn backup_s3_errors_name_the_bucket_and_endpoint_with_a_hint_and_no_credential() {
    let Some(s3) = S3Server::get() else { return };
    // The site's own self-signed CA: the server's certificate is not one it vouches for.
    let Some(site) = installed_site(true, "") else { return };
    for (file, value) in [("app-s3-access-key", ACCESS_KEY), ("app-s3-secret-key", SECRET_KEY)] {
        std::fs::write(on_site(&site.root, &format!("/var/lib/airlock/secrets/{file}")), format!("{value}\n")).unwrap();
    }
    let _shared = s3.shared();
    std::fs::create_dir_all(on_site(&site.root, "/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for (connect, cause, hint) in [
        (closed, "Connection Failed", "the S3 API did not answer"),
        (s3.addr, "certificate", "not one the site CA (/etc/airlock/pki/ca.crt) vouches for"),
    ] {
        let host = RecordingHost::with_root(site.root.clone(), true).unwrap();
        script_live_site(&host, b"app dump stand-in".to_vec(), Vec::new());
        let out = site.dir.path().join("failed.airlock-backup");
        let opts = CreateOptions {
            output: Some(out.clone()),
            keep: None,
            s3: S3Options { connect: Some(connect), ..Default::default() },
        };
        let e = backup::create(&host, &opts, &Silent).unwrap_err().to_string();
        let subject = format!("bucket {APP_BUCKET} at https://s3.platform.example.test (at {connect})");
        assert!(e.contains(&subject) && e.contains(cause) && e.contains(hint), "{e}");
        assert!(!e.contains(ACCESS_KEY) && !e.contains(SECRET_KEY) && !e.contains("X-Amz"), "no credential: {e}");
        assert!(!out.exists() && !site.dir.path().join("failed.airlock-backup.partial").exists());
    }
}

#[test]
fn backup_s3_refused_credentials_or_a_missing_bucket_name_the_bucket_with_a_hint_and_no_credential() {
    let Some(s3) = S3Server::get() else { return };
    let (cert, key) = s3.cert_files();
    // A server that checks every signature; it has no bucket.
    let Some(gw) = airlock_tests::s3::Versity::start(ACCESS_KEY, SECRET_KEY, &cert, &key) else { return };
    let Some(site) = s3_site(s3, "") else { return };
    std::fs::create_dir_all(on_site(&site.root, "/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    let out = site.dir.path().join("refused.airlock-backup");
    let opts = CreateOptions {
        output: Some(out.clone()),
        keep: None,
        s3: S3Options { connect: Some(gw.addr), ..Default::default() },
    };
    let create = || {
        let host = RecordingHost::with_root(site.root.clone(), true).unwrap();
        script_live_site(&host, b"app dump stand-in".to_vec(), Vec::new());
        backup::create(&host, &opts, &Silent).unwrap_err().to_string()
    };
    let subject = format!("bucket {APP_BUCKET} at https://s3.platform.example.test (at {})", gw.addr);
    // The site's credentials: accepted, and the bucket is missing.
    let e = create();
    assert!(e.contains(&subject) && e.contains("answered 404 NoSuchBucket"), "{e}");
    assert!(e.contains(&format!("hint: the bucket {APP_BUCKET} does not exist on MinIO")), "{e}");
    // A secret the server does not have: refused.
    let secret_file = on_site(&site.root, "/var/lib/airlock/secrets/app-s3-secret-key");
    std::fs::write(&secret_file, "an0ther-5ecret-the-server-does-not-have\n").unwrap();
    let e = create();
    assert!(e.contains(&subject) && e.contains("answered 403"), "{e}");
    assert!(
        e.contains("hint: MinIO does not accept the app's S3 credentials") && e.contains("app-s3-secret-key"),
        "{e}"
    );
    assert!(!e.contains(ACCESS_KEY) && !e.contains(SECRET_KEY) && !e.contains("X-Amz"), "no credential: {e}");
    assert!(!out.exists() && !site.dir.path().join("refused.airlock-backup.partial").exists());
}
