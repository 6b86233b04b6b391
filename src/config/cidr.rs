//! CIDR blocks, for `[server] trusted_proxies`: parsed once at load, matched per connection.
//!
//! Thirty lines of masking rather than a crate: all signgate needs is "is this peer inside".

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: `10.0.0.0/8`, `fd00::/8`, or a bare address (a `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, host bits cleared.
    network: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies inside. An IPv4 address mapped into IPv6 (`::ffff:10.1.2.3`, as a
    /// dual-stack listener reports IPv4 peers) counts as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // The bits where the two differ, shifted past the host bits: none may be left.
        let host_bits = |width: u8| u32::from(width - self.prefix);
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => (u32::from(network) ^ u32::from(ip))
                .checked_shr(host_bits(32))
                .is_none_or(|differing| differing == 0),
            (IpAddr::V6(network), IpAddr::V6(ip)) => (u128::from(network) ^ u128::from(ip))
                .checked_shr(host_bits(128))
                .is_none_or(|differing| differing == 0),
            _ => false,
        }
    }
}

/// What a `trusted_proxies` entry should look like, for messages.
pub const CIDR_FORM: &str =
    "an address or address/prefix, such as \"10.0.0.0/8\", \"192.0.2.7\" or \"fd00::/8\"";

impl FromStr for Cidr {
    type Err = String;

    /// Parses `ADDR` or `ADDR/PREFIX`; host bits below the prefix are cleared.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a CIDR block: expected {CIDR_FORM}");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
            Some(_) => return Err(bad()),
        };
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`: peers are compared in their IPv4 form.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
                u32::from(a) & u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0),
            )),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
                u128::from(a) & u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0),
            )),
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("valid")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn blocks_hold_the_addresses_under_their_prefix() {
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains(ip("10.0.0.0")) && ten.contains(ip("10.255.255.255")));
        assert!(!ten.contains(ip("11.0.0.0")) && !ten.contains(ip("9.255.255.255")));
        assert!(
            ten.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped peers match"
        );
        assert!(!ten.contains(ip("::a01:203")));
        let one = cidr("192.0.2.7");
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        let v6 = cidr("fd00::/8");
        assert!(v6.contains(ip("fdab::1")) && !v6.contains(ip("fe80::1")));
        assert!(cidr("::1").contains(ip("::1")) && !cidr("::1").contains(ip("::2")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert_eq!(
            cidr("10.1.2.3/8").to_string(),
            "10.0.0.0/8",
            "host bits cleared"
        );
        assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn anything_else_is_refused_with_the_expected_form() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "10.0.0.0/8/8",
            "localhost",
            "[::1]",
            " 10.0.0.0/8",
        ] {
            let error = bad.parse::<Cidr>().expect_err(bad);
            assert!(error.contains(&format!("{bad:?}")), "{error}");
            assert!(error.contains("\"10.0.0.0/8\""), "{error}");
        }
    }
}
