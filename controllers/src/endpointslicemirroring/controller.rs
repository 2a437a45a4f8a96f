//! The EndpointSlice mirroring reconciler (upstream
//! pkg/controller/endpointslicemirroring endpointslicemirroring_controller.go): one
//! work-queue key per Endpoints. Endpoints added, updated or deleted queue themselves
//! (unless labelled skip-mirror or a leader-election lock); a selectorless Service added
//! or deleted, or one whose selector appeared or went, queues its Endpoints; a mirrored
//! slice changed or deleted by someone else queues its Endpoints. `sync_endpoints` mirrors
//! the Endpoints of a selectorless Service into slices ([`super::reconciler`]), and
//! deletes the mirrored slices of Endpoints that are gone, not to be mirrored, or whose
//! Service is gone or has a selector.
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use rekube_crds::{EndpointSlice, Endpoints, Service};

use super::reconciler::{CONTROLLER_NAME, MirrorPlan, Reconciler, should_mirror};
use crate::endpointslice::tracker::EndpointSliceTracker;
use crate::endpointslice::utils::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME, service_controller_key};
use crate::manager::events::{EventRecorder, EventType};
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

/// The name in `--controllers` (upstream's `endpointslice-mirroring-controller`).
pub const NAME: &str = "endpointslice-mirroring-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mirrored endpointslices of endpoints {key}: {action} {slice}: {source}")]
    Api {
        key: ObjectKey,
        action: &'static str,
        slice: String,
        source: kube::Error,
    },
    /// upstream's NewStaleInformerCache: retried once the informer has caught up.
    #[error("endpointslice informer cache is out of date for endpoints {key}")]
    StaleCache { key: ObjectKey },
}

/// The label selector of the mirrored slices' informer.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}")
}

/// The informers it reads: rekube Services and Endpoints (shared) and the slices it
/// mirrored.
pub struct Informers {
    pub services: Arc<Informer<Service>>,
    pub endpoints: Arc<Informer<Endpoints>>,
    pub endpoint_slices: Arc<Informer<EndpointSlice>>,
}

pub struct EndpointSliceMirroringController {
    client: Client,
    informers: Informers,
    queue: Arc<WorkQueue<ObjectKey>>,
    reconciler: Reconciler,
    tracker: EndpointSliceTracker,
    batch_period: Duration,
    recorder: EventRecorder,
    metrics: Metrics,
}

fn has_selector(s: &Service) -> bool {
    s.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some()
}

impl EndpointSliceMirroringController {
    pub fn new(
        client: Client,
        informers: Informers,
        max_endpoints_per_subset: usize,
        batch_period: Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(EndpointSliceMirroringController {
            recorder: EventRecorder::new(client.clone(), NAME),
            client,
            informers,
            queue: WorkQueue::new(NAME),
            reconciler: Reconciler {
                max_endpoints_per_subset,
            },
            tracker: EndpointSliceTracker::default(),
            batch_period,
            metrics,
        });
        // upstream onServiceAdd / onServiceUpdate / onServiceDelete.
        let weak = Arc::downgrade(&c);
        c.informers.services.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let queue = match &change {
                Change::Added(s) | Change::Deleted(s) => !has_selector(s),
                Change::Updated { old, new } => has_selector(old) != has_selector(new),
            };
            let (Change::Added(s) | Change::Updated { new: s, .. } | Change::Deleted(s)) = change;
            if queue {
                c.enqueue(ObjectKey::of(s.as_ref()), Duration::ZERO);
            }
        });
        // upstream onEndpointsAdd / Update / Delete.
        let weak = Arc::downgrade(&c);
        c.informers.endpoints.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let (queue, e) = match change {
                Change::Added(e) | Change::Deleted(e) => (should_mirror(e), e),
                Change::Updated { old, new } => (should_mirror(old) || should_mirror(new), new),
            };
            if queue {
                c.enqueue(ObjectKey::of(e.as_ref()), Duration::ZERO);
            }
        });
        // upstream onEndpointSliceAdd / Update / Delete (the informer sees only mirrored
        // slices: one whose managed-by label changed arrives as a deletion).
        let weak = Arc::downgrade(&c);
        c.informers.endpoint_slices.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            for slice in c.tracker.slices_to_queue(&change) {
                c.queue_endpoints_for_endpoint_slice(slice);
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

    fn queue_endpoints_for_endpoint_slice(&self, slice: &EndpointSlice) {
        if let Some((namespace, name)) = service_controller_key(slice) {
            self.enqueue(ObjectKey::new(Some(&namespace), &name), self.batch_period);
        }
    }

    pub async fn run(self: Arc<Self>, workers: usize) {
        let i = &self.informers;
        wait_for_named_cache_sync(
            NAME,
            vec![
                i.services.has_synced(),
                i.endpoints.has_synced(),
                i.endpoint_slices.has_synced(),
            ],
        )
        .await;
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_endpoints(&key).await }
        })
        .await
    }

    /// upstream endpointSlicesMirroredForService.
    fn mirrored_slices(&self, key: &ObjectKey) -> Vec<Arc<EndpointSlice>> {
        self.informers
            .endpoint_slices
            .store()
            .state()
            .into_iter()
            .filter(|s| {
                s.metadata.namespace == key.namespace
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_SERVICE_NAME))
                        == Some(&key.name)
            })
            .collect()
    }

    /// Mirrors Endpoints `key` into slices, or deletes its mirrored slices.
    pub async fn sync_endpoints(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let endpoints = self.informers.endpoints.get(key);
        let service = self.informers.services.get(key);
        let mirror = match (&endpoints, &service) {
            (Some(e), Some(s)) => should_mirror(e) && !has_selector(s),
            _ => false,
        };
        let slices = self.mirrored_slices(key);
        if !mirror {
            // upstream deleteMirroredSlices: gone, not to be mirrored, no Service, or a
            // Service with a selector (whose slices are the EndpointSlice controller's).
            self.tracker.delete_service(&namespace, &key.name);
            let plan = MirrorPlan {
                delete: slices.iter().map(|s| s.as_ref().clone()).collect(),
                ..Default::default()
            };
            return self.write(key, &plan).await.map(|_| None);
        }
        let endpoints = endpoints.expect("checked above");
        let refs: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
        if self.tracker.stale_slices(&namespace, &key.name, &refs) {
            return Err(Error::StaleCache { key: key.clone() });
        }
        let plan = self.reconciler.reconcile(&endpoints, &refs);
        let reference = endpoints.object_ref(&());
        if plan.invalid_addresses > 0 {
            self.recorder.record(
                &reference,
                EventType::Warning,
                "InvalidIPAddress",
                format!(
                    "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
                    plan.invalid_addresses
                ),
            );
        }
        if plan.addresses_skipped > plan.invalid_addresses {
            self.recorder.record(
                &reference,
                EventType::Warning,
                "TooManyAddressesToMirror",
                format!(
                    "A max of {} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
                    self.reconciler.max_endpoints_per_subset, plan.addresses_skipped
                ),
            );
        }
        for s in &plan.unchanged {
            if !self.tracker.has(s) {
                self.tracker.update(s);
            }
        }
        if let Err(e) = self.write(key, &plan).await {
            self.recorder.record(
                &reference,
                EventType::Warning,
                "FailedToUpdateEndpointSlices",
                format!("Error updating Endpoint Slices for Endpoints {key}: {e}"),
            );
            return Err(e);
        }
        Ok(None)
    }

    /// upstream finalize's writes.
    async fn write(&self, key: &ObjectKey, plan: &MirrorPlan) -> Result<(), Error> {
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
                Ok(created) => self.tracker.update(&created),
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
