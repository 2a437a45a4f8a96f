//! The service proxy's I/O shell (cmd/kube-proxy/app/server.go with the proxiers'
//! `SyncLoop`): watches of rekube Services and EndpointSlices in all namespaces and of
//! the node's own Node feed a [`ChangeTracker`] per IP family; a loop paced by the
//! [`BoundedFrequencyRunner`] applies the tracked changes to each family's snapshot and
//! syncs it through the mode's [`Backend`] (the nftables proxier with the real `nft`, or
//! the iptables proxier with `iptables-restore`), then flushes stale UDP conntrack
//! entries. The loop is the same for both modes. The first sync (once both lists are in) is full; later ones rewrite
//! only the Services that changed; a failed one is retried after `--proxy-sync-period`,
//! and every [`FULL_SYNC_PERIOD`] a sync is full again. After each successful sync the
//! health checks learn the Services' health check node ports and local endpoints; the
//! proxy's `/healthz` turns unhealthy when a change waits longer than twice the sync
//! period (as kube-proxy's).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use rekube_crds::events::EventRecorder;
use tokio::sync::{Notify, watch};

use super::bounded_frequency_runner::{BoundedFrequencyRunner, IntervalError};
use super::change_tracker::ChangeTracker;
use super::conntrack::cleanup::clean_stale_entries;
use super::conntrack::exec::ConntrackTool;
use super::healthcheck::proxy_health::{NodeInfo, ProxyHealthState};
use super::healthcheck::serve::{ServiceHealthServer, listen_ips, run_proxy_health};
use super::iptables::{IptablesError, IptablesExec, IptablesOptions, IptablesProxier};
use super::nftables::interface::{Nftables, NftablesError};
use super::nftables::nft::Nft;
use super::nftables::{
    NftablesProxier, ProxierConfig, REKUBE_PROXY_TABLE, cleanup_transaction, sync_once,
};
use super::options::ProxyMode;
use super::types::{IpFamily, NamespacedName, ProxySnapshot};

/// Upstream's `proxyutil.FullSyncPeriod`: the longest time between full syncs (and the
/// runner's longest time between syncs).
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// What the proxy runs with.
#[derive(Debug, Clone)]
pub struct ProxyServerConfig {
    /// `nftables` or `iptables` (never `none`: then there is no server).
    pub mode: ProxyMode,
    pub node_name: String,
    /// One per IP family.
    pub proxiers: Vec<ProxierConfig>,
    pub min_sync_period: Duration,
    pub sync_period: Duration,
    /// Run `nft`/`iptables` and `conntrack` in this network namespace, and listen there
    /// (tests, the benchmark).
    pub netns: Option<PathBuf>,
    /// `--healthz-bind-address` (None: no proxy health server).
    pub healthz_bind_address: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the service proxy's sync periods: {0}")]
    Interval(#[from] IntervalError),
    #[error("the service proxy cannot use nftables: {0}")]
    Nftables(#[from] NftablesError),
    #[error("the service proxy cannot use iptables: {0}")]
    Iptables(#[from] IptablesError),
}

/// Fails unless the mode's tool (`nft`, or `iptables-save`) runs for every configured
/// family (before anything starts).
pub fn check_backend(config: &ProxyServerConfig) -> Result<(), Error> {
    for c in &config.proxiers {
        match Backend::new(
            config.mode,
            c.clone(),
            config.sync_period,
            config.netns.as_deref(),
        ) {
            Backend::Nftables { nft, .. } => nft.check()?,
            Backend::Iptables { ipt, .. } => ipt.check()?,
        }
    }
    Ok(())
}

/// What the watches deliver, shared with the sync loop.
struct Shared {
    trackers: Vec<ChangeTracker>,
    services_synced: bool,
    endpoints_synced: bool,
    node_labels: BTreeMap<String, String>,
    /// The proxy's health: a change queued once the lists are in, the node as seen.
    health: Arc<Mutex<ProxyHealthState>>,
}

/// A mode's proxier with its kernel interface: what differs between the modes.
enum Backend {
    Nftables {
        /// Boxed, as the iptables proxier: both are large.
        proxier: Box<NftablesProxier>,
        nft: Nft,
    },
    Iptables {
        proxier: Box<IptablesProxier>,
        ipt: IptablesExec,
    },
}

impl Backend {
    fn new(
        mode: ProxyMode,
        config: ProxierConfig,
        sync_period: Duration,
        netns: Option<&Path>,
    ) -> Self {
        let family = config.family;
        match mode {
            ProxyMode::Iptables => Backend::Iptables {
                proxier: Box::new(IptablesProxier::new(
                    config,
                    IptablesOptions {
                        stale_chain_cleanup_period: sync_period,
                        ..IptablesOptions::default()
                    },
                )),
                ipt: IptablesExec::new(family, netns),
            },
            // `none` never gets here (no server); nftables is the default.
            ProxyMode::Nftables | ProxyMode::None => Backend::Nftables {
                nft: Nft::new(family, &config.table, netns),
                proxier: Box::new(NftablesProxier::new(config)),
            },
        }
    }

    fn family(&self) -> IpFamily {
        match self {
            Backend::Nftables { proxier, .. } => proxier.config().family,
            Backend::Iptables { proxier, .. } => proxier.config().family,
        }
    }

    fn set_node_labels(&mut self, labels: BTreeMap<String, String>) {
        match self {
            Backend::Nftables { proxier, .. } => proxier.set_node_labels(labels),
            Backend::Iptables { proxier, .. } => proxier.set_node_labels(labels),
        }
    }

    fn request_full_sync(&mut self) {
        match self {
            Backend::Nftables { proxier, .. } => proxier.request_full_sync(),
            Backend::Iptables { proxier, .. } => proxier.request_full_sync(),
        }
    }

    /// One sync through the kernel: whether it was full, and its size (nft operations or
    /// restore lines).
    fn sync_once(
        &mut self,
        snapshot: &ProxySnapshot,
        updated: &BTreeSet<NamespacedName>,
        now: Instant,
    ) -> Result<(bool, usize), Error> {
        match self {
            Backend::Nftables { proxier, nft } => {
                let plan = sync_once(proxier, nft, snapshot, updated, now)?;
                Ok((plan.full_sync, plan.transaction.num_operations()))
            }
            Backend::Iptables { proxier, ipt } => {
                let plan = super::iptables::sync_once(proxier, ipt, snapshot, updated, now)?;
                Ok((plan.full_sync, plan.data.lines().count()))
            }
        }
    }
}

/// One family's proxier with what it syncs from and to.
struct FamilyProxier {
    snapshot: ProxySnapshot,
    backend: Backend,
    conntrack: ConntrackTool,
    last_full_sync: Option<Instant>,
    health: Arc<Mutex<ProxyHealthState>>,
    service_health: ServiceHealthServer,
}

impl FamilyProxier {
    fn new(
        config: &ProxyServerConfig,
        proxier: ProxierConfig,
        health: Arc<Mutex<ProxyHealthState>>,
        recorder: Option<EventRecorder>,
    ) -> Self {
        let netns = config.netns.as_deref();
        let service_health = ServiceHealthServer::new(
            &config.node_name,
            listen_ips(proxier.family, &proxier.node_port_addresses),
            config.netns.clone(),
            Arc::clone(&health),
            recorder,
        );
        FamilyProxier {
            snapshot: ProxySnapshot::default(),
            backend: Backend::new(config.mode, proxier, config.sync_period, netns),
            conntrack: ConntrackTool::new(netns),
            last_full_sync: None,
            health,
            service_health,
        }
    }

    /// One sync (upstream's `syncProxyRules` with its I/O).
    fn sync(
        &mut self,
        updated: &BTreeSet<NamespacedName>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let start = Instant::now();
        self.backend.set_node_labels(labels.clone());
        if self
            .last_full_sync
            .is_some_and(|t| start.duration_since(t) > FULL_SYNC_PERIOD)
        {
            self.backend.request_full_sync();
        }
        let (full_sync, size) = self.backend.sync_once(&self.snapshot, updated, start)?;
        if full_sync {
            self.last_full_sync = Some(start);
        }
        tracing::debug!(
            family = ?self.backend.family(),
            full = full_sync,
            size,
            took = ?start.elapsed(),
            "synced proxy rules"
        );
        let family = self.backend.family();
        self.health
            .lock()
            .unwrap()
            .updated(family, SystemTime::now());
        // Services that are not LoadBalancer + Local have no port; their counts are dropped.
        self.service_health
            .sync_services(&self.snapshot.health_check_node_ports());
        self.service_health
            .sync_endpoints(&self.snapshot.local_ready_endpoints());
        if let Err(e) = clean_stale_entries(&self.conntrack, family, &self.snapshot) {
            tracing::warn!(error = %e, "clearing stale UDP conntrack entries");
        }
        Ok(())
    }
}

/// Runs the proxy until `stop` turns true.
pub async fn run(
    client: Client,
    config: ProxyServerConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut runner = BoundedFrequencyRunner::new(
        config.min_sync_period,
        config.sync_period,
        FULL_SYNC_PERIOD,
        Instant::now(),
    )?;
    let health = Arc::new(Mutex::new(ProxyHealthState::new(2 * config.sync_period)));
    let shared = Arc::new(Mutex::new(Shared {
        trackers: config
            .proxiers
            .iter()
            .map(|c| ChangeTracker::new(c.family, &config.node_name))
            .collect(),
        services_synced: false,
        endpoints_synced: false,
        node_labels: BTreeMap::new(),
        health: Arc::clone(&health),
    }));
    let notify = Arc::new(Notify::new());
    let watches = [
        tokio::spawn(watch_objects(
            Api::<rekube_crds::Service>::all(client.clone()),
            watcher::Config::default(),
            Arc::clone(&shared),
            Arc::clone(&notify),
            |s, change| match change {
                Change::Relisted(all) => {
                    s.trackers.iter_mut().for_each(|t| t.services_replace(&all));
                    s.services_synced = true;
                }
                Change::Applied(svc) => s.trackers.iter_mut().for_each(|t| t.service_update(&svc)),
                Change::Deleted(key) => s.trackers.iter_mut().for_each(|t| t.service_delete(&key)),
            },
        )),
        tokio::spawn(watch_objects(
            Api::<rekube_crds::EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
            Arc::clone(&shared),
            Arc::clone(&notify),
            |s, change| match change {
                Change::Relisted(all) => {
                    s.trackers
                        .iter_mut()
                        .for_each(|t| t.endpoint_slices_replace(&all));
                    s.endpoints_synced = true;
                }
                Change::Applied(slice) => s
                    .trackers
                    .iter_mut()
                    .for_each(|t| t.endpoint_slice_update(&slice)),
                Change::Deleted(key) => s
                    .trackers
                    .iter_mut()
                    .for_each(|t| t.endpoint_slice_delete(&key)),
            },
        )),
        tokio::spawn(watch_objects(
            Api::<rekube_crds::Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={}", config.node_name)),
            Arc::clone(&shared),
            Arc::clone(&notify),
            |s, change| {
                let node = match change {
                    Change::Relisted(all) => all.into_iter().next(),
                    Change::Applied(n) => Some(n),
                    Change::Deleted(_) => None,
                };
                s.health
                    .lock()
                    .unwrap()
                    .sync_node(node.as_ref().map(node_info));
                s.node_labels = node
                    .and_then(|n| n.metadata.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
            },
        )),
    ];
    let recorder =
        EventRecorder::with_instance(client.clone(), "kube-proxy", Some(config.node_name.clone()));
    let mut families: Vec<FamilyProxier> = config
        .proxiers
        .iter()
        .map(|c| {
            FamilyProxier::new(
                &config,
                c.clone(),
                Arc::clone(&health),
                Some(recorder.clone()),
            )
        })
        .collect();
    // Healthy from the start, as upstream's SyncLoop (in case a sync never succeeds).
    for c in &config.proxiers {
        health.lock().unwrap().updated(c.family, SystemTime::now());
    }
    let healthz = config.healthz_bind_address.map(|addr| {
        tokio::spawn(run_proxy_health(
            addr,
            config.netns.clone(),
            Arc::clone(&health),
            stop.clone(),
        ))
    });
    tracing::info!(node = %config.node_name, families = families.len(), mode = ?config.mode, "service proxy running");
    let result = loop {
        let now = Instant::now();
        let initialized = {
            let s = shared.lock().unwrap();
            s.services_synced && s.endpoints_synced
        };
        if !initialized || !runner.is_due(now) {
            // Until both lists are in, only an event (or stop) wakes the loop.
            let wake = if initialized {
                runner.next_run(now)
            } else {
                now + FULL_SYNC_PERIOD
            };
            let stopped = tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => false,
                _ = notify.notified() => {
                    runner.run();
                    false
                }
                changed = stop.changed() => changed.is_err() || *stop.borrow(),
            };
            if stopped {
                break Ok(());
            }
            continue;
        }
        runner.started();
        let (updated, labels) = {
            let mut s = shared.lock().unwrap();
            let labels = s.node_labels.clone();
            let updated: Vec<BTreeSet<NamespacedName>> = s
                .trackers
                .iter_mut()
                .zip(families.iter_mut())
                .map(|(t, f)| t.apply(&mut f.snapshot))
                .collect();
            (updated, labels)
        };
        let (done, ok) = tokio::task::spawn_blocking(move || {
            let mut ok = true;
            for (f, updated) in families.iter_mut().zip(&updated) {
                if let Err(e) = f.sync(updated, &labels) {
                    tracing::error!(family = ?f.backend.family(), error = %e, "syncing proxy rules failed");
                    ok = false;
                }
            }
            (families, ok)
        })
        .await
        .expect("the sync does not panic");
        families = done;
        let end = Instant::now();
        runner.finished(end, ok);
        // Stale chains go at the next sync a second or more later, whatever makes it (a
        // change or the periodic sync), as upstream's: no sync of their own, which would
        // hold the next change back by the minimum sync period.
    };
    for w in watches {
        w.abort();
    }
    if let Some(healthz) = healthz {
        let _ = healthz.await;
    }
    result
}

/// What the proxy health server needs of the node.
fn node_info(node: &rekube_crds::Node) -> NodeInfo {
    NodeInfo {
        deleting: node.metadata.deletion_timestamp.is_some(),
        taint_keys: node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|taints| taints.iter().map(|t| t.key.clone()).collect())
            .unwrap_or_default(),
    }
}

/// One watch event, as the trackers take it.
enum Change<K> {
    /// The (re)list's complete set.
    Relisted(Vec<K>),
    Applied(K),
    Deleted(NamespacedName),
}

/// Follows one kind, giving each change to `apply` under the lock and waking the loop.
async fn watch_objects<K>(
    api: Api<K>,
    config: watcher::Config,
    shared: Arc<Mutex<Shared>>,
    notify: Arc<Notify>,
    apply: fn(&mut Shared, Change<K>),
) where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let kind = K::kind(&()).to_string();
    let stream = watcher::watcher(api, config).default_backoff();
    futures_util::pin_mut!(stream);
    let mut relist: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        let change = match event {
            Ok(Event::Init) => {
                relist.clear();
                continue;
            }
            Ok(Event::InitApply(obj)) => {
                relist.push(obj);
                continue;
            }
            Ok(Event::InitDone) => Change::Relisted(std::mem::take(&mut relist)),
            Ok(Event::Apply(obj)) => Change::Applied(obj),
            Ok(Event::Delete(obj)) => {
                let meta = obj.meta();
                Change::Deleted(NamespacedName::new(
                    meta.namespace.as_deref().unwrap_or("default"),
                    meta.name.as_deref().unwrap_or(""),
                ))
            }
            Err(e) => {
                tracing::warn!(kind, error = %e, "service proxy watch");
                continue;
            }
        };
        {
            let mut s = shared.lock().unwrap();
            apply(&mut s, change);
            // A change the proxiers have yet to sync (upstream's `Proxier.Sync` calls
            // `QueuedUpdate` once initialized).
            if s.services_synced && s.endpoints_synced {
                let now = SystemTime::now();
                let mut health = s.health.lock().unwrap();
                for t in &s.trackers {
                    health.queued_update(t.family(), now);
                }
            }
        }
        notify.notify_one();
    }
}

/// `rekube-node-agent cleanup` (kube-proxy's `--cleanup`, `CleanupLeftovers`) of both
/// modes: deletes rekube's own nftables tables, `ip rekube-proxy` and `ip6 rekube-proxy`,
/// when they exist, and rekube's iptables jump rules and `REKUBE-*` chains of both
/// families (where iptables/ip6tables is installed), and nothing else.
pub fn cleanup_leftovers(netns: Option<&Path>) -> Result<(), Error> {
    for family in [IpFamily::V4, IpFamily::V6] {
        let nft = Nft::new(family, REKUBE_PROXY_TABLE, netns);
        nft.run(&cleanup_transaction(family, REKUBE_PROXY_TABLE))?;
        let ipt = IptablesExec::new(family, netns);
        if ipt.installed() {
            super::iptables::cleanup(&ipt)?;
        }
    }
    Ok(())
}

/// The node's interface addresses (for `--nodeport-addresses` CIDRs).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| {
                    let addr = a.address?;
                    addr.as_sockaddr_in()
                        .map(|s| IpAddr::V4(s.ip()))
                        .or_else(|| addr.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                })
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}
