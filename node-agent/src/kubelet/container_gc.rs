//! Container garbage collection, pure: which exited container instances and which dead
//! sandboxes to remove (kuberuntime/kuberuntime_gc.go `evictContainers`,
//! `evictableContainers`, `enforceMaxContainersPerEvictUnit`, `removeOldestN`,
//! `evictSandboxes`, `removeOldestNSandboxes`) under the kubelet's policy
//! (container/container_gc.go `ContainerGCPolicy`: `--minimum-container-ttl-duration`,
//! `--maximum-dead-containers-per-container`, `--maximum-dead-containers`).
//!
//! An evict unit is a (pod UID, container name) pair. Running containers are never
//! evicted, nor ones created less than `min_age` ago; of the rest, each unit keeps its
//! newest `max_per_pod_container` (by attempt, then creation time), and the node keeps at
//! most `max_containers` (first an equal share per unit, at least one, then the oldest
//! across units). The newest exited instance of a container is what the default policy
//! (1 per container) keeps: it is the pod status's `lastState` and `restartCount + 1`
//! comes from it, and `kubectl logs --previous` reads its log.
//!
//! The agent's shell ([`crate::agent::container_gc`]) reads the instances, calls these and
//! removes what they name.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use super::runtime_status::{ContainerState, SandboxState};

/// Upstream `ContainerGCPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerGcPolicy {
    /// The least age (since creation) at which a container can be collected; zero for no
    /// limit (`--minimum-container-ttl-duration`, default 0).
    pub min_age: Duration,
    /// The most dead containers one (pod UID, container name) pair keeps; below zero for
    /// no limit (`--maximum-dead-containers-per-container`, default 1).
    pub max_per_pod_container: i32,
    /// The most dead containers on the node; below zero for no limit
    /// (`--maximum-dead-containers`, default -1).
    pub max_containers: i32,
}

impl Default for ContainerGcPolicy {
    /// The kubelet's flag defaults.
    fn default() -> Self {
        ContainerGcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}

/// What GC reads of one container instance (upstream `containerGCInfo` plus the
/// labels it is keyed by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcContainer {
    pub id: String,
    pub pod_uid: String,
    /// The container's name in the pod spec.
    pub name: String,
    pub created_at: Timestamp,
    pub state: ContainerState,
    /// The restart count the instance was created with (CRI `metadata.attempt`).
    pub attempt: u32,
    /// The sandbox the instance was created in.
    pub sandbox_id: String,
}

/// One container to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub id: String,
    /// The container is in an unknown state and may still run: kill it first (and skip
    /// the removal when that fails), as upstream's `removeOldestN`.
    pub kill_first: bool,
}

/// What GC knows of a pod (upstream `podStateProvider`).
pub trait PodStateProvider {
    /// The pod is gone from the node's pods (deleted, or never known).
    fn is_pod_deleted(&self, uid: &str) -> bool;
    /// The pod's containers have all terminated and will not run again.
    fn is_pod_terminated(&self, uid: &str) -> bool;
}

/// Upstream `byAttempt`: newest first (higher attempt, then later creation).
fn newest_first(a: &GcContainer, b: &GcContainer) -> std::cmp::Ordering {
    b.attempt
        .cmp(&a.attempt)
        .then_with(|| b.created_at.cmp(&a.created_at))
}

/// Upstream `removeOldestN`: the oldest `to_remove` of `containers` go to `out`; the rest
/// are returned (those removed are assumed gone, "so that we're not too aggressive").
fn remove_oldest_n(
    mut containers: Vec<GcContainer>,
    to_remove: usize,
    out: &mut Vec<Eviction>,
) -> Vec<GcContainer> {
    let keep = containers.len().saturating_sub(to_remove);
    if keep > 0 {
        containers.sort_by(newest_first);
    }
    for c in containers.drain(keep..).rev() {
        out.push(Eviction {
            kill_first: c.state == ContainerState::Unknown,
            id: c.id,
        });
    }
    containers
}

type EvictUnits = BTreeMap<(String, String), Vec<GcContainer>>;

fn num_containers(units: &EvictUnits) -> usize {
    units.values().map(Vec::len).sum()
}

/// Upstream `enforceMaxContainersPerEvictUnit`.
fn enforce_max_per_unit(units: &mut EvictUnits, max: usize, out: &mut Vec<Eviction>) {
    for unit in units.values_mut() {
        if unit.len() > max {
            let to_remove = unit.len() - max;
            *unit = remove_oldest_n(std::mem::take(unit), to_remove, out);
        }
    }
}

/// Upstream `evictableContainers`: every container not running and created at least
/// `min_age` before `now`, by evict unit.
fn evictable_containers(
    containers: &[GcContainer],
    min_age: Duration,
    now: Timestamp,
) -> EvictUnits {
    let newest_gc_time =
        now - jiff::SignedDuration::try_from(min_age).unwrap_or(jiff::SignedDuration::MAX);
    let mut units = EvictUnits::new();
    for c in containers {
        if c.state == ContainerState::Running || c.created_at > newest_gc_time {
            continue;
        }
        units
            .entry((c.pod_uid.clone(), c.name.clone()))
            .or_default()
            .push(c.clone());
    }
    units
}

/// Upstream `evictContainers`: the containers to remove, in removal order. Deleted pods'
/// containers all go once every pod source is known (`all_sources_ready`), and
/// terminated pods' too with `evict_terminated_pods` (upstream's
/// `DeleteAllUnusedContainers`); then the per-unit limit, then the node's.
pub fn evict_containers(
    policy: &ContainerGcPolicy,
    containers: &[GcContainer],
    pods: &dyn PodStateProvider,
    all_sources_ready: bool,
    evict_terminated_pods: bool,
    now: Timestamp,
) -> Vec<Eviction> {
    let mut out = Vec::new();
    let mut units = evictable_containers(containers, policy.min_age, now);
    if all_sources_ready {
        let gone: Vec<(String, String)> = units
            .keys()
            .filter(|(uid, _)| {
                pods.is_pod_deleted(uid) || (evict_terminated_pods && pods.is_pod_terminated(uid))
            })
            .cloned()
            .collect();
        for key in gone {
            if let Some(unit) = units.remove(&key) {
                let n = unit.len();
                remove_oldest_n(unit, n, &mut out);
            }
        }
    }
    if let Ok(max) = usize::try_from(policy.max_per_pod_container) {
        enforce_max_per_unit(&mut units, max, &mut out);
    }
    if let Ok(max) = usize::try_from(policy.max_containers)
        && num_containers(&units) > max
    {
        // An equal number per unit (at least one), then the oldest overall.
        let per_unit = (max / units.len()).max(1);
        enforce_max_per_unit(&mut units, per_unit, &mut out);
        let n = num_containers(&units);
        if n > max {
            let mut flattened: Vec<GcContainer> = units.into_values().flatten().collect();
            flattened.sort_by(newest_first);
            remove_oldest_n(flattened, n - max, &mut out);
        }
    }
    out
}

/// What GC reads of one sandbox (upstream `sandboxGCInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSandbox {
    pub id: String,
    pub pod_uid: String,
    pub created_at: Timestamp,
    pub state: SandboxState,
    pub attempt: u32,
}

/// Upstream `evictSandboxes`: the sandboxes to remove. A sandbox is active while it is
/// ready or any container (of any state) was created in it; an inactive one goes when
/// its pod is deleted (or terminated, with `evict_terminated_pods`), or when it is not
/// its pod's newest sandbox.
pub fn evict_sandboxes(
    sandboxes: &[GcSandbox],
    containers: &[GcContainer],
    pods: &dyn PodStateProvider,
    evict_terminated_pods: bool,
) -> Vec<String> {
    let in_use: BTreeSet<&str> = containers.iter().map(|c| c.sandbox_id.as_str()).collect();
    let mut by_pod: BTreeMap<&str, Vec<(&GcSandbox, bool)>> = BTreeMap::new();
    for s in sandboxes {
        let active = s.state == SandboxState::Ready || in_use.contains(s.id.as_str());
        by_pod
            .entry(s.pod_uid.as_str())
            .or_default()
            .push((s, active));
    }
    let mut out = Vec::new();
    for (uid, mut list) in by_pod {
        let gone =
            pods.is_pod_deleted(uid) || (evict_terminated_pods && pods.is_pod_terminated(uid));
        // Upstream `removeOldestNSandboxes`: all of them, or all but the newest.
        let keep = if gone { 0 } else { 1 };
        if keep > 0 {
            list.sort_by(|(a, _), (b, _)| {
                b.attempt
                    .cmp(&a.attempt)
                    .then_with(|| b.created_at.cmp(&a.created_at))
            });
        }
        for (s, active) in list.into_iter().skip(keep).rev() {
            if !active {
                out.push(s.id.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// upstream's `fakePodStateProvider`: pods not in `existing` are deleted, pods not in
    /// `running` are terminated.
    #[derive(Default)]
    struct FakePods {
        existing: HashSet<String>,
        running: HashSet<String>,
    }

    impl PodStateProvider for FakePods {
        fn is_pod_deleted(&self, uid: &str) -> bool {
            !self.existing.contains(uid)
        }
        fn is_pod_terminated(&self, uid: &str) -> bool {
            !self.running.contains(uid)
        }
    }

    fn nanos(n: i64) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(n)).unwrap()
    }

    const EXITED: ContainerState = ContainerState::Exited;
    const RUNNING: ContainerState = ContainerState::Running;

    /// upstream's `makeGCContainer`: the pod's UID is its name; "running" is a running pod,
    /// "deleted" a deleted one.
    fn gc_container(
        pods: &mut FakePods,
        pod: &str,
        name: &str,
        attempt: u32,
        created_at: Timestamp,
        state: ContainerState,
    ) -> GcContainer {
        if pod == "running" {
            pods.running.insert(pod.to_string());
        }
        if pod != "deleted" {
            pods.existing.insert(pod.to_string());
        }
        GcContainer {
            id: format!("{pod}_{name}_{attempt}"),
            pod_uid: pod.to_string(),
            name: name.to_string(),
            created_at,
            state,
            attempt,
            sandbox_id: format!("{pod}-0"),
        }
    }

    fn policy(min_age: Duration, per: i32, max: i32) -> ContainerGcPolicy {
        ContainerGcPolicy {
            min_age,
            max_per_pod_container: per,
            max_containers: max,
        }
    }

    /// kuberuntime_gc_test.go `TestContainerGC`, case by case.
    #[test]
    fn container_gc_table() {
        let now = Timestamp::now();
        let recent = now.as_nanosecond() as i64;
        let default_policy = policy(Duration::from_secs(3600), 2, 6);
        let minute = Duration::from_secs(60);
        let foo_bar = |rows: &[(u32, i64, ContainerState)]| -> Vec<(&'static str, &'static str, u32, i64, ContainerState)> {
            rows.iter().map(|(a, t, s)| ("foo", "bar", *a, *t, *s)).collect()
        };
        // (description, containers, policy, remaining indexes, evictTerminatedPods,
        // allSourcesReady)
        type Case = (
            &'static str,
            Vec<(&'static str, &'static str, u32, i64, ContainerState)>,
            ContainerGcPolicy,
            Vec<usize>,
            bool,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "all containers should be removed when max container limit is 0",
                foo_bar(&[(0, 0, EXITED)]),
                policy(minute, 1, 0),
                vec![],
                false,
                true,
            ),
            (
                "max containers should be complied when no max per pod container limit is set",
                foo_bar(&[
                    (4, 4, EXITED),
                    (3, 3, EXITED),
                    (2, 2, EXITED),
                    (1, 1, EXITED),
                    (0, 0, EXITED),
                ]),
                policy(minute, -1, 4),
                vec![0, 1, 2, 3],
                false,
                true,
            ),
            (
                "no containers should be removed if both max container and per pod container limits are not set",
                foo_bar(&[(2, 2, EXITED), (1, 1, EXITED), (0, 0, EXITED)]),
                policy(minute, -1, -1),
                vec![0, 1, 2],
                false,
                true,
            ),
            (
                "recently started containers should not be removed",
                foo_bar(&[
                    (2, recent, EXITED),
                    (1, recent, EXITED),
                    (0, recent, EXITED),
                ]),
                default_policy,
                vec![0, 1, 2],
                false,
                true,
            ),
            (
                "oldest containers should be removed when per pod container limit exceeded",
                foo_bar(&[(2, 2, EXITED), (1, 1, EXITED), (0, 0, EXITED)]),
                default_policy,
                vec![0, 1],
                false,
                true,
            ),
            (
                "running containers should not be removed",
                foo_bar(&[(2, 2, EXITED), (1, 1, EXITED), (0, 0, RUNNING)]),
                default_policy,
                vec![0, 1, 2],
                false,
                true,
            ),
            (
                "no containers should be removed when limits are not exceeded",
                foo_bar(&[(1, 1, EXITED), (0, 0, EXITED)]),
                default_policy,
                vec![0, 1],
                false,
                true,
            ),
            (
                "max container count should apply per (UID, container) pair",
                vec![
                    ("foo", "bar", 2, 2, EXITED),
                    ("foo", "bar", 1, 1, EXITED),
                    ("foo", "bar", 0, 0, EXITED),
                    ("foo1", "baz", 2, 2, EXITED),
                    ("foo1", "baz", 1, 1, EXITED),
                    ("foo1", "baz", 0, 0, EXITED),
                    ("foo2", "bar", 2, 2, EXITED),
                    ("foo2", "bar", 1, 1, EXITED),
                    ("foo2", "bar", 0, 0, EXITED),
                ],
                default_policy,
                vec![0, 1, 3, 4, 6, 7],
                false,
                true,
            ),
            (
                "max limit should apply and try to keep from every pod",
                vec![
                    ("foo", "bar", 1, 1, EXITED),
                    ("foo", "bar", 0, 0, EXITED),
                    ("foo1", "bar1", 1, 1, EXITED),
                    ("foo1", "bar1", 0, 0, EXITED),
                    ("foo2", "bar2", 1, 1, EXITED),
                    ("foo2", "bar2", 0, 0, EXITED),
                    ("foo3", "bar3", 1, 1, EXITED),
                    ("foo3", "bar3", 0, 0, EXITED),
                    ("foo4", "bar4", 1, 1, EXITED),
                    ("foo4", "bar4", 0, 0, EXITED),
                ],
                default_policy,
                vec![0, 2, 4, 6, 8],
                false,
                true,
            ),
            (
                "oldest pods should be removed if limit exceeded",
                vec![
                    ("foo", "bar", 2, 2, EXITED),
                    ("foo", "bar", 1, 1, EXITED),
                    ("foo1", "bar1", 2, 2, EXITED),
                    ("foo1", "bar1", 1, 1, EXITED),
                    ("foo2", "bar2", 1, 1, EXITED),
                    ("foo3", "bar3", 0, 0, EXITED),
                    ("foo4", "bar4", 1, 1, EXITED),
                    ("foo5", "bar5", 0, 0, EXITED),
                    ("foo6", "bar6", 2, 2, EXITED),
                    ("foo7", "bar7", 1, 1, EXITED),
                ],
                default_policy,
                vec![0, 2, 4, 6, 8, 9],
                false,
                true,
            ),
            (
                "all non-running containers should be removed when evictTerminatedPods is set",
                vec![
                    ("foo", "bar", 2, 2, EXITED),
                    ("foo", "bar", 1, 1, EXITED),
                    ("foo1", "bar1", 2, 2, EXITED),
                    ("foo1", "bar1", 1, 1, EXITED),
                    ("running", "bar2", 1, 1, EXITED),
                    ("foo3", "bar3", 0, 0, RUNNING),
                ],
                default_policy,
                vec![4, 5],
                true,
                true,
            ),
            (
                "containers for deleted pods should be removed",
                vec![
                    ("foo", "bar", 1, 1, EXITED),
                    ("foo", "bar", 0, 0, EXITED),
                    // deleted pods still respect MinAge.
                    ("deleted", "bar1", 2, recent, EXITED),
                    ("deleted", "bar1", 1, 1, EXITED),
                    ("deleted", "bar1", 0, 0, EXITED),
                ],
                default_policy,
                vec![0, 1, 2],
                false,
                true,
            ),
            (
                "containers for deleted pods may not be removed if allSourcesReady is set false",
                vec![("deleted", "bar1", 0, 0, EXITED)],
                default_policy,
                vec![0],
                true,
                false,
            ),
        ];
        for (description, rows, policy, remain, evict_terminated, sources_ready) in cases {
            let mut pods = FakePods::default();
            let containers: Vec<GcContainer> = rows
                .iter()
                .map(|(pod, name, attempt, t, state)| {
                    gc_container(&mut pods, pod, name, *attempt, nanos(*t), *state)
                })
                .collect();
            let evicted: HashSet<String> = evict_containers(
                &policy,
                &containers,
                &pods,
                sources_ready,
                evict_terminated,
                now,
            )
            .into_iter()
            .map(|e| e.id)
            .collect();
            let left: Vec<usize> = (0..containers.len())
                .filter(|i| !evicted.contains(&containers[*i].id))
                .collect();
            assert_eq!(left, remain, "{description}");
        }
    }

    /// `TestUnknownStateContainerGC`: a container in an unknown state is killed before
    /// it is removed.
    #[test]
    fn unknown_state_containers_are_killed_first() {
        let mut pods = FakePods::default();
        let c = gc_container(
            &mut pods,
            "foo",
            "bar",
            0,
            nanos(0),
            ContainerState::Unknown,
        );
        let got = evict_containers(
            &policy(Duration::from_secs(3600), 0, 0),
            &[c],
            &pods,
            true,
            false,
            Timestamp::now(),
        );
        assert_eq!(
            got,
            vec![Eviction {
                id: "foo_bar_0".into(),
                kill_first: true
            }]
        );
    }

    /// The agent's case: a crash-looping container under the default policy keeps its
    /// newest exited instance besides the running one, and the oldest go first.
    #[test]
    fn the_default_policy_keeps_the_newest_exited_instance() {
        let mut pods = FakePods::default();
        let mut containers: Vec<GcContainer> = (0..5)
            .map(|i| gc_container(&mut pods, "p", "c", i, nanos(i64::from(i)), EXITED))
            .collect();
        containers.push(gc_container(&mut pods, "p", "c", 5, nanos(5), RUNNING));
        let got: Vec<String> = evict_containers(
            &ContainerGcPolicy::default(),
            &containers,
            &pods,
            true,
            false,
            Timestamp::now(),
        )
        .into_iter()
        .map(|e| e.id)
        .collect();
        assert_eq!(got, ["p_c_0", "p_c_1", "p_c_2", "p_c_3"]);
    }

    /// kuberuntime_gc_test.go `TestSandboxGC`, case by case. Sandbox IDs are
    /// `<uid>-<attempt>`; pods are foo1 (uid 1234), foo2 (5678) and deleted (9012).
    #[test]
    fn sandbox_gc_table() {
        use SandboxState::{NotReady, Ready};
        // (pod uid, attempt, state, pod exists, created at)
        type S = (&'static str, u32, SandboxState, bool, i64);
        // (pod uid, sandbox attempt)
        type C = (&'static str, u32);
        // (description, sandboxes, containers, remaining indexes, evictTerminatedPods)
        type Case = (&'static str, Vec<S>, Vec<C>, Vec<usize>, bool);
        let cases: Vec<Case> = vec![
            (
                "notready sandboxes without containers for deleted pods should be garbage collected.",
                vec![("9012", 0, NotReady, false, 0)],
                vec![],
                vec![],
                false,
            ),
            (
                "ready sandboxes without containers for deleted pods should not be garbage collected.",
                vec![("9012", 0, Ready, false, 0)],
                vec![],
                vec![0],
                false,
            ),
            (
                "sandboxes for existing pods should not be garbage collected.",
                vec![("1234", 0, Ready, true, 0), ("5678", 0, NotReady, true, 0)],
                vec![],
                vec![0, 1],
                false,
            ),
            (
                "older exited sandboxes without containers for existing pods should be garbage collected if there are more than one exited sandboxes.",
                vec![
                    ("1234", 1, NotReady, true, 1),
                    ("1234", 0, NotReady, true, 0),
                ],
                vec![],
                vec![0],
                false,
            ),
            (
                "older exited sandboxes with containers for existing pods should not be garbage collected even if there are more than one exited sandboxes.",
                vec![
                    ("1234", 1, NotReady, true, 1),
                    ("1234", 0, NotReady, true, 0),
                ],
                vec![("1234", 0)],
                vec![0, 1],
                false,
            ),
            (
                "non-running sandboxes for existing pods should be garbage collected if evictTerminatedPods is set.",
                vec![("1234", 0, Ready, true, 0), ("5678", 0, NotReady, true, 0)],
                vec![],
                vec![0],
                true,
            ),
            (
                "sandbox with containers should not be garbage collected.",
                vec![("1234", 0, NotReady, true, 0)],
                vec![("1234", 0)],
                vec![0],
                false,
            ),
            (
                "multiple sandboxes should be handled properly.",
                vec![
                    ("1234", 1, Ready, true, 1),
                    ("1234", 0, NotReady, true, 0),
                    ("5678", 1, NotReady, true, 1),
                    ("5678", 0, NotReady, true, 0),
                    ("9012", 0, NotReady, false, 0),
                ],
                vec![("5678", 1)],
                vec![0, 2],
                false,
            ),
        ];
        for (description, rows, containers, remain, evict_terminated) in cases {
            let mut pods = FakePods::default();
            let sandboxes: Vec<GcSandbox> = rows
                .iter()
                .map(|(uid, attempt, state, exists, t)| {
                    if *exists {
                        pods.existing.insert(uid.to_string());
                    }
                    GcSandbox {
                        id: format!("{uid}-{attempt}"),
                        pod_uid: uid.to_string(),
                        created_at: nanos(*t),
                        state: *state,
                        attempt: *attempt,
                    }
                })
                .collect();
            let containers: Vec<GcContainer> = containers
                .iter()
                .map(|(uid, attempt)| GcContainer {
                    id: format!("{uid}-c"),
                    pod_uid: uid.to_string(),
                    name: "bar".into(),
                    created_at: nanos(0),
                    state: EXITED,
                    attempt: 0,
                    sandbox_id: format!("{uid}-{attempt}"),
                })
                .collect();
            let evicted: HashSet<String> =
                evict_sandboxes(&sandboxes, &containers, &pods, evict_terminated)
                    .into_iter()
                    .collect();
            let left: Vec<usize> = (0..sandboxes.len())
                .filter(|i| !evicted.contains(&sandboxes[*i].id))
                .collect();
            assert_eq!(left, remain, "{description}");
        }
    }
}
