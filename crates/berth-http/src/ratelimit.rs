//! The request rate limiter (REFERENCE-2.md §5), fixing REFERENCE.md §12 #78 and REFERENCE-2.md
//! §9.5 #50.
//!
//! A fixed one-minute window of `limit` requests per key; every response that reaches the
//! limiter carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
//! (seconds until the key's window ends); an exhausted key is answered **429**
//! `{"error":"rate limit exceeded","retry_after":<s>}` with `Retry-After: <s>`.
//!
//! The key:
//! - the client address: the TCP peer, or — only when the peer is one of `--trusted-proxies` —
//!   the right-most `X-Forwarded-For` hop that is not a trusted proxy. IPv6 clients are keyed by
//!   their /64 (one host can hold a whole /64). No client-supplied header (`X-Molecule-Org-Id`,
//!   …) picks the bucket.
//! - a request carrying `Authorization: Bearer` is counted against that credential's own
//!   bucket instead, so thousands of agents heartbeating from behind one NAT do not share one
//!   address's budget. So that made-up bearers cannot buy fresh buckets, every 401 answered to
//!   a bearer request is also counted in the client address's *failure* bucket (same limit),
//!   and bearer requests from an address whose failure bucket is exhausted are refused.
//!   Anonymous traffic from the address does not touch that bucket, so it cannot lock the
//!   address's agents out.
//!
//! Memory is bounded: the buckets live in [`SHARDS`] mutex-guarded maps, each pruned of ended
//! windows at most once a window; a shard already holding [`SHARD_CAP`] live buckets counts new
//! keys in one shared overflow bucket.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Window length, seconds.
const WINDOW_SECS: u64 = 60;
/// Number of independently locked bucket maps.
pub const SHARDS: usize = 64;
/// Live buckets one shard holds before new keys share its overflow bucket.
pub const SHARD_CAP: usize = 8192;

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The limiter's settings (`--rate-limit`, `--trusted-proxies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per key per minute (at least 1; the binary maps 0 to "no limiter").
    pub per_minute: u32,
}

/// Peers whose `X-Forwarded-For` is believed, as networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// The list.
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client address of a request from `peer`: `peer` itself unless it is trusted, else
    /// the right-most `X-Forwarded-For` hop that is not trusted (the left-most hop when all
    /// are; the last trusted hop when a hop does not parse).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` hop: an address, optionally with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Parses one `--trusted-proxies` entry: a network (`10.0.0.0/8`) or a single address.
pub fn parse_trusted_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("`{s}` is neither an IP address nor a CIDR network"))
}

/// A bucket key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// An IPv4 address, or an IPv6 /64 (as the address's top 64 bits, tagged).
    Addr(u128),
    /// A bearer credential, by its keyed hash (the credential itself is never stored).
    Bearer(u64),
    /// Failed bearer authentications from an address (as in `Addr`).
    Failures(u128),
    /// New keys of a full shard.
    Overflow,
}

fn addr_key(ip: IpAddr) -> Key {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Key::Addr(u128::from(u32::from(v4))),
        // The tag bit keeps an IPv6 /64 from colliding with an IPv4 address.
        IpAddr::V6(v6) => Key::Addr((u128::from(v6) & !u128::from(u64::MAX)) | 1),
    }
}

/// One key's window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Seconds since the limiter's epoch when the window began.
    start: u64,
    /// Requests counted in it.
    count: u32,
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<Key, Window>,
    /// When ended windows were last dropped (seconds since the epoch).
    pruned_at: u64,
}

/// What counting one request decided.
#[derive(Debug, Clone, Copy)]
struct Decision {
    allowed: bool,
    remaining: u32,
    reset: u64,
}

/// The shared limiter state of one router.
pub(crate) struct Limiter {
    limit: u32,
    trusted: TrustedProxies,
    epoch: Instant,
    hasher: std::hash::RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Limiter {
    pub(crate) fn new(limit: &RateLimit, trusted: TrustedProxies) -> Self {
        Self {
            limit: limit.per_minute.max(1),
            trusted,
            epoch: Instant::now(),
            hasher: std::hash::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Counts one request against `key` (when `charge`), or only looks at its window.
    fn count(&self, key: Key, charge: bool) -> Decision {
        let now = self.now();
        let idx = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let mut shard = self.shards[idx]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_sub(shard.pruned_at) >= WINDOW_SECS {
            shard
                .buckets
                .retain(|_, w| now.saturating_sub(w.start) < WINDOW_SECS);
            shard.pruned_at = now;
        }
        let key = if shard.buckets.len() >= SHARD_CAP && !shard.buckets.contains_key(&key) {
            Key::Overflow
        } else {
            key
        };
        let fresh = Window {
            start: now,
            count: 0,
        };
        if !charge {
            let w = shard.buckets.get(&key).copied().unwrap_or(fresh);
            return self.decide(w, now, w.count < self.limit || w.start + WINDOW_SECS <= now);
        }
        let w = shard.buckets.entry(key).or_insert(fresh);
        if now.saturating_sub(w.start) >= WINDOW_SECS {
            *w = fresh;
        }
        let allowed = w.count < self.limit;
        if allowed {
            w.count += 1;
        }
        let w = *w;
        self.decide(w, now, allowed)
    }

    fn decide(&self, w: Window, now: u64, allowed: bool) -> Decision {
        let ended = now.saturating_sub(w.start) >= WINDOW_SECS;
        Decision {
            allowed,
            remaining: if ended {
                self.limit
            } else {
                self.limit.saturating_sub(w.count)
            },
            reset: if ended {
                WINDOW_SECS
            } else {
                (w.start + WINDOW_SECS).saturating_sub(now).max(1)
            },
        }
    }
}

/// The bearer credential of a request, if any (scheme matched case-insensitively).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(AUTHORIZATION)?.as_bytes();
    let scheme = v.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| v[7..].trim_ascii())
        .filter(|t| !t.is_empty())
}

fn set_headers(limit: u32, d: Decision, headers: &mut HeaderMap) {
    headers.insert(LIMIT, HeaderValue::from(limit));
    headers.insert(REMAINING, HeaderValue::from(d.remaining));
    headers.insert(RESET, HeaderValue::from(d.reset));
}

fn too_many(limit: u32, d: Decision) -> Response {
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(serde_json::json!({"error": "rate limit exceeded", "retry_after": d.reset})),
    )
        .into_response();
    set_headers(limit, d, resp.headers_mut());
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(d.reset));
    resp
}

/// Middleware: counts the request, answers 429 when its bucket is exhausted.
pub(crate) async fn limit(
    State(limiter): State<Arc<Limiter>>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let addr = addr_key(limiter.trusted.client_ip(peer, req.headers()));
    let credential = bearer(req.headers()).map(|t| Key::Bearer(limiter.hasher.hash_one(t)));
    let n = limiter.limit;
    let Some(credential) = credential else {
        let d = limiter.count(addr, true);
        if !d.allowed {
            return too_many(n, d);
        }
        let mut resp = next.run(req).await;
        set_headers(n, d, resp.headers_mut());
        return resp;
    };
    let failures = match addr {
        Key::Addr(a) => Key::Failures(a),
        other => other,
    };
    let failed = limiter.count(failures, false);
    if !failed.allowed {
        return too_many(n, failed);
    }
    let d = limiter.count(credential, true);
    if !d.allowed {
        return too_many(n, d);
    }
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED {
        let _ = limiter.count(failures, true);
    }
    set_headers(n, d, resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let none = TrustedProxies::default();
        let h = headers(&["203.0.113.9"]);
        assert_eq!(none.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));

        let lb = TrustedProxies::new(vec![
            parse_trusted_proxy("10.0.0.0/8").unwrap(),
            parse_trusted_proxy("192.0.2.7").unwrap(),
        ]);
        // Not from the proxy: the header is ignored.
        assert_eq!(lb.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        // From the proxy: the right-most untrusted hop, whatever the client prepended.
        let h = headers(&["1.1.1.1, 203.0.113.9", "192.0.2.7"]);
        assert_eq!(lb.client_ip(ip("10.1.2.3"), &h), ip("203.0.113.9"));
        // Every hop trusted: the left-most.
        let h = headers(&["10.0.0.5, 192.0.2.7"]);
        assert_eq!(lb.client_ip(ip("10.1.2.3"), &h), ip("10.0.0.5"));
        // Garbage stops the walk at the last trusted hop.
        let h = headers(&["203.0.113.9, junk"]);
        assert_eq!(lb.client_ip(ip("10.1.2.3"), &h), ip("10.1.2.3"));
        // Hops with ports.
        let h = headers(&["203.0.113.9:5000, [2001:db8::7]:443"]);
        assert_eq!(lb.client_ip(ip("10.1.2.3"), &h), ip("2001:db8::7"));
        // No header: the peer.
        assert_eq!(
            lb.client_ip(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        assert!(parse_trusted_proxy("nope").is_err());
    }

    #[test]
    fn ipv6_clients_share_their_slash_64_and_never_an_ipv4_bucket() {
        assert_eq!(
            addr_key(ip("2001:db8::1")),
            addr_key(ip("2001:db8::ffff:1"))
        );
        assert_ne!(addr_key(ip("2001:db8::1")), addr_key(ip("2001:db8:0:1::1")));
        assert_eq!(addr_key(ip("::ffff:192.0.2.1")), addr_key(ip("192.0.2.1")));
        assert_ne!(addr_key(ip("::")), addr_key(ip("0.0.0.0")));
    }

    #[test]
    fn a_window_admits_limit_requests_then_refuses() {
        let l = Limiter::new(&RateLimit { per_minute: 3 }, TrustedProxies::default());
        let k = addr_key(ip("192.0.2.1"));
        let seen: Vec<(bool, u32)> = (0..4)
            .map(|_| l.count(k, true))
            .map(|d| (d.allowed, d.remaining))
            .collect();
        assert_eq!(seen, [(true, 2), (true, 1), (true, 0), (false, 0)]);
        assert!(!l.count(k, false).allowed);
        // Another key is unaffected.
        assert!(l.count(addr_key(ip("192.0.2.2")), true).allowed);
    }

    #[test]
    fn a_full_shard_counts_new_keys_in_its_overflow_bucket() {
        let l = Limiter::new(&RateLimit { per_minute: 1 }, TrustedProxies::default());
        // Twice as many distinct keys as all shards may hold.
        let keys = u64::try_from(SHARDS * SHARD_CAP * 2).unwrap();
        let refused = (0..keys)
            .filter(|n| !l.count(Key::Bearer(*n), true).allowed)
            .count();
        for s in l.shards.iter() {
            let s = s.lock().unwrap();
            assert!(s.buckets.len() <= SHARD_CAP + 1, "{}", s.buckets.len());
            assert!(s.buckets.contains_key(&Key::Overflow));
        }
        // Past the caps, new keys shared their shard's one-request overflow bucket.
        assert!(refused > SHARDS * SHARD_CAP / 2, "{refused}");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("bEaReR  tok "));
        assert_eq!(bearer(&h), Some(&b"tok"[..]));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
