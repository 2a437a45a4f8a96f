//! Wiring: leader election, informers, controllers, shutdown.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::IPAddress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::runtime::watcher;
use rekube_crds::{
    CSIDriver, CSIStorageCapacity, Deployment, EndpointSlice, Endpoints, Node, PersistentVolume,
    PersistentVolumeClaim, Pod, ReplicaSet, Service, StorageClass, VolumeAttachment,
};
use tokio_util::sync::CancellationToken;

use super::informer::{Informer, wait_for_named_cache_sync};
use super::metrics::Metrics;
use super::options::Options;
use super::supervisor::{Task, abort_all, first_to_stop};
use crate::attachdetach::controller::{
    AttachDetachController, Config as AttachDetachConfig, Informers as AttachDetachInformers,
};
use crate::deployment::controller::DeploymentController;
use crate::endpoint::controller::{EndpointController, Informers as EndpointInformers};
use crate::endpointslice::controller::{
    EndpointSliceController, Informers as EndpointSliceInformers,
};
use crate::endpointslicemirroring::controller::{
    EndpointSliceMirroringController, Informers as MirroringInformers,
};
use crate::ephemeral::controller::{
    EphemeralVolumeController, Informers as EphemeralVolumeInformers,
};
use crate::nodeauthorizer::controller::{
    Informers as NodeAuthorizerInformers, NodeAuthorizer, managed_selector,
};
use crate::nodelifecycle::cidr::CidrSet;
use crate::nodelifecycle::eviction_controller::TaintEvictionController;
use crate::nodelifecycle::ipam_controller::NodeIpamController;
use crate::nodelifecycle::lifecycle_controller::{
    Config as LifecycleConfig, NodeLifecycleController,
};
use crate::podgc::controller::{Config as PodGcConfig, PodGcController};
use crate::podtokenbinding::controller::PodTokenBindingController;
use crate::pvcontroller::controller::{Informers as PvBinderInformers, PersistentVolumeBinder};
use crate::pvcontroller::host_path::{HostPathPlugin, RecyclerConfig};
use crate::pvcontroller::plugins::VolumePlugin;
use crate::pvcprotection::controller::{
    Informers as PvcProtectionInformers, PvcProtectionController,
};
use crate::pvprotection::controller::{Informers as PvProtectionInformers, PvProtectionController};
use crate::replicaset::controller::ReplicaSetController;
use crate::scheduler::controller::{Informers as SchedulerInformers, Scheduler};
use crate::serviceallocator::controller::{
    Informers as ServiceAllocatorInformers, ServiceAllocator, port_lease_selector,
};

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
    #[error("{0}: exiting so that a fresh process (or a standby) takes over")]
    TaskStopped(String),
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
    // Renew from the moment the lease is won, not once the caches are synced: listing
    // thousands of objects can take longer than a lease duration, and a lease left to
    // expire meanwhile lets a second leader start beside this one.
    let stop_renewing = CancellationToken::new();
    let mut renewing = elector.map(|mut e| {
        let (stop, health) = (stop_renewing.clone(), metrics.health().clone());
        tokio::spawn(async move {
            let outcome = e.keep_renewing(&stop, &health).await;
            (e, outcome)
        })
    });

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
    let services = Informer::new(
        scoped_api::<Service>(&client, &opts.namespace),
        page.clone(),
    );
    let endpoints = Informer::new(
        scoped_api::<Endpoints>(&client, &opts.namespace),
        page.clone(),
    );
    // Only the EndpointSlice controller's own slices.
    let endpoint_slices = Informer::new(
        scoped_api::<EndpointSlice>(&client, &opts.namespace),
        page.clone()
            .labels(&crate::endpointslice::controller::managed_selector()),
    );
    // Only the mirroring controller's own slices.
    let mirrored_slices = Informer::new(
        scoped_api::<EndpointSlice>(&client, &opts.namespace),
        page.clone()
            .labels(&crate::endpointslicemirroring::controller::managed_selector()),
    );
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
    let mut storage_page = page.clone();
    if !opts.storage_selector.is_empty() {
        storage_page = storage_page.labels(&opts.storage_selector);
    }
    let pvs = Informer::new(
        Api::<PersistentVolume>::all(client.clone()),
        storage_page.clone(),
    );
    let pvcs = Informer::new(
        scoped_api::<PersistentVolumeClaim>(&client, &opts.namespace),
        page.clone(),
    );
    let classes = Informer::new(Api::<StorageClass>::all(client.clone()), storage_page);
    // The attach/detach controller's: every CSIDriver and VolumeAttachment (a
    // VolumeAttachment is taken on when its PersistentVolume is in the PV cache); the
    // scheduler's too (which drivers publish capacity).
    let csi_drivers = Informer::new(Api::<CSIDriver>::all(client.clone()), page.clone());
    // The scheduler's: every namespace's CSIStorageCapacities, as upstream's lister.
    let capacities = Informer::new(Api::<CSIStorageCapacity>::all(client.clone()), page.clone());
    let volume_attachments =
        Informer::new(Api::<VolumeAttachment>::all(client.clone()), page.clone());
    // The node authorizer's own objects: only those it labelled.
    let owned = page.clone().labels(&managed_selector());
    let roles = Informer::new(scoped_api::<Role>(&client, &opts.namespace), owned.clone());
    let bindings = Informer::new(
        scoped_api::<RoleBinding>(&client, &opts.namespace),
        owned.clone(),
    );
    let service_accounts = Informer::new(
        Api::<ServiceAccount>::namespaced(client.clone(), &opts.node_identity_namespace),
        owned,
    );

    // The service allocator: the rekube Services (shared with the endpoint controller),
    // every IPAddress of the cluster (the host's own are taken too), and its node port
    // Leases in the manager's namespace.
    let ip_addresses = Informer::new(Api::<IPAddress>::all(client.clone()), page.clone());
    let port_leases = Informer::new(
        Api::<Lease>::namespaced(client.clone(), &opts.leader_elect_resource_namespace),
        page.clone().labels(&port_lease_selector()),
    );

    // The controllers and informers: each must run for the life of the process.
    let mut tasks: Vec<Task> = Vec::new();
    let mut queues = Vec::new();
    if enabled.contains("replicaset-controller") {
        let c =
            ReplicaSetController::new(new_client().await?, &replica_sets, &pods, metrics.clone());
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller replicaset-controller",
            c.run(opts.concurrent_replicaset_syncs),
        ));
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
        tasks.push(Task::spawn(
            "controller deployment-controller",
            c.run(opts.concurrent_deployment_syncs),
        ));
    }
    if enabled.contains("node-ipam-controller") {
        if opts.allocate_node_cidrs {
            let mut set = CidrSet::parse(&opts.cluster_cidr, opts.node_cidr_mask_size)
                .map_err(|e| Error::Setup(format!("--cluster-cidr: {e}")))?;
            for range in opts
                .service_cluster_ip_range
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
            {
                let range = range
                    .parse()
                    .map_err(|e| Error::Setup(format!("--service-cluster-ip-range: {e}")))?;
                set.filter_out_service_range(&range)
                    .map_err(|e| Error::Setup(format!("--service-cluster-ip-range: {e}")))?;
            }
            let c = NodeIpamController::new(new_client().await?, &nodes, set, metrics.clone());
            queues.push(c.queue());
            tasks.push(Task::spawn("controller node-ipam-controller", c.run()));
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
        tasks.push(Task::spawn(
            "controller node-lifecycle-controller",
            c.run(shutdown.clone()),
        ));
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
        tasks.push(Task::spawn(
            "controller taint-eviction-controller",
            c.run(1),
        ));
    }
    if enabled.contains("pod-garbage-collector-controller") {
        let c = PodGcController::new(
            new_client().await?,
            &pods,
            &nodes,
            PodGcConfig {
                terminated_pod_threshold: usize::try_from(opts.terminated_pod_gc_threshold)
                    .unwrap_or(0),
                check_period: opts.pod_gc_check_period,
                quarantine_time: opts.pod_gc_quarantine_time,
            },
            metrics.clone(),
        );
        tasks.push(Task::spawn(
            "controller pod-garbage-collector-controller",
            c.run(shutdown.clone()),
        ));
    }
    if enabled.contains("node-authorizer-controller") {
        let c = NodeAuthorizer::new(
            new_client().await?,
            NodeAuthorizerInformers {
                pods: Arc::clone(&pods),
                claims: Arc::clone(&pvcs),
                nodes: Arc::clone(&nodes),
                volume_attachments: Arc::clone(&volume_attachments),
                roles: Arc::clone(&roles),
                bindings: Arc::clone(&bindings),
                service_accounts: Arc::clone(&service_accounts),
            },
            opts.node_identity_namespace.clone(),
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller node-authorizer-controller",
            c.run(2),
        ));
    }
    if enabled.contains("persistentvolume-binder-controller") {
        let recycler = RecyclerConfig {
            namespace: if opts.namespace.is_empty() {
                "default".to_string()
            } else {
                opts.namespace.clone()
            },
            template: recycler_pod_template(&opts.pv_recycler_pod_template_filepath_hostpath)?,
            minimum_timeout: opts.pv_recycler_minimum_timeout_hostpath,
            timeout_increment: opts.pv_recycler_timeout_increment_hostpath,
        };
        let plugins: Vec<Arc<dyn VolumePlugin>> =
            vec![HostPathPlugin::new(new_client().await?, recycler)];
        let c = PersistentVolumeBinder::new(
            new_client().await?,
            plugins,
            PvBinderInformers {
                volumes: Arc::clone(&pvs),
                claims: Arc::clone(&pvcs),
                classes: Arc::clone(&classes),
                pods: Arc::clone(&pods),
                nodes: Arc::clone(&nodes),
            },
            opts.pvclaimbinder_sync_period,
            opts.enable_dynamic_provisioning,
            metrics.clone(),
        );
        queues.extend(c.queues());
        tasks.push(Task::spawn(
            "controller persistentvolume-binder-controller",
            c.run(shutdown.clone()),
        ));
    }
    if enabled.contains("persistentvolumeclaim-protection-controller") {
        let c = PvcProtectionController::new(
            new_client().await?,
            PvcProtectionInformers {
                pvcs: Arc::clone(&pvcs),
                pods: Arc::clone(&pods),
            },
            metrics.clone(),
        );
        queues.push(c.queue());
        // upstream runs it with one worker.
        tasks.push(Task::spawn(
            "controller persistentvolumeclaim-protection-controller",
            c.run(1, shutdown.clone()),
        ));
    }
    if enabled.contains("ephemeral-volume-controller") {
        let c = EphemeralVolumeController::new(
            new_client().await?,
            EphemeralVolumeInformers {
                pods: Arc::clone(&pods),
                pvcs: Arc::clone(&pvcs),
            },
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller ephemeral-volume-controller",
            c.run(opts.concurrent_ephemeralvolume_syncs),
        ));
    }
    if enabled.contains("pod-token-binding-controller") {
        let c = PodTokenBindingController::new(
            new_client().await?,
            &pods,
            opts.pod_token_binding_resync_period,
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller pod-token-binding-controller",
            c.run(2),
        ));
    }
    if enabled.contains("persistentvolume-protection-controller") {
        let c = PvProtectionController::new(
            new_client().await?,
            PvProtectionInformers {
                pvs: Arc::clone(&pvs),
            },
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller persistentvolume-protection-controller",
            c.run(1, shutdown.clone()),
        ));
    }
    if enabled.contains("endpoint-controller") {
        let c = EndpointController::new(
            new_client().await?,
            EndpointInformers {
                services: Arc::clone(&services),
                pods: Arc::clone(&pods),
                endpoints: Arc::clone(&endpoints),
            },
            opts.endpoint_updates_batch_period,
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller endpoint-controller",
            c.run(opts.concurrent_endpoint_syncs),
        ));
    }
    if enabled.contains("endpointslice-controller") {
        let c = EndpointSliceController::new(
            new_client().await?,
            EndpointSliceInformers {
                services: Arc::clone(&services),
                pods: Arc::clone(&pods),
                nodes: Arc::clone(&nodes),
                endpoint_slices: Arc::clone(&endpoint_slices),
            },
            opts.max_endpoints_per_slice,
            opts.endpointslice_updates_batch_period,
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller endpointslice-controller",
            c.run(opts.concurrent_service_endpoint_syncs),
        ));
    }
    if enabled.contains("endpointslice-mirroring-controller") {
        let c = EndpointSliceMirroringController::new(
            new_client().await?,
            MirroringInformers {
                services: Arc::clone(&services),
                endpoints: Arc::clone(&endpoints),
                endpoint_slices: Arc::clone(&mirrored_slices),
            },
            opts.mirroring_max_endpoints_per_subset,
            opts.mirroring_endpointslice_updates_batch_period,
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller endpointslice-mirroring-controller",
            c.run(opts.mirroring_concurrent_service_endpoint_syncs),
        ));
    }
    if enabled.contains("service-allocator-controller") {
        let config = opts.service_allocator_config()?;
        if config.ip_ranges.is_empty() {
            tracing::info!(
                "service-allocator-controller: --service-cluster-ip-range is empty; allocating NodePorts only"
            );
        }
        // A client of its own, as the scheduler's: allocation is on the path of every
        // Service create (upstream's is inside the apiserver).
        let c = ServiceAllocator::new(
            super::client::build(
                opts.service_allocator_api_qps,
                opts.service_allocator_api_burst,
                metrics.clone(),
            )
            .await?,
            ServiceAllocatorInformers {
                services: Arc::clone(&services),
                ip_addresses: Arc::clone(&ip_addresses),
                port_leases: Arc::clone(&port_leases),
            },
            config,
            opts.leader_elect_resource_namespace.clone(),
            opts.namespace.clone(),
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn(
            "controller service-allocator-controller",
            c.run(opts.concurrent_service_allocator_syncs),
        ));
    }
    if enabled.contains("persistentvolume-attach-detach-controller") {
        let c = AttachDetachController::new(
            new_client().await?,
            AttachDetachInformers {
                pods: Arc::clone(&pods),
                nodes: Arc::clone(&nodes),
                pvcs: Arc::clone(&pvcs),
                pvs: Arc::clone(&pvs),
                csi_drivers: Arc::clone(&csi_drivers),
                volume_attachments: Arc::clone(&volume_attachments),
            },
            AttachDetachConfig {
                reconciler: crate::attachdetach::reconciler::Config {
                    max_wait_for_unmount: opts.attach_detach_max_wait_for_unmount,
                    disable_force_detach_on_timeout: opts.disable_force_detach_on_timeout,
                },
                reconcile_sync_period: opts.attach_detach_reconcile_sync_period,
                disable_reconcile_sync: opts.disable_attach_detach_reconcile_sync,
                nodes_scoped: !opts.node_selector.is_empty(),
            },
        );
        tasks.push(Task::spawn(
            "controller persistentvolume-attach-detach-controller",
            c.run(shutdown.clone()),
        ));
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
                csi_drivers: Arc::clone(&csi_drivers),
                capacities: Arc::clone(&capacities),
            },
            opts.pod_max_in_unschedulable_pods_duration,
            metrics.clone(),
        );
        queues.push(c.queue());
        tasks.push(Task::spawn("controller scheduler", c.run(shutdown.clone())));
    }
    tracing::info!(controllers = ?enabled, "starting controllers");
    // Start the informers somebody uses; the others never watch. Each controller waits
    // for its own informers' first lists before its first sync.
    let mut synced = Vec::new();
    macro_rules! start {
        ($informer:expr, $used:expr) => {
            if $used {
                let i = Arc::clone(&$informer);
                synced.push(i.has_synced());
                let name = format!("informer {}", i.resource());
                tasks.push(Task::spawn(name, i.run()));
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
            "pod-garbage-collector-controller",
            "node-authorizer-controller",
            "endpoint-controller",
            "endpointslice-controller",
            "scheduler",
            "persistentvolume-binder-controller",
            "persistentvolumeclaim-protection-controller",
            "ephemeral-volume-controller",
            "persistentvolume-attach-detach-controller",
            "pod-token-binding-controller"
        ])
    );
    start!(
        services,
        needs(&[
            "endpoint-controller",
            "endpointslice-controller",
            "endpointslice-mirroring-controller",
            "service-allocator-controller"
        ])
    );
    start!(
        endpoints,
        needs(&["endpoint-controller", "endpointslice-mirroring-controller"])
    );
    start!(endpoint_slices, needs(&["endpointslice-controller"]));
    start!(
        mirrored_slices,
        needs(&["endpointslice-mirroring-controller"])
    );
    start!(
        nodes,
        needs(&[
            "node-ipam-controller",
            "node-lifecycle-controller",
            "taint-eviction-controller",
            "pod-garbage-collector-controller",
            "node-authorizer-controller",
            "endpointslice-controller",
            "scheduler",
            "persistentvolume-binder-controller",
            "persistentvolume-attach-detach-controller"
        ])
    );
    start!(leases, needs(&["node-lifecycle-controller"]));
    start!(
        pvs,
        needs(&[
            "scheduler",
            "persistentvolume-binder-controller",
            "persistentvolume-protection-controller",
            "persistentvolume-attach-detach-controller"
        ])
    );
    start!(
        pvcs,
        needs(&[
            "scheduler",
            "node-authorizer-controller",
            "persistentvolume-binder-controller",
            "persistentvolumeclaim-protection-controller",
            "ephemeral-volume-controller",
            "persistentvolume-attach-detach-controller"
        ])
    );
    start!(
        classes,
        needs(&["scheduler", "persistentvolume-binder-controller"])
    );
    start!(
        csi_drivers,
        needs(&["persistentvolume-attach-detach-controller", "scheduler"])
    );
    start!(capacities, needs(&["scheduler"]));
    start!(
        volume_attachments,
        needs(&[
            "persistentvolume-attach-detach-controller",
            "node-authorizer-controller"
        ])
    );
    start!(roles, needs(&["node-authorizer-controller"]));
    start!(bindings, needs(&["node-authorizer-controller"]));
    start!(service_accounts, needs(&["node-authorizer-controller"]));
    start!(ip_addresses, needs(&["service-allocator-controller"]));
    start!(port_leases, needs(&["service-allocator-controller"]));
    // /readyz: every informer has its first list.
    let readiness = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            wait_for_named_cache_sync("rekube-controllers", synced).await;
            metrics.set_ready();
        })
    };

    let lost = async {
        match renewing.as_mut() {
            Some(handle) => handle.await,
            None => std::future::pending().await,
        }
    };
    // Biased, shutdown first: on SIGTERM the controllers that watch the shutdown token
    // return by themselves, which is not a task dying.
    let outcome = tokio::select! {
        biased;
        _ = shutdown.cancelled() => Ok(()),
        // Lost: stop acting now. Nothing waits for in-flight syncs (they would write as a
        // deposed leader); the process exits and comes back as a standby, as upstream's
        // OnStoppedLeading does.
        renewed = lost => {
            metrics.set_leader(false);
            return match renewed {
                Ok((_, Err(lost))) => Err(lost.into()),
                Ok((_, Ok(()))) => Err(Error::TaskStopped("leader election stopped".into())),
                Err(e) => Err(Error::TaskStopped(format!("leader election task: {e}"))),
            };
        }
        stopped = first_to_stop(&mut tasks) => {
            if shutdown.is_cancelled() { Ok(()) } else { Err(stopped) }
        }
    };
    readiness.abort();
    if let Err(stopped) = outcome {
        // /healthz says so until the process is gone.
        metrics.health().task_failed(stopped.clone());
        metrics.set_leader(false);
        abort_all(&tasks);
        return Err(Error::TaskStopped(stopped));
    }
    // Graceful shutdown: the controllers drain while the lease is still renewed, then the
    // lease is released so that a standby takes over at once.
    queues.iter().for_each(|q| q.shut_down());
    let _ = tokio::time::timeout(
        SHUTDOWN_GRACE,
        futures::future::join_all(
            tasks
                .iter_mut()
                .filter(|t| t.name.starts_with("controller "))
                .map(|t| &mut t.handle),
        ),
    )
    .await;
    abort_all(&tasks);
    stop_renewing.cancel();
    metrics.set_leader(false);
    if let Some(handle) = renewing {
        match handle.await {
            Ok((mut e, Ok(()))) => e.release().await?,
            Ok((_, Err(lost))) => return Err(lost.into()),
            Err(e) => return Err(Error::TaskStopped(format!("leader election task: {e}"))),
        }
    }
    tracing::info!("shut down");
    Ok(())
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

/// The hostPath recycler's pod template from `--pv-recycler-pod-template-filepath-hostpath`
/// (a YAML or JSON Pod; its apiVersion may be upstream's `v1`), or `None` for the default.
fn recycler_pod_template(path: &str) -> Result<Option<rekube_crds::Pod>, Error> {
    if path.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Setup(format!(
            "--pv-recycler-pod-template-filepath-hostpath {path}: {e}"
        ))
    })?;
    serde_yaml::from_str(&text).map(Some).map_err(|e| {
        Error::Setup(format!(
            "--pv-recycler-pod-template-filepath-hostpath {path}: not a pod: {e}"
        ))
    })
}
