//! The properties Airlock's fuzz targets check, one function per target.
//!
//! Each function takes the fuzzer's bytes, drives one reader (or the redactor, or the
//! rooted host) with them, and panics when a property fails: a panic inside the code
//! under test, an accepted forgery, a leaked secret, a path outside the root, a
//! verdict that differs from the `minisign` crate's. The same functions run in two
//! harnesses:
//!
//! - `fuzz/fuzz_targets/*.rs` (cargo-fuzz, libFuzzer, coverage-guided): one line each;
//!   run with `tests/fuzz.sh`.
//! - `fuzz/checks/tests/smoke.rs` (a plain `cargo test`): replays the seed corpus in
//!   `fuzz/corpus/<target>/` and a bounded number of random mutations of it, so CI
//!   checks every property on every run without building with sanitizers.
//!
//! The functions never touch anything outside a fresh temporary directory.

pub mod bytes;
pub mod formats;
pub mod host;
pub mod redact;
pub mod signatures;
pub mod sources;

/// A check: panics when a property fails on these fuzzer bytes.
pub type Check = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("manifest", formats::manifest),
    ("minisign_parse", signatures::parse),
    ("minisign_diff", signatures::differential),
    ("bundle", formats::bundle),
    ("answers", formats::answers),
    ("oci", sources::oci),
    ("helm_index", sources::helm_index),
    ("chart", sources::chart),
    ("redact", redact::redact),
    ("rooted", host::rooted),
];
