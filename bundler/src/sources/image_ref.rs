//! Image references: parsing and normalizing the name an image carries in a bundle.
//!
//! containerd (and so K3s) names an imported image by its annotation verbatim; a short
//! name like `nginx` becomes a bare name no pod spec ever resolves. So every reference
//! is normalized the way Docker does it (`docker.io` default registry, `library/` for
//! single-component Docker Hub names, `latest` when neither tag nor digest is given).
//!
//! Why not `oci_spec::distribution::Reference` (0.7.1): it accepts `Uppercase/repo`
//! (its registry regex takes the uppercase component, then its domain split puts it
//! back into a docker.io path), accepts uppercase hex in digests, and reports every
//! problem as "invalid reference format" without saying which part is wrong. The
//! grammar (distribution/reference) is small, so it is implemented here; tests pin the
//! oci-spec behaviour and cross-check every valid case against it.

use std::fmt;

use airlock_format::error::{Error, Result};
use airlock_format::Sha256Digest;

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const NAME_MAX: usize = 255;

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReference {
    /// `docker.io`, `ghcr.io`, `localhost:5000`, `[::1]:5000`.
    pub registry: String,
    /// `library/nginx`, `a/b`.
    pub repository: String,
    /// `latest` when the input had neither tag nor digest.
    pub tag: Option<String>,
    pub digest: Option<Sha256Digest>,
}

/// Normalizes `s`: `nginx` → `docker.io/library/nginx:latest`.
pub fn normalize_reference(s: &str) -> Result<String> {
    ImageReference::parse(s).map(|r| r.to_string())
}

fn bad(s: &str, cause: impl Into<String>) -> Error {
    Error::input(format!("image reference `{s}`"), cause).with_hint(
        "write it as [REGISTRY[:PORT]/]REPOSITORY[:TAG][@sha256:DIGEST], repository in lowercase, e.g. docker.io/library/nginx:1.27",
    )
}

impl ImageReference {
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(bad(s, "is empty"));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()) {
            return Err(bad(s, format!("contains the character {c:?}")));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(parse_digest(s, d)?)),
            None => (s, None),
        };
        // A tag's `:` comes after the last `/`; an earlier one is a registry port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            check_tag(s, t)?;
        }
        if name.is_empty() {
            return Err(bad(s, "has no repository name"));
        }
        // Like Docker: the first component is a registry only if it looks like a host
        // (has a dot or a port, or is `localhost`); `library/nginx` is a Docker Hub path.
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') => {
                check_registry(s, first)?;
                (first.to_string(), rest)
            }
            _ => (DOCKER_HUB.to_string(), name),
        };
        let registry = if registry == DOCKER_HUB_LEGACY { DOCKER_HUB.to_string() } else { registry };
        for component in path.split('/') {
            check_path_component(s, component)?;
        }
        let repository =
            if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad(s, format!("the name is longer than {NAME_MAX} characters")));
        }
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageReference { registry, repository, tag, digest })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn parse_digest(s: &str, d: &str) -> Result<Sha256Digest> {
    match d.split_once(':') {
        Some(("sha256", hex)) => Sha256Digest::from_hex(hex)
            .map_err(|_| bad(s, format!("digest `{d}` is not sha256: followed by 64 lowercase hex digits"))),
        Some((alg, _)) if !alg.is_empty() => {
            Err(bad(s, format!("digest algorithm `{alg}` is not supported; only sha256 is")))
        }
        _ => Err(bad(s, format!("`{d}` after @ is not a digest (sha256:<64 hex>)"))),
    }
}

/// `[\w][\w.-]{0,127}`
fn check_tag(s: &str, t: &str) -> Result<()> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok =
        !t.is_empty() && t.len() <= 128 && t.starts_with(word) && t.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(bad(s, format!("tag `{t}` is invalid (letters, digits, _ . -; at most 128; not starting with . or -)")))
    }
}

/// `host[:port]`: DNS labels separated by dots, or a bracketed IPv6 address.
fn check_registry(s: &str, r: &str) -> Result<()> {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(bad(s, format!("registry `{r}` has an unclosed [")));
        };
        if ip.is_empty() || !ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Err(bad(s, format!("registry `{r}` is not a valid IPv6 address")));
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(bad(s, format!("registry `{r}` has junk after ]"))),
            },
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad(s, format!("registry host `{host}` is not a valid host name")));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(s, format!("registry port `{port}` is not a number")));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn check_path_component(s: &str, c: &str) -> Result<()> {
    if c.is_empty() {
        return Err(bad(s, "has an empty path component (// or a trailing /)"));
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return Err(bad(s, format!("repository name must be lowercase (`{c}`)")));
    }
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    let bytes: Vec<char> = c.chars().collect();
    let mut i = 0;
    let mut ok = true;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if expect_alnum {
            if !alnum(bytes[i]) {
                ok = false;
                break;
            }
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            expect_alnum = false;
        } else {
            // One separator: `.`, `_`, `__`, or a run of `-`.
            match bytes[i] {
                '.' => i += 1,
                '_' => {
                    i += 1;
                    if i < bytes.len() && bytes[i] == '_' {
                        i += 1;
                    }
                }
                '-' => {
                    while i < bytes.len() && bytes[i] == '-' {
                        i += 1;
                    }
                }
                _ => {
                    ok = false;
                    break;
                }
            }
            expect_alnum = true;
        }
    }
    if !ok || expect_alnum {
        return Err(bad(
            s,
            format!("repository component `{c}` is invalid (lowercase letters and digits, separated by . _ __ or -)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_format::ErrorKind;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn n(s: &str) -> String {
        normalize_reference(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn good_cases() -> Vec<(String, String)> {
        [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.27", "docker.io/library/nginx:1.27"),
            ("library/nginx:1.27", "docker.io/library/nginx:1.27"),
            ("docker.io/nginx:1.27", "docker.io/library/nginx:1.27"),
            ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/library/nginx:1.27", "docker.io/library/nginx:1.27"),
            ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
            ("ghcr.io/a/b:1", "ghcr.io/a/b:1"),
            ("ghcr.io/a/b", "ghcr.io/a/b:latest"),
            ("quay.io/keycloak/keycloak:26.0", "quay.io/keycloak/keycloak:26.0"),
            ("localhost:5000/x:y", "localhost:5000/x:y"),
            ("localhost/x", "localhost/x:latest"),
            ("127.0.0.1:5000/lab/busybox:1.35", "127.0.0.1:5000/lab/busybox:1.35"),
            ("registry:5000/a/b", "registry:5000/a/b:latest"),
            ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux:some-long-tag"),
            ("a.b/x__y.z-w---v:T_a.g-1", "a.b/x__y.z-w---v:T_a.g-1"),
            ("test.com:tag", "docker.io/library/test.com:tag"),
            ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .chain([
            (format!("registry:5000/a/b@{D}"), format!("registry:5000/a/b@{D}")),
            (format!("nginx@{D}"), format!("docker.io/library/nginx@{D}")),
            (format!("nginx:1.27@{D}"), format!("docker.io/library/nginx:1.27@{D}")),
        ])
        .collect()
    }

    #[test]
    fn normalizes_like_docker() {
        for (input, want) in good_cases() {
            assert_eq!(n(&input), want, "{input}");
            // Normalizing is idempotent.
            assert_eq!(n(&want), want, "{want}");
        }
        assert_eq!(n("[::1]:5000/x:1"), "[::1]:5000/x:1");
    }

    #[test]
    fn parts_are_exposed() {
        let r = ImageReference::parse(&format!("localhost:5000/a/b:1@{D}")).unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.digest.unwrap().to_string(), D);
    }

    #[test]
    fn malformed_references_are_input_errors_naming_the_reference() {
        let long = format!("a/{}", "b".repeat(260));
        let bad_cases = [
            "",
            "Nginx",
            "Uppercase/lowercase:tag",
            "docker.io/Library/nginx",
            "ghcr.io/a/B:1",
            "nginx:",
            ":tag",
            "nginx:-x",
            "nginx:.x",
            "nginx: 1",
            " nginx",
            "ngi$nx",
            "a//b",
            "a/b/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "nginx@sha256:abc",
            "nginx@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "nginx@md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "nginx@e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "host-.com/a",
            "host.com:50a0/a",
            "[::1/a",
            "ngïnx",
            &long,
        ];
        for input in bad_cases {
            let e = normalize_reference(input).expect_err(input);
            assert_eq!(e.kind, ErrorKind::Input, "{input}");
            assert!(e.subject.contains(&format!("`{input}`")), "{input}: {e}");
            assert!(e.hint.is_some(), "{input}");
        }
        let e = normalize_reference("ghcr.io/A/b").unwrap_err();
        assert!(e.cause.contains("lowercase"), "{e}");
        let e = normalize_reference("x@sha512:abcd").unwrap_err();
        assert!(e.cause.contains("only sha256"), "{e}");
    }

    #[test]
    fn oci_spec_reference_agrees_on_valid_names_but_accepts_some_invalid_ones() {
        use oci_spec::distribution::Reference;
        for (input, want) in good_cases() {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.whole(), want, "{input}");
        }
        // The reasons this module has its own grammar (see the module comment). If
        // these start failing, oci-spec got stricter and could replace it.
        assert!("Uppercase/lowercase:tag".parse::<Reference>().is_ok());
        assert!("nginx@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
            .parse::<Reference>()
            .is_ok());
    }
}
