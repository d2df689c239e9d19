//! Which hosts a plugin may send HTTP requests to, in Spin's `allowed_outbound_hosts` syntax:
//! `scheme://host[:port]`, where the scheme is `http`, `https` or `*`, the host a name, `*.` and
//! a domain (any name below it), `*`, or an IP address (`[...]` for IPv6), and the port a
//! number or `*` (without one, the scheme's default port).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One granted destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllowedHost {
    text: String,
    /// `None`: any scheme.
    scheme: Option<String>,
    host: HostPattern,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Name(String),
    /// Names below this domain (given as `*.domain`), stored with its leading dot.
    Below(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    Default,
    Any,
    Exactly(u16),
}

/// Why a grant cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not an outbound host: {why}; expected scheme://host[:port], e.g. \"https://api.example.com\", \"https://*.example.com\" or \"http://127.0.0.1:8080\""
)]
pub struct BadHost {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// The default port of `scheme`.
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl TryFrom<String> for AllowedHost {
    type Error = BadHost;

    fn try_from(text: String) -> Result<Self, BadHost> {
        let bad = |why: &str| BadHost {
            text: text.clone(),
            why: why.to_owned(),
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme {
            "*" => None,
            "http" | "https" => Some(scheme.to_owned()),
            _ => return Err(bad("the scheme must be http, https or *")),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("it must name a host, without a path, query or user"));
        }
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (ip, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed ["))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| bad("not an IPv6 address"))?;
            (HostPattern::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            let host = host.to_ascii_lowercase();
            let pattern = if host == "*" {
                HostPattern::Any
            } else if let Ok(ip) = host.parse::<IpAddr>() {
                HostPattern::Ip(ip)
            } else if let Some(domain) = host.strip_prefix("*.") {
                if !valid_name(domain) {
                    return Err(bad("not a domain after *."));
                }
                HostPattern::Below(format!(".{domain}"))
            } else if valid_name(&host) {
                HostPattern::Name(host)
            } else {
                return Err(bad("not a host name or IP address"));
            };
            (pattern, port)
        };
        let port = match port {
            // With `*://`, each scheme's own default port.
            None => PortRule::Default,
            Some("*") => PortRule::Any,
            Some(n) => PortRule::Exactly(
                n.parse()
                    .ok()
                    .filter(|&n| n != 0)
                    .ok_or_else(|| bad("the port must be 1 to 65535 or *"))?,
            ),
        };
        Ok(AllowedHost {
            text,
            scheme,
            host,
            port,
        })
    }
}

impl From<AllowedHost> for String {
    fn from(host: AllowedHost) -> String {
        host.text
    }
}

impl std::str::FromStr for AllowedHost {
    type Err = BadHost;

    fn from_str(text: &str) -> Result<Self, BadHost> {
        AllowedHost::try_from(text.to_owned())
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl AllowedHost {
    /// Whether a request to `scheme://host:port` is granted by this. `host` is lower-case, an
    /// IPv6 address without brackets.
    pub(crate) fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::Exactly(p) => p == port,
            PortRule::Default => default_port(scheme) == Some(port),
        };
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Name(name) => name == host,
            HostPattern::Below(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        };
        scheme_ok && port_ok && host_ok
    }

    /// Whether this grant names one host (not `*` or `*.domain`): requests to it may be signed
    /// with the plugin's webhook secret.
    pub(crate) fn is_exact(&self) -> bool {
        matches!(self.host, HostPattern::Name(_) | HostPattern::Ip(_))
    }

    /// Whether this grant names `ip` itself, so that it may be reached although it is not a
    /// public address: the address literally, or `localhost` for a loopback address.
    pub(crate) fn names(&self, ip: IpAddr) -> bool {
        match &self.host {
            HostPattern::Ip(granted) => *granted == ip,
            HostPattern::Name(name) => name == "localhost" && ip.is_loopback(),
            HostPattern::Any | HostPattern::Below(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> AllowedHost {
        text.parse().unwrap()
    }

    #[test]
    fn spin_syntax() {
        assert!(host("https://api.example.com").allows("https", "api.example.com", 443));
        assert!(!host("https://api.example.com").allows("http", "api.example.com", 80));
        assert!(!host("https://api.example.com").allows("https", "api.example.com", 8443));
        assert!(host("https://*.example.com").allows("https", "a.b.example.com", 443));
        assert!(!host("https://*.example.com").allows("https", "example.com", 443));
        assert!(!host("https://*.example.com").allows("https", "badexample.com", 443));
        assert!(host("*://example.com:*").allows("http", "example.com", 9999));
        assert!(host("*://example.com").allows("http", "example.com", 80));
        assert!(!host("*://example.com").allows("http", "example.com", 443));
        assert!(host("http://127.0.0.1:8080").allows("http", "127.0.0.1", 8080));
        assert!(host("http://[::1]:8080").allows("http", "::1", 8080));
        assert!(host("http://[::1]:8080").names("::1".parse().unwrap()));
        assert!(host("http://localhost:8080").names("127.0.0.1".parse().unwrap()));
        assert!(!host("http://*:8080").names("127.0.0.1".parse().unwrap()));
        assert!(!host("http://example.com").names("10.0.0.1".parse().unwrap()));
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://user@example.com",
            "https://exa mple.com",
            "https://example.com:0",
            "https://example.com:99999",
            "https://[::1",
            "https://*.",
        ] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad}");
        }
    }
}
