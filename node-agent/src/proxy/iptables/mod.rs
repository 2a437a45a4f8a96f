//! kube-proxy's iptables mode (pkg/proxy/iptables): [`proxier`] computes the
//! `iptables-restore` input of the filter and nat tables, [`names`] the chain names
//! (rekube's `REKUBE-` prefix, upstream's hashes), [`interface`] the kernel behind a trait
//! with [`exec`] (Debian's iptables) and [`fake`] for tests, [`sync`] one sync and the
//! cleanup through that trait.

pub mod exec;
pub mod fake;
pub mod interface;
pub mod names;
pub mod proxier;
pub mod sync;

#[cfg(test)]
mod helpers_test;
#[cfg(test)]
mod ipt_test;
#[cfg(test)]
mod packet_flow_test;
#[cfg(test)]
mod proxier_test;
#[cfg(test)]
mod scale_test;
#[cfg(test)]
mod tracer_test;

pub use exec::IptablesExec;
pub use interface::{Iptables, IptablesError, Table};
pub use proxier::{IptablesOptions, IptablesProxier, RestorePlan};
pub use sync::{cleanup, sync_once};
