//! k8s.io/utils/net's IP parsing, which every component reads addresses with.
use std::net::{IpAddr, Ipv4Addr};

/// `netutils.ParseIPSloppy`: an IP address, IPv4 octets with leading zeros accepted as
/// decimal (as Go before 1.17: `010.1.2.3` is 10.1.2.3). Go's `net.IP` holds an
/// IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as that IPv4 address, and so does this.
/// No whitespace is accepted (nor by Go).
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    let ip = match s.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            let octets: Vec<&str> = s.split('.').collect();
            if octets.len() != 4
                || octets
                    .iter()
                    .any(|o| o.is_empty() || o.len() > 3 || !o.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            let mut b = [0u8; 4];
            for (i, o) in octets.iter().enumerate() {
                b[i] = o.parse().ok()?;
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
    };
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

/// `netutils.IsIPv6String`: an IPv6 address (not an IPv4-mapped one).
pub fn is_ipv6_string(s: &str) -> bool {
    matches!(parse_ip_sloppy(s), Some(IpAddr::V6(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_go() {
        let cases = [
            ("1.2.3.4", Some("1.2.3.4")),
            ("010.180.00.001", Some("10.180.0.1")),
            ("2000:0:0::0a", Some("2000::a")),
            ("::ffff:1.2.3.4", Some("1.2.3.4")),
            ("1.2.3.256", None),
            ("1.2.3", None),
            ("1.2.3.0004", None),
            (" 1.2.3.4", None),
            ("", None),
            ("not-an-ip", None),
        ];
        for (given, want) in cases {
            assert_eq!(
                parse_ip_sloppy(given).map(|ip| ip.to_string()).as_deref(),
                want,
                "{given:?}"
            );
        }
        assert!(is_ipv6_string("fd00::1"));
        assert!(!is_ipv6_string("::ffff:1.2.3.4"));
        assert!(!is_ipv6_string("10.0.0.1"));
        assert!(!is_ipv6_string(""));
    }
}
