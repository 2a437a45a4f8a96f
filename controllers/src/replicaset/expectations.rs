//! Controller expectations (upstream: `pkg/controller/controller_utils.go`
//! `ControllerExpectations` wrapped in `UIDTrackingControllerExpectations`).
//!
//! A controller records how many creations it expects to observe and which pods (by
//! `namespace/name` key) it expects to see deleted; it does not act on an object again until
//! those are observed or [`EXPECTATIONS_TIMEOUT`] has passed, so a resync racing the informer
//! never creates or deletes twice.
//!
//! Time is a [`std::time::Instant`] passed in by the caller: the TTL is a monotonic interval
//! (as upstream's `clock.Since`), immune to wall-clock jumps, and tests can move it freely.
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long expectations are waited for before the controller syncs anyway (upstream:
/// `controller.ExpectationsTimeout`).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Pending creations and deletions of one controller (upstream: `ControlleeExpectations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlleeExpectations {
    pub add: i64,
    pub del: i64,
    /// When the expectations were set.
    pub timestamp: Instant,
}

impl ControlleeExpectations {
    /// Whether every expected creation and deletion was observed (upstream: `Fulfilled`).
    pub fn fulfilled(&self) -> bool {
        self.add <= 0 && self.del <= 0
    }

    /// Whether the expectations are older than the timeout (upstream: `isExpired`).
    pub fn is_expired(&self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.timestamp) > timeout
    }
}

#[derive(Debug, Default)]
struct Inner {
    counts: HashMap<String, ControlleeExpectations>,
    /// upstream's uidStore: the pod keys whose deletion is expected, per controller key.
    uids: HashMap<String, HashSet<String>>,
}

/// Thread-safe expectations keyed by controller key (`namespace/name`) (upstream:
/// `UIDTrackingControllerExpectations` over `ControllerExpectations`).
#[derive(Debug)]
pub struct Expectations {
    inner: Mutex<Inner>,
    timeout: Duration,
}

impl Default for Expectations {
    fn default() -> Self {
        Self::new()
    }
}

impl Expectations {
    /// Empty expectations with the upstream timeout (upstream:
    /// `NewUIDTrackingControllerExpectations(NewControllerExpectations())`).
    pub fn new() -> Self {
        Self::with_timeout(EXPECTATIONS_TIMEOUT)
    }

    /// Empty expectations expiring after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        Expectations {
            inner: Mutex::new(Inner::default()),
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent even if a holder panicked: recover the guard.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pending creations and deletions of the controller (upstream: `GetExpectations`).
    pub fn get_expectations(&self, key: &str) -> Option<ControlleeExpectations> {
        self.lock().counts.get(key).copied()
    }

    /// The pod keys whose deletion is still expected (upstream: `GetUIDs`).
    pub fn get_uids(&self, key: &str) -> Option<HashSet<String>> {
        self.lock().uids.get(key).cloned()
    }

    /// Whether the controller may sync: no expectations recorded, all of them observed, or
    /// recorded longer ago than the timeout (upstream: `SatisfiedExpectations`).
    pub fn satisfied_expectations(&self, key: &str, now: Instant) -> bool {
        match self.lock().counts.get(key) {
            Some(exp) => exp.fulfilled() || exp.is_expired(now, self.timeout),
            None => true,
        }
    }

    /// Replaces the controller's expectations (upstream: `SetExpectations`).
    pub fn set_expectations(&self, key: &str, add: i64, del: i64, now: Instant) {
        self.lock().counts.insert(
            key.to_string(),
            ControlleeExpectations {
                add,
                del,
                timestamp: now,
            },
        );
    }

    /// Expects `adds` creations, forgetting previous counts (upstream: `ExpectCreations`).
    pub fn expect_creations(&self, key: &str, adds: usize, now: Instant) {
        self.set_expectations(key, i64::try_from(adds).unwrap_or(i64::MAX), 0, now);
    }

    /// Expects the deletion of the given pod keys, replacing any previous set (upstream:
    /// `UIDTrackingControllerExpectations.ExpectDeletions`).
    pub fn expect_deletions(&self, key: &str, pod_keys: &[String], now: Instant) {
        let set: HashSet<String> = pod_keys.iter().cloned().collect();
        let dels = i64::try_from(set.len()).unwrap_or(i64::MAX);
        let mut inner = self.lock();
        inner.uids.insert(key.to_string(), set);
        inner.counts.insert(
            key.to_string(),
            ControlleeExpectations {
                add: 0,
                del: dels,
                timestamp: now,
            },
        );
    }

    /// Lowers the counts of existing expectations (upstream: `LowerExpectations`).
    pub fn lower_expectations(&self, key: &str, add: i64, del: i64) {
        if let Some(exp) = self.lock().counts.get_mut(key) {
            exp.add -= add;
            exp.del -= del;
        }
    }

    /// Raises the counts of existing expectations (upstream: `RaiseExpectations`).
    pub fn raise_expectations(&self, key: &str, add: i64, del: i64) {
        if let Some(exp) = self.lock().counts.get_mut(key) {
            exp.add += add;
            exp.del += del;
        }
    }

    /// One expected creation was observed, or will never happen (upstream: `CreationObserved`).
    pub fn creation_observed(&self, key: &str) {
        self.lower_expectations(key, 1, 0);
    }

    /// The deletion of `pod_key` was observed; counted once, and only if it was expected
    /// (upstream: `UIDTrackingControllerExpectations.DeletionObserved`).
    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        let mut inner = self.lock();
        let expected = inner
            .uids
            .get_mut(key)
            .is_some_and(|uids| uids.remove(pod_key));
        if expected && let Some(exp) = inner.counts.get_mut(key) {
            exp.del -= 1;
        }
    }

    /// Forgets the controller (upstream: `UIDTrackingControllerExpectations.DeleteExpectations`).
    pub fn delete_expectations(&self, key: &str) {
        let mut inner = self.lock();
        inner.counts.remove(key);
        inner.uids.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    // Port of controller_utils_test.go TestControllerExpectations.
    #[test]
    fn controller_expectations() {
        let ttl = Duration::from_secs(30);
        let e = Arc::new(Expectations::with_timeout(ttl));
        let start = Instant::now();
        let (adds, dels) = (10, 30);
        let key = "default/foobar";
        e.set_expectations(key, adds, dels, start);
        std::thread::scope(|s| {
            for _ in 0..adds + 1 {
                let e = e.clone();
                s.spawn(move || e.creation_observed(key));
            }
        });
        // There are still delete expectations.
        assert!(!e.satisfied_expectations(key, start));
        std::thread::scope(|s| {
            for _ in 0..dels + 1 {
                let e = e.clone();
                s.spawn(move || e.lower_expectations(key, 0, 1));
            }
        });

        // "Expectations have been surpassed"
        let exp = e.get_expectations(key).expect("expectations exist");
        assert_eq!((exp.add, exp.del), (-1, -1));
        assert!(e.satisfied_expectations(key, start));

        // "Old expectations are cleared because of ttl"
        e.set_expectations(key, 1, 2, start);
        let exp = e.get_expectations(key).expect("expectations exist");
        assert_eq!((exp.add, exp.del), (1, 2));
        assert!(!e.satisfied_expectations(key, start));
        assert!(!e.satisfied_expectations(key, start + ttl));
        assert!(e.satisfied_expectations(key, start + ttl + Duration::from_nanos(1)));
    }

    // Port of controller_utils_test.go TestUIDExpectations.
    #[test]
    fn uid_expectations() {
        let e = Expectations::new();
        let now = Instant::now();
        for replicas in [2, 1, 0, 5] {
            let key = format!("default/rc-{replicas}");
            let pod_keys: Vec<String> = (0..5)
                .map(|i| format!("default/pod{i}-rc-{replicas}"))
                .collect();
            e.expect_deletions(&key, &pod_keys, now);
            assert!(
                !e.satisfied_expectations(&key, now),
                "{key} satisfied before deletion"
            );
            for p in &pod_keys {
                e.deletion_observed(&key, p);
            }
            assert!(
                e.satisfied_expectations(&key, now),
                "{key} not satisfied after deletion"
            );
            e.delete_expectations(&key);
            assert!(e.get_uids(&key).is_none(), "uids of {key} not deleted");
            assert!(e.get_expectations(&key).is_none());
        }
    }

    #[test]
    fn no_record_is_satisfied() {
        let e = Expectations::new();
        assert!(e.satisfied_expectations("ns/none", Instant::now()));
        // lowering or observing without a record does nothing
        e.creation_observed("ns/none");
        e.deletion_observed("ns/none", "ns/p");
        assert!(e.get_expectations("ns/none").is_none());
    }

    #[test]
    fn creations_are_counted_and_expire_after_five_minutes() {
        let e = Expectations::new();
        let t0 = Instant::now();
        e.expect_creations("ns/rs", 3, t0);
        e.creation_observed("ns/rs");
        e.creation_observed("ns/rs");
        assert!(!e.satisfied_expectations("ns/rs", t0));
        assert!(!e.satisfied_expectations("ns/rs", t0 + EXPECTATIONS_TIMEOUT));
        assert!(e.satisfied_expectations(
            "ns/rs",
            t0 + EXPECTATIONS_TIMEOUT + Duration::from_millis(1)
        ));
        e.creation_observed("ns/rs");
        assert!(e.satisfied_expectations("ns/rs", t0));
        // a clock reading before the record does not expire it
        let exp = e.get_expectations("ns/rs").unwrap();
        assert!(!exp.is_expired(t0, EXPECTATIONS_TIMEOUT));
    }

    #[test]
    fn deletion_is_counted_once_per_expected_pod() {
        let e = Expectations::new();
        let now = Instant::now();
        let keys = vec!["ns/a".to_string(), "ns/b".to_string()];
        e.expect_deletions("ns/rs", &keys, now);
        e.deletion_observed("ns/rs", "ns/a");
        // an update with a deletionTimestamp then the delete event: counted once
        e.deletion_observed("ns/rs", "ns/a");
        // an unexpected pod does not count
        e.deletion_observed("ns/rs", "ns/zzz");
        assert_eq!(e.get_expectations("ns/rs").unwrap().del, 1);
        assert!(!e.satisfied_expectations("ns/rs", now));
        assert_eq!(
            e.get_uids("ns/rs").unwrap(),
            HashSet::from(["ns/b".to_string()])
        );
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied_expectations("ns/rs", now));
        // duplicate keys count once
        e.expect_deletions("ns/rs", &["ns/c".into(), "ns/c".into()], now);
        assert_eq!(e.get_expectations("ns/rs").unwrap().del, 1);
    }

    #[test]
    fn raise_and_lower() {
        let e = Expectations::new();
        let now = Instant::now();
        e.raise_expectations("ns/rs", 1, 1);
        assert!(e.get_expectations("ns/rs").is_none());
        e.set_expectations("ns/rs", 1, 0, now);
        e.raise_expectations("ns/rs", 2, 1);
        assert_eq!(
            e.get_expectations("ns/rs").map(|x| (x.add, x.del)),
            Some((3, 1))
        );
        e.lower_expectations("ns/rs", 3, 1);
        assert!(e.satisfied_expectations("ns/rs", now));
        // creations replace previous counts but keep the pending uid set, as upstream
        e.expect_deletions("ns/rs", &["ns/x".into()], now);
        e.expect_creations("ns/rs", 2, now);
        assert_eq!(
            e.get_expectations("ns/rs").map(|x| (x.add, x.del)),
            Some((2, 0))
        );
        assert!(e.get_uids("ns/rs").unwrap().contains("ns/x"));
    }
}
