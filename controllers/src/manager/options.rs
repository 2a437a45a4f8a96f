//! Command-line flags, named and defaulted as kube-controller-manager's.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Every controller this binary hosts, by upstream name.
pub const KNOWN_CONTROLLERS: &[&str] = &[
    "deployment-controller",
    "replicaset-controller",
    "node-ipam-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "scheduler",
    "pod-garbage-collector-controller",
    "node-authorizer-controller",
    "endpoint-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "service-allocator-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "ephemeral-volume-controller",
    "persistentvolume-attach-detach-controller",
    "pod-token-binding-controller",
];

#[derive(Debug, Parser)]
#[command(
    name = "rekube-controllers",
    version,
    about = "rekube's controller manager: the controllers of kube-controller-manager, for rekube.io objects"
)]
pub struct Options {
    /// Controllers to run: '*' runs all, 'foo' enables foo, '-foo' disables foo. Names:
    /// deployment-controller, replicaset-controller, node-ipam-controller,
    /// node-lifecycle-controller, taint-eviction-controller,
    /// pod-garbage-collector-controller, node-authorizer-controller, endpoint-controller,
    /// endpointslice-controller, endpointslice-mirroring-controller,
    /// service-allocator-controller, persistentvolume-binder-controller,
    /// persistentvolumeclaim-protection-controller, persistentvolume-protection-controller,
    /// ephemeral-volume-controller, persistentvolume-attach-detach-controller (alias
    /// attachdetach), pod-token-binding-controller (rekube's own) (or without the
    /// -controller suffix), and scheduler (rekube runs kube-scheduler's work here too).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,

    /// Deployments synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,

    /// ReplicaSets synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,

    /// Services whose Endpoints are synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_endpoint_syncs: usize,

    /// How long pod changes wait before their Services' Endpoints are synced, so that a
    /// burst of changes makes one write (0: at once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub endpoint_updates_batch_period: Duration,

    /// Services whose EndpointSlices are synced concurrently (1 to 50).
    #[arg(long, default_value_t = 5)]
    pub concurrent_service_endpoint_syncs: usize,

    /// The most endpoints an EndpointSlice gets (1 to 1000). More per slice means fewer,
    /// larger slices.
    #[arg(long, default_value_t = 100)]
    pub max_endpoints_per_slice: usize,

    /// How long pod changes wait before their Services' EndpointSlices are synced, so
    /// that a burst of changes makes one write (0: at once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub endpointslice_updates_batch_period: Duration,

    /// Endpoints mirrored into EndpointSlices concurrently (1 to 50).
    #[arg(long, default_value_t = 5)]
    pub mirroring_concurrent_service_endpoint_syncs: usize,

    /// The most addresses of one Endpoints subset mirrored into EndpointSlices (1 to
    /// 1000).
    #[arg(long, default_value_t = 1000)]
    pub mirroring_max_endpoints_per_subset: usize,

    /// How long changes of mirrored EndpointSlices wait before their Endpoints are
    /// synced again (0: at once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub mirroring_endpointslice_updates_batch_period: Duration,

    /// Pods whose generic ephemeral volumes' claims are synced concurrently (upstream
    /// --concurrent-ephemeralvolume-syncs).
    #[arg(long, default_value_t = 5)]
    pub concurrent_ephemeralvolume_syncs: usize,

    /// How often the pod token binding controller checks again that a pod's token
    /// binding Secret exists (one GET per pod; a binding deleted while its pod lives is
    /// made again within this period).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub pod_token_binding_resync_period: Duration,

    /// Sustained API requests per second to the apiserver.
    #[arg(long, default_value_t = 20.0)]
    pub kube_api_qps: f32,

    /// API requests allowed in a burst above the QPS.
    #[arg(long, default_value_t = 30)]
    pub kube_api_burst: u32,

    /// Elect a leader on a Lease before acting, so that only one replica acts at a time.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// How long a standby waits after the leader's last renewal before taking over.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_elect_lease_duration: Duration,

    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_elect_renew_deadline: Duration,

    /// How often to try to acquire or renew the lease.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_elect_retry_period: Duration,

    /// The Lease's name.
    #[arg(long, default_value = "rekube-controllers")]
    pub leader_elect_resource_name: String,

    /// The Lease's namespace.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,

    /// Watch and act in this namespace only (all namespaces when empty). Not in
    /// kube-controller-manager; for running several instances side by side, as the tests do.
    #[arg(long, default_value = "")]
    pub namespace: String,

    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:10258")]
    pub bind_address: SocketAddr,

    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Watch and act on the Nodes with these labels only (a label selector; all when
    /// empty). Not in kube-controller-manager; the cluster-scoped twin of --namespace.
    #[arg(long, default_value = "")]
    pub node_selector: String,

    /// Watch and act on the PersistentVolumes and StorageClasses with these labels only (a
    /// label selector; all when empty). Not in kube-controller-manager; the cluster-scoped
    /// twin of --namespace for storage, as --node-selector is for Nodes.
    #[arg(long, default_value = "")]
    pub storage_selector: String,

    /// How often the PV binder syncs every volume and claim again (upstream
    /// --pvclaimbinder-sync-period).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub pvclaimbinder_sync_period: Duration,

    /// Enable dynamic provisioning (upstream --enable-dynamic-provisioning).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_dynamic_provisioning: bool,

    /// The file path to a pod definition used as a template for hostPath volume recycling
    /// (upstream --pv-recycler-pod-template-filepath-hostpath); empty: rekube's default
    /// (busybox:1.36 running upstream's scrub command).
    #[arg(long, default_value = "")]
    pub pv_recycler_pod_template_filepath_hostpath: String,

    /// The minimum activeDeadlineSeconds of a hostPath recycler pod (upstream
    /// --pv-recycler-minimum-timeout-hostpath).
    #[arg(long, default_value_t = 60)]
    pub pv_recycler_minimum_timeout_hostpath: i64,

    /// Seconds added to a hostPath recycler pod's activeDeadlineSeconds per GiB of the
    /// volume (upstream --pv-recycler-timeout-increment-hostpath).
    #[arg(long, default_value_t = 30)]
    pub pv_recycler_timeout_increment_hostpath: i64,

    /// Assign each Node a pod CIDR from --cluster-cidr (the node-ipam-controller).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub allocate_node_cidrs: bool,

    /// The pods' address range, split into per-node ranges.
    #[arg(long, default_value = "")]
    pub cluster_cidr: String,

    /// The prefix length of each node's pod CIDR (IPv4).
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,

    /// The Services' cluster IPs: one CIDR, or two of different families (IPv4,IPv6)
    /// for dual-stack; the first is the default family. The service allocator hands them
    /// out (none when empty); node IPAM keeps them out of --cluster-cidr.
    #[arg(long, default_value = "")]
    pub service_cluster_ip_range: String,

    /// The NodePorts' range (min-max, inclusive), shared by every protocol.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,

    /// Services synced concurrently by the service allocator (not kube-controller-manager's
    /// --concurrent-service-syncs, which is the LoadBalancer service controller's).
    #[arg(long, default_value_t = 20)]
    pub concurrent_service_allocator_syncs: usize,

    /// Sustained API requests per second of the service allocator's own client (not in
    /// kube-controller-manager: upstream allocates inside the apiserver, unthrottled; each
    /// Service takes two requests: 200 created at once fit in the burst).
    #[arg(long, default_value_t = 200.0)]
    pub service_allocator_api_qps: f32,

    /// The service allocator's burst.
    #[arg(long, default_value_t = 400)]
    pub service_allocator_api_burst: u32,

    /// How often the node lifecycle controller checks node health.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub node_monitor_period: Duration,

    /// How long a node may go without a heartbeat (Lease renewal or Ready update) before
    /// its Ready condition becomes Unknown.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub node_monitor_grace_period: Duration,

    /// As --node-monitor-grace-period, for a node that never posted a Ready condition.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub node_startup_grace_period: Duration,

    /// Where the node agents' heartbeat Leases live (upstream: kube-node-lease).
    #[arg(long, default_value = "rekube-node-lease")]
    pub node_lease_namespace: String,

    /// Where the node authorizer keeps each node's ServiceAccount, named after the node:
    /// the identity a node agent reads its pods' Secrets and ConfigMaps with.
    #[arg(long, default_value = rekube_crds::node_identity::DEFAULT_NODE_IDENTITY_NAMESPACE)]
    pub node_identity_namespace: String,

    /// How long pods without their own toleration tolerate the not-ready and unreachable
    /// NoExecute taints (upstream: the apiserver's --default-not-ready-toleration-seconds
    /// and --default-unreachable-toleration-seconds, added to pods by admission).
    #[arg(long, default_value_t = 300)]
    pub default_toleration_seconds: i64,

    /// Terminated pods (Succeeded or Failed) kept before the pod garbage collector deletes
    /// the oldest; 0 or less disables that (the collector still removes orphaned pods).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: i32,

    /// How often the pod garbage collector runs (upstream's fixed gcCheckPeriod). Not in
    /// kube-controller-manager; shorter in the tests, as upstream's integration tests do.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, hide = true)]
    pub pod_gc_check_period: Duration,

    /// How long a node missing from the cache stays quarantined before its pods count as
    /// orphaned (upstream's fixed quarantineTime). Not in kube-controller-manager.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration, hide = true)]
    pub pod_gc_quarantine_time: Duration,

    /// Sustained API requests per second of the scheduler (kube-scheduler's
    /// clientConnection.qps).
    #[arg(long, default_value_t = 50.0)]
    pub scheduler_api_qps: f32,

    /// The scheduler's burst (kube-scheduler's clientConnection.burst).
    #[arg(long, default_value_t = 100)]
    pub scheduler_api_burst: u32,

    /// How often the attach/detach controller checks that the volumes it holds attached
    /// still are (their VolumeAttachments' status.attached; upstream
    /// --attach-detach-reconcile-sync-period). Below one second: never.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub attach_detach_reconcile_sync_period: Duration,

    /// Do not run the attach/detach controller's periodic check of attached volumes
    /// (upstream --disable-attach-detach-reconcile-sync).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub disable_attach_detach_reconcile_sync: bool,

    /// Prevent force detaching volumes based on maximum unmount time and node status; the
    /// out-of-service taint must then be used to recover from a node failure (upstream
    /// --disable-force-detach-on-timeout).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub disable_force_detach_on_timeout: bool,

    /// How long the attach/detach controller waits for a node to stop using (unmount) a
    /// volume no pod on it wants before it detaches it anyway, if the node is not Ready.
    /// Not in kube-controller-manager: upstream has it as a constant
    /// (ReconcilerMaxWaitForUnmountDuration, 6 minutes); a flag here so tests can shorten it.
    #[arg(long, default_value = "6m", value_parser = humantime::parse_duration)]
    pub attach_detach_max_wait_for_unmount: Duration,

    /// How long an unschedulable pod waits at most before it is tried again even if
    /// nothing changed (upstream podMaxInUnschedulablePodsDuration).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub pod_max_in_unschedulable_pods_duration: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error(
        "unknown controller {0:?} in --controllers (known: deployment-controller, replicaset-controller, node-ipam-controller, node-lifecycle-controller, taint-eviction-controller, pod-garbage-collector-controller, node-authorizer-controller, endpoint-controller, endpointslice-controller, endpointslice-mirroring-controller, service-allocator-controller, persistentvolume-binder-controller, persistentvolumeclaim-protection-controller, persistentvolume-protection-controller, ephemeral-volume-controller, persistentvolume-attach-detach-controller, pod-token-binding-controller, scheduler)"
    )]
    UnknownController(String),
    #[error(
        "the leader election renew deadline ({renew:?}) must be shorter than the lease duration ({lease:?}) and longer than the retry period ({retry:?})"
    )]
    LeaderElectionTimings {
        lease: Duration,
        renew: Duration,
        retry: Duration,
    },
    #[error("--allocate-node-cidrs needs --cluster-cidr")]
    MissingClusterCidr,
    #[error("invalid --{flag} {value:?}: {message}")]
    Invalid {
        flag: &'static str,
        value: String,
        message: String,
    },
}

fn canonical(name: &str) -> Result<&'static str, Error> {
    if let Some(k) = KNOWN_CONTROLLERS.iter().copied().find(|k| *k == name) {
        return Ok(k);
    }
    // kube-controller-manager's aliases that are not the name without its suffix
    // (cmd/kube-controller-manager/names: ControllerAliases).
    if name == "attachdetach" {
        return Ok("persistentvolume-attach-detach-controller");
    }
    let full = if name.ends_with("-controller") {
        name.to_string()
    } else {
        format!("{name}-controller")
    };
    KNOWN_CONTROLLERS
        .iter()
        .copied()
        .find(|k| *k == full)
        .ok_or_else(|| Error::UnknownController(name.to_string()))
}

/// The controllers `--controllers` enables (kube-controller-manager's IsControllerEnabled):
/// an explicit `-name` wins, then an explicit `name`, then `*`.
pub fn enabled_controllers(flags: &[String]) -> Result<BTreeSet<&'static str>, Error> {
    let mut star = false;
    let mut on = BTreeSet::new();
    let mut off = BTreeSet::new();
    for f in flags.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
        match f {
            "*" => star = true,
            _ => match f.strip_prefix('-') {
                Some(name) => {
                    off.insert(canonical(name)?);
                }
                None => {
                    on.insert(canonical(f)?);
                }
            },
        }
    }
    Ok(KNOWN_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !off.contains(c) && (star || on.contains(c)))
        .collect())
}

impl Options {
    /// Checks that flags agree with each other, as upstream's option validation does.
    pub fn validate(&self) -> Result<BTreeSet<&'static str>, Error> {
        if self.leader_elect
            && !(self.leader_elect_renew_deadline < self.leader_elect_lease_duration
                && self.leader_elect_retry_period < self.leader_elect_renew_deadline)
        {
            return Err(Error::LeaderElectionTimings {
                lease: self.leader_elect_lease_duration,
                renew: self.leader_elect_renew_deadline,
                retry: self.leader_elect_retry_period,
            });
        }
        if self.allocate_node_cidrs && self.cluster_cidr.is_empty() {
            return Err(Error::MissingClusterCidr);
        }
        if !self.cluster_cidr.is_empty() {
            crate::nodelifecycle::cidr::CidrSet::parse(
                &self.cluster_cidr,
                self.node_cidr_mask_size,
            )
            .map_err(|e| Error::Invalid {
                flag: "cluster-cidr",
                value: self.cluster_cidr.clone(),
                message: e.to_string(),
            })?;
        }
        self.service_allocator_config()?;
        // upstream EndpointSliceControllerOptions.Validate.
        for (flag, value, min, max) in [
            (
                "concurrent-service-endpoint-syncs",
                self.concurrent_service_endpoint_syncs,
                1,
                50,
            ),
            (
                "max-endpoints-per-slice",
                self.max_endpoints_per_slice,
                1,
                1000,
            ),
            (
                "mirroring-concurrent-service-endpoint-syncs",
                self.mirroring_concurrent_service_endpoint_syncs,
                1,
                50,
            ),
            (
                "mirroring-max-endpoints-per-subset",
                self.mirroring_max_endpoints_per_subset,
                1,
                1000,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(Error::Invalid {
                    flag,
                    value: value.to_string(),
                    message: format!("must be between {min} and {max}"),
                });
            }
        }
        enabled_controllers(&self.controllers)
    }

    /// The service allocator's ranges from `--service-cluster-ip-range` and
    /// `--service-node-port-range` (upstream's apiserver flag checks: at most two CIDRs,
    /// of different families).
    pub fn service_allocator_config(
        &self,
    ) -> Result<crate::serviceallocator::alloc::Config, Error> {
        use crate::serviceallocator::ipallocator::IpRange;
        let invalid = |flag: &'static str, value: &str, message: String| Error::Invalid {
            flag,
            value: value.to_string(),
            message,
        };
        let flag = "service-cluster-ip-range";
        let value = &self.service_cluster_ip_range;
        let mut ip_ranges: Vec<IpRange> = Vec::new();
        for cidr in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let net: crate::nodelifecycle::cidr::IpNet =
                cidr.parse()
                    .map_err(|e: crate::nodelifecycle::cidr::CidrError| {
                        invalid(flag, value, e.to_string())
                    })?;
            let range = IpRange::new(net).map_err(|e| invalid(flag, value, e.to_string()))?;
            if ip_ranges.iter().any(|r| r.family() == range.family()) {
                return Err(invalid(
                    flag,
                    value,
                    "may not have two CIDRs of the same family".into(),
                ));
            }
            ip_ranges.push(range);
        }
        if ip_ranges.len() > 2 {
            return Err(invalid(flag, value, "may have at most two CIDRs".into()));
        }
        let node_ports = self.service_node_port_range.parse().map_err(
            |e: crate::serviceallocator::portallocator::Error| {
                invalid(
                    "service-node-port-range",
                    &self.service_node_port_range,
                    e.to_string(),
                )
            },
        )?;
        Ok(crate::serviceallocator::alloc::Config {
            ip_ranges,
            node_ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(flags: &[&str]) -> Result<Vec<&'static str>, Error> {
        enabled_controllers(&flags.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map(|s| s.into_iter().collect())
    }

    #[test]
    fn controllers_flag_follows_kube_controller_manager() {
        let all = vec![
            "deployment-controller",
            "endpoint-controller",
            "endpointslice-controller",
            "endpointslice-mirroring-controller",
            "ephemeral-volume-controller",
            "node-authorizer-controller",
            "node-ipam-controller",
            "node-lifecycle-controller",
            "persistentvolume-attach-detach-controller",
            "persistentvolume-binder-controller",
            "persistentvolume-protection-controller",
            "persistentvolumeclaim-protection-controller",
            "pod-garbage-collector-controller",
            "pod-token-binding-controller",
            "replicaset-controller",
            "scheduler",
            "service-allocator-controller",
            "taint-eviction-controller",
        ];
        assert_eq!(enabled(&["*"]).unwrap(), all);
        assert_eq!(
            enabled(&["deployment", "replicaset", "-deployment"]).unwrap(),
            vec!["replicaset-controller"]
        );
        assert_eq!(
            enabled(&["scheduler", "node-lifecycle"]).unwrap(),
            vec!["node-lifecycle-controller", "scheduler"]
        );
        assert_eq!(enabled(&["*", "-scheduler"]).unwrap().len(), 17);
        assert_eq!(
            enabled(&["pod-token-binding"]).unwrap(),
            vec!["pod-token-binding-controller"]
        );
        assert_eq!(
            enabled(&["attachdetach"]).unwrap(),
            vec!["persistentvolume-attach-detach-controller"]
        );
        assert_eq!(
            enabled(&["ephemeral-volume"]).unwrap(),
            vec!["ephemeral-volume-controller"]
        );
        assert_eq!(
            enabled(&[
                "persistentvolume-binder",
                "persistentvolumeclaim-protection"
            ])
            .unwrap(),
            vec![
                "persistentvolume-binder-controller",
                "persistentvolumeclaim-protection-controller"
            ]
        );
        assert_eq!(
            enabled(&["endpointslice-mirroring"]).unwrap(),
            vec!["endpointslice-mirroring-controller"]
        );
        assert_eq!(
            enabled(&["endpointslice"]).unwrap(),
            vec!["endpointslice-controller"]
        );
        assert_eq!(enabled(&["endpoint"]).unwrap(), vec!["endpoint-controller"]);
        assert_eq!(
            enabled(&["service-allocator"]).unwrap(),
            vec!["service-allocator-controller"]
        );
        assert_eq!(
            enabled(&["node-authorizer"]).unwrap(),
            vec!["node-authorizer-controller"]
        );
        assert_eq!(
            enabled(&["pod-garbage-collector"]).unwrap(),
            vec!["pod-garbage-collector-controller"]
        );
        assert_eq!(
            enabled(&["deployment"]).unwrap(),
            vec!["deployment-controller"]
        );
        assert_eq!(
            enabled(&["deployment", "-deployment"]).unwrap(),
            Vec::<&str>::new()
        );
        assert_eq!(enabled(&[]).unwrap(), Vec::<&str>::new());
        assert_eq!(
            enabled(&["*", "-cronjob"]),
            Err(Error::UnknownController("cronjob".into()))
        );
    }

    #[test]
    fn defaults_are_upstreams() {
        let o = Options::parse_from(["rekube-controllers"]);
        assert_eq!((o.kube_api_qps, o.kube_api_burst), (20.0, 30));
        assert_eq!(
            (o.concurrent_deployment_syncs, o.concurrent_replicaset_syncs),
            (5, 5)
        );
        assert_eq!(o.concurrent_endpoint_syncs, 5);
        assert_eq!(o.concurrent_ephemeralvolume_syncs, 5);
        assert_eq!(
            o.pod_token_binding_resync_period,
            Duration::from_secs(5 * 60)
        );
        assert_eq!(o.endpoint_updates_batch_period, Duration::ZERO);
        assert_eq!(
            (
                o.concurrent_service_endpoint_syncs,
                o.max_endpoints_per_slice
            ),
            (5, 100)
        );
        assert_eq!(o.endpointslice_updates_batch_period, Duration::ZERO);
        for bad in [
            ["--max-endpoints-per-slice", "0"],
            ["--max-endpoints-per-slice", "1001"],
        ] {
            let o = Options::parse_from(["rekube-controllers", bad[0], bad[1]]);
            assert!(matches!(
                o.validate(),
                Err(Error::Invalid {
                    flag: "max-endpoints-per-slice",
                    ..
                })
            ));
        }
        assert!(o.leader_elect);
        assert!(!o.allocate_node_cidrs);
        assert_eq!(o.node_cidr_mask_size, 24);
        assert_eq!(o.node_monitor_period, Duration::from_secs(5));
        assert_eq!(o.node_monitor_grace_period, Duration::from_secs(40));
        assert_eq!(o.node_startup_grace_period, Duration::from_secs(60));
        assert_eq!(o.default_toleration_seconds, 300);
        assert_eq!((o.scheduler_api_qps, o.scheduler_api_burst), (50.0, 100));
        assert_eq!(
            (o.service_allocator_api_qps, o.service_allocator_api_burst),
            (200.0, 400)
        );
        assert_eq!(o.service_node_port_range, "30000-32767");
        assert_eq!(
            o.attach_detach_reconcile_sync_period,
            Duration::from_secs(60)
        );
        assert_eq!(
            o.attach_detach_max_wait_for_unmount,
            Duration::from_secs(360)
        );
        assert!(!o.disable_attach_detach_reconcile_sync);
        assert!(!o.disable_force_detach_on_timeout);
        assert_eq!(o.leader_elect_lease_duration, Duration::from_secs(15));
        assert_eq!(o.leader_elect_renew_deadline, Duration::from_secs(10));
        assert_eq!(o.leader_elect_retry_period, Duration::from_secs(2));
        assert!(o.validate().is_ok());
    }

    #[test]
    fn node_flags_are_checked() {
        let o = Options::parse_from(["rekube-controllers", "--allocate-node-cidrs", "true"]);
        assert_eq!(o.validate(), Err(Error::MissingClusterCidr));
        let o = Options::parse_from([
            "rekube-controllers",
            "--allocate-node-cidrs",
            "true",
            "--cluster-cidr",
            "10.244.0.0/33",
        ]);
        assert!(matches!(
            o.validate(),
            Err(Error::Invalid {
                flag: "cluster-cidr",
                ..
            })
        ));
    }

    #[test]
    fn service_ranges_are_checked() {
        let o = Options::parse_from(["rekube-controllers"]);
        let c = o.service_allocator_config().unwrap();
        assert!(c.ip_ranges.is_empty());
        assert_eq!(c.node_ports.to_string(), "30000-32767");
        let o = Options::parse_from([
            "rekube-controllers",
            "--service-cluster-ip-range",
            "10.96.0.0/16,fd00:10:96::/112",
            "--service-node-port-range",
            "31000-31999",
        ]);
        let c = o.service_allocator_config().unwrap();
        assert_eq!(c.ip_ranges.len(), 2);
        assert_eq!(c.node_ports.to_string(), "31000-31999");
        for (ips, ports) in [
            ("10.96.0.0/16,10.97.0.0/16", "30000-32767"),
            ("10.96.0.0/33", "30000-32767"),
            ("fd00::/48", "30000-32767"),
            ("10.96.0.0/16", "32767-30000"),
        ] {
            let o = Options::parse_from([
                "rekube-controllers",
                "--service-cluster-ip-range",
                ips,
                "--service-node-port-range",
                ports,
            ]);
            assert!(
                matches!(o.validate(), Err(Error::Invalid { .. })),
                "{ips} {ports}"
            );
        }
    }

    #[test]
    fn inconsistent_leader_election_timings_are_refused() {
        let o = Options::parse_from(["rekube-controllers", "--leader-elect-renew-deadline", "20s"]);
        assert!(matches!(
            o.validate(),
            Err(Error::LeaderElectionTimings { .. })
        ));
    }
}
