//! kube-proxy's nftables mode (pkg/proxy/nftables): [`proxier`] computes the
//! transactions, [`transaction`] is their model and `nft -f` text, [`names`] the chain
//! names, [`interface`] the kernel behind a trait with [`fake`] for tests, [`sync`] one
//! sync through that trait.

pub mod config;
mod element_storage;
pub mod fake;
pub mod interface;
pub mod names;
pub mod nft;
pub mod proxier;
pub mod sync;
pub mod transaction;

#[cfg(test)]
pub(crate) mod helpers_test;
#[cfg(test)]
mod nft_test;
#[cfg(test)]
mod packet_flow_test;
#[cfg(test)]
mod proxier_test;
#[cfg(test)]
pub(crate) mod scale_test;
#[cfg(test)]
pub(crate) mod tracer_test;

pub use proxier::{
    ExistingObjects, LocalDetector, NftablesProxier, NodePortAddresses, ProxierConfig,
    REKUBE_PROXY_TABLE, SyncPlan, cleanup_transaction,
};
pub use sync::sync_once;
pub use transaction::Transaction;
