//! The ephemeral volume reconciler (upstream ephemeral.ephemeralController). A pod added
//! or updated queues itself ([`super::ephemeral::pod_needs_sync`]); a claim deleted queues
//! the pods using it ([`super::ephemeral::pods_for_deleted_claim`]). `sync_handler` reads
//! the pod and its claims from the caches, asks [`super::ephemeral::sync_handler`] which
//! claims to create, and creates them in order; the first failure (a claim that is not
//! the pod's, a create refused) is recorded as a FailedBinding event on the pod and the
//! pod is synced again after a backoff.
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use rekube_crds::{PersistentVolumeClaim, Pod};

use super::ephemeral::{
    self as core, CONTROLLER_NAME, EVENT_SOURCE, FAILED_BINDING, Step, create_failed_message,
    event_message,
};
use crate::manager::events::{EventRecorder, EventType};
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// upstream `VolumeIsForPod`'s error: a claim of the volume's name the pod does not
    /// control.
    #[error("pod {key}, ephemeral volume {volume}: {message}")]
    NotForPod {
        key: ObjectKey,
        volume: String,
        message: String,
    },
    #[error("pod {key}, ephemeral volume {volume}: create PVC {claim}: {source}")]
    CreateClaim {
        key: ObjectKey,
        volume: String,
        claim: String,
        source: kube::Error,
    },
}

/// The informers it reads: rekube Pods and PersistentVolumeClaims (both shared).
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub pvcs: Arc<Informer<PersistentVolumeClaim>>,
}

pub struct EphemeralVolumeController {
    client: Client,
    informers: Informers,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
}

impl EphemeralVolumeController {
    pub fn new(client: Client, informers: Informers, metrics: Metrics) -> Arc<Self> {
        let c = Arc::new(EphemeralVolumeController {
            recorder: EventRecorder::new(client.clone(), EVENT_SOURCE),
            client,
            informers,
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
        });
        // upstream enqueuePod (on updates too: see the module doc).
        let weak = Arc::downgrade(&c);
        c.informers.pods.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            if let Change::Added(pod) | Change::Updated { new: pod, .. } = change
                && core::pod_needs_sync(pod)
            {
                c.enqueue(ObjectKey::of(pod.as_ref()));
            }
        });
        // upstream onPVCDelete.
        let weak = Arc::downgrade(&c);
        c.informers.pvcs.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            if let Change::Deleted(pvc) = change {
                let pods = c.informers.pods.store().state();
                let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
                for key in core::pods_for_deleted_claim(pvc, &pods) {
                    c.enqueue(key);
                }
            }
        });
        c
    }

    /// The pod queue, for a graceful shutdown.
    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    fn enqueue(&self, key: ObjectKey) {
        self.metrics.queue_add(CONTROLLER_NAME);
        self.queue.add(key);
    }

    /// Runs `workers` workers until the queue shuts down (upstream Run).
    pub async fn run(self: Arc<Self>, workers: usize) {
        let i = &self.informers;
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![i.pods.has_synced(), i.pvcs.has_synced()],
        )
        .await;
        tracing::info!(
            controller = CONTROLLER_NAME,
            "starting ephemeral volume controller"
        );
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_handler(&key).await.map(|()| None::<Duration>) }
        })
        .await;
        tracing::info!(
            controller = CONTROLLER_NAME,
            "shutting down ephemeral volume controller"
        );
    }

    /// upstream syncHandler: creates the missing claims of pod `key`'s ephemeral volumes.
    pub async fn sync_handler(&self, key: &ObjectKey) -> Result<(), Error> {
        let pod = self.informers.pods.get(key);
        if pod.is_none() {
            tracing::debug!(pod = %key, "nothing to do for pod, it is gone");
        }
        let namespace = key.namespace.clone().unwrap_or_default();
        let steps = core::sync_handler(pod.as_deref(), |name| {
            self.informers
                .pvcs
                .get(&ObjectKey::new(Some(&namespace), name))
        });
        let Some(pod) = pod else { return Ok(()) };
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        for step in steps {
            match step {
                Step::Create { volume, claim } => {
                    let name = claim.metadata.name.clone().unwrap_or_default();
                    match api.create(&PostParams::default(), &claim).await {
                        Ok(_) => {
                            tracing::info!(pod = %key, volume = %volume, pvc = %name, "created PVC for ephemeral volume")
                        }
                        Err(source) => {
                            let cause = create_failed_message(&name, &source.to_string());
                            self.event(&pod, &volume, &cause);
                            return Err(Error::CreateClaim {
                                key: key.clone(),
                                volume,
                                claim: name,
                                source,
                            });
                        }
                    }
                }
                Step::NotForPod { volume, message } => {
                    self.event(&pod, &volume, &message);
                    return Err(Error::NotForPod {
                        key: key.clone(),
                        volume,
                        message,
                    });
                }
            }
        }
        Ok(())
    }

    /// upstream's `recorder.Event(pod, Warning, FailedBinding, "ephemeral volume %s: %v")`.
    fn event(&self, pod: &Pod, volume: &str, cause: &str) {
        self.recorder.record(
            &pod.object_ref(&()),
            EventType::Warning,
            FAILED_BINDING,
            event_message(volume, cause),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // run.rs spawns the controller with `Task::spawn`, which needs a Send future.
    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let _ = |c: Arc<EphemeralVolumeController>| assert_send(&c.run(1));
    }
}
