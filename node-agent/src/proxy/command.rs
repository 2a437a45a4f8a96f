//! `rekube-node-agent proxy` (kube-proxy run alone: the service proxy without the
//! kubelet twin) and `rekube-node-agent cleanup` (kube-proxy's `--cleanup`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

use super::options::{self, ProxyMode, ProxyOptions};
use super::server::{self, ProxyServerConfig};

#[derive(Args, Debug, Clone)]
pub struct ProxyCommand {
    /// The Node this proxy serves (its endpoints are local; kube-proxy's
    /// --hostname-override); the host name when empty.
    #[arg(long, default_value = "")]
    pub node_name: String,
    /// The node's IPs (comma-separated; kube-proxy's --bind-address / the Node's
    /// InternalIPs): the IP families proxied and the `primary` NodePort addresses. Every
    /// non-loopback IPv4 address of the host when empty (none with --netns).
    #[arg(long, value_delimiter = ',')]
    pub node_ip: Vec<IpAddr>,
    /// Run nft (or iptables) and conntrack inside this network namespace (a path such as
    /// /run/netns/NAME): the benchmark's and the tests' isolated "node".
    #[arg(long)]
    pub netns: Option<PathBuf>,
    #[command(flatten)]
    pub proxy: ProxyOptions,
}

#[derive(Args, Debug, Clone)]
pub struct CleanupCommand {
    /// Clean inside this network namespace instead of the agent's own.
    #[arg(long)]
    pub netns: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--proxy-mode none: there is no proxy to run")]
    ModeNone,
    #[error(transparent)]
    Options(#[from] options::Error),
    #[error("connecting to the apiserver: {0}")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Server(#[from] server::Error),
    #[error("cleanup: {0}")]
    Cleanup(server::Error),
    #[error("cleanup: {0}")]
    PodNetwork(#[from] crate::agent::pod_routes::RouteError),
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs the proxy until SIGTERM or SIGINT.
pub async fn run_proxy(cmd: ProxyCommand) -> Result<(), Error> {
    if cmd.proxy.proxy_mode == ProxyMode::None {
        return Err(Error::ModeNone);
    }
    let node_name = if cmd.node_name.is_empty() {
        host_name()
    } else {
        cmd.node_name.clone()
    };
    let local = if cmd.netns.is_some() {
        Vec::new()
    } else {
        server::local_addresses()
    };
    let node_ips = if cmd.node_ip.is_empty() && cmd.netns.is_none() {
        local
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
            .collect()
    } else {
        cmd.node_ip.clone()
    };
    let config = ProxyServerConfig {
        mode: cmd.proxy.proxy_mode,
        proxiers: cmd.proxy.proxier_configs(&node_name, &node_ips, &local)?,
        node_name,
        min_sync_period: cmd.proxy.proxy_min_sync_period,
        sync_period: cmd.proxy.proxy_sync_period,
        netns: cmd.netns.clone(),
        healthz_bind_address: cmd.proxy.healthz_address()?,
    };
    server::check_backend(&config)?;
    let client = kube::Client::try_default().await?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let proxy = tokio::spawn(server::run(client, config, stop));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    match proxy.await {
        Ok(result) => Ok(result?),
        Err(e) => panic!("the service proxy panicked: {e}"),
    }
}

/// Deletes rekube's proxy tables and iptables chains (both families), and the pod network's routes,
/// masquerade table and default bridge, if present.
pub fn run_cleanup(cmd: CleanupCommand) -> Result<(), Error> {
    server::cleanup_leftovers(cmd.netns.as_deref()).map_err(Error::Cleanup)?;
    Ok(crate::agent::pod_routes::cleanup(cmd.netns.as_deref())?)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
