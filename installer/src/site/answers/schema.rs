//! The answers file's JSON Schema, built from the question list the parser reads a file
//! against ([`questions`]), so an editor checks a site's answers as they are typed with
//! the same keys, shapes and help texts the wizard and the parser use.
//!
//! What a schema can say is a subset of the checks: the keys (unknown ones are errors),
//! each value's shape (text, list, table rows; a `key:` left empty counts as absent),
//! the fixed choices, and which keys every install needs. What depends on other answers
//! or on the bundle (a key required for an HA profile, the bundle's profile names, an IP
//! outside the cluster networks) stays with `airlock`, which names the key and the fix.

use serde_json::{json, Map, Value};

use super::questions::{questions, Facts, Need, Question, Shape};

/// The schema (draft 2020-12) of an answers file.
pub fn json_schema() -> Value {
    let mut top = Map::new();
    let mut required_top: Vec<String> = Vec::new();
    let facts = Facts::default();
    for q in questions() {
        let property = property(q, &facts);
        match q.key.split_once('.') {
            None => {
                top.insert(q.key.to_string(), property);
                if matches!(q.need, Need::Required) {
                    required_top.push(q.key.to_string());
                }
            }
            Some((section, key)) => {
                let s = top.entry(section.to_string()).or_insert_with(|| {
                    json!({
                        "type": ["object", "null"],
                        "additionalProperties": false,
                        "properties": {},
                    })
                });
                s["properties"][key] = property;
                if matches!(q.need, Need::Required) {
                    let list =
                        s.as_object_mut().expect("a section is an object").entry("required").or_insert(json!([]));
                    list.as_array_mut().expect("required is a list").push(key.into());
                    if !required_top.iter().any(|t| t == section) {
                        required_top.push(section.to_string());
                    }
                }
            }
        }
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Airlock answers file (docs/answers.md)",
        "description": "What is particular to a site and a node. Validated in full by `airlock`; this schema checks keys and shapes as you type.",
        "type": "object",
        "additionalProperties": false,
        "required": required_top,
        "properties": top,
    })
}

/// One key's schema: its shape, its help as the description, null for "absent".
fn property(q: &Question, facts: &Facts) -> Value {
    let mut p = match &q.shape {
        Shape::Text(_) if q.key.ends_with(".port") => json!({ "type": ["string", "integer", "null"] }),
        Shape::Text(_) | Shape::Secret(_) => json!({ "type": ["string", "null"] }),
        Shape::Choice { options, .. } => {
            // Choices that come from the bundle (the profile names) are not fixed here.
            let options = options(facts);
            let yes_no = options.iter().any(|o| o == "true") && options.iter().any(|o| o == "false");
            match (options.is_empty(), yes_no) {
                (true, _) => json!({ "type": ["string", "null"] }),
                (false, true) => json!({ "enum": [true, false, "true", "false", null] }),
                (false, false) => {
                    let mut values: Vec<Value> = options.into_iter().map(Value::String).collect();
                    values.push(Value::Null);
                    json!({ "enum": values })
                }
            }
        }
        Shape::List { .. } => json!({ "type": ["array", "null"], "items": { "type": "string" } }),
        Shape::Table { columns, .. } => {
            let cell_type = |c: &super::questions::Column| {
                if c.key.ends_with("port") {
                    json!(["string", "integer"])
                } else {
                    json!("string")
                }
            };
            let cells: Map<String, Value> = columns
                .iter()
                .map(|c| (c.key.to_string(), json!({ "type": cell_type(c), "description": c.help })))
                .collect();
            let names: Vec<&str> = columns.iter().filter(|c| !c.optional).map(|c| c.key).collect();
            json!({
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": names,
                    "properties": cells,
                },
            })
        }
    };
    let mut description = q.help.to_string();
    if matches!(q.shape, Shape::Secret(_)) {
        description.push_str(" (a secret: keep the file 0600)");
    }
    p["description"] = Value::String(description);
    p
}
