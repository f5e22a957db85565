//! Which IP address a request comes from. `X-Forwarded-For` is believed only when
//! the TCP peer is one of the configured trusted proxies (the load balancers);
//! otherwise anyone could claim any address and dodge per-IP limits.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The client address: the peer itself, or — when the peer is trusted — the
/// right-most address in `X-Forwarded-For` that is not a trusted proxy (each
/// proxy appends the address it saw, so entries to the left are client claims).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
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
        .find(|ip| !trusted.contains(ip))
        .or_else(|| forwarded.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static(value));
        h
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let got = client_ip(ip("198.51.100.7"), &xff("203.0.113.1"), &[ip("10.0.0.1")]);
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn a_trusted_proxy_forwards_the_client_address() {
        let got = client_ip(ip("10.0.0.1"), &xff("203.0.113.1"), &[ip("10.0.0.1")]);
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn spoofed_entries_left_of_the_real_client_are_ignored() {
        // The client sent "1.2.3.4" itself; our proxy appended the real address.
        let got = client_ip(
            ip("10.0.0.1"),
            &xff("1.2.3.4, 203.0.113.1"),
            &[ip("10.0.0.1")],
        );
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn chains_of_trusted_proxies_are_skipped() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let got = client_ip(ip("10.0.0.1"), &xff("203.0.113.1, 10.0.0.2"), &trusted);
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let got = client_ip(ip("10.0.0.1"), &HeaderMap::new(), &[ip("10.0.0.1")]);
        assert_eq!(got, ip("10.0.0.1"));
    }
}
