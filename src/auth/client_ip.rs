//! Which IP address a request comes from. `X-Forwarded-For` is believed only when
//! the TCP peer is one of the configured trusted proxies (the load balancers);
//! otherwise anyone could claim any address and dodge per-IP limits.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;

/// A trusted proxy: one address (`10.0.0.7`) or a network (`10.0.0.0/8`,
/// `fd00::/8`), as load balancers in Docker or Kubernetes networks have
/// addresses that change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for TrustedProxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn is_trusted(trusted: &[TrustedProxy], ip: IpAddr) -> bool {
    trusted.iter().any(|t| t.contains(ip))
}

/// The client address: the peer itself, or — when the peer is trusted — the
/// right-most address in `X-Forwarded-For` that is not a trusted proxy (each
/// proxy appends the address it saw, so entries to the left are client claims).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(trusted, **ip))
        .or_else(|| forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// The key a per-IP rate limit counts under. An IPv4 client is its address;
/// an IPv6 client is its /64, because one subscriber is routinely given a
/// whole /64 and can rotate through it at will (RFC 4941 privacy addresses do
/// so on their own). An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
/// dual-stack socket reports IPv4 peers) counts as the IPv4 client it is.
pub fn rate_limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & (u128::MAX << 64);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn proxy(s: &str) -> TrustedProxy {
        s.parse().expect("proxy")
    }

    fn xff(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static(value));
        h
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let got = client_ip(
            ip("198.51.100.7"),
            &xff("203.0.113.1"),
            &[proxy("10.0.0.1")],
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn a_trusted_proxy_forwards_the_client_address() {
        let got = client_ip(ip("10.0.0.1"), &xff("203.0.113.1"), &[proxy("10.0.0.1")]);
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn spoofed_entries_left_of_the_real_client_are_ignored() {
        // The client sent "1.2.3.4" itself; our proxy appended the real address.
        let got = client_ip(
            ip("10.0.0.1"),
            &xff("1.2.3.4, 203.0.113.1"),
            &[proxy("10.0.0.1")],
        );
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn chains_of_trusted_proxies_are_skipped() {
        let trusted = [proxy("10.0.0.1"), proxy("10.0.0.2")];
        let got = client_ip(ip("10.0.0.1"), &xff("203.0.113.1, 10.0.0.2"), &trusted);
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let got = client_ip(ip("10.0.0.1"), &HeaderMap::new(), &[proxy("10.0.0.1")]);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn networks_of_trusted_proxies_are_matched_by_prefix() {
        let docker = proxy("172.16.0.0/12");
        assert!(docker.contains(ip("172.18.0.5")));
        assert!(!docker.contains(ip("172.32.0.1")));
        assert!(!docker.contains(ip("::1")));
        assert!(proxy("fd00::/8").contains(ip("fd12:3456::1")));
        assert!(proxy("0.0.0.0/0").contains(ip("203.0.113.9")));
        let got = client_ip(ip("172.18.0.5"), &xff("203.0.113.1"), &[docker]);
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_slash_64_and_mapped_ipv4_as_ipv4() {
        let a = rate_limit_key(ip("2001:db8:1:2:aaaa::1"));
        let b = rate_limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let other = rate_limit_key(ip("2001:db8:1:3::1"));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b, "one /64 is one client");
        assert_ne!(a, other, "the neighbouring /64 is another");
        assert_eq!(rate_limit_key(ip("::ffff:203.0.113.9")), "203.0.113.9");
        assert_eq!(rate_limit_key(ip("203.0.113.9")), "203.0.113.9");
    }

    #[test]
    fn malformed_proxies_are_rejected() {
        for bad in ["10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.1/x"] {
            assert!(bad.parse::<TrustedProxy>().is_err(), "{bad}");
        }
    }
}
