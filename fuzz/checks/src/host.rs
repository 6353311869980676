//! `RootedHost` path resolution: nothing it resolves, writes or creates is outside the
//! target root, whatever symlinks the root holds.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use airlock_installer::host::{Host, Perms, RootedHost};

use crate::bytes::Input;

/// Everything below `dir`, links not followed: path → what it is.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else { continue };
            let what = if m.file_type().is_symlink() {
                format!("link {:?}", fs::read_link(&p).ok())
            } else if m.is_dir() {
                todo.push(p.clone());
                "dir".to_string()
            } else {
                format!("file {:?}", fs::read(&p).ok())
            };
            out.insert(p.strip_prefix(dir).expect("below").to_path_buf(), what);
        }
    }
    out
}

/// Where `p` really is: its longest existing ancestor canonicalized (every link in it
/// followed by the kernel), the rest appended.
fn really(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = fs::canonicalize(&cur) {
            let mut c = c;
            for r in rest.iter().rev() {
                c.push(r);
            }
            return c;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// A plain relative path under `root` none of whose existing ancestors is a link (so
/// setting up the tree never writes through one).
fn setup_path(root: &Path, name: &[u8]) -> Option<PathBuf> {
    let s = std::str::from_utf8(name).ok()?;
    let rel = Path::new(s);
    if s.is_empty() || !rel.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return None;
    }
    let mut p = root.to_path_buf();
    for c in rel.components() {
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return None;
        }
        p.push(c);
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).ok()?;
    }
    Some(p)
}

/// Ops, one byte each then pieces: 0 make a directory, 1 make a symlink (its target
/// text may say `$OUT` and `$ROOT` for the absolute paths of a directory outside the
/// root and of the root), 2 make a file (these three directly, below the root), then
/// through `RootedHost`: 3 `real_path`, 4 `write_file`, 5 `create_dir`, 6 `symlink`,
/// 7 `remove_all`. Every path `RootedHost` hands back is under the root once the
/// kernel follows its links, and nothing outside the root changes.
pub fn rooted(data: &[u8]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = fs::canonicalize(tmp.path()).expect("canonical tempdir");
    let root = base.join("root");
    let out = base.join("outside");
    fs::create_dir_all(root.join("etc")).expect("root");
    fs::create_dir_all(out.join("dir")).expect("outside");
    fs::write(out.join("canary"), b"canary").expect("canary");
    fs::write(out.join("dir/canary"), b"canary").expect("canary");
    let before = snapshot(&base.join("outside"));
    let host = RootedHost::new(root.clone(), false).expect("rooted host");
    let subst = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace("$OUT", &out.display().to_string())
            .replace("$ROOT", &root.display().to_string())
    };
    let under = |p: &Path, what: &str, target: &str| {
        let r = really(p);
        assert!(
            r.starts_with(&root),
            "{what} {target:?} resolved to {} (really {}) outside the root",
            p.display(),
            r.display()
        );
    };

    let mut input = Input::new(data);
    let mut ops = 0;
    while !input.is_empty() && ops < 64 {
        ops += 1;
        let op = input.byte() % 8;
        let a = input.piece();
        match op {
            0 => {
                if let Some(p) = setup_path(&root, a) {
                    let _ = fs::create_dir(p);
                }
            }
            1 => {
                let target = subst(input.piece());
                if let Some(p) = setup_path(&root, a) {
                    let _ = std::os::unix::fs::symlink(target, p);
                }
            }
            2 => {
                if let Some(p) = setup_path(&root, a) {
                    let _ = fs::write(p, b"inside");
                }
            }
            _ => {
                let t = subst(a);
                let target = Path::new(&t);
                match op {
                    3 => {
                        if let Ok(p) = host.real_path(target) {
                            under(&p, "real_path", &t);
                        }
                    }
                    4 => {
                        if host.write_file(target, &mut &b"written"[..], Perms { mode: 0o644, secret: false }).is_ok() {
                            let p = host.real_path(target).expect("a path just written resolves");
                            under(&p, "write_file", &t);
                        }
                    }
                    5 => {
                        if let Ok(p) = host.resolve_dir(target, 0o755) {
                            under(&p, "resolve_dir", &t);
                        }
                        let _ = host.create_dir(target, 0o700);
                    }
                    6 => {
                        let link = subst(input.piece());
                        let _ = host.symlink(target, Path::new(&link));
                    }
                    _ => {
                        let _ = host.remove_all(target);
                    }
                }
            }
        }
    }
    assert_eq!(snapshot(&out), before, "something outside the root changed");
    let top: Vec<_> = fs::read_dir(&base).expect("base").flatten().map(|e| e.file_name()).collect();
    assert_eq!(top.len(), 2, "something was made beside the root: {top:?}");
}
