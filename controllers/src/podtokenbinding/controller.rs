//! The pod token binding reconciler. A pod added, or updated so that it starts needing a
//! binding ([`super::binding::pod_changed_needs_sync`]: scheduled, say), queues itself.
//! `sync_pod` reads the pod from the cache and the Secret of its binding name from the
//! apiserver (a GET: the controller has no Secret informer, which would need list and
//! watch of every Secret), asks [`super::binding::sync_pod`] what to do, and creates the
//! Secret when it is missing. A pod that keeps needing a binding is synced again every
//! `--pod-token-binding-resync-period`, so a binding deleted while its pod lives is made
//! again within that period. A Secret of the name that is not the pod's is a
//! FailedTokenBinding event on the pod and a retry after a backoff.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use rekube_crds::Pod;
use rekube_crds::token_binding::pod_token_binding_secret_name;

use super::binding::{self as core, Action, CONTROLLER_NAME, EVENT_SOURCE, FAILED_TOKEN_BINDING};
use crate::manager::events::{EventRecorder, EventType};
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod {key}: reading its token binding secret {secret}: {source}")]
    Get {
        key: ObjectKey,
        secret: String,
        source: kube::Error,
    },
    #[error("pod {key}: creating its token binding secret {secret}: {source}")]
    Create {
        key: ObjectKey,
        secret: String,
        source: kube::Error,
    },
    #[error("pod {key}: {message}")]
    Conflict { key: ObjectKey, message: String },
}

pub struct PodTokenBindingController {
    client: Client,
    pods: Arc<Informer<Pod>>,
    resync_period: Duration,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
}

impl PodTokenBindingController {
    pub fn new(
        client: Client,
        pods: &Arc<Informer<Pod>>,
        resync_period: Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(PodTokenBindingController {
            recorder: EventRecorder::new(client.clone(), EVENT_SOURCE),
            client,
            pods: Arc::clone(pods),
            resync_period,
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
        });
        let weak = Arc::downgrade(&c);
        c.pods.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let queue = match change {
                Change::Added(pod) => core::pod_changed_needs_sync(None, pod).then_some(pod),
                Change::Updated { old, new } => {
                    core::pod_changed_needs_sync(Some(old), new).then_some(new)
                }
                // The garbage collector deletes the pod's Secret.
                Change::Deleted(_) => None,
            };
            if let Some(pod) = queue {
                c.metrics.queue_add(CONTROLLER_NAME);
                c.queue.add(ObjectKey::of(pod.as_ref()));
            }
        });
        c
    }

    /// The pod queue, for a graceful shutdown.
    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    /// Runs `workers` workers until the queue shuts down.
    pub async fn run(self: Arc<Self>, workers: usize) {
        wait_for_named_cache_sync(CONTROLLER_NAME, vec![self.pods.has_synced()]).await;
        tracing::info!(
            controller = CONTROLLER_NAME,
            "starting pod token binding controller"
        );
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_pod(&key).await }
        })
        .await;
        tracing::info!(
            controller = CONTROLLER_NAME,
            "shutting down pod token binding controller"
        );
    }

    /// Makes pod `key`'s token binding Secret if it needs one and it is missing; when to
    /// look again.
    pub async fn sync_pod(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(pod) = self.pods.get(key).filter(|p| core::pod_needs_binding(p)) else {
            return Ok(None);
        };
        let namespace = key.namespace.clone().unwrap_or_default();
        let name = pod_token_binding_secret_name(&pod);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
            key: key.clone(),
            secret: name.clone(),
            source,
        })?;
        match core::sync_pod(Some(&pod), existing.as_ref()) {
            Action::Ignore => Ok(None),
            Action::InSync => Ok(Some(self.resync_period)),
            Action::Create(secret) => match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(pod = %key, secret = %name, "created the pod's token binding secret");
                    Ok(Some(self.resync_period))
                }
                // Made meanwhile (by a former leader, say): judged at the next sync.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some(Duration::ZERO)),
                Err(source) => {
                    let message =
                        format!("creating token binding secret {namespace}/{name}: {source}");
                    self.event(&pod, message);
                    Err(Error::Create {
                        key: key.clone(),
                        secret: name,
                        source,
                    })
                }
            },
            Action::Conflict(message) => {
                self.event(&pod, message.clone());
                Err(Error::Conflict {
                    key: key.clone(),
                    message,
                })
            }
        }
    }

    fn event(&self, pod: &Pod, message: String) {
        self.recorder.record(
            &pod.object_ref(&()),
            EventType::Warning,
            FAILED_TOKEN_BINDING,
            message,
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
        let _ = |c: Arc<PodTokenBindingController>| assert_send(&c.run(1));
    }
}
