//! The proxy's own health (pkg/proxy/healthcheck/proxy_health.go's `ProxyHealthServer`
//! without its HTTP server): a proxier is unhealthy when a change has waited longer than
//! the health timeout (2 × `--proxy-sync-period`) for a sync; `/healthz` also fails when
//! the node is being deleted or is tainted `ToBeDeletedByClusterAutoscaler`, `/livez`
//! does not. Pure: the caller passes the time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Reply;
use crate::proxy::types::IpFamily;

/// The taint the cluster autoscaler puts on a node before deleting it.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// What the proxy health server knows of its node (`nodeManager.Node()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub deleting: bool,
    pub taint_keys: Vec<String>,
}

/// Upstream's `ProxierHealth`: one family's proxier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxierHealth {
    #[serde(serialize_with = "go_time")]
    pub last_updated: Option<SystemTime>,
    pub healthy: bool,
}

/// Upstream's `ProxyHealth`, the JSON body of `/healthz` and `/livez`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyHealth {
    #[serde(serialize_with = "go_time")]
    pub last_updated: Option<SystemTime>,
    #[serde(serialize_with = "go_time")]
    pub current_time: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_eligible: Option<bool>,
    pub healthy: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<&'static str, ProxierHealth>,
}

/// Go's JSON form of a `time.Time` (RFC 3339 with nanoseconds; the zero time when unset).
fn go_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t.and_then(|t| jiff::Timestamp::try_from(t).ok()) {
        Some(ts) => s.serialize_str(&ts.to_string()),
        None => s.serialize_str("0001-01-01T00:00:00Z"),
    }
}

/// core/v1's `IPFamily` spelling.
fn family_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// The state behind `/healthz` and `/livez`.
#[derive(Debug, Clone)]
pub struct ProxyHealthState {
    health_timeout: Duration,
    last_updated: BTreeMap<IpFamily, SystemTime>,
    oldest_pending_queued: BTreeMap<IpFamily, SystemTime>,
    /// None until the node has been seen (then the node is not eligible, as upstream).
    node: Option<NodeInfo>,
}

impl ProxyHealthState {
    pub fn new(health_timeout: Duration) -> Self {
        ProxyHealthState {
            health_timeout,
            last_updated: BTreeMap::new(),
            oldest_pending_queued: BTreeMap::new(),
            node: None,
        }
    }

    /// The family's proxier has synced the rules to the current state (`Updated`).
    pub fn updated(&mut self, family: IpFamily, now: SystemTime) {
        self.oldest_pending_queued.remove(&family);
        self.last_updated.insert(family, now);
    }

    /// The family's proxier has received a change it has not synced yet (`QueuedUpdate`):
    /// the oldest pending one counts.
    pub fn queued_update(&mut self, family: IpFamily, now: SystemTime) {
        self.oldest_pending_queued.entry(family).or_insert(now);
    }

    /// The node as last seen (None once deleted).
    pub fn sync_node(&mut self, node: Option<NodeInfo>) {
        self.node = node;
    }

    /// `Health`: unhealthy when a family's oldest pending change is older than the timeout.
    pub fn health(&self, now: SystemTime) -> ProxyHealth {
        let mut health = ProxyHealth {
            last_updated: self.last_updated.values().max().copied(),
            current_time: Some(now),
            node_eligible: None,
            healthy: true,
            status: BTreeMap::new(),
        };
        for (family, last) in &self.last_updated {
            let late = self
                .oldest_pending_queued
                .get(family)
                .is_some_and(|queued| {
                    now.duration_since(*queued).unwrap_or_default() >= self.health_timeout
                });
            health.healthy &= !late;
            health.status.insert(
                family_name(*family),
                ProxierHealth {
                    last_updated: Some(*last),
                    healthy: !late,
                },
            );
        }
        health
    }

    /// `NodeEligible`: the node is known, not being deleted and not about to be.
    pub fn node_eligible(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|n| !n.deleting && !n.taint_keys.iter().any(|k| k == TO_BE_DELETED_TAINT))
    }

    /// The proxy's health without the node's (what the service health checks report as
    /// `serviceProxyHealthy`).
    pub fn is_healthy(&self, now: SystemTime) -> bool {
        self.health(now).healthy
    }

    /// `GET /healthz`: 200 when the proxy is healthy and the node eligible, else 503.
    pub fn healthz(&self, now: SystemTime) -> Reply {
        let mut health = self.health(now);
        let eligible = self.node_eligible();
        health.node_eligible = Some(eligible);
        let healthy = health.healthy && eligible;
        if healthy {
            // Upstream reports "now" when healthy, as older releases did.
            health.last_updated = Some(now);
        }
        Reply::json(if healthy { 200 } else { 503 }, &health)
    }

    /// `GET /livez`: the proxy's health alone.
    pub fn livez(&self, now: SystemTime) -> Reply {
        let mut health = self.health(now);
        if health.healthy {
            health.last_updated = Some(now);
        }
        Reply::json(if health.healthy { 200 } else { 503 }, &health)
    }
}

#[cfg(test)]
mod tests {
    //! Upstream's `TestHealthzServer`, `TestLivezServer` and `testProxyHealthUpdater`
    //! (pkg/proxy/healthcheck/healthcheck_test.go), with a stepped clock.

    use super::*;

    struct Clock(SystemTime);

    impl Clock {
        fn step(&mut self, secs: u64) {
            self.0 += Duration::from_secs(secs);
        }
    }

    fn node(deleting: bool, taint: &str) -> Option<NodeInfo> {
        Some(NodeInfo {
            deleting,
            taint_keys: vec![taint.to_string()],
        })
    }

    /// The status code and the body's `healthy`, checking the body is upstream's JSON.
    fn check(reply: &Reply, status: u16) {
        assert_eq!(reply.status, status, "{}", reply.body);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert!(body["lastUpdated"].is_string(), "{body}");
        assert!(body["currentTime"].is_string(), "{body}");
        assert_eq!(
            reply.headers,
            vec![
                ("Content-Type", "application/json".to_string()),
                ("X-Content-Type-Options", "nosniff".to_string())
            ]
        );
    }

    /// `testProxyHealthUpdater` through one handler.
    fn proxy_health_updater(
        hs: &mut ProxyHealthState,
        clock: &mut Clock,
        handler: fn(&ProxyHealthState, SystemTime) -> Reply,
    ) {
        use IpFamily::{V4, V6};
        // 200 by default, and after the first update of both proxiers.
        check(&handler(hs, clock.0), 200);
        hs.updated(V4, clock.0);
        hs.updated(V6, clock.0);
        check(&handler(hs, clock.0), 200);
        // Still 200 while nothing is queued.
        clock.step(25);
        check(&handler(hs, clock.0), 200);
        // 503 when one family's (or both) queued update waits past the timeout; 200 once
        // both have synced.
        for late in [vec![V4], vec![V6], vec![V4, V6]] {
            for f in &late {
                hs.queued_update(*f, clock.0);
            }
            clock.step(25);
            check(&handler(hs, clock.0), 503);
            hs.updated(V4, clock.0);
            hs.updated(V6, clock.0);
            clock.step(5);
            check(&handler(hs, clock.0), 200);
        }
        // IPv6 late: updating IPv4 alone changes nothing.
        hs.queued_update(V6, clock.0);
        clock.step(25);
        check(&handler(hs, clock.0), 503);
        hs.updated(V4, clock.0);
        check(&handler(hs, clock.0), 503);
        hs.updated(V6, clock.0);
        check(&handler(hs, clock.0), 200);
        // Both late: 200 only after both update.
        hs.queued_update(V4, clock.0);
        hs.queued_update(V6, clock.0);
        clock.step(25);
        check(&handler(hs, clock.0), 503);
        hs.updated(V4, clock.0);
        check(&handler(hs, clock.0), 503);
        hs.updated(V6, clock.0);
        check(&handler(hs, clock.0), 200);
    }

    fn new_server() -> (ProxyHealthState, Clock) {
        let mut hs = ProxyHealthState::new(Duration::from_secs(10));
        hs.sync_node(node(false, "other"));
        (
            hs,
            Clock(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        )
    }

    #[test]
    fn healthz_server() {
        let (mut hs, mut clock) = new_server();
        proxy_health_updater(&mut hs, &mut clock, ProxyHealthState::healthz);
        let now = clock.0;
        hs.sync_node(node(false, "other"));
        check(&hs.healthz(now), 200);
        hs.sync_node(node(false, TO_BE_DELETED_TAINT));
        check(&hs.healthz(now), 503);
        hs.sync_node(node(false, "other"));
        check(&hs.healthz(now), 200);
        hs.sync_node(node(true, "other"));
        check(&hs.healthz(now), 503);
        // Not seen (yet, or deleted): not eligible, as upstream's nil node.
        hs.sync_node(None);
        check(&hs.healthz(now), 503);
    }

    #[test]
    fn livez_server() {
        let (mut hs, mut clock) = new_server();
        proxy_health_updater(&mut hs, &mut clock, ProxyHealthState::livez);
        let now = clock.0;
        for n in [
            node(false, "other"),
            node(false, TO_BE_DELETED_TAINT),
            node(true, "other"),
            None,
        ] {
            hs.sync_node(n);
            check(&hs.livez(now), 200);
        }
    }

    #[test]
    fn body_is_upstreams_json() {
        let (mut hs, clock) = new_server();
        let t = clock.0;
        hs.updated(IpFamily::V4, t);
        let reply = hs.healthz(t + Duration::from_secs(1));
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "lastUpdated": "2027-01-15T08:00:01Z",
                "currentTime": "2027-01-15T08:00:01Z",
                "nodeEligible": true,
                "healthy": true,
                "status": {"IPv4": {"lastUpdated": "2027-01-15T08:00:00Z", "healthy": true}},
            })
        );
        // Before any sync: Go's zero time, no status, and livez has no nodeEligible.
        let fresh = ProxyHealthState::new(Duration::from_secs(10));
        let mut late = fresh.clone();
        late.updated(IpFamily::V4, t);
        late.queued_update(IpFamily::V4, t);
        let body: serde_json::Value =
            serde_json::from_str(&late.livez(t + Duration::from_secs(10)).body).unwrap();
        assert_eq!(body["healthy"], false);
        assert_eq!(body["lastUpdated"], "2027-01-15T08:00:00Z");
        assert!(body.get("nodeEligible").is_none());
        assert_eq!(body["status"]["IPv4"]["healthy"], false);
        let body: serde_json::Value = serde_json::to_value(fresh.health(t)).unwrap();
        assert_eq!(body["lastUpdated"], "0001-01-01T00:00:00Z");
        assert!(body.get("status").is_none());
    }
}
