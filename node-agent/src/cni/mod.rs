//! The runtime side of CNI (the Container Network Interface, spec 1.1), as containerd's
//! CRI plugin does it for a kubelet through libcni (github.com/containernetworking/cni,
//! `libcni`): the network configuration lists of a conf dir ([`config`]), the plugins
//! found in the bin dirs and called with the spec's environment and stdin ([`invoke`]),
//! ADD/CHECK/DEL/STATUS/GC of a list with each plugin's result chained into the next
//! (`prevResult`), and the results cached on disk so that DEL works after the agent
//! restarts ([`cache`], libcni's format) ([`runtime`]).
//!
//! No network code of its own: whatever plugins the conf dir names are what runs.
pub mod cache;
pub mod config;
pub mod default_network;
pub mod invoke;
pub mod pod_network;
pub mod runtime;

pub use config::{NetworkConfigList, PluginConfig};
pub use invoke::{PluginError, PluginExec, RealExec};
pub use runtime::{CniRuntime, RuntimeConf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cni config {path}: {message}")]
    Config { path: String, message: String },
    #[error("no cni network config in {dir} (*.conf, *.conflist, *.json)")]
    NoConfig { dir: String },
    #[error("cni plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("cni plugin {plugin} {command} failed: {source}")]
    Plugin {
        plugin: String,
        command: &'static str,
        source: PluginError,
    },
    #[error("cni network {network} {command} for {container}: {message}")]
    Network {
        network: String,
        command: &'static str,
        container: String,
        message: String,
    },
    #[error("cni cache {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
}
