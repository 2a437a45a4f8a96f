//! The resizer's I/O shell: watches rekube's claims, volumes, StorageClasses and pods
//! (reflector stores), works one claim at a time, runs [`decide`]'s plan over the
//! driver's socket and the apiserver as external-resizer's resizeController does: the
//! claim's status marked in progress (`persistentvolumeclaims/status`, with its
//! resourceVersion), the `Resizing` event, ControllerExpandVolume, the PV's capacity, the
//! claim's status (NodeResizePending and FileSystemResizePending, or done), the
//! `FileSystemResizeRequired` or `VolumeResizeSuccessful` event; a failure is a
//! `VolumeResizeFailed` event and a retry.
//!
//! Failures are retried per claim with exponential back-off (upstream's
//! `--retry-interval-start` 1 s, `--retry-interval-max` 5 min, [`crate::sidecar`]); an
//! infeasible expansion (InvalidArgument, OutOfRange, NotFound) waits in the slow set
//! for `--retry-interval-max` before the same size is tried again; every claim is looked
//! at again every [`RESYNC`].
//!
//! rekube's addition: a claim whose StorageClass does not exist is not expanded (a
//! `VolumeResizeFailed` event with the PersistentVolumeClaimResize admission plugin's
//! message): the admission policy refusing the growth of a claim whose class does not
//! allow expansion sees the classes as parameters, and cannot see a missing one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use rekube_crds::events::EventRecorder;
use rekube_crds::storage_keys::expansion::{
    ANN_NODE_EXPANSION_NOT_REQUIRED, CONTROLLER_RESIZE_INFEASIBLE,
};
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod, StorageClass};
use serde_json::json;
use tonic::transport::Channel;

use super::ResizerConfig;
use super::decide::{self, Expanded, Plan, Resizer, ResizerKind, SlowSet, Tracking};
use crate::csi::controller_client::ControllerClient;
use crate::csi::controller_service_capability::rpc::Type as Rpc;
use crate::csi::identity_client::IdentityClient;
use crate::csi::node_client::NodeClient;
use crate::csi::node_service_capability::Type as NodeCapabilityType;
use crate::csi::node_service_capability::rpc::Type as NodeRpc;
use crate::csi::plugin_capability::Type as PluginCapabilityType;
use crate::csi::plugin_capability::service::Type as ServiceType;
use crate::csi::{GetPluginCapabilitiesRequest, NodeGetCapabilitiesRequest};
use crate::provisioner::decide::grpc_error;
use crate::sidecar::{
    Queue, RETRY_MAX, SidecarError, connect_driver, driver_info, is_status, kube_client, run_worker,
};

/// upstream `--timeout`: one ControllerExpandVolume call.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How often every claim is looked at again (upstream `--resync-period`, 10 min; a minute
/// here, as the other sidecars').
pub const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ResizerError {
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error("driver {0}: {1}")]
    Unsupported(String, &'static str),
    #[error("driver {0}: {1}")]
    Capabilities(String, String),
    #[error("watch of {0} stopped")]
    WatchStopped(&'static str),
}

/// The result of one sync: done, or retry with back-off.
type Sync = Result<(), String>;

pub struct ResizeController {
    client: Client,
    csi: ControllerClient<Channel>,
    resizer: Resizer,
    recorder: EventRecorder,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    pods: Store<Pod>,
    queue: Queue<String>,
    /// Claims whose last expansion failed with a final error (upstream finalErrorPVCs).
    final_errors: Mutex<HashSet<String>>,
    /// Claims whose expansion was infeasible lately (upstream's slow set).
    slow: Mutex<SlowSet>,
    /// Claims (by UID) whose expansion the driver refused while in use.
    in_use_errors: Mutex<HashSet<String>>,
    /// Claims already told that their class is missing, with the request they had.
    warned: Mutex<HashMap<String, String>>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The driver's plugin capabilities (CONTROLLER_SERVICE) and node capabilities
/// (EXPAND_VOLUME), for [`decide::resizer_kind`].
async fn service_capabilities(channel: Channel) -> Result<(bool, bool), tonic::Status> {
    let plugin = IdentityClient::new(channel.clone())
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await?
        .into_inner();
    let controller_service = plugin.capabilities.iter().any(|c| {
        matches!(&c.r#type, Some(PluginCapabilityType::Service(s)) if s.r#type == ServiceType::ControllerService as i32)
    });
    let node = NodeClient::new(channel)
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await?
        .into_inner();
    let node_expand = node.capabilities.iter().any(|c| {
        matches!(&c.r#type, Some(NodeCapabilityType::Rpc(r)) if r.r#type == NodeRpc::ExpandVolume as i32)
    });
    Ok((controller_service, node_expand))
}

/// Runs the resizer until `shutdown` completes or a watch ends.
pub async fn run(
    config: ResizerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ResizerError> {
    let channel = connect_driver(&config.socket).await?;
    let (driver_name, rpcs) = driver_info(channel.clone(), &config.socket).await?;
    let (controller_service, node_expand) = service_capabilities(channel.clone())
        .await
        .map_err(|e| ResizerError::Capabilities(driver_name.clone(), grpc_error(&e)))?;
    let kind = decide::resizer_kind(
        controller_service,
        rpcs.contains(&Rpc::ExpandVolume),
        node_expand,
    )
    .map_err(|e| ResizerError::Unsupported(driver_name.clone(), e))?;
    let resizer = Resizer {
        name: driver_name.clone(),
        node_id: config.node_id.clone(),
        kind,
        single_node_multi_writer: rpcs.contains(&Rpc::SingleNodeMultiWriter),
    };
    let client = kube_client(config.kubeconfig.as_deref()).await?;
    let recorder =
        EventRecorder::with_instance(client.clone(), &driver_name, Some(config.node_id.clone()));

    let (queue, work) = Queue::<String>::new();
    let (claims, claims_writer) = reflector::store();
    let (volumes, volumes_writer) = reflector::store();
    let (classes, classes_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();

    // Claims: added ones queued, updates as upstream's updatePVC filters them.
    let claim_queue = queue.clone();
    let seen: Arc<Mutex<HashMap<String, PersistentVolumeClaim>>> = Default::default();
    let claim_watch = reflector::reflector(
        claims_writer,
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                let key = decide::claim_key(&c);
                let old = seen.lock().unwrap().insert(key.clone(), c.clone());
                if old
                    .as_ref()
                    .is_none_or(|old| decide::should_enqueue_update(old, &c))
                {
                    claim_queue.add(key);
                }
            }
            Ok(watcher::Event::Delete(c)) => {
                seen.lock().unwrap().remove(&decide::claim_key(&c));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "persistentvolumeclaims watch"),
        }
        async {}
    });
    let volume_watch = reflector::reflector(
        volumes_writer,
        watcher(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| async {});
    let class_watch = reflector::reflector(
        classes_writer,
        watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| async {});
    // Pods: which claims are in use (upstream's handleVolumeInUseError, on by default).
    let pod_watch = reflector::reflector(
        pods_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| async {});

    let controller = Arc::new(ResizeController {
        client,
        csi: ControllerClient::new(channel),
        resizer,
        recorder,
        claims,
        volumes,
        classes,
        pods,
        queue: queue.clone(),
        final_errors: Default::default(),
        slow: Mutex::new(SlowSet::new(RETRY_MAX)),
        in_use_errors: Default::default(),
        warned: Default::default(),
    });
    tracing::info!(
        driver = %controller.resizer.name,
        node = %controller.resizer.node_id,
        trivial = controller.resizer.kind == ResizerKind::Trivial,
        "resizing"
    );

    let worker = {
        let c = controller.clone();
        async move {
            for store in [
                c.claims.wait_until_ready().await,
                c.volumes.wait_until_ready().await,
                c.classes.wait_until_ready().await,
                c.pods.wait_until_ready().await,
            ] {
                if store.is_err() {
                    return;
                }
            }
            run_worker(
                work,
                c.queue.clone(),
                RESYNC,
                |queue| {
                    for claim in c.claims.state() {
                        queue.add(decide::claim_key(&claim));
                    }
                },
                |key| {
                    let c = c.clone();
                    async move { c.sync_claim(&key).await }
                },
            )
            .await;
        }
    };
    tokio::select! {
        _ = shutdown => Ok(()),
        _ = claim_watch => Err(ResizerError::WatchStopped("persistentvolumeclaims")),
        _ = volume_watch => Err(ResizerError::WatchStopped("persistentvolumes")),
        _ = class_watch => Err(ResizerError::WatchStopped("storageclasses")),
        _ = pod_watch => Err(ResizerError::WatchStopped("pods")),
        _ = worker => Err(ResizerError::WatchStopped("the work queue")),
    }
}

impl ResizeController {
    async fn event(&self, claim: &PersistentVolumeClaim, event: decide::Event) {
        let object = claim.object_ref(&());
        if event.warning {
            self.recorder
                .warning(&object, event.reason, event.message)
                .await;
        } else {
            self.recorder
                .normal(&object, event.reason, event.message)
                .await;
        }
    }

    async fn failed(&self, claim: &PersistentVolumeClaim, message: String) -> Sync {
        self.event(
            claim,
            decide::Event {
                warning: true,
                reason: decide::VOLUME_RESIZE_FAILED,
                message: message.clone(),
            },
        )
        .await;
        Err(message)
    }

    /// Writes `new` as the claim's status (the difference to its current one), with its
    /// resourceVersion when `check`; the claim as the apiserver returns it.
    async fn write_status(
        &self,
        claim: &PersistentVolumeClaim,
        new: &k8s_openapi::api::core::v1::PersistentVolumeClaimStatus,
        check: bool,
    ) -> Result<PersistentVolumeClaim, kube::Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            claim.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let old = claim.status.clone().unwrap_or_default();
        let rv = claim.metadata.resource_version.as_deref().filter(|_| check);
        let patch = decide::status_patch(&old, new, rv);
        api.patch_status(
            claim.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    }

    /// The node-expansion-not-required annotation added (`add`) or removed.
    async fn annotate(&self, claim: &PersistentVolumeClaim, add: bool) -> Result<(), kube::Error> {
        let present = claim
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANN_NODE_EXPANSION_NOT_REQUIRED));
        if present == add {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            claim.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let value = if add { json!("true") } else { json!(null) };
        api.patch(
            claim.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {ANN_NODE_EXPANSION_NOT_REQUIRED: value}}}),
            ),
        )
        .await
        .map(drop)
    }

    /// upstream syncPVC.
    async fn sync_claim(&self, key: &str) -> Sync {
        let (namespace, name) = key.split_once('/').unwrap_or_default();
        let Some(claim) = self.claims.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(());
        };
        let claim = (*claim).clone();
        let pv = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .and_then(|v| self.volumes.get(&ObjectRef::new(v)));
        let instant = Instant::now();
        let tracking = {
            let mut slow = self.slow.lock().unwrap();
            let tracking = Tracking {
                final_error: self.final_errors.lock().unwrap().contains(key),
                slow_remaining: slow.remaining(key, instant),
            };
            // upstream markForSlowRetry: an infeasible expansion enters the slow set.
            if decide::resize_status(&claim) == CONTROLLER_RESIZE_INFEASIBLE {
                slow.add(key, instant);
            }
            tracking
        };
        let (new_size, in_progress) =
            match decide::plan(&self.resizer, &claim, pv.as_deref(), tracking, &now()) {
                Plan::Skip => return Ok(()),
                Plan::VolumeMissing(message) => return Err(message),
                Plan::DelayRetry { message, after } => {
                    tracing::info!(claim = key, retry_in = ?after, "{message}");
                    self.queue.add_after(key.to_string(), after);
                    return Ok(());
                }
                Plan::Resize {
                    new_size,
                    in_progress,
                } => (new_size, in_progress),
            };
        let pv = pv.expect("planned with a volume");
        let pv_name = pv.metadata.name.clone().unwrap_or_default();

        // rekube's: the admission policy cannot refuse a claim whose class is missing.
        let class = decide::claim_class(&claim);
        if self.classes.get(&ObjectRef::new(&class)).is_none() {
            let uid = claim.metadata.uid.clone().unwrap_or_default();
            let request = decide::requested(&claim).0;
            let told = self.warned.lock().unwrap().insert(uid, request.clone());
            if told.as_ref() != Some(&request) {
                self.event(
                    &claim,
                    decide::Event {
                        warning: true,
                        reason: decide::VOLUME_RESIZE_FAILED,
                        message: format!(
                            "{} (storageclass {class:?} not found)",
                            decide::RESIZE_NOT_ALLOWED
                        ),
                    },
                )
                .await;
            }
            return Ok(());
        }

        // markControllerResizeInProgress (a conflict is retried without an event).
        let claim = self
            .write_status(&claim, &in_progress, true)
            .await
            .map_err(|e| {
                format!(
                    "marking pvc {key:?} as resizing failed: can't patch status of pvc {key}: {e}"
                )
            })?;
        if let Err(e) = self.annotate(&claim, false).await {
            return Err(format!("marking pvc {key:?} as resizing failed: {e}"));
        }

        // A driver that refused an in-use expansion is not asked again while in use.
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        if self.in_use_errors.lock().unwrap().contains(&uid) {
            let in_use = decide::claims_in_use(self.pods.state().iter().map(|p| p.as_ref()));
            if in_use.contains(key) {
                let event = decide::in_use_event(&self.resizer, &claim);
                let message = event.message.clone();
                self.event(&claim, event).await;
                return Err(message);
            }
        }
        self.event(&claim, decide::resizing_event(&pv_name)).await;
        self.in_use_errors.lock().unwrap().remove(&uid);

        let result = match self.resizer.kind {
            ResizerKind::Trivial => Expanded::Ok {
                capacity_bytes: rekube_crds::quantity::amount(&new_size).value(),
                node_expansion_required: true,
            },
            ResizerKind::Csi => match decide::expand_request(&self.resizer, &pv, &new_size) {
                Err(e) => {
                    return self
                        .failed(
                            &claim,
                            format!(
                                "resize volume {pv_name:?} by resizer {:?} failed: {e}",
                                self.resizer.name
                            ),
                        )
                        .await;
                }
                Ok(request) => {
                    let mut call = tonic::Request::new(request);
                    call.set_timeout(TIMEOUT);
                    match self.csi.clone().controller_expand_volume(call).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            Expanded::Ok {
                                capacity_bytes: r.capacity_bytes,
                                node_expansion_required: r.node_expansion_required,
                            }
                        }
                        Err(status) => Expanded::Failed {
                            code: status.code(),
                            error: grpc_error(&status),
                        },
                    }
                }
            },
        };
        let after = decide::after_expand(&self.resizer, &claim, &pv, &result, &now());
        {
            let mut finals = self.final_errors.lock().unwrap();
            match after.tracking.final_error {
                Some(true) => {
                    finals.insert(key.to_string());
                }
                Some(false) => {
                    finals.remove(key);
                }
                None => {}
            }
            if after.tracking.leave_slow_set {
                self.slow.lock().unwrap().remove(key);
            }
            if after.tracking.in_use_error {
                self.in_use_errors.lock().unwrap().insert(uid.clone());
            }
        }
        if let Some(error) = after.error {
            let mut message = error;
            if let Some((status, check)) = &after.status
                && let Err(e) = self.write_status(&claim, status, *check).await
            {
                message = format!(
                    "resizing failed in controller with {message} but failed to update pvc {key} with: {e}"
                );
            }
            return self.failed(&claim, message).await;
        }

        // updatePVCapacity, then the claim.
        if let Some(capacity) = &after.pv_capacity {
            let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
            let patch = json!({"spec": {"capacity": {"storage": capacity}}});
            if let Err(e) = volumes
                .patch(&pv_name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                return self
                    .failed(
                        &claim,
                        format!(
                            "error updating pv {pv_name:?} by resizer: updating capacity of pv {pv_name:?} to {} failed: {e}",
                            capacity.0
                        ),
                    )
                    .await;
            }
            tracing::info!(claim = key, pv = %pv_name, capacity = %capacity.0, "expanded volume");
        }
        if let Some((status, check)) = &after.status {
            match self.write_status(&claim, status, *check).await {
                Ok(updated) => {
                    if after.node_expansion_not_required
                        && let Err(e) = self.annotate(&updated, true).await
                    {
                        return self
                            .failed(
                                &claim,
                                format!("mark pvc {key:?} as resize finished failed: {e}"),
                            )
                            .await;
                    }
                }
                Err(e) if is_status(&e, 409) => {
                    return Err(format!("pvc {key:?} changed meanwhile: {e}"));
                }
                Err(e) => {
                    return self
                        .failed(
                            &claim,
                            format!("mark pvc {key:?} as node expansion required failed: {e}"),
                        )
                        .await;
                }
            }
        }
        if let Some(event) = after.event {
            self.event(&claim, event).await;
        }
        Ok(())
    }
}
