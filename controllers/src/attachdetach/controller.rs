//! The attach/detach controller's shell (upstream attach_detach_controller.go): the
//! informers' handlers keep the desired state and the nodes' `volumesInUse`; at start the
//! actual state is rebuilt from the nodes' `volumesAttached` and the VolumeAttachments
//! (`populate_actual_state_of_world`), so a restart neither creates nor orphans
//! attachments; then a loop every 100 ms runs [`reconcile`](super::reconciler::reconcile)
//! and does what it decides: node status patches, VolumeAttachments created and waited
//! for, deleted and waited for (each in a task of its own, as upstream's operation
//! executor), events. The populator runs every minute (adding pods every three), the
//! attachment sync every `--attach-detach-reconcile-sync-period`.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rekube_crds::storage_keys::attachment_name;
use rekube_crds::{
    CSIDriver, Node, PersistentVolume, PersistentVolumeClaim, Pod, VolumeAttachment,
};
use tokio_util::sync::CancellationToken;

use super::cache::{
    ActualStateOfWorld, AttachState, AttachedVolume, DesiredStateOfWorld, PodRef, VolumeSpec,
    VolumeToAttach,
};
use super::csi::{
    CSI_TIMEOUT, new_volume_attachment, timeout_message, verify_attachment_status,
    verify_detachment_status,
};
use super::operations::{OperationKey, Operations};
use super::populator;
use super::reconciler::{
    self, Action, Config as ReconcilerConfig, FAILED_ATTACH_VOLUME, NodeInfo, PodEvent,
    SUCCESSFUL_ATTACH_VOLUME, volume_error, volume_message,
};
use super::statusupdater::volumes_attached_patch;
use super::util::{
    Listers, create_volume_spec, determine_volume_action, is_attachable, is_pod_terminated,
    process_pod_volumes, split_csi_unique_name, volume_spec_from_pv,
};
use super::{CONTROLLER_NAME, Error};
use crate::manager::client::ignore_not_found;
use crate::manager::events::{EventRecorder, EventType};
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};

/// upstream `volumeutil.ControllerManagedAttachAnnotation`: a node whose attach and
/// detach this controller does (the agent sets it; upstream adds a node that has the key).
pub const CONTROLLER_MANAGED_ATTACH_ANNOTATION: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// upstream DefaultTimerConfig.ReconcilerLoopPeriod.
pub const RECONCILER_LOOP_PERIOD: Duration = Duration::from_millis(100);
/// upstream DefaultTimerConfig.DesiredStateOfWorldPopulatorLoopSleepPeriod.
pub const POPULATOR_LOOP_SLEEP_PERIOD: Duration = Duration::from_secs(60);
/// upstream DefaultTimerConfig.DesiredStateOfWorldPopulatorListPodsRetryDuration.
pub const POPULATOR_LIST_PODS_RETRY_DURATION: Duration = Duration::from_secs(180);
/// How often an attach or detach looks at its VolumeAttachment in the cache.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// The informers it reads.
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub pvcs: Arc<Informer<PersistentVolumeClaim>>,
    pub pvs: Arc<Informer<PersistentVolume>>,
    pub csi_drivers: Arc<Informer<CSIDriver>>,
    pub volume_attachments: Arc<Informer<VolumeAttachment>>,
}

/// The controller's settings (upstream TimerConfig and flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub reconciler: ReconcilerConfig,
    /// upstream --attach-detach-reconcile-sync-period (less than a second: no sync).
    pub reconcile_sync_period: Duration,
    /// upstream --disable-attach-detach-reconcile-sync.
    pub disable_reconcile_sync: bool,
    /// Whether the node informer sees only some nodes (`--node-selector`): a
    /// VolumeAttachment of a node missing from it is then checked with a GET before it is
    /// taken for one of a deleted node.
    pub nodes_scoped: bool,
}

struct State {
    dsw: DesiredStateOfWorld,
    asw: ActualStateOfWorld,
    ops: Operations,
}

pub struct AttachDetachController {
    client: Client,
    informers: Informers,
    recorder: EventRecorder,
    config: Config,
    state: Mutex<State>,
}

/// The listers over the informers' caches.
struct CacheListers<'a>(&'a Informers);

impl Listers for CacheListers<'_> {
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.0.pods.get(&ObjectKey::new(Some(namespace), name))
    }
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.0.pvcs.get(&ObjectKey::new(Some(namespace), name))
    }
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.0.pvs.get(&ObjectKey::new(None, name))
    }
    fn csi_driver(&self, name: &str) -> Option<Arc<CSIDriver>> {
        self.0.csi_drivers.get(&ObjectKey::new(None, name))
    }
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn volumes_in_use(node: &Node) -> Vec<String> {
    node.status
        .as_ref()
        .and_then(|s| s.volumes_in_use.clone())
        .unwrap_or_default()
}

/// upstream `addNodeToDswp`: a node with the annotation (whatever its value) is managed.
pub fn is_controller_managed(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONTROLLER_MANAGED_ATTACH_ANNOTATION))
}

/// What the reconciler reads of a node: ready, out-of-service taint.
pub fn node_info(node: &Node) -> NodeInfo {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == rekube_crds::core_v1::NODE_READY)
        })
        .is_some_and(|c| c.status == rekube_crds::core_v1::CONDITION_TRUE);
    let out_of_service = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == rekube_crds::core_v1::TAINT_NODE_OUT_OF_SERVICE)
        });
    NodeInfo {
        ready,
        out_of_service,
    }
}

fn pod_object(p: &PodRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/{}", rekube_crds::GROUP, rekube_crds::VERSION)),
        kind: Some("Pod".into()),
        namespace: Some(p.namespace.clone()),
        name: Some(p.name.clone()),
        uid: Some(p.uid.clone()),
        ..Default::default()
    }
}

/// The VolumeAttachment a (volume, node) of the actual state has: from its spec, or from
/// its unique name after a restart.
fn detach_attachment(v: &AttachedVolume) -> Result<(String, String, String), Error> {
    let (driver, handle) = match &v.volume_spec {
        Some(s) => (s.driver.clone(), s.volume_handle.clone()),
        None => split_csi_unique_name(&v.volume_name)?,
    };
    let name = attachment_name(&handle, &driver, &v.node_name);
    Ok((name, driver, handle))
}

/// upstream `processVolumeAttachments`'s decision for one VolumeAttachment: the CSI
/// volume and node it holds, if this controller is to take it on (its PV is in the cache,
/// CSI and attachable).
pub fn volume_attachment_volume(
    va: &VolumeAttachment,
    listers: &dyn Listers,
) -> Option<(VolumeSpec, String)> {
    let spec = va.spec.as_ref()?;
    let pv_name = spec.source.persistent_volume_name.as_deref()?;
    let pv = listers.volume(pv_name)?;
    let volume = volume_spec_from_pv(&pv)?;
    is_attachable(&volume, listers).then(|| (volume, spec.node_name.clone()))
}

impl AttachDetachController {
    pub fn new(client: Client, informers: Informers, config: Config) -> Arc<Self> {
        let c = Arc::new(AttachDetachController {
            recorder: EventRecorder::new(client.clone(), CONTROLLER_NAME),
            client,
            informers,
            config,
            state: Mutex::new(State {
                dsw: DesiredStateOfWorld::default(),
                asw: ActualStateOfWorld::default(),
                ops: Operations::default(),
            }),
        });
        let weak = Arc::downgrade(&c);
        c.informers.pods.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            match change {
                // upstream podAdd / podUpdate.
                Change::Added(p) | Change::Updated { new: p, .. } => {
                    if node_name(p).is_empty() {
                        return;
                    }
                    let add = determine_volume_action(p, true);
                    c.with_state(|s, l| process_pod_volumes(p, add, &mut s.dsw, l));
                }
                Change::Deleted(p) => {
                    c.with_state(|s, l| process_pod_volumes(p, false, &mut s.dsw, l))
                }
            }
        });
        let weak = Arc::downgrade(&c);
        c.informers.nodes.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let mut s = c.state.lock().unwrap();
            match change {
                Change::Added(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    node_update(&mut s, n);
                    let _ = s.asw.set_node_status_update_needed(&name);
                }
                Change::Updated { new, .. } => node_update(&mut s, new),
                Change::Deleted(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    if let Err(e) = s.dsw.delete_node(&name) {
                        tracing::info!(node = %name, error = %e, "removing node from the desired state");
                    }
                    s.asw.set_volumes_mounted_by_node(&volumes_in_use(n), &name);
                }
            }
        });
        // upstream enqueuePVC + syncPVCByKey, done at once (the cache is in memory): a
        // claim that is Bound brings its pods' volumes in.
        let weak = Arc::downgrade(&c);
        c.informers.pvcs.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let (Change::Added(claim) | Change::Updated { new: claim, .. }) = change else {
                return;
            };
            let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                && claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.as_deref())
                    .is_some_and(|v| !v.is_empty());
            if !bound {
                return;
            }
            let ns = claim.metadata.namespace.clone().unwrap_or_default();
            let name = claim.metadata.name.clone().unwrap_or_default();
            let pods: Vec<Arc<Pod>> = c
                .informers
                .pods
                .store()
                .state()
                .into_iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter(|p| !node_name(p).is_empty() && !is_pod_terminated(p))
                .filter(|p| {
                    let pod_name = p.metadata.name.as_deref().unwrap_or_default();
                    p.spec.as_ref().is_some_and(|s| {
                        rekube_crds::pod_refs::pod_claim_names(pod_name, s).contains(&name)
                    })
                })
                .collect();
            c.with_state(|s, l| {
                for p in &pods {
                    process_pod_volumes(p, determine_volume_action(p, true), &mut s.dsw, l);
                }
            });
        });
        c
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State, &dyn Listers) -> T) -> T {
        let listers = CacheListers(&self.informers);
        let mut s = self.state.lock().unwrap();
        f(&mut s, &listers)
    }

    /// Runs until `stop` (upstream Run).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let i = &self.informers;
        let synced = vec![
            i.pods.has_synced(),
            i.nodes.has_synced(),
            i.pvcs.has_synced(),
            i.pvs.has_synced(),
            i.csi_drivers.has_synced(),
            i.volume_attachments.has_synced(),
        ];
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wait_for_named_cache_sync(CONTROLLER_NAME, synced) => {}
        }
        tracing::info!(
            controller = CONTROLLER_NAME,
            "starting attach detach controller"
        );
        self.populate_actual_state_of_world().await;
        self.populate_desired_state_of_world();
        let mut tick = tokio::time::interval(RECONCILER_LOOP_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last_sync, mut last_populate) = (Instant::now(), Instant::now());
        let mut last_list_pods = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.reconcile_once().await;
            let now = Instant::now();
            if !self.config.disable_reconcile_sync
                && self.config.reconcile_sync_period >= Duration::from_secs(1)
                && now.duration_since(last_sync) > self.config.reconcile_sync_period
            {
                self.sync_states();
                last_sync = now;
            }
            if now.duration_since(last_populate) >= POPULATOR_LOOP_SLEEP_PERIOD {
                last_populate = now;
                let list = now.duration_since(last_list_pods) >= POPULATOR_LIST_PODS_RETRY_DURATION;
                if list {
                    last_list_pods = now;
                }
                let pods = self.informers.pods.store().state();
                self.with_state(|s, l| {
                    populator::find_and_remove_deleted_pods(&mut s.dsw, l);
                    if list {
                        populator::find_and_add_active_pods(&pods, &mut s.dsw, l);
                    }
                });
            }
        }
        tracing::info!(
            controller = CONTROLLER_NAME,
            "shutting down attach detach controller"
        );
    }

    /// upstream `populateActualStateOfWorld`: the nodes' `volumesAttached` as attached,
    /// their `volumesInUse`, the managed nodes; then every VolumeAttachment this
    /// controller takes on as (at least) uncertain on its node.
    async fn populate_actual_state_of_world(&self) {
        let nodes = self.informers.nodes.store().state();
        {
            let mut s = self.state.lock().unwrap();
            for n in &nodes {
                let name = n.metadata.name.clone().unwrap_or_default();
                for v in n
                    .status
                    .as_ref()
                    .and_then(|s| s.volumes_attached.as_ref())
                    .into_iter()
                    .flatten()
                {
                    s.asw
                        .mark_volume_as_attached(&v.name, None, &name, &v.device_path);
                }
                s.asw.set_volumes_mounted_by_node(&volumes_in_use(n), &name);
                if is_controller_managed(n) {
                    s.dsw.add_node(&name);
                }
            }
        }
        // upstream processVolumeAttachments.
        for va in self.informers.volume_attachments.store().state() {
            let Some((spec, node)) = volume_attachment_volume(&va, &CacheListers(&self.informers))
            else {
                continue;
            };
            if !self.node_is_ours(&node).await {
                continue;
            }
            let mut s = self.state.lock().unwrap();
            let name = spec.unique_name();
            if s.asw.get_attach_state(&name, &node) == AttachState::Detached {
                tracing::info!(node = %node, volume = %name, "marking volume attachment as uncertain as volume is not attached");
                s.asw.mark_volume_as_uncertain(&name, Some(&spec), &node);
            }
        }
    }

    /// Whether a node is this controller's: in the node cache, or (with
    /// `--node-selector`) gone from the apiserver too. A node another instance selects is
    /// not.
    async fn node_is_ours(&self, node: &str) -> bool {
        if self
            .informers
            .nodes
            .get(&ObjectKey::new(None, node))
            .is_some()
            || !self.config.nodes_scoped
        {
            return true;
        }
        match Api::<Node>::all(self.client.clone()).get_opt(node).await {
            Ok(None) => true,
            Ok(Some(_)) => false,
            Err(e) => {
                tracing::warn!(node, error = %e, "cannot tell whether a volume attachment's node exists; leaving it");
                false
            }
        }
    }

    /// upstream `populateDesiredStateOfWorld`: every pod's volumes, and the attached ones
    /// given their spec in the actual state.
    fn populate_desired_state_of_world(&self) {
        let pods = self.informers.pods.store().state();
        self.with_state(|s, l| {
            for pod in &pods {
                let node = node_name(pod).to_string();
                if node.is_empty() {
                    continue;
                }
                process_pod_volumes(pod, determine_volume_action(pod, true), &mut s.dsw, l);
                for v in pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.volumes.as_ref())
                    .into_iter()
                    .flatten()
                {
                    let Ok(Some(spec)) = create_volume_spec(pod, v, l) else {
                        continue;
                    };
                    if !is_attachable(&spec, l) {
                        continue;
                    }
                    let name = spec.unique_name();
                    if s.asw.get_attach_state(&name, &node) == AttachState::Attached {
                        s.asw.mark_volume_as_attached(&name, Some(&spec), &node, "");
                    }
                }
            }
        });
    }

    fn sync_states(&self) {
        let vas = &self.informers.volume_attachments;
        let mut s = self.state.lock().unwrap();
        let detached = reconciler::sync_states(&mut s.asw, &|v| {
            let Ok((name, _, _)) = detach_attachment(v) else {
                return true;
            };
            vas.get(&ObjectKey::new(None, &name))
                .is_some_and(|va| va.status.as_ref().is_some_and(|st| st.attached))
        });
        for v in detached {
            tracing::info!(volume = %v.volume_name, node = %v.node_name, "volume attachment no longer attached; marked detached");
        }
    }

    /// One pass: decide under the lock, then act.
    pub async fn reconcile_once(self: &Arc<Self>) {
        let nodes = &self.informers.nodes;
        let actions = {
            let mut s = self.state.lock().unwrap();
            let State { dsw, asw, ops } = &mut *s;
            reconciler::reconcile(
                dsw,
                asw,
                ops,
                &|n| nodes.get(&ObjectKey::new(None, n)).map(|n| node_info(&n)),
                Instant::now(),
                &self.config.reconciler,
            )
        };
        for action in actions {
            match action {
                Action::Detach {
                    volume,
                    key,
                    node_status,
                    verify_safe_to_detach,
                    force,
                } => {
                    if let Some(status) = node_status
                        && let Err(e) = self
                            .patch_node_volumes_attached(&volume.node_name, &status)
                            .await
                    {
                        tracing::warn!(error = %e, volume = %volume.volume_name, "node status update failed; not detaching yet");
                        let mut s = self.state.lock().unwrap();
                        s.asw.add_volume_to_report_as_attached(
                            &volume.volume_name,
                            &volume.node_name,
                        );
                        let _ = s.asw.set_node_status_update_needed(&volume.node_name);
                        s.ops.cancel(&key);
                        continue;
                    }
                    match force {
                        None => {
                            tracing::info!(volume = %volume.volume_name, node = %volume.node_name, "detach started")
                        }
                        Some(reconciler::ForceDetachReason::Timeout) => {
                            tracing::info!(volume = %volume.volume_name, node = %volume.node_name, duration = ?self.config.reconciler.max_wait_for_unmount, "detach started: this volume is not safe to detach, but maxWaitForUnmountDuration expired, force detaching")
                        }
                        Some(reconciler::ForceDetachReason::OutOfService) => {
                            tracing::info!(volume = %volume.volume_name, node = %volume.node_name, "detach started: node has out-of-service taint, force detaching")
                        }
                    }
                    let this = Arc::clone(self);
                    tokio::spawn(
                        async move { this.detach(volume, key, verify_safe_to_detach).await },
                    );
                }
                Action::Attach { volume, key } => {
                    tracing::info!(volume = %volume.volume_name, node = %volume.node_name, "attach started");
                    let this = Arc::clone(self);
                    tokio::spawn(async move { this.attach(volume, key).await });
                }
                Action::Event(e) => self.event(&e),
                Action::UpdateNodeStatus {
                    node,
                    volumes_attached,
                } => {
                    if let Err(e) = self
                        .patch_node_volumes_attached(&node, &volumes_attached)
                        .await
                    {
                        tracing::info!(error = %e, "node status update failed; will retry");
                        let _ = self
                            .state
                            .lock()
                            .unwrap()
                            .asw
                            .set_node_status_update_needed(&node);
                    }
                }
            }
        }
    }

    fn event(&self, e: &PodEvent) {
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.recorder
            .record(&pod_object(&e.pod), type_, e.reason, e.message.clone());
    }

    /// upstream `processNodeVolumes`/`updateNodeStatus`: a node missing from the cache or
    /// the apiserver needs no write.
    async fn patch_node_volumes_attached(
        &self,
        node: &str,
        volumes: &[super::cache::AttachedVolumeStatus],
    ) -> Result<(), Error> {
        if self
            .informers
            .nodes
            .get(&ObjectKey::new(None, node))
            .is_none()
        {
            return Ok(());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        ignore_not_found(
            api.patch_status(
                node,
                &PatchParams::default(),
                &Patch::Merge(volumes_attached_patch(volumes)),
            )
            .await,
        )
        .map_err(|source| Error::NodeStatus {
            node: node.to_string(),
            source,
        })
    }

    /// upstream GenerateAttachVolumeFunc with csiAttacher.Attach.
    async fn attach(self: Arc<Self>, v: VolumeToAttach, key: OperationKey) {
        let spec = &v.volume_spec;
        let result = self.attach_volume(spec, &v.node_name).await;
        let mut s = self.state.lock().unwrap();
        match result {
            Ok(()) => {
                s.asw
                    .mark_volume_as_attached(&v.volume_name, Some(spec), &v.node_name, "");
                s.ops.complete(&key, true, Instant::now());
                drop(s);
                tracing::info!(volume = %v.volume_name, node = %v.node_name, "AttachVolume.Attach succeeded");
                let msg = volume_message("AttachVolume.Attach succeeded", &spec.pv_name, "");
                for p in &v.scheduled_pods {
                    self.event(&PodEvent {
                        pod: p.clone(),
                        warning: false,
                        reason: SUCCESSFUL_ATTACH_VOLUME,
                        message: msg.clone(),
                    });
                }
            }
            Err(cause) => {
                s.asw
                    .mark_volume_as_uncertain(&v.volume_name, Some(spec), &v.node_name);
                s.ops.complete(&key, false, Instant::now());
                drop(s);
                let msg = volume_error("AttachVolume.Attach failed", &spec.pv_name, &cause);
                tracing::warn!(volume = %v.volume_name, node = %v.node_name, "{msg}");
                for p in &v.scheduled_pods {
                    self.event(&PodEvent {
                        pod: p.clone(),
                        warning: true,
                        reason: FAILED_ATTACH_VOLUME,
                        message: msg.clone(),
                    });
                }
            }
        }
    }

    /// csiAttacher.Attach: create the VolumeAttachment unless it exists, then wait for
    /// `status.attached` (the attacher's error ends the wait).
    async fn attach_volume(&self, spec: &VolumeSpec, node: &str) -> Result<(), String> {
        let name = attachment_name(&spec.volume_handle, &spec.driver, node);
        let vas = &self.informers.volume_attachments;
        let key = ObjectKey::new(None, &name);
        if vas.get(&key).is_none() {
            let va = new_volume_attachment(&spec.driver, &spec.volume_handle, &spec.pv_name, node);
            let api: Api<VolumeAttachment> = Api::all(self.client.clone());
            match api.create(&PostParams::default(), &va).await {
                Ok(_) => tracing::debug!(attachment = %name, "volume attachment created"),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::debug!(attachment = %name, "volume attachment already exists")
                }
                Err(e) => {
                    return Err(format!(
                        "kubernetes.io/csi: attacher.Attach failed: {}",
                        Error::VolumeAttachment {
                            name,
                            action: "creating",
                            source: e
                        }
                    ));
                }
            }
        }
        let deadline = Instant::now() + CSI_TIMEOUT;
        loop {
            // Not in the cache yet: just created.
            if let Some(va) = vas.get(&key)
                && verify_attachment_status(Some(&va))?
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(timeout_message(&spec.driver, "Attach", &spec.volume_handle));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// upstream GenerateDetachVolumeFunc with csiAttacher.Detach.
    async fn detach(self: Arc<Self>, v: AttachedVolume, key: OperationKey, verify_safe: bool) {
        let result = self.detach_volume(&v, verify_safe).await;
        let mut s = self.state.lock().unwrap();
        match result {
            Ok(()) => {
                s.asw.mark_volume_as_detached(&v.volume_name, &v.node_name);
                s.ops.complete(&key, true, Instant::now());
                tracing::info!(volume = %v.volume_name, node = %v.node_name, "DetachVolume.Detach succeeded");
            }
            Err(cause) => {
                // Attach must succeed before the volume is reported attached again.
                s.asw.mark_volume_as_uncertain(
                    &v.volume_name,
                    v.volume_spec.as_ref(),
                    &v.node_name,
                );
                s.ops.complete(&key, false, Instant::now());
                let pv = v.volume_spec.as_ref().map_or("nil", |s| s.pv_name.as_str());
                tracing::warn!(volume = %v.volume_name, node = %v.node_name, "{}", volume_error("DetachVolume.Detach failed", pv, &cause));
            }
        }
    }

    async fn detach_volume(&self, v: &AttachedVolume, verify_safe: bool) -> Result<(), String> {
        if verify_safe {
            // upstream verifyVolumeIsSafeToDetach: the node as the apiserver has it now.
            match Api::<Node>::all(self.client.clone())
                .get_opt(&v.node_name)
                .await
            {
                Ok(None) => {
                    tracing::warn!(node = %v.node_name, "node not found on the apiserver; detach skips the safe to detach check")
                }
                Ok(Some(n)) => {
                    if volumes_in_use(&n).contains(&v.volume_name) {
                        return Err(
                            "volume is still in use by node, according to Node status".into()
                        );
                    }
                }
                Err(source) => {
                    return Err(Error::NodeGet {
                        node: v.node_name.clone(),
                        source,
                    }
                    .to_string());
                }
            }
        }
        let (name, driver, handle) = detach_attachment(v).map_err(|e| e.to_string())?;
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Deleted or never there: done.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "kubernetes.io/csi: detacher.Detach failed to delete VolumeAttachment [{name}]: {e}"
                ));
            }
        }
        let key = ObjectKey::new(None, &name);
        let deadline = Instant::now() + CSI_TIMEOUT;
        loop {
            let va = self.informers.volume_attachments.get(&key);
            if verify_detachment_status(va.as_deref())? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(timeout_message(&driver, "Detach", &handle));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}

/// upstream `nodeUpdate`: the node joins the managed nodes if annotated (it never leaves
/// them but by deletion, as upstream), and its `volumesInUse` replaces the last.
fn node_update(s: &mut State, node: &Node) {
    let name = node.metadata.name.clone().unwrap_or_default();
    if is_controller_managed(node) {
        s.dsw.add_node(&name);
    }
    s.asw
        .set_volumes_mounted_by_node(&volumes_in_use(node), &name);
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::*;
    use serde_json::json;

    // run.rs spawns the controller with `Task::spawn`, which needs a Send future.
    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let _ = |c: Arc<AttachDetachController>| assert_send(&c.run(CancellationToken::new()));
    }

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn managed_nodes_and_their_health() {
        let managed = node(json!({"apiVersion": "rekube.io/v1", "kind": "Node",
            "metadata": {"name": "n", "annotations": {CONTROLLER_MANAGED_ATTACH_ANNOTATION: "true"}}}));
        assert!(is_controller_managed(&managed));
        let unmanaged = node(json!({"apiVersion": "rekube.io/v1", "kind": "Node",
            "metadata": {"name": "n", "annotations": {"other": "true"}}}));
        assert!(!is_controller_managed(&unmanaged));
        assert_eq!(node_info(&managed), NodeInfo::default());
        let n = node(
            json!({"apiVersion": "rekube.io/v1", "kind": "Node", "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            node_info(&n),
            NodeInfo {
                ready: true,
                out_of_service: true
            }
        );
        let n = node(
            json!({"apiVersion": "rekube.io/v1", "kind": "Node", "metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        assert!(!node_info(&n).ready);
    }

    /// upstream Test_ADC_VolumeAttachmentRecovery's decision: which VolumeAttachments the
    /// controller takes on at start (its PV known, CSI, attachable) and as what.
    #[test]
    fn volume_attachments_taken_on_at_start() {
        let mut l = FakeListers::default();
        l.add_volume(csi_pv("pv-1", "d", "c-uid"));
        l.add_volume(csi_pv("pv-2", "no-attach", "c-uid"));
        l.add_driver("no-attach", Some(false));
        let va = |pv: Option<&str>| {
            let mut v = new_volume_attachment("d", "h", pv.unwrap_or("x"), "node-a");
            v.spec.as_mut().unwrap().source.persistent_volume_name = pv.map(str::to_string);
            v
        };
        let (spec, node) = volume_attachment_volume(&va(Some("pv-1")), &l).unwrap();
        assert_eq!(node, "node-a");
        assert_eq!(spec.unique_name(), "kubernetes.io/csi/d^pv-1-handle");
        assert!(volume_attachment_volume(&va(Some("unknown-pv")), &l).is_none());
        assert!(volume_attachment_volume(&va(None), &l).is_none());
        assert!(volume_attachment_volume(&va(Some("pv-2")), &l).is_none());
    }

    #[test]
    fn detach_finds_the_attachment_without_a_spec() {
        let v = AttachedVolume {
            volume_name: "kubernetes.io/csi/d^h".into(),
            volume_spec: None,
            node_name: "n".into(),
            device_path: String::new(),
            mounted_by_node: false,
            detach_requested_time: None,
        };
        assert_eq!(
            detach_attachment(&v).unwrap(),
            (attachment_name("h", "d", "n"), "d".into(), "h".into())
        );
    }
}
