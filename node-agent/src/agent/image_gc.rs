//! The agent's image garbage collection loop (upstream kubelet `StartGarbageCollection`
//! with `ImageGCPeriod`): every period, one [`garbage_collect`] pass over the store,
//! keeping the images of every container the agent holds. A pass that cannot free
//! enough is the Node's `FreeDiskSpaceFailed` warning, as upstream.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use rekube_crds::events::{EventRecorder, EventType};
use tokio::sync::watch;

use super::sync_pod::RealSyncer;
use crate::image::Store;
use crate::image::digest::Digest;
use crate::image::gc::{GcError, GcPolicy, GcReport, Statvfs, garbage_collect};

/// Upstream `events.FreeDiskSpaceFailed`.
pub const FREE_DISK_SPACE_FAILED: &str = "FreeDiskSpaceFailed";

/// One pass, keeping the images `in_use`.
pub async fn collect_once(
    store: &Store,
    policy: GcPolicy,
    in_use: HashSet<Digest>,
) -> Result<GcReport, GcError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        garbage_collect(
            &store,
            &Statvfs(store.root().to_path_buf()),
            &policy,
            &in_use,
            SystemTime::now(),
        )
    })
    .await
    .expect("the image gc task panicked")
}

/// Runs a pass every `period` until `stop` turns true.
pub async fn run(
    syncer: Arc<RealSyncer>,
    policy: GcPolicy,
    period: Duration,
    recorder: EventRecorder,
    node: ObjectReference,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        let in_use = syncer.images_in_use().await;
        match collect_once(syncer.image_store(), policy, in_use).await {
            Ok(report) if !report.removed.is_empty() => tracing::info!(
                removed = report.removed.len(),
                freed = report.freed,
                "image garbage collection"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "image garbage collection failed");
                recorder.record(
                    &node,
                    EventType::Warning,
                    FREE_DISK_SPACE_FAILED,
                    e.to_string(),
                );
            }
        }
    }
}
