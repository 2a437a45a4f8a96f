//! The scheduling queue's bookkeeping of unschedulable pods (upstream
//! pkg/scheduler/backend/queue/scheduling_queue.go, `unschedulablePods` and
//! `moveRequestCycle`): a pod that fits nowhere waits here, not in the active queue, until
//! a cluster event (a node added or changed, a pod deleted, a volume changed) moves every
//! waiting pod back, or until it has waited `podMaxInUnschedulablePodsDuration`. A move
//! that happens while a pod is being scheduled counts for that pod too, so no event is
//! missed between the attempt and the parking.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::manager::informer::ObjectKey;

#[derive(Default)]
struct State {
    /// Parked pods and when they were parked.
    parked: HashMap<ObjectKey, Instant>,
    /// Incremented by every move request (upstream moveRequestCycle).
    move_cycle: u64,
}

#[derive(Default)]
pub struct UnschedulablePods {
    state: Mutex<State>,
}

/// What to do with a pod the scheduler could not place.
#[derive(Debug, PartialEq, Eq)]
pub enum Parking {
    /// Wait for a cluster event.
    Parked,
    /// A cluster event happened during the attempt: try again after a backoff.
    RetryAfterBackoff,
}

impl UnschedulablePods {
    /// The current move cycle; take it when a scheduling attempt starts.
    pub fn cycle(&self) -> u64 {
        self.state.lock().unwrap().move_cycle
    }

    /// Parks `key` after an attempt that started at move cycle `attempt_cycle`.
    pub fn park(&self, key: ObjectKey, attempt_cycle: u64, now: Instant) -> Parking {
        let mut s = self.state.lock().unwrap();
        if s.move_cycle != attempt_cycle {
            return Parking::RetryAfterBackoff;
        }
        s.parked.insert(key, now);
        Parking::Parked
    }

    /// Forgets `key` (scheduled, bound elsewhere or deleted).
    pub fn remove(&self, key: &ObjectKey) -> bool {
        self.state.lock().unwrap().parked.remove(key).is_some()
    }

    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.state.lock().unwrap().parked.contains_key(key)
    }

    /// upstream MoveAllToActiveOrBackoffQueue: every parked pod, to be queued again.
    pub fn move_all(&self) -> Vec<ObjectKey> {
        let mut s = self.state.lock().unwrap();
        s.move_cycle += 1;
        s.parked.drain().map(|(k, _)| k).collect()
    }

    /// upstream flushUnschedulablePodsLeftover: the pods parked for longer than `max`.
    pub fn flush_leftover(&self, max: Duration, now: Instant) -> Vec<ObjectKey> {
        let mut s = self.state.lock().unwrap();
        let old: Vec<ObjectKey> = s
            .parked
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > max)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            s.parked.remove(k);
        }
        old
    }

    pub fn len(&self) -> usize {
        self.state.lock().unwrap().parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> ObjectKey {
        ObjectKey::new(Some("ns"), n)
    }

    #[test]
    fn a_move_during_the_attempt_is_not_missed() {
        let q = UnschedulablePods::default();
        let now = Instant::now();
        let cycle = q.cycle();
        assert_eq!(q.park(key("a"), cycle, now), Parking::Parked);
        let started = q.cycle();
        // A node is added while "b" is being scheduled.
        assert_eq!(q.move_all(), vec![key("a")]);
        assert_eq!(q.park(key("b"), started, now), Parking::RetryAfterBackoff);
        assert!(q.is_empty());
    }

    #[test]
    fn leftovers_are_flushed_after_the_maximum_wait() {
        let q = UnschedulablePods::default();
        let t0 = Instant::now();
        q.park(key("old"), q.cycle(), t0);
        q.park(key("new"), q.cycle(), t0 + Duration::from_secs(200));
        let max = Duration::from_secs(300);
        assert!(
            q.flush_leftover(max, t0 + Duration::from_secs(250))
                .is_empty()
        );
        assert_eq!(
            q.flush_leftover(max, t0 + Duration::from_secs(301)),
            vec![key("old")]
        );
        assert!(q.contains(&key("new")));
        assert!(q.remove(&key("new")));
        assert!(!q.remove(&key("new")));
    }
}
