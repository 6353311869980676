//! K3s/RKE2 release artifacts from a web server or a release directory, checked
//! against the release's own `sha256sum-<arch>.txt`.
//!
//! `distribution.base_url` (or an artifact's own `url`) names where the release lives;
//! the checksum file is read from the same place (unless `checksums:` names one), and
//! every artifact is downloaded into the content cache under the digest that file
//! lists, so a second build finds it there and does not download it again. A download
//! whose bytes do not match the listed digest is an error naming the artifact and the
//! URL, and never enters the cache. `distribution.dir` does the same for a directory
//! holding a release as published (the files and its `sha256sum-<arch>.txt`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use airlock_format::digest::Sha256Digest;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::report::{Event, Reporter};

use crate::registry::{client::Client, Cache, PullOptions, RegistryTls};
use crate::spec::{DistributionSpec, LoadedSpec};

/// A release's checksum list: where it came from (for messages) and name → digest.
pub struct ReleaseSums {
    pub origin: String,
    pub sums: BTreeMap<String, Sha256Digest>,
}

/// Every artifact as a local file, and the checksum list they are checked against.
pub struct ResolvedRelease {
    pub sums: Option<ReleaseSums>,
    /// `(name, local file)` in spec order.
    pub artifacts: Vec<(String, PathBuf)>,
}

/// The checksum file's name for an architecture, as K3s and RKE2 publish it.
pub fn sums_name(arch: &str) -> String {
    format!("sha256sum-{arch}.txt")
}

fn join_url(base: &str, name: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), name)
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Resolves the spec's distribution artifacts to local files, downloading those that
/// come from a URL into the cache of `options`.
pub fn resolve(
    spec: &LoadedSpec,
    d: &DistributionSpec,
    options: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<ResolvedRelease> {
    let sums_file = sums_name(&d.arch);
    let needs_network = d.base_url.is_some() || d.artifacts.iter().any(|a| a.url.is_some());
    let client = needs_network.then(|| {
        let mut options = options.clone();
        for (i, r) in spec.spec.registries.iter().enumerate() {
            // Validated when the spec was loaded; an unusable CA path is reported there.
            let ca = r.ca.as_deref().and_then(|c| spec.path(format!("registries[{i}].ca"), c).ok());
            options.registries.insert(r.host.clone(), RegistryTls { ca, insecure: r.insecure, ..Default::default() });
        }
        Client::new(options.client)
    });

    // Where the checksum list comes from: `checksums:` (a file, or a URL), else the
    // release directory or base URL, else the directory of the first artifact URL.
    let sums_source: Option<String> = match (&d.checksums, &d.dir, &d.base_url) {
        (Some(c), _, _) => Some(c.clone()),
        (None, Some(dir), _) => Some(format!("{}/{sums_file}", dir.trim_end_matches('/'))),
        (None, None, Some(base)) => Some(join_url(base, &sums_file)),
        (None, None, None) => d
            .artifacts
            .iter()
            .find_map(|a| a.url.as_deref())
            .and_then(|u| u.rsplit_once('/'))
            .map(|(base, _)| join_url(base, &sums_file)),
    };
    let sums = match sums_source {
        None => None,
        Some(src) if is_url(&src) => {
            let client = client.as_ref().expect("a URL source makes a client");
            reporter.event(Event::Phase { name: &format!("fetching {src}"), total: None });
            let bytes = client
                .get_url(&src, 1 << 20, "distribution.checksums")
                .map_err(|e| e.within(format!("{}: distribution", spec.file.display())))?;
            Some(ReleaseSums { sums: parse_sums(&String::from_utf8_lossy(&bytes), &src)?, origin: src })
        }
        Some(rel) => {
            let p = spec.path("distribution.checksums", &rel)?;
            let text = std::fs::read_to_string(&p).at(&p)?;
            let origin = p.display().to_string();
            Some(ReleaseSums { sums: parse_sums(&text, &origin)?, origin })
        }
    };

    let mut artifacts = Vec::new();
    let mut cache: Option<Cache> = None;
    for (i, a) in d.artifacts.iter().enumerate() {
        let key = format!("distribution.artifacts[{i}]");
        let url = match (&a.path, &a.url, &d.dir, &d.base_url) {
            (Some(p), _, _, _) => {
                artifacts.push((a.name.clone(), spec.path(format!("{key}.path"), p)?));
                continue;
            }
            (None, Some(u), _, _) => u.clone(),
            (None, None, Some(dir), _) => {
                let p = spec.path(format!("{key}.name"), &format!("{}/{}", dir.trim_end_matches('/'), a.name))?;
                artifacts.push((a.name.clone(), p));
                continue;
            }
            (None, None, None, Some(base)) => join_url(base, &a.name),
            (None, None, None, None) => {
                return Err(spec
                    .err(&key, "has no `path` or `url`, and the distribution has no `base_url` or `dir`")
                    .with_hint("give the artifact a `path`, or the distribution a `base_url` or `dir`"))
            }
        };
        let what = format!("{}: {key} ({})", spec.file.display(), a.name);
        // A download is only trusted through the release's checksum list.
        let Some(s) = &sums else {
            return Err(Error::input(&what, format!("is downloaded from {url} but there is no checksum list"))
                .with_hint("set `distribution.checksums` to the release's sha256sum-<arch>.txt (a path or URL)"));
        };
        let Some(want) = s.sums.get(&a.name).copied() else {
            return Err(Error::input(&what, format!("`{}` is not listed in {}", a.name, s.origin))
                .with_hint("the artifact name must be the file name the release publishes"));
        };
        if cache.is_none() {
            cache = Some(Cache::open(&options.cache_dir)?);
        }
        let cache = cache.as_ref().expect("opened above");
        let dest = cache.blob_path(&want);
        if dest.is_file() {
            reporter.event(Event::Phase { name: &format!("{} from the cache", a.name), total: None });
        } else {
            reporter.event(Event::Phase { name: &format!("downloading {url}"), total: None });
            let partial = cache.partial_path(&want);
            let client = client.as_ref().expect("a URL source makes a client");
            let got = client.download_url(&url, &partial, &what)?;
            if got != want {
                let _ = std::fs::remove_file(&partial);
                return Err(Error::corrupt(
                    &what,
                    format!("{url} has digest {got}, but {} lists {want} for `{}`", s.origin, a.name),
                )
                .with_hint(
                    "the server holds a damaged file or one from another release; check base_url and the version",
                ));
            }
            std::fs::rename(&partial, &dest).at(&dest)?;
            // K3s publishes the `k3s` binary itself: keep it executable in the bundle.
            if a.name == "k3s" || a.name.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).at(&dest)?;
            }
        }
        artifacts.push((a.name.clone(), dest));
    }
    Ok(ResolvedRelease { sums, artifacts })
}

/// Parses a release's `sha256sum-<arch>.txt` (`<hex>  <name>` lines).
pub fn parse_sums(text: &str, origin: &str) -> Result<BTreeMap<String, Sha256Digest>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || {
            Error::input(format!("{origin}:{}", i + 1), "not a `<sha256>  <file name>` line")
                .with_hint("this must be the release's sha256sum-<arch>.txt as published")
        };
        let (hex, name) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let name = name.trim_start().trim_start_matches('*');
        let d = Sha256Digest::from_hex(hex).map_err(|_| bad())?;
        out.insert(name.to_string(), d);
    }
    Ok(out)
}
