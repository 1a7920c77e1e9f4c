//! Who is asking, for the public endpoint's per-address limit: the connection's peer, or,
//! only when that peer is one of `--trusted-proxies`, the address it forwarded in
//! `X-Forwarded-For`. The header is read from the right: each proxy appends the address it
//! received from, so the rightmost address that is not a trusted proxy is the client. A
//! header sent by anyone else is ignored, so a client cannot spoof its way to a fresh limit.

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
    /// untrusted address of `forwarded_for`.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut last = peer;
        for item in header.rsplit(',') {
            let Ok(ip) = item.trim().parse::<IpAddr>() else {
                // Garbage where an address should be: stop at the last good one.
                return last;
            };
            if !self.contains(ip) {
                return ip;
            }
            last = ip;
        }
        last
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
