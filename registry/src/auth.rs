//! Registry credentials: docker `config.json` (`auths.<host>.auth`, or `username` and
//! `password`) and explicit ones from the command line or the environment.
//!
//! Credentials never appear in errors, reports or `Debug` output: errors name the
//! registry and the file, not the user or the secret.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use base64::Engine;
use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// Credentials by registry host.
#[derive(Clone, Default)]
pub struct Credentials {
    by_host: BTreeMap<String, Login>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hosts only: user names are personal data, passwords secrets.
        f.debug_struct("Credentials").field("hosts", &self.by_host.keys().collect::<Vec<_>>()).finish()
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Docker Hub's credentials live under its legacy index URL.
fn host_key(k: &str) -> String {
    let k = k.trim_start_matches("https://").trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

impl Credentials {
    /// Explicit credentials win over any file.
    pub fn insert(&mut self, host: &str, username: String, password: String) {
        self.by_host.insert(host_key(host), Login { username, password });
    }

    pub fn get(&self, host: &str) -> Option<&Login> {
        self.by_host.get(&host_key(host))
    }

    /// Adds every entry of a docker `config.json` not already known.
    pub fn add_docker_config(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).at(path)?;
        let cfg: DockerConfig = serde_json::from_str(&text).map_err(|e| {
            // serde's message names a line and column, never the secret values.
            Error::input(path.display().to_string(), format!("is not a docker config.json: {e}"))
                .with_hint("it should look like {\"auths\": {\"HOST\": {\"auth\": \"base64(user:password)\"}}}")
        })?;
        for (k, a) in cfg.auths {
            let login = match (&a.auth, &a.username, &a.password) {
                (Some(b64), _, _) if !b64.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| {
                        Error::input(path.display().to_string(), format!("auths.{k}.auth is not valid base64"))
                            .with_hint("it must be base64 of user:password (`docker login` writes it so)")
                    })?;
                    let raw = String::from_utf8(raw).map_err(|_| {
                        Error::input(path.display().to_string(), format!("auths.{k}.auth is not UTF-8 text"))
                    })?;
                    let Some((u, p)) = raw.split_once(':') else {
                        return Err(Error::input(
                            path.display().to_string(),
                            format!("auths.{k}.auth does not decode to user:password"),
                        )
                        .with_hint("log in again with `docker login` or `skopeo login --authfile`"));
                    };
                    Login { username: u.to_string(), password: p.to_string() }
                }
                (_, Some(u), Some(p)) => Login { username: u.clone(), password: p.clone() },
                // Entries kept by credential helpers carry no secret here.
                _ => continue,
            };
            self.by_host.entry(host_key(&k)).or_insert(login);
        }
        Ok(())
    }

    /// The docker config files to read: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`; only those that exist.
    pub fn default_docker_configs() -> Vec<PathBuf> {
        let p = match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d).join("config.json"),
            None => match std::env::var_os("HOME") {
                Some(h) => PathBuf::from(h).join(".docker/config.json"),
                None => return vec![],
            },
        };
        if p.is_file() {
            vec![p]
        } else {
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auth_and_username_password_forms_are_read_by_host() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{b64}"}},"https://index.docker.io/v1/":{{"username":"bob","password":"pw"}},"helper.example":{{}}}},"credHelpers":{{}}}}"#
            ),
        )
        .unwrap();
        let mut c = Credentials::default();
        c.add_docker_config(&f).unwrap();
        let l = c.get("127.0.0.1:5000").unwrap();
        assert_eq!((l.username.as_str(), l.password.as_str()), ("alice", "s3cr:et"));
        assert_eq!(c.get("docker.io").unwrap().username, "bob");
        assert!(c.get("helper.example").is_none());
        // Debug output carries no secret.
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr") && !dbg.contains("alice"), "{dbg}");
    }

    #[test]
    fn explicit_credentials_win_over_the_file_and_bad_files_name_the_file_not_the_secret() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("file:filepw");
        std::fs::write(&f, format!(r#"{{"auths":{{"r.example":{{"auth":"{b64}"}}}}}}"#)).unwrap();
        let mut c = Credentials::default();
        c.insert("r.example", "flag".into(), "flagpw".into());
        c.add_docker_config(&f).unwrap();
        assert_eq!(c.get("r.example").unwrap().username, "flag");

        std::fs::write(&f, r#"{"auths":{"r.example":{"auth":"bm9jb2xvbg=="}}}"#).unwrap(); // "nocolon"
        let e = Credentials::default().add_docker_config(&f).unwrap_err();
        assert!(e.subject.contains("config.json") && e.hint.is_some(), "{e}");
        assert!(!e.to_string().contains("nocolon"), "{e}");
    }
}
