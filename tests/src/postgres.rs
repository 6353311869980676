//! A throwaway real PostgreSQL on 127.0.0.1 that accepts only TLS connections with a
//! password (`hostssl ... scram-sha-256`), its server certificate (SAN `localhost`)
//! signed by a CA of its own, as a site's database team would run it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{is_root, require_tool, skip_or_fail};

/// The newest `/usr/lib/postgresql/<major>/bin` with `initdb` (Debian's layout).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    match dirs.pop() {
        Some((_, bin)) => Some(bin),
        None => skip_or_fail(
            "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, Debian package postgresql) are not installed",
        ),
    }
}

/// A command run as the `postgres` user when the test runs as root (initdb and
/// postgres refuse to run as root), as the current user otherwise.
pub fn as_db_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// The running server; stopped (`pg_ctl stop`) when dropped.
pub struct TlsPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl TlsPostgres {
    /// Starts one whose superuser is `user` with `password` and which has a database
    /// `database` owned by it. `None` (skip) or panic (`AIRLOCK_REQUIRE_TOOLS=1`) when
    /// the server or openssl is missing.
    pub fn start(user: &str, password: &str, database: &str) -> Option<TlsPostgres> {
        let bin = postgres_bin_dir()?;
        let openssl = require_tool("openssl")?;
        Some(Self::start_with(&bin, &openssl, user, password, database).expect("start a TLS PostgreSQL"))
    }

    /// The CA that signed the server's certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// A CA that signed nothing the server presents.
    pub fn other_ca_pem(&self) -> PathBuf {
        self.dir.path().join("tls/other-ca.pem")
    }

    /// A client program of the server's version (`psql`, `pg_dump`, `pg_restore`) set
    /// to reach it over its Unix socket (trusted, no password) as the database user
    /// `user`; the caller adds the database and what to do.
    pub fn client(&self, program: &str, user: &str) -> Command {
        let mut c = as_db_user(&self.bin.join(program));
        c.arg("-h").arg(self.dir.path()).args(["-p", &self.port.to_string(), "-U", user]);
        c
    }

    /// Runs `sql` in `database` as `user` and returns what it printed, unaligned and
    /// without headers (`psql -Atc`).
    pub fn psql(&self, user: &str, database: &str, sql: &str) -> Result<String> {
        let out = self
            .client("psql", user)
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn start_with(bin: &Path, openssl: &Path, user: &str, password: &str, database: &str) -> Result<TlsPostgres> {
        let dir = tempfile::Builder::new().prefix("airlock-postgres.").tempdir()?;
        let d = dir.path();
        // The postgres user must be able to write here when we are root.
        fs::set_permissions(d, fs::Permissions::from_mode(0o777))?;
        let tls = d.join("tls");
        fs::create_dir_all(&tls)?;
        crate::slapd::make_pki(openssl, &tls)?;
        for f in ["server.key", "server.pem", "ca.pem", "other-ca.pem"] {
            fs::set_permissions(tls.join(f), fs::Permissions::from_mode(0o644))?;
        }
        fs::set_permissions(&tls, fs::Permissions::from_mode(0o755))?;
        let pw = d.join("pw");
        fs::write(&pw, password)?;
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o644))?;
        let data = d.join("data");
        let out = as_db_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", user, "--auth=scram-sha-256", "--no-sync", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pw.display()))
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        fs::remove_file(&pw)?;
        // The key must belong to the server's user and be private to it: copy it into
        // the data directory as that user.
        let key_in_data = data.join("server.key");
        let out = as_db_user(Path::new("/bin/sh"))
            .arg("-c")
            .arg(format!(
                "cp '{}' '{}' && chmod 600 '{}'",
                tls.join("server.key").display(),
                key_in_data.display(),
                key_in_data.display()
            ))
            .output()?;
        if !out.status.success() {
            bail!("copy the server key: {}", String::from_utf8_lossy(&out.stderr));
        }
        fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = fs::File::create(d.join("postgres.log"))?;
        fs::set_permissions(d.join("postgres.log"), fs::Permissions::from_mode(0o666))?;
        let child = as_db_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", tls.join("server.pem").display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key_in_data.display()))
            .arg("-k")
            .arg(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn postgres")?;
        let pg = TlsPostgres { bin: bin.to_path_buf(), dir, child, port };
        for _ in 0..300 {
            let ready =
                Command::new(bin.join("pg_isready")).args(["-h", "127.0.0.1", "-p", &port.to_string()]).output()?;
            if ready.status.success() {
                let out = as_db_user(&bin.join("psql"))
                    .args(["-h"])
                    .arg(pg.dir.path())
                    .args(["-p", &port.to_string(), "-U", user, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
                    .arg(format!("CREATE DATABASE \"{database}\" OWNER \"{user}\""))
                    .output()?;
                if !out.status.success() {
                    bail!("create database: {}", String::from_utf8_lossy(&out.stderr));
                }
                return Ok(pg);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("postgres did not come up: {}", pg.log())
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_db_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["stop", "-m", "fast", "-w"])
            .output();
        let _ = self.child.wait();
    }
}
