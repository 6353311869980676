//! The JSON Schemas of the files Airlock reads (`docs/schemas/`): published as the
//! binaries print them, accepted by every example, complete against the docs' key
//! tables, and named by the examples so an editor finds them.

use std::path::Path;
use std::process::Command;

use airlock_tests::{cargo_bin, workspace_root};
use serde_json::Value;

/// What `bin schema file` prints.
fn printed(bin: &str, file: &str) -> Value {
    let o = Command::new(cargo_bin(bin)).args(["schema", file]).output().unwrap();
    assert!(o.status.success(), "{bin} schema {file}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn published(name: &str) -> Value {
    let path = workspace_root().join("docs/schemas").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SCHEMAS: [(&str, &str, &str, &str); 2] = [
    ("airlock", "answers", "answers.schema.json", "docs/answers.md"),
    ("airlock-bundler", "bundle-spec", "bundle-spec.schema.json", "docs/bundle-spec.md"),
];

#[test]
fn published_schemas_are_exactly_what_the_binaries_print() {
    for (bin, file, name, _) in SCHEMAS {
        assert_eq!(
            published(name),
            printed(bin, file),
            "docs/schemas/{name} is stale: regenerate it with `{bin} schema {file} > docs/schemas/{name}`"
        );
    }
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).expect("the schema compiles")
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path)).collect()
}

fn yaml_as_json(text: &str, what: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"))
}

#[test]
fn the_examples_pass_their_schema_and_name_it_for_editors() {
    let root = workspace_root();
    for (example, name) in [
        ("examples/demo/answers.yaml", "answers.schema.json"),
        ("examples/demo/bundle.yaml", "bundle-spec.schema.json"),
    ] {
        let text = std::fs::read_to_string(root.join(example)).unwrap();
        let errs = errors(&validator(&published(name)), &yaml_as_json(&text, example));
        assert!(errs.is_empty(), "{example}: {errs:#?}");
        // The line YAML language servers read, with a path that resolves from the file.
        let line = text.lines().find(|l| l.starts_with("# yaml-language-server: $schema="));
        let line = line.unwrap_or_else(|| panic!("{example} does not name its schema"));
        let target = Path::new(example).parent().unwrap().join(line.split_once('=').unwrap().1.trim());
        assert!(root.join(&target).is_file(), "{example}: {} does not exist", target.display());
        assert!(target.ends_with(name), "{example} names {}", target.display());
    }
}

/// The ```yaml blocks of a doc, split where a comment line at the left margin starts a
/// new example (a block may show two files).
fn yaml_examples(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_start().starts_with("```")) {
            (None, true) if line.trim() == "```yaml" => current = Some(String::new()),
            (Some(block), true) => {
                out.push(std::mem::take(block));
                current = None;
            }
            (Some(block), false) => {
                if line.starts_with("# ") && !block.trim().is_empty() {
                    out.push(std::mem::take(block));
                }
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    out.into_iter().filter(|b| !b.trim().is_empty()).collect()
}

/// The schema with nothing required at the top: the docs show parts of a file.
fn for_fragments(mut schema: Value) -> Value {
    schema.as_object_mut().unwrap().remove("required");
    schema
}

#[test]
fn every_yaml_example_in_the_docs_passes_its_schema() {
    for (_, _, name, doc) in SCHEMAS {
        let text = std::fs::read_to_string(workspace_root().join(doc)).unwrap();
        let examples = yaml_examples(&text);
        assert!(examples.len() >= 3, "{doc}: only {} examples found", examples.len());
        let v = validator(&for_fragments(published(name)));
        for e in examples {
            let errs = errors(&v, &yaml_as_json(&e, doc));
            assert!(errs.is_empty(), "{doc} example\n{e}\nfails {name}: {errs:#?}");
        }
    }
}

/// Every property name the schema knows, with its path (`ldap.url`, `artifacts[].name`).
fn schema_keys(schema: &Value) -> Vec<String> {
    fn walk(v: &Value, defs: &Value, prefix: &str, out: &mut Vec<String>, depth: usize) {
        if depth > 8 {
            return;
        }
        if let Some(r) = v.get("$ref").and_then(Value::as_str) {
            if let Some(def) = r.strip_prefix("#/$defs/").and_then(|d| defs.get(d)) {
                walk(def, defs, prefix, out, depth + 1);
            }
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            for alt in v.get(key).and_then(Value::as_array).into_iter().flatten() {
                walk(alt, defs, prefix, out, depth + 1);
            }
        }
        if let Some(items) = v.get("items") {
            walk(items, defs, &format!("{prefix}[]"), out, depth + 1);
        }
        for (k, sub) in v.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            out.push(path.clone());
            walk(sub, defs, &path, out, depth + 1);
        }
    }
    let mut out = Vec::new();
    walk(schema, schema.get("$defs").unwrap_or(&Value::Null), "", &mut out, 0);
    out
}

/// The key names in the first column of a doc's tables (`ldap.url`, `images[].ref`).
fn documented_keys(doc: &str) -> Vec<String> {
    let is_key = |t: &str| {
        !t.is_empty()
            && t.split('.').all(|p| {
                let p = p.strip_suffix("[]").unwrap_or(p);
                !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    };
    doc.lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(" |").next())
        .flat_map(|cell| cell.split(", ").map(str::trim).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|t| Some(t.strip_prefix('`')?.strip_suffix('`')?.to_string()))
        .filter(|t| is_key(t))
        .collect()
}

#[test]
fn every_key_the_docs_describe_is_in_the_schema() {
    for (_, _, name, doc) in SCHEMAS {
        let keys = schema_keys(&published(name));
        let documented = documented_keys(&std::fs::read_to_string(workspace_root().join(doc)).unwrap());
        assert!(documented.len() >= 20, "{doc}: only {documented:?}");
        for d in documented {
            // The docs name a key under its section's table (`artifacts[].name` in
            // `distribution`), so a documented path matches the end of a schema path.
            let found = keys.iter().any(|k| k == &d || k.ends_with(&format!(".{d}")));
            assert!(found, "{doc} documents `{d}`, which {name} does not have (keys: {keys:?})");
        }
    }
}
