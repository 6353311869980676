//! The planted-secret corpus: every form of secret the redactor knows, planted in every
//! format collected text comes in, and a property test that nests Secret-bearing
//! documents at random. For each case: (1) the planted value is nowhere in the output,
//! (2) what parsed as YAML/JSON still parses, with the same keys, (3) booleans, numbers
//! and every string that held no secret are unchanged, (4) the counts add up to the
//! number of planted values.

use proptest::prelude::*;
use serde::Deserialize as _;
use serde_yaml::{Mapping, Value};

use super::*;

/// A value that is no generated secret of the corpus' redactor (only the `generated`
/// form plants one).
const UNRELATED: &str = "unrelated-generated-value-0000";

/// A `name`/`value` pair holding a planted value.
type Pair = fn(&str) -> (&'static str, String);

/// One form of secret.
struct Form {
    name: &'static str,
    /// A document holding the planted value among things to keep.
    doc: fn(&str) -> Value,
    /// As a `name`/`value` pair of an env file, INI section, unit or log line; `None`
    /// for forms that only exist in documents.
    pair: Option<Pair>,
    /// Whether the redactor knows the value as a generated one.
    generated: bool,
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("corpus YAML")
}

/// Fields every document carries that must come out unchanged.
fn with_keepers(mut doc: Value) -> Value {
    let keep = yaml("replicas: 3\nenabled: true\ndisabled: false\nratio: 0.5\nmode: fast\nnothing: null\n");
    if let (Value::Mapping(d), Value::Mapping(k)) = (&mut doc, keep) {
        d.insert("settings".into(), Value::Mapping(k));
    }
    doc
}

fn pem(kind: &str, body: &str) -> String {
    format!("-----BEGIN {kind}-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n{body}\n-----END {kind}-----\n")
}

const JOIN: &str = "K10a3f1c9e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a6::server:";

fn forms() -> Vec<Form> {
    vec![
        Form {
            name: "secret-data",
            doc: |p| {
                yaml(&format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ntype: Opaque\ndata:\n  api-key: {p}\n"
                ))
            },
            pair: None,
            generated: false,
        },
        Form {
            name: "secret-string-data",
            doc: |p| yaml(&format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\nstringData:\n  url: {p}\n")),
            pair: None,
            generated: false,
        },
        Form {
            name: "env-name-value-pair",
            doc: |p| {
                yaml(&format!(
                    "kind: Deployment\nspec:\n  containers:\n  - name: app\n    env:\n    - name: LOG_LEVEL\n      \
                     value: debug\n    - name: DB_PASSWORD\n      value: {p}\n"
                ))
            },
            pair: Some(|p| ("DB_PASSWORD", p.to_string())),
            generated: false,
        },
        Form {
            name: "env-name-as-key",
            doc: |p| yaml(&format!("extraEnv:\n  LOG_LEVEL: debug\n  API_TOKEN: {p}\n  SMTP_PASS: {p}x\n")),
            pair: Some(|p| ("SMTP_PASS", p.to_string())),
            generated: false,
        },
        Form {
            name: "credential-field",
            doc: |p| yaml(&format!("ldap:\n  bindDn: cn=reader,dc=example,dc=test\n  bindCredential: {p}\n")),
            pair: Some(|p| ("bindCredential", p.to_string())),
            generated: false,
        },
        Form {
            name: "connection-string-libpq",
            doc: |p| yaml(&format!("database:\n  dsn: host=db user=app password={p} dbname=app\n")),
            pair: Some(|p| ("DSN", format!("host=db user=app password={p} dbname=app"))),
            generated: false,
        },
        Form {
            name: "connection-string-ado",
            doc: |p| yaml(&format!("database:\n  connection: Server=db;User Id=sa;Password={p};Encrypt=true\n")),
            pair: Some(|p| ("CONNECTION", format!("Server=db;User Id=sa;Password={p};Encrypt=true"))),
            generated: false,
        },
        Form {
            name: "url-userinfo",
            doc: |p| yaml(&format!("database:\n  url: postgres://app:{p}@db:5432/app\n")),
            pair: Some(|p| ("DATABASE_URL", format!("postgres://app:{p}@db:5432/app"))),
            generated: false,
        },
        Form {
            name: "docker-auth",
            doc: |p| yaml(&format!("auths:\n  registry.local:5000:\n    auth: {p}\n    email: ops@example.test\n")),
            pair: Some(|p| ("auth", p.to_string())),
            generated: false,
        },
        Form {
            name: "k3s-join-token",
            doc: |p| yaml(&format!("join:\n  server: https://10.0.0.1:6443\n  with: {JOIN}{p}\n")),
            pair: Some(|p| ("JOIN_WITH", format!("{JOIN}{p}"))),
            generated: false,
        },
        Form {
            name: "pem-private-key",
            doc: |p| {
                let mut m = Mapping::new();
                m.insert("bundle".into(), pem("EC PRIVATE KEY", p).into());
                let mut d = Mapping::new();
                d.insert("tls".into(), Value::Mapping(m));
                Value::Mapping(d)
            },
            pair: Some(|p| ("TLS_BUNDLE", pem("PRIVATE KEY", p))),
            generated: false,
        },
        Form {
            name: "pgp-private-key",
            doc: |p| {
                let mut d = Mapping::new();
                d.insert("signing".into(), pem("PGP PRIVATE KEY BLOCK", p).into());
                Value::Mapping(d)
            },
            pair: Some(|p| ("SIGNING", pem("PGP PRIVATE KEY BLOCK", p))),
            generated: false,
        },
        Form {
            name: "generated-value",
            doc: |p| yaml(&format!("minio:\n  rootUser: admin\n  note: {p}\n")),
            pair: Some(|p| ("NOTE", p.to_string())),
            generated: true,
        },
    ]
}

/// A document format: a name for [`Format::of`], and the text of a document in it.
struct DocFormat {
    name: &'static str,
    file: &'static str,
    render: fn(&Value) -> String,
    /// Cut off at the size limit: the text rules' to redact, nothing to parse after.
    cut: bool,
}

fn block(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap()
}

fn json_pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

/// YAML in flow style: `{kind: Secret, data: {api-key: "..."}}`.
fn flow(v: &Value) -> String {
    match v {
        Value::Mapping(m) => {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{}: {}", flow(k), flow(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Sequence(s) => format!("[{}]", s.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::String(s) if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            if serde_yaml::from_str::<Value>(s).ok().is_some_and(|v| v.is_string()) {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap()
            }
        }
        Value::String(s) => serde_json::to_string(s).unwrap(),
        other => serde_json::to_string(other).unwrap(),
    }
}

fn doc_formats() -> Vec<DocFormat> {
    vec![
        DocFormat { name: "yaml-block", file: "files/m.yaml", render: block, cut: false },
        DocFormat {
            name: "yaml-cut-off",
            file: "cluster/pods.yaml",
            render: |v| format!("{}status: {{phase: Runn", block(v)),
            cut: true,
        },
        DocFormat { name: "yaml-flow", file: "files/m.yaml", render: |v| flow(v) + "\n", cut: false },
        DocFormat {
            name: "yaml-comments",
            file: "files/m.yaml",
            render: |v| {
                let text: String = block(v)
                    .lines()
                    .map(|l| if l.starts_with("kind:") { format!("{l} # what this is\n") } else { format!("{l}\n") })
                    .collect();
                format!("# hand-edited on site\n{text}# end\n")
            },
            cut: false,
        },
        DocFormat {
            name: "yaml-stream",
            file: "files/m.yaml",
            render: |v| {
                let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  a: b\n";
                format!("---\n{cm}---\n{}---\n{cm}", block(v))
            },
            cut: false,
        },
        DocFormat { name: "json-pretty", file: "status.json", render: json_pretty, cut: false },
        DocFormat {
            name: "json-cut-off",
            file: "cluster/pods.json",
            render: |v| json_pretty(v).trim_end().trim_end_matches('}').to_string(),
            cut: true,
        },
        DocFormat {
            name: "json-compact",
            file: "state/x.json",
            render: |v| serde_json::to_string(v).unwrap(),
            cut: false,
        },
        DocFormat {
            name: "kubectl-list",
            file: "cluster/pods.yaml",
            render: |v| {
                let mut list = yaml("apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\n");
                list.as_mapping_mut().unwrap().insert("items".into(), Value::Sequence(vec![v.clone()]));
                block(&list)
            },
            cut: false,
        },
        DocFormat {
            name: "kubeconfig",
            file: "files/etc/rancher/k3s/k3s.yaml",
            render: |v| {
                let mut k = yaml(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    server: \
                     https://127.0.0.1:6443\ncontexts:\n- name: default\n  context: {cluster: default, user: \
                     default}\ncurrent-context: default\nusers:\n- name: default\n  user: {}\n",
                );
                let ext = Value::Sequence(vec![{
                    let mut e = Mapping::new();
                    e.insert("name".into(), "airlock".into());
                    e.insert("extension".into(), v.clone());
                    Value::Mapping(e)
                }]);
                let mut prefs = Mapping::new();
                prefs.insert("extensions".into(), ext);
                k.as_mapping_mut().unwrap().insert("preferences".into(), Value::Mapping(prefs));
                block(&k)
            },
            cut: false,
        },
        DocFormat {
            name: "docker-config-json",
            file: "files/root/.docker/config.json",
            render: |v| {
                let mut c = yaml("auths:\n  mirror.local:\n    email: ops@example.test\ncredsStore: \"\"\n");
                c.as_mapping_mut().unwrap().insert("plugins".into(), v.clone());
                json_pretty(&c)
            },
            cut: false,
        },
        DocFormat {
            name: "helmchart-values-content",
            file: "files/var/lib/rancher/k3s/server/manifests/app.yaml",
            render: |v| {
                let mut h = yaml(
                    "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: app\n  namespace: \
                     kube-system\nspec:\n  chart: app\n  version: 1.2.3\n",
                );
                let spec = h.as_mapping_mut().unwrap().get_mut("spec").unwrap().as_mapping_mut().unwrap();
                spec.insert("valuesContent".into(), block(v).into());
                block(&h)
            },
            cut: false,
        },
        DocFormat {
            name: "realm-json-in-configmap",
            file: "cluster/configmaps.yaml",
            render: |v| {
                let mut cm = yaml("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: realm\n");
                let mut data = Mapping::new();
                data.insert("realm.json".into(), json_pretty(&realm(v)).into());
                cm.as_mapping_mut().unwrap().insert("data".into(), Value::Mapping(data));
                block(&cm)
            },
            cut: false,
        },
        DocFormat {
            name: "realm-json",
            file: "files/etc/airlock/realm.json",
            render: |v| json_pretty(&realm(v)),
            cut: false,
        },
        DocFormat {
            name: "last-applied-annotation",
            file: "cluster/jobs.yaml",
            render: |v| {
                let mut d = v.clone();
                let mut ann = Mapping::new();
                ann.insert(
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    serde_json::to_string(v).unwrap().into(),
                );
                let mut meta = Mapping::new();
                meta.insert("annotations".into(), Value::Mapping(ann));
                d.as_mapping_mut().unwrap().insert("metadata".into(), Value::Mapping(meta));
                block(&d)
            },
            cut: false,
        },
    ]
}

/// A Keycloak realm with the document as an LDAP component's config.
fn realm(v: &Value) -> Value {
    let mut r = yaml(
        "realm: airlock\nenabled: true\nsslRequired: external\naccessTokenLifespan: 300\ncomponents:\n  \
         org.keycloak.storage.UserStorageProvider:\n  - name: ldap\n    providerId: ldap\n",
    );
    let c = r["components"]["org.keycloak.storage.UserStorageProvider"][0].as_mapping_mut().unwrap();
    c.insert("config".into(), v.clone());
    r
}

/// A text format: a name for [`Format::of`], and a file holding one `name`/`value` pair.
struct TextFormat {
    name: &'static str,
    file: &'static str,
    render: fn(&str, &str) -> String,
    /// Lines that hold no secret and must come out unchanged.
    keep: &'static [&'static str],
}

fn text_formats() -> Vec<TextFormat> {
    vec![
        TextFormat {
            name: "env-file",
            file: "files/etc/systemd/system/k3s.service.env",
            render: |k, v| format!("LOG_LEVEL=debug\nREPLICAS=3\nENABLED=true\n{k}=\"{v}\"\nK3S_NODE_NAME=n1\n"),
            keep: &["LOG_LEVEL=debug", "REPLICAS=3", "ENABLED=true", "K3S_NODE_NAME=n1"],
        },
        TextFormat {
            name: "ini",
            file: "files/etc/airlock/app.ini",
            render: |k, v| format!("[server]\nport = 8080\nenabled = true\n\n[auth]\n{k} = {v}\nmode = fast\n"),
            keep: &["[server]", "port = 8080", "enabled = true", "mode = fast"],
        },
        TextFormat {
            name: "systemd-unit",
            file: "files/etc/systemd/system/k3s.service",
            render: |k, v| {
                format!(
                    "[Service]\nType=notify\nEnvironment=\"{k}={v}\"\nExecStart=/usr/local/bin/k3s server --node-name n1\n"
                )
            },
            keep: &["Type=notify", "ExecStart=/usr/local/bin/k3s server --node-name n1"],
        },
        TextFormat {
            name: "log",
            file: "logs/k3s.service.log",
            render: |k, v| {
                format!("Nov 22 05:35:00 n1 k3s[1]: level=info msg=\"starting\" {k}={v}\nNov 22 05:35:01 n1 k3s[1]: ready=true\n")
            },
            keep: &["Nov 22 05:35:01 n1 k3s[1]: ready=true"],
        },
    ]
}

/// The planted value of a form in a format: letters and digits, unlike any key.
fn planted(form: &str, format: &str) -> String {
    let tag: String = format!("{form}{format}").chars().filter(char::is_ascii_alphanumeric).collect();
    format!("Pl4nted{tag}Zq9")
}

fn redactor(form: &Form, p: &str) -> Redactor {
    Redactor::new(&[if form.generated { p.to_string() } else { UNRELATED.to_string() }])
}

fn parse(file: &str, text: &str) -> Vec<Value> {
    if file.ends_with(".json") {
        vec![serde_json::from_str(text).unwrap_or_else(|e| panic!("no longer JSON: {e}\n{text}"))]
    } else {
        serde_yaml::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("no longer YAML: {e}\n{text}")))
            .collect()
    }
}

/// (2) and (3): the same keys, and every leaf that held no planted value unchanged.
fn same_but_secrets(before: &Value, after: &Value, p: &str, at: &str) {
    match (before, after) {
        (Value::Mapping(b), Value::Mapping(a)) => {
            let (bk, ak): (Vec<_>, Vec<_>) = (b.keys().collect(), a.keys().collect());
            assert_eq!(bk, ak, "keys changed at {at}");
            for (k, v) in b {
                same_but_secrets(v, &a[k], p, &format!("{at}.{}", k.as_str().unwrap_or("?")));
            }
        }
        (Value::Sequence(b), Value::Sequence(a)) => {
            assert_eq!(b.len(), a.len(), "length changed at {at}");
            for (i, (b, a)) in b.iter().zip(a).enumerate() {
                same_but_secrets(b, a, p, &format!("{at}[{i}]"));
            }
        }
        (Value::String(b), _) if b.contains(p) => {}
        _ => assert_eq!(before, after, "changed at {at}"),
    }
}

fn check(case: &str, r: &Redactor, file: &str, text: &str, p: &str) -> (String, Counts) {
    let (out, counts) = r.redact_file(file, text);
    assert!(!out.contains(p), "{case}: planted value survived:\n{out}");
    let planted = text.matches(p).count();
    assert!(planted > 0, "{case}: nothing planted");
    assert_eq!(counts.values().sum::<usize>(), planted, "{case}: {counts:?}\n{out}");
    assert!(counts.keys().all(|k| RULES.contains(&k.as_str())), "{case}: {counts:?}");
    (out, counts)
}

#[test]
fn every_planted_secret_form_is_redacted_in_every_document_format_and_the_rest_kept() {
    let mut cases = 0;
    for form in forms() {
        for f in doc_formats() {
            let p = planted(form.name, f.name);
            let text = (f.render)(&with_keepers((form.doc)(&p)));
            let case = format!("{} in {}", form.name, f.name);
            let (out, _) = check(&case, &redactor(&form, &p), f.file, &text, &p);
            cases += 1;
            if f.cut {
                assert!(tree::Tree::parse(&text, Format::of(f.file)).is_none(), "{case}: parses");
                continue;
            }
            let (before, after) = (parse(f.file, &text), parse(f.file, &out));
            assert_eq!(before.len(), after.len(), "{case}: documents");
            for (b, a) in before.iter().zip(&after) {
                same_but_secrets(b, a, &p, &case);
            }
        }
    }
    assert_eq!(cases, 13 * 15);
}

#[test]
fn every_planted_secret_form_is_redacted_in_every_text_format_and_the_rest_kept() {
    for form in forms() {
        let Some(pair) = form.pair else { continue };
        for f in text_formats() {
            let p = planted(form.name, f.name);
            let (k, v) = pair(&p);
            let text = (f.render)(k, &v);
            let case = format!("{} in {}", form.name, f.name);
            let (out, _) = check(&case, &redactor(&form, &p), f.file, &text, &p);
            for keep in f.keep {
                assert!(out.lines().any(|l| l == *keep), "{case}: {keep:?} lost:\n{out}");
            }
        }
    }
}

/// A Secret wrapped in one more layer.
#[derive(Clone, Debug)]
enum Wrap {
    List,
    SecretList,
    ValuesContent,
    JsonInConfigMap,
    LastApplied,
    Under(String),
    Sequence,
}

fn wrap(v: Value, w: &Wrap) -> Value {
    let mut m = Mapping::new();
    match w {
        Wrap::List | Wrap::SecretList => {
            let mut v = v;
            // The API lists Secrets without their `kind`.
            if matches!(w, Wrap::SecretList) && v.get("kind").and_then(Value::as_str) == Some("Secret") {
                v.as_mapping_mut().unwrap().remove("kind");
            }
            m.insert("kind".into(), if matches!(w, Wrap::List) { "List" } else { "SecretList" }.into());
            m.insert("items".into(), Value::Sequence(vec![v]));
        }
        Wrap::ValuesContent => {
            m.insert("kind".into(), "HelmChart".into());
            m.insert("spec".into(), yaml(&format!("valuesContent: {}", serde_json::to_string(&block(&v)).unwrap())));
        }
        Wrap::JsonInConfigMap => {
            m.insert("kind".into(), "ConfigMap".into());
            let mut data = Mapping::new();
            data.insert("doc.json".into(), serde_json::to_string(&v).unwrap().into());
            m.insert("data".into(), Value::Mapping(data));
        }
        Wrap::LastApplied => {
            let mut ann = Mapping::new();
            ann.insert(
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                serde_json::to_string(&v).unwrap().into(),
            );
            m.insert("annotations".into(), Value::Mapping(ann));
        }
        Wrap::Under(key) => {
            m.insert(key.as_str().into(), v);
        }
        Wrap::Sequence => return Value::Sequence(vec![3.into(), v, true.into()]),
    }
    Value::Mapping(m)
}

fn wraps() -> impl Strategy<Value = Wrap> {
    prop_oneof![
        Just(Wrap::List),
        Just(Wrap::SecretList),
        Just(Wrap::ValuesContent),
        Just(Wrap::JsonInConfigMap),
        Just(Wrap::LastApplied),
        "[a-z][a-zA-Z0-9]{0,8}".prop_map(Wrap::Under),
        Just(Wrap::Sequence),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn randomly_nested_secrets_never_leak(
        value in "[A-Za-z0-9+/]{12,40}",
        key in "[a-z][a-z0-9.-]{0,12}",
        string_data in any::<bool>(),
        layers in prop::collection::vec(wraps(), 0..6),
        syntax in 0..4u8,
    ) {
        let p = format!("Pl4nt{value}");
        let data = if string_data { "stringData" } else { "data" };
        let mut doc = yaml("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n");
        let mut values = Mapping::new();
        values.insert(key.into(), p.clone().into());
        doc.as_mapping_mut().unwrap().insert(data.into(), Value::Mapping(values));
        for w in &layers {
            doc = wrap(doc, w);
        }
        let (file, text) = match syntax {
            0 => ("m.yaml", block(&doc)),
            1 => ("m.yaml", flow(&doc) + "\n"),
            2 => ("m.json", json_pretty(&doc)),
            _ => ("m.json", serde_json::to_string(&doc).unwrap()),
        };
        let (out, counts) = Redactor::new(&[UNRELATED.to_string()]).redact_file(file, &text);
        prop_assert!(!out.contains(&p), "{layers:?} leaked:\n{out}");
        // At least: a layer under a key that says credential takes more with it.
        prop_assert!(counts.values().sum::<usize>() >= text.matches(&p).count());
        prop_assert_eq!(parse(file, &text).len(), parse(file, &out).len());
    }
}
