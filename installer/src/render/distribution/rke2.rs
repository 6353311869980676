//! RKE2: the release tarball unpacked under `/usr/local` as its `install.sh` does
//! (`tar xzf rke2.linux-<arch>.tar.gz -C /usr/local`), with RKE2's own units and
//! teardown scripts, plus the config, the CIS profile's user and sysctls, the images,
//! the manifests and a storage provisioner.
//!
//! The tarball is unpacked into staging first ([`unpack_rke2_tarball`]), never
//! straight onto the host: only regular files, directories and symlinks that stay
//! inside are accepted, so the layout that copies them out is plain data like every
//! other.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::check_entry_path;

use super::{charts, config_files, data_dirs, images, invalid, DistributionInput, TarballEntry, TarballEntryKind};
use crate::engine::layout::{Layout, PlannedUser, StepGroup};

/// Where [`unpack_rke2_tarball`] unpacks, relative to the staging directory; a file of
/// the tarball is the staged entry `unpacked/rke2/<path>`.
pub const RKE2_UNPACK_DIR: &str = "unpacked/rke2";

/// Where the tarball goes on the node (contracts).
const PREFIX: &str = "/usr/local";
/// Where RKE2's `install.sh` unpacks it instead when `/usr/local` is read-only or a
/// mount point; the units then go to `/etc/systemd/system`, where systemd finds them.
pub const OPT_PREFIX: &str = "/opt/rke2";

/// The tarball files `install.sh` rewrites for [`OPT_PREFIX`] (`sed s|/usr/local|/opt/rke2|`,
/// the first occurrence on each line): the units and the uninstall script.
pub fn rewritten_for_opt_prefix(path: &str) -> bool {
    path == "bin/rke2-uninstall.sh" || (path.starts_with("lib/systemd/system/rke2-") && path.ends_with(".service"))
}

/// `text` as `install.sh`'s `sed "s|/usr/local|/opt/rke2|"` leaves it.
fn to_opt_prefix(text: &str) -> String {
    text.split_inclusive('\n').map(|line| line.replacen(PREFIX, OPT_PREFIX, 1)).collect()
}

/// The CIS sysctl file as RKE2's documentation installs it.
pub const CIS_SYSCTL: &str = "/etc/sysctl.d/60-rke2-cis.conf";

/// The kernel settings `profile: cis` checks at start (protect-kernel-defaults): RKE2
/// exits unless each `/proc/sys` value is exactly this. The tarball's
/// `rke2-cis-sysctl.conf` sets them; preflight and live mode check them.
pub const CIS_SYSCTLS: &[(&str, &str)] =
    &[("vm.overcommit_memory", "1"), ("vm.panic_on_oom", "0"), ("kernel.panic", "10"), ("kernel.panic_on_oops", "1")];

/// `vm.overcommit_memory` → `/proc/sys/vm/overcommit_memory`.
pub fn proc_sys_path(key: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/sys/{}", key.replace('.', "/")))
}
const CIS_SYSCTL_SOURCE: &str = "share/rke2/rke2-cis-sysctl.conf";

pub(super) fn render(input: &DistributionInput, tarball: &[TarballEntry], shipped_images: &[String]) -> Result<Layout> {
    check_tarball(input, tarball)?;
    let mut layout = Layout::default();
    let server = input.role.is_server();

    if input.cis {
        // `profile: cis` refuses to start without an `etcd` user and group (contracts),
        // created as RKE2's documentation does: a system account without a home
        // (`/nonexistent`) or a login; on every node, so any node can become a server.
        layout.users.push(PlannedUser {
            name: "etcd".into(),
            home: "/nonexistent".into(),
            shell: "/sbin/nologin".into(),
        });
    }

    // The tarball exactly as shipped, under /usr/local; or as install.sh lays it out
    // under /opt/rke2: the units and the uninstall script rewritten to the prefix, the
    // units moved to /etc/systemd/system.
    let prefix = if input.rke2_opt_prefix.is_some() { OPT_PREFIX } else { PREFIX };
    if prefix == OPT_PREFIX {
        // install.sh's `mkdir -p`: the prefix itself is the install's (and goes with it).
        layout.dir(OPT_PREFIX, 0o755);
    }
    for e in tarball {
        let target = format!("{prefix}/{}", e.path);
        let mode = |executable: bool| if executable { 0o755 } else { 0o644 };
        match (&e.kind, &input.rke2_opt_prefix) {
            (TarballEntryKind::File { executable }, Some(texts)) if rewritten_for_opt_prefix(&e.path) => {
                let original = texts.get(&e.path).ok_or_else(|| {
                    invalid(format!("RKE2 tarball: {}", e.path), "its text is needed to install under /opt/rke2")
                })?;
                let target = match e.path.strip_prefix("lib/systemd/system/") {
                    Some(unit) => format!("/etc/systemd/system/{unit}"),
                    None => target,
                };
                layout.file(target, mode(*executable), to_opt_prefix(original));
            }
            (TarballEntryKind::Dir, _) => layout.dir(target, 0o755),
            (TarballEntryKind::File { executable }, _) => {
                layout.staged(target, mode(*executable), format!("{RKE2_UNPACK_DIR}/{}", e.path))
            }
            (TarballEntryKind::Symlink { target: to }, _) => layout.link(target, to.as_str()),
        }
    }

    config_files(&mut layout, input)?;
    if input.cis {
        // The kernel settings the CIS profile checks at start (protect-kernel-defaults);
        // copied from the tarball's own file, as RKE2's documentation does.
        layout.staged(CIS_SYSCTL, 0o644, format!("{RKE2_UNPACK_DIR}/{CIS_SYSCTL_SOURCE}"));
    }
    data_dirs(&mut layout, input, server && charts::any_static(&input.charts));
    layout.in_group(StepGroup::Images, |l| images(l, input, shipped_images));
    if server {
        layout.in_group(StepGroup::Charts, |l| charts::helm_charts(l, input));
    }
    // RKE2's unit reads /etc/default/%N (and /etc/sysconfig/%N): the proxy variables,
    // where RKE2's documentation puts them.
    if !input.proxy_env.is_empty() {
        let stem = input.unit().trim_end_matches(".service");
        super::env_file(&mut layout, &format!("/etc/default/{stem}"), input);
    }
    // The unit ships in the tarball (lib/systemd/system, found by systemd under
    // /usr/local); RKE2 does not start it itself: airlock enables it, and in live mode
    // runs `systemctl enable --now` (contracts).
    layout.units.push(input.unit().to_string());
    Ok(layout)
}

/// The tarball has what this node needs, and nothing that could escape `/usr/local`.
fn check_tarball(input: &DistributionInput, tarball: &[TarballEntry]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for e in tarball {
        if let Err(why) = check_entry_path(&e.path) {
            return Err(Error::unsafe_entry(format!("RKE2 tarball: {}", e.path), why));
        }
        if !seen.insert(e.path.as_str()) {
            return Err(Error::corrupt(format!("RKE2 tarball: {}", e.path), "listed twice"));
        }
        if let TarballEntryKind::Symlink { target } = &e.kind {
            check_link_target(&e.path, target)
                .map_err(|why| Error::unsafe_entry(format!("RKE2 tarball: {}", e.path), why))?;
        }
    }
    let file = |path: &str| tarball.iter().find(|e| e.path == path).map(|e| &e.kind);
    let mut need = vec![
        ("bin/rke2".to_string(), true),
        ("bin/rke2-killall.sh".to_string(), true),
        ("bin/rke2-uninstall.sh".to_string(), true),
        (format!("lib/systemd/system/{}", input.unit()), false),
    ];
    if input.cis {
        need.push((CIS_SYSCTL_SOURCE.to_string(), false));
    }
    for (path, exec) in need {
        match file(&path) {
            Some(TarballEntryKind::File { executable }) if *executable || !exec => {}
            Some(TarballEntryKind::File { .. }) => {
                return Err(invalid(format!("RKE2 tarball: {path}"), "is not executable"));
            }
            _ => {
                return Err(invalid(format!("RKE2 tarball: {path}"), "missing (or not a regular file)")
                    .with_hint("the distribution artifact must be RKE2's own rke2.linux-<arch>.tar.gz"));
            }
        }
    }
    Ok(())
}

/// A symlink target is relative and, resolved from the link's directory, stays inside
/// the tarball root.
pub(super) fn check_link_target(link: &str, target: &str) -> std::result::Result<(), String> {
    if target.is_empty() || target.starts_with('/') {
        return Err(format!(
            "symlink to `{}`: only relative links inside the tarball are allowed",
            target.escape_debug()
        ));
    }
    let mut depth: Vec<&str> = link.split('/').collect();
    depth.pop();
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return Err(format!("symlink to `{}` points outside the tarball", target.escape_debug()));
                }
            }
            c => depth.push(c),
        }
    }
    if depth.is_empty() {
        return Err(format!("symlink to `{}` points at the tarball root", target.escape_debug()));
    }
    Ok(())
}

/// Unpacks RKE2's `rke2.linux-<arch>.tar.gz` into `<staging_dir>/unpacked/rke2/` and
/// returns the staged paths (`unpacked/rke2/bin/rke2`, ...) of its files and links,
/// sorted.
///
/// Path-safe: only regular files, directories and symlinks; no absolute paths, no
/// `..`, nothing written through a symlink of the archive (every file is created
/// `O_CREAT|O_EXCL|O_NOFOLLOW`), links only to targets inside; no setuid/setgid bits
/// on files (modes become 0755 or 0644). Anything else is an [`ErrorKind::Unsafe`] error and
/// leaves nothing behind. Unpacks into `rke2.partial` and renames at the end, replacing
/// an earlier unpack.
///
/// The gzip layer is decoded in process (flate2): no command runs outside the host
/// seam, and a damaged gzip stream is a `Corrupt` error like any other.
///
/// [`ErrorKind::Unsafe`]: airlock_format::error::ErrorKind::Unsafe
// Unpacks into staging (see the module docs), never at a target path.
#[allow(clippy::disallowed_methods)]
pub fn unpack_rke2_tarball(tarball: &Path, staging_dir: &Path) -> Result<Vec<String>> {
    let dest = staging_dir.join(RKE2_UNPACK_DIR);
    let partial = staging_dir.join(format!("{RKE2_UNPACK_DIR}.partial"));
    if fs::symlink_metadata(&partial).is_ok() {
        fs::remove_dir_all(&partial).at(&partial)?;
    }
    fs::DirBuilder::new().recursive(true).mode(0o755).create(&partial).at(&partial)?;
    let file = fs::File::open(tarball).at(tarball)?;
    let gz = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, file));
    let result = unpack_into(tarball, gz, &partial).and_then(|files| {
        if fs::symlink_metadata(&dest).is_ok() {
            fs::remove_dir_all(&dest).at(&dest)?;
        }
        fs::rename(&partial, &dest).at(&dest)?;
        Ok(files)
    });
    match result {
        Ok(files) => Ok(files.into_iter().map(|p| format!("{RKE2_UNPACK_DIR}/{p}")).collect()),
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

// Unpacks into staging (see the module docs), never at a target path.
#[allow(clippy::disallowed_methods)]
fn unpack_into(tarball: &Path, reader: impl Read, root: &Path) -> Result<Vec<String>> {
    let subject = |p: &str| format!("{}: {p}", tarball.display());
    let mut archive = tar::Archive::new(reader);
    let mut seen = BTreeSet::new();
    let mut links = BTreeSet::new();
    let mut files = Vec::new();
    for entry in archive.entries().at(tarball)? {
        let mut entry =
            entry.map_err(|e| Error::corrupt(tarball.display().to_string(), format!("bad tar data: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let name = std::str::from_utf8(&raw)
            .map_err(|_| Error::unsafe_entry(subject(&String::from_utf8_lossy(&raw)), "path is not UTF-8"))?;
        let path = name.strip_prefix("./").unwrap_or(name).trim_end_matches('/');
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue; // archive-wide metadata (`git archive` writes one); nothing to unpack
        }
        if path.is_empty() || path == "." {
            if kind.is_dir() {
                continue; // the archive's root, i.e. /usr/local itself
            }
            return Err(Error::unsafe_entry(subject(name), "an entry without a name"));
        }
        check_entry_path(path).map_err(|why| Error::unsafe_entry(subject(name), format!("unsafe path: {why}")))?;
        if let Some(link) = ancestors(path).find(|a| links.contains(*a)) {
            return Err(Error::unsafe_entry(subject(path), format!("would be written through the symlink `{link}`")));
        }
        if !seen.insert(path.to_string()) {
            return Err(Error::unsafe_entry(subject(path), "appears twice in the archive"));
        }
        let mode = entry.header().mode().map_err(|e| Error::corrupt(subject(path), format!("bad mode: {e}")))?;
        // Directories become 0755 whatever they say; a file with special bits is refused.
        if mode & 0o7000 != 0 && !kind.is_dir() {
            return Err(Error::unsafe_entry(subject(path), format!("mode {mode:o} has setuid, setgid or sticky bits")));
        }
        let dest = root.join(path);
        if let Some(parent) = dest.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).at(parent)?;
        }
        match kind {
            tar::EntryType::Directory => match fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(Error::unsafe_entry(subject(path), "a directory over an earlier file")),
                Err(_) => fs::DirBuilder::new().mode(0o755).create(&dest).at(&dest)?,
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let executable = mode & 0o111 != 0;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&dest)
                    .at(&dest)?;
                io::copy(&mut entry, &mut f)
                    .map_err(|e| Error::corrupt(subject(path), format!("could not unpack: {e}")))?;
                f.sync_all().at(&dest)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 }))
                    .at(&dest)?;
                files.push(path.to_string());
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .ok_or_else(|| Error::unsafe_entry(subject(path), "a symlink without a target"))?;
                check_link_target(path, &target).map_err(|why| Error::unsafe_entry(subject(path), why))?;
                std::os::unix::fs::symlink(&target, &dest).at(&dest)?;
                links.insert(path.to_string());
                files.push(path.to_string());
            }
            other => {
                return Err(Error::unsafe_entry(
                    subject(path),
                    format!("a {other:?} entry; only files, directories and symlinks are unpacked"),
                ));
            }
        }
    }
    // Read to the end, so damage after the end-of-archive marker (a bad gzip trailer
    // or CRC) is still reported.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|e| Error::corrupt(tarball.display().to_string(), format!("could not read to the end: {e}")))?;
    files.sort();
    Ok(files)
}

/// `a/b/c` → `a/b`, `a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Describes what [`unpack_rke2_tarball`] left in `<staging_dir>/unpacked/rke2/`: the
/// input [`render`](super::render) lays out under `/usr/local`. Sorted by path, so
/// parents come before their children.
// Reads the unpacked tree in staging.
#[allow(clippy::disallowed_types)]
pub fn read_unpacked_rke2(staging_dir: &Path) -> Result<Vec<TarballEntry>> {
    let root = staging_dir.join(RKE2_UNPACK_DIR);
    let mut out = Vec::new();
    for item in walkdir::WalkDir::new(&root).min_depth(1).follow_links(false).sort_by_file_name() {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(&root).to_path_buf();
            match e.into_io_error() {
                Some(io) => Error::io(&path, io),
                None => Error::corrupt(path.display().to_string(), "a filesystem loop"),
            }
        })?;
        let rel = item.path().strip_prefix(&root).expect("below root").to_string_lossy().into_owned();
        let ft = item.file_type();
        let kind = if ft.is_dir() {
            TarballEntryKind::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(item.path()).at(item.path())?;
            TarballEntryKind::Symlink { target: target.to_string_lossy().into_owned() }
        } else if ft.is_file() {
            let meta = item.metadata().map_err(|e| Error::corrupt(rel.clone(), e.to_string()))?;
            TarballEntryKind::File { executable: meta.permissions().mode() & 0o111 != 0 }
        } else {
            return Err(Error::unsafe_entry(item.path().display().to_string(), "not a file, directory or symlink"));
        };
        out.push(TarballEntry { path: rel, kind });
    }
    out.sort();
    Ok(out)
}
