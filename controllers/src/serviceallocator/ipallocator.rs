//! Pure: a Service IP range and the order in which its addresses are tried, as upstream's
//! IPAddress-based allocator (pkg/registry/core/service/ipallocator/ipallocator.go): the
//! network address (and for IPv4 the broadcast address) is never handed out, the range is
//! split at `calculate_range_offset` (KEP-3070: the lower band is preferred for static,
//! user-chosen addresses) and dynamic allocation starts at a random address of the upper
//! band, wrapping around, then falls back to the lower band. Which address is free is the
//! caller's business: creating the IPAddress object is the allocation, and a 409 means
//! "taken, try the next".
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::nodelifecycle::cidr::IpNet;

/// Errors of the IP allocator, with upstream's messages (ipallocator/interfaces.go).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("range is full")]
    Full,
    #[error("provided IP is already allocated")]
    Allocated,
    #[error("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}")]
    NotInRange { ip: IpAddr, range: IpNet },
    #[error("shortest allowed prefix length for service CIDR is 64, got {0}")]
    PrefixTooShort(u8),
}

/// core/v1's IPFamily.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            _ => None,
        }
    }

    pub fn other(self) -> Self {
        match self {
            IpFamily::IPv4 => IpFamily::IPv6,
            IpFamily::IPv6 => IpFamily::IPv4,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_u128(v: u128, family: IpFamily) -> IpAddr {
    match family {
        IpFamily::IPv4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX))),
        IpFamily::IPv6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The number of addresses of `cidr` (upstream `netutils.RangeSize`, capped at i64::MAX).
fn range_size(cidr: &IpNet) -> u128 {
    let bits = match cidr.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let host_bits = u32::from(bits - cidr.prefix_len());
    if host_bits >= 63 {
        i64::MAX as u128
    } else {
        1u128 << host_bits
    }
}

/// KEP-3070: the size of the lower band reserved for static allocation,
/// `min(max(16, size/16), 256)`, 0 for ranges of 16 addresses or fewer (upstream
/// `calculateRangeOffset`).
pub fn calculate_range_offset(cidr: &IpNet) -> u128 {
    const MIN: u128 = 16;
    const MAX: u128 = 256;
    const STEP: u128 = 16;
    let size = range_size(cidr);
    if size <= MIN {
        return 0;
    }
    (size / STEP).clamp(MIN, MAX)
}

/// One Service CIDR (one per IP family of `--service-cluster-ip-range`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    cidr: IpNet,
    family: IpFamily,
    /// First and last address handed out (both included); `first > last` when none is.
    first: u128,
    last: u128,
    /// Size of the lower (static) band.
    range_offset: u128,
}

impl IpRange {
    pub fn new(cidr: IpNet) -> Result<Self, Error> {
        let cidr = cidr.network();
        let family = IpFamily::of(&cidr.addr());
        if family == IpFamily::IPv6 && cidr.prefix_len() < 64 {
            return Err(Error::PrefixTooShort(cidr.prefix_len()));
        }
        let base = to_u128(&cidr.addr());
        let bits: u32 = if family == IpFamily::IPv4 { 32 } else { 128 };
        let host_bits = bits - u32::from(cidr.prefix_len());
        let broadcast = if host_bits >= 128 {
            u128::MAX
        } else {
            base | ((1u128 << host_bits) - 1)
        };
        // The network address is never handed out; for IPv4 the broadcast address neither.
        let first = base.saturating_add(1);
        let last = if family == IpFamily::IPv4 {
            broadcast.saturating_sub(1)
        } else {
            broadcast
        };
        let (first, last) = if host_bits == 0 || first > last {
            (1, 0)
        } else {
            (first, last)
        };
        Ok(IpRange {
            cidr,
            family,
            first,
            last,
            range_offset: calculate_range_offset(&cidr),
        })
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// How many addresses can be handed out (upstream `hostsPerNetwork`).
    pub fn size(&self) -> u128 {
        if self.first > self.last {
            0
        } else {
            self.last - self.first + 1
        }
    }

    /// Whether `ip` may be handed out: in the CIDR, not its network (or IPv4 broadcast)
    /// address; else upstream's ErrNotInRange.
    pub fn check(&self, ip: &IpAddr) -> Result<(), Error> {
        let v = to_u128(ip);
        if IpFamily::of(ip) != self.family || v < self.first || v > self.last {
            return Err(Error::NotInRange {
                ip: *ip,
                range: self.cidr,
            });
        }
        Ok(())
    }

    /// The addresses in the order dynamic allocation tries them: the upper band from a
    /// point chosen by `random`, wrapping around, then the lower band likewise (upstream
    /// `allocateNextService` with its `ipIterator`s). Every address of the range comes
    /// exactly once.
    pub fn candidates(&self, random: u64) -> impl Iterator<Item = IpAddr> + '_ {
        let size = self.size();
        // A range smaller than its offset has no upper band (cannot happen with
        // calculate_range_offset, which is 0 for small ranges, but stay total).
        let offset = self.range_offset.min(size);
        let upper_first = self.first + offset;
        let upper = band(upper_first, size - offset, u128::from(random));
        let lower = band(self.first, offset, u128::from(random.rotate_left(32)));
        let family = self.family;
        upper.chain(lower).map(move |v| from_u128(v, family))
    }
}

/// `len` values from `first`, starting at `first + random % len` and wrapping.
fn band(first: u128, len: u128, random: u128) -> impl Iterator<Item = u128> {
    let start = if len == 0 { 0 } else { random % len };
    (0..len).map(move |i| first + (start + i) % len)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn range(s: &str) -> IpRange {
        IpRange::new(s.parse().unwrap()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// upstream TestAllocateIPAllocator: the free count, every address once, the out of
    /// range ones refused.
    #[test]
    fn allocate_ip_allocator() {
        struct Case {
            cidr: &'static str,
            free: u128,
            out_of_range: &'static [&'static str],
            in_range: &'static str,
        }
        for c in [
            Case {
                cidr: "192.168.1.0/24",
                free: 254,
                out_of_range: &[
                    "192.168.0.1",   // not in 192.168.1.0/24
                    "192.168.1.0",   // reserved (base address)
                    "192.168.1.255", // reserved (broadcast address)
                    "192.168.2.2",   // not in 192.168.1.0/24
                ],
                in_range: "192.168.1.1",
            },
            Case {
                cidr: "2001:db8:1::/116",
                free: 4095,
                out_of_range: &[
                    "2001:db8::1",   // not in 2001:db8:1::/116
                    "2001:db8:1::",  // reserved (base address)
                    "2001:db8:2::2", // not in 2001:db8:1::/116
                ],
                in_range: "2001:db8:1::1",
            },
        ] {
            let r = range(c.cidr);
            assert_eq!(r.size(), c.free, "{}", c.cidr);
            let all: Vec<IpAddr> = r.candidates(12345).collect();
            let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
            assert_eq!(all.len() as u128, c.free, "{}", c.cidr);
            assert_eq!(distinct.len(), all.len(), "{}: an address twice", c.cidr);
            assert!(all.iter().all(|a| r.check(a).is_ok()));
            for o in c.out_of_range {
                assert!(
                    matches!(r.check(&ip(o)), Err(Error::NotInRange { .. })),
                    "{o}"
                );
            }
            assert_eq!(r.check(&ip(c.in_range)), Ok(()));
        }
    }

    /// upstream TestAllocateTinyIPAllocator and TestAllocateSmallIPAllocator.
    #[test]
    fn tiny_and_small_ranges() {
        assert_eq!(range("192.168.1.0/32").size(), 0);
        assert_eq!(range("192.168.1.0/32").candidates(7).count(), 0);
        assert_eq!(range("192.168.1.0/31").size(), 0);
        let small = range("192.168.1.240/30");
        assert_eq!(small.size(), 2);
        let got: BTreeSet<IpAddr> = small.candidates(99).collect();
        assert_eq!(
            got,
            [ip("192.168.1.241"), ip("192.168.1.242")]
                .into_iter()
                .collect()
        );
        assert_eq!(range("2001:db8::/128").size(), 0);
        assert_eq!(range("2001:db8::/127").size(), 1);
    }

    /// upstream TestAllocateReservedIPAllocator: a /25 has a 16-address static band, so
    /// the first 110 dynamic allocations all land above it.
    #[test]
    fn allocate_reserved_ip_allocator() {
        let r = range("192.168.1.0/25");
        let offset = calculate_range_offset(&r.cidr());
        assert_eq!(offset, 16);
        for random in [0, 1, 77, u64::MAX] {
            let order: Vec<IpAddr> = r.candidates(random).collect();
            let dynamic = usize::try_from(r.size() - offset).unwrap();
            for a in &order[..dynamic] {
                let IpAddr::V4(v4) = a else { panic!() };
                assert!(v4.octets()[3] > 16, "{a} is in the static band");
            }
            for a in &order[dynamic..] {
                let IpAddr::V4(v4) = a else { panic!() };
                assert!((1..=16).contains(&v4.octets()[3]), "{a}");
            }
        }
    }

    /// upstream's calculateRangeOffset table (bitmap_test.go TestCalculateRangeOffset).
    #[test]
    fn calculate_range_offset_table() {
        for (cidr, want) in [
            ("192.168.1.0/32", 0),  // 1
            ("192.168.1.0/31", 0),  // 2
            ("192.168.1.0/28", 0),  // 16
            ("192.168.1.0/27", 16), // 32
            ("192.168.1.0/25", 16), // 128
            ("192.168.1.0/24", 16), // 256
            ("192.168.0.0/23", 32), // 512
            ("192.168.0.0/20", 256),
            ("10.0.0.0/12", 256),
            ("2001:db8:1::/116", 256),
            ("fd00::/64", 256),
        ] {
            assert_eq!(
                calculate_range_offset(&cidr.parse().unwrap()),
                want,
                "{cidr}"
            );
        }
    }

    #[test]
    fn ipv6_prefix_shorter_than_64_is_refused() {
        assert_eq!(
            IpRange::new("fd00::/48".parse().unwrap()),
            Err(Error::PrefixTooShort(48))
        );
        assert_eq!(
            Error::PrefixTooShort(48).to_string(),
            "shortest allowed prefix length for service CIDR is 64, got 48"
        );
    }

    #[test]
    fn messages_are_upstreams() {
        let r = range("10.96.0.0/16");
        assert_eq!(
            r.check(&ip("10.1.2.3")).unwrap_err().to_string(),
            "the provided IP (10.1.2.3) is not in the valid range. The range of valid IPs is 10.96.0.0/16"
        );
        assert_eq!(
            r.check(&ip("fd00::1")).unwrap_err().to_string(),
            "the provided IP (fd00::1) is not in the valid range. The range of valid IPs is 10.96.0.0/16"
        );
        assert_eq!(
            Error::Allocated.to_string(),
            "provided IP is already allocated"
        );
        assert_eq!(Error::Full.to_string(), "range is full");
    }

    /// A huge IPv6 range still yields candidates at once (the iterator is lazy).
    #[test]
    fn ipv6_64_candidates_are_lazy() {
        let r = range("fd00:10:96::/64");
        let first: Vec<IpAddr> = r.candidates(5).take(3).collect();
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|a| r.check(a).is_ok()));
    }

    /// Different random starts spread concurrent allocations over the range.
    #[test]
    fn different_starts_give_different_first_candidates() {
        let r = range("10.96.0.0/16");
        let firsts: BTreeSet<IpAddr> = (0..50u64)
            .map(|i| {
                r.candidates(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    .next()
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 40);
    }
}
