//! Walking a target directory through the [`Host`]: every regular file below it, each
//! symlink on the way skipped with a note and never followed, so what a reader takes
//! from under the root (the support bundle, `airlock status`'s certificates) is what is
//! there, not what a link points at.

use std::path::{Component, Path, PathBuf};

use airlock_format::error::{Error, Result};

use super::{FileKind, Host};

/// An entry [`list_files`] left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The files below a target directory (recursively, not following symlinks) and the
/// entries skipped on the way with why.
pub struct Listing {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<Skipped>,
}

/// Lists the regular files below `dir` (a target path) through the host. Nothing when
/// it does not exist; an error when it is not a plain absolute path. A symlink — a
/// component of `dir` or anything below it — is skipped with a note, never followed:
/// what a support bundle takes is what is there, not what a link points at.
pub fn list_files(host: &dyn Host, dir: &Path) -> Result<Listing> {
    let mut listing = Listing { files: Vec::new(), skipped: Vec::new() };
    let mut here = PathBuf::from("/");
    let mut kind = FileKind::Dir;
    for c in dir.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => {
                here.push(s);
                // Each prefix is looked at before anything below it is resolved, so
                // the first link on the way is found here rather than followed.
                match host.metadata(&here) {
                    Err(_) | Ok(None) => return Ok(listing),
                    Ok(Some(m)) if m.kind == FileKind::Symlink => {
                        listing.skipped.push(Skipped {
                            path: dir.to_path_buf(),
                            reason: "a component of the path is a symbolic link (not followed)".into(),
                        });
                        return Ok(listing);
                    }
                    Ok(Some(m)) => kind = m.kind,
                }
            }
            _ => {
                return Err(Error::unsafe_entry(dir.display().to_string(), "not an absolute, plain target path")
                    .with_hint("pass target paths like /etc/rancher"))
            }
        }
    }
    if kind == FileKind::Dir {
        walk(host, &here, &mut listing);
    }
    listing.files.sort();
    Ok(listing)
}

fn walk(host: &dyn Host, dir: &Path, listing: &mut Listing) {
    let entries = match host.list_dir(dir) {
        Ok(Some(e)) => e,
        Ok(None) => return,
        Err(e) => {
            listing.skipped.push(Skipped { path: dir.to_path_buf(), reason: e.cause });
            return;
        }
    };
    for entry in entries {
        let path = dir.join(&entry.name);
        match entry.kind {
            FileKind::Symlink => {
                listing.skipped.push(Skipped { path: path.clone(), reason: "symbolic link (not followed)".into() })
            }
            FileKind::Dir => walk(host, &path, listing),
            FileKind::File => listing.files.push(path),
            FileKind::Other => {}
        }
    }
}

/// Removes the temporary files a killed run of ours left in `dir` (names
/// [`super::is_temp_name`] accepts; one may hold a secret being written). Only a run
/// holding the site lock may call this: no other run can be writing them. Returns how
/// many went; a directory that cannot be listed is left for the caller's own steps.
pub fn remove_temp_files(host: &dyn Host, dir: &Path) -> usize {
    let mut removed = 0;
    for e in host.list_dir(dir).ok().flatten().unwrap_or_default() {
        if e.kind == FileKind::File && super::is_temp_name(&e.name) && host.remove(&dir.join(&e.name)).is_ok() {
            removed += 1;
        }
    }
    removed
}
