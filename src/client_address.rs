//! Who is asking, for the per-address limits (the public endpoint, requests without a valid
//! key): the connection's peer, or, only when that peer is one of `--trusted-proxies`, the
//! address it forwarded in `X-Forwarded-For`. Every line of the header is read, in order, as
//! one list (a proxy may add a line of its own instead of extending the client's), and the
//! list is read from the right: each proxy appends the address it received from, so the
//! rightmost address that is not a trusted proxy is the client. A header sent by anyone else
//! is ignored, so a client cannot spoof its way to a fresh limit.
//!
//! An IPv6 client is limited by its prefix ([`limit_key`], `--ipv6-prefix`, /64 by
//! default): one subscriber is usually given a whole /64, so limiting single addresses would
//! give each client 2^64 allowances.

use std::net::IpAddr;

/// `--trusted-proxies`: addresses or CIDR ranges (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    fn from_str(list: &str) -> Result<TrustedProxies, String> {
        let mut ranges = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, prefix) = item.split_once('/').unwrap_or((item, ""));
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR range"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = if prefix.is_empty() {
                max
            } else {
                prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{item:?}: the prefix length must be 0 to {max}"))?
            };
            ranges.push((addr, prefix));
        }
        Ok(TrustedProxies(ranges))
    }
}

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|(net, prefix)| match (canonical(*net), ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    same_prefix(u32::from(n).into(), u32::from(a).into(), *prefix, 32)
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    same_prefix(u128::from(n), u128::from(a), *prefix, 128)
                }
                _ => false,
            })
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy, the rightmost
    /// untrusted address of `forwarded_for` (one header value).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        self.client_of_lines(peer, forwarded_for.into_iter().map(str::as_bytes))
    }

    /// The same over every `X-Forwarded-For` line of a request, in the order received.
    pub fn client_from_headers(&self, peer: IpAddr, headers: &hyper::HeaderMap) -> IpAddr {
        let lines = headers
            .get_all(hyper::header::HeaderName::from_static("x-forwarded-for"))
            .iter()
            .map(hyper::header::HeaderValue::as_bytes);
        self.client_of_lines(peer, lines)
    }

    fn client_of_lines<'a>(
        &self,
        peer: IpAddr,
        lines: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut last = peer;
        for line in lines.rev() {
            let Ok(line) = std::str::from_utf8(line) else {
                // Garbage where addresses should be: stop at the last good one.
                return last;
            };
            for item in line.rsplit(',') {
                let Some(ip) = parse_entry(item.trim()) else {
                    return last;
                };
                if !self.contains(ip) {
                    return ip;
                }
                last = ip;
            }
        }
        last
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`192.0.2.1:5678`,
/// `[2001:db8::1]:443`, as some proxies write it). Anything else (`unknown`, an obfuscated
/// name) is `None`.
fn parse_entry(item: &str) -> Option<IpAddr> {
    item.parse::<IpAddr>()
        .ok()
        .or_else(|| item.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The address a client is limited and audited under: IPv4 (and IPv4-mapped IPv6) as it is,
/// IPv6 reduced to its first `ipv6_prefix` bits.
pub fn limit_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

/// An IPv4-mapped IPv6 address as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn same_prefix(net: u128, addr: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (addr >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_may_name_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8, 127.0.0.1, fd00::/8".parse().unwrap();
        assert!(trusted.contains(ip("10.1.2.3")) && trusted.contains(ip("::ffff:127.0.0.1")));
        assert!(!trusted.contains(ip("11.0.0.1")) && !trusted.contains(ip("127.0.0.2")));
        // An untrusted peer's header is ignored.
        assert_eq!(
            trusted.client(ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        // Through two trusted proxies: the rightmost untrusted address.
        assert_eq!(
            trusted.client(ip("10.0.0.1"), Some("6.6.6.6, 198.51.100.7, 10.0.0.2")),
            ip("198.51.100.7")
        );
        assert_eq!(trusted.client(ip("10.0.0.1"), None), ip("10.0.0.1"));
        assert_eq!(trusted.client(ip("10.0.0.1"), Some("junk")), ip("10.0.0.1"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), Some("1.1.1.1")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn every_forwarded_for_line_is_read_as_one_list() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let mut headers = hyper::HeaderMap::new();
        let xff = hyper::header::HeaderName::from_static("x-forwarded-for");
        // The client forged a first line; the proxy added its own line (HAProxy).
        headers.append(&xff, "6.6.6.6".parse().unwrap());
        headers.append(&xff, "198.51.100.7".parse().unwrap());
        assert_eq!(
            trusted.client_from_headers(ip("10.0.0.1"), &headers),
            ip("198.51.100.7")
        );
        headers.append(&xff, "10.0.0.9, 10.0.0.8".parse().unwrap());
        assert_eq!(
            trusted.client_from_headers(ip("10.0.0.1"), &headers),
            ip("198.51.100.7")
        );
        assert_eq!(
            trusted.client_from_headers(ip("203.0.113.1"), &headers),
            ip("203.0.113.1"),
            "an untrusted peer's lines are ignored"
        );
    }

    #[test]
    fn entries_with_ports_name_their_address() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        for (header, client) in [
            ("198.51.100.7:5678", "198.51.100.7"),
            ("[2001:db8::7]:443, 10.0.0.2", "2001:db8::7"),
            ("198.51.100.7:5678, 10.0.0.2:80", "198.51.100.7"),
        ] {
            assert_eq!(
                trusted.client(ip("10.0.0.1"), Some(header)),
                ip(client),
                "{header}"
            );
        }
        // Something that is no address: the last good one (here the proxy's peer).
        assert_eq!(
            trusted.client(ip("10.0.0.1"), Some("unknown")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_prefix() {
        let a = limit_key(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = limit_key(ip("2001:db8:1:2:ffff:1:2:3"), 64);
        assert_eq!(a, b);
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_ne!(a, limit_key(ip("2001:db8:1:3::1"), 64));
        assert_eq!(limit_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("192.0.2.1"), 48), ip("192.0.2.1"));
    }

    #[test]
    fn bad_ranges_are_clear_errors() {
        for bad in ["10.0.0.0/33", "nonsense", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::default()
        );
    }
}
