//! System users and systemd units, on a live host and under a target root.
//!
//! Live, the distribution's own tools do the work (`getent`, `useradd`, `systemctl`),
//! so NSS, login.defs and presets are honoured. Under a root nothing may run, so we
//! leave the files those tools would leave (checked against `useradd --prefix` and
//! `systemctl --root` in the tests):
//!
//! - users: a line in `/etc/passwd` and, unless the group exists, `/etc/group`; a
//!   locked entry in `/etc/shadow` / `/etc/gshadow` when those files exist. IDs come
//!   from the system range 100..=999 (the login.defs defaults), picked the way
//!   `useradd --system` picks them (see `free_id`). Missing files are created 0644.
//!   NIS `+` lines and login.defs overrides are not interpreted.
//! - units: for each `WantedBy=`/`RequiredBy=` target of the unit's `[Install]`
//!   section, `/etc/systemd/system/<target>.wants|.requires/<unit>` → the unit file.
//!   `Alias=` and `Also=` are not handled; the platform's units do not use them.
//!
//! Every function works on `&dyn Host`, so the recording double runs the same code.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use airlock_format::error::{Error, Result};

use super::PlannedUser;
use super::{FileKind, Host, Perms, SYSTEMD_SYSTEM_DIR};

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
const SHADOW: &str = "/etc/shadow";
const GSHADOW: &str = "/etc/gshadow";
const SYSTEM_IDS: std::ops::RangeInclusive<u32> = 100..=999;

/// Where systemd looks for system unit files, in its order of precedence.
const UNIT_DIRS: [&str; 5] = [
    SYSTEMD_SYSTEM_DIR,
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

fn check_user_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::input(name, "is not a valid system user name (lowercase letters, digits, `_`, `-`; at most 32)"))
    }
}

fn check_user(user: &PlannedUser) -> Result<()> {
    check_user_name(&user.name)?;
    for p in [&user.home, &user.shell] {
        let s = p.to_string_lossy();
        if !p.is_absolute() || s.contains(':') || s.contains('\n') {
            return Err(Error::input(
                format!("user {}", user.name),
                format!("`{s}` must be an absolute path without `:` or newlines"),
            ));
        }
    }
    Ok(())
}

fn check_unit_name(unit: &str) -> Result<()> {
    let ok = !unit.is_empty() && !unit.starts_with('.') && unit.contains('.') && !unit.contains(['/', '\0', '\n', ' ']);
    if ok {
        Ok(())
    } else {
        Err(Error::input(unit, "is not a unit name (like `k3s.service`)"))
    }
}

// --- users under a root ----------------------------------------------------------------

fn read_text(host: &dyn Host, path: &str) -> Result<Option<String>> {
    match host.read_file(Path::new(path))? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::corrupt(path, "is not UTF-8 text").with_hint("repair the file in the target root")),
    }
}

/// The `:`-separated fields of the entry for `name`.
fn entry<'a>(db: &'a str, name: &str) -> Option<Vec<&'a str>> {
    db.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.first() == Some(&name))
}

/// The numeric field `index` (uid or gid) of every entry.
fn ids(db: &str, index: usize) -> Vec<u32> {
    db.lines().filter_map(|l| l.split(':').nth(index)?.parse().ok()).collect()
}

/// A free id in the system range, as `useradd --system` picks it: `prefer` if free,
/// else counting down from just below the lowest system id in use — so the id of a
/// deleted user, and the files it may still own, are not handed out again — and from
/// the top of the range only when that finds nothing.
fn free_id(used: &[u32], prefer: Option<u32>) -> Option<u32> {
    let free = |id: &u32| !used.contains(id);
    if let Some(p) = prefer.filter(|p| SYSTEM_IDS.contains(p) && free(p)) {
        return Some(p);
    }
    let lowest_used = used.iter().copied().filter(|id| SYSTEM_IDS.contains(id)).min();
    let below = lowest_used.map_or(*SYSTEM_IDS.end(), |id| id.saturating_sub(1));
    (*SYSTEM_IDS.start()..=below).rev().find(free).or_else(|| SYSTEM_IDS.rev().find(free))
}

/// Appends one line, keeping the file's mode (and, through the host, its owner).
fn append_line(host: &dyn Host, path: &str, existing: Option<&str>, line: &str) -> Result<()> {
    let mut text = existing.unwrap_or_default().to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    let mode = host.metadata(Path::new(path))?.map(|m| m.mode).unwrap_or(0o644);
    host.write_file(Path::new(path), &mut text.as_bytes(), Perms::mode(mode))?;
    Ok(())
}

pub(super) fn rooted_user_exists(host: &dyn Host, name: &str) -> Result<bool> {
    check_user_name(name)?;
    Ok(read_text(host, PASSWD)?.is_some_and(|db| entry(&db, name).is_some()))
}

pub(super) fn rooted_ensure_user(host: &dyn Host, user: &PlannedUser) -> Result<bool> {
    check_user(user)?;
    let name = user.name.as_str();
    let passwd = read_text(host, PASSWD)?;
    if passwd.as_deref().is_some_and(|db| entry(db, name).is_some()) {
        return Ok(false);
    }
    let exhausted =
        || Error::input(format!("user {name}"), "no free id is left in the system range 100..=999 of the target root");
    let uid = free_id(&ids(passwd.as_deref().unwrap_or(""), 2), None).ok_or_else(exhausted)?;
    // The group first, so the user never names a group that does not exist.
    let group = read_text(host, GROUP)?;
    let gid = match group.as_deref().and_then(|db| entry(db, name)) {
        Some(fields) => fields.get(2).and_then(|g| g.parse::<u32>().ok()).ok_or_else(|| {
            Error::corrupt(GROUP, format!("the entry for group {name} has no numeric gid"))
                .with_hint("repair the file in the target root")
        })?,
        None => {
            let gid = free_id(&ids(group.as_deref().unwrap_or(""), 2), Some(uid)).ok_or_else(exhausted)?;
            let gshadow = read_text(host, GSHADOW)?;
            // As useradd: `x` when the password lives in gshadow, `!` (locked) otherwise.
            let pw = if gshadow.is_some() { "x" } else { "!" };
            append_line(host, GROUP, group.as_deref(), &format!("{name}:{pw}:{gid}:"))?;
            if let Some(gs) = gshadow {
                append_line(host, GSHADOW, Some(&gs), &format!("{name}:!::"))?;
            }
            gid
        }
    };
    let line = format!("{name}:x:{uid}:{gid}::{}:{}", user.home.display(), user.shell.display());
    append_line(host, PASSWD, passwd.as_deref(), &line)?;
    if let Some(shadow) = read_text(host, SHADOW)? {
        let days = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
        append_line(host, SHADOW, Some(&shadow), &format!("{name}:!:{days}::::::"))?;
    }
    Ok(true)
}

// --- units under a root ----------------------------------------------------------------

/// The unit file systemd would load for `unit`, by its search path.
fn find_unit_file(host: &dyn Host, unit: &str) -> Result<Option<PathBuf>> {
    for dir in UNIT_DIRS {
        let p = Path::new(dir).join(unit);
        if let Some(m) = host.metadata(&p)? {
            if m.kind == FileKind::Symlink && host.read_link(&p)?.as_deref() == Some(Path::new("/dev/null")) {
                return Err(Error::input(unit, format!("is masked ({} -> /dev/null)", p.display()))
                    .with_hint("unmask it in the target root first"));
            }
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// `(target, "wants" | "requires")` for each dependency in the `[Install]` section.
fn install_targets(text: &str) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let mut in_install = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|_| in_install) else { continue };
        let kind = match key.trim() {
            "WantedBy" => "wants",
            "RequiredBy" => "requires",
            _ => continue,
        };
        if value.trim().is_empty() {
            // An empty assignment resets the list, as in systemd.
            out.retain(|(_, k)| *k != kind);
        }
        out.extend(value.split_whitespace().map(|t| (t.to_string(), kind)));
    }
    out
}

/// The unit file and the links enabling it, or `None` when there is no unit file.
fn unit_links(host: &dyn Host, unit: &str) -> Result<Option<(PathBuf, Vec<PathBuf>)>> {
    check_unit_name(unit)?;
    let Some(file) = find_unit_file(host, unit)? else { return Ok(None) };
    let text = host.read_file(&file)?.unwrap_or_default();
    let links = install_targets(&String::from_utf8_lossy(&text))
        .into_iter()
        .map(|(target, kind)| Path::new(SYSTEMD_SYSTEM_DIR).join(format!("{target}.{kind}")).join(unit))
        .collect();
    Ok(Some((file, links)))
}

pub(super) fn rooted_unit_enabled(host: &dyn Host, unit: &str) -> Result<bool> {
    let Some((file, links)) = unit_links(host, unit)? else { return Ok(false) };
    if links.is_empty() {
        return Ok(false);
    }
    for link in &links {
        let is_link = host.metadata(link)?.is_some_and(|m| m.kind == FileKind::Symlink);
        if !is_link || host.read_link(link)?.as_deref() != Some(file.as_path()) {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn rooted_enable_unit(host: &dyn Host, unit: &str) -> Result<()> {
    let Some((file, links)) = unit_links(host, unit)? else {
        return Err(Error::input(unit, format!("no unit file in any of {}", UNIT_DIRS.join(", ")))
            .with_hint("lay out the unit file before enabling it"));
    };
    if links.is_empty() {
        return Err(Error::input(
            file.display().to_string(),
            "has no WantedBy= or RequiredBy= in an [Install] section; systemctl enable would refuse it too",
        ));
    }
    for link in links {
        host.symlink(&link, &file)?;
    }
    Ok(())
}

pub(super) fn rooted_disable_unit(host: &dyn Host, unit: &str) -> Result<()> {
    let Some((file, links)) = unit_links(host, unit)? else { return Ok(()) };
    for link in links {
        let is_link = host.metadata(&link)?.is_some_and(|m| m.kind == FileKind::Symlink);
        if is_link && host.read_link(&link)?.as_deref() == Some(file.as_path()) {
            host.remove(&link)?;
            // An empty `.wants` directory means nothing; leave no trace of ours.
            if let Some(dir) = link.parent() {
                host.remove_dir(dir)?;
            }
        }
    }
    Ok(())
}

// --- live --------------------------------------------------------------------------------

/// `getent <db> <name>`: exit 0 found, 2 not found, anything else is an error.
fn getent(host: &dyn Host, db: &str, name: &str) -> Result<bool> {
    let argv = ["getent", db, name];
    let out = host.run(&argv)?;
    match out.status {
        0 => Ok(true),
        2 => Ok(false),
        _ => out.checked(&argv).map(|_| true),
    }
}

pub(super) fn live_user_exists(host: &dyn Host, name: &str) -> Result<bool> {
    check_user_name(name)?;
    getent(host, "passwd", name)
}

pub(super) fn live_ensure_user(host: &dyn Host, user: &PlannedUser) -> Result<bool> {
    check_user(user)?;
    let name = user.name.as_str();
    if getent(host, "passwd", name)? {
        return Ok(false);
    }
    let home = user.home.to_string_lossy();
    let shell = user.shell.to_string_lossy();
    let mut argv = vec!["useradd", "--system", "--no-create-home", "--home-dir", &home, "--shell", &shell];
    // useradd refuses --user-group when the group already exists.
    if getent(host, "group", name)? {
        argv.extend(["--gid", name]);
    } else {
        argv.push("--user-group");
    }
    argv.push(name);
    host.run(&argv)?.checked(&argv)?;
    Ok(true)
}

pub(super) fn live_unit_enabled(host: &dyn Host, unit: &str) -> Result<bool> {
    check_unit_name(unit)?;
    // Exit 0 also covers `static`, `alias` and `enabled-runtime` (gone at reboot);
    // only `enabled` is what an install wants.
    let out = host.run(&["systemctl", "is-enabled", unit])?;
    Ok(out.success() && out.stdout.lines().next().map(str::trim) == Some("enabled"))
}

pub(super) fn live_enable_unit(host: &dyn Host, unit: &str) -> Result<()> {
    check_unit_name(unit)?;
    let argv = ["systemctl", "enable", unit];
    host.run(&argv)?.checked(&argv).map(|_| ())
}

pub(super) fn live_disable_unit(host: &dyn Host, unit: &str) -> Result<()> {
    check_unit_name(unit)?;
    let argv = ["systemctl", "disable", unit];
    host.run(&argv)?.checked(&argv).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_targets_follow_systemd_list_semantics() {
        let unit = "[Unit]\nWantedBy=not-here.target\n[Install]\nWantedBy=a.target b.target\nWantedBy=\nWantedBy=multi-user.target\nRequiredBy=x.target\n";
        assert_eq!(
            install_targets(unit),
            vec![("multi-user.target".to_string(), "wants"), ("x.target".to_string(), "requires")]
        );
    }

    #[test]
    fn system_ids_count_down_and_prefer_the_matching_gid() {
        assert_eq!(free_id(&[], None), Some(999));
        assert_eq!(free_id(&[0, 65534, 998], None), Some(997), "ids outside the range do not count");
        assert_eq!(free_id(&[990, 998], None), Some(989), "999 may have been a deleted user's");
        assert_eq!(free_id(&[100, 999], None), Some(998), "from the top once nothing is left below");
        assert_eq!(free_id(&[999], Some(500)), Some(500));
        assert_eq!(free_id(&[500], Some(500)), Some(499));
    }
}
