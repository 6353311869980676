//! `WWW-Authenticate` challenges (RFC 7235) as OCI registries send them:
//! `Basic realm="Registry Realm"` or
//! `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`.
//!
//! Hand-written because the grammar we need is small and the crates that parse it pull
//! in a whole HTTP stack of their own.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    /// The token endpoint (`realm`) and the parameters to pass to it.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first challenge we can answer (Bearer preferred over Basic, as Docker does).
/// `None` when the header offers neither.
pub fn parse(header: &str) -> Option<Challenge> {
    let mut found = Vec::new();
    for (scheme, params) in split_challenges(header) {
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                let Some(realm) = params.get("realm").cloned() else { continue };
                found.push(Challenge::Bearer {
                    realm,
                    service: params.get("service").cloned(),
                    scope: params.get("scope").cloned(),
                });
            }
            "basic" => found.push(Challenge::Basic),
            _ => {}
        }
    }
    found.sort_by_key(|c| matches!(c, Challenge::Basic));
    found.into_iter().next()
}

/// Splits `Scheme k=v, k="v", Scheme2 k=v` into schemes with their parameters.
fn split_challenges(header: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let chars: Vec<char> = header.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        // A token: either a scheme (followed by space or end) or a parameter name (followed by `=`).
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' && chars[i] != ',' {
            i += 1;
        }
        let token: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        if i < chars.len() && chars[i] == '=' && !out.is_empty() {
            i += 1;
            while i < chars.len() && chars[i] == ' ' {
                i += 1;
            }
            let value = if i < chars.len() && chars[i] == '"' {
                i += 1;
                let mut v = String::new();
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    v.push(chars[i]);
                    i += 1;
                }
                i += 1; // closing quote
                v
            } else {
                let s = i;
                while i < chars.len() && chars[i] != ',' && !chars[i].is_whitespace() {
                    i += 1;
                }
                chars[s..i].iter().collect()
            };
            if let Some((_, params)) = out.last_mut() {
                params.insert(token.to_ascii_lowercase(), value);
            }
        } else if !token.is_empty() {
            out.push((token, BTreeMap::new()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer_challenge_parses_realm_service_and_scope() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#;
        assert_eq!(
            parse(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
    }

    #[test]
    fn scope_with_commas_inside_quotes_stays_whole() {
        let h = r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push""#;
        let Some(Challenge::Bearer { scope, .. }) = parse(h) else { panic!("no bearer") };
        assert_eq!(scope.as_deref(), Some("repository:a/b:pull,push"));
    }

    #[test]
    fn basic_challenge_and_unquoted_values_and_odd_spacing() {
        assert_eq!(parse(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse("basic realm=x"), Some(Challenge::Basic));
        assert_eq!(
            parse("Bearer  realm = https://h/t , service=h"),
            Some(Challenge::Bearer { realm: "https://h/t".into(), service: Some("h".into()), scope: None })
        );
    }

    #[test]
    fn bearer_is_preferred_when_both_are_offered_and_unknown_schemes_are_ignored() {
        let h = r#"Basic realm="r", Bearer realm="https://h/token",service="h""#;
        assert!(matches!(parse(h), Some(Challenge::Bearer { .. })));
        assert_eq!(parse(r#"Negotiate, Digest realm="x""#), None);
        assert_eq!(parse(""), None);
        // Bearer without a realm cannot be answered.
        assert_eq!(parse(r#"Bearer service="h""#), None);
    }
}
