//! The EndpointSlice reconciler (upstream pkg/controller/endpointslice
//! endpointslice_controller.go): one work-queue key per Service. A Service added, updated
//! or deleted queues itself; a pod added or deleted queues the Services selecting it, a
//! pod updated those selecting it before or after when the change shows in slices
//! (readiness, IPs, deletion, labels; [`crate::endpoint::endpoints::services_to_update`]);
//! a slice of this controller changed or deleted by someone else queues its Service
//! (after at least a second, upstream's endpointSliceChangeMinSyncDelay). `sync_service`
//! reads the caches, asks [`super::reconciler`] what to write, and writes it.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use rekube_crds::{EndpointSlice, Node, Pod, Service};

use super::reconciler::{self, Reconciler};
use super::tracker::EndpointSliceTracker;
use super::utils::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME, service_controller_key};
use crate::endpoint::endpoints as endpoints_core;
use crate::endpoint::trigger_time::TriggerTimeTracker;
use crate::manager::events::{EventRecorder, EventType};
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

pub use super::utils::CONTROLLER_NAME;

/// The name in `--controllers` (upstream's `endpointslice-controller`).
pub const NAME: &str = "endpointslice-controller";

/// upstream endpointSliceChangeMinSyncDelay.
const ENDPOINT_SLICE_CHANGE_MIN_SYNC_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("endpointslices of service {key}: {action} {slice}: {source}")]
    Api {
        key: ObjectKey,
        action: &'static str,
        slice: String,
        source: kube::Error,
    },
    /// upstream's NewStaleInformerCache: retried once the informer has caught up.
    #[error("endpointslice informer cache is out of date for service {key}")]
    StaleCache { key: ObjectKey },
    #[error("service {key}: {}", join(.errors))]
    Reconcile {
        key: ObjectKey,
        errors: Vec<reconciler::Error>,
    },
}

fn join(errors: &[reconciler::Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The label selector of the slices informer: only this controller's slices.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}")
}

/// The informers it reads: rekube Services, Pods, Nodes (shared) and this controller's
/// EndpointSlices.
pub struct Informers {
    pub services: Arc<Informer<Service>>,
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub endpoint_slices: Arc<Informer<EndpointSlice>>,
}

pub struct EndpointSliceController {
    client: Client,
    informers: Informers,
    queue: Arc<WorkQueue<ObjectKey>>,
    reconciler: Reconciler,
    trigger_time_tracker: TriggerTimeTracker,
    tracker: EndpointSliceTracker,
    batch_period: Duration,
    batched: Mutex<HashSet<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
}

impl EndpointSliceController {
    pub fn new(
        client: Client,
        informers: Informers,
        max_endpoints_per_slice: usize,
        batch_period: Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(EndpointSliceController {
            recorder: EventRecorder::new(client.clone(), NAME),
            client,
            informers,
            queue: WorkQueue::new(NAME),
            reconciler: Reconciler {
                max_endpoints_per_slice,
            },
            trigger_time_tracker: TriggerTimeTracker::new(),
            tracker: EndpointSliceTracker::default(),
            batch_period,
            batched: Mutex::new(HashSet::new()),
            metrics,
        });
        // upstream onServiceUpdate / onServiceDelete.
        let weak = Arc::downgrade(&c);
        c.informers.services.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let (Change::Added(s) | Change::Updated { new: s, .. } | Change::Deleted(s)) = change;
            c.enqueue(ObjectKey::of(s.as_ref()), Duration::ZERO);
        });
        // upstream onPodUpdate (adds and deletes too) and syncPod.
        let weak = Arc::downgrade(&c);
        c.informers.pods.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let services = c.informers.services.store().state();
            let services: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
            let (namespace, names) = endpoints_core::services_for_pod_change(&services, &change);
            for name in names {
                c.enqueue_batched(ObjectKey::new(Some(&namespace), &name));
            }
        });
        // upstream onEndpointSliceAdd / Update / Delete.
        let weak = Arc::downgrade(&c);
        c.informers.endpoint_slices.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            for slice in c.tracker.slices_to_queue(&change) {
                c.queue_service_for_endpoint_slice(slice);
            }
        });
        c
    }

    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    fn enqueue(&self, key: ObjectKey, after: Duration) {
        self.metrics.queue_add(NAME);
        self.queue.add_after(key, after);
    }

    fn queue_service_for_endpoint_slice(&self, slice: &EndpointSlice) {
        if let Some((namespace, name)) = service_controller_key(slice) {
            self.enqueue(
                ObjectKey::new(Some(&namespace), &name),
                self.batch_period.max(ENDPOINT_SLICE_CHANGE_MIN_SYNC_DELAY),
            );
        }
    }

    /// upstream `serviceQueue.AddAfter(key, endpointUpdatesBatchPeriod)`: a Service
    /// already waiting keeps its earlier time.
    fn enqueue_batched(self: &Arc<Self>, key: ObjectKey) {
        if self.batch_period.is_zero() {
            return self.enqueue(key, Duration::ZERO);
        }
        if !self.batched.lock().unwrap().insert(key.clone()) {
            return;
        }
        let (weak, period) = (Arc::downgrade(self), self.batch_period);
        tokio::spawn(async move {
            tokio::time::sleep(period).await;
            if let Some(c) = weak.upgrade() {
                c.batched.lock().unwrap().remove(&key);
                c.enqueue(key, Duration::ZERO);
            }
        });
    }

    pub async fn run(self: Arc<Self>, workers: usize) {
        let i = &self.informers;
        wait_for_named_cache_sync(
            NAME,
            vec![
                i.pods.has_synced(),
                i.services.has_synced(),
                i.nodes.has_synced(),
                i.endpoint_slices.has_synced(),
            ],
        )
        .await;
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_service(&key).await }
        })
        .await
    }

    /// Brings the slices of Service `key` in line with the Service and its pods.
    pub async fn sync_service(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let Some(service) = self.informers.services.get(key) else {
            // The Service is gone; the garbage collector deletes its slices through
            // their owner reference.
            self.trigger_time_tracker
                .delete_service(&namespace, &key.name);
            self.tracker.delete_service(&namespace, &key.name);
            return Ok(None);
        };
        if !endpoints_core::receives_endpoints(&service) {
            return Ok(None);
        }
        let all_pods = self.informers.pods.store().state();
        let all_pods: Vec<&Pod> = all_pods.iter().map(|p| p.as_ref()).collect();
        let pods = endpoints_core::pods_for_service(&service, &all_pods);
        let all_slices = self.informers.endpoint_slices.store().state();
        // upstream dropEndpointSlicesPendingDeletion.
        let slices: Vec<&EndpointSlice> = all_slices
            .iter()
            .map(|s| s.as_ref())
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(&namespace)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_SERVICE_NAME))
                        == Some(&key.name)
                    && s.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if self.tracker.stale_slices(&namespace, &key.name, &slices) {
            return Err(Error::StaleCache { key: key.clone() });
        }
        let trigger_time = self
            .trigger_time_tracker
            .compute_endpoint_last_change_trigger_time(&namespace, &service, &pods);
        let nodes = &self.informers.nodes;
        let plan = self.reconciler.reconcile(
            &service,
            &pods,
            &slices,
            &|name| nodes.get(&ObjectKey::new(None, name)),
            trigger_time,
        );
        if let Err(e) = self.write(key, &plan).await {
            self.recorder.record(
                &service.object_ref(&()),
                EventType::Warning,
                "FailedToUpdateEndpointSlices",
                format!("Error updating Endpoint Slices for Service {key}: {e}"),
            );
            return Err(e);
        }
        if !plan.errors.is_empty() {
            return Err(Error::Reconcile {
                key: key.clone(),
                errors: plan.errors,
            });
        }
        Ok(None)
    }

    /// upstream finalize's writes: creates, updates (with the cached resourceVersion),
    /// deletes, each recorded in the tracker.
    async fn write(&self, key: &ObjectKey, plan: &reconciler::Plan) -> Result<(), Error> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &namespace);
        let err = |action: &'static str, slice: &EndpointSlice| {
            let slice = slice
                .metadata
                .name
                .clone()
                .or_else(|| slice.metadata.generate_name.clone())
                .unwrap_or_default();
            move |source| Error::Api {
                key: key.clone(),
                action,
                slice,
                source,
            }
        };
        for slice in &plan.create {
            match api.create(&PostParams::default(), slice).await {
                Ok(created) => {
                    tracing::debug!(service = %key, slice = created.metadata.name.as_deref().unwrap_or_default(), "created endpointslice");
                    self.tracker.update(&created);
                }
                // The namespace is being deleted: creating again will not help.
                Err(kube::Error::Api(s))
                    if s.code == 403 && s.message.contains("because it is being terminated") =>
                {
                    return Ok(());
                }
                Err(e) => return Err(err("creating", slice)(e)),
            }
        }
        for slice in &plan.update {
            let name = slice.metadata.name.clone().unwrap_or_default();
            let updated = api
                .replace(&name, &PostParams::default(), slice)
                .await
                .map_err(err("updating", slice))?;
            self.tracker.update(&updated);
        }
        for slice in &plan.delete {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(err("deleting", slice)(e)),
            }
            self.tracker.expect_deletion(slice);
        }
        Ok(())
    }
}
