//! The worker loop every controller runs: pop a key, sync it, and requeue it after a
//! backoff on error or after the delay the sync asked for.
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::informer::ObjectKey;
use super::metrics::Metrics;
use super::workqueue::WorkQueue;

/// Runs `workers` workers over `queue` until the queue shuts down. `sync` returns how long
/// to wait before syncing the key again, if it wants that (zero: again soon, rate-limited).
pub async fn run_workers<F, Fut, E>(
    queue: Arc<WorkQueue<ObjectKey>>,
    workers: usize,
    metrics: Metrics,
    sync: F,
) where
    F: Fn(ObjectKey) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Duration>, E>> + Send,
    E: std::fmt::Display,
{
    let sync = Arc::new(sync);
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (queue, metrics, sync) = (Arc::clone(&queue), metrics.clone(), Arc::clone(&sync));
        tasks.push(async move {
            while let Some(key) = queue.get().await {
                let started = Instant::now();
                // Every log line of the sync carries the controller and the object key.
                let span = tracing::info_span!("sync", controller = queue.name(), key = %key);
                let result = sync(key.clone()).instrument(span).await;
                metrics.sync(queue.name(), result.is_ok(), started.elapsed());
                match result {
                    Ok(requeue) => {
                        queue.forget(&key);
                        match requeue {
                            // "Now", rate-limited (upstream enqueueRateLimited).
                            Some(after) if after.is_zero() => queue.add_rate_limited(key.clone()),
                            Some(after) => queue.add_after(key.clone(), after),
                            None => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(controller = queue.name(), key = %key, error = %e, retries = queue.num_requeues(&key), "sync failed");
                        metrics.queue_retry(queue.name());
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
                metrics.queue(queue.name(), queue.len());
            }
        });
    }
    futures::future::join_all(tasks).await;
}
