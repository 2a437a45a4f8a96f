//! Pure: the NodePort range (`--service-node-port-range`) and the order in which its ports
//! are tried, as upstream's portallocator: one range for every protocol (a port number
//! taken by a TCP port of one Service is taken for UDP too), the lower band of
//! `calculate_range_offset` ports preferred for static, user-chosen ports (KEP-3668),
//! dynamic allocation from a random point of the upper band, then the lower band.
use std::fmt;
use std::str::FromStr;

/// Errors of the port allocator, with upstream's messages (portallocator/allocator.go,
/// apimachinery's `ParsePortRange`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("range is full")]
    Full,
    #[error("provided port is already allocated")]
    Allocated,
    #[error("provided port is not in the valid range. The range of valid ports is {0}")]
    NotInRange(PortRange),
    #[error("unable to parse port range: {0}")]
    Parse(String),
}

/// A port range, `base` and `size` ports (apimachinery's `net.PortRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    base: u16,
    size: u32,
}

impl PortRange {
    pub fn base(&self) -> u16 {
        self.base
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn contains(&self, port: i32) -> bool {
        let base = i32::from(self.base);
        port >= base && i64::from(port) < i64::from(base) + i64::from(self.size)
    }

    /// Whether `port` may be handed out; else upstream's ErrNotInRange.
    pub fn check(&self, port: i32) -> Result<u16, Error> {
        if self.contains(port) {
            Ok(u16::try_from(port).unwrap_or(u16::MAX))
        } else {
            Err(Error::NotInRange(*self))
        }
    }

    /// The ports in the order dynamic allocation tries them: the upper band from a point
    /// chosen by `random`, wrapping, then the lower band. Every port comes exactly once.
    pub fn candidates(&self, random: u64) -> impl Iterator<Item = u16> + '_ {
        let offset = calculate_range_offset(self).min(self.size);
        let upper_len = self.size - offset;
        let base = u32::from(self.base);
        let start_upper = if upper_len == 0 {
            0
        } else {
            (random % u64::from(upper_len)) as u32
        };
        let start_lower = if offset == 0 {
            0
        } else {
            (random.rotate_left(32) % u64::from(offset)) as u32
        };
        let upper = (0..upper_len).map(move |i| base + offset + (start_upper + i) % upper_len);
        let lower = (0..offset).map(move |i| base + (start_lower + i) % offset);
        upper
            .chain(lower)
            .map(|p| u16::try_from(p).unwrap_or(u16::MAX))
    }
}

/// KEP-3668: the size of the lower (static) band, `min(max(16, size/32), 128)`, 0 for
/// ranges of 16 ports or fewer (upstream portallocator `calculateRangeOffset`).
pub fn calculate_range_offset(pr: &PortRange) -> u32 {
    const MIN: u32 = 16;
    const MAX: u32 = 128;
    const STEP: u32 = 32;
    if pr.size <= MIN {
        return 0;
    }
    (pr.size / STEP).clamp(MIN, MAX)
}

impl fmt::Display for PortRange {
    /// `base-last` (upstream `PortRange.String`), empty for an empty range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.size == 0 {
            return Ok(());
        }
        write!(f, "{}-{}", self.base, u32::from(self.base) + self.size - 1)
    }
}

impl FromStr for PortRange {
    type Err = Error;

    /// `min-max`, `min+offset` or a single port, as apimachinery's `ParsePortRange`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = || Error::Parse(value.to_string());
        let value = value.trim();
        if value.is_empty() {
            return Ok(PortRange { base: 0, size: 0 });
        }
        let port = |s: &str| -> Result<u32, Error> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let p: u32 = s.parse().map_err(|_| err())?;
            if p > 65535 { Err(err()) } else { Ok(p) }
        };
        let (low, high) = if let Some((a, b)) = value.split_once('-') {
            (port(a)?, port(b)?)
        } else if let Some((a, b)) = value.split_once('+') {
            let low = port(a)?;
            (low, port(b).map(|o| low + o)?)
        } else {
            let p = port(value)?;
            (p, p)
        };
        if high < low || high > 65535 {
            return Err(err());
        }
        Ok(PortRange {
            base: u16::try_from(low).map_err(|_| err())?,
            size: high - low + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn pr(s: &str) -> PortRange {
        s.parse().unwrap()
    }

    /// apimachinery's TestPortRange (the parsing cases).
    #[test]
    fn parse_port_range() {
        for (input, ok, display) in [
            ("100-200", true, "100-200"),
            (" 100-200 ", true, "100-200"),
            ("0-0", true, "0-0"),
            ("", true, ""),
            ("100", true, "100-100"),
            ("100 - 200", false, ""),
            ("-100", false, ""),
            ("100-", false, ""),
            ("200-100", false, ""),
            ("60000-70000", false, ""),
            ("70000-80000", false, ""),
            ("70000+80000", false, ""),
            ("1+0", true, "1-1"),
            ("0+0", true, "0-0"),
            ("1+-1", false, ""),
            ("1-+1", false, ""),
            ("100+200", true, "100-300"),
            ("65535-65535", true, "65535-65535"),
            ("65535+0", true, "65535-65535"),
            ("65535+1", false, ""),
        ] {
            let got = input.parse::<PortRange>();
            assert_eq!(got.is_ok(), ok, "{input:?}: {got:?}");
            if let Ok(r) = got {
                assert_eq!(r.to_string(), display, "{input:?}");
            }
        }
    }

    /// upstream TestAllocate: every port of the range once, the neighbours refused.
    #[test]
    fn allocate() {
        let r = pr("10000-10200");
        assert_eq!(r.size(), 201);
        let all: Vec<u16> = r.candidates(42).collect();
        let distinct: BTreeSet<u16> = all.iter().copied().collect();
        assert_eq!(all.len(), 201);
        assert_eq!(distinct.len(), 201);
        assert_eq!(*distinct.first().unwrap(), 10000);
        assert_eq!(*distinct.last().unwrap(), 10200);
        assert_eq!(r.check(10000), Ok(10000));
        assert_eq!(r.check(10200), Ok(10200));
        for out in [9999, 10201, 0, -1, 70000] {
            assert_eq!(r.check(out), Err(Error::NotInRange(r)), "{out}");
        }
    }

    /// upstream TestAllocateReserved: with the default range the first allocations stay
    /// above the 86-port static band (2768/32).
    #[test]
    fn allocate_reserved() {
        let r = pr("30000-32767");
        let offset = calculate_range_offset(&r);
        assert_eq!(offset, 86);
        for random in [0, 5, u64::MAX] {
            let order: Vec<u16> = r.candidates(random).collect();
            let dynamic = (r.size() - offset) as usize;
            assert!(order[..dynamic].iter().all(|p| *p >= 30086));
            assert!(order[dynamic..].iter().all(|p| *p < 30086));
        }
    }

    /// upstream's calculateRangeOffset table for ports.
    #[test]
    fn calculate_range_offset_table() {
        for (range, want) in [
            ("30000-30015", 0),  // 16
            ("30000-30016", 16), // 17
            ("30000-30511", 16), // 512
            ("30000-31023", 32), // 1024
            ("30000-32767", 86), // 2768
            ("30000-34095", 128),
            ("1-65535", 128),
        ] {
            assert_eq!(calculate_range_offset(&pr(range)), want, "{range}");
        }
    }

    #[test]
    fn messages_are_upstreams() {
        assert_eq!(
            pr("30000-32767").check(80).unwrap_err().to_string(),
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        assert_eq!(
            Error::Allocated.to_string(),
            "provided port is already allocated"
        );
    }
}
