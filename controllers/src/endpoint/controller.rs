//! The Endpoints reconciler (upstream EndpointController): one work-queue key per Service.
//! A Service added, updated or deleted queues itself; a pod added or deleted queues the
//! Services selecting it, a pod updated those selecting it before or after when the change
//! shows in Endpoints (readiness, IPs, deletion, labels); an Endpoints deleted queues its
//! Service. `sync_service` reads the caches, asks [`super::endpoints`] what the Endpoints
//! should be, and creates, updates (a PUT with the cached resourceVersion) or deletes it;
//! nothing is written when nothing changed.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use rekube_crds::{Endpoints, Pod, Service};

use super::endpoints::{self as core, Sync};
use super::trigger_time::TriggerTimeTracker;
use crate::manager::events::{EventRecorder, EventType};
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

pub use super::endpoints::CONTROLLER_NAME;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("endpoints {key}: {action}: {source}")]
    Api {
        key: ObjectKey,
        action: &'static str,
        source: kube::Error,
    },
    /// upstream's staleEndpointsTracker: the cache still holds the Endpoints this
    /// controller replaced; retried once the informer has caught up.
    #[error(
        "endpoints informer cache is out of date, resource version {resource_version} already processed for endpoints {key}"
    )]
    StaleCache {
        key: ObjectKey,
        resource_version: String,
    },
}

/// upstream staleEndpointsTracker: the resourceVersion each Endpoints had when this
/// controller last replaced it. The cache showing that version again means the update has
/// not reached it yet, and syncing against it would undo or repeat the update.
#[derive(Debug, Default)]
pub struct StaleEndpointsTracker {
    endpoints: Mutex<HashMap<ObjectKey, String>>,
}

impl StaleEndpointsTracker {
    /// Records that `endpoints`, at its resourceVersion, was replaced.
    pub fn stale(&self, endpoints: &Endpoints) {
        if let Some(rv) = &endpoints.metadata.resource_version {
            self.endpoints
                .lock()
                .unwrap()
                .insert(ObjectKey::of(endpoints), rv.clone());
        }
    }

    /// Whether the cached `endpoints` is one this controller already replaced.
    pub fn is_stale(&self, endpoints: &Endpoints) -> bool {
        self.endpoints
            .lock()
            .unwrap()
            .get(&ObjectKey::of(endpoints))
            .is_some_and(|rv| endpoints.metadata.resource_version.as_ref() == Some(rv))
    }

    pub fn delete(&self, key: &ObjectKey) {
        self.endpoints.lock().unwrap().remove(key);
    }
}

/// The informers it reads: rekube Services, Pods (shared) and Endpoints.
pub struct Informers {
    pub services: Arc<Informer<Service>>,
    pub pods: Arc<Informer<Pod>>,
    pub endpoints: Arc<Informer<Endpoints>>,
}

pub struct EndpointController {
    client: Client,
    informers: Informers,
    queue: Arc<WorkQueue<ObjectKey>>,
    trigger_time_tracker: TriggerTimeTracker,
    stale_endpoints_tracker: StaleEndpointsTracker,
    /// `--endpoint-updates-batch-period`: pod changes wait this long before their
    /// Services sync, so that a burst makes one write.
    batch_period: Duration,
    /// The Services waiting out the batch period: one timer per Service, however many pod
    /// changes come meanwhile (client-go's delaying queue keeps one entry per key).
    batched: Mutex<HashSet<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
}

fn service_key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(Some(namespace), name)
}

impl EndpointController {
    pub fn new(
        client: Client,
        informers: Informers,
        batch_period: Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(EndpointController {
            recorder: EventRecorder::new(client.clone(), CONTROLLER_NAME),
            client,
            informers,
            queue: WorkQueue::new(CONTROLLER_NAME),
            trigger_time_tracker: TriggerTimeTracker::new(),
            stale_endpoints_tracker: StaleEndpointsTracker::default(),
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
        // upstream addPod / updatePod / deletePod.
        let weak = Arc::downgrade(&c);
        c.informers.pods.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let services = c.informers.services.store().state();
            let services: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
            let (namespace, names) = core::services_for_pod_change(&services, &change);
            for name in names {
                c.enqueue_batched(service_key(&namespace, &name));
            }
        });
        // upstream onEndpointsDelete: an Endpoints deleted by someone else is recreated.
        let weak = Arc::downgrade(&c);
        c.informers.endpoints.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            if let Change::Deleted(e) = change {
                c.enqueue(ObjectKey::of(e.as_ref()), Duration::ZERO);
            }
        });
        c
    }

    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    fn enqueue(&self, key: ObjectKey, after: Duration) {
        self.metrics.queue_add(CONTROLLER_NAME);
        self.queue.add_after(key, after);
    }

    /// Queues a Service after the batch period (upstream `queue.AddAfter(key,
    /// endpointUpdatesBatchPeriod)`): a Service already waiting keeps its earlier time.
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
            CONTROLLER_NAME,
            vec![
                i.pods.has_synced(),
                i.services.has_synced(),
                i.endpoints.has_synced(),
            ],
        )
        .await;
        self.check_leftover_endpoints();
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_service(&key).await }
        })
        .await
    }

    /// upstream checkLeftoverEndpoints: every Endpoints' Service synced once at start.
    fn check_leftover_endpoints(&self) {
        let all = self.informers.endpoints.store().state();
        let refs: Vec<&Endpoints> = all.iter().map(|e| e.as_ref()).collect();
        for (namespace, name) in core::leftover_endpoints_to_check(&refs) {
            self.enqueue(service_key(&namespace, &name), Duration::ZERO);
        }
    }

    /// Brings the Endpoints of Service `key` in line with the Service and its pods.
    pub async fn sync_service(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &namespace);
        let api_err = |action: &'static str| {
            move |source| Error::Api {
                key: key.clone(),
                action,
                source,
            }
        };
        let Some(service) = self.informers.services.get(key) else {
            // The Service is gone: so are its Endpoints. (Missed while the controller was
            // down, they are found by check_leftover_endpoints.)
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(endpoints = %key, "deleted the endpoints of a deleted service")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err("deleting")(e)),
            }
            self.trigger_time_tracker
                .delete_service(&namespace, &key.name);
            self.stale_endpoints_tracker.delete(key);
            return Ok(None);
        };
        if !core::receives_endpoints(&service) {
            return Ok(None);
        }
        let all_pods = self.informers.pods.store().state();
        let all_pods: Vec<&Pod> = all_pods.iter().map(|p| p.as_ref()).collect();
        let pods = core::pods_for_service(&service, &all_pods);
        // Computed on every sync, writing or not, so the tracker stays current.
        let trigger_time = self
            .trigger_time_tracker
            .compute_endpoint_last_change_trigger_time(&namespace, &service, &pods);
        let current = self.informers.endpoints.get(key);
        if let Some(c) = &current
            && self.stale_endpoints_tracker.is_stale(c)
        {
            return Err(Error::StaleCache {
                key: key.clone(),
                resource_version: c.metadata.resource_version.clone().unwrap_or_default(),
            });
        }
        match core::sync_endpoints(&service, &pods, current.as_deref(), trigger_time) {
            Sync::Skip | Sync::UpToDate => Ok(None),
            Sync::Create(new) => match api.create(&PostParams::default(), &new).await {
                Ok(_) => {
                    tracing::info!(endpoints = %key, "created endpoints");
                    Ok(None)
                }
                // The namespace is being deleted: creating again will not help.
                Err(kube::Error::Api(s))
                    if s.code == 403 && s.message.contains("because it is being terminated") =>
                {
                    Ok(None)
                }
                Err(e) => {
                    self.recorder.record(
                        &new.object_ref(&()),
                        EventType::Warning,
                        "FailedToCreateEndpoint",
                        format!("Failed to create endpoint for service {key}: {e}"),
                    );
                    Err(api_err("creating")(e))
                }
            },
            Sync::Update(new) => match api.replace(&key.name, &PostParams::default(), &new).await {
                Ok(updated) => {
                    tracing::debug!(endpoints = %key, "updated endpoints");
                    if let Some(c) = &current
                        && updated.metadata.resource_version != c.metadata.resource_version
                    {
                        self.stale_endpoints_tracker.stale(c);
                    }
                    Ok(None)
                }
                Err(e) => {
                    self.recorder.record(
                        &new.object_ref(&()),
                        EventType::Warning,
                        "FailedToUpdateEndpoint",
                        format!("Failed to update endpoint {key}: {e}"),
                    );
                    Err(api_err("updating")(e))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ep(rv: &str) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("foo".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            subsets: None,
        }
    }

    // upstream TestMultiplePodChanges' mechanism: an Endpoints replaced at "1" is stale
    // while the cache still shows "1", current once it shows the update.
    #[test]
    fn stale_endpoints_tracker() {
        let t = StaleEndpointsTracker::default();
        assert!(!t.is_stale(&ep("1")));
        t.stale(&ep("1"));
        assert!(t.is_stale(&ep("1")));
        assert!(!t.is_stale(&ep("2")));
        t.delete(&ObjectKey::new(Some("default"), "foo"));
        assert!(!t.is_stale(&ep("1")));
    }
}
