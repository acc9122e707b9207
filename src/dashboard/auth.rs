//! Who is asking and what they may see: identity from a trusted proxy's headers or a bearer
//! token (TokenReview), and `list canaries.flagger.app` per namespace (SubjectAccessReview),
//! both cached briefly so a page view costs no API call in the common case.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::Error;

/// The cookie the login form stores a bearer token in.
pub const TOKEN_COOKIE: &str = "flaggit_token";

/// Most tokens (and RBAC answers) remembered at once: a flood of distinct tokens evicts the
/// oldest answers instead of growing the dashboard's memory.
pub const CACHE_ENTRIES: usize = 10_000;

/// Which proxy headers are believed, and from where.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxies {
    /// The proxies' own addresses (not the pod network: any pod could claim to be a proxy).
    pub trusted: Vec<Cidr>,
    /// The proxy sets `X-Forwarded-Groups` (and drops what clients send); otherwise the header
    /// is ignored and groups come from Kubernetes only through tokens.
    pub groups: bool,
}

impl Proxies {
    fn trust(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }
}

/// A range of addresses, `10.0.0.0/8` or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--trusted-proxy {text:?} is not a CIDR: write it as 10.0.0.0/8 or 127.0.0.1");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in the range; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A viewer as Kubernetes knows them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity of a request that presented none, when `--anonymous` allows it.
    pub fn anonymous() -> Self {
        Self {
            user: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

/// What a request presents to prove who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    /// Headers set by an authenticating proxy we trust.
    Proxy(Identity),
    /// A bearer token (the `Authorization` header or the login cookie), still to be reviewed.
    Token(String),
    Nothing,
}

/// Reads the identity a request presents. Proxy headers count only when the peer is a
/// trusted proxy: from anyone else they are forged, and ignored. Groups count only when the
/// proxy is known to set them: a proxy that passes a client's header through would let
/// anyone claim `system:masters`.
pub fn presented(headers: &HeaderMap, peer: IpAddr, proxies: &Proxies) -> Presented {
    if proxies.trust(peer)
        && let Some(user) = header(headers, "x-forwarded-user").filter(|u| !u.is_empty())
    {
        let groups = if proxies.groups {
            headers
                .get_all("x-forwarded-groups")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        return Presented::Proxy(Identity {
            user: user.to_string(),
            groups,
        });
    }
    if let Some(token) = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Presented::Token(token.to_string());
    }
    if let Some(token) = cookie(headers, TOKEN_COOKIE) {
        return Presented::Token(token);
    }
    Presented::Nothing
}

/// Whether the browser reached the dashboard over HTTPS: `https` is set (TLS terminated in
/// front of the dashboard), or a trusted proxy says `X-Forwarded-Proto: https`. The login
/// cookie is then `Secure`, so it never travels in clear text.
pub fn over_https(headers: &HeaderMap, peer: IpAddr, proxies: &Proxies, https: bool) -> bool {
    https
        || (proxies.trust(peer)
            && header(headers, "x-forwarded-proto")
                .and_then(|p| p.split(',').next())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

/// Whether a state-changing request (`POST /login`, `/logout`) comes from the dashboard's own
/// pages: its `Origin` (or, without one, its `Referer`) names the host the request was sent
/// to, and the browser does not call it cross-site. A request with neither header is not
/// from a browser's cross-site form, and is let through. Behind a trusted proxy that
/// rewrites `Host`, its `X-Forwarded-Host` is the host.
pub fn same_origin(headers: &HeaderMap, peer: IpAddr, proxies: &Proxies) -> bool {
    if header(headers, "sec-fetch-site").is_some_and(|site| site.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    let forwarded = proxies
        .trust(peer)
        .then(|| header(headers, "x-forwarded-host"))
        .flatten();
    let Some(host) = forwarded
        .or_else(|| header(headers, "host"))
        .map(|h| h.split(',').next().unwrap_or(h).trim())
    else {
        return false;
    };
    let authority = |url: &str| {
        url.split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(rest).to_string())
    };
    match (header(headers, "origin"), header(headers, "referer")) {
        (Some(origin), _) => authority(origin).is_some_and(|a| a.eq_ignore_ascii_case(host)),
        (None, Some(referer)) => authority(referer).is_some_and(|a| a.eq_ignore_ascii_case(host)),
        (None, None) => true,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The value of cookie `name`, if the request carries it and it is not empty.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A small map whose entries expire, holding at most `capacity` of them.
struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // Full: drop what expired, and if that is not enough the oldest tenth, so a flood
            // of fresh keys costs a scan every `capacity / 10` inserts, not every insert.
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                let mut ages: Vec<(Instant, K)> =
                    entries.iter().map(|(k, (at, _))| (*at, k.clone())).collect();
                ages.sort_by_key(|(at, _)| *at);
                let drop = (self.capacity / 10).max(entries.len() + 1 - self.capacity);
                for (_, key) in ages.into_iter().take(drop) {
                    entries.remove(&key);
                }
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// Asks the API server who a token is and what an identity may list, remembering the answers
/// for `ttl`.
pub struct Authorizer {
    client: Client,
    tokens: TtlCache<[u8; 32], Option<Identity>>,
    decisions: TtlCache<(Identity, String), bool>,
}

impl Authorizer {
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            tokens: TtlCache::new(ttl, CACHE_ENTRIES),
            decisions: TtlCache::new(ttl, CACHE_ENTRIES),
        }
    }

    /// Tokens whose review is remembered now (at most [`CACHE_ENTRIES`]).
    pub fn remembered_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The identity of a bearer token, None when the API server does not accept it. The
    /// cache is keyed by the token's hash so the tokens themselves are not kept.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Identity>, Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.tokens.get(&key) {
            return Ok(known);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Error::TokenReview)?;
        let identity = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(Identity {
                    user: u.username?,
                    groups: u.groups.unwrap_or_default(),
                })
            });
        self.tokens.put(key, identity.clone());
        Ok(identity)
    }

    /// Whether `who` may `list canaries.flagger.app` in `namespace`.
    pub async fn may_list(&self, who: &Identity, namespace: &str) -> Result<bool, Error> {
        let key = (who.clone(), namespace.to_string());
        if let Some(allowed) = self.decisions.get(&key) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("list".into()),
                    group: Some(crate::api::GROUP.into()),
                    resource: Some("canaries".into()),
                    namespace: Some(namespace.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Error::SubjectAccessReview)?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        self.decisions.put(key, allowed);
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.1.0.0/16".parse().expect("valid");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        let one: Cidr = "127.0.0.2".parse().expect("valid");
        assert!(one.contains(ip("127.0.0.2")));
        assert!(!one.contains(ip("127.0.0.1")));
        assert!(one.contains(ip("::ffff:127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(ip("192.0.2.1")));
        assert!(!all.contains(ip("::1")));
        let v6: Cidr = "fd00::/8".parse().expect("valid");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
    }

    #[test]
    fn bad_cidrs_name_the_fix() {
        for text in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::1/129"] {
            let error = text.parse::<Cidr>().expect_err("invalid");
            assert!(error.contains("10.0.0.0/8"), "{error}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).expect("header value"));
        }
        map
    }

    fn proxies(groups: bool) -> Proxies {
        Proxies {
            trusted: vec!["10.0.0.0/8".parse().expect("valid")],
            groups,
        }
    }

    #[test]
    fn proxy_headers_count_only_from_a_trusted_proxy() {
        let trusted = proxies(true);
        let h = headers(&[
            ("x-forwarded-user", "alice"),
            ("x-forwarded-groups", "dev, ops"),
            ("x-forwarded-groups", "qa"),
        ]);
        assert_eq!(
            presented(&h, ip("10.3.4.5"), &trusted),
            Presented::Proxy(Identity {
                user: "alice".into(),
                groups: vec!["dev".into(), "ops".into(), "qa".into()],
            })
        );
        assert_eq!(presented(&h, ip("127.0.0.1"), &trusted), Presented::Nothing);
        assert_eq!(
            presented(&h, ip("10.3.4.5"), &Proxies::default()),
            Presented::Nothing
        );
    }

    #[test]
    fn groups_count_only_when_the_proxy_is_said_to_set_them() {
        let h = headers(&[
            ("x-forwarded-user", "alice"),
            ("x-forwarded-groups", "system:masters"),
        ]);
        assert_eq!(
            presented(&h, ip("10.3.4.5"), &proxies(false)),
            Presented::Proxy(Identity {
                user: "alice".into(),
                groups: Vec::new(),
            })
        );
    }

    #[test]
    fn https_is_believed_from_the_flag_or_a_trusted_proxy() {
        let forwarded = headers(&[("x-forwarded-proto", "https")]);
        assert!(over_https(&forwarded, ip("10.0.0.9"), &proxies(false), false));
        assert!(!over_https(&forwarded, ip("192.0.2.1"), &proxies(false), false));
        assert!(!over_https(
            &HeaderMap::new(),
            ip("10.0.0.9"),
            &proxies(false),
            false
        ));
        assert!(over_https(
            &HeaderMap::new(),
            ip("192.0.2.1"),
            &proxies(false),
            true
        ));
        let plain = headers(&[("x-forwarded-proto", "http")]);
        assert!(!over_https(&plain, ip("10.0.0.9"), &proxies(false), false));
    }

    #[test]
    fn cross_origin_posts_are_told_apart() {
        let (direct, none) = (ip("192.0.2.1"), Proxies::default());
        let host = ("host", "flaggit.example.com");
        assert!(same_origin(
            &headers(&[host, ("origin", "https://flaggit.example.com")]),
            direct,
            &none
        ));
        assert!(same_origin(
            &headers(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:9090")]),
            direct,
            &none
        ));
        assert!(!same_origin(
            &headers(&[host, ("origin", "https://evil.example")]),
            direct,
            &none
        ));
        assert!(!same_origin(&headers(&[host, ("origin", "null")]), direct, &none));
        assert!(!same_origin(
            &headers(&[host, ("origin", "https://flaggit.example.com.evil.example")]),
            direct,
            &none
        ));
        assert!(same_origin(
            &headers(&[host, ("referer", "https://flaggit.example.com/login?x=1")]),
            direct,
            &none
        ));
        assert!(!same_origin(
            &headers(&[host, ("referer", "https://evil.example/flaggit.example.com")]),
            direct,
            &none
        ));
        assert!(!same_origin(
            &headers(&[
                host,
                ("origin", "https://flaggit.example.com"),
                ("sec-fetch-site", "cross-site")
            ]),
            direct,
            &none
        ));
        // curl and scripts send neither header.
        assert!(same_origin(&headers(&[host]), direct, &none));
        // A proxy that rewrites Host says which host the browser used.
        let behind = headers(&[
            ("host", "flaggit-dashboard.flaggit-system:9090"),
            ("x-forwarded-host", "flaggit.example.com"),
            ("origin", "https://flaggit.example.com"),
        ]);
        assert!(same_origin(&behind, ip("10.0.0.9"), &proxies(false)));
        assert!(!same_origin(&behind, direct, &proxies(false)));
    }

    #[test]
    fn a_forged_header_falls_back_to_the_token() {
        let h = headers(&[("x-forwarded-user", "admin"), ("authorization", "Bearer abc.def")]);
        assert_eq!(
            presented(&h, ip("127.0.0.1"), &Proxies::default()),
            Presented::Token("abc.def".into())
        );
    }

    #[test]
    fn the_login_cookie_is_a_token() {
        let h = headers(&[("cookie", "a=1; flaggit_token=tok123; b=2")]);
        assert_eq!(
            presented(&h, ip("127.0.0.1"), &Proxies::default()),
            Presented::Token("tok123".into())
        );
        let empty = headers(&[("cookie", "flaggit_token=")]);
        assert_eq!(
            presented(&empty, ip("127.0.0.1"), &Proxies::default()),
            Presented::Nothing
        );
        assert_eq!(
            presented(&HeaderMap::new(), ip("127.0.0.1"), &Proxies::default()),
            Presented::Nothing
        );
    }

    #[test]
    fn cache_entries_expire() {
        let cache: TtlCache<u8, bool> = TtlCache::new(Duration::from_millis(30), 10);
        cache.put(1, true);
        assert_eq!(cache.get(&1), Some(true));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&1), None);
    }

    #[test]
    fn the_cache_is_bounded_by_size_not_only_by_age() {
        let cache: TtlCache<u32, u32> = TtlCache::new(Duration::from_secs(3600), 100);
        for key in 0..10_000 {
            cache.put(key, key);
            assert!(cache.len() <= 100, "{} entries", cache.len());
        }
        // The newest answers stay; the oldest went first.
        assert_eq!(cache.get(&9_999), Some(9_999));
        assert_eq!(cache.get(&0), None);
        // Replacing a key that is there evicts nothing.
        let full = cache.len();
        cache.put(9_999, 1);
        assert_eq!(cache.len(), full);
    }
}
