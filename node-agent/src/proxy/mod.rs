//! The service proxy (kube-proxy's job; docs/proxy.md). The decision core of the nftables
//! mode: the input model ([`types`]) and its conversion from rekube Services and EndpointSlices
//! ([`convert`]), upstream's endpoint selection ([`topology`]), [`nftables`] (from a
//! snapshot to the `nft -f` transaction, full or partial), the watch events tracked per
//! Service ([`change_tracker`]), the sync pacing ([`bounded_frequency_runner`]) and the
//! stale UDP conntrack entries ([`conntrack`]), the health checks ([`healthcheck`]: the
//! proxy's `/healthz` and the Services' health check node ports). The I/O shell is
//! [`server`]: watches, the sync loop, the real `nft` or `iptables-restore`; [`iptables`]
//! is the other mode; [`options`] are kube-proxy's flags.

pub mod bounded_frequency_runner;
pub mod change_tracker;
pub mod command;
pub mod conntrack;
pub mod convert;
pub mod healthcheck;
pub mod iptables;
#[cfg(test)]
pub(crate) mod netns_test;
pub mod nftables;
pub mod options;
pub mod server;
pub mod topology;
pub mod types;
