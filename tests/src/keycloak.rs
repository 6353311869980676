//! The Keycloak proving ground: the real Keycloak server distribution started the way
//! the cluster would start it, from what `airlock install` wrote into a target root,
//! behind a real TLS-terminating proxy (nginx) serving the ingress certificate.
//!
//! Nothing of the server's configuration is written by hand here. [`Pod::from_root`]
//! takes the `HelmChart` the installer laid into the root (chart + `valuesContent`),
//! renders it with helm 3.18, and reads the Keycloak container of the rendered
//! StatefulSet: its args (after the image's entrypoint `/opt/keycloak/bin/kc.sh`), its
//! environment (with `secretKeyRef`/`configMapKeyRef`/`envFrom` resolved from the
//! Secrets and ConfigMaps the installer wrote beside the chart) and its mounts
//! (ConfigMap and Secret volumes written out as files, claims and `emptyDir` as empty
//! directories). Container paths are mapped onto a temporary directory: `/opt/keycloak`
//! (the image's Keycloak home) onto a copy of the distribution, every other mount
//! under `fs/`, and each environment value and argument naming a mounted path is
//! rewritten to the mapped one.
//!
//! What the harness sets on top, because a pod has it and a shared test machine does
//! not, and nothing else: the listen address and ports (`KC_HTTP_HOST`,
//! `KC_HTTP_PORT`, `KC_HTTP_MANAGEMENT_PORT`: the pod's own network namespace has
//! 8080/9000 to itself), JGroups' bind address and port for the clustered cache (the
//! pod IP), and `JAVA_HOME`. The proxy plays the cluster's ingress controller: it
//! terminates TLS with the `kubernetes.io/tls` Secret the rendered Ingress names and
//! sends `X-Forwarded-*` as Traefik and ingress-nginx do. Clients reach it with the
//! site `ca.crt` as the only trust anchor and `--connect-to` mapping the ingress host's
//! port 443 onto the proxy's port, so every URL is the one a browser on site uses.
//!
//! The Keycloak distribution is `org.keycloak:keycloak-quarkus-dist` [`KEYCLOAK_VERSION`]
//! from Maven Central, unpacked by `tests/run.sh` into `$AIRLOCK_TOOLS_DIR`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value;

use crate::{helm_command, require_tool, skip_or_fail};

/// The Keycloak the keycloakx chart (7.1.11) runs, and so the one proven here.
pub const KEYCLOAK_VERSION: &str = "26.5.6";
/// Where the installer lays the manifests K3s applies.
pub const MANIFESTS: &str = "var/lib/rancher/k3s/server/manifests";
/// The image's Keycloak home, which the official image's entrypoint runs from.
const IMAGE_HOME: &str = "/opt/keycloak";
const ENTRYPOINT: &str = "/opt/keycloak/bin/kc.sh";

/// The unpacked distribution and the JDK that runs it.
#[derive(Clone, Debug)]
pub struct KeycloakDist {
    pub home: PathBuf,
    pub java_home: PathBuf,
}

/// Finds `$AIRLOCK_TOOLS_DIR/keycloak-<version>` (where `tests/run.sh` unpacks it) and
/// a JDK (17, 21 or 25: `JAVA_HOME`, else the newest under `/usr/lib/jvm`). Skips, or
/// fails under `AIRLOCK_REQUIRE_TOOLS=1`, when either is missing.
pub fn keycloak_dist() -> Option<KeycloakDist> {
    let tools = std::env::var_os("AIRLOCK_TOOLS_DIR").map(PathBuf::from);
    let home = tools.map(|t| t.join(format!("keycloak-{KEYCLOAK_VERSION}")));
    let Some(home) = home.filter(|h| h.join("bin/kc.sh").is_file()) else {
        return skip_or_fail(&format!(
            "Keycloak {KEYCLOAK_VERSION} is not unpacked at $AIRLOCK_TOOLS_DIR/keycloak-{KEYCLOAK_VERSION}"
        ));
    };
    let java_ok = |j: &Path| j.join("bin/java").is_file();
    let mut candidates: Vec<PathBuf> = std::env::var_os("JAVA_HOME").map(PathBuf::from).into_iter().collect();
    let mut jvms: Vec<PathBuf> =
        fs::read_dir("/usr/lib/jvm").map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    // Prefer the newest supported release: 25, then 21, then 17.
    jvms.sort_by_key(|p| {
        let n = p.file_name().unwrap_or_default().to_string_lossy().to_string();
        std::cmp::Reverse(["-25", "-21", "-17"].iter().position(|v| n.contains(v)).map_or(0, |i| 3 - i))
    });
    candidates.extend(jvms);
    let Some(java_home) = candidates.into_iter().find(|j| java_ok(j)) else {
        return skip_or_fail("no JDK (17, 21 or 25) for Keycloak: neither JAVA_HOME nor /usr/lib/jvm has one");
    };
    Some(KeycloakDist { home, java_home })
}

/// The Secrets and ConfigMaps the installer wrote beside its charts, by
/// `(namespace, name)`, as decoded key → bytes maps.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

fn docs(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(d)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or("")
}

impl Objects {
    /// Reads every manifest under the root's K3s manifests directory.
    pub fn read(root: &Path) -> Result<Objects> {
        let mut o = Objects::default();
        let dir = root.join(MANIFESTS);
        for e in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = e?.path();
            let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
            for doc in docs(&text).with_context(|| format!("parse {}", path.display()))? {
                let key = (s(&doc, &["metadata", "namespace"]).to_string(), s(&doc, &["metadata", "name"]).to_string());
                let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                if let Some(m) = doc["data"].as_mapping() {
                    for (k, v) in m {
                        let k = k.as_str().unwrap_or("").to_string();
                        let v = v.as_str().unwrap_or("");
                        let bytes = if doc["kind"] == "Secret" {
                            base64::engine::general_purpose::STANDARD.decode(v.trim())?
                        } else {
                            v.as_bytes().to_vec()
                        };
                        data.insert(k, bytes);
                    }
                }
                if let Some(m) = doc["stringData"].as_mapping() {
                    for (k, v) in m {
                        data.insert(k.as_str().unwrap_or("").to_string(), v.as_str().unwrap_or("").as_bytes().to_vec());
                    }
                }
                match s(&doc, &["kind"]) {
                    "Secret" => {
                        o.secrets.insert(key, data);
                    }
                    "ConfigMap" => {
                        o.config_maps.insert(key, data);
                    }
                    _ => {}
                }
            }
        }
        Ok(o)
    }

    /// A key of a Secret, as text; an error naming what is missing.
    pub fn secret(&self, ns: &str, name: &str, key: &str) -> Result<String> {
        let data = self.secrets.get(&(ns.into(), name.into())).ok_or_else(|| anyhow!("no Secret {ns}/{name}"))?;
        let v = data.get(key).ok_or_else(|| anyhow!("Secret {ns}/{name} has no key {key}"))?;
        Ok(String::from_utf8(v.clone())?)
    }
}

/// The `HelmChart` manifest `file` in the root, rendered by helm 3.18 with its own
/// `valuesContent`: every object, and the release's namespace.
pub fn render_helm_chart(root: &Path, file: &str, helm: &Path, work: &Path) -> Result<(Vec<Value>, String, Value)> {
    let path = root.join(MANIFESTS).join(file);
    let hc = docs(&fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?)?
        .into_iter()
        .find(|d| d["kind"] == "HelmChart")
        .ok_or_else(|| anyhow!("{} holds no HelmChart", path.display()))?;
    let release = s(&hc, &["metadata", "name"]).to_string();
    let namespace = s(&hc, &["spec", "targetNamespace"]).to_string();
    let values = s(&hc, &["spec", "valuesContent"]).to_string();
    let values_file = work.join(format!("{release}-values.yaml"));
    fs::write(&values_file, &values)?;
    let chart = if let Some(b64) = hc["spec"]["chartContent"].as_str() {
        let f = work.join(format!("{release}.tgz"));
        fs::write(&f, base64::engine::general_purpose::STANDARD.decode(b64)?)?;
        f
    } else {
        let url = s(&hc, &["spec", "chart"]);
        let name = url.rsplit('/').next().unwrap_or_default();
        root.join("var/lib/rancher/k3s/server/static/charts").join(name)
    };
    let home = work.join("helm-home");
    fs::create_dir_all(&home)?;
    let out = helm_command(helm, &home)
        .args(["template", &release])
        .arg(&chart)
        .arg("-f")
        .arg(&values_file)
        .args(["--namespace", &namespace])
        .output()?;
    if !out.status.success() {
        bail!("helm template {release}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let values: Value = serde_yaml::from_str(&values)?;
    Ok((docs(&String::from_utf8(out.stdout)?)?, namespace, values))
}

/// One mount of the container: what goes at `path` in the container.
#[derive(Clone, Debug)]
pub enum MountSource {
    /// A ConfigMap's or Secret's keys as files.
    Files(BTreeMap<String, Vec<u8>>),
    /// An `emptyDir` or a persistent volume claim: a fresh directory.
    Empty,
}

/// The Keycloak container as the rendered chart defines it, with everything it refers
/// to resolved.
#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    /// The container's command (the image's entrypoint when the chart sets none) and args.
    pub argv: Vec<String>,
    /// The container's environment, resolved, in container paths.
    pub env: BTreeMap<String, String>,
    /// Mount path → source.
    pub mounts: Vec<(String, MountSource)>,
    /// The ingress host and the TLS Secret the rendered Ingress serves it with.
    pub ingress_host: String,
    pub ingress_cert_pem: String,
    pub ingress_key_pem: String,
}

impl Pod {
    /// The Keycloak pod of the root's `airlock-keycloak.yaml` HelmChart.
    pub fn from_root(root: &Path, helm: &Path, work: &Path) -> Result<Pod> {
        let objects = Objects::read(root)?;
        let (rendered, ns, _) = render_helm_chart(root, "airlock-keycloak.yaml", helm, work)?;
        let sts = rendered
            .iter()
            .find(|d| d["kind"] == "StatefulSet")
            .ok_or_else(|| anyhow!("the keycloak chart rendered no StatefulSet"))?;
        let spec = &sts["spec"]["template"]["spec"];
        let c = spec["containers"]
            .as_sequence()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "keycloak"))
            .ok_or_else(|| anyhow!("the StatefulSet has no container `keycloak`"))?;
        let claims: Vec<String> = sts["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|c| s(c, &["metadata", "name"]).to_string())
            .collect();
        let Container { argv, env, mounts } = resolve_container(spec, c, &claims, &objects, &ns, ENTRYPOINT)?;

        // The ingress: its host and the TLS Secret it names.
        let ingress = rendered
            .iter()
            .find(|d| d["kind"] == "Ingress")
            .ok_or_else(|| anyhow!("the keycloak chart rendered no Ingress"))?;
        let tls = &ingress["spec"]["tls"][0];
        let ingress_host = tls["hosts"][0].as_str().unwrap_or("").to_string();
        let secret_name = s(tls, &["secretName"]);
        let ingress_cert_pem = objects.secret(&ns, secret_name, "tls.crt")?;
        let ingress_key_pem = objects.secret(&ns, secret_name, "tls.key")?;
        Ok(Pod { namespace: ns, argv, env, mounts, ingress_host, ingress_cert_pem, ingress_key_pem })
    }
}

/// A container of a pod spec as the kubelet would run it: its command (the image's
/// `entrypoint` when it sets none) and args, its environment with
/// `secretKeyRef`/`configMapKeyRef`/`envFrom` resolved from `objects`, and its mounts.
/// `claims` are the StatefulSet's volume claim templates.
pub fn resolve_container(
    spec: &Value,
    c: &Value,
    claims: &[String],
    objects: &Objects,
    ns: &str,
    entrypoint: &str,
) -> Result<Container> {
    let ns = ns.to_string();
    let list = |v: &Value| -> Vec<String> {
        v.as_sequence().map(|s| s.iter().map(|x| x.as_str().unwrap_or("").to_string()).collect()).unwrap_or_default()
    };
    let mut argv = list(&c["command"]);
    if argv.is_empty() {
        argv.push(entrypoint.to_string());
    }

    // Environment as the kubelet builds it: envFrom first, then env in order
    // (a later entry wins), `$(NAME)` expanded from what came before.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for from in c["envFrom"].as_sequence().into_iter().flatten() {
        let (map, kind) = if from["secretRef"].is_mapping() {
            (&objects.secrets, "secretRef")
        } else if from["configMapRef"].is_mapping() {
            (&objects.config_maps, "configMapRef")
        } else {
            bail!("envFrom entry of a kind the proving ground does not know: {from:?}");
        };
        let name = s(from, &[kind, "name"]);
        let data = map.get(&(ns.clone(), name.to_string())).ok_or_else(|| {
            anyhow!("envFrom {kind} {ns}/{name}: no such object among the manifests the installer wrote")
        })?;
        for (k, v) in data {
            env.insert(format!("{}{k}", s(from, &["prefix"])), String::from_utf8(v.clone())?);
        }
    }
    for e in c["env"].as_sequence().into_iter().flatten() {
        let name = s(e, &["name"]).to_string();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if e["value"].is_null() && e["valueFrom"].is_null() {
            String::new()
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_mapping().map(|_| &e["valueFrom"]["secretKeyRef"]) {
            let (n, k) = (s(r, &["name"]), s(r, &["key"]));
            let v = objects.secrets.get(&(ns.clone(), n.to_string())).and_then(|d| d.get(k)).ok_or_else(|| {
                anyhow!("env {name}: secretKeyRef {ns}/{n} key {k} is in no Secret the installer wrote")
            })?;
            String::from_utf8(v.clone())?
        } else if let Some(r) =
            e["valueFrom"]["configMapKeyRef"].as_mapping().map(|_| &e["valueFrom"]["configMapKeyRef"])
        {
            let (n, k) = (s(r, &["name"]), s(r, &["key"]));
            let v = objects.config_maps.get(&(ns.clone(), n.to_string())).and_then(|d| d.get(k)).ok_or_else(|| {
                anyhow!("env {name}: configMapKeyRef {ns}/{n} key {k} is in no ConfigMap the installer wrote")
            })?;
            String::from_utf8(v.clone())?
        } else {
            bail!("env {name}: a valueFrom the proving ground does not know: {:?}", e["valueFrom"]);
        };
        env.insert(name, value);
    }
    let args: Vec<String> = list(&c["args"]).iter().map(|a| expand(a, &env)).collect();
    argv.extend(args);

    // Mounts: each volumeMount's volume, from the pod's volumes or the claims.
    let volumes = spec["volumes"].as_sequence().cloned().unwrap_or_default();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
        let vname = s(m, &["name"]);
        let path = s(m, &["mountPath"]).to_string();
        if !m["subPath"].is_null() {
            bail!("volumeMount {vname} at {path} uses subPath, which the proving ground does not map");
        }
        let source = if let Some(v) = volumes.iter().find(|v| v["name"] == vname) {
            let pick = |data: &BTreeMap<String, Vec<u8>>, items: &Value| -> BTreeMap<String, Vec<u8>> {
                match items.as_sequence() {
                    Some(items) => items
                        .iter()
                        .filter_map(|i| data.get(s(i, &["key"])).map(|d| (s(i, &["path"]).to_string(), d.clone())))
                        .collect(),
                    None => data.clone(),
                }
            };
            if v["configMap"].is_mapping() {
                let n = s(v, &["configMap", "name"]);
                let data = objects.config_maps.get(&(ns.clone(), n.to_string())).ok_or_else(|| {
                    anyhow!("volume {vname}: ConfigMap {ns}/{n} is not among the installer's manifests")
                })?;
                MountSource::Files(pick(data, &v["configMap"]["items"]))
            } else if v["secret"].is_mapping() {
                let n = s(v, &["secret", "secretName"]);
                let data = objects
                    .secrets
                    .get(&(ns.clone(), n.to_string()))
                    .ok_or_else(|| anyhow!("volume {vname}: Secret {ns}/{n} is not among the installer's manifests"))?;
                MountSource::Files(pick(data, &v["secret"]["items"]))
            } else if v["emptyDir"].is_mapping() || v["persistentVolumeClaim"].is_mapping() {
                MountSource::Empty
            } else {
                bail!("volume {vname}: a kind the proving ground does not map: {v:?}");
            }
        } else if claims.iter().any(|c| c.as_str() == vname) {
            MountSource::Empty
        } else {
            bail!("volumeMount {vname} at {path} names no volume and no claim");
        };
        mounts.push((path, source));
    }

    Ok(Container { argv, env, mounts })
}

/// A resolved container: see [`resolve_container`].
#[derive(Clone, Debug)]
pub struct Container {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<(String, MountSource)>,
}

/// Kubernetes' `$(NAME)` expansion of env values and args (`$$` escapes).
fn expand(v: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let (Some(a), Some(end)) = (after.strip_prefix('('), after.find(')')) {
            let name = &a[..end - 1];
            match env.get(name) {
                Some(val) => out.push_str(val),
                None => out.push_str(&rest[i..i + 2 + end]),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Free TCP ports on 127.0.0.1 (bound and released; a start that loses the race
/// fails loudly).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A copy of the distribution Keycloak runs from: its `build` step writes into the
/// home, so the unpacked original stays untouched. One copy serves the starts of a test
/// binary, one at a time, and later runs too (it lives under the target directory): a
/// start whose build options match the last one's skips Keycloak's rebuild.
pub struct KeycloakHome {
    path: PathBuf,
    pub dist: KeycloakDist,
}

impl KeycloakHome {
    /// The copy under `dir` (a test's `CARGO_TARGET_TMPDIR`), made when missing.
    pub fn under(dist: &KeycloakDist, dir: &Path) -> Result<KeycloakHome> {
        let path = dir.join(format!("keycloak-{KEYCLOAK_VERSION}-home"));
        if !path.join("bin/kc.sh").is_file() {
            // Copied aside and renamed, so an interrupted copy is never taken for one.
            let partial = dir.join(format!("keycloak-{KEYCLOAK_VERSION}-home.partial"));
            let _ = fs::remove_dir_all(&partial);
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(dir)?;
            let st = Command::new("cp").arg("-r").arg(&dist.home).arg(&partial).status()?;
            if !st.success() {
                bail!("copying {} to {} failed", dist.home.display(), partial.display());
            }
            fs::rename(&partial, &path)?;
        }
        Ok(KeycloakHome { path, dist: dist.clone() })
    }

    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }
}

/// A running Keycloak.
pub struct Keycloak {
    child: Child,
    pub run_dir: tempfile::TempDir,
    pub http_port: u16,
    pub management_port: u16,
    log: PathBuf,
    /// Values that must never show in a log the harness prints.
    secrets: Vec<String>,
}

impl Keycloak {
    /// Starts Keycloak as `pod` describes, from `home`, and waits (up to 5 min) until
    /// its readiness endpoint answers. `secrets` are redacted from any log text this
    /// returns in an error.
    pub fn start(home: &KeycloakHome, pod: &Pod, secrets: &[String]) -> Result<Keycloak> {
        Self::start_within(home, pod, secrets, Duration::from_secs(300))
    }

    /// [`Keycloak::start`] with another limit: a start expected to fail gives up sooner.
    pub fn start_within(home: &KeycloakHome, pod: &Pod, secrets: &[String], limit: Duration) -> Result<Keycloak> {
        Self::run(home, pod, secrets, limit, false)
    }

    /// Starts Keycloak as `pod` describes on the data the previous start in `home`
    /// left (its file database), as the pod restarted on a new release keeps its
    /// volume. The previous server must be stopped.
    pub fn restart(home: &KeycloakHome, pod: &Pod, secrets: &[String]) -> Result<Keycloak> {
        Self::run(home, pod, secrets, Duration::from_secs(300), true)
    }

    fn run(home: &KeycloakHome, pod: &Pod, secrets: &[String], limit: Duration, keep_data: bool) -> Result<Keycloak> {
        let run_dir = tempfile::Builder::new().prefix("airlock-keycloak-run.").tempdir()?;
        let h = home.path();
        // The data a previous start left (imported realm files, the file database).
        if !keep_data {
            let _ = fs::remove_dir_all(h.join("data"));
        }
        fs::create_dir_all(h.join("data"))?;
        let map = |container: &str| -> PathBuf {
            match container.strip_prefix(IMAGE_HOME) {
                Some(rest) => h.join(rest.trim_start_matches('/')),
                None => run_dir.path().join("fs").join(container.trim_start_matches('/')),
            }
        };
        for (path, source) in &pod.mounts {
            let dir = map(path);
            fs::create_dir_all(&dir)?;
            if let MountSource::Files(files) = source {
                for (name, bytes) in files {
                    fs::write(dir.join(name), bytes)?;
                }
            }
        }
        // Rewrite container paths in values and args (longest mount path first).
        let mut prefixes: Vec<String> = pod.mounts.iter().map(|(p, _)| p.clone()).collect();
        prefixes.push(IMAGE_HOME.to_string());
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let rewrite = |v: &str| -> String {
            let mut out = v.to_string();
            for p in &prefixes {
                if out.contains(p.as_str()) {
                    out = out.replace(p.as_str(), &map(p).display().to_string());
                }
            }
            out
        };
        let http_port = free_port();
        let management_port = free_port();
        let jgroups_port = free_port();
        let log = run_dir.path().join("keycloak.log");
        let logf = fs::File::create(&log)?;
        let argv: Vec<String> = pod.argv.iter().map(|a| rewrite(a)).collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear();
        for (k, v) in &pod.env {
            cmd.env(k, rewrite(v));
        }
        let java_opts = format!(
            "{} -Djgroups.bind.address=127.0.0.1 -Djgroups.bind.port={jgroups_port}",
            pod.env.get("JAVA_OPTS_APPEND").map(String::as_str).unwrap_or("")
        );
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", run_dir.path())
            .env("JAVA_HOME", &home.dist.java_home)
            .env("JAVA_OPTS_APPEND", java_opts.trim())
            .env("KC_HTTP_HOST", "127.0.0.1")
            .env("KC_HTTP_PORT", http_port.to_string())
            .env("KC_HTTP_MANAGEMENT_PORT", management_port.to_string())
            .current_dir(run_dir.path())
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        let child = cmd.spawn().with_context(|| format!("spawn {}", argv[0]))?;
        let mut kc = Keycloak { child, run_dir, http_port, management_port, log, secrets: secrets.to_vec() };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = kc.child.try_wait()? {
                bail!("Keycloak exited during start ({status}); log:\n{}", kc.log_tail(80));
            }
            if kc.ready() {
                return Ok(kc);
            }
            if Instant::now() > deadline {
                kc.stop();
                bail!("Keycloak was not ready within {} s; log:\n{}", limit.as_secs(), kc.log_tail(80));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn ready(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.management_port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!("GET /health/ready HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.management_port);
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut buf);
        buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
    }

    /// The whole log, unredacted: for the tests' own secret checks only.
    pub fn log_raw(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, every known secret replaced by `***`.
    pub fn log_tail(&self, n: usize) -> String {
        let text = redact(&self.log_raw(), &self.secrets);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the server (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(20));
    }
}

impl Drop for Keycloak {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).stdin(Stdio::null()).stderr(Stdio::null()).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `text` with each of `secrets` replaced by `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// The generated credentials of an installed root (`var/lib/airlock/secrets/*`).
pub fn generated_secrets(root: &Path) -> Vec<String> {
    let dir = root.join("var/lib/airlock/secrets");
    fs::read_dir(&dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter_map(|e| fs::read_to_string(e.path()).ok())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The realm sync Job the installer wrote beside the Keycloak chart (its ConfigMap
/// and Secrets resolved), run on this machine the way the cluster runs it: its
/// command, environment and mounts, with the image's Keycloak home (`kcadm.sh`) mapped
/// onto the distribution's copy. What the harness sets on top: the Keycloak URL (the
/// Job names the chart's Service, which has no DNS here; the test checks it against
/// the rendered Service), `PATH` and `JAVA_HOME`.
#[derive(Clone, Debug)]
pub struct RealmSync {
    pub name: String,
    pub image: String,
    pub container: Container,
    /// `ttlSecondsAfterFinished`, `backoffLimit`.
    pub ttl_seconds: Option<u64>,
    pub backoff_limit: Option<u64>,
}

/// What a realm sync run said and how it ended.
#[derive(Debug)]
pub struct SyncRun {
    pub success: bool,
    pub output: String,
    pub took: Duration,
}

impl RealmSync {
    /// The one realm sync Job among the root's manifests; an error when there is none
    /// or more than one.
    pub fn from_root(root: &Path) -> Result<RealmSync> {
        let objects = Objects::read(root)?;
        let dir = root.join(MANIFESTS);
        let mut jobs = Vec::new();
        for e in fs::read_dir(&dir)? {
            let path = e?.path();
            for doc in docs(&fs::read_to_string(&path)?)? {
                if doc["kind"] == "Job" && doc["metadata"]["labels"]["app.kubernetes.io/component"] == "realm-sync" {
                    jobs.push(doc);
                }
            }
        }
        if jobs.len() != 1 {
            bail!("{} realm sync Jobs among the manifests in {}, not one", jobs.len(), dir.display());
        }
        let job = &jobs[0];
        let ns = s(job, &["metadata", "namespace"]).to_string();
        let spec = &job["spec"]["template"]["spec"];
        let c = &spec["containers"][0];
        let container = resolve_container(spec, c, &[], &objects, &ns, "")?;
        Ok(RealmSync {
            name: s(job, &["metadata", "name"]).to_string(),
            image: s(c, &["image"]).to_string(),
            container,
            ttl_seconds: job["spec"]["ttlSecondsAfterFinished"].as_u64(),
            backoff_limit: job["spec"]["backoffLimit"].as_u64(),
        })
    }

    /// Runs the Job's container against `keycloak` with Keycloak's home from `home`.
    pub fn run(&self, home: &KeycloakHome, keycloak: &Keycloak) -> Result<SyncRun> {
        let run_dir = tempfile::Builder::new().prefix("airlock-realm-sync.").tempdir()?;
        let h = home.path();
        let map = |container: &str| -> PathBuf {
            match container.strip_prefix(IMAGE_HOME) {
                Some(rest) => h.join(rest.trim_start_matches('/')),
                None => run_dir.path().join("fs").join(container.trim_start_matches('/')),
            }
        };
        for (path, source) in &self.container.mounts {
            let dir = map(path);
            fs::create_dir_all(&dir)?;
            if let MountSource::Files(files) = source {
                for (name, bytes) in files {
                    fs::write(dir.join(name), bytes)?;
                }
            }
        }
        let mut prefixes: Vec<String> = self.container.mounts.iter().map(|(p, _)| p.clone()).collect();
        prefixes.push(IMAGE_HOME.to_string());
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let rewrite = |v: &str| -> String {
            match prefixes.iter().find(|p| v.starts_with(p.as_str())) {
                Some(p) => format!("{}{}", map(p).display(), &v[p.len()..]),
                None => v.to_string(),
            }
        };
        let argv: Vec<String> = self.container.argv.iter().map(|a| rewrite(a)).collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear();
        for (k, v) in &self.container.env {
            cmd.env(k, rewrite(v));
        }
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("JAVA_HOME", &home.dist.java_home)
            .env("KEYCLOAK_URL", format!("http://127.0.0.1:{}", keycloak.http_port))
            .stdin(Stdio::null());
        let t0 = Instant::now();
        let out = cmd.output().with_context(|| format!("run {}", argv[0]))?;
        Ok(SyncRun {
            success: out.status.success(),
            output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            took: t0.elapsed(),
        })
    }
}

/// nginx terminating TLS on 127.0.0.1 for one host, forwarding to a local HTTP port
/// with the `X-Forwarded-*` headers an ingress controller sends.
pub struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub host: String,
}

impl Proxy {
    pub fn start(host: &str, cert_pem: &str, key_pem: &str, upstream_port: u16) -> Option<Proxy> {
        let nginx = require_tool("nginx")?;
        Some(Self::start_with(&nginx, host, cert_pem, key_pem, upstream_port).expect("start nginx"))
    }

    fn start_with(nginx: &Path, host: &str, cert_pem: &str, key_pem: &str, upstream: u16) -> Result<Proxy> {
        let dir = tempfile::Builder::new().prefix("airlock-proxy.").tempdir()?;
        let d = dir.path();
        fs::create_dir_all(d.join("tmp"))?;
        fs::write(d.join("tls.crt"), cert_pem)?;
        fs::write(d.join("tls.key"), key_pem)?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let p = |f: &str| d.join(f).display().to_string();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {err} info;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log {acc};\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n\
                 fastcgi_temp_path {t}/fcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name {host};\n\
                 ssl_certificate {crt};\n    ssl_certificate_key {key};\n\
                 location / {{\n      proxy_pass http://127.0.0.1:{upstream};\n\
                 proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $remote_addr;\n\
                 proxy_set_header X-Forwarded-Proto https;\n      proxy_set_header X-Forwarded-Host $host;\n\
                 proxy_set_header X-Forwarded-Port 443;\n      proxy_buffer_size 128k;\n\
                 proxy_buffers 4 256k;\n      proxy_busy_buffers_size 256k;\n    }}\n  }}\n}}\n",
                pid = p("nginx.pid"),
                err = p("error.log"),
                acc = p("access.log"),
                t = p("tmp"),
                crt = p("tls.crt"),
                key = p("tls.key"),
            );
            fs::write(d.join("nginx.conf"), conf)?;
            let mut child = Command::new(nginx)
                .arg("-p")
                .arg(d)
                .arg("-e")
                .arg(d.join("error.log"))
                .arg("-c")
                .arg(d.join("nginx.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(d.join("stderr.log"))?)
                .spawn()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(st) = child.try_wait()? {
                    last = format!(
                        "nginx exited ({st}): {}{}",
                        fs::read_to_string(d.join("stderr.log")).unwrap_or_default(),
                        fs::read_to_string(d.join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Proxy { child, dir, port, host: host.to_string() });
                }
                if Instant::now() > deadline {
                    stop_child(&mut child, Duration::from_secs(2));
                    bail!("nginx did not listen on {port} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        bail!("{last}")
    }

    /// The proxy's logs (error and access), for the tests' secret checks.
    pub fn logs(&self) -> String {
        let d = self.dir.path();
        ["stderr.log", "error.log", "access.log"]
            .iter()
            .map(|f| fs::read_to_string(d.join(f)).unwrap_or_default())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or(Json::Null)
    }
}

/// curl as a browser or an app on site would use it: `https://<host>/...` URLs, the
/// site CA as the only trust anchor, the host's port 443 mapped onto the proxy. Keeps
/// a cookie jar. Request bodies go through stdin, so no secret is on a command line.
pub struct Client {
    curl: PathBuf,
    ca: PathBuf,
    connect_to: String,
    dir: tempfile::TempDir,
}

impl Client {
    pub fn new(ca: &Path, proxy: &Proxy) -> Option<Client> {
        let curl = require_tool("curl")?;
        let dir = tempfile::Builder::new().prefix("airlock-client.").tempdir().unwrap();
        fs::create_dir_all(dir.path().join("no-ca-path")).unwrap();
        Some(Client {
            curl,
            ca: ca.to_path_buf(),
            connect_to: format!("{}:443:127.0.0.1:{}", proxy.host, proxy.port),
            dir,
        })
    }

    /// Starts a new browser session (drops the cookies).
    pub fn forget_cookies(&self) {
        let _ = fs::remove_file(self.dir.path().join("cookies"));
    }

    /// Runs one request: `method url`, optional form/JSON body and bearer token.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, &str)>,
        bearer: Option<&str>,
    ) -> Result<Response> {
        let headers = self.dir.path().join("headers");
        let mut cmd = Command::new(&self.curl);
        cmd.args(["-sS", "--max-time", "60", "-X", method])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--capath")
            .arg(self.dir.path().join("no-ca-path"))
            .args(["--connect-to", &self.connect_to])
            .arg("-b")
            .arg(self.dir.path().join("cookies"))
            .arg("-c")
            .arg(self.dir.path().join("cookies"))
            .arg("-D")
            .arg(&headers)
            .args(["-w", "\n%{http_code}"]);
        let mut config = String::new();
        if let Some(token) = bearer {
            // Through a config file, so the token stays off the command line.
            config.push_str(&format!("header = \"Authorization: Bearer {token}\"\n"));
        }
        let config_file = self.dir.path().join("curl.conf");
        fs::write(&config_file, &config)?;
        cmd.arg("-K").arg(&config_file);
        if let Some((content_type, _)) = body {
            cmd.args(["-H", &format!("Content-Type: {content_type}"), "--data-binary", "@-"]);
        }
        cmd.arg(url).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        {
            let mut stdin = child.stdin.take().unwrap();
            if let Some((_, b)) = body {
                stdin.write_all(b.as_bytes())?;
            }
        }
        let out = child.wait_with_output()?;
        let _ = fs::remove_file(&config_file);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let status: u16 = code.trim().parse().unwrap_or(0);
        if status == 0 {
            bail!("curl {method} {url}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let head = fs::read_to_string(&headers).unwrap_or_default();
        let location = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.trim().to_string())
            .next_back();
        Ok(Response { status, location, body: body.to_string() })
    }

    pub fn get(&self, url: &str) -> Result<Response> {
        self.request("GET", url, None, None)
    }

    pub fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<Response> {
        let body: String = form.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
        self.request("POST", url, Some(("application/x-www-form-urlencoded", &body)), None)
    }

    /// The TLS certificate the proxy serves for the host (PEM), as openssl sees it.
    pub fn served_certificate(&self, proxy: &Proxy) -> Result<String> {
        let openssl = require_tool("openssl").ok_or_else(|| anyhow!("openssl"))?;
        let out = Command::new(openssl)
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", proxy.port), "-servername", &proxy.host])
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let start = text.find("-----BEGIN CERTIFICATE-----").ok_or_else(|| anyhow!("no certificate served"))?;
        let end = text.find("-----END CERTIFICATE-----").ok_or_else(|| anyhow!("no certificate end"))?;
        Ok(format!("{}-----END CERTIFICATE-----\n", &text[start..end]))
    }
}

/// Form URL encoding.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The claims of a JWT (its payload, not verified: the token came over TLS from the
/// server under test).
pub fn jwt_claims(token: &str) -> Result<Json> {
    let payload = token.split('.').nth(1).ok_or_else(|| anyhow!("not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The login form's action URL in a Keycloak login page.
pub fn login_form_action(html: &str) -> Option<String> {
    let i = html.find("id=\"kc-form-login\"")?;
    let form_start = html[..i].rfind("<form")?;
    let rest = &html[form_start..];
    let a = rest.find("action=\"")? + "action=\"".len();
    let end = rest[a..].find('"')?;
    Some(rest[a..a + end].replace("&amp;", "&"))
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}
