//! The PVC protection reconciler (upstream pvcprotection.Controller). A claim added or
//! updated is queued when it lacks the finalizer or is being deleted with it; a pod added,
//! updated or deleted queues the claims it uses when it can help remove a finalizer
//! ([`super::protection::pod_added_deleted_updated`]).
//!
//! As upstream, one main worker moves claim keys from the rate-limited queue into a
//! per-namespace store ([`PvcProcessingStore`]), and the namespace workers take a
//! namespace's claims at once and process them with one lazy live pod list
//! ([`LazyLivePodList`]): a burst of deletions in a namespace costs one LIST, not one per
//! claim. [`PvcProtectionController::process_pvc`] reads the caches, asks
//! [`super::protection::process_pvc`], lists the namespace's pods live when the cache alone
//! cannot show the claim unused, and patches `metadata.finalizers` (a JSON merge patch with
//! the cached resourceVersion, as upstream's `Update`: a conflict is retried after a
//! backoff, never a lost update).
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use rekube_crds::{PersistentVolumeClaim, Pod};
use tokio_util::sync::CancellationToken;

use super::protection::{self as core, Decision, PVC_PROTECTION_FINALIZER};
use crate::manager::client::ignore_not_found;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::workqueue::WorkQueue;

/// The controller's name: upstream's client name for it, and what `--controllers`'s
/// `pvc-protection` alias means (upstream's canonical name is
/// `persistentvolumeclaim-protection-controller`).
pub const CONTROLLER_NAME: &str = "pvc-protection-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "persistentvolumeclaim {key}: live list of pods in namespace {namespace} failed: {source}"
    )]
    LivePodList {
        key: ObjectKey,
        namespace: String,
        source: kube::Error,
    },
    #[error("persistentvolumeclaim {key}: {action} finalizer {PVC_PROTECTION_FINALIZER}: {source}")]
    Patch {
        key: ObjectKey,
        action: &'static str,
        source: kube::Error,
    },
}

/// The informers it reads: rekube PersistentVolumeClaims and Pods (both shared).
pub struct Informers {
    pub pvcs: Arc<Informer<PersistentVolumeClaim>>,
    pub pods: Arc<Informer<Pod>>,
}

/// upstream LazyLivePodList: the first successful live list of a namespace's pods, reused
/// by the other claims of the same namespace batch. A failed list is not kept: the next
/// claim of the batch lists again.
#[derive(Debug, Default)]
pub struct LazyLivePodList {
    cache: Option<Vec<Pod>>,
}

impl LazyLivePodList {
    /// The cached list, or the result of `list` (kept if it succeeded).
    pub async fn get_or_list<F, Fut, E>(&mut self, list: F) -> Result<&[Pod], E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Pod>, E>>,
    {
        if self.cache.is_none() {
            self.cache = Some(list().await?);
        }
        Ok(self.cache.as_deref().unwrap_or_default())
    }
}

/// upstream pvcProcessingStore: the claim keys waiting, grouped by namespace, and a queue
/// of the namespaces that have some.
pub struct PvcProcessingStore {
    namespace_to_pvcs: Mutex<HashMap<String, Vec<ObjectKey>>>,
    namespace_queue: Arc<WorkQueue<String>>,
}

impl PvcProcessingStore {
    pub fn new() -> Self {
        PvcProcessingStore {
            namespace_to_pvcs: Mutex::new(HashMap::new()),
            namespace_queue: WorkQueue::new(CONTROLLER_NAME),
        }
    }

    /// upstream addOrUpdate: a claim joins its namespace's batch; a new batch queues the
    /// namespace.
    pub fn add_or_update(&self, key: ObjectKey) {
        let namespace = key.namespace.clone().unwrap_or_default();
        let mut map = self.namespace_to_pvcs.lock().unwrap();
        match map.entry(namespace) {
            Entry::Occupied(mut e) => e.get_mut().push(key),
            Entry::Vacant(e) => {
                self.namespace_queue.add(e.key().clone());
                e.insert(vec![key]);
            }
        }
    }

    /// upstream flushNextPVCsByNamespace: the next namespace and its claims; `None` once
    /// the namespace queue is shut down and drained.
    pub async fn flush_next_pvcs_by_namespace(&self) -> Option<(String, Vec<ObjectKey>)> {
        let namespace = self.namespace_queue.get().await?;
        let mut map = self.namespace_to_pvcs.lock().unwrap();
        let pvcs = map.remove(&namespace).unwrap_or_default();
        self.namespace_queue.done(&namespace);
        Some((namespace, pvcs))
    }

    pub fn shut_down(&self) {
        self.namespace_queue.shut_down();
    }
}

impl Default for PvcProcessingStore {
    fn default() -> Self {
        Self::new()
    }
}

pub struct PvcProtectionController {
    client: Client,
    informers: Informers,
    queue: Arc<WorkQueue<ObjectKey>>,
    pvc_processing_store: PvcProcessingStore,
    metrics: Metrics,
}

impl PvcProtectionController {
    pub fn new(client: Client, informers: Informers, metrics: Metrics) -> Arc<Self> {
        let c = Arc::new(PvcProtectionController {
            client,
            informers,
            queue: WorkQueue::new(CONTROLLER_NAME),
            pvc_processing_store: PvcProcessingStore::new(),
            metrics,
        });
        // upstream pvcAddedUpdated (claim deletions are not watched).
        let weak = Arc::downgrade(&c);
        c.informers.pvcs.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            if let Change::Added(pvc) | Change::Updated { new: pvc, .. } = change
                && core::pvc_needs_processing(pvc)
            {
                c.enqueue(ObjectKey::of(pvc.as_ref()));
            }
        });
        // upstream podAddedDeletedUpdated.
        let weak = Arc::downgrade(&c);
        c.informers.pods.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let keys = match change {
                Change::Added(pod) => core::pod_added_deleted_updated(None, pod, false),
                Change::Updated { old, new } => {
                    core::pod_added_deleted_updated(Some(old), new, false)
                }
                Change::Deleted(pod) => core::pod_added_deleted_updated(None, pod, true),
            };
            keys.into_iter().for_each(|k| c.enqueue(k));
        });
        c
    }

    /// The claim queue, for a graceful shutdown.
    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    fn enqueue(&self, key: ObjectKey) {
        self.metrics.queue_add(CONTROLLER_NAME);
        self.queue.add(key);
    }

    /// Runs the main worker and `workers` namespace workers until `stop` (upstream Run).
    pub async fn run(self: Arc<Self>, workers: usize, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wait_for_named_cache_sync(
                CONTROLLER_NAME,
                vec![self.informers.pvcs.has_synced(), self.informers.pods.has_synced()],
            ) => {}
        }
        tracing::info!(
            controller = CONTROLLER_NAME,
            "starting PVC protection controller"
        );
        let stopper = {
            let queue = self.queue();
            tokio::spawn(async move {
                stop.cancelled().await;
                queue.shut_down();
            })
        };
        let main_worker = {
            let this = Arc::clone(&self);
            async move {
                this.run_main_worker().await;
                // The claims already moved to the store are still processed.
                this.pvc_processing_store.shut_down();
            }
        };
        let namespace_workers = (0..workers.max(1)).map(|_| {
            let this = Arc::clone(&self);
            async move { this.run_process_namespace_worker().await }
        });
        futures::future::join(main_worker, futures::future::join_all(namespace_workers)).await;
        stopper.abort();
        tracing::info!(
            controller = CONTROLLER_NAME,
            "shutting down PVC protection controller"
        );
    }

    /// upstream runMainWorker / processNextWorkItem: claim keys into the per-namespace
    /// store. A key stays "processing" in the queue until its namespace worker is done with
    /// it, so a claim is never processed twice at a time.
    async fn run_main_worker(&self) {
        while let Some(key) = self.queue.get().await {
            self.pvc_processing_store.add_or_update(key);
        }
    }

    /// upstream runProcessNamespaceWorker / processPVCsByNamespace: a namespace's claims,
    /// one lazy live pod list for them all; a failed claim is retried after its backoff,
    /// and the others go on.
    async fn run_process_namespace_worker(&self) {
        while let Some((namespace, pvcs)) = self
            .pvc_processing_store
            .flush_next_pvcs_by_namespace()
            .await
        {
            let mut lazy_live_pod_list = LazyLivePodList::default();
            for key in pvcs {
                let started = Instant::now();
                let result = self.process_pvc(&key, &mut lazy_live_pod_list).await;
                self.metrics
                    .sync(CONTROLLER_NAME, result.is_ok(), started.elapsed());
                match result {
                    Ok(()) => self.queue.forget(&key),
                    Err(e) => {
                        tracing::warn!(controller = CONTROLLER_NAME, pvc = %key, namespace = %namespace, error = %e, retries = self.queue.num_requeues(&key), "sync failed");
                        self.metrics.queue_retry(CONTROLLER_NAME);
                        self.queue.add_rate_limited(key.clone());
                    }
                }
                self.queue.done(&key);
            }
            self.metrics.queue(CONTROLLER_NAME, self.queue.len());
        }
    }

    /// upstream processPVC: adds or removes the finalizer of claim `key` as
    /// [`core::process_pvc`] decides, listing the namespace's pods live (once per batch)
    /// when the informer cache shows no pod using a claim being deleted.
    pub async fn process_pvc(
        &self,
        key: &ObjectKey,
        lazy_live_pod_list: &mut LazyLivePodList,
    ) -> Result<(), Error> {
        let Some(pvc) = self.informers.pvcs.get(key) else {
            tracing::debug!(pvc = %key, "PVC not found, ignoring");
            return Ok(());
        };
        let pods = self.informers.pods.store().state();
        let cached: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let mut decision = core::process_pvc(&pvc, &cached, None);
        if decision == Decision::AskApiServer {
            let namespace = key.namespace.clone().unwrap_or_default();
            tracing::debug!(pvc = %key, "no pod using the PVC in the informer cache; listing pods live");
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let live = lazy_live_pod_list
                .get_or_list(
                    || async move { api.list(&ListParams::default()).await.map(|l| l.items) },
                )
                .await
                .map_err(|source| Error::LivePodList {
                    key: key.clone(),
                    namespace: namespace.clone(),
                    source,
                })?;
            // With a live list the core always decides.
            decision = core::process_pvc(&pvc, &cached, Some(live));
        }
        match decision {
            Decision::Nothing | Decision::AskApiServer => Ok(()),
            Decision::KeepFinalizer { pod } => {
                tracing::info!(pvc = %key, pod = %pod, "keeping PVC because it is being used");
                Ok(())
            }
            Decision::AddFinalizer => {
                let patch = core::add_finalizer_patch(&pvc.metadata, PVC_PROTECTION_FINALIZER);
                self.patch(&pvc, key, "adding", patch).await?;
                tracing::info!(pvc = %key, "added protection finalizer to PVC");
                Ok(())
            }
            Decision::RemoveFinalizer => {
                tracing::info!(pvc = %key, "PVC is unused");
                let patch = core::remove_finalizer_patch(&pvc.metadata, PVC_PROTECTION_FINALIZER);
                self.patch(&pvc, key, "removing", patch).await?;
                tracing::info!(pvc = %key, "removed protection finalizer from PVC");
                Ok(())
            }
        }
    }

    /// Writes `patch`; a claim gone meanwhile needs nothing more.
    async fn patch(
        &self,
        pvc: &PersistentVolumeClaim,
        key: &ObjectKey,
        action: &'static str,
        patch: serde_json::Value,
    ) -> Result<(), Error> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &pvc.namespace().unwrap_or_default());
        ignore_not_found(
            api.patch(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await,
        )
        .map_err(|source| Error::Patch {
            key: key.clone(),
            action,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    // run.rs spawns the controller with `Task::spawn`, which needs a Send future.
    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let _ = |c: Arc<PvcProtectionController>| assert_send(&c.run(1, CancellationToken::new()));
    }

    // upstream's "pod list fails for one PVC" case, the mechanism: a failed live list is
    // not kept, the next claim of the batch lists again, and a successful list serves the
    // rest of the batch.
    #[tokio::test]
    async fn lazy_live_pod_list_keeps_only_a_successful_list() {
        let mut lazy = LazyLivePodList::default();
        let mut calls = 0;
        let failed: Result<&[Pod], &str> = lazy
            .get_or_list(|| {
                calls += 1;
                async { Err("forbidden") }
            })
            .await;
        assert_eq!(failed, Err("forbidden"));
        let listed = lazy
            .get_or_list(|| {
                calls += 1;
                async { Ok::<_, &str>(vec![pod("pod1")]) }
            })
            .await
            .unwrap()
            .len();
        assert_eq!(listed, 1);
        let again = lazy
            .get_or_list(|| {
                calls += 1;
                async { Ok::<_, &str>(vec![]) }
            })
            .await
            .unwrap()
            .len();
        assert_eq!((again, calls), (1, 2));
    }

    #[tokio::test]
    async fn processing_store_batches_claims_by_namespace() {
        let store = PvcProcessingStore::new();
        let key = |ns: &str, name: &str| ObjectKey::new(Some(ns), name);
        store.add_or_update(key("a", "pvc1"));
        store.add_or_update(key("b", "pvc1"));
        store.add_or_update(key("a", "pvc2"));
        assert_eq!(
            store.flush_next_pvcs_by_namespace().await,
            Some(("a".into(), vec![key("a", "pvc1"), key("a", "pvc2")]))
        );
        // A claim of a flushed namespace starts a new batch.
        store.add_or_update(key("a", "pvc3"));
        assert_eq!(
            store.flush_next_pvcs_by_namespace().await,
            Some(("b".into(), vec![key("b", "pvc1")]))
        );
        assert_eq!(
            store.flush_next_pvcs_by_namespace().await,
            Some(("a".into(), vec![key("a", "pvc3")]))
        );
        store.shut_down();
        assert_eq!(store.flush_next_pvcs_by_namespace().await, None);
    }
}
