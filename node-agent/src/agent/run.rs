//! `rekube-node-agent run`: register the Node, then keep its Lease and status fresh until
//! SIGTERM/SIGINT, while the pods bound to the node are synced: by the real runtime
//! ([`super::sync_pod::RealSyncer`]), or with `--hollow` by the simulated one
//! ([`super::hollow::HollowSyncer`]).
use std::path::PathBuf;
use std::sync::Arc;

use super::container_gc;
use super::events;
use super::heartbeat::{self, HeartbeatConfig, StatusSource};
use super::hollow::HollowSyncer;
use super::image_gc;
use super::machine;
use super::node_status::{self, Readiness, Usage};
use super::options::PodNetworkMode;
use super::options::{self, AgentOptions};
use super::pod_cidr;
use super::pod_routes;
use super::pod_workers::{PodWorkers, watch_pods};
use super::sync_pod::{RealSyncer, SyncerConfig};
use super::uninstall::{self, NodeTeardown, OwnerDaemonSet, UninstallError};
use crate::cni::RealExec;
use crate::cni::pod_network::{CniNetwork, CniPaths};
use crate::image::Store;
use crate::image::manager::{ImageManager, RealClock};
use crate::image::store::StoreError;
use crate::plugin_manager::{CSI_PLUGIN_TYPE, PluginManager};
use crate::proxy::options::ProxyMode;
use crate::proxy::server::ProxyServerConfig;
use crate::runtime::cgroups::CgroupError;
use crate::runtime::mountinfo::{self, MountInfoError};
use crate::runtime::network::{PodCidrNetwork, SharedPodCidr};
use crate::runtime::recovery::RecoveryError;
use crate::runtime::sandbox::PodNetwork;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::volume::csi::CsiPlugin;
use crate::volume::csi_registry::{DriversStore, NodeInfoManager, RegistrationHandler};
use crate::volume::manager::attach::VolumesInUse;
use rekube_crds::events::EventType;

/// How often a pod is synced when nothing else asks for it (upstream
/// --sync-frequency's default).
const POD_RESYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Options(#[from] options::Error),
    #[error(transparent)]
    Machine(#[from] machine::Error),
    #[error(transparent)]
    Heartbeat(#[from] heartbeat::Error),
    #[error("starting the container runtime: {0}")]
    Runtime(#[from] CgroupError),
    #[error("removing what a previous run left: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("opening the image store: {0}")]
    Images(#[from] StoreError),
    #[error("connecting to the apiserver: {0}")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    ProxyOptions(#[from] crate::proxy::options::Error),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::server::Error),
    #[error(transparent)]
    Csi(#[from] crate::volume::csi::CsiError),
    #[error("creating {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("error configuring root directory: {0}")]
    RootDir(#[from] MountInfoError),
    #[error(transparent)]
    Uninstall(#[from] UninstallError),
}

/// The machine's live readings, and the pod network's readiness (containerd's
/// NetworkReady runtime condition).
struct HostStatus {
    root: PathBuf,
    network: Option<Arc<dyn PodNetwork>>,
}

impl StatusSource for HostStatus {
    fn usage(&self) -> Usage {
        machine::read_usage(&self.root).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading usage");
            Usage::default()
        })
    }

    fn readiness(&self) -> Readiness {
        let mut errors = Vec::new();
        if !std::path::Path::new("/sys/fs/cgroup").exists() {
            errors.push("container runtime is down: no cgroup filesystem".to_string());
        }
        if let Some(Err(e)) = self.network.as_ref().map(|n| n.status()) {
            // The kubelet's message over containerd's condition.
            errors.push(format!(
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: {e}"
            ));
        }
        Readiness { errors }
    }
}

/// The pod network `--pod-network` names. Pod IPs come from the Node's spec.podCIDR,
/// which node IPAM may set after registration: it is followed with a watch. With cni,
/// also the loop of routes to other nodes' pods (its task, which ends on `stop`).
fn pod_network(
    opts: &AgentOptions,
    client: &kube::Client,
    name: &str,
    node: &rekube_crds::Node,
    cluster_cidrs: Vec<ipnet::IpNet>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<dyn PodNetwork>, Option<tokio::task::JoinHandle<()>>) {
    let pod_cidr: SharedPodCidr = Arc::new(std::sync::RwLock::new(
        node.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
    ));
    tokio::spawn(pod_cidr::watch_pod_cidr(
        client.clone(),
        name.to_string(),
        Arc::clone(&pod_cidr),
    ));
    match opts.pod_network {
        PodNetworkMode::Cni => {
            let routes = tokio::spawn(pod_routes::run_pod_routes(
                client.clone(),
                name.to_string(),
                cluster_cidrs,
                stop,
            ));
            let network = Arc::new(CniNetwork::new(
                CniPaths {
                    conf_dir: opts.cni_conf_dir.clone(),
                    bin_dirs: opts.cni_bin_dir.clone(),
                    cache_dir: opts.cni_cache_dir.clone(),
                    ipam_data_dir: opts.cni_cache_dir.join("networks"),
                },
                pod_cidr,
                RealExec,
            ));
            (network, Some(routes))
        }
        PodNetworkMode::Loopback => (
            Arc::new(PodCidrNetwork::new(pod_cidr, opts.run_dir.join("ipam"))),
            None,
        ),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// The kubelet's setupDataDirs `MakeRShared`: the root directory (with the pods' volumes
/// under it) on an rshared mount, bound onto itself when it is not, so that volumes can
/// be HostToContainer or Bidirectional. Once bound, it stays bound when the agent ends,
/// as the kubelet leaves its own: a restarted agent finds it shared and binds nothing
/// (docs/volumes.md). A hollow node mounts nothing.
fn make_root_dir_rshared(root: &std::path::Path) -> Result<(), Error> {
    let root = std::fs::canonicalize(root).map_err(|source| Error::State {
        path: root.to_path_buf(),
        source,
    })?;
    let table = mountinfo::read_mountinfo()?;
    if mountinfo::make_rshared(&crate::runtime::syscall::LinuxSyscall, &root, &table)? {
        tracing::info!(path = %root.display(), "bind-mounted the root directory with shared mount propagation");
    }
    Ok(())
}

pub async fn run(opts: AgentOptions) -> Result<(), Error> {
    let mut shutdown = ShutdownSignal::new();
    let owned = opts.owned_paths()?;
    if !opts.hollow {
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if let Some(own) = options::own_cgroup_under(&self_cgroup, &owned.cgroup_parent) {
            return Err(options::Error::Invalid {
                flag: "cgroup-parent",
                value: owned.cgroup_parent,
                message: format!(
                    "holds the agent's own cgroup {own} (the agent kills every process under it)"
                ),
            }
            .into());
        }
    }
    let reservation = opts.reservation()?;
    let limits = opts.container_limits()?;
    let gc_policy = opts.image_gc_policy()?;
    let container_gc = opts.container_gc_policy();
    let crash_loop_max = opts.crash_loop_max_container_restart_period()?;
    let labels = options::parse_map("node-labels", &opts.node_labels)?;
    let csi_drivers = crate::volume::csi::parse_driver_flags(&opts.csi_drivers)?;
    let plugin_registration_dir = opts.plugin_registration_dir()?;
    let run_proxy = !opts.hollow && opts.proxy.proxy_mode != ProxyMode::None;
    if run_proxy {
        opts.proxy.validate()?;
    }
    let cluster_cidrs = opts.proxy.cluster_cidrs()?;
    let owner: Option<OwnerDaemonSet> = opts
        .owner_daemonset
        .as_deref()
        .map(str::parse)
        .transpose()?;
    let name = if opts.node_name.is_empty() {
        host_name()
    } else {
        opts.node_name.clone()
    };
    std::fs::create_dir_all(&opts.root_dir).map_err(|source| Error::State {
        path: opts.root_dir.clone(),
        source,
    })?;
    if !opts.hollow {
        make_root_dir_rshared(&opts.root_dir)?;
    }
    let machine = machine::read_machine_info(&name, &opts.root_dir, &opts.node_ip)?;
    let host_ips = machine.internal_ips.clone();
    // The service proxy (kube-proxy), in the agent's own network namespace.
    let proxy_config = if run_proxy {
        let node_ips: Vec<std::net::IpAddr> =
            host_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        Some(ProxyServerConfig {
            mode: opts.proxy.proxy_mode,
            node_name: name.clone(),
            proxiers: opts.proxy.proxier_configs(
                &name,
                &node_ips,
                &crate::proxy::server::local_addresses(),
            )?,
            min_sync_period: opts.proxy.proxy_min_sync_period,
            sync_period: opts.proxy.proxy_sync_period,
            netns: None,
            healthz_bind_address: opts.proxy.healthz_address()?,
        })
    } else {
        None
    };
    if let Some(config) = &proxy_config {
        crate::proxy::server::check_backend(config)?;
    }
    let (_, allocatable) = node_status::capacity_and_allocatable(&machine, &reservation);
    let client = kube::Client::try_default().await?;
    if let Some(owner) = &owner {
        uninstall::check_owner(&client, owner).await?;
    }
    let node = heartbeat::register_node(
        &client,
        &node_status::initial_node(&name, &machine, &labels),
    )
    .await?;
    let recorder = events::recorder(client.clone(), &name);
    recorder.record(
        &events::node_ref(&node),
        EventType::Normal,
        events::STARTING_KUBELET,
        "Starting kubelet.".into(),
    );
    let config = HeartbeatConfig {
        lease_namespace: opts.node_lease_namespace.clone(),
        lease_duration_seconds: opts.node_lease_duration_seconds,
        renew_interval: std::time::Duration::from_secs(
            (opts.node_lease_duration_seconds.max(4) / 4) as u64,
        ),
        node_status_update_frequency: opts.node_status_update_frequency,
        node_status_report_frequency: opts.node_status_report_frequency,
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // The node's CSI drivers: the --csi-driver ones, and those the plugin manager
    // registers, in one store every CsiPlugin of the agent shares.
    let drivers = DriversStore::from_static(csi_drivers.clone());
    let nim = NodeInfoManager {
        client: client.clone(),
        node: name.clone(),
    };
    if !csi_drivers.is_empty() {
        let plugin = Arc::new(CsiPlugin::with_drivers_store(
            drivers.clone(),
            &opts.root_dir.join("plugins"),
            name.clone(),
        ));
        for driver in csi_drivers.keys() {
            tokio::spawn(register_csi_driver(
                nim.clone(),
                Arc::clone(&plugin),
                driver.clone(),
            ));
        }
    }
    // The plugin manager (a hollow node has no volumes, and no plugins).
    let plugin_manager = (!opts.hollow).then(|| {
        let mut manager = PluginManager::new(&plugin_registration_dir);
        manager.add_handler(
            CSI_PLUGIN_TYPE,
            Arc::new(RegistrationHandler::new(
                drivers.clone(),
                &opts.root_dir.join("plugins"),
                nim.clone(),
            )),
        );
        tokio::spawn(manager.run(stop.clone()))
    });
    let lease = tokio::spawn(heartbeat::run_lease(
        client.clone(),
        node.clone(),
        config.clone(),
        stop.clone(),
    ));
    let (network, routes) = if opts.hollow {
        (None, None)
    } else {
        let (network, routes) =
            pod_network(&opts, &client, &name, &node, cluster_cidrs, stop.clone());
        (Some(network), routes)
    };
    let volumes_in_use = Arc::new(VolumesInUse::default());
    // Before the first status: what an earlier run left mounted is in use.
    volumes_in_use.reconstruct(crate::volume::manager::csi_volumes_on_disk(
        &crate::volume::pod_dirs::PodDirs::new(opts.root_dir.join("pods")),
    ));
    let status = tokio::spawn(heartbeat::run_node_status(
        client.clone(),
        name.clone(),
        machine,
        reservation,
        Arc::new(HostStatus {
            root: opts.root_dir.clone(),
            network: network.clone(),
        }),
        Arc::clone(&volumes_in_use),
        config,
        stop.clone(),
    ));
    let (pods, teardown) = if opts.hollow {
        // The hollow node: pods are synced against the simulated runtime.
        let syncer = Arc::new(HollowSyncer::new(
            client.clone(),
            node.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
            host_ips,
        ));
        let workers = PodWorkers::new(syncer, POD_RESYNC_INTERVAL);
        let (client, name) = (client.clone(), name.clone());
        let pods = tokio::spawn(async move { watch_pods(client, &name, workers).await });
        (pods, None)
    } else {
        let runtime = Runtime::with_network(
            RuntimeConfig {
                state_dir: opts.root_dir.join("containers"),
                run_dir: opts.run_dir.clone(),
                cgroup_parent: opts.cgroup_parent.clone(),
            },
            network.clone().expect("a real agent has a pod network"),
        )?;
        // Containers cannot be adopted across agent processes (no shims): what the
        // previous run left is removed, and its pods start again.
        let recovering = runtime.clone();
        match tokio::task::spawn_blocking(move || recovering.remove_leftovers()).await {
            Ok(Ok(l)) if !l.is_empty() => tracing::info!(
                cgroups = l.cgroups,
                mounts = l.mounts,
                entries = l.entries,
                "removed what a previous run left"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::Recovery(e)),
            Err(e) => {
                return Err(Error::Recovery(RecoveryError::Cgroups {
                    parent: opts.cgroup_parent.clone(),
                    message: e.to_string(),
                }));
            }
        }
        // The previous run's sandboxes are gone: their network attachments too (CNI GC:
        // no attachment is valid now).
        let network = network.expect("a real agent has a pod network");
        let collecting = Arc::clone(&network);
        match tokio::task::spawn_blocking(move || collecting.garbage_collect(&[])).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the previous run's pod networks"),
            Err(e) => tracing::warn!(error = %e, "releasing the previous run's pod networks"),
            Ok(Ok(())) => {}
        }
        let images = ImageManager::new(
            Store::open(opts.root_dir.join("images"))?,
            Arc::new(RealClock),
        );
        let syncer = Arc::new(RealSyncer::new(
            client.clone(),
            runtime,
            images,
            SyncerConfig {
                container_log_max_size: limits.log_max_size,
                container_log_max_files: limits.log_max_files,
                pod_max_pids: limits.pod_max_pids,
                container_gc,
                crash_loop_max_container_restart_period: crash_loop_max,
                node_allocatable: allocatable,
                node_name: name.clone(),
                node_identity_namespace: Some(opts.node_identity_namespace.clone())
                    .filter(|n| !n.is_empty()),
                pods_dir: opts.root_dir.join("pods"),
                csi_drivers: drivers.clone(),
                volumes_in_use,
                ..SyncerConfig::new(host_ips, opts.pod_log_dir.clone())
            },
            recorder.clone(),
        ));
        tokio::spawn(syncer.run_volume_manager(stop.clone()));
        tokio::spawn(image_gc::run(
            Arc::clone(&syncer),
            gc_policy,
            opts.image_gc_period,
            recorder,
            events::node_ref(&node),
            stop.clone(),
        ));
        tokio::spawn(container_gc::run(
            Arc::clone(&syncer),
            container_gc::CONTAINER_GC_PERIOD,
            stop.clone(),
        ));
        let workers = PodWorkers::new(Arc::clone(&syncer), POD_RESYNC_INTERVAL);
        // A container's exit syncs its pod (upstream: the PLEG event).
        let weak = Arc::downgrade(&workers);
        syncer.set_resync(Arc::new(move |uid: &str| {
            if let Some(w) = weak.upgrade() {
                w.resync(uid)
            }
        }));
        let teardown = NodeTeardown {
            workers: Arc::clone(&workers),
            syncer: Arc::clone(&syncer),
            network,
            proxy: run_proxy,
            pod_routes: opts.pod_network == PodNetworkMode::Cni,
        };
        let (client, name) = (client.clone(), name.clone());
        let pods = tokio::spawn(async move { watch_pods(client, &name, workers).await });
        (pods, Some(teardown))
    };
    let proxy = proxy_config.map(|config| {
        tokio::spawn(crate::proxy::server::run(
            client.clone(),
            config,
            stop.clone(),
        ))
    });
    tracing::info!(node = %name, hollow = opts.hollow, "node agent running");
    shutdown.recv().await;
    // The agent's pod is being deleted: with its DaemonSet gone, the release is being
    // uninstalled and the agent removes what it made on the node (agent/uninstall.rs).
    let uninstalling = match &owner {
        Some(owner) => {
            uninstall::owner_state_at_stop(&client, owner).await == uninstall::OwnerState::Deleted
        }
        None => false,
    };
    pods.abort();
    let _ = pods.await;
    let teardown = teardown.filter(|_| uninstalling);
    if let Some(t) = &teardown {
        t.stop_pods().await;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::join!(lease, status);
    if let Some(manager) = plugin_manager
        && let Ok(Err(e)) = manager.await
    {
        tracing::error!(error = %e, "plugin manager");
    }
    if let Some(proxy) = proxy
        && let Ok(Err(e)) = proxy.await
    {
        tracing::error!(error = %e, "service proxy");
    }
    if let Some(routes) = routes {
        let _ = routes.await;
    }
    if let Some(t) = teardown {
        let failures = t.remove_node_state().await;
        if failures.is_empty() {
            tracing::info!(node = %name, "uninstalled: nothing the agent made is left on the node");
        } else {
            tracing::error!(node = %name, ?failures, "uninstalled, with failures");
        }
    }
    tracing::info!(node = %name, "node agent stopped");
    Ok(())
}

/// A `--csi-driver` driver's NodeGetInfo on the Node (upstream's nodeinfomanager, run
/// when a driver registers: [`NodeInfoManager::install_csi_driver`]): its node id in the
/// `csi.volume.kubernetes.io/nodeid` annotation (merged with the other drivers' ids), its
/// accessible topology as labels. A driver not answering yet is asked again every 2 s.
async fn register_csi_driver(nim: NodeInfoManager, plugin: Arc<CsiPlugin>, driver: String) {
    loop {
        let registered = async {
            let info = plugin
                .node_get_info(&driver)
                .await
                .map_err(|e| e.to_string())?;
            nim.install_csi_driver(&driver, &info).await?;
            Ok::<_, String>(info)
        };
        match registered.await {
            Ok(info) => {
                tracing::info!(%driver, node_id = %info.node_id, "registered the CSI driver on the node");
                return;
            }
            Err(e) => {
                tracing::warn!(%driver, error = %e, "registering the CSI driver on the node");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
}

/// SIGTERM and SIGINT, listened to from the agent's start (a signal that arrives during
/// start-up is not lost).
struct ShutdownSignal(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl ShutdownSignal {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        ShutdownSignal(
            signal(SignalKind::terminate())
                .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
                .ok(),
        )
    }

    async fn recv(&mut self) {
        match &mut self.0 {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    }
}
