//! The checksum sidecar: `NAME.sha256` in `sha256sum --tag` format, one line per
//! bundle file or part, signed as `NAME.sha256.minisig`.
//!
//! It lets support check a bundle with tools they already trust and without our
//! binary: `minisign -Vm NAME.sha256 -p vendor.pub && sha256sum -c NAME.sha256`.

use std::path::{Path, PathBuf};

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

pub fn sidecar_path(base: &Path) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

pub fn signature_path(base: &Path) -> PathBuf {
    let mut s = sidecar_path(base).into_os_string();
    s.push(".minisig");
    PathBuf::from(s)
}

/// Renders the list; names are file names relative to the bundle's directory, which
/// is where `sha256sum -c` runs.
pub fn render(files: &[(String, Sha256Digest)]) -> String {
    files.iter().map(|(n, d)| format!("SHA256 ({n}) = {}\n", d.hex())).collect()
}

/// Parses a list in `sha256sum --tag` format.
pub fn parse(text: &str, origin: &Path) -> Result<Vec<(String, Sha256Digest)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || Error::corrupt(format!("{}:{}", origin.display(), i + 1), "not a `SHA256 (name) = hex` line");
        let rest = line.strip_prefix("SHA256 (").ok_or_else(bad)?;
        let (name, hex) = rest.rsplit_once(") = ").ok_or_else(bad)?;
        let d = Sha256Digest::from_hex(hex).map_err(|_| bad())?;
        out.push((name.to_string(), d));
    }
    if out.is_empty() {
        return Err(Error::corrupt(origin.display().to_string(), "the checksum list is empty"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_list_round_trips_in_tag_format() {
        let d = Sha256Digest::of(b"x");
        let text = render(&[("b.part001".into(), d)]);
        assert_eq!(text, format!("SHA256 (b.part001) = {}\n", d.hex()));
        assert_eq!(parse(&text, Path::new("b.sha256")).unwrap(), vec![("b.part001".to_string(), d)]);
        assert!(parse("SHA256 (x) = zz\n", Path::new("b.sha256")).is_err());
    }
}
