//! The installed tree of a target root, as the golden files and the upgrade tests
//! compare it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every path under the root except the installer's own run state (staging, journal,
/// lock, backups, the release store), with its type, mode and a short content digest.
/// Secrets and freshly issued certificates are masked: they differ between any two
/// installs of the same bundle; so are their digests in the inventory.
pub fn installed_tree(root: &Path) -> BTreeMap<String, String> {
    // Files that embed a generated credential (the platform's Secrets, MinIO's values
    // with the app's access key) differ on every install, like the token's.
    let mut generated: Vec<String> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(root.join("var/lib/airlock/secrets")) {
        for e in dir {
            let v = std::fs::read_to_string(e.unwrap().path()).unwrap().trim().to_string();
            if !v.is_empty() {
                generated.push(v);
            }
        }
    }
    let keep = |rel: &str| {
        !rel.starts_with("/var/lib/airlock/")
            || rel.starts_with("/var/lib/airlock/secrets")
            || rel == "/var/lib/airlock/release.json"
            || rel == "/var/lib/airlock/installed.json"
            || rel == "/var/lib/airlock/uninstall.list"
    };
    let mut out = walk(root, keep, |rel, path, mode| {
        if rel.contains("/secrets/")
            || rel.ends_with("config.yaml")
            || rel.ends_with(".env")
            || (rel.starts_with("/etc/airlock/pki/") && rel.ends_with(".key"))
        {
            format!("file {mode:04o} <secret>")
        } else if rel.starts_with("/etc/airlock/pki/") && rel.ends_with(".crt") {
            // Issued with fresh keys and serials on every install.
            format!("file {mode:04o} <certificate>")
        } else {
            let bytes = std::fs::read(path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            if generated.iter().any(|g| text.contains(g.as_str())) || text.contains("PRIVATE KEY-----") {
                format!("file {mode:04o} <secret>")
            } else if text.contains("-----BEGIN CERTIFICATE-----") {
                // The site CA in a ConfigMap: issued afresh on every install.
                format!("file {mode:04o} <certificate>")
            } else {
                format!("file {mode:04o} {}", &hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))[..16])
            }
        }
    });
    // The inventory records a digest of every file: those of the masked files (and all
    // keyed ones, whose key is the site's own) are masked in it too, the others compared.
    let inventory = "/var/lib/airlock/installed.json";
    if let Ok(bytes) = std::fs::read(root.join(&inventory[1..])) {
        let mut inv: serde_json::Value = serde_json::from_slice(&bytes).expect("installed.json is JSON");
        for f in inv["files"].as_array_mut().into_iter().flatten() {
            let masked = out.get(f["path"].as_str().unwrap_or_default()).is_none_or(|d| d.contains('<'));
            if f.get("hmac_sha256").is_some() {
                f["hmac_sha256"] = "<keyed>".into();
            }
            if masked && !f["sha256"].is_null() {
                f["sha256"] = "<masked>".into();
            }
        }
        let mode = out.get(inventory).and_then(|d| d.split(' ').nth(1)).unwrap_or("?").to_string();
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, inv.to_string().as_bytes()));
        out.insert(inventory.to_string(), format!("file {mode} {}", &digest[..16]));
    }
    // The uninstall script's copy of the inventory: masked the same way.
    let list = "/var/lib/airlock/uninstall.list";
    if let Ok(text) = std::fs::read_to_string(root.join(&list[1..])) {
        let masked: String = text
            .lines()
            .map(|l| match l.splitn(3, ' ').collect::<Vec<_>>().as_slice() {
                ["hmac-sha256", _, path] => format!("hmac-sha256 <keyed> {path}\n"),
                ["sha256", _, path] if out.get(*path).is_none_or(|d| d.contains('<')) => {
                    format!("sha256 <masked> {path}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let mode = out.get(list).and_then(|d| d.split(' ').nth(1)).unwrap_or("?").to_string();
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, masked.as_bytes()));
        out.insert(list.to_string(), format!("file {mode} {}", &digest[..16]));
    }
    out
}

/// Every path under `root` that `keep` accepts (given as `/relative/path`), described
/// as `link -> TARGET`, `dir MODE`, or for a regular file what `file` makes of its
/// relative path, real path and mode: the one walk the tree comparisons share.
pub fn walk(
    root: &Path,
    keep: impl Fn(&str) -> bool,
    mut file: impl FnMut(&str, &Path, u32) -> String,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = format!("/{}", e.path().strip_prefix(root).unwrap().display());
        if !keep(&rel) {
            continue;
        }
        let md = e.path().symlink_metadata().unwrap();
        let mode = md.permissions().mode() & 0o7777;
        let what = if md.file_type().is_symlink() {
            format!("link -> {}", std::fs::read_link(e.path()).unwrap().display())
        } else if md.is_dir() {
            format!("dir {mode:04o}")
        } else {
            file(&rel, e.path(), mode)
        };
        out.insert(rel, what);
    }
    out
}
