//! The platform's own components as Helm values for the upstream charts the bundle
//! carries: [`keycloak`] (codecentric keycloakx) and [`minio`] (the official MinIO chart),
//! and [`app`], the reference application's own chart in `assets/charts/airlock-app`.
//!
//! Every render is a pure function of plain inputs the caller fills: the site's
//! answers, the names of the TLS Secrets the PKI step made, the CA, and credentials the
//! caller generated and persisted before (so a re-run renders byte-identical output and
//! the tests can pin it). A render gives two things:
//!
//! - the chart's `valuesContent`, which holds **no secret value**: it ends up in a
//!   `HelmChart` manifest, in `--dry-run` plans and in support bundles, so every
//!   credential is only *referenced* (`existingSecret`, `secretKeyRef`, `envFrom`);
//! - the extra objects those references point at ([`Manifest`]s: the Namespace,
//!   ConfigMaps and Secrets), each one YAML document for the auto-deploy manifests
//!   directory. Secrets are written by the caller as 0600 files; their text never
//!   shows in `Debug`.

pub mod app;
pub mod keycloak;
pub mod minio;
pub mod monitoring;
pub mod wiring;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use airlock_format::error::{Error, Result};
use serde_json::{json, Value};

use crate::engine::layout::Layout;
use crate::site::answers::{Secret, REDACTED};

/// The label every object airlock renders carries, so support can tell ours apart.
const MANAGED_BY: &str = "airlock";

/// What a component render hands back to the caller.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The chart's `valuesContent` (YAML). Holds no secret value.
    pub values_yaml: String,
    /// The objects the values refer to, in apply order (the Namespace first).
    pub manifests: Vec<Manifest>,
}

impl Rendered {
    /// The manifest named `name` (of any kind).
    pub fn manifest(&self, name: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.name == name)
    }

    /// The manifests as files of the auto-deploy directory `manifests_dir`
    /// (`<data-dir>/server/manifests`): Secrets as secret files (0600, content kept
    /// out of plans), the rest 0600 like the `HelmChart` files beside them.
    pub fn layout(&self, manifests_dir: &Path) -> Layout {
        let mut layout = Layout::default();
        for m in &self.manifests {
            let path = manifests_dir.join(m.file_name());
            if m.is_secret() {
                layout.secret_file(path, m.yaml.clone());
            } else {
                layout.file(path, 0o600, m.yaml.clone());
            }
        }
        layout
    }
}

/// The kinds of object a render adds beside the chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Namespace,
    ConfigMap,
    Secret,
    Job,
}

/// One Kubernetes object as a YAML document.
#[derive(Clone)]
pub struct Manifest {
    pub kind: ManifestKind,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (for a Namespace: its own name).
    pub namespace: String,
    /// The object as one YAML document. For a Secret this holds credentials: write it
    /// with mode 0600 and never print it.
    pub yaml: String,
}

impl Manifest {
    pub fn is_secret(&self) -> bool {
        self.kind == ManifestKind::Secret
    }

    /// A file name for the auto-deploy manifests directory: unique per object, and a
    /// valid RFC 1123 name before `.yaml` as K3s wants. The Namespace sorts first
    /// (`airlock-<ns>-0-namespace`), so it exists when the others are applied.
    pub fn file_name(&self) -> String {
        match self.kind {
            ManifestKind::Namespace => format!("airlock-{}-0-namespace.yaml", self.namespace),
            ManifestKind::ConfigMap => format!("airlock-{}-configmap-{}.yaml", self.namespace, self.name),
            ManifestKind::Secret => format!("airlock-{}-secret-{}.yaml", self.namespace, self.name),
            ManifestKind::Job => format!("airlock-{}-job-{}.yaml", self.namespace, self.name),
        }
    }
}

/// A Secret's text never reaches a log line through `{:?}`.
impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yaml: &str = if self.is_secret() { REDACTED } else { &self.yaml };
        f.debug_struct("Manifest")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("yaml", &yaml)
            .finish()
    }
}

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({
        "name": name,
        "labels": { "app.kubernetes.io/managed-by": MANAGED_BY },
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn to_yaml(what: &str, v: &Value) -> Result<String> {
    // serde_yaml only fails on maps with non-string keys, which these values never have.
    serde_yaml::to_string(v).map_err(|e| {
        Error::input(what, format!("cannot be written as YAML: {e}"))
            .with_hint("this is a bug in airlock; report it with the command that failed")
    })
}

fn namespace_manifest(namespace: &str) -> Result<Manifest> {
    let doc = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata(namespace, None) });
    Ok(Manifest {
        kind: ManifestKind::Namespace,
        name: namespace.into(),
        namespace: namespace.into(),
        yaml: to_yaml(&format!("Namespace {namespace}"), &doc)?,
    })
}

fn config_map(namespace: &str, name: &str, data: BTreeMap<String, String>) -> Result<Manifest> {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, Some(namespace)),
        "data": data,
    });
    Ok(Manifest {
        kind: ManifestKind::ConfigMap,
        name: name.into(),
        namespace: namespace.into(),
        yaml: to_yaml(&format!("ConfigMap {namespace}/{name}"), &doc)?,
    })
}

/// A Secret with `stringData` (the API server encodes it), so the file stays readable
/// to an operator with root who must rotate a value by hand.
fn secret(namespace: &str, name: &str, type_: &str, data: &[(&str, &str)]) -> Result<Manifest> {
    let data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(name, Some(namespace)),
        "type": type_,
        "stringData": data,
    });
    Ok(Manifest {
        kind: ManifestKind::Secret,
        name: name.into(),
        namespace: namespace.into(),
        // Not `to_yaml`: its error would carry the subject only, but keep the text out
        // of any error path anyway.
        yaml: serde_yaml::to_string(&doc).map_err(|_| {
            Error::input(format!("Secret {namespace}/{name}"), "cannot be written as YAML")
                .with_hint("this is a bug in airlock; report it with the command that failed")
        })?,
    })
}

/// A `kubernetes.io/tls` Secret from a certificate chain and its key (PEM), for an
/// ingress in `namespace`: Secrets are namespaced, so each component gets its own copy
/// of the leaf the PKI issued for it. The key makes the manifest a secret file.
pub fn tls_secret(namespace: &str, name: &str, fullchain_pem: &str, key_pem: &Secret) -> Result<Manifest> {
    pem_certificate(&format!("TLS Secret {namespace}/{name}: certificate"), fullchain_pem)?;
    if !key_pem.expose().contains("PRIVATE KEY-----") {
        return Err(Error::input(format!("TLS Secret {namespace}/{name}: key"), "is not a PEM private key")
            .with_hint("the PKI step writes the key; run `airlock pki status` and re-run the install"));
    }
    secret(namespace, name, "kubernetes.io/tls", &[("tls.crt", fullchain_pem), ("tls.key", key_pem.expose())])
}

/// An empty credential would make the component start with no password at all.
fn non_empty_secret(subject: &str, s: &Secret) -> Result<()> {
    if s.expose().is_empty() {
        return Err(Error::input(subject, "is empty")
            .with_hint("the installer generates this credential before rendering; re-run `airlock install` so it is generated and stored"));
    }
    Ok(())
}

fn non_empty(subject: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::input(subject, "is empty").with_hint("give a value; see docs/answers.md"));
    }
    Ok(())
}

/// At least one PEM certificate, so a truststore or CA bundle is never silently empty.
fn pem_certificate(subject: &str, pem: &str) -> Result<()> {
    if !pem.contains("-----BEGIN CERTIFICATE-----") || !pem.contains("-----END CERTIFICATE-----") {
        return Err(Error::input(subject, "is not a PEM certificate (no `-----BEGIN CERTIFICATE-----` block)")
            .with_hint("give the CA certificate in PEM form, as `openssl x509 -outform PEM` writes it"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::FileSource;

    #[test]
    fn secret_manifests_become_secret_files_and_never_print() {
        let s = secret("ns", "creds", "Opaque", &[("password", "pw-6a1f")]).unwrap();
        assert!(s.yaml.contains("pw-6a1f"));
        assert!(!format!("{s:?}").contains("pw-6a1f"), "{s:?}");
        let cm = config_map("ns", "settings", BTreeMap::from([("k".to_string(), "v".to_string())])).unwrap();
        let r = Rendered { values_yaml: String::new(), manifests: vec![namespace_manifest("ns").unwrap(), cm, s] };
        let layout = r.layout(Path::new("/var/lib/rancher/k3s/server/manifests"));
        let paths: Vec<String> = layout.files.iter().map(|f| f.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/var/lib/rancher/k3s/server/manifests/airlock-ns-0-namespace.yaml",
                "/var/lib/rancher/k3s/server/manifests/airlock-ns-configmap-settings.yaml",
                "/var/lib/rancher/k3s/server/manifests/airlock-ns-secret-creds.yaml",
            ]
        );
        let secret_file = &layout.files[2];
        assert!(secret_file.secret && secret_file.mode == 0o600);
        assert!(!layout.files[1].secret);
        let FileSource::Inline(bytes) = &secret_file.source else { panic!("inline") };
        assert!(String::from_utf8_lossy(bytes).contains("pw-6a1f"));
        // The plan (serialized layout) shows no content at all.
        assert!(!serde_json::to_string(&layout).unwrap().contains("pw-6a1f"));
    }
}
