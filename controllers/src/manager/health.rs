//! What `/healthz` answers, as kube-controller-manager's health checks: a supervised task
//! (an informer or a controller) that stopped, and the leader election watchdog
//! (client-go's `leaderelection.HealthzAdaptor`: unhealthy when this process leads but has
//! not renewed its lease for the lease duration plus a tolerance).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// kube-controller-manager's `maxTolerableExpiredLease` for its watchdog.
pub const MAX_TOLERABLE_EXPIRED_LEASE: Duration = Duration::from_secs(20);

#[derive(Clone, Default)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    failed: Vec<String>,
    leading: Option<Leading>,
}

struct Leading {
    lease: String,
    renewed: Instant,
    lease_duration: Duration,
}

impl Health {
    /// Records that a task which must run for the life of the process stopped.
    pub fn task_failed(&self, what: impl Into<String>) {
        self.state.lock().unwrap().failed.push(what.into());
    }

    /// This process holds `lease`, renewed at `renewed`.
    pub fn lease_renewed(&self, lease: &str, renewed: Instant, lease_duration: Duration) {
        self.state.lock().unwrap().leading = Some(Leading {
            lease: lease.into(),
            renewed,
            lease_duration,
        });
    }

    /// This process no longer leads (or never did): the watchdog has nothing to check.
    pub fn not_leading(&self) {
        self.state.lock().unwrap().leading = None;
    }

    /// `Ok` when healthy, else every reason it is not, one per line.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let state = self.state.lock().unwrap();
        let mut problems: Vec<String> = state.failed.clone();
        if let Some(l) = &state.leading {
            let since = now.saturating_duration_since(l.renewed);
            if since > l.lease_duration + MAX_TOLERABLE_EXPIRED_LEASE {
                problems.push(format!(
                    "leaderElection: failed election to renew leadership on lease {} (last renewed {since:?} ago)",
                    l.lease
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_until_a_task_fails() {
        let h = Health::default();
        let now = Instant::now();
        assert_eq!(h.check(now), Ok(()));
        h.task_failed("informer pods stopped");
        h.task_failed("controller replicaset-controller panicked: boom");
        assert_eq!(
            h.check(now),
            Err("informer pods stopped\ncontroller replicaset-controller panicked: boom".into())
        );
    }

    #[test]
    fn the_leader_watchdog_tolerates_a_late_renewal_up_to_the_lease_duration_plus_20s() {
        let h = Health::default();
        let t0 = Instant::now();
        h.lease_renewed(
            "kube-system/rekube-controllers",
            t0,
            Duration::from_secs(15),
        );
        assert_eq!(h.check(t0 + Duration::from_secs(35)), Ok(()));
        let err = h.check(t0 + Duration::from_secs(36)).unwrap_err();
        assert!(
            err.starts_with(
                "leaderElection: failed election to renew leadership on lease kube-system/rekube-controllers"
            ),
            "{err}"
        );
        h.not_leading();
        assert_eq!(h.check(t0 + Duration::from_secs(100)), Ok(()));
    }
}
