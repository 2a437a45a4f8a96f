//! The service proxy (kube-proxy's job; docs/proxy.md). Today the decision core of the
//! nftables mode: the input model ([`types`]) and its conversion from rekube Services and
//! Endpoints ([`convert`]), upstream's endpoint selection ([`topology`]), and
//! [`nftables`]: from a snapshot to the `nft -f` transaction, full or partial. The watch
//! loop, the real `nft` calls, conntrack flushing and the iptables mode are to come.

pub mod convert;
pub mod nftables;
pub mod topology;
pub mod types;
