//! The validators behind every answer: addresses, names, networks, paths.
//!
//! Each one parses text into a typed value or says what is wrong and how to write it
//! instead. They know nothing about files or prompts: the answers file parser and the
//! wizard both call them (through the question list), so a value is judged the same
//! way wherever it was typed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::strict::Problem;
use super::{Address, HostPort};

/// Why a value is not acceptable. `at` is a path relative to the key being checked
/// (`[1].ip` inside `ha.servers`), empty when the value as a whole is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub at: String,
    pub cause: String,
    pub hint: String,
}

impl Invalid {
    pub fn new(cause: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { at: String::new(), cause: cause.into(), hint: hint.into() }
    }

    /// Points the problem at a part of the value: an item (`[2]`) or a cell (`[1].ip`).
    pub fn at(mut self, at: impl Into<String>) -> Self {
        let inner = std::mem::take(&mut self.at);
        self.at = at.into() + &inner;
        self
    }

    /// The problem at `key` (plus `at`).
    pub fn problem(self, key: &str) -> Problem {
        Problem::new(format!("{key}{}", self.at), self.cause, self.hint)
    }
}

/// An IPv4 or IPv6 address.
pub fn ip(s: &str) -> Result<IpAddr, Invalid> {
    s.parse::<IpAddr>().map_err(|_| {
        let hint = if s.contains('/') {
            "this takes one address, not a network: drop the `/` and the prefix length".to_string()
        } else if s.starts_with('[') || s.matches(':').count() == 1 {
            "this takes an address without brackets or a port, e.g. 192.0.2.10 or 2001:db8::10".to_string()
        } else {
            "write an IPv4 address like 192.0.2.10 or an IPv6 address like 2001:db8::10".to_string()
        };
        Invalid::new(format!("`{s}` is not an IP address"), hint)
    })
}

/// The address of a host on the site network: unicast and routable, so not a loopback,
/// link-local, multicast or unspecified address that K3s/RKE2 cannot advertise.
pub fn host_ip(s: &str) -> Result<IpAddr, Invalid> {
    let addr = ip(s)?;
    let why = match addr {
        IpAddr::V4(a) => v4_unusable(a),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            return Err(Invalid::new(
                format!("`{s}` is an IPv4-mapped IPv6 address"),
                format!(
                    "write the IPv4 address itself: {}",
                    a.to_ipv4_mapped().map(|v| v.to_string()).unwrap_or_default()
                ),
            ))
        }
        IpAddr::V6(a) => v6_unusable(a),
    };
    match why {
        Some(why) => Err(Invalid::new(
            format!("`{s}` is {why}, which other hosts cannot reach"),
            "give the address this host has on the site network (`ip -brief address` lists them)",
        )),
        None => Ok(addr),
    }
}

fn v4_unusable(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_link_local() {
        Some("a link-local address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

fn v6_unusable(a: Ipv6Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_loopback() {
        Some("the loopback address")
    } else if a.segments()[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// A DNS name as RFC 1123 and Kubernetes take it (a "subdomain"): lowercase labels of
/// letters, digits and inner `-`, each 1–63 characters, at most 253 in all. Node names
/// and host names in answers follow it.
pub fn dns_name(s: &str) -> Result<(), Invalid> {
    let problem = dns_name_problem(s);
    match problem {
        None => Ok(()),
        Some(cause) => {
            // The hint names a fix that is itself accepted, so the operator can take it.
            let hint = match dns_name_fixed(s) {
                Some(fixed) => format!("{}, e.g. {fixed}", cause.1),
                None => format!("{}; write a name such as node-1 or node-1.site.example", cause.1),
            };
            Err(Invalid::new(cause.0, hint))
        }
    }
}

/// What is wrong with `s` as a DNS name, and the rule it breaks; `None`: nothing.
fn dns_name_problem(s: &str) -> Option<(String, String)> {
    if s.is_empty() {
        return Some(("is empty".into(), "write a name".into()));
    }
    if s.len() > 253 {
        return Some((format!("`{s}` is longer than 253 characters"), "use a shorter name".into()));
    }
    if s.ends_with('.') {
        return Some((format!("`{s}` ends with a dot"), "drop the trailing dot".into()));
    }
    if s.chars().any(|c| c.is_ascii_uppercase()) {
        return Some((format!("`{s}` has capital letters"), "Kubernetes takes names in lowercase only".into()));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Some((format!("`{s}` has an empty label (`..` or a leading dot)"), "remove the extra dot".into()));
        }
        if label.len() > 63 {
            return Some((
                format!("`{s}`: the label `{label}` is longer than 63 characters"),
                "shorten that label".into(),
            ));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            let rule = if c == '_' {
                "host names may not contain `_`; use `-` instead"
            } else {
                "use only a-z, 0-9 and `-` between the dots"
            };
            return Some((format!("`{s}` contains `{c}`, which DNS names may not"), rule.into()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some((
                format!("`{s}`: the label `{label}` starts or ends with `-`"),
                "move the `-` inside the label".into(),
            ));
        }
    }
    None
}

/// `s` made a valid DNS name, if a plain fix does it: lowercase, every other character
/// `-`, empty labels dropped, labels cut to 63 and trimmed of `-`. `None` when nothing
/// sensible is left.
fn dns_name_fixed(s: &str) -> Option<String> {
    let labels: Vec<String> = s
        .to_ascii_lowercase()
        .split('.')
        .map(|l| {
            let l: String =
                l.chars().map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' }).collect();
            let l: String = l.chars().take(63).collect();
            l.trim_matches('-').to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    let fixed = labels.join(".");
    (fixed.len() <= 253 && dns_name_problem(&fixed).is_none() && !fixed.is_empty()).then_some(fixed)
}

/// A fully qualified domain name: a DNS name with at least two labels whose last label
/// is not all digits (so an IP address is not taken for a name).
pub fn fqdn(s: &str) -> Result<(), Invalid> {
    dns_name(s)?;
    let last = s.rsplit('.').next().unwrap_or(s);
    if !s.contains('.') {
        return Err(Invalid::new(
            format!("`{s}` is not a fully qualified domain name"),
            format!("write the full name including the domain, e.g. {s}.example.test"),
        ));
    }
    if last.chars().all(|c| c.is_ascii_digit()) {
        return Err(Invalid::new(
            format!("`{s}` looks like an IP address, not a domain name"),
            "write a domain name such as platform.example.test".to_string(),
        ));
    }
    Ok(())
}

/// An IP address or a DNS name.
pub fn address(s: &str) -> Result<Address, Invalid> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(Address::Ip(addr));
    }
    // Digits and dots that failed as an IP are a mistyped IP, not a name.
    if s.chars().all(|c| c.is_ascii_digit() || c == '.') || s.contains(':') {
        return ip(s).map(Address::Ip);
    }
    dns_name(s).map_err(|e| Invalid::new(format!("{} (expected an IP address or a DNS name)", e.cause), e.hint))?;
    Ok(Address::Name(s.to_string()))
}

/// An IP address or a fully qualified domain name.
pub fn ip_or_fqdn(s: &str) -> Result<Address, Invalid> {
    match address(s)? {
        Address::Name(n) => fqdn(&n).map(|()| Address::Name(n)),
        ip => Ok(ip),
    }
}

/// A network in CIDR notation whose address is the network's first address
/// (`10.42.0.0/16`, not `10.42.0.1/16`, which Kubernetes would silently truncate).
pub fn cidr(s: &str) -> Result<IpNet, Invalid> {
    let net: IpNet = s.parse().map_err(|_| {
        let hint = match s.split_once('/') {
            None if s.parse::<IpAddr>().is_ok() => format!("add the prefix length, e.g. {s}/16"),
            Some((addr, len)) if addr.parse::<IpAddr>().is_ok() => {
                format!("the prefix length `{len}` must be a number up to 32 (IPv4) or 128 (IPv6)")
            }
            _ => "write a network as address/prefix-length, e.g. 10.42.0.0/16 or fd00:42::/56".to_string(),
        };
        Invalid::new(format!("`{s}` is not a network in CIDR notation"), hint)
    })?;
    if net.addr() != net.network() {
        return Err(Invalid::new(
            format!("`{s}` has host bits set"),
            format!("the network that contains it is written {}", net.trunc()),
        ));
    }
    Ok(net)
}

/// `host:port` with a DNS name, an IPv4 address or a bracketed IPv6 address.
pub fn host_port(s: &str) -> Result<HostPort, Invalid> {
    let example = "write host:port, e.g. registry.example.test:5000 or [2001:db8::5]:5000";
    if s.contains("://") {
        return Err(Invalid::new(
            format!("`{s}` has a URL scheme"),
            format!("drop the scheme and any path: {example}"),
        ));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| Invalid::new(format!("`{s}` is not host:port"), example.to_string()))?;
        let addr = h.parse::<Ipv6Addr>().map_err(|_| Invalid::new(format!("`{h}` is not an IPv6 address"), example))?;
        (Address::Ip(IpAddr::V6(addr)), p)
    } else {
        match s.rsplit_once(':') {
            None => return Err(Invalid::new(format!("`{s}` has no port"), example.to_string())),
            Some((h, _)) if h.contains(':') => {
                return Err(Invalid::new(
                    format!("`{s}` is ambiguous"),
                    format!("put an IPv6 address in brackets: [{h}]:PORT"),
                ))
            }
            Some((h, p)) => (address(h)?, p),
        }
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(Invalid::new(format!("`{port}` is not a port number"), "a port is a number from 1 to 65535")),
    };
    Ok(HostPort { host, port })
}

/// An absolute, normalized path: no `.`/`..` parts, no doubled or trailing `/`.
pub fn abs_path(s: &str) -> Result<PathBuf, Invalid> {
    if s.is_empty() {
        return Err(Invalid::new("is empty", "write an absolute path such as /etc/airlock/file"));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new("contains a control character", "write the path on one line without tabs"));
    }
    let p = Path::new(s);
    if !p.is_absolute() {
        return Err(Invalid::new(
            format!("`{s}` is not an absolute path"),
            format!("write the full path from `/`, e.g. /root/{s}"),
        ));
    }
    // Checked on the text: `Path::components` quietly drops inner `.` and doubled `/`.
    let plain = s == "/" || s[1..].split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if !plain {
        return Err(Invalid::new(
            format!("`{s}` is not a plain path"),
            "write it without `.`, `..`, doubled or trailing `/`",
        ));
    }
    Ok(p.to_path_buf())
}

/// A short name such as a profile or a preflight check: lowercase letters, digits and
/// inner `-`.
pub fn name(s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!("`{s}` is not a name"), "names use a-z, 0-9 and inner `-`, e.g. single-node"))
    }
}

/// The `n`th address of a network (0 is the network address itself), if it is inside.
pub fn nth_address(net: &IpNet, n: u32) -> Option<IpAddr> {
    let addr = match net.network() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).checked_add(n)?)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).checked_add(u128::from(n))?)),
    };
    net.contains(&addr).then_some(addr)
}

/// Whether two networks share any address.
pub fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_their_mistakes() {
        assert!(ip("192.0.2.10").is_ok() && ip("2001:db8::10").is_ok());
        assert!(ip("192.0.2.300").is_err());
        assert!(ip("10.0.0.1/24").unwrap_err().hint.contains("not a network"));
        assert!(ip("010.0.0.1").is_err(), "leading zeros are ambiguous (octal) and refused");
        for bad in ["127.0.0.1", "0.0.0.0", "169.254.1.1", "224.0.0.1", "::1", "fe80::1", "::ffff:192.0.2.1"] {
            assert!(host_ip(bad).is_err(), "{bad}");
        }
        assert!(host_ip("10.0.0.5").is_ok() && host_ip("fd00::5").is_ok());
    }

    #[test]
    fn names_follow_rfc_1123_in_lowercase() {
        for good in ["node-1", "n1.site.example", "1node", "a"] {
            assert!(dns_name(good).is_ok(), "{good}");
        }
        assert!(dns_name("Node-1").unwrap_err().hint.contains("node-1"));
        assert!(dns_name("node_1").unwrap_err().hint.contains("`-`"));
        // Whatever the name, a fix the hint offers is one the check then takes.
        for bad in
            ["Node_1", "NODE 1.Site.", "a..b", "-node-", "web_01.Example.ORG", "x.", "_", "node-1-", &"a".repeat(64)]
        {
            let hint = dns_name(bad).unwrap_err().hint;
            if let Some((_, fixed)) = hint.rsplit_once(", e.g. ") {
                assert!(dns_name(fixed).is_ok(), "{bad}: the hint offers {fixed}, which is refused too");
            }
        }
        assert!(dns_name("Node_1").unwrap_err().hint.ends_with(", e.g. node-1"));
        assert!(dns_name("-node").is_err() && dns_name("a..b").is_err() && dns_name("a.").is_err());
        assert!(dns_name(&"a".repeat(64)).is_err());
        assert!(fqdn("platform").is_err() && fqdn("192.0.2.1").is_err() && fqdn("platform.example.test").is_ok());
        assert!(matches!(address("192.0.2.1"), Ok(Address::Ip(_))));
        assert!(address("192.0.2.300").unwrap_err().cause.contains("not an IP address"));
    }

    #[test]
    fn networks_must_be_written_at_their_first_address() {
        assert_eq!(cidr("10.42.0.0/16").unwrap().to_string(), "10.42.0.0/16");
        assert!(cidr("10.42.0.1/16").unwrap_err().hint.contains("10.42.0.0/16"));
        assert!(cidr("10.42.0.0").unwrap_err().hint.contains("/16"));
        assert!(cidr("10.42.0.0/33").unwrap_err().hint.contains("prefix length"));
        let net = cidr("10.43.0.0/16").unwrap();
        assert_eq!(nth_address(&net, 10).unwrap().to_string(), "10.43.0.10");
        assert_eq!(nth_address(&cidr("fd00:43::/112").unwrap(), 10).unwrap().to_string(), "fd00:43::a");
        assert!(nth_address(&cidr("10.0.0.0/29").unwrap(), 10).is_none());
        assert!(overlap(&cidr("10.0.0.0/8").unwrap(), &net) && !overlap(&cidr("10.42.0.0/16").unwrap(), &net));
    }

    #[test]
    fn host_port_takes_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(host_port("registry.example.test:5000").unwrap().to_string(), "registry.example.test:5000");
        assert_eq!(host_port("[2001:db8::5]:5000").unwrap().to_string(), "[2001:db8::5]:5000");
        assert!(host_port("2001:db8::5:5000").unwrap_err().hint.contains("brackets"));
        assert!(host_port("registry").unwrap_err().cause.contains("no port"));
        assert!(host_port("https://registry:5000").unwrap_err().cause.contains("scheme"));
        assert!(host_port("registry:0").is_err() && host_port("registry:65536").is_err());
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert!(abs_path("/root/cluster-token").is_ok() && abs_path("/").is_ok());
        for bad in ["etc/x", "/etc/../x", "/etc/./x", "/etc//x", "/etc/x/", "", "/etc/x\n"] {
            assert!(abs_path(bad).is_err(), "{bad:?}");
        }
    }
}
