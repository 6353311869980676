use super::*;

fn redact(text: &str) -> (String, Counts) {
    Redactor::new(&["0123456789abcdef0123456789abcdef".to_string()]).redact(text)
}

#[test]
fn a_pem_private_key_block_goes_and_a_certificate_stays() {
    let text = "ca.crt: |\n  -----BEGIN CERTIFICATE-----\n  MIIBcert\n  -----END CERTIFICATE-----\n\
                tls.key: |\n  -----BEGIN EC PRIVATE KEY-----\n  MHcCAQEEIsecretkeybytes\n  -----END EC PRIVATE KEY-----\n";
    let (t, c) = redact(text);
    assert!(!t.contains("secretkeybytes") && t.contains("MIIBcert"), "{t}");
    assert_eq!(c[RULE_PRIVATE_KEY], 1);
    let (t, _) = redact("-----BEGIN PRIVATE KEY-----\nMIIEvQcutoff");
    assert!(!t.contains("MIIEvQcutoff"), "{t}");
    let wrapped = base64::engine::general_purpose::STANDARD.encode("-----BEGIN RSA PRIVATE KEY-----\nabc\n");
    let (t, c) = redact(&format!("    client-cert: x\n    other: {wrapped}\n"));
    assert!(!t.contains(&wrapped) && c[RULE_PRIVATE_KEY] == 1, "{t}");
}

#[test]
fn secret_data_and_string_data_values_go_including_block_scalars() {
    let text = "apiVersion: v1\nkind: ConfigMap\ndata:\n  keep: me\n---\napiVersion: v1\nkind: Secret\n\
                metadata:\n  name: ldap\nstringData:\n  bind: hunter2hunter2\n  realm.json: |\n    {\"x\": \"deep\"}\n\
                \n    more\ndata:\n  k: aGVsbG8=\ntype: Opaque\n";
    let (t, c) = redact(text);
    assert!(t.contains("keep: me"), "{t}");
    for gone in ["hunter2hunter2", "deep", "more", "aGVsbG8="] {
        assert!(!t.contains(gone), "{gone} in {t}");
    }
    assert!(t.contains("name: ldap") && t.contains("type: Opaque") && t.contains("---\n"), "{t}");
    assert_eq!(c[RULE_SECRET_DATA], 3);
    serde_yaml::Deserializer::from_str(&t).for_each(|d| {
        serde_yaml::Value::deserialize(d).expect("still YAML");
    });
}

use serde::Deserialize as _;

#[test]
fn generated_values_go_wherever_they_are_also_base64_encoded() {
    let tok = "0123456789abcdef0123456789abcdef";
    let b64 = base64::engine::general_purpose::STANDARD.encode(tok);
    let (t, c) = redact(&format!("cluster: K10abc::server:{tok}\nnote: {b64}\n"));
    assert!(!t.contains(tok) && !t.contains(&b64), "{t}");
    assert_eq!(c[RULE_GENERATED], 2);
}

#[test]
fn credentials_by_name_in_yaml_json_env_flags_and_urls() {
    let text = "token: abcdefgh\ntoken-file: /root/cluster-token\nsecretName: tls\n\
                K3S_TOKEN=tok-value-1\nEnvironment=\"RKE2_TOKEN=tok-value-2\"\n\
                {\"bindCredential\": [\"ldap-pass-1\"], \"bindDn\": \"cn=admin\"}\n\
                {\"components\": [{\"config\": {\"bindCredential\": [\"ldap-pass-3\"]}}]}\n\
                \"bindCredential\" : [\n  \"ldap-pass-2\"\n],\n\
                ExecStart=/usr/local/bin/k3s server --token=flag-tok-1 --node-name n1\n\
                url: postgres://app:db-pass-1@db:5432/app\n\
                Authorization: Bearer eyJhbGciOiJSUzI1NiJ9\n\
                password: |\n  multi-line-pass\nnext: 1\nautomountServiceAccountToken: false\n";
    let (t, c) = redact(text);
    for gone in [
        "abcdefgh",
        "tok-value-1",
        "tok-value-2",
        "ldap-pass-1",
        "ldap-pass-2",
        "ldap-pass-3",
        "flag-tok-1",
        "db-pass-1",
        "eyJhbGci",
        "multi-line-pass",
    ] {
        assert!(!t.contains(gone), "{gone} in\n{t}");
    }
    for kept in ["/root/cluster-token", "secretName: tls", "cn=admin", "--node-name n1", "next: 1", "Token: false"] {
        assert!(t.contains(kept), "{kept} lost in\n{t}");
    }
    assert_eq!(c[RULE_ENV], 2, "{c:?}");
    assert_eq!(c[RULE_CONNECTION], 1, "{c:?}");
    assert_eq!(c[RULE_CREDENTIAL], 7, "{c:?}");
}

#[test]
fn short_generated_values_are_counted_not_matched_everywhere() {
    let r = Redactor::new(&["abc".to_string(), "   ".to_string()]);
    assert_eq!(r.too_short, 1);
    assert_eq!(r.redact("abc abc").0, "abc abc");
}

/// The field report: a Secret as JSON, in flow style, or with a comment after its kind
/// kept its data verbatim.
#[test]
fn a_secret_in_json_flow_style_or_with_a_commented_kind_loses_its_data() {
    for (name, text) in [
        ("s.json", r#"{"apiVersion": "v1", "kind": "Secret", "data": {"pw": "c2VjcmV0LWpzb24="}}"#),
        ("s.yaml", "{apiVersion: v1, kind: Secret, data: {pw: c2VjcmV0LWZsb3c=}, stringData: {x: flow-plain}}\n"),
        ("s.yaml", "apiVersion: v1\nkind: Secret  # the app's\ndata:\n  pw: c2VjcmV0LWNvbW1lbnQ=\n"),
        ("s.yaml", "apiVersion: v1\nkind: \"Secret\"\nstringData: {\"pw\": \"quoted-flow\"}\n"),
    ] {
        let (t, c) = redact_file(name, text);
        for gone in ["c2VjcmV0", "flow-plain", "quoted-flow"] {
            assert!(!t.contains(gone), "{gone} in\n{t}");
        }
        assert!(c[RULE_SECRET_DATA] >= 1, "{c:?}");
    }
}

fn redact_file(name: &str, text: &str) -> (String, Counts) {
    Redactor::new(&["0123456789abcdef0123456789abcdef".to_string()]).redact_file(name, text)
}

#[test]
fn a_document_without_secrets_is_kept_byte_for_byte_with_its_comments() {
    let text = "# operator: raised for the import\nreplicas:   3   # was 1\nenabled: yes\nratio: 0.50\n";
    let (t, c) = redact_file("values.yaml", text);
    assert_eq!(t, text);
    assert!(c.is_empty(), "{c:?}");
    let json = "{\n  \"a\": 1.50,\n  \"b\": [true, false, null]\n}\n";
    assert_eq!(redact_file("status.json", json).0, json);
}

#[test]
fn a_redacted_document_is_still_the_same_json_or_yaml_with_booleans_and_numbers_kept() {
    let json = r#"{"z": 1, "token": "abcdefgh", "automountServiceAccountToken": false, "tokenTTL": 3600, "a": [1.5]}"#;
    let (t, c) = redact_file("x.json", json);
    let v: serde_json::Value = serde_json::from_str(&t).expect("still JSON");
    assert_eq!(v["token"], REDACTED);
    assert_eq!(v["automountServiceAccountToken"], false);
    assert_eq!(v["tokenTTL"], 3600);
    assert_eq!(v["a"][0], 1.5);
    // Key order is kept.
    assert!(t.find("\"z\"") < t.find("\"token\"") && t.find("\"token\"") < t.find("\"a\""), "{t}");
    assert_eq!(c[RULE_CREDENTIAL], 1);
}

#[test]
fn secrets_inside_strings_that_are_documents_are_found_by_meaning() {
    let realm = r#"{"components": [{"config": {"bindCredential": ["ldap-pass"], "bindDn": ["cn=r"]}}]}"#;
    let values = "ldap:\n  bindCredential: values-pass\nextraEnv:\n- name: ADMIN_PASSWORD\n  value: env-pass\n";
    let text = format!(
        "kind: HelmChart\nspec:\n  valuesContent: {}\n---\nkind: ConfigMap\ndata:\n  realm.json: {}\n",
        serde_json::to_string(values).unwrap(),
        serde_json::to_string(realm).unwrap()
    );
    let (t, c) = redact_file("m.yaml", &text);
    for gone in ["ldap-pass", "values-pass", "env-pass"] {
        assert!(!t.contains(gone), "{gone} in\n{t}");
    }
    assert!(t.contains("cn=r") && t.contains("ADMIN_PASSWORD"), "{t}");
    assert_eq!((c[RULE_CREDENTIAL], c[RULE_ENV]), (2, 1), "{c:?}");
}

#[test]
fn a_json_secret_cut_off_at_the_size_limit_loses_its_data_by_the_text_rules() {
    let text = r#"{"kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "Y3V0LW9uZQ==", "b": "Y3V0LXR3"#;
    let (t, c) = redact_file("s.json", text);
    assert!(!t.contains("Y3V0"), "{t}");
    assert!(t.contains(r#""name": "s""#), "{t}");
    assert_eq!(c[RULE_SECRET_DATA], 2, "{c:?}");
}

#[test]
fn join_tokens_connection_strings_and_pgp_keys_go_in_any_text() {
    let text = "K10abcdef0123456789::server:join-secret-1\n\
                host=db user=app password=pg-pass-1 sslmode=require\n\
                Server=db;User Id=sa;Password=ado-pass-1;\n\
                -----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGPgp-secret\n-----END PGP PRIVATE KEY BLOCK-----\n\
                SMTP_PASS=smtp-pass-1 PWD_HASH=x1y2z3 KEYCLOAK_ADMIN_PASSWORD=kc-pass-1\n";
    let (t, c) = redact_file("x.log", text);
    for gone in ["join-secret-1", "pg-pass-1", "ado-pass-1", "GPgp-secret", "smtp-pass-1", "x1y2z3", "kc-pass-1"] {
        assert!(!t.contains(gone), "{gone} in\n{t}");
    }
    assert!(t.contains("sslmode=require") && t.contains("user=app"), "{t}");
    assert_eq!(c[RULE_JOIN_TOKEN], 1, "{c:?}");
    assert_eq!(c[RULE_CONNECTION], 2, "{c:?}");
    assert_eq!(c[RULE_PRIVATE_KEY], 1, "{c:?}");
    assert_eq!(c[RULE_ENV], 3, "{c:?}");
}

#[test]
fn env_pairs_in_kubectl_output_cut_at_the_size_limit_go_by_the_text_rules() {
    let yaml = "items:\n- kind: Pod\n  spec:\n    containers:\n    - env:\n      - name: DB_PASSWORD\n        \
                value: cut-pass-1\n      - name: MODE\n        value: fast\n  status: {phase: Runn";
    let json = "{\n  \"env\": [\n    {\n      \"name\": \"API_TOKEN\",\n      \"value\": \"cut-pass-2\",\n    \
                  \"x\": 1\n    },\n    {\n      \"name\": \"MODE\",\n      \"value\": \"fast\"";
    for (name, text, gone) in [("cluster/pods.yaml", yaml, "cut-pass-1"), ("cluster/pods.json", json, "cut-pass-2")] {
        let (t, c) = redact_file(name, text);
        assert!(!t.contains(gone) && t.contains("fast"), "{t}");
        assert_eq!(c[RULE_ENV], 1, "{c:?}");
    }
}

/// Found by the `redact` fuzz target: serde_yaml parses a tagged mapping under a key
/// (`!t k: v`) that its emitter then refuses, and writing the redacted tree back
/// panicked, taking the whole support bundle down. A tree that cannot be written back
/// goes through the text rules instead, and its secrets still go.
#[test]
fn a_document_the_yaml_emitter_cannot_write_back_falls_back_to_the_text_rules() {
    let secret = "GENERATEDVALUE42";
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    for text in [
        format!("ap:\n !ne m: s\ndata:\n  password: \"{b64}\"\nenabled: \"true\"\n"),
        format!("kind: Secret\nx:\n  !tag a: b\nstringData:\n  token: {secret}\n"),
    ] {
        assert!(tree::Tree::parse(&text, Format::Sniff).is_some(), "parses: {text}");
        let (out, counts) = Redactor::new(&[secret.to_string()]).redact_file("m.yaml", &text);
        assert!(!out.contains(secret) && !out.contains(&b64), "leaked:\n{out}");
        assert!(counts.values().sum::<usize>() >= 1, "{counts:?}");
    }
}

/// Found by the `redact` fuzz target ("output parses if input did"): the credential
/// field rule wrote `secret:server:X` (one plain YAML scalar) back as
/// `secret: <redacted>`, a mapping entry, so a YAML file that parsed no longer did.
/// The separator keeps its own spacing; `key: value` still gets its space.
#[test]
fn a_key_colon_value_without_space_stays_a_scalar_when_redacted() {
    let secret = "1I7C5AZ6JG";
    let text = format!("rizagl= ur\"https:{secret}\nsecret:server:{secret}\n\n");
    assert!(serde_yaml::from_str::<serde_yaml::Value>(&text).is_ok());
    let (out, _) = Redactor::new(&[secret.to_string()]).redact_file("m.yaml", &text);
    assert!(!out.contains(secret), "{out}");
    serde_yaml::from_str::<serde_yaml::Value>(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    let (out, _) = redact("password: hunter2hunter2\n");
    assert_eq!(out, "password: <redacted>\n");
}

#[test]
fn a_secret_inside_a_yaml_tag_anchor_or_alias_goes_and_the_document_still_parses() {
    const S: &str = "0123456789abcdef0123456789abcdef";
    for text in [
        format!("value: !tag:{S} plain\n"),
        format!("base: &{S}\n  a: 1\nother: *{S}\n"),
        format!("!x{S}"),
        format!("- !!str {S}\n- &a{S} b\n"),
    ] {
        assert!(parses(&text, Format::Sniff), "the test input parses: {text}");
        let (out, counts) = redact_file("m.yaml", &text);
        assert!(!out.contains(S), "the secret survived: {out}");
        assert!(parses(&out, Format::Sniff), "no longer YAML after redaction:\n{text}\n---\n{out}");
        assert!(counts.values().sum::<usize>() >= 1, "{counts:?}");
    }
    // Where the marker breaks nothing it stays the one the docs name.
    let (out, _) = redact_file("m.yaml", &format!("value: {S}\nother: x\n"));
    assert!(out.contains(REDACTED), "{out}");
}
