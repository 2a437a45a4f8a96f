//! The PV protection reconciler (upstream pvprotection.Controller): one work-queue key per
//! PersistentVolume. A volume added or updated is queued when it lacks the finalizer or is
//! being deleted with it; `process_pv` reads the cache, asks
//! [`super::protection::process_pv`], and patches `metadata.finalizers` (a JSON merge patch
//! with the cached resourceVersion, as upstream's `Update`: a conflict is retried after a
//! backoff, never a lost update).
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use rekube_crds::PersistentVolume;
use tokio_util::sync::CancellationToken;

use super::protection::{self as core, Decision, PV_PROTECTION_FINALIZER};
use crate::manager::client::ignore_not_found;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

/// The controller's name: upstream's client name for it, and what `--controllers`'s
/// `pv-protection` alias means (upstream's canonical name is
/// `persistentvolume-protection-controller`).
pub const CONTROLLER_NAME: &str = "pv-protection-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("persistentvolume {key}: {action} finalizer {PV_PROTECTION_FINALIZER}: {source}")]
    Patch {
        key: ObjectKey,
        action: &'static str,
        source: kube::Error,
    },
}

/// The informers it reads: rekube PersistentVolumes (shared).
pub struct Informers {
    pub pvs: Arc<Informer<PersistentVolume>>,
}

pub struct PvProtectionController {
    client: Client,
    informers: Informers,
    queue: Arc<WorkQueue<ObjectKey>>,
    metrics: Metrics,
}

impl PvProtectionController {
    pub fn new(client: Client, informers: Informers, metrics: Metrics) -> Arc<Self> {
        let c = Arc::new(PvProtectionController {
            client,
            informers,
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
        });
        // upstream pvAddedUpdated (volume deletions are not watched).
        let weak = Arc::downgrade(&c);
        c.informers.pvs.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            if let Change::Added(pv) | Change::Updated { new: pv, .. } = change
                && core::pv_needs_processing(pv)
            {
                c.metrics.queue_add(CONTROLLER_NAME);
                c.queue.add(ObjectKey::of(pv.as_ref()));
            }
        });
        c
    }

    /// The volume queue, for a graceful shutdown.
    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    /// Runs `workers` workers until `stop` (upstream Run).
    pub async fn run(self: Arc<Self>, workers: usize, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wait_for_named_cache_sync(CONTROLLER_NAME, vec![self.informers.pvs.has_synced()]) => {}
        }
        tracing::info!(
            controller = CONTROLLER_NAME,
            "starting PV protection controller"
        );
        let stopper = {
            let queue = self.queue();
            tokio::spawn(async move {
                stop.cancelled().await;
                queue.shut_down();
            })
        };
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.process_pv(&key).await.map(|()| None::<Duration>) }
        })
        .await;
        stopper.abort();
        tracing::info!(
            controller = CONTROLLER_NAME,
            "shutting down PV protection controller"
        );
    }

    /// upstream processPV: adds or removes the finalizer of volume `key` as
    /// [`core::process_pv`] decides.
    pub async fn process_pv(&self, key: &ObjectKey) -> Result<(), Error> {
        let Some(pv) = self.informers.pvs.get(key) else {
            tracing::debug!(pv = %key, "PV not found, ignoring");
            return Ok(());
        };
        match core::process_pv(&pv) {
            Decision::Nothing => Ok(()),
            Decision::KeepFinalizer => {
                tracing::debug!(pv = %key, "keeping PV because it is being used");
                Ok(())
            }
            Decision::AddFinalizer => {
                self.patch(&pv, key, "adding", core::add_finalizer_patch(&pv))
                    .await?;
                tracing::info!(pv = %key, "added protection finalizer to PV");
                Ok(())
            }
            Decision::RemoveFinalizer => {
                self.patch(&pv, key, "removing", core::remove_finalizer_patch(&pv))
                    .await?;
                tracing::info!(pv = %key, "removed protection finalizer from PV");
                Ok(())
            }
        }
    }

    /// Writes `patch`; a volume gone meanwhile needs nothing more.
    async fn patch(
        &self,
        pv: &PersistentVolume,
        key: &ObjectKey,
        action: &'static str,
        patch: serde_json::Value,
    ) -> Result<(), Error> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        ignore_not_found(
            api.patch(
                &pv.name_any(),
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

    // run.rs spawns the controller with `Task::spawn`, which needs a Send future.
    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let _ = |c: Arc<PvProtectionController>| assert_send(&c.run(1, CancellationToken::new()));
    }
}
