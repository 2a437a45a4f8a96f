//! CrashLoopBackOff: client-go's `flowcontrol.Backoff` (util/flowcontrol/backoff.go), as
//! kubelet.go configures it for container restarts (`initialCrashLoopBackOff` 10 s,
//! doubling to `MaxCrashLoopBackOff` = `MaxContainerBackOff` 300 s, an entry reset once
//! the container ran 600 s without failing), and its use before each container start
//! (kuberuntime_manager.go `doBackOff`, helpers.go `GetBackoffKey`). Jitter-free, as the
//! kubelet's is; every clock reading is a parameter.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Container;
use rekube_crds::Pod;

use super::runtime_status::{ContainerState, PodRuntimeStatus, fnv1a_64, format_pod_desc};

/// kubelet.go `initialCrashLoopBackOff`.
pub const INITIAL_CRASH_LOOP_BACK_OFF: Duration = Duration::from_secs(10);
/// kubelet.go `MaxCrashLoopBackOff` (kubelet config v1beta1 `MaxContainerBackOff`).
pub const MAX_CRASH_LOOP_BACK_OFF: Duration = Duration::from_secs(300);
/// kubelet.go's `HasExpiredFunc` for crash loops: an entry older than this (the
/// container ran that long since its last restart) starts over at the initial period.
pub const CRASH_LOOP_BACK_OFF_RESET: Duration = Duration::from_secs(600);
/// The reason a container waits with while backing off (`kubecontainer.ErrCrashLoopBackOff`).
pub const REASON_CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// The event reason (`events.BackOffStartContainer`).
pub const EVENT_BACK_OFF: &str = "BackOff";

pub use crate::flowcontrol::{Backoff, Expiry};

impl Backoff<Timestamp> {
    /// The kubelet's crash-loop backoff (kubelet.go `NewMainKubelet`): 10 s doubling to
    /// 300 s, reset after 600 s.
    pub fn crash_loop() -> Self {
        Self::crash_loop_with_max(MAX_CRASH_LOOP_BACK_OFF)
    }

    /// kubelet.go `newCrashLoopBackOff` with KubeletConfiguration
    /// `crashLoopBackOff.maxContainerRestartPeriod` (KEP-4603): `max` is the cap, and the
    /// initial period is the smaller of 10 s and `max`; reset after 600 s as before.
    pub fn crash_loop_with_max(max: Duration) -> Self {
        Backoff::new(INITIAL_CRASH_LOOP_BACK_OFF.min(max), max)
            .with_expiry(Expiry::After(CRASH_LOOP_BACK_OFF_RESET))
    }
}

/// Upstream `GetBackoffKey`: identifies a (pod, container) and changes with anything
/// that should start the backoff over (image, resources). Upstream hashes the resources'
/// protobuf text; rekube hashes their JSON.
pub fn get_backoff_key(pod: &Pod, container: &Container) -> String {
    let resources = container
        .resources
        .as_ref()
        .and_then(|r| serde_json::to_string(r).ok())
        .unwrap_or_default();
    let key = [
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
        container.name.as_str(),
        container.image.as_deref().unwrap_or_default(),
        resources.as_str(),
    ]
    .join("/");
    format!("{:x}", fnv1a_64(key.as_bytes()))
}

/// A container start refused because its container is crash-looping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashLoopBackOff {
    /// The waiting message: `back-off 20s restarting failed container=app
    /// pod=web_default(uid)`; the waiting reason is [`REASON_CRASH_LOOP_BACK_OFF`].
    pub message: String,
    /// The Warning event's message (reason [`EVENT_BACK_OFF`]).
    pub event_message: String,
    /// When the backoff ends (the container's finish time plus the backoff): sync again
    /// then.
    pub until: Timestamp,
}

/// Upstream `doBackOff`: before starting `container`, whether its last exited instance
/// finished less than its backoff ago. When it did, the start is refused with the
/// returned reason; when not, the backoff moves to its next step and the start goes on.
pub fn do_back_off(
    pod: &Pod,
    container: &Container,
    status: &PodRuntimeStatus,
    backoff: &mut Backoff,
    now: Timestamp,
) -> Option<CrashLoopBackOff> {
    let exited = status
        .containers_newest_first()
        .into_iter()
        .find(|c| c.name == container.name && c.state == ContainerState::Exited)?;
    let ts = exited.finished_at.unwrap_or(exited.created_at);
    let key = get_backoff_key(pod, container);
    if backoff.is_in_back_off_since(&key, ts, now) {
        let pod_desc = format_pod_desc(
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default(),
        );
        let d = backoff.get(&key);
        return Some(CrashLoopBackOff {
            message: format!(
                "back-off {} restarting failed container={} pod={pod_desc}",
                format_go_duration(d),
                container.name
            ),
            event_message: format!(
                "Back-off restarting failed container {} in pod {pod_desc}",
                container.name
            ),
            until: ts + d,
        });
    }
    backoff.next(&key, ts, now);
    None
}

/// Go's `time.Duration.String()`: `10s`, `2m40s`, `5m0s`, `1h0m0s`, `1.5s`, `500ms`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    fn frac(value: u128, unit: u128) -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", frac(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", frac(nanos, 1_000_000));
    }
    let secs = nanos / 1_000_000_000;
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    let s = frac(nanos % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime_status::testing::{container as cstatus, ts};
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const SECOND: Duration = Duration::from_secs(1);

    /// backoff_test.go TestSlowBackoff.
    #[test]
    fn slow_backoff() {
        let mut b = Backoff::new(SECOND, 50 * SECOND);
        let mut now = 0;
        for (i, want) in [0u64, 1, 2, 4, 8, 16, 32, 50, 50, 50]
            .into_iter()
            .enumerate()
        {
            now += 1;
            assert_eq!(b.get("id"), Duration::from_secs(want), "step {i}");
            b.next("id", ts(now), ts(now));
        }
        b.next("id", ts(now), ts(now));
        b.reset("id");
        assert_eq!(b.get("id"), Duration::ZERO);
    }

    /// TestBackoffReset.
    #[test]
    fn backoff_reset() {
        let max = 5 * SECOND;
        let mut b = Backoff::new(SECOND, max);
        let mut now = 0;
        for _ in 0..=5 {
            now += 1;
            b.next("id", ts(now), ts(now));
        }
        assert!(b.is_in_back_off_since("id", ts(now), ts(now)));
        let last_update = ts(now);
        now += 11;
        assert!(!b.is_in_back_off_since("id", last_update, ts(now)));
    }

    /// TestBackoffHighWaterMark.
    #[test]
    fn high_water_mark() {
        let max = 5 * SECOND;
        let mut b = Backoff::new(SECOND, max);
        let mut now = 0;
        for _ in 0..=5 {
            now += 1;
            b.next("id", ts(now), ts(now));
        }
        now += 6;
        b.next("id", ts(now), ts(now));
        assert_eq!(b.get("id"), max);
    }

    /// TestBackoffGC.
    #[test]
    fn gc() {
        let mut b = Backoff::new(SECOND, 5 * SECOND);
        let mut now = 0;
        for _ in 0..=5 {
            now += 1;
            b.next("id", ts(now), ts(now));
        }
        now += 6;
        b.gc(ts(now));
        assert_eq!(b.len(), 1);
        now += 6;
        b.gc(ts(now));
        assert!(b.is_empty());
    }

    /// TestIsInBackOffSinceUpdate.
    #[test]
    fn is_in_back_off_since_update() {
        let mut b = Backoff::new(SECOND, 10 * SECOND);
        let cases: [(i64, bool, u64); 38] = [
            (0, false, 0),
            (1, false, 1),
            (2, true, 2),
            (3, false, 2),
            (4, true, 4),
            (5, true, 4),
            (6, true, 4),
            (7, false, 4),
            (8, true, 8),
            (9, true, 8),
            (10, true, 8),
            (11, true, 8),
            (12, true, 8),
            (13, true, 8),
            (14, true, 8),
            (15, false, 8),
            (16, true, 10),
            (17, true, 10),
            (18, true, 10),
            (19, true, 10),
            (20, true, 10),
            (21, true, 10),
            (22, true, 10),
            (23, true, 10),
            (24, true, 10),
            (25, false, 10),
            (26, true, 10),
            (27, true, 10),
            (28, true, 10),
            (29, true, 10),
            (30, true, 10),
            (31, true, 10),
            (32, true, 10),
            (33, true, 10),
            (34, true, 10),
            (35, false, 10),
            (56, false, 0),
            (57, false, 1),
        ];
        for (tick, in_back_off, value) in cases {
            let now = ts(tick);
            assert_eq!(
                b.is_in_back_off_since_update("id", now),
                in_back_off,
                "tick {tick}"
            );
            if in_back_off {
                assert_eq!(b.get("id"), Duration::from_secs(value), "tick {tick}");
            } else {
                b.next("id", now, now);
            }
        }
    }

    /// TestAlternateHasExpiredFunc.
    #[test]
    fn alternate_expiry() {
        for (expiry, non_expired, expired) in [
            (Expiry::TwiceMax, 5, 101),
            (Expiry::After(Duration::from_secs(7)), 5, 9),
        ] {
            let mut b = Backoff::new(SECOND, 50 * SECOND).with_expiry(expiry);
            let mut now = 1000;
            b.next("id", ts(now), ts(now));
            now += non_expired;
            b.next("id", ts(now), ts(now));
            assert!(b.get("id") >= 2 * SECOND);
            now += expired;
            b.next("id", ts(now), ts(now));
            assert_eq!(b.get("id"), SECOND);
        }
    }

    fn pod() -> (Pod, Container) {
        let container = Container {
            name: "foocontainer".into(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        let pod = Pod {
            metadata: ObjectMeta {
                uid: Some("12345678".into()),
                name: Some("foo".into()),
                namespace: Some("new".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container.clone()],
                ..Default::default()
            }),
            status: None,
        };
        (pod, container)
    }

    /// kuberuntime_manager_test.go TestDoBackOff.
    #[test]
    fn do_back_off_table() {
        let (pod, container) = pod();
        let now = ts(5000);
        let running = PodRuntimeStatus {
            containers: vec![cstatus("a", "foocontainer", ContainerState::Running, 0)],
            ..Default::default()
        };
        let mut exited = cstatus("a", "foocontainer", ContainerState::Exited, 0);
        exited.finished_at = Some(now);
        let exited = PodRuntimeStatus {
            containers: vec![exited],
            ..Default::default()
        };

        let mut b = Backoff::new(SECOND, Duration::from_secs(60));
        assert_eq!(
            do_back_off(&pod, &container, &running, &mut b, now),
            None,
            "container running"
        );

        let mut b = Backoff::new(SECOND, Duration::from_secs(60));
        assert_eq!(
            do_back_off(&pod, &container, &exited, &mut b, now),
            None,
            "not in backoff"
        );

        let mut b = Backoff::new(SECOND, Duration::from_secs(60));
        b.next(&get_backoff_key(&pod, &container), now, now);
        let got = do_back_off(&pod, &container, &exited, &mut b, now).expect("in backoff");
        assert_eq!(got.until, now + SECOND);
        assert_eq!(
            got.message,
            "back-off 1s restarting failed container=foocontainer pod=foo_new(12345678)"
        );
        assert_eq!(
            got.event_message,
            "Back-off restarting failed container foocontainer in pod foo_new(12345678)"
        );
    }

    /// Crash-loops `pod()`'s container `restarts` times under `b`, each exit at once and
    /// each restart as soon as the back-off allows: the waits before each restart, and the
    /// status and clock (seconds) it ends with.
    fn crash_loop_waits(b: &mut Backoff, restarts: usize) -> (Vec<i64>, PodRuntimeStatus, i64) {
        let (pod, container) = pod();
        let mut status = PodRuntimeStatus::default();
        let mut now = 1000;
        let mut waits = Vec::new();
        for attempt in 0..restarts {
            let mut c = cstatus(
                &format!("c{attempt}"),
                "foocontainer",
                ContainerState::Exited,
                0,
            );
            c.created_at = ts(now);
            c.finished_at = Some(ts(now));
            status.containers.push(c);
            let finished = now;
            while let Some(bo) = do_back_off(&pod, &container, &status, b, ts(now)) {
                now = bo.until.as_second();
            }
            waits.push(now - finished);
            now += 1;
        }
        (waits, status, now)
    }

    /// The kubelet's schedule: first restart at once, then 10 s, 20 s, 40 s … 300 s; a
    /// container that ran for more than 600 s starts over at 10 s.
    #[test]
    fn crash_loop_schedule() {
        let (pod, container) = pod();
        let mut b = Backoff::crash_loop();
        let (waits, mut status, mut now) = crash_loop_waits(&mut b, 9);
        assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);

        // Ran for 601 s: back to the initial backoff.
        now += 601;
        let mut c = cstatus("long", "foocontainer", ContainerState::Exited, 0);
        c.created_at = ts(now);
        c.finished_at = Some(ts(now));
        status.containers.push(c);
        assert_eq!(
            do_back_off(&pod, &container, &status, &mut b, ts(now)),
            None
        );
        assert_eq!(
            b.get(&get_backoff_key(&pod, &container)),
            INITIAL_CRASH_LOOP_BACK_OFF
        );
        let bo = do_back_off(&pod, &container, &status, &mut b, ts(now + 1)).unwrap();
        assert!(
            bo.message
                .starts_with("back-off 10s restarting failed container=foocontainer")
        );
    }

    /// kubelet.go `newCrashLoopBackOff` with crashLoopBackOff.maxContainerRestartPeriod:
    /// the cap is the period, and the first wait the smaller of 10 s and the period.
    #[test]
    fn crash_loop_schedule_with_a_max_container_restart_period() {
        let schedule = |max: Duration, restarts: usize| {
            crash_loop_waits(&mut Backoff::crash_loop_with_max(max), restarts).0
        };
        assert_eq!(schedule(SECOND, 5), vec![0, 1, 1, 1, 1]);
        assert_eq!(schedule(30 * SECOND, 5), vec![0, 10, 20, 30, 30]);
        assert_eq!(
            schedule(MAX_CRASH_LOOP_BACK_OFF, 9),
            vec![0, 10, 20, 40, 80, 160, 300, 300, 300]
        );
    }

    #[test]
    fn key_changes_with_image() {
        let (pod, mut container) = pod();
        let k = get_backoff_key(&pod, &container);
        assert_eq!(k, get_backoff_key(&pod, &container));
        container.image = Some("busybox:2".into());
        assert_ne!(k, get_backoff_key(&pod, &container));
    }

    #[test]
    fn go_durations() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(160), "2m40s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(15), "15ns"),
        ] {
            assert_eq!(format_go_duration(d), want);
        }
    }
}
