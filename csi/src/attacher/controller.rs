//! The attacher's I/O shell: watches rekube's VolumeAttachments and PersistentVolumes and
//! this node's Node (reflector stores), works one key at a time (VolumeAttachments and
//! PersistentVolumes by name), runs the [`Step`]s [`decide`] gives over the driver's socket
//! and the apiserver, as external-attacher's CSIAttachController does. Status is written
//! only through `volumeattachments/status`.
//!
//! Failures are retried per key with exponential back-off (upstream's
//! `--retry-interval-start` 1 s, `--retry-interval-max` 5 min, [`crate::sidecar`]); the
//! attacher's own attachError/detachError writes do not queue the attachment again
//! (upstream's shouldEnqueueVAChange), so the back-off holds; everything is looked at
//! again every [`RESYNC`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, SecretReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use rekube_crds::{Node, PersistentVolume, VolumeAttachment};
use serde_json::Value;
use tonic::transport::Channel;

use super::AttacherConfig;
use super::decide::{self, Attacher, Step, VaSync};
use crate::csi::controller_client::ControllerClient;
use crate::csi::controller_service_capability::rpc::Type as Rpc;
use crate::provisioner::decide::grpc_error;
use crate::sidecar::{
    Queue, SidecarError, connect_driver, driver_info, is_status, kube_client, run_worker,
};

/// upstream `--timeout`: one ControllerPublishVolume or ControllerUnpublishVolume call.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// How often every VolumeAttachment and PersistentVolume is looked at again (upstream
/// `--resync`, 10 min, is for informers that never miss; a minute here, as the
/// provisioner's).
pub const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AttacherError {
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error("watch of {0} stopped")]
    WatchStopped(&'static str),
}

/// A unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Attachment(String),
    Volume(String),
}

/// The result of one sync: done, or retry with back-off.
type Sync = Result<(), String>;

/// Whether a failed step's message is saved in the attachment's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Attach,
    Detach,
}

pub struct AttacherController {
    client: Client,
    csi: ControllerClient<Channel>,
    attacher: Attacher,
    attachments: Store<VolumeAttachment>,
    volumes: Store<PersistentVolume>,
    nodes: Store<Node>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn json_patch(patch: Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(patch).expect("the attacher's patches are JSON Patches"))
}

/// Runs the attacher until `shutdown` completes or a watch ends.
pub async fn run(
    config: AttacherConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AttacherError> {
    let channel = connect_driver(&config.socket).await?;
    let (driver_name, rpcs) = driver_info(channel.clone(), &config.socket).await?;
    let attacher = Attacher {
        driver_name,
        node_name: config.node_name.clone(),
        publish_unpublish: rpcs.contains(&Rpc::PublishUnpublishVolume),
        publish_readonly: rpcs.contains(&Rpc::PublishReadonly),
        single_node_multi_writer: rpcs.contains(&Rpc::SingleNodeMultiWriter),
        default_fs_type: config.default_fs_type.clone(),
    };
    let client = kube_client(config.kubeconfig.as_deref()).await?;

    let (queue, work) = Queue::<Key>::new();
    let (attachments, attachments_writer) = reflector::store();
    let (volumes, volumes_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();

    // VolumeAttachments: all of them are kept (a PV's finalizer waits for every
    // attachment naming it); this attacher's are queued, unless the change is only one
    // of its own error writes. A deleted one queues its PV (upstream's vaDeleted).
    let va_queue = queue.clone();
    let va_attacher = attacher.clone();
    let seen: Arc<Mutex<HashMap<String, VolumeAttachment>>> = Default::default();
    let va_watch = reflector::reflector(
        attachments_writer,
        watcher(
            Api::<VolumeAttachment>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(va) | watcher::Event::InitApply(va)) => {
                let name = va.metadata.name.clone().unwrap_or_default();
                let old = seen.lock().unwrap().insert(name.clone(), va.clone());
                let changed = old
                    .as_ref()
                    .is_none_or(|old| decide::should_enqueue_va_change(old, &va));
                if decide::is_ours(&va_attacher, &va) && changed {
                    va_queue.add(Key::Attachment(name));
                }
            }
            Ok(watcher::Event::Delete(va)) => {
                let name = va.metadata.name.clone().unwrap_or_default();
                seen.lock().unwrap().remove(&name);
                if let Some(pv) = decide::pv_name(&va) {
                    va_queue.add(Key::Volume(pv.to_string()));
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "volumeattachments watch"),
        }
        async {}
    });
    // PersistentVolumes: the ones being deleted with this attacher's finalizer.
    let pv_queue = queue.clone();
    let finalizer = decide::attacher_finalizer(&attacher.driver_name);
    let pv_watch = reflector::reflector(
        volumes_writer,
        watcher(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |pv| {
        if let Ok(pv) = pv
            && pv.metadata.deletion_timestamp.is_some()
            && pv
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.contains(&finalizer))
        {
            pv_queue.add(Key::Volume(pv.metadata.name.clone().unwrap_or_default()));
        }
        async {}
    });
    // This node's Node (its node id annotation).
    let node_watch = reflector::reflector(
        nodes_writer,
        watcher(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={}", config.node_name)),
        ),
    )
    .default_backoff()
    .for_each(|_| async {});

    let controller = Arc::new(AttacherController {
        client,
        csi: ControllerClient::new(channel),
        attacher,
        attachments,
        volumes,
        nodes,
    });
    tracing::info!(
        driver = %controller.attacher.driver_name,
        node = %controller.attacher.node_name,
        trivial = !controller.attacher.publish_unpublish,
        "attaching"
    );

    let worker = {
        let c = controller.clone();
        let queue = queue.clone();
        async move {
            for store in [
                c.attachments.wait_until_ready().await,
                c.volumes.wait_until_ready().await,
                c.nodes.wait_until_ready().await,
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
                    for va in c.attachments.state() {
                        if decide::is_ours(&c.attacher, &va) {
                            queue.add(Key::Attachment(
                                va.metadata.name.clone().unwrap_or_default(),
                            ));
                        }
                    }
                    for pv in c.volumes.state() {
                        if pv.metadata.deletion_timestamp.is_some() {
                            queue.add(Key::Volume(pv.metadata.name.clone().unwrap_or_default()));
                        }
                    }
                },
                |key| {
                    let c = c.clone();
                    async move {
                        match &key {
                            Key::Attachment(name) => c.sync_attachment(name).await,
                            Key::Volume(name) => c.sync_volume(name).await,
                        }
                    }
                },
            )
            .await;
        }
    };
    tokio::select! {
        _ = shutdown => Ok(()),
        _ = va_watch => Err(AttacherError::WatchStopped("volumeattachments")),
        _ = pv_watch => Err(AttacherError::WatchStopped("persistentvolumes")),
        _ = node_watch => Err(AttacherError::WatchStopped("nodes")),
        _ = worker => Err(AttacherError::WatchStopped("the work queue")),
    }
}

impl AttacherController {
    /// upstream SyncNewOrUpdatedVolumeAttachment.
    async fn sync_attachment(&self, name: &str) -> Sync {
        let Some(va) = self.attachments.get(&ObjectRef::new(name)) else {
            return Ok(());
        };
        let pv = decide::pv_name(&va).and_then(|n| self.volumes.get(&ObjectRef::new(n)));
        let node = self.nodes.get(&ObjectRef::new(&self.attacher.node_name));
        match decide::sync_va(&self.attacher, &va, pv.as_deref(), node.as_deref()) {
            VaSync::Nothing => Ok(()),
            VaSync::Attach(steps) => self.run_steps(&va, steps, Phase::Attach).await,
            VaSync::Detach(steps) => self.run_steps(&va, steps, Phase::Detach).await,
        }
    }

    /// Runs the steps in order; the first failure is saved in the attachment's status
    /// (attachError or detachError, as upstream's saveAttachError and saveDetachError)
    /// and the sync is retried. A failure to write the attached status itself is only
    /// retried (upstream's syncAttach).
    async fn run_steps(&self, va: &VolumeAttachment, steps: Vec<Step>, phase: Phase) -> Sync {
        let name = va.metadata.name.as_deref().unwrap_or_default();
        let attachments: Api<VolumeAttachment> = Api::all(self.client.clone());
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let pp = PatchParams::default();
        let mut publish_context = HashMap::new();
        for step in steps {
            let failed = match step {
                Step::Fail(message) => message,
                Step::AddPvFinalizer { pv, patch } => {
                    match volumes.patch(&pv, &pp, &json_patch(patch)).await {
                        Ok(_) => continue,
                        Err(e) => {
                            format!("could not add the finalizer to persistentvolume {pv}: {e}")
                        }
                    }
                }
                Step::PatchVa(patch) => {
                    match attachments.patch(name, &pp, &Patch::Merge(patch)).await {
                        Ok(_) => continue,
                        Err(e) => format!("could not save volumeattachment {name}: {e}"),
                    }
                }
                Step::Publish {
                    mut request,
                    secret,
                } => {
                    match self.secrets(secret.as_ref()).await {
                        Ok(s) => request.secrets = s,
                        Err(e) => return self.failed(va, phase, e).await,
                    }
                    let mut call = tonic::Request::new(request);
                    call.set_timeout(TIMEOUT);
                    match self.csi.clone().controller_publish_volume(call).await {
                        Ok(r) => {
                            publish_context = r.into_inner().publish_context;
                            tracing::info!(attachment = name, ?publish_context, "attached");
                            continue;
                        }
                        Err(status) => grpc_error(&status),
                    }
                }
                Step::MarkAttached => {
                    let patch = decide::mark_attached_patch(va, &publish_context);
                    return match attachments
                        .patch_status(name, &pp, &Patch::Merge(patch))
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(e) => Err(format!(
                            "failed to mark volumeattachment {name} as attached: {e}"
                        )),
                    };
                }
                Step::Unpublish {
                    mut request,
                    secret,
                } => {
                    match self.secrets(secret.as_ref()).await {
                        Ok(s) => request.secrets = s,
                        Err(e) => return self.failed(va, phase, e).await,
                    }
                    let mut call = tonic::Request::new(request);
                    call.set_timeout(TIMEOUT);
                    match self.csi.clone().controller_unpublish_volume(call).await {
                        Ok(_) => {
                            tracing::info!(attachment = name, "detached");
                            continue;
                        }
                        Err(status) => grpc_error(&status),
                    }
                }
                Step::RemoveVaFinalizer(patch) => {
                    match attachments.patch(name, &pp, &json_patch(patch)).await {
                        Ok(_) => continue,
                        Err(e) if is_status(&e, 404) => return Ok(()),
                        Err(e) => {
                            format!("could not mark volumeattachment {name} as detached: {e}")
                        }
                    }
                }
                Step::MarkDetached => {
                    let patch = decide::mark_detached_patch();
                    match attachments
                        .patch_status(name, &pp, &Patch::Merge(patch))
                        .await
                    {
                        Ok(_) => continue,
                        Err(e) if is_status(&e, 404) => return Ok(()),
                        Err(e) => {
                            format!("could not mark volumeattachment {name} as detached: {e}")
                        }
                    }
                }
            };
            return self.failed(va, phase, failed).await;
        }
        Ok(())
    }

    /// Saves `message` as the attachment's attachError or detachError; the sync's error.
    async fn failed(&self, va: &VolumeAttachment, phase: Phase, message: String) -> Sync {
        let name = va.metadata.name.as_deref().unwrap_or_default();
        let patch = match phase {
            Phase::Attach => decide::attach_error_patch(va, &message, &now()),
            Phase::Detach => decide::detach_error_patch(va, &message, &now()),
        };
        let attachments: Api<VolumeAttachment> = Api::all(self.client.clone());
        if let Err(e) = attachments
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::warn!(attachment = name, error = %e, "failed to save the error in the volumeattachment's status");
        }
        Err(match phase {
            Phase::Attach => format!("failed to attach volumeattachment {name}: {message}"),
            Phase::Detach => format!("failed to detach volumeattachment {name}: {message}"),
        })
    }

    /// upstream getCredentialsFromPV: the Secret's data as strings.
    async fn secrets(
        &self,
        reference: Option<&SecretReference>,
    ) -> Result<HashMap<String, String>, String> {
        let Some(r) = reference else {
            return Ok(HashMap::new());
        };
        let namespace = r.namespace.as_deref().unwrap_or_default();
        let name = r.name.as_deref().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = secrets
            .get(name)
            .await
            .map_err(|e| format!("failed to load secret \"{namespace}/{name}\": {e}"))?;
        Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect())
    }

    /// upstream SyncNewOrUpdatedPersistentVolume: the finalizer off a deleted volume no
    /// attachment names any more.
    async fn sync_volume(&self, name: &str) -> Sync {
        let Some(pv) = self.volumes.get(&ObjectRef::new(name)) else {
            return Ok(());
        };
        let attachments = self.attachments.state();
        let Some(patch) =
            decide::sync_pv(&self.attacher, &pv, attachments.iter().map(|a| a.as_ref()))
        else {
            return Ok(());
        };
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match volumes
            .patch(name, &PatchParams::default(), &json_patch(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(pv = name, "removed the attacher's finalizer");
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(format!(
                "failed to remove the attacher's finalizer from persistentvolume {name}: {e}"
            )),
        }
    }
}
