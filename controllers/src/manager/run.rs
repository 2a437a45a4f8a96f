//! Wiring: leader election, informers, controllers, shutdown.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::watcher;
use rekube_crds::{
    Deployment, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicaSet, StorageClass,
};
use tokio_util::sync::CancellationToken;

use super::informer::Informer;
use super::metrics::Metrics;
use super::options::Options;
use crate::deployment::controller::DeploymentController;
use crate::nodelifecycle::cidr::CidrSet;
use crate::nodelifecycle::eviction_controller::TaintEvictionController;
use crate::nodelifecycle::ipam_controller::NodeIpamController;
use crate::nodelifecycle::lifecycle_controller::{
    Config as LifecycleConfig, NodeLifecycleController,
};
use crate::replicaset::controller::ReplicaSetController;
use crate::scheduler::controller::{Informers as SchedulerInformers, Scheduler};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid flags: {0}")]
    Options(#[from] super::options::Error),
    #[error(transparent)]
    Client(#[from] super::client::Error),
    #[error(transparent)]
    LeaderElection(#[from] super::leader::Error),
    #[error("invalid configuration: {0}")]
    Setup(String),
}

/// How long in-flight syncs may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the enabled controllers until SIGTERM/SIGINT (`Ok`) or until leadership is lost
/// (`Err`, so the process exits and restarts as a standby, as upstream's does).
pub async fn run(opts: Options) -> Result<(), Error> {
    let enabled = opts.validate()?;
    let metrics = Metrics::new();
    // As kube-controller-manager's ClientBuilder: a client, with its own QPS/burst token
    // bucket, for the shared informers, for leader election and for each controller.
    let new_client =
        || super::client::build(opts.kube_api_qps, opts.kube_api_burst, metrics.clone());
    let client = new_client().await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_handler(shutdown.clone()));
    // The metrics server runs on a thread of its own: warp's server future is not provably
    // Send for every lifetime, which tokio::spawn needs.
    let (m, addr, stop) = (metrics.clone(), opts.bind_address, shutdown.clone());
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("metrics runtime");
            rt.block_on(m.serve(addr, stop.cancelled_owned()));
        })
        .expect("starting the metrics thread");

    let election_client = new_client().await?;
    let mut elector = opts.leader_elect.then(|| {
        super::leader::LeaderElector::new(
            election_client,
            super::leader::Config {
                namespace: opts.leader_elect_resource_namespace.clone(),
                name: opts.leader_elect_resource_name.clone(),
                identity: super::leader::default_identity(),
                lease_duration: opts.leader_elect_lease_duration,
                renew_deadline: opts.leader_elect_renew_deadline,
                retry_period: opts.leader_elect_retry_period,
            },
        )
    });
    if let Some(e) = elector.as_mut() {
        tracing::info!(lease = %format!("{}/{}", e.config().namespace, e.config().name), "waiting for leadership");
        tokio::select! {
            _ = e.acquire() => metrics.set_leader(true),
            _ = shutdown.cancelled() => return Ok(()),
        }
    }

    // One watch per resource type, shared by every controller, as upstream's informer factory.
    let page = watcher::Config::default().page_size(500);
    let deployments = Informer::new(
        scoped_api::<Deployment>(&client, &opts.namespace),
        page.clone(),
    );
    let replica_sets = Informer::new(
        scoped_api::<ReplicaSet>(&client, &opts.namespace),
        page.clone(),
    );
    let pods = Informer::new(scoped_api::<Pod>(&client, &opts.namespace), page.clone());
    let mut node_page = page.clone();
    if !opts.node_selector.is_empty() {
        node_page = node_page.labels(&opts.node_selector);
    }
    let nodes = Informer::new(Api::<Node>::all(client.clone()), node_page);
    let leases = Informer::new(
        Api::<Lease>::namespaced(client.clone(), &opts.node_lease_namespace),
        page.clone(),
    );
    let needs = |names: &[&str]| names.iter().any(|n| enabled.contains(n));
    let pvs = Informer::new(Api::<PersistentVolume>::all(client.clone()), page.clone());
    let pvcs = Informer::new(
        scoped_api::<PersistentVolumeClaim>(&client, &opts.namespace),
        page.clone(),
    );
    let classes = Informer::new(Api::<StorageClass>::all(client.clone()), page.clone());

    let mut running = Vec::new();
    let mut queues = Vec::new();
    if enabled.contains("replicaset-controller") {
        let c =
            ReplicaSetController::new(new_client().await?, &replica_sets, &pods, metrics.clone());
        queues.push(c.queue());
        running.push(tokio::spawn(c.run(opts.concurrent_replicaset_syncs)));
    }
    if enabled.contains("deployment-controller") {
        let c = DeploymentController::new(
            new_client().await?,
            &deployments,
            &replica_sets,
            &pods,
            metrics.clone(),
        );
        queues.push(c.queue());
        running.push(tokio::spawn(c.run(opts.concurrent_deployment_syncs)));
    }
    if enabled.contains("node-ipam-controller") {
        if opts.allocate_node_cidrs {
            let mut set = CidrSet::parse(&opts.cluster_cidr, opts.node_cidr_mask_size)
                .map_err(|e| Error::Setup(format!("--cluster-cidr: {e}")))?;
            if !opts.service_cluster_ip_range.is_empty() {
                let range = opts
                    .service_cluster_ip_range
                    .parse()
                    .map_err(|e| Error::Setup(format!("--service-cluster-ip-range: {e}")))?;
                set.filter_out_service_range(&range)
                    .map_err(|e| Error::Setup(format!("--service-cluster-ip-range: {e}")))?;
            }
            let c = NodeIpamController::new(new_client().await?, &nodes, set, metrics.clone());
            queues.push(c.queue());
            running.push(tokio::spawn(c.run()));
        } else {
            // As upstream: the controller is enabled but allocates nothing without the flag.
            tracing::info!("node-ipam-controller: --allocate-node-cidrs is false; not allocating");
        }
    }
    if enabled.contains("node-lifecycle-controller") {
        let c = NodeLifecycleController::new(
            new_client().await?,
            &nodes,
            &leases,
            &pods,
            LifecycleConfig {
                monitor_period: opts.node_monitor_period,
                grace_period: opts.node_monitor_grace_period,
                startup_grace_period: opts.node_startup_grace_period,
                lease_namespace: opts.node_lease_namespace.clone(),
            },
            metrics.clone(),
        );
        running.push(tokio::spawn(c.run(shutdown.clone())));
    }
    if enabled.contains("taint-eviction-controller") {
        let c = TaintEvictionController::new(
            new_client().await?,
            &nodes,
            &pods,
            opts.default_toleration_seconds,
            metrics.clone(),
        );
        queues.push(c.queue());
        running.push(tokio::spawn(c.run(1)));
    }
    if enabled.contains("scheduler") {
        // kube-scheduler's own client connection settings, and a separate client for
        // events, as kube-scheduler's eventClient.
        let sched_client = || {
            super::client::build(
                opts.scheduler_api_qps,
                opts.scheduler_api_burst,
                metrics.clone(),
            )
        };
        let c = Scheduler::new(
            sched_client().await?,
            sched_client().await?,
            SchedulerInformers {
                pods: Arc::clone(&pods),
                nodes: Arc::clone(&nodes),
                pvs: Arc::clone(&pvs),
                pvcs: Arc::clone(&pvcs),
                classes: Arc::clone(&classes),
            },
            opts.pod_max_in_unschedulable_pods_duration,
            metrics.clone(),
        );
        queues.push(c.queue());
        running.push(tokio::spawn(c.run(shutdown.clone())));
    }
    tracing::info!(controllers = ?enabled, "starting controllers");
    // Start the informers somebody uses; the others never watch.
    let mut synced: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    macro_rules! start {
        ($informer:expr, $used:expr) => {
            if $used {
                let i = Arc::clone(&$informer);
                drop(tokio::spawn(Arc::clone(&i).run()));
                synced.push(Box::pin(async move { i.wait_synced().await }));
            }
        };
    }
    start!(deployments, needs(&["deployment-controller"]));
    start!(
        replica_sets,
        needs(&["deployment-controller", "replicaset-controller"])
    );
    start!(
        pods,
        needs(&[
            "deployment-controller",
            "replicaset-controller",
            "node-lifecycle-controller",
            "taint-eviction-controller",
            "scheduler"
        ])
    );
    start!(
        nodes,
        needs(&[
            "node-ipam-controller",
            "node-lifecycle-controller",
            "taint-eviction-controller",
            "scheduler"
        ])
    );
    start!(leases, needs(&["node-lifecycle-controller"]));
    start!(pvs, needs(&["scheduler"]));
    start!(pvcs, needs(&["scheduler"]));
    start!(classes, needs(&["scheduler"]));
    tokio::select! {
        _ = futures::future::join_all(synced) => {
            metrics.set_ready();
            tracing::info!("informers synced");
        }
        _ = shutdown.cancelled() => {}
    }

    let lost = async {
        match elector.as_mut() {
            Some(e) => e.keep_renewing().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        lost = lost => Err(lost),
    };
    metrics.set_leader(false);
    queues.iter().for_each(|q| q.shut_down());
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(running)).await;
    match outcome {
        Ok(()) => {
            if let Some(e) = elector.as_mut() {
                e.release().await?;
            }
            tracing::info!("shut down");
            Ok(())
        }
        Err(lost) => Err(lost.into()),
    }
}

/// The API of a namespaced kind in `namespace`, or in all namespaces when it is empty.
fn scoped_api<K>(client: &kube::Client, namespace: &str) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    if namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    }
}

async fn signal_handler(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
