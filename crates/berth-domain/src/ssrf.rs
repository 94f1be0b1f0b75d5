//! SSRF policy for agent URLs (REFERENCE.md §3.4), as pure functions.
//!
//! The platform POSTs to a workspace's `url`, so a URL pointing at cloud metadata, loopback or a
//! private network would let a caller make the server attack its own surroundings. DNS is the
//! caller's job: [`check_agent_url`] either decides from the URL alone or asks the caller to
//! resolve a hostname, and [`check_resolved`] judges the answer.
//!
//! Deliberate change from the reference: `localhost` is loopback, so it is only allowed when
//! loopback is (berth's `--dev` mode), instead of always.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Which address families the operator allows agent URLs to target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    /// The reference's `saasMode()`: RFC-1918 ranges and `fd00::/8` are allowed (agents live on a
    /// private network next to the control plane).
    pub allow_private: bool,
    /// berth's `--dev` mode: `127.0.0.0/8`, `::1` and `localhost` are allowed.
    pub allow_loopback: bool,
}

/// Which policy switch, if any, lifts a blocked range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exempt {
    Never,
    Loopback,
    Private,
}

/// A blocked network: address, prefix length, label, and the switch that lifts it.
#[derive(Debug, Clone, Copy)]
enum Net {
    V4(Ipv4Addr, u8, &'static str, Exempt),
    V6(Ipv6Addr, u8, &'static str, Exempt),
}

const LOOPBACK_V4_LABEL: &str = "loopback address";
const RFC1918_LABEL: &str = "RFC-1918 private address";

/// The blocked ranges in the reference's order; the first match supplies the label.
const BLOCKED: &[Net] = &[
    Net::V4(
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local address (cloud metadata endpoint)",
        Exempt::Never,
    ),
    Net::V4(
        Ipv4Addr::new(127, 0, 0, 0),
        8,
        LOOPBACK_V4_LABEL,
        Exempt::Loopback,
    ),
    Net::V6(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "IPv6 link-local address (cloud metadata analogue)",
        Exempt::Never,
    ),
    Net::V6(
        Ipv6Addr::LOCALHOST,
        128,
        "IPv6 loopback address",
        Exempt::Loopback,
    ),
    Net::V4(
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "TEST-NET-1 documentation range (RFC-5737)",
        Exempt::Never,
    ),
    Net::V4(
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "TEST-NET-2 documentation range (RFC-5737)",
        Exempt::Never,
    ),
    Net::V4(
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "TEST-NET-3 documentation range (RFC-5737)",
        Exempt::Never,
    ),
    Net::V4(
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "carrier-grade NAT address (RFC-6598)",
        Exempt::Never,
    ),
    Net::V4(
        Ipv4Addr::new(224, 0, 0, 0),
        4,
        "IPv4 multicast address",
        Exempt::Never,
    ),
    Net::V6(
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "IPv6 ULA non-routable prefix (fc00::/8)",
        Exempt::Never,
    ),
    Net::V6(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "IPv6 documentation address (RFC-3849 reserved)",
        Exempt::Never,
    ),
    Net::V4(
        Ipv4Addr::new(10, 0, 0, 0),
        8,
        RFC1918_LABEL,
        Exempt::Private,
    ),
    Net::V4(
        Ipv4Addr::new(172, 16, 0, 0),
        12,
        RFC1918_LABEL,
        Exempt::Private,
    ),
    Net::V4(
        Ipv4Addr::new(192, 168, 0, 0),
        16,
        RFC1918_LABEL,
        Exempt::Private,
    ),
    Net::V6(
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "IPv6 ULA address (RFC-4193 private)",
        Exempt::Private,
    ),
];

fn in_prefix_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_prefix_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// Returns the label of the first blocked range containing `ip`, or `None` if the address may be
/// targeted under `policy`. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as IPv4.
pub fn blocked_label(policy: &SsrfPolicy, ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    BLOCKED.iter().find_map(|net| {
        let (hit, label, exempt) = match (*net, ip) {
            (Net::V4(n, len, label, exempt), IpAddr::V4(v4)) => {
                (in_prefix_v4(v4, n, len), label, exempt)
            }
            (Net::V6(n, len, label, exempt), IpAddr::V6(v6)) => {
                (in_prefix_v6(v6, n, len), label, exempt)
            }
            _ => return None,
        };
        let lifted = match exempt {
            Exempt::Never => false,
            Exempt::Loopback => policy.allow_loopback,
            Exempt::Private => policy.allow_private,
        };
        (hit && !lifted).then_some(label)
    })
}

/// What [`check_agent_url`] concluded from the URL alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlTarget {
    /// The URL targets an allowed IP literal (or allowed `localhost`); no lookup is needed.
    Safe,
    /// The host is a DNS name: resolve it (all A/AAAA records) and pass the answer to
    /// [`check_resolved`].
    Resolve {
        /// The hostname, without port or brackets, as written in the URL.
        host: String,
    },
}

/// Why an agent URL was refused. `Display` is the bare reason; the HTTP layer adds its own prefix
/// (`unsafe workspace URL: `) where the reference does.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SsrfError {
    /// The URL is empty.
    #[error("url is required")]
    Required,
    /// The URL does not parse.
    #[error("url is not valid: {0}")]
    Invalid(String),
    /// The scheme is not `http` or `https` (shown lower-cased).
    #[error("url scheme must be http or https, got \"{0}\"")]
    Scheme(String),
    /// The host is an IP literal (or `localhost`) in a blocked range.
    #[error("url targets a blocked address: {0}")]
    Blocked(&'static str),
    /// The hostname could not be resolved.
    #[error("hostname \"{host}\" cannot be resolved (DNS error): {detail}")]
    Dns {
        /// The hostname that was looked up.
        host: String,
        /// The resolver's explanation.
        detail: String,
    },
    /// One of the hostname's addresses is in a blocked range.
    #[error(
        "hostname \"{host}\" resolves to forbidden address: url targets a blocked address: {label}"
    )]
    Forbidden {
        /// The hostname that was looked up.
        host: String,
        /// The label of the blocked range.
        label: &'static str,
    },
}

impl SsrfError {
    /// A DNS failure for `host`, with the resolver's `detail`.
    pub fn dns(host: &str, detail: &str) -> Self {
        Self::Dns {
            host: host.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

/// The pieces of an `http(s)` URL that the policy needs.
struct ParsedUrl<'a> {
    scheme: String,
    /// The host as written: brackets removed for IPv6 literals, no port.
    host: &'a str,
    /// Whether the host was written in `[...]`.
    bracketed: bool,
}

fn invalid(reason: &str) -> SsrfError {
    SsrfError::Invalid(reason.to_owned())
}

/// Splits `scheme://[userinfo@]host[:port][/path][?query][#fragment]` by hand (no URL crate is
/// available to the domain layer). Only syntax is judged here; host rules come later.
fn parse_url(raw: &str) -> Result<ParsedUrl<'_>, SsrfError> {
    if raw.chars().any(|c| c.is_ascii_control()) {
        return Err(invalid("invalid control character in URL"));
    }
    // Like Go's url.Parse: a scheme is a letter followed by letters, digits, `+`, `-`, `.`,
    // ending at the first `:`; otherwise there is no scheme.
    let (scheme, rest) = match raw.find(':') {
        Some(0) => return Err(invalid("missing protocol scheme")),
        Some(i) => {
            let candidate = &raw[..i];
            let well_formed = candidate.starts_with(|c: char| c.is_ascii_alphabetic())
                && candidate
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if well_formed {
                (candidate.to_ascii_lowercase(), &raw[i + 1..])
            } else {
                (String::new(), raw)
            }
        }
        None => (String::new(), raw),
    };
    let Some(after_slashes) = rest.strip_prefix("//") else {
        return Ok(ParsedUrl {
            scheme,
            host: "",
            bracketed: false,
        });
    };
    let authority_end = after_slashes
        .find(['/', '?', '#'])
        .unwrap_or(after_slashes.len());
    let authority = &after_slashes[..authority_end];
    let host_port = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);

    let (host, port, bracketed) = if let Some(inner) = host_port.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err(invalid("missing ']' in host"));
        };
        let after = &inner[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => "",
            None => return Err(invalid("unexpected characters after ']' in host")),
        };
        (&inner[..close], port, true)
    } else {
        match host_port.rfind(':') {
            Some(colon) => (&host_port[..colon], &host_port[colon + 1..], false),
            None => (host_port, "", false),
        }
    };
    let port_ok = port.is_empty()
        || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(SsrfError::Invalid(format!(
            "invalid port \"{port}\" after host"
        )));
    }
    Ok(ParsedUrl {
        scheme,
        host,
        bracketed,
    })
}

/// A plausible DNS name: letters, digits, `-`, `_` and dots, non-empty labels of at most 63
/// bytes, at most 253 bytes overall (a single trailing dot allowed).
fn is_valid_hostname(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

fn is_localhost(host: &str) -> bool {
    host.strip_suffix('.')
        .unwrap_or(host)
        .eq_ignore_ascii_case("localhost")
}

/// Validates an agent URL (§3.4 steps 1–5) without touching the network.
///
/// Checks, in order: non-empty; parses; scheme `http`/`https`; host present and well-formed; an
/// IP literal is judged directly; `localhost` counts as loopback; any other name must be resolved
/// by the caller ([`UrlTarget::Resolve`]).
pub fn check_agent_url(policy: &SsrfPolicy, raw: &str) -> Result<UrlTarget, SsrfError> {
    if raw.is_empty() {
        return Err(SsrfError::Required);
    }
    let url = parse_url(raw)?;
    if url.scheme != "http" && url.scheme != "https" {
        return Err(SsrfError::Scheme(url.scheme));
    }
    if url.host.is_empty() {
        return Err(invalid("missing host"));
    }
    let literal = if url.bracketed {
        // Brackets are for IPv6 (Go also accepts a bracketed IPv4 literal); zones are refused.
        Some(
            url.host
                .parse::<IpAddr>()
                .map_err(|_| invalid("invalid host"))?,
        )
    } else {
        url.host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    };
    if let Some(ip) = literal {
        return match blocked_label(policy, ip) {
            Some(label) => Err(SsrfError::Blocked(label)),
            None => Ok(UrlTarget::Safe),
        };
    }
    if !is_valid_hostname(url.host) {
        return Err(invalid("invalid host"));
    }
    if is_localhost(url.host) {
        return if policy.allow_loopback {
            Ok(UrlTarget::Safe)
        } else {
            Err(SsrfError::Blocked(LOOPBACK_V4_LABEL))
        };
    }
    Ok(UrlTarget::Resolve {
        host: url.host.to_owned(),
    })
}

/// Judges the addresses a hostname resolved to (§3.4 step 6): an empty answer is a DNS failure,
/// and any blocked address refuses the whole name (the first blocked one, in the given order,
/// supplies the label).
pub fn check_resolved(policy: &SsrfPolicy, host: &str, ips: &[IpAddr]) -> Result<(), SsrfError> {
    if ips.is_empty() {
        return Err(SsrfError::dns(host, "no addresses"));
    }
    match ips.iter().find_map(|ip| blocked_label(policy, *ip)) {
        Some(label) => Err(SsrfError::Forbidden {
            host: host.to_owned(),
            label,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: SsrfPolicy = SsrfPolicy {
        allow_private: false,
        allow_loopback: false,
    };
    const SAAS: SsrfPolicy = SsrfPolicy {
        allow_private: true,
        allow_loopback: false,
    };
    const DEV: SsrfPolicy = SsrfPolicy {
        allow_private: false,
        allow_loopback: true,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn label(policy: &SsrfPolicy, s: &str) -> Option<&'static str> {
        let addr: IpAddr = s.parse().expect("test address parses");
        blocked_label(policy, addr)
    }

    fn url_err(policy: &SsrfPolicy, raw: &str) -> String {
        match check_agent_url(policy, raw) {
            Ok(target) => format!("ok: {target:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn labels_for_every_range() {
        let cases = [
            (
                "169.254.169.254",
                "link-local address (cloud metadata endpoint)",
            ),
            ("127.0.0.1", "loopback address"),
            ("127.255.255.254", "loopback address"),
            (
                "fe80::1",
                "IPv6 link-local address (cloud metadata analogue)",
            ),
            (
                "febf::1",
                "IPv6 link-local address (cloud metadata analogue)",
            ),
            ("::1", "IPv6 loopback address"),
            ("192.0.2.10", "TEST-NET-1 documentation range (RFC-5737)"),
            ("198.51.100.1", "TEST-NET-2 documentation range (RFC-5737)"),
            ("203.0.113.255", "TEST-NET-3 documentation range (RFC-5737)"),
            ("100.64.0.1", "carrier-grade NAT address (RFC-6598)"),
            ("100.127.255.255", "carrier-grade NAT address (RFC-6598)"),
            ("224.0.0.1", "IPv4 multicast address"),
            ("239.255.255.255", "IPv4 multicast address"),
            ("fc00::1", "IPv6 ULA non-routable prefix (fc00::/8)"),
            (
                "2001:db8::1",
                "IPv6 documentation address (RFC-3849 reserved)",
            ),
            ("10.1.2.3", "RFC-1918 private address"),
            ("172.16.0.1", "RFC-1918 private address"),
            ("172.31.255.255", "RFC-1918 private address"),
            ("192.168.1.1", "RFC-1918 private address"),
            ("fd12:3456::1", "IPv6 ULA address (RFC-4193 private)"),
        ];
        for (addr, want) in cases {
            assert_eq!(label(&STRICT, addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn unblocked_addresses() {
        for addr in [
            "8.8.8.8",
            "0.0.0.0",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700::1111",
            "fec0::1",
            "::",
            "2001:db9::1",
        ] {
            assert_eq!(label(&STRICT, addr), None, "{addr}");
        }
    }

    #[test]
    fn policy_switches() {
        assert_eq!(label(&SAAS, "10.0.0.1"), None);
        assert_eq!(label(&SAAS, "192.168.0.1"), None);
        assert_eq!(label(&SAAS, "fd00::1"), None);
        // SaaS mode still blocks the always-blocked ranges, fc00::/8 included.
        assert_eq!(label(&SAAS, "127.0.0.1"), Some("loopback address"));
        assert_eq!(
            label(&SAAS, "fc00::1"),
            Some("IPv6 ULA non-routable prefix (fc00::/8)")
        );
        assert_eq!(label(&DEV, "127.0.0.1"), None);
        assert_eq!(label(&DEV, "::1"), None);
        assert_eq!(label(&DEV, "10.0.0.1"), Some("RFC-1918 private address"));
        assert_eq!(
            label(&DEV, "169.254.169.254"),
            Some("link-local address (cloud metadata endpoint)")
        );
    }

    #[test]
    fn ipv4_mapped_is_checked_as_ipv4() {
        assert_eq!(
            label(&STRICT, "::ffff:169.254.169.254"),
            Some("link-local address (cloud metadata endpoint)")
        );
        assert_eq!(label(&STRICT, "::ffff:127.0.0.1"), Some("loopback address"));
        assert_eq!(label(&DEV, "::ffff:127.0.0.1"), None);
        assert_eq!(label(&STRICT, "::ffff:8.8.8.8"), None);
    }

    #[test]
    fn url_basic_errors() {
        assert_eq!(url_err(&STRICT, ""), "url is required");
        assert_eq!(
            url_err(&STRICT, "ftp://example.com/x"),
            "url scheme must be http or https, got \"ftp\""
        );
        assert_eq!(
            url_err(&STRICT, "example.com/path"),
            "url scheme must be http or https, got \"\""
        );
        assert_eq!(
            url_err(&STRICT, "://example.com"),
            "url is not valid: missing protocol scheme"
        );
        assert_eq!(
            url_err(&STRICT, "http://exa\nmple.com"),
            "url is not valid: invalid control character in URL"
        );
        assert_eq!(
            url_err(&STRICT, "http://"),
            "url is not valid: missing host"
        );
        assert_eq!(
            url_err(&STRICT, "http:///path"),
            "url is not valid: missing host"
        );
        assert_eq!(
            url_err(&STRICT, "http:example.com"),
            "url is not valid: missing host"
        );
        assert_eq!(
            url_err(&STRICT, "http://user@:80/"),
            "url is not valid: missing host"
        );
        assert_eq!(
            url_err(&STRICT, "http://example.com:99999/"),
            "url is not valid: invalid port \"99999\" after host"
        );
        assert_eq!(
            url_err(&STRICT, "http://example.com:8o/"),
            "url is not valid: invalid port \"8o\" after host"
        );
        assert_eq!(
            url_err(&STRICT, "http://[::1/"),
            "url is not valid: missing ']' in host"
        );
        assert_eq!(
            url_err(&STRICT, "http://exa mple.com/"),
            "url is not valid: invalid host"
        );
        assert_eq!(
            url_err(&STRICT, "http://a..b/"),
            "url is not valid: invalid host"
        );
        assert_eq!(
            url_err(&STRICT, "http://%31%32%37.0.0.1/"),
            "url is not valid: invalid host"
        );
        assert_eq!(
            url_err(&STRICT, "http://[fe80::1%25eth0]/"),
            "url is not valid: invalid host"
        );
        assert_eq!(
            url_err(&STRICT, "http://[nothost]/"),
            "url is not valid: invalid host"
        );
    }

    #[test]
    fn url_scheme_is_case_insensitive() {
        assert_eq!(
            check_agent_url(&STRICT, "HTTPS://agent.example.com"),
            Ok(UrlTarget::Resolve {
                host: "agent.example.com".to_owned()
            })
        );
        assert_eq!(
            url_err(&STRICT, "FTP://x"),
            "url scheme must be http or https, got \"ftp\""
        );
    }

    #[test]
    fn url_ip_literals() {
        assert_eq!(
            url_err(&STRICT, "http://169.254.169.254/latest/meta-data"),
            "url targets a blocked address: link-local address (cloud metadata endpoint)"
        );
        assert_eq!(
            url_err(&STRICT, "http://[::1]:8000/"),
            "url targets a blocked address: IPv6 loopback address"
        );
        assert_eq!(
            url_err(&STRICT, "http://[::ffff:10.0.0.1]/"),
            "url targets a blocked address: RFC-1918 private address"
        );
        assert_eq!(
            url_err(&STRICT, "http://user:pw@127.0.0.1:9000/a?b#c"),
            "url targets a blocked address: loopback address"
        );
        assert_eq!(
            check_agent_url(&STRICT, "https://8.8.8.8:443/a2a"),
            Ok(UrlTarget::Safe)
        );
        assert_eq!(
            check_agent_url(&STRICT, "http://[2606:4700::1111]/"),
            Ok(UrlTarget::Safe)
        );
        assert_eq!(
            check_agent_url(&DEV, "http://127.0.0.1:8000"),
            Ok(UrlTarget::Safe)
        );
        assert_eq!(
            check_agent_url(&SAAS, "http://10.0.0.5:8000"),
            Ok(UrlTarget::Safe)
        );
    }

    #[test]
    fn url_localhost_is_loopback() {
        for raw in [
            "http://localhost:8000/",
            "http://LocalHost",
            "https://localhost./x",
        ] {
            assert_eq!(
                url_err(&STRICT, raw),
                "url targets a blocked address: loopback address",
                "{raw}"
            );
            assert_eq!(check_agent_url(&DEV, raw), Ok(UrlTarget::Safe), "{raw}");
        }
        assert_eq!(
            url_err(&SAAS, "http://localhost"),
            "url targets a blocked address: loopback address"
        );
    }

    #[test]
    fn url_hostnames_need_resolution() {
        assert_eq!(
            check_agent_url(&STRICT, "http://user@Agent-1.example.com:8080/path?q=1"),
            Ok(UrlTarget::Resolve {
                host: "Agent-1.example.com".to_owned()
            })
        );
        assert_eq!(
            check_agent_url(&STRICT, "http://my_host.internal."),
            Ok(UrlTarget::Resolve {
                host: "my_host.internal.".to_owned()
            })
        );
        // Not an IPv4 literal by Rust's strict parser: left to the resolver, whose answer is
        // then checked.
        assert_eq!(
            check_agent_url(&STRICT, "http://127.1/"),
            Ok(UrlTarget::Resolve {
                host: "127.1".to_owned()
            })
        );
    }

    #[test]
    fn resolved_addresses() {
        assert_eq!(
            check_resolved(&STRICT, "a.example", &[ip("8.8.8.8")]),
            Ok(())
        );
        assert_eq!(
            check_resolved(&STRICT, "a.example", &[]).map_err(|e| e.to_string()),
            Err("hostname \"a.example\" cannot be resolved (DNS error): no addresses".to_owned())
        );
        assert_eq!(
            check_resolved(&STRICT, "a.example", &[ip("8.8.8.8"), ip("10.0.0.1")])
                .map_err(|e| e.to_string()),
            Err("hostname \"a.example\" resolves to forbidden address: url targets a blocked address: RFC-1918 private address".to_owned())
        );
        assert_eq!(
            check_resolved(&SAAS, "a.example", &[ip("8.8.8.8"), ip("10.0.0.1")]),
            Ok(())
        );
        assert_eq!(
            check_resolved(&STRICT, "a.example", &[ip("::1"), ip("127.0.0.1")]),
            Err(SsrfError::Forbidden {
                host: "a.example".to_owned(),
                label: "IPv6 loopback address"
            })
        );
        assert_eq!(
            SsrfError::dns("h.example", "no such host").to_string(),
            "hostname \"h.example\" cannot be resolved (DNS error): no such host"
        );
    }
}
