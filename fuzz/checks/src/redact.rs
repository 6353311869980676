//! The support bundle redactor: a planted secret never survives, and a document that
//! parsed before redaction still parses after it, with as many documents.

use airlock_installer::ops::support::redact::Redactor;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::bytes::Input;

/// Where the secret goes in the text: `@@` is the secret, `@B` its base64.
pub const PLANT: &str = "@@";
pub const PLANT_B64: &str = "@B";

const FILES: [&str; 5] = ["m.yaml", "m.json", "x.env", "x.log", "kubeconfig"];

/// How many documents `text` holds when it parses as the file's format says.
fn documents(file: &str, text: &str) -> Option<usize> {
    if file.ends_with(".json") {
        serde_json::from_str::<serde_json::Value>(text).ok().map(|_| 1)
    } else if file.ends_with(".yaml") {
        let mut n = 0;
        for d in serde_yaml::Deserializer::from_str(text) {
            <serde_yaml::Value as serde::Deserialize>::deserialize(d).ok()?;
            n += 1;
        }
        Some(n)
    } else {
        None
    }
}

/// Input: a file selector, the secret's length (8 to 40) and bytes (mapped to upper
/// case letters and digits, which nothing the redactor writes contains), then the text.
/// The secret is a generated value the redactor is told about; the text holds it
/// wherever it says `@@` (and its base64 where it says `@B`).
pub fn redact(data: &[u8]) {
    let mut input = Input::new(data);
    let file = FILES[input.byte() as usize % FILES.len()];
    let len = 8 + input.byte() as usize % 33;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let secret: String =
        input.array::<40>()[..len].iter().map(|b| alphabet[*b as usize % alphabet.len()] as char).collect();
    let Ok(text) = std::str::from_utf8(input.rest()) else { return };
    let text = text.replace(PLANT, &secret).replace(PLANT_B64, &B64.encode(&secret));
    let (out, _counts) = Redactor::new(std::slice::from_ref(&secret)).redact_file(file, &text);
    assert!(!out.contains(&secret), "the planted secret survived in {file}:\n--- in\n{text}\n--- out\n{out}");
    assert!(!out.contains(&B64.encode(&secret)), "the planted secret's base64 survived in {file}:\n{out}");
    if let Some(n) = documents(file, &text) {
        assert_eq!(
            documents(file, &out),
            Some(n),
            "{file} parsed before redaction, not after:\n--- in\n{text}\n--- out\n{out}"
        );
    }
}
