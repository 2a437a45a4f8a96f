//! The capacity publisher's I/O shell (external-provisioner's capacity.Controller in
//! distributed mode): the node's topology segment from the driver's NodeGetInfo, the
//! owner from the pod (`--capacity-ownerref-level`), a reflector store of this
//! provisioner's CSIStorageCapacities (its namespace, its two labels) beside the
//! provisioner's StorageClass store, and a worker of its own: a reconcile (objects to
//! create, obsolete ones deleted) on every class or object change, every item's
//! GetCapacity and write on each `--capacity-poll-interval` tick, and the items of a
//! provisioned or deleted volume's segment (or of a class whose provisioning failed) at
//! once. The decisions are [`super::capacity`]'s.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::VolumeNodeAffinity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rekube_crds::{CSIStorageCapacity, StorageClass};
use serde_json::json;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::capacity::{
    self, DRIVER_NAME_LABEL, MANAGED_BY_LABEL, Plan, Publisher, Segment, Sync, WorkItem,
};
use super::controller::{ProvisionerError, TIMEOUT};
use super::{CapacityConfig, CapacityOwner};
use crate::csi::NodeGetInfoRequest;
use crate::csi::controller_client::ControllerClient;
use crate::csi::node_client::NodeClient;
use crate::sidecar::{Queue, is_status, run_worker};

/// How long an object this process created stands in for the store's view of it (the
/// watch shows it within milliseconds; one deleted before the watch saw it is made again
/// after this).
const CREATED_TTL: Duration = Duration::from_secs(10);

/// A unit of the publisher's work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Compare what exists with what should: delete the obsolete, queue the missing.
    Reconcile,
    /// GetCapacity for one item and write its object.
    Item(WorkItem),
}

type SyncResult = Result<(), String>;

pub struct CapacityController {
    client: Client,
    csi: ControllerClient<Channel>,
    driver: String,
    managed_by: String,
    namespace: String,
    owner: Option<OwnerReference>,
    segments: Vec<Segment>,
    immediate_binding: bool,
    poll_interval: Duration,
    classes: Store<StorageClass>,
    objects: Store<CSIStorageCapacity>,
    /// Objects this process created, until the store shows them.
    created: Mutex<Vec<(Instant, CSIStorageCapacity)>>,
    queue: Queue<Key>,
}

/// What [`CapacityController::start`] hands back: the controller (for the provisioner's
/// refreshes) and the future that runs its watch and worker until one stops.
pub struct Started {
    pub controller: Arc<CapacityController>,
    pub run: futures::future::BoxFuture<'static, ProvisionerError>,
}

/// The node's topology segment: NodeGetInfo's `accessible_topology` (upstream's fixed
/// segment in distributed mode).
async fn node_segment(channel: Channel, node_id: &str) -> Result<Segment, ProvisionerError> {
    let info = NodeClient::new(channel)
        .node_get_info(NodeGetInfoRequest::default())
        .await
        .map_err(|e| {
            ProvisionerError::Capacity(format!(
                "node {node_id}: NodeGetInfo: rpc error: code = {:?} desc = {}",
                e.code(),
                e.message()
            ))
        })?
        .into_inner();
    Ok(info
        .accessible_topology
        .map(|t| t.segments.into_iter().collect())
        .unwrap_or_default())
}

/// upstream owner.Lookup: the pod `pod` in `namespace` at level 0, its controlling owner
/// at 1 (from the pod's ownerReferences: no read of the owner), that one's at 2 (read
/// through discovery), and so on.
async fn lookup_owner(
    client: &Client,
    namespace: &str,
    pod: &str,
    levels: u32,
) -> Result<OwnerReference, ProvisionerError> {
    let fail = |e: String| ProvisionerError::Capacity(format!("look up owner(s) of pod: {e}"));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let found = pods
        .get(pod)
        .await
        .map_err(|e| fail(format!("get object: {e}")))?;
    let (mut api_version, mut kind, mut meta) =
        ("v1".to_string(), "Pod".to_string(), found.metadata);
    let mut levels = levels;
    loop {
        if levels == 0 {
            return Ok(OwnerReference {
                api_version,
                kind,
                name: meta.name.clone().unwrap_or_default(),
                uid: meta.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            });
        }
        let Some(controller) = capacity::controller_of(&meta) else {
            return Err(fail(format!(
                "{api_version}/{kind} {:?} in namespace {namespace:?} has no controlling owner, cannot unwind the ownership further",
                meta.name.clone().unwrap_or_default()
            )));
        };
        if levels == 1 {
            return Ok(controller);
        }
        let (group, version) = controller
            .api_version
            .split_once('/')
            .unwrap_or(("", &controller.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &controller.kind);
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| {
                fail(format!(
                    "discover {}/{}: {e}",
                    controller.api_version, controller.kind
                ))
            })?;
        let parent: DynamicObject = Api::namespaced_with(client.clone(), namespace, &resource)
            .get(&controller.name)
            .await
            .map_err(|e| fail(format!("get object: {e}")))?;
        meta = ObjectMeta {
            name: parent.metadata.name,
            uid: parent.metadata.uid,
            owner_references: parent.metadata.owner_references,
            ..Default::default()
        };
        (api_version, kind) = (controller.api_version, controller.kind);
        levels -= 1;
    }
}

impl CapacityController {
    /// Reads the segment and the owner, starts the watch of this provisioner's objects;
    /// `classes` is the provisioner's StorageClass store.
    pub async fn start(
        client: Client,
        channel: Channel,
        driver: &str,
        node_id: &str,
        config: &CapacityConfig,
        classes: Store<StorageClass>,
    ) -> Result<Started, ProvisionerError> {
        let segment = node_segment(channel.clone(), node_id).await?;
        let owner = match &config.owner {
            CapacityOwner::None => None,
            CapacityOwner::Pod { pod, level } => {
                Some(lookup_owner(&client, &config.namespace, pod, *level).await?)
            }
        };
        let managed_by = capacity::managed_by_id(node_id);
        tracing::info!(
            segment = ?segment,
            managed_by = %managed_by,
            namespace = %config.namespace,
            owner = ?owner.as_ref().map(|o| format!("{}/{} {}", o.api_version, o.kind, o.name)),
            "producing CSIStorageCapacity objects"
        );
        let (queue, work) = Queue::<Key>::new();
        let (objects, writer) = reflector::store();
        let selector = format!("{DRIVER_NAME_LABEL}={driver},{MANAGED_BY_LABEL}={managed_by}");
        let watch_queue = queue.clone();
        let watch = reflector::reflector(
            writer,
            watcher(
                Api::<CSIStorageCapacity>::namespaced(client.clone(), &config.namespace),
                watcher::Config::default().labels(&selector),
            ),
        )
        .default_backoff()
        .for_each(move |_| {
            watch_queue.add(Key::Reconcile);
            async {}
        });
        let controller = Arc::new(CapacityController {
            client,
            csi: ControllerClient::new(channel),
            driver: driver.to_string(),
            managed_by,
            namespace: config.namespace.clone(),
            owner,
            segments: vec![segment],
            immediate_binding: config.immediate_binding,
            poll_interval: config.poll_interval,
            classes,
            objects,
            created: Mutex::new(Vec::new()),
            queue,
        });
        let worker = Arc::clone(&controller).work(work);
        let run = Box::pin(async move {
            tokio::select! {
                _ = watch => ProvisionerError::WatchStopped("csistoragecapacities"),
                _ = worker => ProvisionerError::WatchStopped("the capacity work queue"),
            }
        });
        Ok(Started { controller, run })
    }

    /// A class was added, changed or deleted: the objects to compare again.
    pub fn on_class_change(&self) {
        self.queue.add(Key::Reconcile);
    }

    /// upstream refreshTopology: after a volume of this driver was provisioned or deleted
    /// in these segments, their items are refreshed now rather than at the next poll.
    pub fn refresh_topology(&self, affinity: &VolumeNodeAffinity) {
        for item in capacity::refresh_topology(&self.items(), affinity) {
            self.queue.add(Key::Item(item));
        }
    }

    /// upstream refreshSC: the class's items, after its provisioning failed.
    pub fn refresh_class(&self, class: &str) {
        for item in capacity::refresh_class(&self.items(), class) {
            self.queue.add(Key::Item(item));
        }
    }

    fn items(&self) -> BTreeSet<WorkItem> {
        let classes = self.classes.state();
        let classes: Vec<&StorageClass> = classes.iter().map(|c| c.as_ref()).collect();
        capacity::work_items(
            &classes,
            &self.segments,
            &self.driver,
            self.immediate_binding,
        )
    }

    /// The store's objects and those created here that it does not show yet.
    fn plan(&self) -> Plan {
        let mut objects: Vec<CSIStorageCapacity> =
            self.objects.state().iter().map(|o| (**o).clone()).collect();
        let mut created = self.created.lock().unwrap();
        created.retain(|(at, o)| {
            at.elapsed() < CREATED_TTL
                && !objects.iter().any(|s| s.metadata.name == o.metadata.name)
        });
        objects.extend(created.iter().map(|(_, o)| o.clone()));
        drop(created);
        capacity::plan(&self.items(), &objects, &self.driver, &self.managed_by)
    }

    async fn work(self: Arc<Self>, work: mpsc::UnboundedReceiver<Key>) {
        for ready in [
            self.classes.wait_until_ready().await,
            self.objects.wait_until_ready().await,
        ] {
            if ready.is_err() {
                return;
            }
        }
        let this = Arc::clone(&self);
        run_worker(
            work,
            self.queue.clone(),
            self.poll_interval,
            // upstream pollCapacities: every item, and the reconcile.
            move |queue| {
                queue.add(Key::Reconcile);
                for item in this.items() {
                    queue.add(Key::Item(item));
                }
            },
            |key| {
                let this = Arc::clone(&self);
                async move {
                    match key {
                        Key::Reconcile => this.reconcile().await,
                        Key::Item(item) => this.sync_item(&item).await,
                    }
                }
            },
        )
        .await;
    }

    fn api(&self) -> Api<CSIStorageCapacity> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The obsolete objects deleted (upstream deleteCapacity), the missing ones queued.
    async fn reconcile(&self) -> SyncResult {
        let plan = self.plan();
        for o in &plan.obsolete {
            let name = o.name_any();
            match self.api().delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(capacity = %name, class = %o.storage_class_name, "deleted obsolete CSIStorageCapacity")
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(format!("delete CSIStorageCapacity {name}: {e}")),
            }
            self.created
                .lock()
                .unwrap()
                .retain(|(_, c)| c.metadata.name != o.metadata.name);
        }
        for (item, existing) in plan.items {
            if existing.is_none() {
                self.queue.add(Key::Item(item));
            }
        }
        Ok(())
    }

    /// upstream syncCapacity: GetCapacity for the item, then its object created, updated
    /// or left as it is.
    async fn sync_item(&self, item: &WorkItem) -> SyncResult {
        let plan = self.plan();
        let Some(existing) = plan.items.get(item) else {
            return Ok(()); // obsolete meanwhile
        };
        let Some(class) = self
            .classes
            .get(&reflector::ObjectRef::new(&item.storage_class_name))
        else {
            return Ok(());
        };
        let mut call = tonic::Request::new(capacity::get_capacity_request(item, &class));
        call.set_timeout(TIMEOUT);
        let answer = self
            .csi
            .clone()
            .get_capacity(call)
            .await
            .map_err(|e| {
                format!(
                    "CSI GetCapacity for class {} in {:?}: rpc error: code = {:?} desc = {}",
                    item.storage_class_name,
                    item.segment,
                    e.code(),
                    e.message()
                )
            })?
            .into_inner();
        let publisher = Publisher {
            driver: &self.driver,
            managed_by: &self.managed_by,
            namespace: &self.namespace,
            owner: self.owner.as_ref(),
        };
        match capacity::sync_capacity(item, existing.as_ref(), &answer, &publisher) {
            Sync::Unchanged => Ok(()),
            Sync::Create(object) => {
                let created = self
                    .api()
                    .create(&PostParams::default(), object.as_ref())
                    .await
                    .map_err(|e| {
                        format!(
                            "create CSIStorageCapacity for class {}: {e}",
                            item.storage_class_name
                        )
                    })?;
                tracing::info!(capacity = %created.name_any(), class = %item.storage_class_name, bytes = answer.available_capacity, "created CSIStorageCapacity");
                self.created.lock().unwrap().push((Instant::now(), created));
                Ok(())
            }
            Sync::Update {
                name,
                capacity,
                maximum_volume_size,
                owner_references,
            } => {
                // A merge patch of the sizes (and owners): never a conflict with a cache
                // behind the object's latest write.
                let patch = json!({
                    "metadata": {"ownerReferences": owner_references},
                    "capacity": capacity,
                    "maximumVolumeSize": maximum_volume_size,
                });
                match self
                    .api()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(updated) => {
                        tracing::debug!(capacity = %name, class = %item.storage_class_name, bytes = answer.available_capacity, "updated CSIStorageCapacity");
                        let mut created = self.created.lock().unwrap();
                        for (_, c) in created.iter_mut() {
                            if c.metadata.name.as_deref() == Some(name.as_str()) {
                                *c = updated.clone();
                            }
                        }
                        Ok(())
                    }
                    // Deleted meanwhile: made again.
                    Err(e) if is_status(&e, 404) => {
                        self.created
                            .lock()
                            .unwrap()
                            .retain(|(_, c)| c.metadata.name.as_deref() != Some(name.as_str()));
                        self.queue.add(Key::Item(item.clone()));
                        Ok(())
                    }
                    Err(e) => Err(format!("update CSIStorageCapacity {name}: {e}")),
                }
            }
        }
    }
}
