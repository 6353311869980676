//! The Keycloak proving ground (`tests/src/keycloak.rs`): `airlock install` of the demo
//! into a target root, then the real Keycloak started from exactly what the installer
//! wrote (the rendered keycloakx chart's container, its Secrets and ConfigMaps, its
//! mounted realm and truststore), behind nginx serving the ingress certificate from
//! the site PKI, against a real slapd with TLS. Each test starts one Keycloak and runs
//! its checks in order; a lock keeps two servers from starting at once on a small
//! machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use airlock_tests::keycloak::{
    enc, generated_secrets, jwt_claims, keycloak_dist, login_form_action, query_param, redact, render_helm_chart,
    Client, Keycloak, KeycloakHome, Objects, Pod, Proxy, RealmSync,
};
use airlock_tests::slapd::{self, Directory, Slapd};
use airlock_tests::{airlock_with_answers, build_demo_bundle, build_demo_variant, cargo_bin, demo_dir, helm};
use serde_json::json;

/// One Keycloak at a time: each takes a core for a minute to start.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const REALM: &str = "airlock";
const REDIRECT: &str = "https://app.platform.example.test/callback";

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The LDAP answers for a directory: URL, CA, bind account, where users and groups are.
struct LdapAnswers {
    url: String,
    ca_file: PathBuf,
    bind_dn: String,
    bind_password: String,
    users_dn: String,
    groups_dn: String,
    preset: &'static str,
}

impl LdapAnswers {
    fn of(d: &Slapd) -> LdapAnswers {
        let (bind_dn, bind_password, users_dn, groups_dn, preset) = match d.directory {
            Directory::OpenLdap => (
                slapd::OPENLDAP_BIND_DN,
                slapd::OPENLDAP_BIND_PW,
                slapd::OPENLDAP_USERS_DN,
                slapd::OPENLDAP_GROUPS_DN,
                "openldap",
            ),
            Directory::ActiveDirectory => {
                (slapd::AD_BIND_DN, slapd::AD_BIND_PW, slapd::AD_USERS_DN, slapd::AD_GROUPS_DN, "active-directory")
            }
        };
        LdapAnswers {
            url: d.ldaps_url(),
            ca_file: d.ca_pem(),
            bind_dn: bind_dn.into(),
            bind_password: bind_password.into(),
            users_dn: users_dn.into(),
            groups_dn: groups_dn.into(),
            preset,
        }
    }

    fn section(&self) -> String {
        format!(
            "ldap:\n  url: {}\n  ca_file: {}\n  bind_dn: \"{}\"\n  bind_password: \"{}\"\n  users_dn: \"{}\"\n  groups_dn: \"{}\"\n  preset: {}\n",
            self.url,
            self.ca_file.display(),
            self.bind_dn,
            self.bind_password,
            self.users_dn,
            self.groups_dn,
            self.preset
        )
    }
}

/// The demo answers with `ldap` replaced by the given directory's, plus `extra`.
fn site_answers(dir: &Path, ldap: &LdapAnswers, extra: &str) -> PathBuf {
    let demo = fs::read_to_string(demo_dir().join("answers.yaml")).unwrap();
    let cut = demo.find("\nldap:").expect("the demo answers have an ldap section");
    let path = dir.join("answers.yaml");
    let mut text = format!("{}{}{extra}", &demo[..cut + 1], ldap.section());
    if extra.contains("\nha:") || extra.starts_with("ha:") {
        text = text.replace("profile: single-node", "profile: ha");
    }
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// An installed site and the Keycloak started from it.
/// `airlock install` of the demo into a fresh root, and the Keycloak pod it defines.
struct Site {
    _work: tempfile::TempDir,
    bundle: PathBuf,
    answers: PathBuf,
    root: PathBuf,
    pod: Pod,
    output: String,
}

impl Site {
    fn install(ldap: &LdapAnswers, extra: &str) -> Option<Site> {
        let work = tempfile::tempdir().unwrap();
        let bundle = build_demo_bundle(work.path(), &[]);
        Site::install_bundle(work, bundle, ldap, extra)
    }

    /// `airlock install` of `bundle` with the demo answers for `ldap` (and `extra`).
    fn install_bundle(work: tempfile::TempDir, bundle: PathBuf, ldap: &LdapAnswers, extra: &str) -> Option<Site> {
        let helm = helm()?;
        let root = work.path().join("root");
        fs::create_dir(&root).unwrap();
        let answers = site_answers(work.path(), ldap, extra);
        let o = airlock_with_answers("install", &bundle, &answers, &root, &["--yes"]);
        assert!(o.status.success(), "airlock install: {}", text(&o));
        let pod = Pod::from_root(&root, &helm, work.path()).unwrap();
        Some(Site { _work: work, bundle, answers, root, pod, output: text(&o) })
    }

    /// `airlock preflight` of the bundle with the site's answers: the check `id`.
    fn preflight_check(&self, id: &str) -> serde_json::Value {
        let o = airlock_with_answers("preflight", &self.bundle, &self.answers, &self.root, &["--output", "json"]);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no check {id}: {r}"))
    }
}

struct Ground {
    site: Site,
    root: PathBuf,
    objects: Objects,
    pod: Pod,
    keycloak: Keycloak,
    proxy: Proxy,
    client: Client,
    /// Every text the harness printed or could print: checked for secrets at the end.
    seen: Vec<(String, String)>,
    secrets: Vec<String>,
    started_in: std::time::Duration,
}

impl Ground {
    /// Installs the demo with `ldap` (and `extra` answers) into a fresh root and starts
    /// Keycloak and the proxy from it. `None` when a tool is missing (skip).
    fn up(home: &KeycloakHome, ldap: &LdapAnswers, extra: &str) -> Option<Ground> {
        Self::up_from(home, ldap, Site::install(ldap, extra)?)
    }

    /// Starts Keycloak and the proxy from an installed site.
    fn up_from(home: &KeycloakHome, ldap: &LdapAnswers, site: Site) -> Option<Ground> {
        let objects = Objects::read(&site.root).unwrap();
        let mut secrets = generated_secrets(&site.root);
        secrets.push(ldap.bind_password.clone());
        let t0 = Instant::now();
        let keycloak = Keycloak::start(home, &site.pod, &secrets)
            .unwrap_or_else(|e| panic!("{}", redact(&e.to_string(), &secrets)));
        let started_in = t0.elapsed();
        eprintln!("keycloak proving ground: Keycloak ready in {:.1} s", started_in.as_secs_f64());
        let pod = site.pod.clone();
        let proxy = Proxy::start(&pod.ingress_host, &pod.ingress_cert_pem, &pod.ingress_key_pem, keycloak.http_port)?;
        let client = Client::new(&site.root.join("etc/airlock/pki/ca.crt"), &proxy)?;
        let seen = vec![("airlock install output".to_string(), site.output.clone())];
        Some(Ground { root: site.root.clone(), site, objects, pod, keycloak, proxy, client, seen, secrets, started_in })
    }

    fn base(&self) -> String {
        format!("https://{}", self.pod.ingress_host)
    }

    fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.base())
    }

    /// The app's view of its OIDC client: issuer, client id, and the secret from the
    /// Secret the installer wrote for the app.
    fn app_client(&self) -> (String, String, String) {
        let work = tempfile::tempdir().unwrap();
        let helm = helm().unwrap();
        let (_, ns, values) = render_helm_chart(&self.root, "airlock-airlock-app.yaml", &helm, work.path()).unwrap();
        let issuer = values["keycloak"]["issuerUrl"].as_str().unwrap().to_string();
        let client_id = values["keycloak"]["clientId"].as_str().unwrap().to_string();
        let secret_name = values["keycloak"]["clientSecret"].as_str().unwrap();
        let secret = self.objects.secret(&ns, secret_name, "client-secret").unwrap();
        (issuer, client_id, secret)
    }

    /// An admin access token for the master realm, with the generated credentials.
    fn admin_token(&self) -> String {
        let ns = &self.pod.namespace;
        let user = self.objects.secret(ns, "keycloak-admin", "username").unwrap();
        let pw = self.objects.secret(ns, "keycloak-admin", "password").unwrap();
        let r = self
            .client
            .post_form(
                &format!("{}/realms/master/protocol/openid-connect/token", self.base()),
                &[("grant_type", "password"), ("client_id", "admin-cli"), ("username", &user), ("password", &pw)],
            )
            .unwrap();
        assert_eq!(r.status, 200, "admin login to the master realm: {}", self.redact(&r.body));
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    fn admin(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> airlock_tests::keycloak::Response {
        let token = self.admin_token();
        let b = body.map(|b| b.to_string());
        self.client
            .request(
                method,
                &format!("{}/admin/realms/{path}", self.base()),
                b.as_deref().map(|b| ("application/json", b)),
                Some(&token),
            )
            .unwrap()
    }

    fn redact(&self, t: &str) -> String {
        redact(t, &self.secrets)
    }

    /// The authorization code flow of the app's client as a browser and the app run
    /// it: the login page, the form post with the user's password, the redirect back
    /// to the app with a code, the code exchanged with the client secret. `Err` with
    /// the login page's status when the login is refused.
    fn login(&self, username: &str, password: &str) -> Result<serde_json::Value, String> {
        let (issuer, client_id, secret) = self.app_client();
        self.login_as(&issuer, &client_id, &secret, REDIRECT, None, username, password)
    }

    /// Grafana's client as the installer configured Grafana: its id from the
    /// `grafana.ini` in the HelmChart's values, its secret from the Secret Grafana mounts.
    fn grafana_client(&self) -> (String, String) {
        let path = self.root.join("var/lib/rancher/k3s/server/manifests/airlock-grafana.yaml");
        let hc: serde_yaml::Value = serde_yaml::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        let values: serde_yaml::Value = serde_yaml::from_str(hc["spec"]["valuesContent"].as_str().unwrap()).unwrap();
        let oauth = &values["grafana.ini"]["auth.generic_oauth"];
        assert_eq!(
            oauth["auth_url"].as_str(),
            Some(format!("{}/protocol/openid-connect/auth", self.issuer()).as_str())
        );
        let id = oauth["client_id"].as_str().unwrap().to_string();
        (id, self.objects.secret("monitoring", "grafana-oidc", "client-secret").unwrap())
    }

    /// The authorization code flow of an OIDC client as a browser and the client run
    /// it: the login page, the form post with the user's password, the redirect back
    /// to the client with a code, the code exchanged with the client secret (and the
    /// PKCE verifier, when given). `Err` with the login page's status when the login is
    /// refused.
    #[allow(clippy::too_many_arguments)]
    fn login_as(
        &self,
        issuer: &str,
        client_id: &str,
        secret: &str,
        redirect: &str,
        pkce_verifier: Option<&str>,
        username: &str,
        password: &str,
    ) -> Result<serde_json::Value, String> {
        self.client.forget_cookies();
        let mut auth = format!(
            "{issuer}/protocol/openid-connect/auth?client_id={}&response_type=code&scope=openid&redirect_uri={}&state=st-1",
            enc(client_id),
            enc(redirect)
        );
        if let Some(v) = pkce_verifier {
            use base64::Engine as _;
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(ring::digest::digest(&ring::digest::SHA256, v.as_bytes()));
            auth.push_str(&format!("&code_challenge={challenge}&code_challenge_method=S256"));
        }
        let page = self.client.get(&auth).unwrap();
        if page.status != 200 {
            return Err(format!("the login page answered {}", page.status));
        }
        let action = login_form_action(&page.body).unwrap_or_else(|| panic!("no login form in:\n{}", page.body));
        assert!(action.starts_with(issuer), "the form posts to the issuer's host: {action}");
        let r = self
            .client
            .post_form(&action, &[("username", username), ("password", password), ("credentialId", "")])
            .unwrap();
        if r.status != 302 {
            let msg =
                if r.body.contains("Invalid username or password") { "invalid username or password" } else { "other" };
            return Err(format!("login answered {} ({msg})", r.status));
        }
        let location = r.location.unwrap_or_default();
        assert!(location.starts_with(redirect), "redirected back to the client: {location}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("st-1"));
        let code = query_param(&location, "code").expect("a code");
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("client_secret", secret),
        ];
        if let Some(v) = pkce_verifier {
            form.push(("code_verifier", v));
        }
        let token = self.client.post_form(&format!("{issuer}/protocol/openid-connect/token"), &form).unwrap();
        assert_eq!(token.status, 200, "code exchange with the client secret: {}", self.redact(&token.body));
        Ok(token.json())
    }

    /// Fails if any secret shows in a text the harness printed or could print.
    fn assert_no_secret_in_logs(&mut self) {
        self.seen.push(("Keycloak log".into(), self.keycloak.log_raw()));
        self.seen.push(("proxy logs".into(), self.proxy.logs()));
        for (what, t) in &self.seen {
            for s in &self.secrets {
                assert!(!t.contains(s.as_str()), "a generated or given secret shows in the {what}");
            }
        }
    }
}

/// `airlock ldap test` on answers holding `ldap`: whether it passed, and its output.
/// The realm's `grafana` client, with the id and secret the installer gave Grafana:
/// a directory user gets tokens with the groups claim Grafana maps to roles; it
/// redirects only to Grafana's callback, and PKCE is required.
fn grafana_logs_directory_users_in_through_its_own_client(g: &Ground) {
    let (id, secret) = g.grafana_client();
    let issuer = g.issuer();
    let callback = "https://grafana.platform.example.test/login/generic_oauth";
    let verifier = "pkce-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
    let token = g.login_as(&issuer, &id, &secret, callback, Some(verifier), "alice", "alice-pw").unwrap();
    let claims = jwt_claims(token["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["azp"], id.as_str(), "{claims}");
    assert_eq!(claims["preferred_username"], "alice", "{claims}");
    assert!(claims["groups"].as_array().unwrap().iter().any(|x| x == "admins"), "{claims}");
    // The app's callback is not Grafana's: refused before any login form.
    let other = g.login_as(&issuer, &id, &secret, REDIRECT, Some(verifier), "alice", "alice-pw");
    assert!(other.is_err(), "the grafana client redirected to the app");
    // Without PKCE the flow is refused.
    assert!(g.login_as(&issuer, &id, &secret, callback, None, "alice", "alice-pw").is_err(), "no PKCE, yet a login");
}

fn airlock_ldap_test(dir: &Path, ldap: &LdapAnswers) -> (bool, String) {
    let answers = dir.join("ldap-answers.yaml");
    fs::write(
        &answers,
        format!(
            "profile: single-node\nnode: {{name: n1, ip: 192.0.2.10}}\ncluster: {{ingress_domain: platform.example.test}}\n{}",
            ldap.section()
        ),
    )
    .unwrap();
    let o = Command::new(cargo_bin("airlock"))
        .args(["ldap", "test", "--answers"])
        .arg(&answers)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (o.status.success(), text(&o))
}

/// Keycloak's own LDAP checks (the admin console's "Test connection" and "Test
/// authentication") on the realm's LDAP component with `changes` applied: whether
/// both passed, and what it said.
fn keycloak_ldap_test(g: &Ground, ldap: &LdapAnswers, bind_password: Option<&str>) -> (bool, String) {
    let comps = g.admin("GET", &format!("{REALM}/components?type=org.keycloak.storage.UserStorageProvider"), None);
    assert_eq!(comps.status, 200, "{}", comps.body);
    let comp = &comps.json()[0];
    let mut said = String::new();
    for action in ["testConnection", "testAuthentication"] {
        let body = json!({
            "action": action,
            "connectionUrl": ldap.url,
            "bindDn": ldap.bind_dn,
            // The stored credential (the one imported from the installer's Secret)
            // unless the case gives another.
            "bindCredential": bind_password.unwrap_or("**********"),
            "useTruststoreSpi": comp["config"]["useTruststoreSpi"][0],
            "connectionTimeout": "5000",
            "startTls": comp["config"]["startTls"][0],
            "authType": "simple",
            "componentId": comp["id"],
        });
        let r = g.admin("POST", &format!("{REALM}/testLDAPConnection"), Some(&body));
        said.push_str(&format!("{action}: {} {}\n", r.status, r.body));
        if r.status != 204 {
            return (false, said);
        }
    }
    (true, said)
}

/// Changes the realm's LDAP component's users DN (admin API), returning the old one.
fn set_users_dn(g: &Ground, users_dn: &str) -> String {
    let comps = g.admin("GET", &format!("{REALM}/components?type=org.keycloak.storage.UserStorageProvider"), None);
    let mut comp = comps.json()[0].clone();
    let old = comp["config"]["usersDn"][0].as_str().unwrap().to_string();
    comp["config"]["usersDn"] = json!([users_dn]);
    let id = comp["id"].as_str().unwrap().to_string();
    let r = g.admin("PUT", &format!("{REALM}/components/{id}"), Some(&comp));
    assert_eq!(r.status, 204, "{}", r.body);
    old
}

fn keycloak_home() -> Option<KeycloakHome> {
    let dist = keycloak_dist()?;
    Some(KeycloakHome::under(&dist, Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap())
}

/// Good settings, wrong bind password, wrong CA, wrong users DN, unreachable host:
/// `airlock ldap test` and Keycloak give the same verdict on the same answers.
fn ldap_verdicts_agree(g: &Ground, good: &LdapAnswers, other_server: &Slapd, work: &Path) {
    let closed = airlock_tests::keycloak::free_port();
    let mut cases: Vec<(&str, LdapAnswers, bool)> = Vec::new();
    cases.push(("good settings", LdapAnswers { ..clone(good) }, true));
    cases.push(("wrong bind password", LdapAnswers { bind_password: "not-the-password".into(), ..clone(good) }, false));
    // The answers' CA (the one installed into Keycloak's truststore) did not sign the
    // server's certificate: another directory with a CA of its own.
    cases.push(("wrong CA", LdapAnswers { url: other_server.ldaps_url(), ..clone(good) }, false));
    cases.push(("unreachable host", LdapAnswers { url: format!("ldaps://127.0.0.1:{closed}"), ..clone(good) }, false));
    for (what, ldap, expect) in &cases {
        let (airlock_ok, airlock_said) = airlock_ldap_test(work, ldap);
        let pw = (ldap.bind_password != good.bind_password).then_some(ldap.bind_password.as_str());
        let (kc_ok, kc_said) = keycloak_ldap_test(g, ldap, pw);
        assert_eq!(airlock_ok, *expect, "{what}: airlock ldap test:\n{airlock_said}");
        assert_eq!(kc_ok, *expect, "{what}: Keycloak's LDAP test:\n{kc_said}");
        eprintln!("keycloak proving ground: {what}: airlock ldap test {airlock_ok}, Keycloak {kc_ok}");
    }
    // A wrong users DN: Keycloak's test buttons only bind, so its verdict is the one
    // that counts on site: a directory user cannot log in.
    let wrong =
        LdapAnswers { users_dn: format!("ou=nobody,{}", good.users_dn.split_once(',').unwrap().1), ..clone(good) };
    let (airlock_ok, airlock_said) = airlock_ldap_test(work, &wrong);
    assert!(!airlock_ok, "wrong users DN: airlock ldap test passed:\n{airlock_said}");
    let old = set_users_dn(g, &wrong.users_dn);
    let user = first_user(good);
    let login = g.login(user, &format!("{user}-pw"));
    set_users_dn(g, &old);
    assert!(login.is_err(), "wrong users DN: Keycloak still logged {user} in");
    assert!(g.login(user, &format!("{user}-pw")).is_ok(), "the users DN restored, {user} logs in again");
}

fn first_user(l: &LdapAnswers) -> &'static str {
    if l.preset == "openldap" {
        "carol"
    } else {
        "bob"
    }
}

fn clone(l: &LdapAnswers) -> LdapAnswers {
    LdapAnswers {
        url: l.url.clone(),
        ca_file: l.ca_file.clone(),
        bind_dn: l.bind_dn.clone(),
        bind_password: l.bind_password.clone(),
        users_dn: l.users_dn.clone(),
        groups_dn: l.groups_dn.clone(),
        preset: l.preset,
    }
}

/// The first certificate of a PEM chain, whitespace-normalised.
fn first_cert(pem: &str) -> String {
    let end = pem.find("-----END CERTIFICATE-----").expect("a PEM certificate");
    pem[..end].split_whitespace().collect()
}

/// `airlock pki renew` re-issues the leaves and refreshes the TLS Secrets; the proxy,
/// re-reading the Secret as an ingress controller does once K3s re-applied it, serves
/// the new certificate, which verifies against the site CA; and a re-run of the install
/// finds the refreshed manifests exactly as it would write them.
fn renewal_reaches_the_ingress(g: &mut Ground) {
    let served_before = first_cert(&g.client.served_certificate(&g.proxy).unwrap());
    assert_eq!(served_before, first_cert(&g.pod.ingress_cert_pem));
    let o = Command::new(cargo_bin("airlock"))
        .args(["pki", "renew", "--within", "100000", "--root"])
        .arg(&g.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("refreshed TLS Secret manifest") && out.contains("keycloak-tls"), "{out}");
    g.seen.push(("pki renew output".into(), out));
    // The secrets changed: the new keys must not show either.
    g.secrets = generated_secrets(&g.root).into_iter().chain(g.secrets.clone()).collect();
    let helm = helm().unwrap();
    let work = tempfile::tempdir().unwrap();
    let pod = Pod::from_root(&g.root, &helm, work.path()).unwrap();
    assert_ne!(first_cert(&pod.ingress_cert_pem), served_before, "the Secret still holds the old certificate");
    let proxy =
        Proxy::start(&pod.ingress_host, &pod.ingress_cert_pem, &pod.ingress_key_pem, g.keycloak.http_port).unwrap();
    g.client = Client::new(&g.root.join("etc/airlock/pki/ca.crt"), &proxy).unwrap();
    g.proxy = proxy;
    let served_after = first_cert(&g.client.served_certificate(&g.proxy).unwrap());
    assert_eq!(served_after, first_cert(&pod.ingress_cert_pem));
    assert_ne!(served_after, served_before);
    // curl trusts only the site CA: discovery through the renewed certificate works.
    discovery_is_served_through_the_ingress(g);
    let again = airlock_with_answers("install", &g.site.bundle, &g.site.answers, &g.root, &["--yes"]);
    assert!(again.status.success(), "{}", text(&again));
    let again_out = text(&again);
    assert!(
        again_out.contains("0 steps applied"),
        "the install re-run rewrote something after the renewal:\n{again_out}"
    );
    g.seen.push(("install re-run".into(), again_out));
    g.pod = pod;
}

/// Discovery through the ingress, the chain against the site CA only, the app's
/// issuer the same as Keycloak's.
fn discovery_is_served_through_the_ingress(g: &Ground) {
    let (app_issuer, _, _) = g.app_client();
    assert_eq!(app_issuer, g.issuer(), "the app's issuer");
    assert_eq!(g.issuer(), "https://keycloak.platform.example.test/realms/airlock");
    let r = g.client.get(&format!("{}/.well-known/openid-configuration", g.issuer())).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.json();
    assert_eq!(d["issuer"], g.issuer());
    assert_eq!(d["token_endpoint"], format!("{}/protocol/openid-connect/token", g.issuer()));
}

fn assert_claims(token: &serde_json::Value, user: &str, email: &str, given: &str, family: &str, group: &str) {
    for key in ["access_token", "id_token"] {
        let c = jwt_claims(token[key].as_str().unwrap()).unwrap();
        assert_eq!(c["iss"], "https://keycloak.platform.example.test/realms/airlock", "{key}: {c}");
        assert_eq!(c["preferred_username"], user, "{key}: {c}");
        assert_eq!(c["email"], email, "{key}: {c}");
        assert_eq!(c["given_name"], given, "{key}: {c}");
        assert_eq!(c["family_name"], family, "{key}: {c}");
        let groups: Vec<&str> =
            c["groups"].as_array().map(|a| a.iter().filter_map(|g| g.as_str()).collect()).unwrap_or_default();
        assert!(groups.contains(&group), "{key}: groups {groups:?} lack {group}: {c}");
    }
}

#[test]
fn keycloak_on_an_openldap_site_imports_the_realm_serves_oidc_through_the_ingress_and_logs_directory_users_in() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let Some(home) = keycloak_home() else { return };
    let Some(dir) = Slapd::start(Directory::OpenLdap) else { return };
    let Some(other) = Slapd::start(Directory::OpenLdap) else { return };
    let ldap = LdapAnswers::of(&dir);
    let Some(mut g) = Ground::up(&home, &ldap, "") else { return };

    discovery_is_served_through_the_ingress(&g);
    let token = g.login("alice", "alice-pw").unwrap();
    assert_claims(&token, "alice", "alice@example.org", "Alice", "Example", "admins");
    assert_eq!(g.login("alice", "wrong-pw").unwrap_err(), "login answered 200 (invalid username or password)");
    assert_eq!(g.login("mallory", "mallory-pw").unwrap_err(), "login answered 200 (invalid username or password)");
    let _ = g.admin_token();
    grafana_logs_directory_users_in_through_its_own_client(&g);

    let work = tempfile::tempdir().unwrap();
    ldap_verdicts_agree(&g, &ldap, &other, work.path());
    renewal_reaches_the_ingress(&mut g);
    g.assert_no_secret_in_logs();
    eprintln!(
        "keycloak proving ground (OpenLDAP): Keycloak start {:.1} s, whole test {:.1} s",
        g.started_in.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn keycloak_on_an_active_directory_site_logs_directory_users_in_with_their_groups() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let Some(home) = keycloak_home() else { return };
    let Some(dir) = Slapd::start(Directory::ActiveDirectory) else { return };
    let Some(other) = Slapd::start(Directory::ActiveDirectory) else { return };
    let ldap = LdapAnswers::of(&dir);
    let Some(mut g) = Ground::up(&home, &ldap, "") else { return };

    discovery_is_served_through_the_ingress(&g);
    let token = g.login("alice", "alice-pw").unwrap();
    assert_claims(&token, "alice", "alice@corp.example", "Alice", "Example", "platform-admins");
    assert!(g.login("alice", "wrong-pw").is_err());
    assert!(g.login("mallory", "mallory-pw").is_err());
    let work = tempfile::tempdir().unwrap();
    ldap_verdicts_agree(&g, &ldap, &other, work.path());
    g.assert_no_secret_in_logs();
    eprintln!(
        "keycloak proving ground (Active Directory): Keycloak start {:.1} s, whole test {:.1} s",
        g.started_in.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

const KC_DB_USER: &str = "kc_user";
const KC_DB_PW: &str = "proving-ground-kc-db-pw-7c1e";

/// The answers of the first of three HA servers naming Keycloak's external database.
fn ha_extra(port: u16, ca: &Path, password: &str) -> String {
    format!(
        "ha:\n  servers:\n    - {{name: demo-node, ip: 192.0.2.10}}\n    - {{name: demo-node-2, ip: 192.0.2.11}}\n    - {{name: demo-node-3, ip: 192.0.2.12}}\n\
         keycloak_database:\n  host: localhost\n  port: {port}\n  name: keycloak\n  username: {KC_DB_USER}\n  password: {password}\n  ca_file: {}\n",
        ca.display()
    )
}

#[test]
fn keycloak_in_ha_runs_on_the_external_postgresql_with_the_installers_settings_and_preflight_names_a_bad_login() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let Some(home) = keycloak_home() else { return };
    let Some(pg) = airlock_tests::postgres::TlsPostgres::start(KC_DB_USER, KC_DB_PW, "keycloak") else { return };
    let Some(dir) = Slapd::start(Directory::OpenLdap) else { return };
    let ldap = LdapAnswers::of(&dir);
    let Some(mut g) = Ground::up(&home, &ldap, &ha_extra(pg.port, &pg.ca_pem(), KC_DB_PW)) else { return };
    g.secrets.push(KC_DB_PW.into());
    // The settings are the installer's, unchanged: verify-full against the answers' CA.
    assert_eq!(g.pod.env.get("KC_DB").map(String::as_str), Some("postgres"));
    assert_eq!(g.pod.env.get("KC_DB_URL_HOST").map(String::as_str), Some("localhost"));
    let props = g.pod.env.get("KC_DB_URL_PROPERTIES").cloned().unwrap_or_default();
    assert!(props.contains("sslmode=verify-full") && props.contains("sslrootcert="), "{props}");
    discovery_is_served_through_the_ingress(&g);
    let token = g.login("alice", "alice-pw").unwrap();
    assert_claims(&token, "alice", "alice@example.org", "Alice", "Example", "admins");
    // The live check of the same answers passes, over TLS verified as Keycloak does.
    let c = g.site.preflight_check("keycloak-database");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("TLS verified"), "{c}");
    g.seen.push(("preflight".into(), c.to_string()));
    g.assert_no_secret_in_logs();
    let started = g.started_in;
    drop(g);

    // A wrong password and a CA that did not sign the server's certificate: the
    // preflight check names the key to fix, and Keycloak, started from that install,
    // does not come up, for the same reason.
    for (what, extra, key, log_says) in [
        (
            "wrong password",
            ha_extra(pg.port, &pg.ca_pem(), "not-the-db-password"),
            "keycloak_database.password",
            "password authentication failed",
        ),
        (
            "untrusted server certificate",
            ha_extra(pg.port, &pg.other_ca_pem(), KC_DB_PW),
            "keycloak_database.ca_file",
            "PKIX path",
        ),
    ] {
        let Some(site) = Site::install(&ldap, &extra) else { return };
        let c = site.preflight_check("keycloak-database");
        assert_eq!(c["status"], "fail", "{what}: {c}");
        assert!(c["detail"].as_str().unwrap().contains(key), "{what}: the check names {key}: {c}");
        assert!(c["hint"].as_str().is_some_and(|h| !h.is_empty()), "{what}: {c}");
        let mut secrets = generated_secrets(&site.root);
        secrets.push(KC_DB_PW.into());
        let e = Keycloak::start_within(&home, &site.pod, &secrets, std::time::Duration::from_secs(240))
            .err()
            .unwrap_or_else(|| panic!("{what}: Keycloak started"));
        let e = e.to_string();
        assert!(e.contains(log_says), "{what}: Keycloak's log does not say `{log_says}`:\n{e}");
        // (The error text is redacted by the harness; the preflight output must not
        // need that.)
        assert!(!c.to_string().contains(KC_DB_PW), "{what}: the password shows in the preflight check");
        eprintln!("keycloak proving ground: {what}: preflight fails naming {key}; Keycloak does not start");
    }
    // Nothing listening: the check names the host and port to fix.
    let closed = airlock_tests::keycloak::free_port();
    let Some(site) = Site::install(&ldap, &ha_extra(closed, &pg.ca_pem(), KC_DB_PW)) else { return };
    let c = site.preflight_check("keycloak-database");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(c["detail"].as_str().unwrap().contains(&format!("localhost:{closed}")), "{c}");
    assert!(c["detail"].as_str().unwrap().contains("keycloak_database.host"), "{c}");
    eprintln!(
        "keycloak proving ground (HA, PostgreSQL): Keycloak start {:.1} s, whole test {:.1} s",
        started.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// The demo bundle at `version` whose single-node profile carries `keycloak` (the
/// vendor's side of the realm: the app client's redirect paths and token audiences).
fn release_with_profile(dir: &Path, version: &str, keycloak: &str) -> PathBuf {
    let out = dir.join(format!("release-{version}"));
    fs::create_dir_all(&out).unwrap();
    let stock = demo_dir().join("../../profiles/single-node.yaml");
    let profile = out.join("single-node.yaml");
    fs::write(&profile, format!("{}{keycloak}", fs::read_to_string(&stock).unwrap())).unwrap();
    let spec = fs::read_to_string(demo_dir().join("bundle.yaml"))
        .unwrap()
        .replace("version: 1.0.0\n", &format!("version: {version}\n"))
        .replace("../../profiles/single-node.yaml", profile.to_str().unwrap());
    build_demo_variant(&spec, &out, &[])
}

/// Runs the realm sync Job the root holds, as the cluster would after K3s applied it.
fn run_realm_sync(g: &mut Ground, home: &KeycloakHome, what: &str) -> RealmSync {
    let job = RealmSync::from_root(&g.root).unwrap();
    let run = job.run(home, &g.keycloak).unwrap();
    let said = g.redact(&run.output);
    assert!(run.success, "{what}: the realm sync Job {} failed:\n{said}", job.name);
    assert!(run.output.contains("matches this release"), "{what}: {said}");
    eprintln!("keycloak proving ground: {what}: realm sync {} took {:.1} s", job.name, run.took.as_secs_f64());
    g.seen.push((format!("realm sync output ({what})"), run.output));
    job
}

/// The Job runs the image the chart runs and calls the chart's Service: both taken
/// from the rendered chart, so a wrong name or port fails here.
fn realm_sync_job_matches_the_chart(g: &Ground, job: &RealmSync) {
    let helm = helm().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (rendered, ns, _) = render_helm_chart(&g.root, "airlock-keycloak.yaml", &helm, work.path()).unwrap();
    let sts = rendered.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let kc = sts["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "keycloak")
        .unwrap();
    assert_eq!(kc["image"].as_str(), Some(job.image.as_str()), "the Job runs another image than Keycloak's");
    let url = job.container.env.get("KEYCLOAK_URL").expect("the Job names Keycloak's URL");
    let rest = url.strip_prefix("http://").expect("plain HTTP inside the cluster");
    let (host, port) = rest.split_once(':').expect("host:port");
    let port: u64 = port.parse().unwrap();
    let (svc, svc_ns) = host.strip_suffix(".svc").and_then(|h| h.split_once('.')).expect("<service>.<namespace>.svc");
    assert_eq!(svc_ns, ns);
    let service = rendered
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == svc)
        .unwrap_or_else(|| panic!("the chart renders no Service {svc}"));
    let sp = service["spec"]["ports"].as_sequence().unwrap().iter().find(|p| p["port"].as_u64() == Some(port));
    let sp = sp.unwrap_or_else(|| panic!("Service {svc} has no port {port}"));
    assert_eq!(sp["targetPort"].as_str(), Some("http"), "port {port} of {svc} is not Keycloak's HTTP port");
    assert!(job.ttl_seconds.is_some_and(|t| t > 0), "finished sync Jobs are never cleaned up");
    // The Job and its ConfigMap as the API server would take them (strict schemas).
    if let Some(kv) = airlock_tests::require_tool("kubernetes-validate") {
        let dir = g.root.join(airlock_tests::keycloak::MANIFESTS);
        for kind in ["job", "configmap"] {
            let file = dir.join(format!("airlock-{ns}-{kind}-{}.yaml", job.name));
            let out = Command::new(&kv).args(["--strict", "-k", "1.31.0"]).arg(&file).output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && said.contains("passed"), "{}: {said}", file.display());
        }
    }
    // No secret on the command line: the Job's argv is the script, nothing else.
    for a in &job.container.argv {
        for sec in &g.secrets {
            assert!(!a.contains(sec.as_str()), "a secret is on the Job's command line");
        }
    }
}

/// Whether the app's client accepts `redirect` in an authorization request: Keycloak
/// shows the login page (200) or refuses the parameter (400).
fn redirect_accepted(g: &Ground, redirect: &str) -> bool {
    let (issuer, client_id, _) = g.app_client();
    g.client.forget_cookies();
    let r = g
        .client
        .get(&format!(
            "{issuer}/protocol/openid-connect/auth?client_id={}&response_type=code&scope=openid&redirect_uri={}&state=s",
            enc(&client_id),
            enc(redirect)
        ))
        .unwrap();
    match r.status {
        200 => true,
        400 => false,
        other => panic!("authorization request answered {other}: {}", r.body),
    }
}

/// The realm's LDAP component (as the admin API shows it).
fn ldap_component(g: &Ground) -> serde_json::Value {
    let r = g.admin("GET", &format!("{REALM}/components?type=org.keycloak.storage.UserStorageProvider"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let all = r.json();
    assert_eq!(all.as_array().map(Vec::len), Some(1), "one LDAP component: {all}");
    all[0].clone()
}

/// A user of the realm by name: (id, federation link).
fn realm_user(g: &Ground, username: &str) -> Option<(String, Option<String>)> {
    let r = g.admin("GET", &format!("{REALM}/users?username={}&exact=true", enc(username)), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let u = r.json()[0].clone();
    u["id"].as_str().map(|id| (id.to_string(), u["federationLink"].as_str().map(str::to_string)))
}

fn audiences(token: &serde_json::Value) -> Vec<String> {
    let c = jwt_claims(token["access_token"].as_str().unwrap()).unwrap();
    match &c["aud"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

const SILENT_RENEW: &str = "https://app.platform.example.test/silent-renew.html";
const V2_FILTER: &str = "(|(uid=alice)(uid=bob))";
const LOCAL_USER: &str = "ops-local";
const LOCAL_PW: &str = "ops-local-pw-4b19e2";

/// The realm as v1 shipped it: no silent-renew redirect, no `api` audience, no user
/// filter (every directory user may log in).
fn realm_is_v1(g: &Ground, what: &str) {
    assert!(redirect_accepted(g, REDIRECT), "{what}: the v1 redirect URI is refused");
    assert!(!redirect_accepted(g, SILENT_RENEW), "{what}: v2's redirect URI is accepted");
    let token = g.login("alice", "alice-pw").unwrap();
    assert!(!audiences(&token).iter().any(|a| a == "api"), "{what}: v2's audience in {:?}", audiences(&token));
    let ldap = ldap_component(g);
    assert!(ldap["config"].get("customUserSearchFilter").is_none(), "{what}: a user filter is set: {}", ldap["config"]);
}

/// The realm as v2 ships it: the new redirect URI, the `api` audience mapper, and
/// the site's new user filter (the answers given to the upgrade).
fn realm_is_v2(g: &Ground, what: &str) {
    assert!(redirect_accepted(g, REDIRECT), "{what}: the v1 redirect URI is refused");
    assert!(redirect_accepted(g, SILENT_RENEW), "{what}: v2's redirect URI is refused");
    let token = g.login("alice", "alice-pw").unwrap();
    assert!(audiences(&token).iter().any(|a| a == "api"), "{what}: no `api` audience in {:?}", audiences(&token));
    let ldap = ldap_component(g);
    assert_eq!(ldap["config"]["customUserSearchFilter"], json!([V2_FILTER]), "{what}");
}

#[test]
fn keycloak_realm_changes_of_an_upgrade_reach_the_running_server_keep_runtime_users_and_roll_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let Some(home) = keycloak_home() else { return };
    let Some(dir) = Slapd::start(Directory::OpenLdap) else { return };
    let ldap = LdapAnswers::of(&dir);
    let work = tempfile::tempdir().unwrap();
    // v1 lets the app redirect to /callback only; v2 adds its silent token renewal
    // page and an audience for its API.
    let v1 = release_with_profile(work.path(), "1.0.0", "keycloak:\n  redirect_paths: [/callback]\n");
    let v2 = release_with_profile(
        work.path(),
        "1.1.0",
        "keycloak:\n  redirect_paths: [/callback, /silent-renew.html]\n  audiences: [api]\n",
    );
    let Some(site) = Site::install_bundle(work, v1, &ldap, "") else { return };
    let Some(mut g) = Ground::up_from(&home, &ldap, site) else { return };
    g.secrets.push(LOCAL_PW.into());
    let v1_job = RealmSync::from_root(&g.root).unwrap();
    realm_sync_job_matches_the_chart(&g, &v1_job);
    realm_is_v1(&g, "v1 as imported");

    // Made at runtime: a local account through the admin API, and the directory
    // user imported at alice's login above.
    let r = g.admin(
        "POST",
        &format!("{REALM}/users"),
        Some(&json!({
            "username": LOCAL_USER, "enabled": true, "email": "ops@example.org", "emailVerified": true,
            "firstName": "Ops", "lastName": "Local",
            "credentials": [{ "type": "password", "value": LOCAL_PW, "temporary": false }],
        })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let local = realm_user(&g, LOCAL_USER).expect("the local user");
    let alice = realm_user(&g, "alice").expect("alice was imported at her login");
    let ldap_id = ldap_component(&g)["id"].as_str().unwrap().to_string();
    assert_eq!(alice.1.as_deref(), Some(ldap_id.as_str()), "alice is linked to the LDAP component");
    assert!(g.login(LOCAL_USER, LOCAL_PW).is_ok(), "the local user logs in");

    // The upgrade, with the site's answers changed too (a user filter), stopped after
    // v2's files are laid and the release flipped: K3s applies them from there on.
    let answers_v2 = g.site.answers.with_file_name("answers-v2.yaml");
    let v1_answers = fs::read_to_string(&g.site.answers).unwrap();
    fs::write(&answers_v2, v1_answers.replace("\nldap:\n", &format!("\nldap:\n  user_filter: \"{V2_FILTER}\"\n")))
        .unwrap();
    fs::set_permissions(&answers_v2, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = Command::new(cargo_bin("airlock"))
        .arg("upgrade")
        .arg(&v2)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--answers")
        .arg(&answers_v2)
        .arg("--root")
        .arg(&g.root)
        .arg("--yes")
        .env("AIRLOCK_TEST_UPGRADE_CRASH_AFTER", "flipped")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success(), "the upgrade did not stop after flipping to v2: {}", text(&o));
    g.seen.push(("airlock upgrade output".into(), text(&o)));
    let v2_job = RealmSync::from_root(&g.root).unwrap();
    assert_ne!(v2_job.name, v1_job.name, "v2's realm sync Job has v1's name: K3s would not run it");

    // Keycloak restarts on v2's pod with its database kept: the import skips the
    // realm that exists, so without the sync the site would keep v1's realm.
    let helm = helm().unwrap();
    let pod_dir = tempfile::tempdir().unwrap();
    let pod = Pod::from_root(&g.root, &helm, pod_dir.path()).unwrap();
    g.keycloak.stop();
    g.seen.push(("v1's Keycloak log".into(), g.keycloak.log_raw()));
    g.seen.push(("v1's proxy logs".into(), g.proxy.logs()));
    let t_restart = Instant::now();
    g.keycloak =
        Keycloak::restart(&home, &pod, &g.secrets).unwrap_or_else(|e| panic!("{}", redact(&e.to_string(), &g.secrets)));
    let restarted_in = t_restart.elapsed();
    g.proxy =
        Proxy::start(&pod.ingress_host, &pod.ingress_cert_pem, &pod.ingress_key_pem, g.keycloak.http_port).unwrap();
    g.client = Client::new(&g.root.join("etc/airlock/pki/ca.crt"), &g.proxy).unwrap();
    g.objects = Objects::read(&g.root).unwrap();
    g.pod = pod;
    realm_is_v1(&g, "v2's Keycloak before the sync (the import skipped the existing realm)");

    run_realm_sync(&mut g, &home, "upgrade to v2");
    realm_is_v2(&g, "after the upgrade's sync");
    assert!(g.login("carol", "carol-pw").is_err(), "carol is outside v2's user filter but logs in");
    assert_eq!(realm_user(&g, LOCAL_USER), Some(local.clone()), "the local user is gone or changed");
    assert_eq!(realm_user(&g, "alice"), Some(alice.clone()), "alice's imported account is gone or relinked");
    assert_eq!(ldap_component(&g)["id"].as_str(), Some(ldap_id.as_str()), "the LDAP component was re-created");
    assert!(g.login(LOCAL_USER, LOCAL_PW).is_ok(), "the local user no longer logs in");

    // The whole-release rollback lays v1's manifests again, v1's Job among them.
    let o = Command::new(cargo_bin("airlock"))
        .arg("upgrade")
        .arg(&v2)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--root")
        .arg(&g.root)
        .args(["--yes", "--rollback"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "rollback: {}", text(&o));
    g.seen.push(("airlock upgrade --rollback output".into(), text(&o)));
    let back = RealmSync::from_root(&g.root).unwrap();
    assert_eq!(back.name, v1_job.name, "the rollback did not lay v1's realm sync Job");
    g.objects = Objects::read(&g.root).unwrap();
    run_realm_sync(&mut g, &home, "rollback to v1");
    realm_is_v1(&g, "after the rollback's sync");
    assert!(g.login("carol", "carol-pw").is_ok(), "carol, outside only v2's filter, cannot log in after the rollback");
    assert_eq!(realm_user(&g, LOCAL_USER), Some(local), "the rollback lost the local user");
    assert_eq!(realm_user(&g, "alice"), Some(alice), "the rollback lost alice's imported account");
    assert!(g.login(LOCAL_USER, LOCAL_PW).is_ok(), "the local user no longer logs in after the rollback");
    g.assert_no_secret_in_logs();
    eprintln!(
        "keycloak proving ground (realm sync): Keycloak start {:.1} s, restart on v2 {:.1} s, whole test {:.1} s",
        g.started_in.as_secs_f64(),
        restarted_in.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
