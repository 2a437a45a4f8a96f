//! rekube-node-agent, rekube's kubelet. Today: the image service ([`image`]): pulls,
//! a content-addressed store, layer unpacking, pull policy and backoff, import, and
//! garbage collection. The agent ([`agent`]): node registration and heartbeats, and the
//! pods bound to the node synced by [`agent::sync_pod`] (or [`agent::hollow`]) with the
//! decisions of [`kubelet`].
//! The container runtime ([`runtime`], Linux): pod sandboxes, containers (create, start,
//! wait, stop, remove, exec), cgroups, overlayfs rootfs, CRI logs.
//! The service proxy ([`proxy`]): the nftables mode's rule computation (docs/proxy.md).
//! The runtime side of CNI ([`cni`]): network config lists, plugins, cached results.
//! Pod volumes ([`volume`]): the volume plugins, the atomic writer, the pods' volume dirs.
//! The plugin manager ([`plugin_manager`]): CSI drivers registered through the plugin
//! registration directory.

#[cfg(target_os = "linux")]
pub mod agent;
pub mod cni;
pub mod flowcontrol;
pub mod image;
pub mod kubelet;
#[cfg(target_os = "linux")]
pub mod plugin_manager;
pub mod proxy;
#[cfg(target_os = "linux")]
pub mod runtime;
#[cfg(target_os = "linux")]
pub mod volume;
