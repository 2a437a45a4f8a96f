//! upstream's operation executor bookkeeping (pkg/volume/util/nestedpendingoperations
//! with goroutinemap/exponentialbackoff), as the attach/detach controller uses it: one
//! operation at a time per volume (per volume and node when the volume may be attached to
//! several nodes), and after a failure none for that key until its backoff (500 ms,
//! doubling, at most 2 m 2 s) has passed.
use std::time::{Duration, Instant};

/// upstream exponentialbackoff's initialDurationBeforeRetry.
pub const INITIAL_DURATION_BEFORE_RETRY: Duration = Duration::from_millis(500);
/// upstream exponentialbackoff's maxDurationBeforeRetry.
pub const MAX_DURATION_BEFORE_RETRY: Duration = Duration::from_secs(122);

/// An operation's key: the volume, and the node unless the volume is exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationKey {
    pub volume: String,
    pub node: Option<String>,
}

#[derive(Clone, Debug)]
struct Operation {
    key: OperationKey,
    pending: bool,
    last_error: Option<Instant>,
    duration_before_retry: Duration,
}

impl Operation {
    fn in_backoff(&self, now: Instant) -> bool {
        self.last_error
            .is_some_and(|t| now.saturating_duration_since(t) <= self.duration_before_retry)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Operations {
    operations: Vec<Operation>,
}

impl Operations {
    /// upstream `isOperationExists`: keys match when the volume is the same and either
    /// node is empty or both are equal; a pending one first, else an exact match.
    fn find(&self, key: &OperationKey) -> Option<usize> {
        let mut found = None;
        for (i, op) in self.operations.iter().enumerate() {
            let node_match = op.key.node.is_none() || key.node.is_none() || op.key.node == key.node;
            if op.key.volume != key.volume || !node_match {
                continue;
            }
            if op.pending {
                return Some(i);
            }
            if found.is_none() || op.key.node == key.node {
                found = Some(i);
            }
        }
        found
    }

    /// upstream `IsOperationPending`.
    pub fn is_operation_pending(&self, key: &OperationKey) -> bool {
        self.find(key).is_some_and(|i| self.operations[i].pending)
    }

    /// upstream `IsOperationSafeToRetry`: none running and no backoff in force.
    pub fn is_operation_safe_to_retry(&self, key: &OperationKey, now: Instant) -> bool {
        match self.find(key) {
            None => true,
            Some(i) => {
                let op = &self.operations[i];
                !op.pending && !op.in_backoff(now)
            }
        }
    }

    /// upstream `Run`: starts the operation, unless one is running or in backoff (false).
    pub fn start(&mut self, key: &OperationKey, now: Instant) -> bool {
        match self.find(key) {
            Some(i) => {
                let op = &mut self.operations[i];
                if op.pending || op.in_backoff(now) {
                    return false;
                }
                op.pending = true;
                op.key = key.clone();
                true
            }
            None => {
                self.operations.push(Operation {
                    key: key.clone(),
                    pending: true,
                    last_error: None,
                    duration_before_retry: Duration::ZERO,
                });
                true
            }
        }
    }

    /// An operation started by [`Self::start`] that the caller did not run after all.
    pub fn cancel(&mut self, key: &OperationKey) {
        if let Some(i) = self.find(key) {
            if self.operations[i].last_error.is_none() {
                self.operations.remove(i);
            } else {
                self.operations[i].pending = false;
            }
        }
    }

    /// upstream `operationComplete`: success forgets the key, failure backs it off.
    pub fn complete(&mut self, key: &OperationKey, ok: bool, now: Instant) {
        let Some(i) = self
            .operations
            .iter()
            .position(|op| op.key == *key && op.pending)
        else {
            return;
        };
        if ok {
            self.operations.remove(i);
            return;
        }
        let op = &mut self.operations[i];
        op.pending = false;
        op.last_error = Some(now);
        op.duration_before_retry = if op.duration_before_retry.is_zero() {
            INITIAL_DURATION_BEFORE_RETRY
        } else {
            (op.duration_before_retry * 2).min(MAX_DURATION_BEFORE_RETRY)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(volume: &str, node: Option<&str>) -> OperationKey {
        OperationKey {
            volume: volume.into(),
            node: node.map(str::to_string),
        }
    }

    #[test]
    fn one_operation_per_volume_or_per_volume_and_node() {
        let now = Instant::now();
        let mut ops = Operations::default();
        assert!(ops.start(&key("v", None), now));
        assert!(!ops.start(&key("v", None), now));
        assert!(
            !ops.start(&key("v", Some("n1")), now),
            "an exclusive key covers every node"
        );
        assert!(ops.is_operation_pending(&key("v", Some("n1"))));
        assert!(ops.start(&key("w", Some("n1")), now));
        assert!(
            ops.start(&key("w", Some("n2")), now),
            "other node, shared volume"
        );
        assert!(!ops.start(&key("w", Some("n2")), now));
        ops.complete(&key("v", None), true, now);
        assert!(!ops.is_operation_pending(&key("v", None)));
        assert!(ops.is_operation_safe_to_retry(&key("v", None), now));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_maximum() {
        let mut now = Instant::now();
        let mut ops = Operations::default();
        let k = key("v", None);
        let mut waits = Vec::new();
        for _ in 0..11 {
            assert!(ops.start(&k, now));
            ops.complete(&k, false, now);
            assert!(!ops.is_operation_safe_to_retry(&k, now));
            assert!(!ops.start(&k, now), "in backoff");
            let mut wait = Duration::from_millis(250);
            while !ops.is_operation_safe_to_retry(&k, now + wait) {
                wait += Duration::from_millis(250);
            }
            waits.push(wait);
            now += wait;
        }
        assert_eq!(waits[0], Duration::from_millis(750));
        assert_eq!(waits[1], Duration::from_millis(1250));
        assert_eq!(*waits.last().unwrap(), Duration::from_millis(122_250));
        // Success forgets the backoff.
        assert!(ops.start(&k, now));
        ops.complete(&k, true, now);
        assert!(ops.is_operation_safe_to_retry(&k, now));
    }

    #[test]
    fn a_cancelled_start_leaves_no_trace() {
        let now = Instant::now();
        let mut ops = Operations::default();
        let k = key("v", None);
        assert!(ops.start(&k, now));
        ops.cancel(&k);
        assert!(ops.is_operation_safe_to_retry(&k, now));
        assert!(ops.start(&k, now));
        ops.complete(&k, false, now);
        let later = now + Duration::from_secs(1);
        assert!(ops.start(&k, later));
        ops.cancel(&k);
        assert!(ops.is_operation_safe_to_retry(&k, later));
    }
}
