//! MinIO from the official chart (5.4.0): its values and the Secrets they reference.
//!
//! The chart's defaults are wrong for an appliance and each is overridden on purpose:
//! it defaults to `mode: distributed` with 16 replicas (a single node **must** run
//! `standalone`), requests 16 GiB of memory per pod, and creates a `console` user
//! with the password `console123`. Root credentials come from an `existingSecret`
//! with the chart's key names `rootUser`/`rootPassword`; TLS from a Secret with the
//! chart's key names `public.crt`/`private.key` (not `tls.crt`/`tls.key`), rendered
//! here from the certificate and key the PKI step issued. That Secret carries the
//! `tls.*` keys as well, so the ingresses serve the same certificate.

use std::collections::BTreeMap;

use airlock_format::error::{Error, Result};
use serde_json::{json, Value};

use super::{namespace_manifest, non_empty, non_empty_secret, pem_certificate, secret, to_yaml};
use super::{Manifest, Rendered};
use crate::site::answers::Secret;

/// The chart this module writes values for.
pub const CHART: &str = "minio";
pub const CHART_VERSION: &str = "5.4.0";
/// Erasure coding wants at least four drives in a distributed deployment; with fewer
/// servers each one gets more than one volume.
const MIN_DISTRIBUTED_DRIVES: u32 = 4;

/// Everything the MinIO render needs.
#[derive(Clone, Debug)]
pub struct MinioInput {
    /// The Helm release (the `HelmChart`'s name). With release `minio` the chart
    /// names its objects `minio` (release and chart name coincide).
    pub release: String,
    /// The `HelmChart`'s `targetNamespace`; the Secrets go there too.
    pub namespace: String,
    /// `cluster.ingress_domain`: the S3 API at `s3.<domain>`, the console at `minio.<domain>`.
    pub domain: String,
    /// Servers that run MinIO: 1 on a single node (standalone), the HA profile's
    /// server count otherwise (distributed, one pod per server).
    pub servers: u32,
    /// Buckets the app needs, created by the chart's post-install job.
    pub buckets: Vec<String>,
    /// Size of each volume, e.g. `50Gi`.
    pub volume_size: String,
    /// `None`: the cluster's default StorageClass.
    pub storage_class: Option<String>,
    pub tls: MinioTls,
    pub credentials: MinioCredentials,
    /// Users the chart's post-install job creates (the app's S3 keys), each with a
    /// built-in policy. Their secret keys go into the Secret [`Names::users_secret`].
    pub users: Vec<MinioUser>,
}

/// A MinIO user (an S3 key pair) for an application.
#[derive(Clone, Debug)]
pub struct MinioUser {
    /// The access key: the user's name. The chart takes it in its values (its
    /// `users[].accessKey` has no Secret form), so it is an identifier, not a secret.
    pub access_key: String,
    pub secret_key: Secret,
    /// One of MinIO's built-in policies: `readwrite`, `readonly`, `writeonly`.
    pub policy: String,
}

/// Our certificate for MinIO, its key and the CA that signed it (all PEM). The
/// certificate must name the hosts [`certificate_dns_names`] lists.
#[derive(Clone, Debug)]
pub struct MinioTls {
    pub cert_pem: String,
    pub key_pem: Secret,
    pub ca_pem: String,
}

/// Root credentials the caller generated and stored before rendering.
#[derive(Clone, Debug)]
pub struct MinioCredentials {
    pub root_user: String,
    pub root_password: Secret,
}

/// The names of the Secrets a render adds, derived from the release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// Keys `rootUser`, `rootPassword` (the chart's names).
    pub root_secret: String,
    /// `kubernetes.io/tls` with `public.crt`/`private.key` (MinIO) and `tls.crt`/`tls.key` (ingress).
    pub tls_secret: String,
    /// Key `ca.crt`: mounted into MinIO's `certs/CAs`, so pods verify each other's
    /// certificates (distributed mode) and MinIO trusts the site's services.
    pub ca_secret: String,
    /// One key per user (its access key) holding its secret key.
    pub users_secret: String,
}

impl Names {
    pub fn new(release: &str) -> Self {
        Self {
            root_secret: format!("{release}-root"),
            tls_secret: format!("{release}-tls"),
            ca_secret: format!("{release}-ca"),
            users_secret: format!("{release}-users"),
        }
    }
}

/// The S3 API's public host.
pub fn api_host(domain: &str) -> String {
    format!("s3.{domain}")
}

/// The console's public host.
pub fn console_host(domain: &str) -> String {
    format!("minio.{domain}")
}

/// The chart's object name for a release (its `minio.fullname`).
pub fn fullname(release: &str) -> String {
    if release.contains(CHART) {
        release.to_string()
    } else {
        format!("{release}-{CHART}")
    }
}

/// The DNS names MinIO's certificate must carry: the public hosts, the Service (the
/// app and the chart's jobs connect to it) and, when distributed, every pod behind the
/// headless Service (the pods talk to each other over TLS by those names).
pub fn certificate_dns_names(release: &str, namespace: &str, domain: &str, servers: u32) -> Vec<String> {
    let full = fullname(release);
    let mut names = vec![
        api_host(domain),
        console_host(domain),
        full.clone(),
        format!("{full}.{namespace}"),
        format!("{full}.{namespace}.svc"),
        format!("{full}.{namespace}.svc.cluster.local"),
    ];
    if servers > 1 {
        names.push(format!("*.{full}-svc.{namespace}.svc"));
        names.push(format!("*.{full}-svc.{namespace}.svc.cluster.local"));
    }
    names
}

/// How a deployment is laid out: the chart's `mode`, `replicas`, `pools`, `drivesPerNode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub distributed: bool,
    pub replicas: u32,
    pub pools: u32,
    pub drives_per_node: u32,
}

/// One server: standalone, one volume. More: distributed in one pool (one zone), one
/// pod per server, and enough volumes per pod for at least four drives in total.
pub fn layout(servers: u32) -> Layout {
    if servers <= 1 {
        return Layout { distributed: false, replicas: 1, pools: 1, drives_per_node: 1 };
    }
    Layout { distributed: true, replicas: servers, pools: 1, drives_per_node: MIN_DISTRIBUTED_DRIVES.div_ceil(servers) }
}

/// Renders the chart values and the Secrets they reference.
pub fn render(input: &MinioInput) -> Result<Rendered> {
    validate(input)?;
    let names = Names::new(&input.release);
    let c = &input.credentials;
    let t = &input.tls;
    let mut manifests: Vec<Manifest> = vec![
        namespace_manifest(&input.namespace)?,
        secret(
            &input.namespace,
            &names.root_secret,
            "Opaque",
            &[("rootUser", &c.root_user), ("rootPassword", c.root_password.expose())],
        )?,
        secret(
            &input.namespace,
            &names.tls_secret,
            "kubernetes.io/tls",
            &[
                ("public.crt", &t.cert_pem),
                ("private.key", t.key_pem.expose()),
                ("tls.crt", &t.cert_pem),
                ("tls.key", t.key_pem.expose()),
            ],
        )?,
        // A Secret, not a ConfigMap: the chart's `trustedCertsSecret` mounts a Secret.
        secret(&input.namespace, &names.ca_secret, "Opaque", &[("ca.crt", &t.ca_pem)])?,
    ];
    if !input.users.is_empty() {
        let keys: Vec<(&str, &str)> =
            input.users.iter().map(|u| (u.access_key.as_str(), u.secret_key.expose())).collect();
        manifests.push(secret(&input.namespace, &names.users_secret, "Opaque", &keys)?);
    }
    Ok(Rendered { values_yaml: to_yaml("MinIO values", &values(input, &names))?, manifests })
}

fn validate(input: &MinioInput) -> Result<()> {
    non_empty("minio: release", &input.release)?;
    non_empty("minio: namespace", &input.namespace)?;
    non_empty("minio: ingress domain", &input.domain)?;
    non_empty("minio: volume size", &input.volume_size)?;
    if input.servers == 0 {
        return Err(
            Error::input("minio: servers", "is 0").with_hint("give 1 for a single node, or the number of HA servers")
        );
    }
    if input.buckets.is_empty() {
        return Err(
            Error::input("minio: buckets", "are empty").with_hint("the app's profile names the buckets it needs")
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for b in &input.buckets {
        bucket_name(b)?;
        if !seen.insert(b) {
            return Err(
                Error::input(format!("MinIO bucket `{b}`"), "is listed twice").with_hint("list each bucket once")
            );
        }
    }
    // Chart values go through Helm's `tpl`; `{{` would be executed.
    for (what, v) in [("ingress domain", &input.domain), ("volume size", &input.volume_size)] {
        if v.contains("{{") {
            return Err(Error::input(
                format!("minio: {what} `{v}`"),
                "contains `{{`, which Helm would run as a template",
            )
            .with_hint("use a plain value"));
        }
    }
    pem_certificate("minio: TLS certificate", &input.tls.cert_pem)?;
    pem_certificate("minio: CA certificate", &input.tls.ca_pem)?;
    non_empty_secret("minio: TLS private key", &input.tls.key_pem)?;
    if !input.tls.key_pem.expose().contains("PRIVATE KEY-----") {
        return Err(Error::input("minio: TLS private key", "is not a PEM private key")
            .with_hint("give the key the PKI step wrote for MinIO's certificate, in PEM form"));
    }
    // MinIO refuses to start with a root user under 3 or a password under 8 characters.
    if input.credentials.root_user.len() < 3 {
        return Err(Error::input("minio: root user", "is shorter than 3 characters, which MinIO refuses")
            .with_hint("use a user name of at least 3 characters"));
    }
    non_empty_secret("minio: root password", &input.credentials.root_password)?;
    if input.credentials.root_password.expose().len() < 8 {
        return Err(Error::input("minio: root password", "is shorter than 8 characters, which MinIO refuses")
            .with_hint("the installer generates it; re-run `airlock install` so a longer one is generated"));
    }
    for u in &input.users {
        // The access key is a Secret data key and part of MC_HOST URLs.
        if u.access_key.len() < 3 || !u.access_key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::input(
                format!("minio: user `{}`", u.access_key),
                "is not 3 or more letters, digits and `-`",
            )
            .with_hint("the installer generates the app's access key; re-run `airlock install`"));
        }
        non_empty_secret(&format!("minio: secret key of user `{}`", u.access_key), &u.secret_key)?;
        if u.secret_key.expose().len() < 8 {
            return Err(Error::input(
                format!("minio: secret key of user `{}`", u.access_key),
                "is shorter than 8 characters, which MinIO refuses",
            )
            .with_hint("the installer generates it; re-run `airlock install` so a longer one is generated"));
        }
    }
    Ok(())
}

/// S3 bucket naming: 3-63 characters of lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit.
fn bucket_name(b: &str) -> Result<()> {
    let ok_chars = b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&b.len()) || !ok_chars || !ends_ok(b.chars().next()) || !ends_ok(b.chars().last()) {
        return Err(Error::input(format!("MinIO bucket `{b}`"), "is not a valid S3 bucket name")
            .with_hint("use 3-63 lowercase letters, digits, `.` or `-`, starting and ending with a letter or digit"));
    }
    Ok(())
}

/// What the restricted Pod Security level asks of every container.
fn restricted_container() -> Value {
    json!({
        "readOnlyRootFilesystem": false,
        "allowPrivilegeEscalation": false,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn values(input: &MinioInput, names: &Names) -> Value {
    let l = layout(input.servers);
    let api = api_host(&input.domain);
    let console = console_host(&input.domain);
    let buckets: Vec<Value> =
        input.buckets.iter().map(|b| json!({ "name": b, "policy": "none", "purge": false })).collect();
    let mut persistence = json!({ "enabled": true, "size": input.volume_size });
    if let Some(class) = &input.storage_class {
        persistence["storageClass"] = json!(class);
    }
    // MinIO serves TLS itself, so the ingress talks HTTPS to it: ingress-nginx (RKE2)
    // reads the Ingress annotation, Traefik (K3s) the Service annotation.
    let https_backend = json!({ "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                                // uploads of any size: S3 clients stream large objects
                                "nginx.ingress.kubernetes.io/proxy-body-size": "0" });
    let https_service = json!({ "traefik.ingress.kubernetes.io/service.serversscheme": "https" });
    let mut env = BTreeMap::new();
    // The console redirects browsers to its public URL, not to the pod's address.
    env.insert("MINIO_BROWSER_REDIRECT_URL", format!("https://{console}"));
    json!({
        "mode": if l.distributed { "distributed" } else { "standalone" },
        "replicas": l.replicas,
        "pools": l.pools,
        "drivesPerNode": l.drives_per_node,
        "existingSecret": names.root_secret,
        "rootUser": "",
        "rootPassword": "",
        // The chart's default creates `console` / `console123`; ours are the app's keys,
        // their secret keys read from a Secret.
        "users": input.users.iter().map(|u| json!({
            "accessKey": u.access_key,
            "existingSecret": names.users_secret,
            "existingSecretKey": u.access_key,
            "policy": u.policy,
        })).collect::<Vec<_>>(),
        "policies": [],
        "svcaccts": [],
        "buckets": buckets,
        "tls": {
            "enabled": true,
            "certSecret": names.tls_secret,
            "publicCrt": "public.crt",
            "privateKey": "private.key",
        },
        "trustedCertsSecret": names.ca_secret,
        "persistence": persistence,
        // The chart asks for 16Gi per pod, more than a whole appliance node may have.
        "resources": { "requests": { "memory": "1Gi" } },
        "environment": env,
        // The restricted Pod Security level (RKE2 CIS profile enforces it): for MinIO
        // and for the post-install job that creates the buckets, which the chart
        // otherwise runs without any security context and which would be rejected.
        "containerSecurityContext": restricted_container(),
        "postJob": {
            "securityContext": {
                "enabled": true,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 1000,
                "runAsNonRoot": true,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
        },
        "makeBucketJob": {
            "securityContext": { "enabled": true, "runAsUser": 1000, "runAsGroup": 1000 },
            "containerSecurityContext": restricted_container(),
        },
        "makeUserJob": {
            "securityContext": { "enabled": true, "runAsUser": 1000, "runAsGroup": 1000 },
            "containerSecurityContext": restricted_container(),
        },
        "service": { "annotations": https_service },
        "consoleService": { "annotations": https_service },
        "ingress": {
            "enabled": true,
            "annotations": https_backend,
            "hosts": [api],
            "tls": [{ "secretName": names.tls_secret, "hosts": [api] }],
        },
        "consoleIngress": {
            "enabled": true,
            "annotations": { "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS" },
            "hosts": [console],
            "tls": [{ "secretName": names.tls_secret, "hosts": [console] }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_PW: &str = "minio-root-pw-9a7c31d2";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEkey-4f1d\n-----END PRIVATE KEY-----\n";

    pub(crate) fn input(servers: u32) -> MinioInput {
        MinioInput {
            release: "minio".into(),
            namespace: "minio".into(),
            domain: "platform.example.test".into(),
            servers,
            buckets: vec!["app-exports".into(), "app-uploads".into()],
            volume_size: "10Gi".into(),
            storage_class: None,
            tls: MinioTls {
                cert_pem: "-----BEGIN CERTIFICATE-----\nMIIBminio\n-----END CERTIFICATE-----\n".into(),
                key_pem: Secret::new(KEY),
                ca_pem: "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n".into(),
            },
            credentials: MinioCredentials { root_user: "airlock-root".into(), root_password: Secret::new(ROOT_PW) },
            users: Vec::new(),
        }
    }

    fn values_of(r: &Rendered) -> serde_yaml::Value {
        serde_yaml::from_str(&r.values_yaml).unwrap()
    }

    #[test]
    fn one_node_is_standalone() {
        let v = values_of(&render(&input(1)).unwrap());
        assert_eq!(v["mode"].as_str(), Some("standalone"));
        assert_eq!(v["replicas"].as_u64(), Some(1));
    }

    #[test]
    fn ha_is_distributed_one_pod_per_server_with_four_drives_at_least() {
        for (servers, drives) in [(2, 2), (3, 2), (4, 1), (5, 1)] {
            let v = values_of(&render(&input(servers)).unwrap());
            assert_eq!(v["mode"].as_str(), Some("distributed"));
            assert_eq!(v["replicas"].as_u64(), Some(u64::from(servers)));
            assert_eq!(v["pools"].as_u64(), Some(1));
            assert_eq!(v["drivesPerNode"].as_u64(), Some(drives), "{servers} servers");
            assert!(u64::from(servers) * drives >= 4);
        }
    }

    #[test]
    fn values_hold_no_secret_and_reference_the_root_secret() {
        let r = render(&input(3)).unwrap();
        assert!(!r.values_yaml.contains(ROOT_PW) && !r.values_yaml.contains("MIIEkey"), "{}", r.values_yaml);
        assert!(!format!("{r:?}").contains(ROOT_PW) && !format!("{r:?}").contains("MIIEkey"));
        let v = values_of(&r);
        assert_eq!(v["existingSecret"].as_str(), Some("minio-root"));
        assert_eq!(v["rootPassword"].as_str(), Some(""));
        let root: serde_yaml::Value = serde_yaml::from_str(&r.manifest("minio-root").unwrap().yaml).unwrap();
        assert_eq!(root["stringData"]["rootUser"].as_str(), Some("airlock-root"));
        assert_eq!(root["stringData"]["rootPassword"].as_str(), Some(ROOT_PW));
        assert!(r.manifests.iter().filter(|m| m.yaml.contains(ROOT_PW)).all(|m| m.is_secret()));
    }

    #[test]
    fn tls_secret_has_the_charts_key_names_and_the_ingress_ones() {
        let r = render(&input(1)).unwrap();
        let v = values_of(&r);
        assert_eq!(v["tls"]["certSecret"].as_str(), Some("minio-tls"));
        let tls: serde_yaml::Value = serde_yaml::from_str(&r.manifest("minio-tls").unwrap().yaml).unwrap();
        assert_eq!(tls["type"].as_str(), Some("kubernetes.io/tls"));
        for k in ["public.crt", "private.key", "tls.crt", "tls.key"] {
            assert!(tls["stringData"][k].as_str().is_some_and(|s| s.contains("-----BEGIN")), "{k}");
        }
        assert_eq!(tls["stringData"]["private.key"].as_str(), Some(KEY));
    }

    #[test]
    fn the_default_console_user_is_dropped() {
        let v = values_of(&render(&input(1)).unwrap());
        assert_eq!(v["users"].as_sequence().map(Vec::len), Some(0));
    }

    #[test]
    fn app_users_are_created_from_a_secret_and_their_secret_key_stays_out_of_the_values() {
        let mut i = input(1);
        i.users = vec![MinioUser {
            access_key: "app-1f2e".into(),
            secret_key: Secret::new("s3-secret-77aa10"),
            policy: "readwrite".into(),
        }];
        let r = render(&i).unwrap();
        let v = values_of(&r);
        assert_eq!(v["users"][0]["accessKey"], "app-1f2e");
        assert_eq!(v["users"][0]["existingSecret"], "minio-users");
        assert_eq!(v["users"][0]["existingSecretKey"], "app-1f2e");
        assert_eq!(v["makeUserJob"]["containerSecurityContext"]["runAsNonRoot"], true);
        assert!(!r.values_yaml.contains("s3-secret-77aa10"));
        let users = r.manifest("minio-users").expect("the users Secret");
        assert!(users.is_secret() && users.yaml.contains("app-1f2e: s3-secret-77aa10"), "{}", users.yaml);
        i.users[0].secret_key = Secret::new("short");
        assert!(render(&i).unwrap_err().cause.contains("shorter than 8"));
        i.users[0] = MinioUser {
            access_key: "a:b".into(),
            secret_key: Secret::new("long-enough-1"),
            policy: "readwrite".into(),
        };
        assert!(render(&i).is_err(), "an access key with `:` breaks MC_HOST URLs");
    }

    #[test]
    fn invalid_bucket_names_are_refused() {
        for bad in ["ab", "App", "-app", "app_", "a{{b}}c"] {
            let mut i = input(1);
            i.buckets = vec![bad.into()];
            let e = render(&i).unwrap_err();
            assert!(e.subject.contains(bad) && e.hint.is_some(), "{bad}: {e}");
        }
        let mut i = input(1);
        i.buckets = vec!["app".into(), "app".into()];
        assert!(render(&i).unwrap_err().cause.contains("twice"));
    }

    #[test]
    fn short_root_credentials_are_refused_before_minio_would() {
        let mut i = input(1);
        i.credentials.root_password = Secret::new("short");
        assert!(render(&i).unwrap_err().cause.contains("8 characters"));
    }

    #[test]
    fn certificate_names_cover_the_pods_when_distributed() {
        let single = certificate_dns_names("minio", "minio", "p.example.test", 1);
        assert!(single.contains(&"s3.p.example.test".to_string()));
        assert!(single.contains(&"minio.minio.svc".to_string()));
        assert!(!single.iter().any(|n| n.starts_with('*')));
        let ha = certificate_dns_names("minio", "minio", "p.example.test", 3);
        assert!(ha.contains(&"*.minio-svc.minio.svc.cluster.local".to_string()));
        assert_eq!(fullname("objects"), "objects-minio");
    }
}
