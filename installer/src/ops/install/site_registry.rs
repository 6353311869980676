//! Install and upgrade with a site registry (`registry.delivery: registry` or `both`):
//! the plan's step that pushes the verified bundle's images into it, before
//! `registries.yaml` sends the nodes there.
//!
//! The step is the push of `airlock registry push` with the site's answers: its check
//! asks the registry (one `HEAD` per image) whether every image is there at the signed
//! digest, so a re-run, a second node or an unchanged upgrade finds it satisfied and
//! sends nothing; its apply streams the bundle through the same verification as every
//! reader and sends only what is missing. It talks to the registry over the network,
//! not to the host: the files it reads on the node (the CA, the push login) are read
//! through the host seam, under the target root.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use airlock_format::manifest::Manifest;
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::report::Silent;
use airlock_registry::{Client, ClientOptions, Credentials, RegistryTls};

use crate::engine::layout::StepGroup;
use crate::engine::{Step, StepState};
use crate::host::{FileKind, Host};
use crate::ops::push::{self, PushOptions};
use crate::site::answers::Registry;
use crate::state;

/// Where unfinished uploads of an install's push are remembered (0700, root's).
pub const PUSH_STATE_DIR: &str = "/var/lib/airlock/push";

/// Pushes the bundle's images into the site registry.
pub struct PushImages {
    id: String,
    bundle: PathBuf,
    signer: PublicKey,
    images: Vec<(String, airlock_format::Sha256Digest)>,
    delta: bool,
    registry: Registry,
    /// The CA the registry's certificate chains to, as a path on the node.
    ca_file: PathBuf,
}

impl PushImages {
    pub fn new(bundle: &Path, manifest: &Manifest, signer: &PublicKey, registry: &Registry) -> Self {
        Self {
            id: "images/push/site-registry".into(),
            bundle: bundle.to_path_buf(),
            signer: *signer,
            images: manifest.images.iter().map(|i| (i.reference.clone(), i.digest)).collect(),
            delta: manifest.is_delta(),
            registry: registry.clone(),
            // As for `registries.yaml`: without a CA of its own, the registry's
            // certificate is one the site PKI issued.
            ca_file: registry.ca_file.clone().unwrap_or_else(|| PathBuf::from(state::CA_CERT)),
        }
    }

    fn host_port(&self) -> String {
        self.registry.mirror.to_string()
    }

    fn destination(&self) -> String {
        match self.registry.prefix.as_str() {
            "" => self.host_port(),
            p => format!("{}/{p}", self.host_port()),
        }
    }

    /// The client with the site's CA and login, both read on the node.
    fn client(&self, host: &dyn Host) -> Result<ClientOptions> {
        let registry = self.host_port();
        let mut opts = ClientOptions::new(concat!("airlock/", env!("CARGO_PKG_VERSION")));
        let ca = match host.metadata(&self.ca_file)? {
            Some(m) if m.kind == FileKind::File => Some(host.real_path(&self.ca_file)?),
            _ if self.registry.ca_file.is_some() => {
                return Err(Error::input(
                    format!("registry.ca_file {}", self.ca_file.display()),
                    "is not a file on this node",
                )
                .with_hint("copy the CA certificate that signed the registry's certificate there"))
            }
            // Neither given nor made yet: the system's CAs.
            _ => None,
        };
        opts.registries.insert(registry.clone(), RegistryTls { ca, insecure: false, plain_http: false });
        let mut creds = Credentials::default();
        match &self.registry.push_auth_file {
            Some(file) => {
                let meta = host.metadata(file)?.ok_or_else(|| {
                    Error::input(format!("registry.push_auth_file {}", file.display()), "does not exist on this node")
                        .with_hint("write the docker config.json with the pushing account there (mode 0600)")
                })?;
                if meta.mode & 0o077 != 0 {
                    return Err(Error::input(
                        format!("registry.push_auth_file {}", file.display()),
                        format!("is readable by others (mode {:o}); it holds the registry login", meta.mode),
                    )
                    .with_hint(format!("chmod 600 {}", file.display())));
                }
                creds.add_docker_config(&host.real_path(file)?)?;
                if creds.get(&registry).is_none() {
                    return Err(Error::input(
                        format!("registry.push_auth_file {}", file.display()),
                        format!("has no login for {registry}"),
                    )
                    .with_hint(format!(
                        "log in with `docker login --config DIR {registry}` or add auths.\"{registry}\""
                    )));
                }
            }
            None => {
                if let (Some(u), Some(p)) = (&self.registry.username, &self.registry.password) {
                    creds.insert(&registry, u.clone(), p.expose().to_string());
                }
            }
        }
        opts.credentials = creds;
        Ok(opts)
    }

    /// The images the registry does not have at the bundle's digest.
    fn missing(&self, client: &Client) -> Result<Vec<String>> {
        let (registry, prefix) = (self.host_port(), self.registry.prefix.clone());
        let mut missing = Vec::new();
        for (reference, digest) in &self.images {
            let target = push::target_for(&registry, &prefix, reference)?;
            let at = target.tag.clone().unwrap_or_else(|| digest.to_string());
            let what = format!("image {reference} in {registry}");
            if client.manifest_digest(&target.repo, &at, &what)? != Some(*digest) {
                missing.push(reference.clone());
            }
        }
        Ok(missing)
    }
}

impl Step for PushImages {
    fn id(&self) -> &str {
        &self.id
    }

    fn group(&self) -> StepGroup {
        // Before the distribution (re)starts and pulls them.
        StepGroup::Images
    }

    fn describe(&self) -> String {
        format!("push the bundle's {} images into {}", self.images.len(), self.destination())
    }

    fn check(&self, host: &dyn Host) -> Result<StepState> {
        let opts = match self.client(host) {
            Ok(o) => o,
            Err(e) => return Ok(blocked(&e)),
        };
        let missing = match self.missing(&Client::new(opts)) {
            Ok(m) => m,
            Err(e) => return Ok(blocked(&e)),
        };
        if missing.is_empty() {
            return Ok(StepState::Satisfied);
        }
        if self.delta {
            // A delta carries only the blobs that changed: it cannot push an image whole.
            return Ok(StepState::Blocked {
                reason: format!(
                    "{} is not in {} and this is a delta bundle, which cannot push whole images",
                    missing.join(", "),
                    self.destination()
                ),
                hint: format!(
                    "push the full bundle of this release first: airlock registry push FULL.airlock --to {}",
                    self.destination()
                ),
            });
        }
        Ok(StepState::Pending {
            change: format!("push {} of {} images ({})", missing.len(), self.images.len(), missing.join(", ")),
        })
    }

    fn apply(&self, host: &dyn Host) -> Result<()> {
        let files = BundleFiles::locate(&self.bundle)?;
        let opts = PushOptions {
            to: self.destination(),
            client: self.client(host)?,
            chunk_size: push::DEFAULT_CHUNK_SIZE,
            dry_run: false,
            state_dir: host.resolve_dir(Path::new(PUSH_STATE_DIR), 0o700)?,
            stop: None,
        };
        push::run(&files, std::slice::from_ref(&self.signer), &opts, &Silent)?;
        Ok(())
    }

    fn rollback(&self, _host: &dyn Host) -> Result<bool> {
        // Images in the registry stay: pushed at their signed digests, they harm
        // nothing, and the next run finds them there.
        Ok(false)
    }
}

fn blocked(e: &Error) -> StepState {
    StepState::Blocked {
        reason: format!("the site registry cannot be asked for the bundle's images: {e}"),
        hint: "check registry.mirror, registry.ca_file and the login in the answers (docs/answers.md)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Perms, RootedHost};
    use crate::site::answers::{Address, HostPort, ImageDelivery};

    fn step(push_auth_file: Option<&str>) -> PushImages {
        let registry = Registry {
            mirror: HostPort { host: Address::Name("harbor.example.test".into()), port: 8443 },
            ca_file: None,
            username: Some("puller".into()),
            password: Some(crate::site::answers::Secret::new("pull-pw".to_string())),
            delivery: ImageDelivery::Registry,
            prefix: "platform".into(),
            push_auth_file: push_auth_file.map(PathBuf::from),
        };
        PushImages {
            id: "images/push/site-registry".into(),
            bundle: PathBuf::from("/nowhere.airlock"),
            signer: airlock_format::minisign::SecretKey::generate().unwrap().public_key(),
            images: vec![],
            delta: false,
            ca_file: PathBuf::from(state::CA_CERT),
            registry,
        }
    }

    #[test]
    fn a_push_login_file_others_may_read_is_refused_with_the_chmod() {
        let t = tempfile::tempdir().unwrap();
        let host = RootedHost::new(t.path().to_path_buf(), false).unwrap();
        let login = r#"{"auths":{"harbor.example.test:8443":{"auth":"cHVzaGVyOnB3"}}}"#;
        let write = |mode| host.write_file(Path::new("/push.json"), &mut login.as_bytes(), Perms::mode(mode)).unwrap();
        write(0o644);
        let e = step(Some("/push.json")).client(&host).unwrap_err();
        assert!(e.to_string().contains("readable by others"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("chmod 600 /push.json"));

        write(0o600);
        let opts = step(Some("/push.json")).client(&host).unwrap();
        assert_eq!(opts.credentials.get("harbor.example.test:8443").unwrap().username, "pusher");
        // Without a file of its own, the pull account pushes.
        let opts = step(None).client(&host).unwrap();
        assert_eq!(opts.credentials.get("harbor.example.test:8443").unwrap().username, "puller");
        // Neither the CA nor the login is in what a plan or a log shows.
        assert!(!format!("{:?}", opts.credentials).contains("pull-pw"));
    }

    #[test]
    fn a_registry_that_cannot_be_asked_blocks_the_plan_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let host = RootedHost::new(t.path().to_path_buf(), false).unwrap();
        let mut s = step(Some("/missing.json"));
        s.images = vec![("docker.io/library/nginx:1.27".into(), airlock_format::Sha256Digest::of(b"x"))];
        match s.check(&host).unwrap() {
            StepState::Blocked { reason, .. } => assert!(reason.contains("/missing.json"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
