//! A rate-limited work queue with client-go's semantics (k8s.io/client-go/util/workqueue):
//! a key is queued at most once; a key being processed and added again is queued once it
//! is done, so one key is never synced by two workers at a time; failed keys come back after
//! a per-key exponential backoff (5 ms doubling to 1000 s, as upstream's default controller
//! rate limiter), and `forget` resets it after a success.
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Upstream's DefaultItemBasedRateLimiter bounds.
pub const BASE_DELAY: Duration = Duration::from_millis(5);
pub const MAX_DELAY: Duration = Duration::from_secs(1000);

struct State<K> {
    queue: VecDeque<K>,
    /// Keys waiting to be processed (in `queue`, or re-added while processing).
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    shutting_down: bool,
}

/// A work queue of object keys, shared by the handlers that add and the workers that pop.
pub struct WorkQueue<K> {
    name: &'static str,
    state: Mutex<State<K>>,
    notify: Notify,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(WorkQueue {
            name,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                shutting_down: false,
            }),
            notify: Notify::new(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Queues `key` unless it is queued already; a key being processed is queued when done.
    pub fn add(&self, key: K) {
        let mut s = self.state.lock().unwrap();
        if s.shutting_down || !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Queues `key` after its next backoff delay (5 ms × 2^failures, at most 1000 s).
    pub fn add_rate_limited(self: &Arc<Self>, key: K) {
        let delay = {
            let mut s = self.state.lock().unwrap();
            let n = s.failures.entry(key.clone()).or_insert(0);
            let delay = backoff_delay(*n);
            *n += 1;
            delay
        };
        self.add_after(key, delay);
    }

    /// Clears `key`'s backoff after a successful sync.
    pub fn forget(&self, key: &K) {
        self.state.lock().unwrap().failures.remove(key);
    }

    /// How many times `key` has failed in a row.
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.state
            .lock()
            .unwrap()
            .failures
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// The next key to process; `None` once the queue shuts down. Call [`Self::done`] after.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock().unwrap();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    return Some(key);
                }
                if s.shutting_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let mut s = self.state.lock().unwrap();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Keys waiting to be processed.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys: workers' `get` returns `None` once the queue is drained of
    /// in-flight work.
    pub fn shut_down(&self) {
        self.state.lock().unwrap().shutting_down = true;
        self.notify.notify_waiters();
    }
}

/// The delay after `failures` consecutive failures (upstream ItemExponentialFailureRateLimiter).
pub fn backoff_delay(failures: u32) -> Duration {
    let factor = 2u64.saturating_pow(failures.min(40));
    let nanos = (BASE_DELAY.as_nanos() as u64).saturating_mul(factor);
    Duration::from_nanos(nanos).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5ms_to_1000s() {
        assert_eq!(backoff_delay(0), Duration::from_millis(5));
        assert_eq!(backoff_delay(1), Duration::from_millis(10));
        assert_eq!(backoff_delay(10), Duration::from_millis(5120));
        assert_eq!(backoff_delay(17), Duration::from_millis(655_360));
        assert_eq!(backoff_delay(18), MAX_DELAY);
        assert_eq!(backoff_delay(1000), MAX_DELAY);
    }

    #[tokio::test]
    async fn a_key_is_queued_once_and_never_processed_twice_at_a_time() {
        let q = WorkQueue::new("test");
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.get().await.unwrap();
        assert_eq!(first, "a");
        // Added while processing: not handed out until done.
        q.add("a");
        assert_eq!(q.get().await.unwrap(), "b");
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await.unwrap(), "a");
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_keys_come_back_after_their_backoff_and_forget_resets_it() {
        let q = WorkQueue::new("test");
        q.add_rate_limited("a");
        q.add_rate_limited("a");
        assert_eq!(q.num_requeues(&"a"), 2);
        tokio::time::sleep(Duration::from_millis(4)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(q.get().await.unwrap(), "a");
        q.forget(&"a");
        assert_eq!(q.num_requeues(&"a"), 0);
    }

    #[tokio::test]
    async fn shut_down_releases_waiting_workers() {
        let q: Arc<WorkQueue<&str>> = WorkQueue::new("test");
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.get().await })
        };
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
