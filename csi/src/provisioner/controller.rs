//! The provisioner's I/O shell: watches rekube's claims, volumes and classes (reflector
//! stores), works one key at a time (claims `namespace/name`, volumes `name`), calls the
//! driver's CreateVolume and DeleteVolume over its socket, writes PersistentVolumes and
//! records events on the claims and volumes, as sig-storage-lib-external-provisioner's
//! ProvisionController does. The decisions are [`super::decide`]'s.
//!
//! Failures are retried per key with exponential back-off (upstream's
//! `--retry-interval-start` 1 s, `--retry-interval-max` 5 min, no failure threshold);
//! every claim and volume is looked at again every [`RESYNC`].

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use rekube_crds::events::EventRecorder;
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, StorageClass};
use serde_json::json;
use tonic::transport::Channel;

use super::ProvisionerConfig;
use super::capacity_controller::CapacityController;
use super::decide::{self, ClaimDecision, ProvisioningState, VolumeContext};
use crate::csi::controller_client::ControllerClient;
use crate::csi::controller_service_capability::rpc::Type as Rpc;
use crate::csi::{DeleteVolumeRequest, DeleteVolumeResponse};
use crate::sidecar::{
    Queue, SidecarError, connect_driver, driver_info, is_status, kube_client, run_worker,
};

/// upstream `--timeout`: one CreateVolume or DeleteVolume call.
pub const TIMEOUT: Duration = Duration::from_secs(60);
pub use crate::sidecar::{RETRY_MAX, RETRY_START};
/// How often every claim and volume is looked at again (an informer's resync).
pub const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error("driver {0} does not report CREATE_DELETE_VOLUME")]
    NoCreateDelete(String),
    #[error("watch of {0} stopped")]
    WatchStopped(&'static str),
    #[error("capacity: {0}")]
    Capacity(String),
}

/// A unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Claim { namespace: String, name: String },
    Volume(String),
}

/// The result of one sync: done, or retry with back-off.
type Sync = Result<(), String>;

pub struct Provisioner {
    client: Client,
    csi: ControllerClient<Channel>,
    driver_name: String,
    node_id: String,
    identity: String,
    pv_labels: BTreeMap<String, String>,
    single_node_multi_writer: bool,
    recorder: EventRecorder,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    /// PVs this process created that the volume store may not show yet (upstream adds
    /// them to its cache at once).
    created: Mutex<HashSet<String>>,
    /// Claims already told that distributed provisioning needs WaitForFirstConsumer.
    warned: Mutex<HashSet<String>>,
    /// The capacity publisher (`--enable-capacity`), refreshed after each CreateVolume
    /// and DeleteVolume.
    capacity: Option<Arc<CapacityController>>,
}

/// Runs the provisioner until `shutdown` completes or a watch ends.
pub async fn run(
    config: ProvisionerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ProvisionerError> {
    let channel = connect_driver(&config.socket).await?;
    let (driver_name, rpcs) = driver_info(channel.clone(), &config.socket).await?;
    let csi = ControllerClient::new(channel.clone());
    if !rpcs.contains(&Rpc::CreateDeleteVolume) {
        return Err(ProvisionerError::NoCreateDelete(driver_name));
    }
    let client = kube_client(config.kubeconfig.as_deref()).await?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let identity = format!("{millis}-{}-{driver_name}", std::process::id() % 10000);
    let recorder =
        EventRecorder::with_instance(client.clone(), &driver_name, Some(config.node_id.clone()));

    let (queue, work) = Queue::<Key>::new();
    let (claims, claims_writer) = reflector::store();
    let (volumes, volumes_writer) = reflector::store();
    let (classes, classes_writer) = reflector::store();
    let claim_queue = queue.clone();
    let claim_watch = reflector::reflector(
        claims_writer,
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |c| {
        if let Ok(c) = c {
            claim_queue.add(Key::Claim {
                namespace: c.metadata.namespace.clone().unwrap_or_default(),
                name: c.metadata.name.clone().unwrap_or_default(),
            });
        }
        async {}
    });
    let volume_queue = queue.clone();
    let volume_watch = reflector::reflector(
        volumes_writer,
        watcher(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |v| {
        if let Ok(v) = v {
            volume_queue.add(Key::Volume(v.metadata.name.clone().unwrap_or_default()));
        }
        async {}
    });
    let (capacity, capacity_run) = match &config.capacity {
        Some(c) => {
            if !rpcs.contains(&Rpc::GetCapacity) {
                return Err(ProvisionerError::Capacity(format!(
                    "driver {driver_name} does not report GET_CAPACITY"
                )));
            }
            let started = CapacityController::start(
                client.clone(),
                channel.clone(),
                &driver_name,
                &config.node_id,
                c,
                classes.clone(),
            )
            .await?;
            (Some(started.controller), Some(started.run))
        }
        None => (None, None),
    };
    let class_capacity = capacity.clone();
    let class_watch = reflector::reflector(
        classes_writer,
        watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(move |_| {
        if let Some(c) = &class_capacity {
            c.on_class_change();
        }
        async {}
    });
    let capacity_run = async move {
        match capacity_run {
            Some(run) => run.await,
            None => std::future::pending().await,
        }
    };

    let provisioner = Arc::new(Provisioner {
        client,
        csi,
        driver_name,
        node_id: config.node_id.clone(),
        identity,
        pv_labels: config.pv_labels.clone(),
        single_node_multi_writer: rpcs.contains(&Rpc::SingleNodeMultiWriter),
        recorder,
        claims,
        volumes,
        classes,
        created: Default::default(),
        warned: Default::default(),
        capacity,
    });
    tracing::info!(driver = %provisioner.driver_name, node = %provisioner.node_id, "provisioning");

    let worker = {
        let p = provisioner.clone();
        let queue = queue.clone();
        async move {
            for store in [
                p.claims.wait_until_ready().await,
                p.volumes.wait_until_ready().await,
                p.classes.wait_until_ready().await,
            ] {
                if store.is_err() {
                    return;
                }
            }
            run_worker(
                work,
                queue,
                RESYNC,
                |queue| {
                    for c in p.claims.state() {
                        queue.add(Key::Claim {
                            namespace: c.metadata.namespace.clone().unwrap_or_default(),
                            name: c.metadata.name.clone().unwrap_or_default(),
                        });
                    }
                    for v in p.volumes.state() {
                        queue.add(Key::Volume(v.metadata.name.clone().unwrap_or_default()));
                    }
                },
                |key| {
                    let p = p.clone();
                    async move {
                        match &key {
                            Key::Claim { namespace, name } => p.sync_claim(namespace, name).await,
                            Key::Volume(name) => p.sync_volume(name).await,
                        }
                    }
                },
            )
            .await;
        }
    };
    tokio::select! {
        _ = shutdown => Ok(()),
        _ = claim_watch => Err(ProvisionerError::WatchStopped("persistentvolumeclaims")),
        _ = volume_watch => Err(ProvisionerError::WatchStopped("persistentvolumes")),
        _ = class_watch => Err(ProvisionerError::WatchStopped("storageclasses")),
        _ = worker => Err(ProvisionerError::WatchStopped("the work queue")),
        stopped = capacity_run => Err(stopped),
    }
}

impl Provisioner {
    fn pv_known(&self, name: &str) -> bool {
        self.volumes.get(&ObjectRef::new(name)).is_some()
            || self.created.lock().unwrap().contains(name)
    }

    async fn sync_claim(&self, namespace: &str, name: &str) -> Sync {
        let Some(claim) = self.claims.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(());
        };
        let class_name = decide::claim_class(&claim);
        let class = self.classes.get(&ObjectRef::new(&class_name));
        match decide::should_provision(
            &claim,
            class.as_deref(),
            &self.driver_name,
            &self.node_id,
            |pv| self.pv_known(pv),
        ) {
            ClaimDecision::Ignore | ClaimDecision::AlreadyProvisioned => Ok(()),
            ClaimDecision::NeedsWaitForFirstConsumer => {
                let uid = claim.metadata.uid.clone().unwrap_or_default();
                if self.warned.lock().unwrap().insert(uid) {
                    self.recorder.warning(
                        &claim.object_ref(&()),
                        "ProvisioningFailed",
                        format!(
                            "failed to provision volume with StorageClass {class_name:?}: {} provisions on the selected node only (distributed provisioning); claim {} has none: use a StorageClass with volumeBindingMode: WaitForFirstConsumer",
                            self.driver_name,
                            decide::key(&claim.metadata)
                        ),
                    ).await;
                }
                Ok(())
            }
            ClaimDecision::Provision { pv_name } => {
                let class =
                    class.ok_or_else(|| format!("storageclass {class_name:?} not found"))?;
                self.provision(&claim, &class, &pv_name).await
            }
        }
    }

    async fn failed(&self, claim: &PersistentVolumeClaim, message: String) -> String {
        self.recorder
            .warning(
                &claim.object_ref(&()),
                "ProvisioningFailed",
                message.clone(),
            )
            .await;
        message
    }

    /// The lib's provisionClaimOperation with the CSI provisioner's Provision.
    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: &StorageClass,
        pv_name: &str,
    ) -> Sync {
        let class_name = decide::claim_class(claim);
        let claim_key = decide::key(&claim.metadata);
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = match nodes.get(&self.node_id).await {
            Ok(node) => node,
            Err(e) if is_status(&e, 404) => {
                let message = format!(
                    "failed to provision volume with StorageClass {class_name:?}: node {:?} not found",
                    self.node_id
                );
                self.failed(claim, message).await;
                return self.reschedule(claim).await;
            }
            Err(e) => {
                let message = format!("failed to get target node: {e}");
                return Err(self.failed(claim, message).await);
            }
        };
        let (request, fs_type) =
            match decide::create_volume_request(claim, class, &node, self.single_node_multi_writer)
            {
                Ok(r) => r,
                Err(e) => {
                    let message =
                        format!("failed to provision volume with StorageClass {class_name:?}: {e}");
                    return Err(self.failed(claim, message).await);
                }
            };
        self.recorder
            .normal(
                &claim.object_ref(&()),
                "Provisioning",
                format!("External provisioner is provisioning volume for claim {claim_key:?}"),
            )
            .await;
        let required_bytes = request
            .capacity_range
            .map(|c| c.required_bytes)
            .unwrap_or(0);
        let mut csi = self.csi.clone();
        let mut call = tonic::Request::new(request);
        call.set_timeout(TIMEOUT);
        let response = match csi.create_volume(call).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                // upstream's provisionWrapper: a failed provisioning refreshes the class.
                if let Some(c) = &self.capacity {
                    c.refresh_class(&class_name);
                }
                let state = decide::check_error(Some(status.code()), true);
                let message = format!(
                    "failed to provision volume with StorageClass {class_name:?}: {}",
                    decide::grpc_error(&status)
                );
                let message = self.failed(claim, message).await;
                return match state {
                    ProvisioningState::Reschedule => self.reschedule(claim).await,
                    ProvisioningState::Finished | ProvisioningState::InBackground => Err(message),
                };
            }
        };
        let context = VolumeContext {
            driver_name: &self.driver_name,
            identity: &self.identity,
            fs_type: &fs_type,
            labels: &self.pv_labels,
            required_bytes,
        };
        let pv = match decide::persistent_volume(
            claim,
            class,
            pv_name,
            response.volume.as_ref(),
            &context,
        ) {
            Ok(pv) => {
                // upstream's provisionWrapper: the volume's segment refreshed now (its
                // class without topology), before the PV is written.
                if let Some(c) = &self.capacity {
                    match pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()) {
                        Some(affinity) => c.refresh_topology(affinity),
                        None => c.refresh_class(&class_name),
                    }
                }
                pv
            }
            Err(e) => {
                let mut message =
                    format!("failed to provision volume with StorageClass {class_name:?}: {e}");
                if let Some(v) = &response.volume
                    && let Err(status) = self.delete_volume(&v.volume_id).await
                {
                    message = format!(
                        "{message}. cleanup of volume {pv_name} failed, volume is orphaned: {}",
                        decide::grpc_error(&status)
                    );
                }
                return Err(self.failed(claim, message).await);
            }
        };
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match volumes.create(&PostParams::default(), &pv).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {
                tracing::info!(pv = pv_name, claim = %claim_key, "persistentvolume already exists");
            }
            Err(e) => {
                let message = format!("failed to create persistentvolume {pv_name}: {e}");
                return Err(self.failed(claim, message).await);
            }
        }
        self.created.lock().unwrap().insert(pv_name.to_string());
        tracing::info!(pv = pv_name, claim = %claim_key, "provisioned");
        self.recorder
            .normal(
                &claim.object_ref(&()),
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {pv_name}"),
            )
            .await;
        Ok(())
    }

    /// The lib's rescheduleProvisioning: the selected-node annotation removed, so the
    /// scheduler picks a node again.
    async fn reschedule(&self, claim: &PersistentVolumeClaim) -> Sync {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            claim.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({"metadata": {
            "resourceVersion": claim.metadata.resource_version,
            "annotations": {decide::ANN_SELECTED_NODE: null},
        }});
        match claims
            .patch(
                claim.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(format!(
                "reschedule claim {}: {e}",
                decide::key(&claim.metadata)
            )),
        }
    }

    async fn delete_volume(&self, id: &str) -> Result<DeleteVolumeResponse, tonic::Status> {
        let mut call = tonic::Request::new(DeleteVolumeRequest {
            volume_id: id.to_string(),
            ..Default::default()
        });
        call.set_timeout(TIMEOUT);
        self.csi
            .clone()
            .delete_volume(call)
            .await
            .map(|r| r.into_inner())
    }

    async fn patch_finalizers(&self, pv: &PersistentVolume, finalizers: Vec<String>) -> Sync {
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({"metadata": {
            "resourceVersion": pv.metadata.resource_version,
            "finalizers": finalizers,
        }});
        match volumes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(format!(
                "failed to modify finalizers to {finalizers:?} on volume {name}: {e}"
            )),
        }
    }

    async fn sync_volume(&self, name: &str) -> Sync {
        let Some(pv) = self.volumes.get(&ObjectRef::new(name)) else {
            return Ok(());
        };
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(decide::ANN_DYNAMICALLY_PROVISIONED))
            == Some(&self.driver_name)
            && decide::volume_is_on_node(&pv, &self.node_id);
        if !ours {
            return Ok(());
        }
        if let Some(finalizers) = decide::protection_finalizers(&pv) {
            self.patch_finalizers(&pv, finalizers).await?;
        }
        if !decide::should_delete(&pv, &self.driver_name, &self.node_id) {
            return Ok(());
        }
        self.delete(&pv).await
    }

    /// The lib's deleteVolumeOperation: DeleteVolume, the PV deleted, the finalizer removed.
    async fn delete(&self, pv: &PersistentVolume) -> Sync {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let handle = pv
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .map(|c| c.volume_handle.clone())
            .unwrap_or_default();
        if let Err(status) = self.delete_volume(&handle).await {
            let message = decide::grpc_error(&status);
            self.recorder
                .warning(&pv.object_ref(&()), "VolumeFailedDelete", message.clone())
                .await;
            return Err(format!(
                "delete volume {handle} of persistentvolume {name}: {message}"
            ));
        }
        tracing::info!(pv = name, volume = %handle, "volume deleted");
        if let (Some(c), Some(affinity)) = (
            &self.capacity,
            pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()),
        ) {
            c.refresh_topology(affinity);
        }
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match volumes.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(format!("failed to delete persistentvolume {name}: {e}")),
        }
        self.created.lock().unwrap().remove(name);
        let current = match volumes.get_opt(name).await {
            Ok(Some(current)) => current,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("failed to get persistentvolume {name}: {e}")),
        };
        let mut finalizers = current.metadata.finalizers.clone().unwrap_or_default();
        if finalizers.iter().any(|f| f == decide::FINALIZER_PV) {
            finalizers.retain(|f| f != decide::FINALIZER_PV);
            self.patch_finalizers(&current, finalizers).await?;
        }
        Ok(())
    }
}
