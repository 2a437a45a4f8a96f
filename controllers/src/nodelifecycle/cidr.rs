//! Pod CIDR allocation for nodes (upstream:
//! `pkg/controller/nodeipam/ipam/cidrset/cidr_set.go` and the range allocator of
//! `pkg/controller/nodeipam/ipam/range_allocator.go`).
//!
//! A [`CidrSet`] splits the cluster CIDR (`--cluster-cidr`) into blocks of the node mask
//! size (`--node-cidr-mask-size`) and tracks which blocks are used in a bitmap. IPv4 and
//! IPv6 are both supported; addresses are handled as `u128` internally.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use rekube_crds::Node;

/// Upstream default `--node-cidr-mask-size-ipv4`.
pub const DEFAULT_NODE_CIDR_MASK_SIZE_IPV4: u8 = 24;
/// Upstream default `--node-cidr-mask-size-ipv6`.
pub const DEFAULT_NODE_CIDR_MASK_SIZE_IPV6: u8 = 64;
/// The node mask may be at most this many bits longer than an IPv6 cluster mask
/// (upstream: `clusterSubnetMaxDiff`).
pub const CLUSTER_SUBNET_MAX_DIFF: u8 = 16;

/// Errors of the CIDR allocator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// upstream `ErrCIDRRangeNoCIDRsRemaining`.
    #[error(
        "cidr allocation failed for cluster cidr {cluster_cidr}: there are no remaining cidrs left to allocate in the accepted range"
    )]
    RangeFull { cluster_cidr: IpNet },
    /// upstream `ErrCIDRSetSubNetTooBig`.
    #[error(
        "new cidr set for cluster cidr {cluster_cidr} failed: the node cidr size /{node_mask_size} is too big"
    )]
    SubnetTooBig {
        cluster_cidr: IpNet,
        node_mask_size: u8,
    },
    #[error(
        "new cidr set for cluster cidr {cluster_cidr} failed: the node cidr size /{node_mask_size} is invalid"
    )]
    InvalidNodeMaskSize {
        cluster_cidr: IpNet,
        node_mask_size: u8,
    },
    #[error("cidr {cidr} is out of the range of cluster cidr {cluster_cidr}")]
    OutOfRange { cidr: IpNet, cluster_cidr: IpNet },
    #[error("invalid cidr {value:?}: {reason}")]
    Parse { value: String, reason: String },
    #[error(
        "node {node} has an allocated cidr {cidr} at index {index} that does not exist in cluster cidrs configuration"
    )]
    NoCidrSetForIndex {
        node: String,
        cidr: String,
        index: usize,
    },
    #[error("node {node}: failed to allocate a cidr: {source}")]
    NodeAllocation {
        node: String,
        #[source]
        source: Box<CidrError>,
    },
    #[error("node {node} cidr {cidr}: {source}")]
    Node {
        node: String,
        cidr: String,
        #[source]
        source: Box<CidrError>,
    },
}

/// An IP network: an address and a prefix length (the part of Go's `net.IPNet` rekube
/// needs). Parsing with [`FromStr`] masks the address like Go's `net.ParseCIDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

fn addr_bits(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn addr_to_u128(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn u128_to_addr(v: u128, bits: u8) -> IpAddr {
    if bits == 32 {
        // Values of an IPv4 set never exceed 32 bits.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// The mask with `len` leading ones in a `bits`-wide address.
fn mask(len: u8, bits: u8) -> u128 {
    let full: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    full & !full.checked_shr(u32::from(len)).unwrap_or(0)
}

impl IpNet {
    /// A network from an address and a prefix length; the address is kept as given
    /// (not masked).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > addr_bits(&addr) {
            return Err(CidrError::Parse {
                value: format!("{addr}/{prefix_len}"),
                reason: format!("prefix length exceeds {} bits", addr_bits(&addr)),
            });
        }
        Ok(Self { addr, prefix_len })
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The network with its host bits cleared.
    pub fn network(&self) -> IpNet {
        let bits = self.bits();
        Self {
            addr: u128_to_addr(addr_to_u128(&self.addr) & mask(self.prefix_len, bits), bits),
            prefix_len: self.prefix_len,
        }
    }

    /// Whether `ip` lies within the network (upstream: `net.IPNet.Contains`); false for
    /// the other address family.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        if addr_bits(ip) != self.bits() {
            return false;
        }
        let m = mask(self.prefix_len, self.bits());
        addr_to_u128(ip) & m == addr_to_u128(&self.addr) & m
    }

    fn bits(&self) -> u8 {
        addr_bits(&self.addr)
    }

    fn value(&self) -> u128 {
        addr_to_u128(&self.addr)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpNet {
    type Err = CidrError;

    /// Parses `addr/len` and masks the address (upstream: `net.ParseCIDR`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| CidrError::Parse {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| err("missing prefix length"))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("invalid address"))?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("invalid prefix length"));
        }
        let len: u8 = len.parse().map_err(|_| err("invalid prefix length"))?;
        if len > addr_bits(&addr) {
            return Err(err("prefix length out of range"));
        }
        Ok(IpNet {
            addr,
            prefix_len: len,
        }
        .network())
    }
}

/// A set of node-sized CIDR blocks carved out of a cluster CIDR (upstream: `CidrSet`).
#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster_cidr: IpNet,
    cluster_mask_size: u8,
    node_mask_size: u8,
    max_cidrs: usize,
    allocated_cidrs: usize,
    next_candidate: usize,
    /// Bitmap of used blocks; grown lazily like Go's `big.Int`.
    used: Vec<u64>,
}

impl CidrSet {
    /// A new set over `cluster_cidr` (masked) handing out `/node_mask_size` blocks
    /// (upstream: `cidrset.NewCIDRSet`).
    pub fn new(cluster_cidr: IpNet, node_mask_size: u8) -> Result<Self, CidrError> {
        let cluster_cidr = cluster_cidr.network();
        let bits = cluster_cidr.bits();
        let cluster_mask_size = cluster_cidr.prefix_len;
        if node_mask_size > bits || node_mask_size < cluster_mask_size {
            return Err(CidrError::InvalidNodeMaskSize {
                cluster_cidr,
                node_mask_size,
            });
        }
        let diff = node_mask_size - cluster_mask_size;
        if bits == 128 && diff > CLUSTER_SUBNET_MAX_DIFF {
            return Err(CidrError::SubnetTooBig {
                cluster_cidr,
                node_mask_size,
            });
        }
        if u32::from(diff) >= usize::BITS {
            return Err(CidrError::SubnetTooBig {
                cluster_cidr,
                node_mask_size,
            });
        }
        Ok(Self {
            cluster_cidr,
            cluster_mask_size,
            node_mask_size,
            max_cidrs: 1usize << diff,
            allocated_cidrs: 0,
            next_candidate: 0,
            used: Vec::new(),
        })
    }

    /// Parses `--cluster-cidr` and builds the set (upstream: the flag handling of
    /// `startNodeIpamController` followed by `cidrset.NewCIDRSet`).
    pub fn parse(cluster_cidr: &str, node_mask_size: u8) -> Result<Self, CidrError> {
        Self::new(cluster_cidr.parse()?, node_mask_size)
    }

    /// The (masked) cluster CIDR.
    pub fn cluster_cidr(&self) -> IpNet {
        self.cluster_cidr
    }

    /// The node mask size.
    pub fn node_mask_size(&self) -> u8 {
        self.node_mask_size
    }

    /// How many blocks the set holds (upstream: `maxCIDRs`).
    pub fn max_cidrs(&self) -> usize {
        self.max_cidrs
    }

    /// How many blocks are in use (upstream: `allocatedCIDRs`).
    pub fn allocated(&self) -> usize {
        self.allocated_cidrs
    }

    fn bit(&self, i: usize) -> bool {
        self.used
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    fn set_bit(&mut self, i: usize, on: bool) {
        let w = i / 64;
        if w >= self.used.len() {
            if !on {
                return;
            }
            self.used.resize(w + 1, 0);
        }
        if on {
            self.used[w] |= 1u64 << (i % 64);
        } else {
            self.used[w] &= !(1u64 << (i % 64));
        }
    }

    /// The block at `index` (upstream: `indexToCIDRBlock`).
    fn index_to_cidr_block(&self, index: usize) -> IpNet {
        let bits = self.cluster_cidr.bits();
        let shift = bits - self.node_mask_size;
        // A /0 block of IPv6 shifts by 128: no bits to set (and `<<` would overflow).
        let offset = (index as u128).checked_shl(u32::from(shift)).unwrap_or(0);
        let v = self.cluster_cidr.value() | offset;
        IpNet {
            addr: u128_to_addr(v, bits),
            prefix_len: self.node_mask_size,
        }
    }

    /// Allocates the next free block, marking it used (upstream: `CidrSet.AllocateNext`).
    pub fn allocate_next(&mut self) -> Result<IpNet, CidrError> {
        if self.allocated_cidrs == self.max_cidrs {
            return Err(CidrError::RangeFull {
                cluster_cidr: self.cluster_cidr,
            });
        }
        let mut candidate = self.next_candidate;
        for _ in 0..self.max_cidrs {
            if !self.bit(candidate) {
                break;
            }
            candidate = (candidate + 1) % self.max_cidrs;
        }
        self.next_candidate = (candidate + 1) % self.max_cidrs;
        self.set_bit(candidate, true);
        self.allocated_cidrs += 1;
        Ok(self.index_to_cidr_block(candidate))
    }

    /// The index of the block holding `ip` (upstream: `getIndexForIP`).
    fn index_for_ip(&self, ip: &IpAddr) -> Result<usize, CidrError> {
        let bits = self.cluster_cidr.bits();
        let out_of_range = || CidrError::OutOfRange {
            cidr: IpNet {
                addr: *ip,
                prefix_len: self.node_mask_size,
            },
            cluster_cidr: self.cluster_cidr,
        };
        if addr_bits(ip) != bits {
            return Err(out_of_range());
        }
        let shift = bits - self.node_mask_size;
        let x = self.cluster_cidr.value() ^ addr_to_u128(ip);
        let index = if u32::from(shift) >= u128::BITS {
            0
        } else {
            x >> shift
        };
        match usize::try_from(index) {
            Ok(i) if i < self.max_cidrs => Ok(i),
            _ => Err(out_of_range()),
        }
    }

    /// The first and last block indices covered by `cidr` (upstream:
    /// `getBeginningAndEndIndices`).
    fn beginning_and_end_indices(&self, cidr: &IpNet) -> Result<(usize, usize), CidrError> {
        let out_of_range = || CidrError::OutOfRange {
            cidr: *cidr,
            cluster_cidr: self.cluster_cidr,
        };
        let bits = self.cluster_cidr.bits();
        if cidr.bits() != bits {
            return Err(out_of_range());
        }
        // The networks overlap when they agree on the shorter prefix.
        let common = mask(cidr.prefix_len.min(self.cluster_mask_size), bits);
        if cidr.value() & common != self.cluster_cidr.value() & common {
            return Err(out_of_range());
        }
        if self.cluster_mask_size < cidr.prefix_len {
            let node_mask = mask(self.node_mask_size, bits);
            let first = cidr.value() & node_mask;
            let last =
                (cidr.value() | (!mask(cidr.prefix_len, bits) & mask(bits, bits))) & node_mask;
            let begin = self.index_for_ip(&u128_to_addr(first, bits))?;
            let end = self.index_for_ip(&u128_to_addr(last, bits))?;
            Ok((begin, end))
        } else {
            Ok((0, self.max_cidrs - 1))
        }
    }

    /// Marks every block within `cidr` free (upstream: `CidrSet.Release`).
    pub fn release(&mut self, cidr: &IpNet) -> Result<(), CidrError> {
        let (begin, end) = self.beginning_and_end_indices(cidr)?;
        for i in begin..=end {
            if self.bit(i) {
                self.set_bit(i, false);
                self.allocated_cidrs -= 1;
            }
        }
        Ok(())
    }

    /// Marks every block within `cidr` used; succeeds when already used (upstream:
    /// `CidrSet.Occupy`).
    pub fn occupy(&mut self, cidr: &IpNet) -> Result<(), CidrError> {
        let (begin, end) = self.beginning_and_end_indices(cidr)?;
        for i in begin..=end {
            if !self.bit(i) {
                self.set_bit(i, true);
                self.allocated_cidrs += 1;
            }
        }
        Ok(())
    }

    /// Occupies the blocks overlapping the service CIDR so that they are never handed to
    /// nodes; a service CIDR not overlapping the cluster CIDR is ignored (upstream:
    /// `rangeAllocator.filterOutServiceRange`).
    pub fn filter_out_service_range(&mut self, service_cidr: &IpNet) -> Result<(), CidrError> {
        match self.occupy(service_cidr) {
            Err(CidrError::OutOfRange { .. }) => Ok(()),
            other => other,
        }
    }
}

/// The pod CIDRs recorded on the node: `spec.podCIDRs`, else `spec.podCIDR`.
pub fn node_pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match spec.pod_cidrs.as_ref() {
        Some(cidrs) if !cidrs.is_empty() => cidrs.clone(),
        _ => spec
            .pod_cidr
            .iter()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect(),
    }
}

fn node_name(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

/// Marks the node's pod CIDRs used (upstream: `rangeAllocator.occupyCIDRs`, single
/// cluster CIDR).
pub fn occupy_node_cidrs(node: &Node, set: &mut CidrSet) -> Result<(), CidrError> {
    for (index, cidr) in node_pod_cidrs(node).into_iter().enumerate() {
        let name = node_name(node);
        let parsed: IpNet = cidr.parse().map_err(|e| CidrError::Node {
            node: name.clone(),
            cidr: cidr.clone(),
            source: Box::new(e),
        })?;
        if index >= 1 {
            return Err(CidrError::NoCidrSetForIndex {
                node: name,
                cidr,
                index,
            });
        }
        set.occupy(&parsed).map_err(|e| CidrError::Node {
            node: name,
            cidr: cidr.clone(),
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// Releases the node's pod CIDRs, e.g. when the node is deleted (upstream:
/// `rangeAllocator.ReleaseCIDR`).
pub fn release_node_cidrs(node: &Node, set: &mut CidrSet) -> Result<(), CidrError> {
    for (index, cidr) in node_pod_cidrs(node).into_iter().enumerate() {
        let name = node_name(node);
        let parsed: IpNet = cidr.parse().map_err(|e| CidrError::Node {
            node: name.clone(),
            cidr: cidr.clone(),
            source: Box::new(e),
        })?;
        if index >= 1 {
            return Err(CidrError::NoCidrSetForIndex {
                node: name,
                cidr,
                index,
            });
        }
        set.release(&parsed).map_err(|e| CidrError::Node {
            node: name,
            cidr: cidr.clone(),
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// Like [`allocate_pod_cidrs`], also returning the errors met: unparsable or
/// out-of-range existing CIDRs, and nodes left without a CIDR because the range is full
/// (upstream: `NewCIDRRangeAllocator`'s occupy loop then `AllocateOrOccupyCIDR` per node;
/// upstream records the event `CIDRNotAvailable` for the latter).
pub fn try_allocate_pod_cidrs(
    nodes: &[Node],
    set: &mut CidrSet,
) -> (Vec<(String, String)>, Vec<CidrError>) {
    let mut errors = Vec::new();
    for node in nodes {
        if let Err(e) = occupy_node_cidrs(node, set) {
            errors.push(e);
        }
    }
    let mut assigned = Vec::new();
    for node in nodes {
        if !node_pod_cidrs(node).is_empty() {
            continue;
        }
        match set.allocate_next() {
            Ok(cidr) => assigned.push((node_name(node), cidr.to_string())),
            Err(e) => {
                errors.push(CidrError::NodeAllocation {
                    node: node_name(node),
                    source: Box::new(e),
                });
            }
        }
    }
    (assigned, errors)
}

/// Assigns a pod CIDR to every node without `spec.podCIDR`/`spec.podCIDRs`, in the
/// order given; existing CIDRs are occupied first so none is handed out twice. The
/// caller patches `spec.podCIDR` and `spec.podCIDRs` with the returned CIDR, and calls
/// [`CidrSet::release`] (or [`release_node_cidrs`]) for deleted nodes. Errors are
/// dropped; see [`try_allocate_pod_cidrs`] (upstream: `rangeAllocator`,
/// `AllocateOrOccupyCIDR`).
pub fn allocate_pod_cidrs(nodes: &[Node], set: &mut CidrSet) -> Vec<(String, String)> {
    try_allocate_pod_cidrs(nodes, set).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn set(cluster: &str, mask: u8) -> CidrSet {
        CidrSet::new(net(cluster), mask).unwrap()
    }

    #[test]
    fn parse_masks_like_go() {
        assert_eq!(net("192.168.5.219/28").to_string(), "192.168.5.208/28");
        assert_eq!(
            net("2001:0db8:1234:3::/48").to_string(),
            "2001:db8:1234::/48"
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "x/8",
            "10.0.0.0/-1",
            "::/129",
            "1.2.3.4/",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    /// upstream TestCIDRSetFullyAllocated
    #[test]
    fn cidr_set_fully_allocated() {
        for (cluster, mask, expected) in [
            ("127.123.234.0/30", 30, "127.123.234.0/30"),
            ("beef:1234::/30", 30, "beef:1234::/30"),
        ] {
            let mut a = set(cluster, mask);
            let p = a.allocate_next().unwrap();
            assert_eq!(p.to_string(), expected);
            assert!(matches!(
                a.allocate_next(),
                Err(CidrError::RangeFull { .. })
            ));
            a.release(&p).unwrap();
            let p = a.allocate_next().unwrap();
            assert_eq!(p.to_string(), expected);
            assert!(a.allocate_next().is_err());
        }
    }

    /// upstream TestIndexToCIDRBlock
    #[test]
    fn index_to_cidr_block() {
        let cases = [
            ("127.123.3.0/16", 24, 0, "127.123.0.0/24"),
            ("127.123.0.0/16", 24, 15, "127.123.15.0/24"),
            ("192.168.5.219/28", 32, 5, "192.168.5.213/32"),
            ("2001:0db8:1234:3::/48", 64, 0, "2001:db8:1234::/64"),
            ("2001:0db8:1234::/48", 64, 15, "2001:db8:1234:f::/64"),
            (
                "2001:0db8:85a3::8a2e:0370:7334/50",
                63,
                6425,
                "2001:db8:85a3:3232::/63",
            ),
            ("2001:0db8::/32", 48, 0, "2001:db8::/48"),
            ("2001:0db8::/32", 48, 15, "2001:db8:f::/48"),
            (
                "2001:0db8:85a3::8a2e:0370:7334/32",
                48,
                6425,
                "2001:db8:1919::/48",
            ),
            ("2001:0db8:1234:ff00::/56", 72, 0, "2001:db8:1234:ff00::/72"),
            (
                "2001:0db8:1234:ff00::/56",
                72,
                15,
                "2001:db8:1234:ff00:f00::/72",
            ),
            (
                "2001:0db8:1234:ff00::0370:7334/56",
                72,
                6425,
                "2001:db8:1234:ff19:1900::/72",
            ),
            (
                "2001:0db8:1234:0:1234::/80",
                96,
                0,
                "2001:db8:1234:0:1234::/96",
            ),
            (
                "2001:0db8:1234:0:1234::/80",
                96,
                15,
                "2001:db8:1234:0:1234:f::/96",
            ),
            (
                "2001:0db8:1234:ff00::0370:7334/80",
                96,
                6425,
                "2001:db8:1234:ff00:0:1919::/96",
            ),
        ];
        for (cluster, mask, index, expected) in cases {
            let a = set(cluster, mask);
            assert_eq!(
                a.index_to_cidr_block(index).to_string(),
                expected,
                "{cluster} {index}"
            );
        }
    }

    /// upstream TestCIDRSet_RandomishAllocation
    #[test]
    fn randomish_allocation() {
        for cluster in ["127.123.234.0/16", "beef:1234::/16"] {
            let mut a = set(cluster, 24);
            let cidrs: Vec<_> = (0..256).map(|_| a.allocate_next().unwrap()).collect();
            assert!(a.allocate_next().is_err());
            for c in &cidrs {
                a.release(c).unwrap();
            }
            let rcidrs: Vec<_> = (0..256).map(|_| a.allocate_next().unwrap()).collect();
            assert!(a.allocate_next().is_err());
            assert_eq!(cidrs, rcidrs, "{cluster}");
        }
    }

    /// upstream TestCIDRSet_AllocationOccupied
    #[test]
    fn allocation_occupied() {
        for cluster in ["127.123.234.0/16", "beef:1234::/16"] {
            let mut a = set(cluster, 24);
            let n = 256;
            let cidrs: Vec<_> = (0..n).map(|_| a.allocate_next().unwrap()).collect();
            assert!(a.allocate_next().is_err());
            for c in &cidrs {
                a.release(c).unwrap();
            }
            for c in &cidrs[n / 2..] {
                a.occupy(c).unwrap();
            }
            a.occupy(&cidrs[n / 2]).unwrap();
            let mut rcidrs: Vec<_> = (0..n / 2).map(|_| a.allocate_next().unwrap()).collect();
            assert!(a.allocate_next().is_err());
            rcidrs.extend_from_slice(&cidrs[n / 2..]);
            assert_eq!(cidrs, rcidrs, "{cluster}");
        }
    }

    /// upstream TestDoubleOccupyRelease
    #[test]
    fn double_occupy_release() {
        let mut a = set("10.42.0.0/16", 24);
        let ops = [
            ("10.42.5.0/24", "occupy", 1),
            ("10.42.9.0/24", "occupy", 2),
            ("10.42.8.0/22", "occupy", 5),
            ("10.42.9.0/24", "occupy", 5),
            ("10.42.9.0/24", "release", 4),
            ("10.42.9.0/24", "release", 4),
            ("10.42.4.0/22", "release", 3),
        ];
        for (cidr, op, occupied) in ops {
            match op {
                "occupy" => a.occupy(&net(cidr)).unwrap(),
                _ => a.release(&net(cidr)).unwrap(),
            }
            assert_eq!(a.allocated(), occupied, "{op} {cidr}");
        }
        for _ in 0..(256 - 3) {
            a.allocate_next().unwrap();
        }
        assert!(a.allocate_next().is_err());
    }

    /// upstream TestGetBitforCIDR
    #[test]
    fn get_bit_for_cidr() {
        let cases: [(&str, u8, &str, Option<usize>); 14] = [
            ("127.0.0.0/8", 16, "127.0.0.0/16", Some(0)),
            ("be00::/8", 16, "be00::/16", Some(0)),
            ("127.0.0.0/8", 16, "127.123.0.0/16", Some(123)),
            ("be00::/8", 16, "beef::/16", Some(0xef)),
            ("127.0.0.0/8", 16, "127.168.0.0/16", Some(168)),
            ("be00::/8", 16, "be68::/16", Some(0x68)),
            ("127.0.0.0/8", 16, "127.224.0.0/16", Some(224)),
            ("be00::/8", 16, "be24::/16", Some(0x24)),
            ("192.168.0.0/16", 24, "192.168.12.0/24", Some(12)),
            ("beef::/16", 24, "beef:1200::/24", Some(0x12)),
            ("192.168.0.0/16", 24, "192.168.151.0/24", Some(151)),
            ("beef::/16", 24, "beef:9700::/24", Some(0x97)),
            ("192.168.0.0/16", 24, "127.168.224.0/24", None),
            ("beef::/16", 24, "2001:db00::/24", None),
        ];
        for (cluster, mask, sub, expected) in cases {
            let a = set(cluster, mask);
            let got = a.index_for_ip(&net(sub).addr()).ok();
            assert_eq!(got, expected, "{cluster} {sub}");
        }
    }

    /// upstream TestOccupy
    #[test]
    fn occupy_sets_expected_bits() {
        let cases = [
            ("127.0.0.0/8", 16, "127.0.0.0/8", 0, 255),
            ("2001:beef:1200::/40", 48, "2001:beef:1200::/40", 0, 255),
            ("127.0.0.0/8", 16, "127.0.0.0/2", 0, 255),
            ("2001:beef:1200::/40", 48, "2001:beef:1234::/34", 0, 255),
            ("127.0.0.0/8", 16, "127.0.0.0/16", 0, 0),
            ("2001:beef:1200::/40", 48, "2001:beef:1200::/48", 0, 0),
            ("127.0.0.0/8", 32, "127.0.0.0/16", 0, 65535),
            ("2001:beef:1200::/48", 64, "2001:beef:1200::/48", 0, 65535),
            ("127.0.0.0/7", 16, "127.0.0.0/15", 256, 257),
            ("2001:beef:7f00::/39", 48, "2001:beef:7f00::/47", 256, 257),
            ("127.0.0.0/7", 15, "127.0.0.0/15", 128, 128),
            ("2001:beef:7f00::/39", 47, "2001:beef:7f00::/47", 128, 128),
            ("127.0.0.0/7", 18, "127.0.0.0/15", 1024, 1031),
            ("2001:beef:7f00::/39", 50, "2001:beef:7f00::/47", 1024, 1031),
        ];
        for (cluster, mask, sub, begin, end) in cases {
            let mut a = set(cluster, mask);
            a.occupy(&net(sub)).unwrap();
            let used: Vec<usize> = (0..a.max_cidrs()).filter(|i| a.bit(*i)).collect();
            let expected: Vec<usize> = (begin..=end).collect();
            assert_eq!(used, expected, "{cluster} /{mask} {sub}");
            assert_eq!(a.allocated(), end - begin + 1);
        }
    }

    /// upstream TestCIDRSetv6
    #[test]
    fn cidr_set_v6() {
        let mut a = set("127.0.0.0/8", 32);
        assert_eq!(a.allocate_next().unwrap().to_string(), "127.0.0.0/32");
        assert_eq!(a.allocate_next().unwrap().to_string(), "127.0.0.1/32");
        assert!(matches!(
            CidrSet::new(net("beef:1234::/32"), 49),
            Err(CidrError::SubnetTooBig { .. })
        ));
        let mut a = set("2001:beef:1234:369b::/60", 64);
        assert_eq!(
            a.allocate_next().unwrap().to_string(),
            "2001:beef:1234:3690::/64"
        );
        assert_eq!(
            a.allocate_next().unwrap().to_string(),
            "2001:beef:1234:3691::/64"
        );
    }

    /// upstream TestCidrSetMetrics (the usage part): release and occupy of the whole range.
    #[test]
    fn release_and_occupy_whole_range() {
        let mut a = set("10.0.0.0/16", 24);
        for _ in 0..256 {
            a.allocate_next().unwrap();
        }
        a.release(&net("10.0.0.0/16")).unwrap();
        assert_eq!(a.allocated(), 0);
        a.occupy(&net("10.0.0.0/16")).unwrap();
        assert_eq!(a.allocated(), 256);
    }

    /// upstream TestCidrSetMetricsHistogram: occupy does not move nextCandidate.
    #[test]
    fn allocate_after_occupied_half_skips_used() {
        let mut a = set("10.0.0.0/16", 24);
        a.occupy(&net("10.0.0.0/17")).unwrap();
        assert_eq!(a.allocate_next().unwrap().to_string(), "10.0.128.0/24");
    }

    #[test]
    fn errors_name_the_cidrs() {
        let mut a = set("10.0.0.0/16", 24);
        let e = a.occupy(&net("10.1.0.0/24")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cidr 10.1.0.0/24 is out of the range of cluster cidr 10.0.0.0/16"
        );
        assert!(a.occupy(&net("fd00::/64")).is_err());
        assert!(CidrSet::new(net("10.0.0.0/16"), 8).is_err());
        assert!(CidrSet::new(net("10.0.0.0/16"), 33).is_err());
        let mut full = set("10.0.0.0/24", 24);
        full.allocate_next().unwrap();
        assert_eq!(
            full.allocate_next().unwrap_err().to_string(),
            "cidr allocation failed for cluster cidr 10.0.0.0/24: there are no remaining cidrs left to allocate in the accepted range"
        );
    }

    #[test]
    fn filter_out_service_range() {
        let mut a = set("10.0.0.0/16", 24);
        a.filter_out_service_range(&net("10.0.0.0/23")).unwrap();
        a.filter_out_service_range(&net("10.96.0.0/12")).unwrap();
        assert_eq!(a.allocated(), 2);
        assert_eq!(a.allocate_next().unwrap().to_string(), "10.0.2.0/24");
    }

    fn node(name: &str, cidr: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                pod_cidrs: cidr.map(|c| vec![c.into()]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn allocate_pod_cidrs_table() {
        struct Case {
            name: &'static str,
            nodes: Vec<Node>,
            expected: Vec<(&'static str, &'static str)>,
            errors: usize,
        }
        let cases = vec![
            Case {
                name: "fresh nodes get consecutive blocks",
                nodes: vec![node("a", None), node("b", None)],
                expected: vec![("a", "10.244.0.0/24"), ("b", "10.244.1.0/24")],
                errors: 0,
            },
            Case {
                name: "existing cidrs are occupied first, even when listed after",
                nodes: vec![node("a", None), node("b", Some("10.244.0.0/24"))],
                expected: vec![("a", "10.244.1.0/24")],
                errors: 0,
            },
            Case {
                name: "nodes with cidrs get nothing",
                nodes: vec![node("a", Some("10.244.3.0/24"))],
                expected: vec![],
                errors: 0,
            },
            Case {
                name: "garbage and out-of-range cidrs are reported",
                nodes: vec![
                    node("a", Some("garbage")),
                    node("b", Some("192.168.0.0/24")),
                    node("c", None),
                ],
                expected: vec![("c", "10.244.0.0/24")],
                errors: 2,
            },
            Case {
                name: "full range leaves the rest without cidr",
                nodes: (0..258).map(|i| node(&format!("n{i}"), None)).collect(),
                expected: vec![],
                errors: 2,
            },
        ];
        for case in cases {
            let mut s = set("10.244.0.0/16", DEFAULT_NODE_CIDR_MASK_SIZE_IPV4);
            let (got, errors) = try_allocate_pod_cidrs(&case.nodes, &mut s);
            assert_eq!(errors.len(), case.errors, "{}: {errors:?}", case.name);
            if case.name.starts_with("full range") {
                assert_eq!(got.len(), 256);
                assert!(
                    errors[0].to_string().starts_with(
                        "node n256: failed to allocate a cidr: cidr allocation failed"
                    )
                );
                continue;
            }
            let expected: Vec<(String, String)> = case
                .expected
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect();
            assert_eq!(got, expected, "{}", case.name);
        }
    }

    #[test]
    fn released_node_cidr_is_reused() {
        let mut s = set("10.244.0.0/16", 24);
        let nodes = vec![node("a", None), node("b", None)];
        let got = allocate_pod_cidrs(&nodes, &mut s);
        let a = node("a", Some(&got[0].1));
        release_node_cidrs(&a, &mut s).unwrap();
        assert_eq!(s.allocated(), 1);
        // the allocator goes round before reusing the freed block
        let mut last = None;
        for _ in 0..255 {
            last = Some(s.allocate_next().unwrap());
        }
        assert_eq!(last.unwrap().to_string(), "10.244.0.0/24");
    }

    // --- Overflow: a /0 node block shifts by the whole address width.

    #[test]
    fn overflow_whole_address_space_blocks() {
        for (cluster, block) in [("::/0", "::/0"), ("0.0.0.0/0", "0.0.0.0/0")] {
            let mut s = set(cluster, 0);
            assert_eq!(s.max_cidrs(), 1);
            assert_eq!(s.allocate_next().unwrap().to_string(), block);
            assert!(matches!(
                s.allocate_next(),
                Err(CidrError::RangeFull { .. })
            ));
            s.release(&net(block)).unwrap();
            assert_eq!(s.allocated(), 0);
        }
    }
}
