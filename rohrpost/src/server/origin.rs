//! Which pages may open a socket: the `Origin` check against cross-site WebSocket
//! hijacking.
//!
//! A browser sends its cookies with a WebSocket handshake to any site, whichever page opens
//! it, and tells the page's origin in `Origin`. By default only pages of the server's own
//! origin pass: the `Origin`'s host and port must be the request's `Host` (an absent port is
//! the default of the origin's scheme; the request's own scheme cannot be known behind a
//! TLS-terminating proxy, so the port stands for it). Handshakes without `Origin` come from
//! programs, not browsers, and pass.

use crate::handshake::Handshake;

/// The header a proxy that rewrites `Host` puts the public host in
/// ([`ServerBuilder::forwarded_host`](super::ServerBuilder::forwarded_host)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHost {
    /// `X-Forwarded-Host: app.example` (its first value).
    XForwardedHost,
    /// `Forwarded: host=app.example;proto=https` (RFC 7239; its first element).
    Forwarded,
}

/// What the origin check allows.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    /// Any origin at all (`allow_any_origin`).
    pub(crate) any: bool,
    /// Origins allowed besides the server's own.
    pub(crate) allowed: Vec<OriginPattern>,
    /// Where the public host is, behind a proxy that rewrites `Host`.
    pub(crate) forwarded_host: Option<ForwardedHost>,
}

impl OriginPolicy {
    /// Whether a handshake passes: no `Origin`, the server's own origin, or an allowed one.
    pub(crate) fn allows(&self, handshake: &Handshake) -> bool {
        if self.any {
            return true;
        }
        let Some(origin) = handshake.origin() else {
            return true;
        };
        let Some(origin) = Origin::parse(origin) else {
            return false; // "null" (a sandboxed page, a file) or garbage
        };
        if self.allowed.iter().any(|pattern| pattern.matches(&origin)) {
            return true;
        }
        let host = match self.forwarded_host {
            Some(ForwardedHost::XForwardedHost) => handshake
                .header("x-forwarded-host")
                .and_then(|value| value.split(',').next()),
            Some(ForwardedHost::Forwarded) => {
                handshake.header("forwarded").and_then(forwarded_host)
            }
            None => handshake.header("host"),
        };
        host.and_then(|host| HostPort::parse(host.trim(), origin.default_port()))
            .is_some_and(|host| host == origin.host_port)
    }
}

/// The `host=` of the first element of a `Forwarded` header.
fn forwarded_host(value: &str) -> Option<&str> {
    let first = value.split(',').next()?;
    first.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.eq_ignore_ascii_case("host")
            .then(|| value.trim_matches('"'))
    })
}

/// A host (lower-cased) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// `host`, `host:port`, `[v6]` or `[v6]:port`; an absent port is `default_port`.
    fn parse(text: &str, default_port: u16) -> Option<Self> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (format!("[{}]", host.to_ascii_lowercase()), port)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host.to_ascii_lowercase(), port.parse().ok()?),
                None => (text.to_ascii_lowercase(), default_port),
            }
        };
        (!host.is_empty()).then_some(Self { host, port })
    }
}

/// A browser's `Origin`: `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host_port: HostPort,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = default_port(&scheme)?;
        Some(Self {
            host_port: HostPort::parse(rest.trim_end_matches('/'), default_port)?,
            scheme,
        })
    }

    fn default_port(&self) -> u16 {
        default_port(&self.scheme).unwrap_or(80)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// An allowed origin: exact (`https://app.example`, `http://localhost:3000`) or every
/// subdomain of a domain (`https://*.example.com`: `a.example.com`, `a.b.example.com`, not
/// `example.com` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginPattern {
    scheme: String,
    /// The host, or for a wildcard the domain after `*.`.
    host: String,
    port: u16,
    subdomains: bool,
}

impl OriginPattern {
    /// Reads a pattern; `None` when it is not `scheme://host[:port]` or
    /// `scheme://*.domain[:port]` with an http(s) or ws(s) scheme.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let (rest, subdomains) = match rest.strip_prefix("*.") {
            Some(domain) => (domain, true),
            None => (rest, false),
        };
        let origin = Origin::parse(&format!("{scheme}://{rest}"))?;
        Some(Self {
            scheme: origin.scheme,
            host: origin.host_port.host,
            port: origin.host_port.port,
            subdomains,
        })
    }

    fn matches(&self, origin: &Origin) -> bool {
        if origin.scheme != self.scheme || origin.host_port.port != self.port {
            return false;
        }
        let host = &origin.host_port.host;
        if self.subdomains {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host[..host.len() - self.host.len()].ends_with('.')
        } else {
            *host == self.host
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, Uri};

    fn handshake(headers: &[(&'static str, &str)]) -> Handshake {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        Handshake::for_tests(Uri::from_static("/rohrpost/"), map)
    }

    fn policy(allowed: &[&str]) -> OriginPolicy {
        OriginPolicy {
            allowed: allowed
                .iter()
                .map(|p| OriginPattern::parse(p).unwrap())
                .collect(),
            ..OriginPolicy::default()
        }
    }

    #[test]
    fn the_servers_own_origin_passes_and_others_do_not() {
        let same = policy(&[]);
        let host = ("host", "app.example");
        assert!(same.allows(&handshake(&[host, ("origin", "https://app.example")])));
        assert!(same.allows(&handshake(&[host, ("origin", "http://APP.example")])));
        assert!(!same.allows(&handshake(&[host, ("origin", "https://evil.example")])));
        assert!(!same.allows(&handshake(&[host, ("origin", "https://app.example:8443")])));
        assert!(!same.allows(&handshake(&[host, ("origin", "null")])));
        assert!(same.allows(&handshake(&[host])), "no Origin: not a browser");
        let with_port = ("host", "127.0.0.1:8000");
        assert!(same.allows(&handshake(&[
            with_port,
            ("origin", "http://127.0.0.1:8000")
        ])));
        assert!(!same.allows(&handshake(&[
            with_port,
            ("origin", "http://127.0.0.1:8001")
        ])));
        let v6 = ("host", "[::1]:8000");
        assert!(same.allows(&handshake(&[v6, ("origin", "http://[::1]:8000")])));
    }

    #[test]
    fn listed_origins_and_subdomain_wildcards_pass() {
        let listed = policy(&[
            "https://app.example",
            "https://*.example.com",
            "http://localhost:3000",
        ]);
        let host = ("host", "api.internal");
        for origin in [
            "https://app.example",
            "https://a.example.com",
            "https://a.b.example.com",
            "http://localhost:3000",
        ] {
            assert!(
                listed.allows(&handshake(&[host, ("origin", origin)])),
                "{origin}"
            );
        }
        for origin in [
            "https://example.com",
            "https://badexample.com",
            "http://a.example.com",
            "http://localhost:3001",
        ] {
            assert!(
                !listed.allows(&handshake(&[host, ("origin", origin)])),
                "{origin}"
            );
        }
        assert_eq!(OriginPattern::parse("app.example"), None);
        assert_eq!(OriginPattern::parse("ftp://app.example"), None);
    }

    #[test]
    fn the_public_host_comes_from_the_forwarded_header_only_when_asked() {
        let origin = ("origin", "https://public.example");
        let behind = [
            ("host", "10.0.0.5:8000"),
            origin,
            ("x-forwarded-host", "public.example"),
        ];
        assert!(!policy(&[]).allows(&handshake(&behind)));
        let trusting = OriginPolicy {
            forwarded_host: Some(ForwardedHost::XForwardedHost),
            ..OriginPolicy::default()
        };
        assert!(trusting.allows(&handshake(&behind)));
        let forwarded = [
            ("host", "10.0.0.5:8000"),
            origin,
            (
                "forwarded",
                "for=192.0.2.60;proto=https;host=\"public.example\", for=10.0.0.1",
            ),
        ];
        let rfc = OriginPolicy {
            forwarded_host: Some(ForwardedHost::Forwarded),
            ..OriginPolicy::default()
        };
        assert!(rfc.allows(&handshake(&forwarded)));
    }
}
