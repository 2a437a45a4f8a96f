//! The real pod sync: [`RealSyncer`], upstream's kubelet.go `SyncPod`,
//! `SyncTerminatingPod` and `SyncTerminatedPod` with kuberuntime/kuberuntime_manager.go
//! `SyncPod` in the seed's order (compute the changes with
//! [`compute_pod_actions`]; kill the sandbox if needed; kill the containers that should
//! not run; create the sandbox; ephemeral containers; init containers; normal
//! containers), driving [`crate::runtime`] directly, and writing the status as
//! status/status_manager.go does (only when it changed). Each started container has an
//! exit watcher (upstream's PLEG) that records its exit and pokes the pod's worker; its
//! probes run in [`super::prober_manager`], whose result changes poke it too. PostStart
//! and PreStop hooks run through [`super::lifecycle`]. The ConfigMaps and Secrets a
//! container's environment names, and the pod's imagePullSecrets, are read from the
//! apiserver when the container starts (upstream caches them with watches).
//!
//! The container configuration is pure: [`container_spec`] (kuberuntime_container.go
//! `generateContainerConfig`, kuberuntime_container_linux.go
//! `generateLinuxContainerConfig`, containerd's CRI image defaults).
//!
//! After an agent restart the previous run's containers are gone
//! ([`crate::runtime::recovery`]): a pod's containers start again in a new sandbox, their
//! restart counts continuing from the API status.
//!
//! Pods get an IP from the node's podCIDR ([`crate::runtime::network`]), on loopback
//! inside their namespace until real pod networking.
//!
//! Events as the kubelet's ([`super::events`]): image pulls, Created, Started, Failed,
//! Killing, BackOff, Unhealthy, hook failures, sandbox failures.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::Pod;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::events::{self as ev};
use super::hollow::{Error as HollowError, add_finalizer, remove_finalizer, write_status};
use super::lifecycle::{HookTarget, REASON_POST_START_HOOK_ERROR, run_handler};
use super::node_identity::NodeReader;
use super::pod_workers::{BoxFuture, PodSyncer, SyncOutcome};
use super::prober_manager::{ProbeTarget, ProberManager};
use crate::image::credentials::{RegistryCredential, parse_pull_secret};
use crate::image::manager::{ImageEvent, ImageManager};
use crate::image::policy::PullPolicy;
use crate::image::spec::ContainerConfig;
use crate::kubelet::backoff::{
    Backoff, MAX_CRASH_LOOP_BACK_OFF, REASON_CRASH_LOOP_BACK_OFF, do_back_off,
};
use crate::kubelet::block_volumes::{BlockVolumeInfo, make_block_volumes};
use crate::kubelet::container_gc::ContainerGcPolicy;
use crate::kubelet::env::{EnvSources, make_environment_variables};
use crate::kubelet::eviction::{
    IMMEDIATE_EVICTION_GRACE_PERIOD_SECONDS, REASON_EVICTED, empty_dir_limit_eviction,
    empty_dirs_with_size_limit,
};
use crate::kubelet::mounts::{VolumeInfo, make_mounts, mounts_etc_hosts};
use crate::kubelet::pod_actions::{compute_pod_actions, is_restartable_init_container};
use crate::kubelet::quantity::{Amount, QuantityError, parse_quantity};
use crate::kubelet::runtime_status::{
    ContainerRuntimeStatus, ContainerState, PodRuntimeStatus, SandboxState, SandboxStatus,
    format_pod_desc, hash_container,
};
use crate::kubelet::security_context::{image_user, verify_run_as_non_root};
use crate::kubelet::status_generate::{
    PodStatusInputs, WaitingReason, ephemeral_as_container, generate_api_pod_status,
};
use crate::runtime::cgroups::Resources;
use crate::runtime::sandbox::PortMapping;
use crate::runtime::spec::{
    BindMount, ContainerSpec, LogConfig, RootfsSource, SpecError, UserDb, combine_command,
    expand_command_and_args, merge_env, parse_stop_signal, resolve_user, working_dir,
};
use crate::runtime::{Container as RtContainer, Runtime, Sandbox, SandboxConfig};
use crate::volume::csi::CsiPlugin;
use crate::volume::manager::attach::VolumesInUse;
use crate::volume::manager::{ObjectReader, VolumeManager};
use crate::volume::pod_dirs::PodDirs;
use crate::volume::subpath::{Subpath, prepare_safe_subpath};
use rekube_crds::events::{EventRecorder, EventType};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {container} of pod {pod}: {source}")]
    Spec {
        pod: String,
        container: String,
        source: SpecError,
    },
    /// upstream's runAsNonRoot messages, as they are.
    #[error("{0}")]
    NonRoot(String),
    #[error("container {container} of pod {pod}: invalid {resource}: {source}")]
    Quantity {
        pod: String,
        container: String,
        resource: String,
        source: QuantityError,
    },
}

/// What [`container_spec`] needs besides the pod and the container.
pub struct ContainerInputs<'a> {
    /// The image's config (`None`: an image without one).
    pub image: Option<&'a ContainerConfig>,
    /// The image's layers as overlayfs lower directories, top first
    /// ([`crate::image::Store::lower_dirs`]).
    pub lower_dirs: Vec<PathBuf>,
    /// The container's environment, resolved
    /// ([`crate::kubelet::env::make_environment_variables`]).
    pub env: &'a [(String, String)],
    /// The image's users and groups (from its layers' /etc/passwd and /etc/group).
    pub users: &'a UserDb,
    /// The CRI log file (`<pod log dir>/<container>/<restart>.log`).
    pub log_path: PathBuf,
}

/// The pod's hostname: spec.hostname, else the pod name, at most 63 characters
/// (kubelet_pods.go `GeneratePodHostNameAndDomain`).
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// The pod's hostPorts for its sandbox (kuberuntime_sandbox.go
/// `generatePodSandboxConfig` over `MakePortMappings`; containerd passes CNI those with a
/// hostPort): protocol in lower case as CNI's portmap takes it.
pub fn host_port_mappings(pod: &Pod) -> Vec<PortMapping> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| PortMapping {
            host_port: p.host_port.unwrap_or_default(),
            container_port: p.container_port,
            protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}

/// The container's cgroup limits from its requests and limits (cpu shares from the
/// request, quota from the limit, the memory limit). A quantity that does not parse is
/// refused (`Err((resource, error))`, e.g. `("limits.memory", ...)`) rather than read as
/// no limit.
pub fn container_resources(container: &Container) -> Result<Resources, (String, QuantityError)> {
    let res = container.resources.as_ref();
    let get = |field: &str, k: &str| -> Result<Option<Amount>, (String, QuantityError)> {
        let m = match field {
            "requests" => res.and_then(|r| r.requests.as_ref()),
            _ => res.and_then(|r| r.limits.as_ref()),
        };
        m.and_then(|m| m.get(k))
            .map(|q| parse_quantity(&q.0).map_err(|e| (format!("{field}.{k}"), e)))
            .transpose()
    };
    let cpu_limit = get("limits", "cpu")?.map(Amount::milli_value);
    let cpu_request = get("requests", "cpu")?.map(Amount::milli_value);
    let memory_limit = get("limits", "memory")?.map(Amount::value);
    // Parsed for the same reason, though no cgroup setting reads it.
    get("requests", "memory")?;
    Ok(Resources::from_requests_limits(
        cpu_request,
        cpu_limit,
        memory_limit,
    ))
}

/// upstream `generateContainerConfig`: the command (image ENTRYPOINT/CMD combined with
/// command/args, `$(VAR)` expanded), the environment over the image's, the working
/// directory, the user (runAsUser/runAsGroup/supplementalGroups over the image's USER),
/// the stop signal, the overlay rootfs, the cgroup limits and the log. The sandbox's
/// namespaces and /etc files are added by [`crate::runtime::Sandbox::apply_to`].
pub fn container_spec(
    pod: &Pod,
    container: &Container,
    inputs: &ContainerInputs<'_>,
) -> Result<ContainerSpec, Error> {
    let err = |source| Error::Spec {
        pod: format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
        container: container.name.clone(),
        source,
    };
    let image = inputs.image.cloned().unwrap_or_default();
    let (command, args) = expand_command_and_args(
        container.command.as_deref().unwrap_or_default(),
        container.args.as_deref().unwrap_or_default(),
        inputs.env,
    );
    let argv = combine_command(
        &container.name,
        image.entrypoint.as_deref().unwrap_or_default(),
        image.cmd.as_deref().unwrap_or_default(),
        &command,
        &args,
    )
    .map_err(err)?;
    let mut spec = ContainerSpec::new(
        &container.name,
        RootfsSource::Layers(inputs.lower_dirs.clone()),
        argv,
    );
    let hostname = pod_hostname(pod);
    spec.env = merge_env(
        &hostname,
        image.env.as_deref().unwrap_or_default(),
        inputs.env,
    );
    spec.cwd = working_dir(
        container.working_dir.as_deref(),
        image.working_dir.as_deref(),
    );
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    let supplemental = pod_sc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default();
    // upstream checks runAsNonRoot against the image's user before anything else of the
    // user is resolved.
    let (image_uid, image_username) = image_user(image.user.as_deref().unwrap_or_default());
    verify_run_as_non_root(pod, container, image_uid, &image_username).map_err(Error::NonRoot)?;
    spec.user = resolve_user(
        image.user.as_deref().unwrap_or_default(),
        run_as_user,
        run_as_group,
        &supplemental,
        inputs.users,
    )
    .map_err(err)?;
    if let Some(sig) = image.stop_signal.as_deref().and_then(parse_stop_signal) {
        spec.stop_signal = sig;
    }
    if sc.and_then(|s| s.privileged).unwrap_or(false) {
        spec.set_privileged();
    }
    if let Some(caps) = sc.and_then(|s| s.capabilities.as_ref()) {
        spec.apply_capability_changes(
            caps.add.as_deref().unwrap_or_default(),
            caps.drop.as_deref().unwrap_or_default(),
        );
    }
    spec.readonly_rootfs = sc
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false);
    spec.resources =
        container_resources(container).map_err(|(resource, source)| Error::Quantity {
            pod: format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            container: container.name.clone(),
            resource,
            source,
        })?;
    spec.hostname = Some(hostname);
    spec.log = Some(LogConfig::new(inputs.log_path.clone()));
    Ok(spec)
}

/// How often a pod with nothing pending is synced again.
const RESYNC: Duration = Duration::from_secs(10);
/// How soon a pod whose volumes are not all set up is synced again (after its wait of
/// `WAIT_FOR_ATTACH_AND_MOUNT_SLICE`, or at once with the populator's errors): upstream's
/// `podAttachAndMountRetryInterval`, the poll of `WaitForAttachAndMount`.
const POD_ATTACH_AND_MOUNT_RETRY_INTERVAL: Duration = Duration::from_millis(300);
/// How often a pod whose volumes cannot be processed gets upstream's "Unable to attach or
/// mount volumes" event: once per failed sync there, which the pod worker retries after
/// its back-off (kubelet.go `backOffPeriod`, 10 s); here a pod is synced more often than
/// that, and the event recorder's per-pod budget is kept for the pod's other events.
const VOLUME_EVENT_PERIOD: Duration = Duration::from_secs(10);

/// The waiting reason of a container whose config could not be made.
const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
const RUN_CONTAINER_ERROR: &str = "RunContainerError";

/// One pod's runtime objects and the runtime's view of them.
#[derive(Default)]
pub(super) struct PodState {
    sandbox: Option<Sandbox>,
    /// Every container instance created and not yet garbage collected, by ID.
    pub(super) containers: HashMap<String, RtContainer>,
    /// Shared with the exit watchers.
    pub(super) status: Arc<Mutex<PodRuntimeStatus>>,
    waiting: BTreeMap<String, WaitingReason>,
    backoff: Option<Backoff>,
    /// The pod's volumes as set up by the volume manager, by their name in the spec.
    volumes: BTreeMap<String, VolumeInfo>,
    /// The pod's Block volumes as mapped by the volume manager, by their name in the spec.
    block_volumes: BTreeMap<String, BlockVolumeInfo>,
    /// The last "Unable to attach or mount volumes" event and when it was recorded.
    volume_event: Option<(String, std::time::Instant)>,
}

type Poke = Arc<dyn Fn(&str) + Send + Sync>;

/// What the real syncer takes from the agent's flags and its Node.
#[derive(Debug, Clone)]
pub struct SyncerConfig {
    /// The node's InternalIPs (status.hostIP(s), the `status.hostIP` fieldRef).
    pub host_ips: Vec<String>,
    /// `--pod-log-dir`: `<dir>/<namespace>_<pod>_<uid>/<container>/<n>.log`.
    pub log_dir: PathBuf,
    /// `--container-log-max-size` in bytes and `--container-log-max-files`.
    pub container_log_max_size: u64,
    pub container_log_max_files: usize,
    /// `--pod-max-pids`: the pod cgroup's pids limit (`None`: unlimited, upstream's -1).
    pub pod_max_pids: Option<i64>,
    /// The container GC policy (`--minimum-container-ttl-duration`,
    /// `--maximum-dead-containers-per-container`, `--maximum-dead-containers`).
    pub container_gc: ContainerGcPolicy,
    /// `--crash-loop-back-off-max-container-restart-period`: the CrashLoopBackOff cap.
    pub crash_loop_max_container_restart_period: Duration,
    /// The Node's allocatable: a `limits.*` resourceFieldRef with no limit set reads it
    /// (upstream `defaultPodLimitsForDownwardAPI`).
    pub node_allocatable: BTreeMap<String, Quantity>,
    /// The node's name and `--node-identity-namespace`: Secrets and ConfigMaps are read
    /// as the node's own ServiceAccount there ([`super::node_identity`]); `None`: with
    /// the agent's client.
    pub node_name: String,
    pub node_identity_namespace: Option<String>,
    /// `<root-dir>/pods`: each pod's volumes (`pods/<uid>/volumes/...`).
    pub pods_dir: PathBuf,
    /// The CSI drivers' sockets by driver name: `--csi-driver`'s and the registered ones
    /// (shared with the plugin manager).
    pub csi_drivers: crate::volume::csi_registry::DriversStore,
    /// The volumes the node reports in use, shared with the node status loop.
    pub volumes_in_use: Arc<VolumesInUse>,
}

impl SyncerConfig {
    /// The kubelet's defaults: 10Mi and 5 log files, no pids limit, one dead instance
    /// kept per container, CrashLoopBackOff up to 300 s.
    pub fn new(host_ips: Vec<String>, log_dir: impl Into<PathBuf>) -> Self {
        SyncerConfig {
            host_ips,
            log_dir: log_dir.into(),
            container_log_max_size: 10 * 1024 * 1024,
            container_log_max_files: 5,
            pod_max_pids: None,
            container_gc: ContainerGcPolicy::default(),
            crash_loop_max_container_restart_period: MAX_CRASH_LOOP_BACK_OFF,
            node_allocatable: BTreeMap::new(),
            node_name: String::new(),
            node_identity_namespace: None,
            pods_dir: PathBuf::from("/var/lib/rekube/pods"),
            csi_drivers: Default::default(),
            volumes_in_use: Arc::default(),
        }
    }
}

/// The pod's network and its containers that have not exited.
fn running_containers(st: &PodState) -> (PodNet, Vec<RtContainer>) {
    let running = st
        .containers
        .values()
        .filter(|c| c.exit().is_none())
        .cloned()
        .collect();
    (PodNet::of(st.sandbox.as_ref()), running)
}

impl ObjectReader for NodeReader {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::ConfigMap>, String> {
        NodeReader::config_map(self, namespace, name).await
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::Secret>, String> {
        NodeReader::secret(self, namespace, name).await
    }

    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<rekube_crds::PersistentVolumeClaim>, String> {
        NodeReader::persistent_volume_claim(self, namespace, name).await
    }

    async fn persistent_volume(
        &self,
        name: &str,
    ) -> Result<Option<rekube_crds::PersistentVolume>, String> {
        NodeReader::persistent_volume(self, name).await
    }

    async fn csi_driver(&self, name: &str) -> Result<Option<rekube_crds::CSIDriver>, String> {
        NodeReader::csi_driver(self, name).await
    }

    async fn volume_attachment(
        &self,
        name: &str,
    ) -> Result<Option<rekube_crds::VolumeAttachment>, String> {
        NodeReader::volume_attachment(self, name).await
    }

    async fn volumes_attached(&self) -> Result<Vec<String>, String> {
        NodeReader::volumes_attached(self).await
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        tr: &k8s_openapi::api::authentication::v1::TokenRequest,
    ) -> Result<k8s_openapi::api::authentication::v1::TokenRequest, String> {
        NodeReader::service_account_token(self, namespace, name, tr).await
    }

    async fn cluster_trust_bundles(
        &self,
    ) -> Result<Option<Vec<k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle>>, String>
    {
        NodeReader::cluster_trust_bundles(self).await
    }

    async fn patch_claim_status(
        &self,
        namespace: &str,
        name: &str,
        patch: serde_json::Value,
    ) -> Result<rekube_crds::PersistentVolumeClaim, String> {
        NodeReader::patch_claim_status(self, namespace, name, &patch).await
    }

    async fn create_pod_certificate_request(
        &self,
        namespace: &str,
        request: &k8s_openapi::api::certificates::v1beta1::PodCertificateRequest,
    ) -> Result<k8s_openapi::api::certificates::v1beta1::PodCertificateRequest, String> {
        NodeReader::create_pod_certificate_request(self, namespace, request).await
    }

    async fn pod_certificate_request(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::certificates::v1beta1::PodCertificateRequest>, String>
    {
        NodeReader::pod_certificate_request(self, namespace, name).await
    }

    async fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::ServiceAccount>, String> {
        NodeReader::service_account(self, namespace, name).await
    }

    async fn node_name_and_uid(&self) -> Result<(String, String), String> {
        NodeReader::node_name_and_uid(self).await
    }
}

/// The real syncer: pods as containers of [`crate::runtime`]; see the module docs.
pub struct RealSyncer {
    client: Client,
    pub(super) runtime: Runtime,
    images: ImageManager,
    pub(super) config: SyncerConfig,
    pub(super) pods: Mutex<HashMap<String, Arc<tokio::sync::Mutex<PodState>>>>,
    poke: Mutex<Option<Poke>>,
    pub(super) prober: ProberManager,
    recorder: EventRecorder,
    /// Reads the pods' Secrets and ConfigMaps, as the node (shared with the volume
    /// manager's loops).
    reader: Arc<NodeReader>,
    /// The pods' volumes (the kubelet's volume manager).
    volumes: Arc<VolumeManager>,
}

/// Where a pod's network is: its IP ("" while it has none) and namespace (None: the
/// host's).
#[derive(Clone, Default)]
struct PodNet {
    ip: String,
    netns: Option<PathBuf>,
}

impl PodNet {
    fn of(sandbox: Option<&Sandbox>) -> Self {
        sandbox.map_or_else(PodNet::default, |sb| PodNet {
            ip: sb.ips.first().map(|ip| ip.to_string()).unwrap_or_default(),
            netns: sb.netns.clone(),
        })
    }
}

fn pod_desc(pod: &Pod) -> String {
    format_pod_desc(
        &pod.name_any(),
        &pod.namespace().unwrap_or_default(),
        &pod.uid().unwrap_or_default(),
    )
}

/// The spec of the container `name`: regular, init or ephemeral.
fn container_named(pod: &Pod, name: &str) -> Option<Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|k| k.name == name)
        .cloned()
        .or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .find(|k| k.name == name)
                .map(ephemeral_as_container)
        })
}

/// The restart count the API shows for a container that has run (it has a container
/// ID), of any kind.
fn api_restart_count(pod: &Pod, name: &str) -> Option<i32> {
    let s = pod.status.as_ref()?;
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .chain(s.ephemeral_container_statuses.iter().flatten())
        .find(|c| c.name == name && c.container_id.is_some())
        .map(|c| c.restart_count)
}

/// The ConfigMaps and Secrets `container`'s environment refers to.
fn env_references(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    rekube_crds::pod_refs::container_env_names(
        container.env.as_deref().unwrap_or_default(),
        container.env_from.as_deref().unwrap_or_default(),
    )
}

fn to_timestamp(t: std::time::SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or_else(|_| Timestamp::now())
}

fn waiting(reason: &str, message: impl Into<String>) -> WaitingReason {
    WaitingReason {
        reason: reason.to_string(),
        message: message.into(),
    }
}

impl RealSyncer {
    pub fn new(
        client: Client,
        runtime: Runtime,
        images: ImageManager,
        config: SyncerConfig,
        recorder: EventRecorder,
    ) -> Self {
        let prober = ProberManager::new(runtime.clone());
        // upstream's prober records a failed probe as the container's Unhealthy event.
        let unhealthy = recorder.clone();
        prober.set_on_unhealthy(Arc::new(move |object, message| {
            unhealthy.record(
                object,
                EventType::Warning,
                ev::CONTAINER_UNHEALTHY,
                message.to_string(),
            )
        }));
        RealSyncer {
            volumes: Arc::new(
                VolumeManager::new(
                    PodDirs::new(&config.pods_dir),
                    Arc::new(crate::runtime::syscall::LinuxSyscall),
                    config.node_allocatable.clone(),
                )
                .with_csi(CsiPlugin::with_drivers_store(
                    config.csi_drivers.clone(),
                    &config
                        .pods_dir
                        .parent()
                        .unwrap_or(&config.pods_dir)
                        .join("plugins"),
                    config.node_name.clone(),
                ))
                .with_volumes_in_use(Arc::clone(&config.volumes_in_use)),
            ),
            reader: Arc::new(NodeReader::new(
                client.clone(),
                &config.node_name,
                config.node_identity_namespace.clone(),
            )),
            client,
            images,
            config,
            pods: Mutex::new(HashMap::new()),
            poke: Mutex::new(None),
            prober,
            runtime,
            recorder,
        }
    }

    /// The volume manager's actual state reconstructed from the disk now (before the
    /// node's pods are watched), then its loops (populator and reconciler) until `stop`,
    /// its operations' events recorded on their pods and claims.
    pub fn run_volume_manager(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.volumes.reconstruct();
        let recorder = self.recorder.clone();
        let record: crate::volume::manager::EventSink = Arc::new(move |e| {
            let kind = if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            recorder.record(&e.object, kind, e.reason, e.message);
        });
        Arc::clone(&self.volumes).run(Arc::clone(&self.reader), record, stop)
    }

    /// The image store, for image GC.
    pub fn image_store(&self) -> &crate::image::Store {
        self.images.store()
    }

    /// The image IDs of every container instance the agent holds, running or exited
    /// (upstream image_gc_manager `detectImages`: images of any container are in use).
    pub async fn images_in_use(&self) -> std::collections::HashSet<crate::image::Digest> {
        let states: Vec<_> = self.pods.lock().unwrap().values().cloned().collect();
        let mut in_use = std::collections::HashSet::new();
        for state in states {
            let st = state.lock().await;
            let status = st.status.lock().unwrap();
            // The imageID of a container that ran (empty before its image was ensured).
            in_use.extend(
                status
                    .containers
                    .iter()
                    .filter_map(|c| c.image_id.parse().ok()),
            );
        }
        in_use
    }

    /// What to call when a container exits (upstream: the PLEG event that syncs the pod):
    /// typically [`PodWorkers::resync`](super::pod_workers::PodWorkers::resync).
    pub fn set_resync(&self, poke: Poke) {
        self.prober.set_poke(Arc::clone(&poke));
        *self.poke.lock().unwrap() = Some(poke);
    }

    fn api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
    }

    fn state(&self, pod: &Pod) -> Arc<tokio::sync::Mutex<PodState>> {
        let uid = pod.uid().unwrap_or_default();
        Arc::clone(
            self.pods
                .lock()
                .unwrap()
                .entry(uid.clone())
                .or_insert_with(|| {
                    let state = PodState {
                        backoff: Some(Backoff::crash_loop_with_max(
                            self.config.crash_loop_max_container_restart_period,
                        )),
                        ..Default::default()
                    };
                    *state.status.lock().unwrap() = PodRuntimeStatus {
                        uid,
                        name: pod.name_any(),
                        namespace: pod.namespace().unwrap_or_default(),
                        ..Default::default()
                    };
                    Arc::new(tokio::sync::Mutex::new(state))
                }),
        )
    }

    /// upstream killContainer: the Killing event (`message`, else "Stopping container
    /// NAME"), the PreStop hook (exec, httpGet or sleep) within the grace period, then the
    /// stop signal and SIGKILL after what is left of it.
    async fn kill_container(
        &self,
        pod: &Pod,
        c: &RtContainer,
        grace: Duration,
        net: &PodNet,
        message: Option<&str>,
    ) {
        let started = std::time::Instant::now();
        if c.exit().is_none() {
            let message = message.map_or_else(
                || format!("Stopping container {}", c.name()),
                str::to_string,
            );
            self.recorder.record(
                &ev::container_ref(pod, c.name()),
                EventType::Normal,
                ev::KILLING_CONTAINER,
                message,
            );
        }
        let spec = container_named(pod, c.name());
        let pre_stop = spec
            .as_ref()
            .and_then(|k| k.lifecycle.as_ref()?.pre_stop.clone());
        if let (Some(handler), Some(spec)) = (pre_stop, spec.as_ref())
            && !grace.is_zero()
            && c.exit().is_none()
        {
            let desc = pod_desc(pod);
            let target = HookTarget {
                runtime: &self.runtime,
                container: c,
                spec,
                pod_desc: &desc,
                pod_ip: &net.ip,
                netns: net.netns.clone(),
            };
            if let Err(message) = run_handler(&target, &handler, grace).await {
                tracing::warn!(container = c.name(), %message, "PreStop hook");
                self.recorder.record(
                    &ev::container_ref(pod, c.name()),
                    EventType::Warning,
                    ev::FAILED_PRE_STOP_HOOK,
                    message,
                );
            }
        }
        let left = grace.saturating_sub(started.elapsed());
        if let Err(e) = self.runtime.stop_container(c, left).await {
            tracing::warn!(container = c.name(), error = %e, "stopping container");
        }
    }

    /// The ConfigMaps and Secrets `container` refers to, from the apiserver (a missing
    /// one is left out: the environment's rules decide whether that is an error).
    async fn env_objects(
        &self,
        pod: &Pod,
        container: &Container,
    ) -> Result<
        (
            BTreeMap<String, BTreeMap<String, String>>,
            BTreeMap<String, BTreeMap<String, Vec<u8>>>,
        ),
        WaitingReason,
    > {
        let ns = pod.namespace().unwrap_or_default();
        let (cm_names, secret_names) = env_references(container);
        let mut config_maps = BTreeMap::new();
        for name in cm_names {
            match self.reader.config_map(&ns, &name).await {
                Ok(Some(cm)) => {
                    config_maps.insert(name, cm.data.unwrap_or_default());
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(waiting(
                        CREATE_CONTAINER_CONFIG_ERROR,
                        format!("configmap {name:?}: {e}"),
                    ));
                }
            }
        }
        let mut secret_data = BTreeMap::new();
        for name in secret_names {
            match self.reader.secret(&ns, &name).await {
                Ok(Some(s)) => {
                    let data = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    secret_data.insert(name, data);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(waiting(
                        CREATE_CONTAINER_CONFIG_ERROR,
                        format!("secret {name:?}: {e}"),
                    ));
                }
            }
        }
        Ok((config_maps, secret_data))
    }

    /// The registry credentials of the pod's imagePullSecrets (upstream
    /// `getPullSecretsForPod`: a missing secret is logged and skipped).
    async fn pull_credentials(&self, pod: &Pod) -> Vec<RegistryCredential> {
        let ns = pod.namespace().unwrap_or_default();
        let mut out = Vec::new();
        let refs = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        for r in refs {
            match self.reader.secret(&ns, &r.name).await {
                Ok(Some(s)) => {
                    let data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    match parse_pull_secret(&data) {
                        Ok(creds) => out.extend(creds),
                        Err(e) => {
                            tracing::warn!(pod = %pod.name_any(), secret = %r.name, error = %e, "pull secret")
                        }
                    }
                }
                Ok(None) => tracing::warn!(
                    pod = %pod.name_any(), secret = %r.name,
                    "unable to retrieve pull secret, the image pull may not succeed"
                ),
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), secret = %r.name, error = %e, "pull secret")
                }
            }
        }
        out
    }

    /// Starts one container (kuberuntime_container.go `startContainer`): backoff, image,
    /// config, create, start, then an exit watcher. Err: the waiting reason, also
    /// recorded as a `Failed` event ("Error: ...") when the config, create or start failed.
    async fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        st: &mut PodState,
    ) -> Result<(), WaitingReason> {
        let result = self.try_start_container(pod, container, st).await;
        if let Err(w) = &result
            && matches!(
                w.reason.as_str(),
                CREATE_CONTAINER_CONFIG_ERROR | CREATE_CONTAINER_ERROR | RUN_CONTAINER_ERROR
            )
        {
            self.recorder.record(
                &ev::container_ref(pod, &container.name),
                EventType::Warning,
                ev::FAILED_TO_CREATE_CONTAINER,
                format!("Error: {}", w.message),
            );
        }
        result
    }

    /// Records the image manager's events for `container`.
    fn record_image_events(&self, pod: &Pod, container: &str, events: &[ImageEvent]) {
        let object = ev::container_ref(pod, container);
        for e in events {
            let type_ = if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            self.recorder
                .record(&object, type_, e.reason, e.message.clone());
        }
    }

    /// The container's volume mounts (`makeMounts`), each subPath bound safely first.
    fn volume_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        volumes: &BTreeMap<String, VolumeInfo>,
        env: &[(String, String)],
    ) -> Result<Vec<BindMount>, String> {
        let mounts = make_mounts(container, volumes, env).map_err(|e| e.to_string())?;
        let uid = pod.uid().unwrap_or_default();
        mounts
            .into_iter()
            .map(|m| {
                let source = match &m.sub_path {
                    None => m.volume_path.clone(),
                    Some(sub_path) => prepare_safe_subpath(&Subpath {
                        volume_mount_index: m.index,
                        sub_path: sub_path.clone(),
                        volume_name: m.volume.clone(),
                        volume_path: m.volume_path.clone(),
                        pod_dir: self.volumes.dirs().pod_dir(&uid),
                        container_name: container.name.clone(),
                    })
                    .map_err(|e| {
                        tracing::warn!(pod = %pod.name_any(), error = %e, "subPath");
                        format!(
                            "failed to prepare subPath for volumeMount {:?} of container {:?}",
                            m.volume, container.name
                        )
                    })?,
                };
                Ok(BindMount::new(source, m.container_path, m.read_only)
                    .with_propagation(m.propagation))
            })
            .collect()
    }

    /// The container's devices (`makeBlockVolumes`), each made an OCI device with its
    /// cgroup access as containerd's `WithDevices` does. `Err`: the waiting reason.
    fn block_devices(
        &self,
        container: &Container,
        volumes: &BTreeMap<String, BlockVolumeInfo>,
    ) -> Result<Vec<crate::runtime::spec::ContainerDevice>, WaitingReason> {
        let devices = make_block_volumes(container, volumes, |path| {
            crate::volume::volume_path_handler::is_symlink_exist(path).map_err(|e| e.to_string())
        })
        .map_err(|e| waiting(CREATE_CONTAINER_CONFIG_ERROR, e.to_string()))?;
        devices
            .iter()
            .map(|d| {
                crate::runtime::spec::device_from_path(
                    &d.path_on_host,
                    &d.path_in_container,
                    d.permissions,
                )
                .map_err(|e| waiting(CREATE_CONTAINER_ERROR, e.to_string()))
            })
            .collect()
    }

    async fn try_start_container(
        &self,
        pod: &Pod,
        container: &Container,
        st: &mut PodState,
    ) -> Result<(), WaitingReason> {
        let now = Timestamp::now();
        let snapshot = st.status.lock().unwrap().clone();
        if let Some(b) = st
            .backoff
            .as_mut()
            .and_then(|b| do_back_off(pod, container, &snapshot, b, now))
        {
            self.recorder.record(
                &ev::container_ref(pod, &container.name),
                EventType::Warning,
                ev::BACK_OFF_START_CONTAINER,
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    container.name,
                    pod_desc(pod)
                ),
            );
            return Err(waiting(REASON_CRASH_LOOP_BACK_OFF, b.message));
        }
        let image = container.image.clone().unwrap_or_default();
        let policy = container
            .image_pull_policy
            .as_deref()
            .and_then(|p| p.parse::<PullPolicy>().ok())
            .unwrap_or(PullPolicy::IfNotPresent);
        let uid = pod.uid().unwrap_or_default();
        let credentials = self.pull_credentials(pod).await;
        let ensured = match self
            .images
            .ensure_image_exists(&uid, &image, policy, &credentials)
            .await
        {
            Ok(ensured) => {
                self.record_image_events(pod, &container.name, &ensured.events);
                ensured
            }
            Err(e) => {
                self.record_image_events(pod, &container.name, &e.events);
                return Err(waiting(e.reason.as_str(), e.message));
            }
        };
        let lower_dirs = self.images.store().lower_dirs(&ensured.image);
        let users = UserDb::from_layers(&lower_dirs).unwrap_or_default();
        let pod_ips: Vec<String> = st
            .sandbox
            .as_ref()
            .map(|s| s.ips.iter().map(|ip| ip.to_string()).collect())
            .unwrap_or_default();
        let (config_maps, secrets) = self.env_objects(pod, container).await?;
        let env = make_environment_variables(
            pod,
            container,
            &EnvSources {
                config_maps: &config_maps,
                secrets: &secrets,
                service_env: &BTreeMap::new(),
                pod_ips: &pod_ips,
                host_ips: &self.config.host_ips,
                node_allocatable: &self.config.node_allocatable,
            },
        )
        .map_err(|e| waiting(CREATE_CONTAINER_CONFIG_ERROR, e.to_string()))?;
        // The next instance's number; after an agent restart (no runtime record) it
        // continues from the API status of a container that had run.
        let restart_count = snapshot
            .find_container_status_by_name(&container.name)
            .map(|s| s.restart_count + 1)
            .or_else(|| api_restart_count(pod, &container.name).map(|n| n + 1))
            .unwrap_or(0);
        let log_path = self
            .pod_log_dir(pod)
            .join(&container.name)
            .join(format!("{restart_count}.log"));
        let mut spec = container_spec(
            pod,
            container,
            &ContainerInputs {
                image: ensured.image.config.config.as_ref(),
                lower_dirs,
                env: &env,
                users: &users,
                log_path,
            },
        )
        .map_err(|e| waiting(CREATE_CONTAINER_CONFIG_ERROR, e.to_string()))?;
        spec.devices = self.block_devices(container, &st.block_volumes)?;
        spec.mounts = self
            .volume_mounts(pod, container, &st.volumes, &env)
            .map_err(|e| waiting(CREATE_CONTAINER_CONFIG_ERROR, e))?;
        let etc_hosts = mounts_etc_hosts(container);
        if let Some(log) = spec.log.as_mut() {
            log.max_size = self.config.container_log_max_size;
            log.max_files = self.config.container_log_max_files;
        }
        let Some(sandbox) = st.sandbox.as_ref() else {
            return Err(waiting(CREATE_CONTAINER_ERROR, "no sandbox"));
        };
        sandbox.apply_to(&mut spec);
        if !etc_hosts {
            // A volume takes /etc/hosts: the managed one is not mounted over it.
            let managed = sandbox.dir().join("hosts");
            spec.mounts.retain(|m| m.source != managed);
        }
        let sandbox_id = snapshot
            .active_sandbox()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let created = self
            .runtime
            .create_container(&spec)
            .await
            .map_err(|e| waiting(CREATE_CONTAINER_ERROR, e.to_string()))?;
        let container_ref = ev::container_ref(pod, &container.name);
        self.recorder.record(
            &container_ref,
            EventType::Normal,
            ev::CREATED_CONTAINER,
            format!("Created container: {}", container.name),
        );
        let started = self.runtime.start_container(&created).await;
        let id = created.id().to_string();
        st.status
            .lock()
            .unwrap()
            .containers
            .push(ContainerRuntimeStatus {
                id: id.clone(),
                name: container.name.clone(),
                sandbox_id,
                state: ContainerState::Running,
                created_at: to_timestamp(created.created_at()),
                started_at: Some(created.started_at().map_or(now, to_timestamp)),
                finished_at: None,
                exit_code: 0,
                reason: None,
                message: None,
                image: image.clone(),
                image_id: ensured.image.id.to_string(),
                image_ref: ensured.image_ref.clone(),
                restart_count,
                hash: hash_container(container),
            });
        st.containers.insert(id.clone(), created.clone());
        let net = PodNet::of(st.sandbox.as_ref());
        // The exit watcher (upstream PLEG): record the exit, then sync the pod.
        let (runtime, status, poke, watched) = (
            self.runtime.clone(),
            Arc::clone(&st.status),
            self.poke.lock().unwrap().clone(),
            created.clone(),
        );
        tokio::spawn(async move {
            let exit = runtime.wait_container(&watched).await;
            if let Some(c) = status
                .lock()
                .unwrap()
                .containers
                .iter_mut()
                .find(|c| c.id == id)
            {
                c.state = ContainerState::Exited;
                c.exit_code = exit.exit_code;
                c.reason = Some(exit.reason().to_string());
                c.finished_at = Some(to_timestamp(exit.finished_at));
            }
            if let Some(poke) = poke {
                poke(&uid);
            }
        });
        started.map_err(|e| waiting(RUN_CONTAINER_ERROR, e.to_string()))?;
        self.recorder.record(
            &container_ref,
            EventType::Normal,
            ev::STARTED_CONTAINER,
            format!("Started container {}", container.name),
        );
        // PostStart (upstream runs it before startContainer returns; a failure kills the
        // container).
        if let Some(handler) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        {
            let desc = pod_desc(pod);
            let grace = super::pod_workers::termination_grace(pod);
            let target = HookTarget {
                runtime: &self.runtime,
                container: &created,
                spec: container,
                pod_desc: &desc,
                pod_ip: &net.ip,
                netns: net.netns.clone(),
            };
            if let Err(message) = run_handler(&target, handler, grace).await {
                tracing::warn!(pod = %desc, container = %container.name, %message, "PostStart hook failed");
                self.recorder.record(
                    &container_ref,
                    EventType::Warning,
                    ev::FAILED_POST_START_HOOK,
                    message.clone(),
                );
                self.recorder.record(
                    &container_ref,
                    EventType::Normal,
                    ev::KILLING_CONTAINER,
                    ev::FAILED_POST_START_HOOK.to_string(),
                );
                if let Err(e) = self.runtime.stop_container(&created, grace).await {
                    tracing::warn!(container = %container.name, error = %e, "stopping container");
                }
                return Err(waiting(REASON_POST_START_HOOK_ERROR, message));
            }
        }
        Ok(())
    }

    /// kuberuntime_manager.go `SyncPod`, in the seed's order, then the status.
    async fn sync(&self, pod: &Pod) -> Result<SyncOutcome, HollowError> {
        let pod = add_finalizer(&self.api(pod), pod).await?;
        let state = self.state(&pod);
        let mut st = state.lock().await;
        let st = &mut *st;
        // The eviction manager's emptyDir sizeLimit check (upstream's housekeeping every
        // 10 s; here at each sync of the pod, every 10 s while it runs).
        let limited: Vec<String> = empty_dirs_with_size_limit(&pod)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if !limited.is_empty() {
            let used = self
                .volumes
                .empty_dir_usage(&pod.uid().unwrap_or_default(), &limited);
            if let Some(message) = empty_dir_limit_eviction(&pod, &used) {
                return self.evict(&pod, st, message).await;
            }
        }
        // 0. The pod's dead containers beyond the per-container limit go before any new
        // instance is made (upstream's GC runs every minute; here a crash loop also
        // keeps at most one dead instance per container between passes).
        self.collect_pod_garbage(&pod.uid().unwrap_or_default(), st)
            .await;
        // 1. Compute sandbox and container changes.
        let snapshot = st.status.lock().unwrap().clone();
        let probes = self.prober.results();
        let actions = compute_pod_actions(&pod, &snapshot, &probes);
        let grace = super::pod_workers::termination_grace(&pod);
        let net = PodNet::of(st.sandbox.as_ref());
        if actions.kill_pod {
            // 2. Kill the sandbox (every container, then the sandbox).
            let all: Vec<RtContainer> = st.containers.values().cloned().collect();
            for c in &all {
                self.kill_container(&pod, c, grace, &net, None).await;
            }
            self.stop_sandbox(&pod, st).await;
        } else {
            // 3. Kill containers that should not run.
            for (id, why) in &actions.containers_to_kill {
                if let Some(c) = st.containers.get(id).cloned() {
                    let spec = container_named(&pod, &why.name);
                    let grace = super::pod_workers::kill_grace(&pod, spec.as_ref(), why.reason);
                    self.kill_container(&pod, &c, grace, &net, Some(&why.message))
                        .await;
                }
            }
        }
        // The pod's volumes, set up by the volume manager's loops before its sandbox and
        // containers (upstream's `WaitForAttachAndMount` in SyncPod): each volume that
        // fails is its operation's FailedMount event, and nothing starts.
        let mut volumes_ready = true;
        if !actions.kill_pod || actions.create_sandbox {
            match self.volumes.wait_for_attach_and_mount(&pod).await {
                Ok(mounted) => {
                    // A Block volume has a mapper, not a mounter: it is only for the
                    // containers' volumeDevices (makeMounts finds no such volume).
                    let (block, mounts): (Vec<_>, Vec<_>) =
                        mounted.into_iter().partition(|(_, m)| m.block);
                    st.volumes = mounts
                        .into_iter()
                        .map(|(name, m)| {
                            let info = VolumeInfo {
                                path: m.path,
                                read_only: m.read_only,
                            };
                            (name, info)
                        })
                        .collect();
                    st.block_volumes = block
                        .into_iter()
                        .map(|(name, m)| {
                            let info = BlockVolumeInfo {
                                map_path: m.path,
                                read_only: m.read_only,
                            };
                            (name, info)
                        })
                        .collect();
                    st.volume_event = None;
                }
                Err(failure) => {
                    volumes_ready = false;
                    // upstream's SyncPod: WaitForAttachAndMount returns at once with the
                    // populator's errors (a claim not bound, a Block claim in
                    // volumeMounts, ...), and the pod gets this event; a wait that ran
                    // out records none.
                    if !failure.unprocessed.is_empty() {
                        let message =
                            format!("Unable to attach or mount volumes: {}", failure.summary());
                        let due = st.volume_event.as_ref().is_none_or(|(last, at)| {
                            *last != message || at.elapsed() >= VOLUME_EVENT_PERIOD
                        });
                        if due {
                            self.recorder.record(
                                &ev::pod_ref(&pod),
                                EventType::Warning,
                                ev::FAILED_MOUNT,
                                message.clone(),
                            );
                            st.volume_event = Some((message, std::time::Instant::now()));
                        }
                    }
                    tracing::debug!(pod = %pod.name_any(), "{}", failure.summary());
                }
            }
        }
        // 4. Create the sandbox.
        if actions.create_sandbox && volumes_ready {
            let spec = pod.spec.clone().unwrap_or_default();
            let mut config = SandboxConfig::new(
                pod.uid().unwrap_or_default(),
                pod.name_any(),
                pod.namespace().unwrap_or_default(),
            );
            config.hostname = pod_hostname(&pod);
            config.host_network = spec.host_network.unwrap_or(false);
            config.host_pid = spec.host_pid.unwrap_or(false);
            config.host_ipc = spec.host_ipc.unwrap_or(false);
            config.share_process_namespace = spec.share_process_namespace.unwrap_or(false);
            config.resources.pids_limit = self.config.pod_max_pids;
            config.port_mappings = host_port_mappings(&pod);
            match self.runtime.create_sandbox(&config).await {
                Ok(sb) => {
                    st.status.lock().unwrap().sandboxes.push(SandboxStatus {
                        id: format!("{}-{}", pod.uid().unwrap_or_default(), actions.attempt),
                        state: SandboxState::Ready,
                        attempt: actions.attempt,
                        created_at: Timestamp::now(),
                        host_network: config.host_network,
                        network_namespace_path: sb.netns.clone(),
                        // No address (loopback only) is upstream's nil network status.
                        ips: (!sb.ips.is_empty())
                            .then(|| sb.ips.iter().map(|ip| ip.to_string()).collect()),
                    });
                    st.sandbox = Some(sb);
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "creating sandbox");
                    self.recorder.record(
                        &ev::pod_ref(&pod),
                        EventType::Warning,
                        ev::FAILED_CREATE_POD_SANDBOX,
                        format!("Failed to create pod sandbox: {e}"),
                    );
                }
            }
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let mut requeue = if volumes_ready {
            RESYNC
        } else {
            POD_ATTACH_AND_MOUNT_RETRY_INTERVAL
        };
        if st.sandbox.is_some() && volumes_ready {
            // 5. Ephemeral containers: started once, never restarted.
            let ephemeral = spec.ephemeral_containers.clone().unwrap_or_default();
            for i in &actions.ephemeral_containers_to_start {
                let Some(c) = ephemeral.get(*i).map(ephemeral_as_container) else {
                    continue;
                };
                match self.start_container(&pod, &c, st).await {
                    Ok(()) => {
                        st.waiting.remove(&c.name);
                    }
                    Err(w) => {
                        requeue = Duration::from_secs(1);
                        st.waiting.insert(c.name.clone(), w);
                    }
                }
            }
            // 6. Init containers, in order; a regular one that fails to start ends the step.
            for i in &actions.init_containers_to_start {
                let Some(c) = inits.get(*i) else { continue };
                match self.start_container(&pod, c, st).await {
                    Ok(()) => {
                        st.waiting.remove(&c.name);
                    }
                    Err(w) => {
                        requeue = Duration::from_secs(1);
                        st.waiting.insert(c.name.clone(), w);
                        if !is_restartable_init_container(c) {
                            break;
                        }
                    }
                }
            }
            // 7. Normal containers.
            for i in &actions.containers_to_start {
                let Some(c) = spec.containers.get(*i) else {
                    continue;
                };
                match self.start_container(&pod, c, st).await {
                    Ok(()) => {
                        st.waiting.remove(&c.name);
                    }
                    Err(w) => {
                        requeue = Duration::from_secs(1);
                        st.waiting.insert(c.name.clone(), w);
                    }
                }
            }
        }
        // The probes follow the current instance of each container.
        self.sync_probes(&pod, st);
        let probes = self.prober.results();
        // The status, written when it changed.
        let runtime = st.status.lock().unwrap().clone();
        let status = write_status(&self.api(&pod), &pod, |p| {
            generate_api_pod_status(
                p,
                &PodStatusInputs {
                    runtime: &runtime,
                    probe_results: &probes,
                    waiting_reasons: &st.waiting,
                    host_ips: &self.config.host_ips,
                    pod_is_terminal: false,
                    now: Timestamp::now(),
                },
            )
        })
        .await?;
        Ok(match status.phase.as_deref() {
            Some("Succeeded" | "Failed") => SyncOutcome::Terminal,
            _ => SyncOutcome::RequeueAfter(requeue),
        })
    }

    /// Kills `running` at once, each within `grace`.
    /// Removes the pod's sandbox (its network namespace, veth and address with it) and
    /// marks it NotReady in the runtime status (upstream `StopPodSandbox`).
    async fn stop_sandbox(&self, pod: &Pod, st: &mut PodState) {
        if let Some(mut sb) = st.sandbox.take()
            && let Err(e) = self.runtime.remove_sandbox(&mut sb).await
        {
            tracing::warn!(pod = %pod.name_any(), error = %e, "removing sandbox");
        }
        for s in &mut st.status.lock().unwrap().sandboxes {
            s.state = SandboxState::NotReady;
        }
    }

    async fn kill_all(
        &self,
        pod: &Pod,
        running: &[RtContainer],
        net: &PodNet,
        grace: Duration,
        message: Option<&str>,
    ) {
        futures_util::future::join_all(
            running
                .iter()
                .map(|c| self.kill_container(pod, c, grace, net, message)),
        )
        .await;
    }

    /// The eviction manager's `evictPod`: the event, every container killed with the
    /// immediate grace period, the pod Failed with reason Evicted and the message.
    async fn evict(
        &self,
        pod: &Pod,
        st: &mut PodState,
        message: String,
    ) -> Result<SyncOutcome, HollowError> {
        tracing::info!(pod = %pod.name_any(), %message, "evicting pod");
        self.recorder.record(
            &ev::pod_ref(pod),
            EventType::Warning,
            REASON_EVICTED,
            message.clone(),
        );
        let (net, running) = running_containers(st);
        let grace = Duration::from_secs(IMMEDIATE_EVICTION_GRACE_PERIOD_SECONDS);
        self.kill_all(pod, &running, &net, grace, Some(&message))
            .await;
        let runtime = st.status.lock().unwrap().clone();
        let probes = self.prober.results();
        write_status(&self.api(pod), pod, |p| {
            let mut status = generate_api_pod_status(
                p,
                &PodStatusInputs {
                    runtime: &runtime,
                    probe_results: &probes,
                    waiting_reasons: &st.waiting,
                    host_ips: &self.config.host_ips,
                    pod_is_terminal: true,
                    now: Timestamp::now(),
                },
            );
            status.phase = Some("Failed".into());
            status.reason = Some(REASON_EVICTED.into());
            status.message = Some(message.clone());
            status
        })
        .await?;
        Ok(SyncOutcome::Terminal)
    }

    /// The pod's log directory (upstream `BuildPodLogsDirectory`:
    /// `<root>/<namespace>_<name>_<uid>`).
    fn pod_log_dir(&self, pod: &Pod) -> PathBuf {
        self.config.log_dir.join(format!(
            "{}_{}_{}",
            pod.namespace().unwrap_or_default(),
            pod.name_any(),
            pod.uid().unwrap_or_default()
        ))
    }

    /// Hands each probed container's newest instance to its probe workers.
    fn sync_probes(&self, pod: &Pod, st: &PodState) {
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let status = st.status.lock().unwrap();
        let net = PodNet::of(st.sandbox.as_ref());
        let probed: Vec<(Container, Option<ProbeTarget>)> = spec
            .containers
            .iter()
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| is_restartable_init_container(c)),
            )
            .filter(|c| {
                c.liveness_probe.is_some()
                    || c.readiness_probe.is_some()
                    || c.startup_probe.is_some()
            })
            .map(|c| {
                let target = status
                    .containers_newest_first()
                    .into_iter()
                    .find(|s| s.name == c.name)
                    .and_then(|s| {
                        Some(ProbeTarget {
                            container: st.containers.get(&s.id)?.clone(),
                            spec: c.clone(),
                            started_at: s.started_at.unwrap_or(s.created_at),
                            pod_ip: net.ip.clone(),
                            netns: net.netns.clone(),
                            pod_name: pod_desc(pod),
                            event_ref: ev::container_ref(pod, &c.name),
                        })
                    });
                (c.clone(), target)
            })
            .collect();
        drop(status);
        if !probed.is_empty() {
            self.prober
                .sync_pod(&pod.uid().unwrap_or_default(), &probed);
        }
    }

    /// The agent's finalizer taken off the pod: nothing of it is left on the node and no
    /// agent runs it any more (the agent's uninstall).
    pub async fn release_pod(&self, pod: &Pod) {
        if let Err(e) = remove_finalizer(&self.api(pod), pod).await {
            tracing::warn!(pod = %pod.name_any(), error = %e, "releasing the pod");
        }
    }

    /// The volumes of every pod with a directory on the node torn down and the
    /// directories removed (the agent's uninstall, once its pod workers are done).
    pub async fn unmount_all_pod_volumes(&self) {
        self.volumes.set_sources_ready();
        for uid in self.volumes.pods_on_disk() {
            if let Err(e) = self.volumes.unmount_pod_volumes(&uid).await {
                tracing::warn!(pod_uid = %uid, error = %e, "unmounting a pod's volumes");
            }
        }
    }

    /// kubelet.go `SyncTerminatedPod`: every container and the sandbox removed, then the
    /// finalizer.
    async fn cleanup(&self, pod: &Pod) {
        let uid = pod.uid().unwrap_or_default();
        let state = self.pods.lock().unwrap().remove(&uid);
        if let Some(state) = state {
            let mut st = state.lock().await;
            let ids: Vec<String> = st.containers.keys().cloned().collect();
            self.prober.remove_pod(&uid, &ids);
            for c in st.containers.values() {
                if let Err(e) = self.runtime.remove_container(c).await {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "removing container");
                }
            }
            st.containers.clear();
            if let Some(mut sb) = st.sandbox.take()
                && let Err(e) = self.runtime.remove_sandbox(&mut sb).await
            {
                tracing::warn!(pod = %pod.name_any(), error = %e, "removing sandbox");
            }
        }
        // Its volumes go once its containers are gone (the populator drops the pod, the
        // reconciler tears them down); a failure keeps the finalizer for the next pass.
        if let Err(e) = self.volumes.unmount_pod_volumes(&uid).await {
            tracing::warn!(pod = %pod.name_any(), error = %e, "unmounting volumes");
            self.recorder
                .record(&ev::pod_ref(pod), EventType::Warning, ev::FAILED_UNMOUNT, e);
            return;
        }
        // The logs go with the pod (upstream's container GC removes the log directories
        // of removed pods).
        let logs = self.pod_log_dir(pod);
        if let Err(e) = std::fs::remove_dir_all(&logs)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %logs.display(), error = %e, "removing pod logs");
        }
        if pod.metadata.deletion_timestamp.is_some()
            && let Err(e) = remove_finalizer(&self.api(pod), pod).await
        {
            tracing::warn!(error = %e, "releasing the pod");
        }
    }
}

impl PodSyncer for RealSyncer {
    fn sync_pod<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, SyncOutcome> {
        Box::pin(async move {
            self.sync(pod).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "syncing pod");
                SyncOutcome::RequeueAfter(Duration::from_secs(1))
            })
        })
    }

    /// kubelet.go `SyncTerminatingPod`: every running container stopped within `grace`.
    fn sync_terminating_pod<'a>(&'a self, pod: &'a Pod, grace: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let state = self
                .pods
                .lock()
                .unwrap()
                .get(&pod.uid().unwrap_or_default())
                .cloned();
            let Some(state) = state else {
                // Nothing of it runs (an agent restart stopped everything): its volumes go.
                self.volumes.pod_terminated(&pod.uid().unwrap_or_default());
                return;
            };
            self.prober.pod_deleting(&pod.uid().unwrap_or_default());
            let (net, running) = running_containers(&*state.lock().await);
            self.kill_all(pod, &running, &net, grace, None).await;
            // upstream's killPod stops the sandbox too: a pod that finished between a
            // sync's snapshot and its status write is terminal before any sync saw all
            // its containers exited, and its network goes here.
            self.stop_sandbox(pod, &mut *state.lock().await).await;
            // Nothing of the pod runs again: its volumes go now (upstream's populator
            // drops the volumes of a pod whose runtime may be removed), so that a finished
            // or evicted pod does not hold its emptyDir until it is deleted.
            self.volumes.pod_terminated(&pod.uid().unwrap_or_default());
        })
    }

    fn sync_terminated_pod<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, ()> {
        Box::pin(self.cleanup(pod))
    }

    /// The pod as the API has it: the volume manager's populator knows it from now on.
    fn observe_pod(&self, pod: &Pod) {
        self.volumes.observe_pod(pod);
    }

    /// After the first full list of the node's pods, the volume manager's sources are
    /// ready; the volumes of pods gone while the agent was down (their directories under
    /// `pods/`) are torn down by its reconciler, then the directories removed.
    fn cleanup_orphaned_pods(&self, is_known: &dyn Fn(&str) -> bool) {
        self.volumes.set_sources_ready();
        for uid in self.volumes.pods_on_disk() {
            if is_known(&uid) || !self.volumes.begin_orphan_cleanup(&uid) {
                continue;
            }
            let volumes = Arc::clone(&self.volumes);
            tokio::spawn(async move {
                match volumes.unmount_pod_volumes(&uid).await {
                    Ok(()) => tracing::info!(pod_uid = %uid, "removed an orphaned pod's volumes"),
                    Err(e) => tracing::warn!(pod_uid = %uid, error = %e, "orphaned pod's volumes"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(container: serde_json::Value, extra_spec: serde_json::Value) -> (Pod, Container) {
        let mut spec = json!({"containers": [container]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra_spec.as_object().unwrap().clone());
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "u"},
            "spec": spec,
        }))
        .unwrap();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        (p, c)
    }

    #[test]
    fn host_ports_of_every_container_become_port_mappings() {
        let (p, _) = pod(
            json!({"name": "a", "image": "i", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 9090}
            ]}),
            json!({}),
        );
        assert_eq!(
            host_port_mappings(&p),
            [
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new()
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: "udp".into(),
                    host_ip: "127.0.0.1".into()
                }
            ]
        );
    }

    fn image() -> ContainerConfig {
        serde_json::from_value(json!({
            "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo image"],
            "Env": ["PATH=/usr/bin:/bin", "A=image"], "WorkingDir": "/srv",
            "User": "1000", "StopSignal": "SIGQUIT"
        }))
        .unwrap()
    }

    fn inputs<'a>(
        image: Option<&'a ContainerConfig>,
        env: &'a [(String, String)],
        users: &'a UserDb,
    ) -> ContainerInputs<'a> {
        ContainerInputs {
            image,
            lower_dirs: vec!["/l/top".into(), "/l/bottom".into()],
            env,
            users,
            log_path: "/logs/c/0.log".into(),
        }
    }

    #[test]
    fn the_image_fills_in_what_the_container_leaves_out() {
        let (p, c) = pod(json!({"name": "c", "image": "busybox"}), json!({}));
        let img = image();
        let users = UserDb::default();
        let s = container_spec(&p, &c, &inputs(Some(&img), &[], &users)).unwrap();
        assert_eq!(s.args, ["/bin/sh", "-c", "echo image"]);
        assert_eq!(s.cwd, PathBuf::from("/srv"));
        assert_eq!(s.user.uid, 1000);
        assert_eq!(s.stop_signal, nix::sys::signal::Signal::SIGQUIT);
        assert!(s.env.contains(&"A=image".to_string()));
        assert!(s.env.contains(&"HOSTNAME=web-0".to_string()));
        assert_eq!(s.hostname.as_deref(), Some("web-0"));
        assert_eq!(
            s.rootfs,
            RootfsSource::Layers(vec!["/l/top".into(), "/l/bottom".into()])
        );
        assert_eq!(s.log.unwrap().path, PathBuf::from("/logs/c/0.log"));
    }

    #[test]
    fn the_container_overrides_the_image() {
        let (p, c) = pod(
            json!({"name": "c", "image": "busybox",
                "command": ["sh", "-c"], "args": ["echo $(A)"], "workingDir": "/w",
                "securityContext": {"runAsUser": 0},
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}),
            json!({"hostname": "h"}),
        );
        let img = image();
        let env = [("A".to_string(), "container".to_string())];
        let users = UserDb::default();
        let s = container_spec(&p, &c, &inputs(Some(&img), &env, &users)).unwrap();
        assert_eq!(s.args, ["sh", "-c", "echo container"]);
        assert_eq!(s.cwd, PathBuf::from("/w"));
        assert_eq!(s.user.uid, 0);
        assert!(s.env.contains(&"A=container".to_string()));
        assert_eq!(s.hostname.as_deref(), Some("h"));
        assert_eq!(
            s.resources,
            Resources::from_requests_limits(Some(500), Some(500), Some(64 << 20))
        );
    }

    #[test]
    fn no_command_anywhere_is_a_config_error() {
        let (p, c) = pod(json!({"name": "c", "image": "scratch"}), json!({}));
        let users = UserDb::default();
        let e = container_spec(&p, &c, &inputs(None, &[], &users)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "container c of pod ns/web-0: no command specified for container c"
        );
    }

    /// A quantity the agent cannot read fails the container (CreateContainerConfigError)
    /// instead of running it without the limit.
    #[test]
    fn an_unparsable_quantity_is_a_config_error() {
        let users = UserDb::default();
        let img = image();
        for (resources, field, value) in [
            (
                json!({"limits": {"memory": "lots"}}),
                "limits.memory",
                "lots",
            ),
            (json!({"limits": {"cpu": "1x"}}), "limits.cpu", "1x"),
            (
                json!({"requests": {"cpu": "", "memory": "1Mi"}}),
                "requests.cpu",
                "",
            ),
            (
                json!({"requests": {"memory": "64Q"}}),
                "requests.memory",
                "64Q",
            ),
        ] {
            let (p, c) = pod(
                json!({"name": "c", "image": "busybox", "resources": resources}),
                json!({}),
            );
            let e = container_spec(&p, &c, &inputs(Some(&img), &[], &users)).unwrap_err();
            let source = parse_quantity(value).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("container c of pod ns/web-0: invalid {field}: {source}")
            );
        }
    }

    /// runAsNonRoot is checked against the image's USER with upstream's messages.
    #[test]
    fn run_as_non_root_is_enforced() {
        let users = UserDb::default();
        let spec_of = |sc: serde_json::Value, user: &str| {
            let (p, c) = pod(
                json!({"name": "c", "image": "busybox", "securityContext": sc}),
                json!({}),
            );
            let mut img = image();
            img.user = Some(user.to_string());
            container_spec(&p, &c, &inputs(Some(&img), &[], &users)).map_err(|e| e.to_string())
        };
        let non_root = json!({"runAsNonRoot": true});
        assert_eq!(
            spec_of(non_root.clone(), "").unwrap_err(),
            r#"container has runAsNonRoot and image will run as root (pod: "web-0_ns(u)", container: c)"#
        );
        assert_eq!(
            spec_of(non_root.clone(), "0:0").unwrap_err(),
            r#"container has runAsNonRoot and image will run as root (pod: "web-0_ns(u)", container: c)"#
        );
        assert_eq!(
            spec_of(non_root.clone(), "nobody").unwrap_err(),
            r#"container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: "web-0_ns(u)", container: c)"#
        );
        assert_eq!(
            spec_of(json!({"runAsNonRoot": true, "runAsUser": 0}), "1000").unwrap_err(),
            r#"container's runAsUser breaks non-root policy (pod: "web-0_ns(u)", container: c)"#
        );
        assert_eq!(spec_of(non_root, "1000").unwrap().user.uid, 1000);
        assert_eq!(
            spec_of(json!({"runAsNonRoot": true, "runAsUser": 2000}), "")
                .unwrap()
                .user
                .uid,
            2000
        );
        assert_eq!(spec_of(json!({}), "").unwrap().user.uid, 0);
    }

    #[test]
    fn hostnames_are_cut_to_63_characters() {
        let (mut p, _) = pod(json!({"name": "c"}), json!({}));
        p.metadata.name = Some(format!("{}-x", "a".repeat(62)));
        assert_eq!(pod_hostname(&p), "a".repeat(62));
    }
}
