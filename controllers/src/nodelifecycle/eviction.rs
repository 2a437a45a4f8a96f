//! Which pods a node's NoExecute taints evict, and when (upstream:
//! `pkg/controller/tainteviction/taint_eviction.go` with `v1helper.GetMatchingTolerations`,
//! `Toleration.ToleratesTaint` of `k8s.io/api/core/v1/toleration.go`, and the
//! `DefaultTolerationSeconds` admission plugin, which rekube cannot run at admission and
//! therefore applies here).
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Taint, Toleration};
use rekube_crds::{Node, Pod};

use super::taints::{TAINT_EFFECT_NO_EXECUTE, TAINT_NODE_NOT_READY, TAINT_NODE_UNREACHABLE};
use crate::util::pod::{is_pod_terminal, pod_key};

/// Upstream default of `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// Pod condition the taint manager sets before deleting (upstream: `v1.DisruptionTarget`
/// with reason `DeletionByTaintManager`).
pub use rekube_crds::core_v1::DISRUPTION_TARGET;
pub const REASON_DELETION_BY_TAINT_MANAGER: &str = "DeletionByTaintManager";
pub const MESSAGE_DELETION_BY_TAINT_MANAGER: &str =
    "Taint manager: deleting due to NoExecute taint";

/// Toleration operators (upstream: `v1.TolerationOpExists` ...).
pub const TOLERATION_OP_EXISTS: &str = "Exists";
pub const TOLERATION_OP_EQUAL: &str = "Equal";
pub const TOLERATION_OP_LT: &str = "Lt";
pub const TOLERATION_OP_GT: &str = "Gt";

/// How long a pod tolerates a set of taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    /// Every taint tolerated without tolerationSeconds.
    Forever,
    /// Tolerated for this long after the taint appeared.
    For(Duration),
    /// Some taint is not tolerated: evict now.
    NotTolerated,
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// Whether the toleration tolerates the taint: empty effect matches every effect, empty
/// key (with Exists) every key, Exists every value, Equal (or empty) an equal value,
/// Lt/Gt compare integer values (upstream: `Toleration.ToleratesTaint`).
pub fn tolerates_taint(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = opt(&toleration.effect);
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = opt(&toleration.key);
    if !key.is_empty() && key != taint.key {
        return false;
    }
    let value = opt(&toleration.value);
    let taint_value = opt(&taint.value);
    match opt(&toleration.operator) {
        "" | TOLERATION_OP_EQUAL => value == taint_value,
        TOLERATION_OP_EXISTS => true,
        op @ (TOLERATION_OP_LT | TOLERATION_OP_GT) => {
            match (value.parse::<i64>(), taint_value.parse::<i64>()) {
                (Ok(t), Ok(v)) if op == TOLERATION_OP_LT => v < t,
                (Ok(t), Ok(v)) => v > t,
                _ => false,
            }
        }
        _ => false,
    }
}

/// For each taint, the first toleration tolerating it; None when some taint is not
/// tolerated (upstream: `v1helper.GetMatchingTolerations`).
pub fn get_matching_tolerations<'a>(
    taints: &[Taint],
    tolerations: &'a [Toleration],
) -> Option<Vec<&'a Toleration>> {
    taints
        .iter()
        .map(|taint| tolerations.iter().find(|t| tolerates_taint(t, taint)))
        .collect()
}

/// The shortest tolerationSeconds: `For(0)` for no tolerations or a non-positive value,
/// `Forever` when none sets tolerationSeconds (upstream: `getMinTolerationTime`, whose -1
/// is `Forever`).
pub fn get_min_toleration_time<'a>(
    tolerations: impl IntoIterator<Item = &'a Toleration>,
) -> Tolerance {
    let mut any = false;
    let mut min: Option<i64> = None;
    for t in tolerations {
        any = true;
        if let Some(secs) = t.toleration_seconds {
            if secs <= 0 {
                return Tolerance::For(Duration::ZERO);
            }
            min = Some(min.map_or(secs, |m| m.min(secs)));
        }
    }
    match (any, min) {
        (false, _) => Tolerance::For(Duration::ZERO),
        (true, None) => Tolerance::Forever,
        (true, Some(s)) => Tolerance::For(Duration::from_secs(s.unsigned_abs())),
    }
}

/// The pod's tolerations plus, for not-ready and unreachable NoExecute, an
/// `Exists` toleration with `default_toleration_seconds` when the pod has no toleration
/// with that key (or an empty key) and the NoExecute (or an empty) effect (upstream: the
/// `DefaultTolerationSeconds` admission plugin, `Admit`).
pub fn tolerations_with_defaults(pod: &Pod, default_toleration_seconds: i64) -> Vec<Toleration> {
    let mut tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let covers = |key: &str| {
        tolerations.iter().any(|t| {
            let k = opt(&t.key);
            let e = opt(&t.effect);
            (k == key || k.is_empty()) && (e == TAINT_EFFECT_NO_EXECUTE || e.is_empty())
        })
    };
    let missing: Vec<&str> = [TAINT_NODE_NOT_READY, TAINT_NODE_UNREACHABLE]
        .into_iter()
        .filter(|k| !covers(k))
        .collect();
    for key in missing {
        tolerations.push(Toleration {
            key: Some(key.into()),
            operator: Some(TOLERATION_OP_EXISTS.into()),
            effect: Some(TAINT_EFFECT_NO_EXECUTE.into()),
            toleration_seconds: Some(default_toleration_seconds),
            value: None,
        });
    }
    tolerations
}

fn no_execute(taints: &[Taint]) -> Vec<Taint> {
    taints
        .iter()
        .filter(|t| t.effect == TAINT_EFFECT_NO_EXECUTE)
        .cloned()
        .collect()
}

/// [`tolerates_for`] with a configurable default toleration for not-ready/unreachable
/// (upstream: `processPodOnNode` with `getMinTolerationTime`, after
/// `DefaultTolerationSeconds`).
pub fn tolerates_for_with_default(
    pod: &Pod,
    taints: &[Taint],
    default_toleration_seconds: i64,
) -> Tolerance {
    let taints = no_execute(taints);
    if taints.is_empty() {
        return Tolerance::Forever;
    }
    let tolerations = tolerations_with_defaults(pod, default_toleration_seconds);
    match get_matching_tolerations(&taints, &tolerations) {
        None => Tolerance::NotTolerated,
        Some(used) => get_min_toleration_time(used),
    }
}

/// How long the pod tolerates the NoExecute taints among `taints` (others are ignored;
/// none at all is `Forever`), the not-ready/unreachable default of
/// [`DEFAULT_TOLERATION_SECONDS`] applied (upstream: `processPodOnNode` with
/// `GetMatchingTolerations` and `getMinTolerationTime`).
pub fn tolerates_for(pod: &Pod, taints: &[Taint]) -> Tolerance {
    tolerates_for_with_default(pod, taints, DEFAULT_TOLERATION_SECONDS)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// When the pod must go, as an absolute time, or None when it tolerates the taints
/// forever. Each NoExecute taint is tolerated until its timeAdded (else `now`) plus the
/// tolerationSeconds of the first toleration matching it; the pod goes at the earliest
/// such time, right away when some taint is not tolerated.
fn eviction_time(
    pod: &Pod,
    taints: &[Taint],
    default_toleration_seconds: i64,
    now: Timestamp,
) -> Option<Timestamp> {
    let tolerations = tolerations_with_defaults(pod, default_toleration_seconds);
    let mut earliest: Option<Timestamp> = None;
    for taint in taints {
        let start = taint.time_added.as_ref().map_or(now, |t| t.0);
        let at = match tolerations.iter().find(|t| tolerates_taint(t, taint)) {
            None => now,
            Some(t) => match get_min_toleration_time([t]) {
                Tolerance::Forever | Tolerance::NotTolerated => continue,
                Tolerance::For(d) => start.saturating_add(signed(d)).unwrap_or(Timestamp::MAX),
            },
        };
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    earliest
}

/// The pods on the node its NoExecute taints evict, as `namespace/name` with None to
/// delete now or Some(delay) to come back after (taint timeAdded + tolerationSeconds −
/// now). Pods that tolerate forever, terminal pods, pods being deleted and pods bound to
/// another node are left out. The not-ready/unreachable default toleration of
/// `default_toleration_seconds` is applied to pods without one (upstream: taint eviction
/// `handleNodeUpdate`/`processPodOnNode`, which time from when the controller saw the
/// taint rather than from timeAdded; the deleter adds the DisruptionTarget condition
/// with reason `DeletionByTaintManager` first).
pub fn pods_to_evict(
    node: &Node,
    pods: &[Pod],
    default_toleration_seconds: i64,
    now: Timestamp,
) -> Vec<(String, Option<Duration>)> {
    let taints = no_execute(
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]),
    );
    if taints.is_empty() {
        return Vec::new();
    }
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for pod in pods {
        let bound_here = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n == node_name);
        if !bound_here || is_pod_terminal(pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = eviction_time(pod, &taints, default_toleration_seconds, now) else {
            continue;
        };
        let delay = if at <= now {
            None
        } else {
            Duration::try_from(at.duration_since(now)).ok()
        };
        out.push((pod_key(pod), delay));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn tol(key: &str, op: &str, value: &str, effect: &str, secs: Option<i64>) -> Toleration {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Toleration {
            key: s(key),
            operator: s(op),
            value: s(value),
            effect: s(effect),
            toleration_seconds: secs,
        }
    }

    fn taint(key: &str, value: &str, effect: &str, added: Option<Timestamp>) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.to_string()),
            effect: effect.into(),
            time_added: added.map(Time),
        }
    }

    fn pod(name: &str, tolerations: Vec<Toleration>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node0".into()),
                tolerations: (!tolerations.is_empty()).then_some(tolerations),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
        }
    }

    fn node(taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node0".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn t0() -> Timestamp {
        "2015-01-01T12:00:00Z".parse().unwrap()
    }
    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    const NE: &str = TAINT_EFFECT_NO_EXECUTE;

    /// upstream TestGetMinTolerationTime
    #[test]
    fn get_min_toleration_time_table() {
        let with = |s: Option<i64>| Toleration {
            toleration_seconds: s,
            ..Default::default()
        };
        let one = Tolerance::For(Duration::from_secs(1));
        let cases: [(Vec<Toleration>, Tolerance); 6] = [
            (vec![], Tolerance::For(Duration::ZERO)),
            (vec![with(None)], Tolerance::Forever),
            (vec![with(Some(1)), with(Some(2))], one),
            (vec![with(Some(1)), with(None)], one),
            (vec![with(None), with(Some(1))], one),
            (
                vec![with(Some(5)), with(Some(-3))],
                Tolerance::For(Duration::ZERO),
            ),
        ];
        for (tolerations, expected) in cases {
            assert_eq!(
                get_min_toleration_time(&tolerations),
                expected,
                "{tolerations:?}"
            );
        }
    }

    /// upstream toleration_test.go TestTolerationToleratesTaint
    #[test]
    fn tolerates_taint_table() {
        let cases = [
            (
                "empty toleration and effect",
                tol("", "Exists", "", "", None),
                taint("foo", "bar", NE, None),
                true,
            ),
            (
                "key mismatch",
                tol("foo", "Exists", "", "", None),
                taint("bar", "", NE, None),
                false,
            ),
            (
                "effect mismatch",
                tol("foo", "Exists", "", "NoSchedule", None),
                taint("foo", "", NE, None),
                false,
            ),
            (
                "equal values",
                tol("foo", "Equal", "bar", NE, None),
                taint("foo", "bar", NE, None),
                true,
            ),
            (
                "empty operator is equal",
                tol("foo", "", "bar", NE, None),
                taint("foo", "bar", NE, None),
                true,
            ),
            (
                "different values",
                tol("foo", "Equal", "bar", NE, None),
                taint("foo", "baz", NE, None),
                false,
            ),
            (
                "exists any value",
                tol("foo", "Exists", "", NE, None),
                taint("foo", "baz", NE, None),
                true,
            ),
            (
                "lt smaller",
                tol("foo", "Lt", "10", NE, None),
                taint("foo", "5", NE, None),
                true,
            ),
            (
                "lt equal",
                tol("foo", "Lt", "10", NE, None),
                taint("foo", "10", NE, None),
                false,
            ),
            (
                "gt greater",
                tol("foo", "Gt", "10", NE, None),
                taint("foo", "11", NE, None),
                true,
            ),
            (
                "gt not a number",
                tol("foo", "Gt", "10", NE, None),
                taint("foo", "x", NE, None),
                false,
            ),
            (
                "unknown operator",
                tol("foo", "In", "bar", NE, None),
                taint("foo", "bar", NE, None),
                false,
            ),
        ];
        for (name, t, taint, expected) in cases {
            assert_eq!(tolerates_taint(&t, &taint), expected, "{name}");
        }
    }

    #[test]
    fn default_toleration_seconds_admission() {
        let keys = |p: &Pod| -> Vec<(String, Option<i64>)> {
            tolerations_with_defaults(p, 300)
                .into_iter()
                .map(|t| (t.key.unwrap_or_default(), t.toleration_seconds))
                .collect()
        };
        let nr = TAINT_NODE_NOT_READY.to_string();
        let un = TAINT_NODE_UNREACHABLE.to_string();
        assert_eq!(
            keys(&pod("p", vec![])),
            vec![(nr.clone(), Some(300)), (un.clone(), Some(300))]
        );
        assert_eq!(
            keys(&pod(
                "p",
                vec![tol(TAINT_NODE_UNREACHABLE, "Exists", "", NE, Some(60))]
            )),
            vec![(un.clone(), Some(60)), (nr.clone(), Some(300))]
        );
        // an empty key with an empty effect covers both
        assert_eq!(
            keys(&pod("p", vec![tol("", "Exists", "", "", None)])),
            vec![(String::new(), None)]
        );
        // a NoSchedule toleration does not count
        assert_eq!(
            keys(&pod(
                "p",
                vec![tol(TAINT_NODE_NOT_READY, "Exists", "", "NoSchedule", None)]
            ))
            .len(),
            3
        );
    }

    #[test]
    fn tolerates_for_table() {
        let unreachable = taint(TAINT_NODE_UNREACHABLE, "", NE, Some(t0()));
        let custom = taint("example.com/drain", "", NE, Some(t0()));
        let cases = [
            ("no taints", pod("p", vec![]), vec![], Tolerance::Forever),
            (
                "only NoSchedule",
                pod("p", vec![]),
                vec![taint("x", "", "NoSchedule", None)],
                Tolerance::Forever,
            ),
            (
                "default toleration",
                pod("p", vec![]),
                vec![unreachable.clone()],
                Tolerance::For(Duration::from_secs(300)),
            ),
            (
                "own toleration seconds",
                pod(
                    "p",
                    vec![tol(TAINT_NODE_UNREACHABLE, "Exists", "", NE, Some(30))],
                ),
                vec![unreachable.clone()],
                Tolerance::For(Duration::from_secs(30)),
            ),
            (
                "tolerate forever",
                pod(
                    "p",
                    vec![tol(TAINT_NODE_UNREACHABLE, "Exists", "", NE, None)],
                ),
                vec![unreachable.clone()],
                Tolerance::Forever,
            ),
            (
                "custom taint not tolerated",
                pod("p", vec![]),
                vec![unreachable.clone(), custom.clone()],
                Tolerance::NotTolerated,
            ),
            (
                "min over taints",
                pod(
                    "p",
                    vec![tol("example.com/drain", "Exists", "", NE, Some(10))],
                ),
                vec![unreachable.clone(), custom.clone()],
                Tolerance::For(Duration::from_secs(10)),
            ),
            (
                "first matching toleration wins",
                pod(
                    "p",
                    vec![
                        tol("", "Exists", "", "", None),
                        tol(TAINT_NODE_UNREACHABLE, "Exists", "", NE, Some(5)),
                    ],
                ),
                vec![unreachable.clone()],
                Tolerance::Forever,
            ),
        ];
        for (name, p, taints, expected) in cases {
            assert_eq!(tolerates_for(&p, &taints), expected, "{name}");
        }
        assert_eq!(
            tolerates_for_with_default(&pod("p", vec![]), &[unreachable], 20),
            Tolerance::For(Duration::from_secs(20))
        );
    }

    /// A lost node's pods without tolerations go 300 s after the unreachable taint's
    /// timeAdded, never before.
    #[test]
    fn lost_node_pods_evicted_after_default_toleration() {
        let n = node(vec![taint(TAINT_NODE_UNREACHABLE, "", NE, Some(t0()))]);
        let pods = vec![pod("a", vec![]), pod("b", vec![])];
        for (at, expected) in [
            (t0(), Some(Duration::from_secs(300))),
            (t0() + secs(1), Some(Duration::from_secs(299))),
            (t0() + secs(299), Some(Duration::from_secs(1))),
            (t0() + secs(300), None),
            (t0() + secs(1000), None),
        ] {
            let got = pods_to_evict(&n, &pods, DEFAULT_TOLERATION_SECONDS, at);
            assert_eq!(
                got,
                vec![
                    ("default/a".to_string(), expected),
                    ("default/b".to_string(), expected)
                ],
                "at {at}"
            );
        }
    }

    /// upstream taint_eviction_test.go TestCreatePod/TestUpdateNode timing cases.
    #[test]
    fn pods_to_evict_table() {
        let now = t0() + secs(100);
        let tainted = |key: &str, added: Timestamp| node(vec![taint(key, "", NE, Some(added))]);
        let mut terminal = pod("done", vec![]);
        terminal.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut deleting = pod("deleting", vec![]);
        deleting.metadata.deletion_timestamp = Some(Time(t0()));
        let mut elsewhere = pod("elsewhere", vec![]);
        elsewhere.spec.as_mut().unwrap().node_name = Some("node1".into());
        type Expected = Vec<(&'static str, Option<u64>)>;
        let cases: Vec<(&str, Node, Vec<Pod>, Expected)> = vec![
            ("no taints", node(vec![]), vec![pod("p", vec![])], vec![]),
            (
                "NoSchedule only",
                node(vec![taint("x", "", "NoSchedule", Some(t0()))]),
                vec![pod("p", vec![])],
                vec![],
            ),
            (
                "not tolerated: now",
                tainted("example.com/x", t0()),
                vec![pod("p", vec![])],
                vec![("default/p", None)],
            ),
            (
                "tolerated forever: kept",
                tainted("example.com/x", t0()),
                vec![pod("p", vec![tol("example.com/x", "Exists", "", NE, None)])],
                vec![],
            ),
            (
                "tolerated 200s since t0: 100s left",
                tainted("example.com/x", t0()),
                vec![pod(
                    "p",
                    vec![tol("example.com/x", "Exists", "", NE, Some(200))],
                )],
                vec![("default/p", Some(100))],
            ),
            (
                "tolerated 50s since t0: overdue",
                tainted("example.com/x", t0()),
                vec![pod(
                    "p",
                    vec![tol("example.com/x", "Exists", "", NE, Some(50))],
                )],
                vec![("default/p", None)],
            ),
            (
                "not-ready default 300s",
                tainted(TAINT_NODE_NOT_READY, t0()),
                vec![pod("p", vec![])],
                vec![("default/p", Some(200))],
            ),
            (
                "terminal, deleting and other-node pods skipped",
                tainted("example.com/x", t0()),
                vec![terminal, deleting, elsewhere],
                vec![],
            ),
        ];
        for (name, n, pods, expected) in cases {
            let expected: Vec<(String, Option<Duration>)> = expected
                .into_iter()
                .map(|(k, d)| (k.to_string(), d.map(Duration::from_secs)))
                .collect();
            assert_eq!(
                pods_to_evict(&n, &pods, DEFAULT_TOLERATION_SECONDS, now),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn taint_without_time_added_counts_from_now() {
        let n = node(vec![taint(TAINT_NODE_UNREACHABLE, "", NE, None)]);
        let got = pods_to_evict(&n, &[pod("p", vec![])], 300, t0());
        assert_eq!(
            got,
            vec![("default/p".to_string(), Some(Duration::from_secs(300)))]
        );
    }

    #[test]
    fn earliest_taint_deadline_wins() {
        // unreachable (default 300 s) since t0, custom taint tolerated 60 s since t0+200
        let n = node(vec![
            taint(TAINT_NODE_UNREACHABLE, "", NE, Some(t0())),
            taint("example.com/x", "", NE, Some(t0() + secs(200))),
        ]);
        let p = pod("p", vec![tol("example.com/x", "Exists", "", NE, Some(60))]);
        let got = pods_to_evict(&n, &[p], 300, t0() + secs(210));
        assert_eq!(
            got,
            vec![("default/p".to_string(), Some(Duration::from_secs(50)))]
        );
    }

    // --- Overflow: tolerationSeconds at int64's max.

    #[test]
    fn overflow_toleration_seconds_saturate() {
        let max = Tolerance::For(Duration::from_secs(i64::MAX.unsigned_abs()));
        let forever_ish = tol(TAINT_NODE_UNREACHABLE, "Exists", "", NE, Some(i64::MAX));
        assert_eq!(get_min_toleration_time([&forever_ish]), max);
        // timeAdded + int64's max seconds is past the representable time: the eviction is
        // at the end of time, not in the past (no wrap) and no panic.
        let n = node(vec![taint(TAINT_NODE_UNREACHABLE, "", NE, Some(t0()))]);
        let got = pods_to_evict(&n, &[pod("p", vec![forever_ish])], 300, t0());
        let until_the_end = Duration::try_from(Timestamp::MAX.duration_since(t0())).unwrap();
        assert_eq!(got, vec![("default/p".to_string(), Some(until_the_end))]);
        // The default toleration at int64's max, too.
        let got = pods_to_evict(&n, &[pod("q", vec![])], i64::MAX, t0());
        assert_eq!(got, vec![("default/q".to_string(), Some(until_the_end))]);
    }
}
