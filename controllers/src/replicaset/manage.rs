//! The decisions of the ReplicaSet controller's `manageReplicas` (upstream:
//! `pkg/controller/replicaset/replica_set.go`) and the pod helpers it uses from
//! `pkg/controller/controller_utils.go`: how many pods to create or delete (capped at
//! [`BURST_REPLICAS`] per sync), the slow-start batch sizes of the creations, which pods to
//! delete ([`ActivePodsWithRanks`], [`get_pods_to_delete`]) and the pod built from the
//! template ([`get_pod_from_template`]).
use std::cmp::Ordering;
use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rekube_crds::{Pod, ReplicaSet};

use crate::util::labels::is_dns1123_subdomain;
use crate::util::pod::{
    POD_PENDING, POD_RUNNING, POD_UNKNOWN, is_pod_active, is_pod_ready, max_container_restarts,
    pod_deletion_cost, pod_phase, pod_ready_since,
};

/// The most pods one sync creates or deletes (upstream: `replicaset.BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// The size of the first creation batch (upstream: `controller.SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH_SIZE: usize = 1;

/// The longest `generateName` base the apiserver keeps before appending 5 random characters
/// (upstream: apiserver `names.MaxGeneratedNameLength`, 63 - 5).
pub const MAX_GENERATED_NAME_LENGTH: usize = 58;

/// Condition reason when creating pods failed (upstream: `controller.FailedCreatePodReason`).
pub const FAILED_CREATE_REASON: &str = "FailedCreate";
/// Condition reason when deleting pods failed (upstream: `controller.FailedDeletePodReason`).
pub const FAILED_DELETE_REASON: &str = "FailedDelete";

/// Why `manageReplicas` failed. The create/delete messages are what upstream records in the
/// ReplicaFailure condition: the API error for a create, `unable to delete pods: <API error>`
/// for a delete (upstream: the errors of `RealPodControl.CreatePods` / `DeletePod`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    /// Creating a pod of `replica_set` (`namespace/name`) failed with the API error `message`.
    #[error("{message}")]
    Create {
        replica_set: String,
        message: String,
    },
    /// Deleting `pod` (`namespace/name`) of `replica_set` failed with the API error `message`.
    #[error("unable to delete pods: {message}")]
    Delete {
        replica_set: String,
        pod: String,
        message: String,
    },
    /// The pod template of `replica_set` has no labels (upstream: "unable to create pods, no
    /// labels").
    #[error("unable to create pods for replicaset {replica_set}: no labels")]
    NoLabels { replica_set: String },
    /// The controller reference given for `replica_set`'s pods is incomplete (upstream:
    /// `validateControllerRef`).
    #[error("invalid controller reference for the pods of replicaset {replica_set}: {reason}")]
    InvalidControllerRef { replica_set: String, reason: String },
}

/// What `manageReplicas` must do (upstream: the sign of `diff`, capped at `burstReplicas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaDiff {
    /// Create this many pods.
    Create(usize),
    /// Delete this many pods.
    Delete(usize),
    /// The ReplicaSet has as many active pods as it wants.
    None,
}

/// The desired replica count, 1 when unset (upstream: `*(rs.Spec.Replicas)` after defaulting).
pub fn desired_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `minReadySeconds`, 0 when unset.
pub fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// How many pods to create or delete given the number of active claimed pods, capped at
/// [`BURST_REPLICAS`] (upstream: `manageReplicas`' `diff := len(filteredPods) -
/// int(*(rs.Spec.Replicas))` and its `burstReplicas` cap).
pub fn replica_diff(rs: &ReplicaSet, active_pods: usize) -> ReplicaDiff {
    replica_diff_with_burst(rs, active_pods, BURST_REPLICAS)
}

/// [`replica_diff`] with a custom burst (upstream: the controller's `burstReplicas` field).
pub fn replica_diff_with_burst(rs: &ReplicaSet, active_pods: usize, burst: usize) -> ReplicaDiff {
    let desired = usize::try_from(desired_replicas(rs).max(0)).unwrap_or(0);
    match active_pods.cmp(&desired) {
        Ordering::Less => ReplicaDiff::Create((desired - active_pods).min(burst)),
        Ordering::Greater => ReplicaDiff::Delete((active_pods - desired).min(burst)),
        Ordering::Equal => ReplicaDiff::None,
    }
}

/// The sizes of the creation batches for `count` pods: `initial`, then doubling, the last one
/// holding the remainder (upstream: `slowStartBatch`, which stops after the first batch with a
/// failure; the pods of the batches not attempted are "skipped" and their expected creations
/// lowered).
pub fn slow_start_batches(count: usize, initial: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut batch = remaining.min(initial);
    while batch > 0 {
        batches.push(batch);
        remaining -= batch;
        batch = batch.saturating_mul(2).min(remaining);
    }
    batches
}

/// Order of the pod phases for deletion (upstream: `podPhaseToOrdinal`; other phases are 0).
fn phase_ordinal(phase: &str) -> u8 {
    match phase {
        POD_PENDING => 0,
        POD_UNKNOWN => 1,
        POD_RUNNING => 2,
        _ => 0,
    }
}

/// `math.Log2` as Go computes it (frexp, then `Log(frac)/Ln2 + exp`, exact for powers of 2),
/// so that bucket boundaries match upstream.
fn go_log2(x: f64) -> f64 {
    // x is a positive normal float here (a duration of at least 1ns).
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    if frac == 0.5 {
        return (exp - 1) as f64;
    }
    frac.ln() * (1.0 / std::f64::consts::LN_2) + exp as f64
}

/// `now - t` as a Go `time.Duration` (nanoseconds, saturating at the int64 range).
fn go_sub_nanos(now: Timestamp, t: Timestamp) -> i64 {
    let d = now.as_nanosecond() - t.as_nanosecond();
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

/// The difference of the base-2 logarithmic ranks of the ages of two timestamps (upstream:
/// `logarithmicRankDiff`): a non-positive age ranks -1.
fn logarithmic_rank_diff(t1: Timestamp, t2: Timestamp, now: Timestamp) -> i64 {
    let rank = |t| {
        let d = go_sub_nanos(now, t);
        if d > 0 { go_log2(d as f64) as i64 } else { -1 }
    };
    rank(t1) - rank(t2)
}

/// Upstream `afterOrZero`: whether t1 is after t2, a zero (unset) time counting as after.
fn after_or_zero(t1: Option<Timestamp>, t2: Option<Timestamp>) -> bool {
    match (t1, t2) {
        (Some(a), Some(b)) => a > b,
        (a, _) => a.is_none(),
    }
}

/// What `Less` reads of one pod, computed once.
#[derive(Debug, Clone)]
struct RankKey<'a> {
    node: &'a str,
    phase: u8,
    ready: bool,
    deletion_cost: i32,
    ready_since: Option<Timestamp>,
    restarts: (i32, i32),
    created: Option<Timestamp>,
    uid: &'a str,
}

impl<'a> RankKey<'a> {
    fn of(pod: &'a Pod) -> Self {
        RankKey {
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or(""),
            phase: phase_ordinal(pod_phase(pod)),
            ready: is_pod_ready(pod),
            deletion_cost: pod_deletion_cost(pod),
            ready_since: pod_ready_since(pod),
            restarts: max_container_restarts(pod),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            uid: pod.metadata.uid.as_deref().unwrap_or(""),
        }
    }
}

/// Pods with ranks, sortable so that the pods to delete first come first (upstream:
/// `controller.ActivePodsWithRanks`, with the PodDeletionCost and LogarithmicScaleDown
/// features on, as they are by default).
#[derive(Debug, Clone)]
pub struct ActivePodsWithRanks<'a> {
    pods: Vec<&'a Pod>,
    /// The rank of each pod: the number of related active pods on its node.
    rank: Vec<usize>,
    /// The time the ready and creation times are bucketed against.
    now: Timestamp,
    keys: Vec<RankKey<'a>>,
}

impl<'a> ActivePodsWithRanks<'a> {
    /// Pairs the pods with their ranks (same length; missing ranks count as 0).
    pub fn new(pods: Vec<&'a Pod>, rank: Vec<usize>, now: Timestamp) -> Self {
        let keys = pods.iter().map(|p| RankKey::of(p)).collect();
        ActivePodsWithRanks {
            pods,
            rank,
            now,
            keys,
        }
    }

    /// The pods, in their current order.
    pub fn pods(&self) -> &[&'a Pod] {
        &self.pods
    }

    /// The rank of each pod, in the order of [`Self::pods`].
    pub fn ranks(&self) -> &[usize] {
        &self.rank
    }

    /// The pods, in their current order.
    pub fn into_pods(self) -> Vec<&'a Pod> {
        self.pods
    }

    fn rank_of(&self, i: usize) -> usize {
        self.rank.get(i).copied().unwrap_or(0)
    }

    /// Whether pod `i` should be deleted before pod `j` (upstream: `ActivePodsWithRanks.Less`):
    /// 1. unassigned < assigned;
    /// 2. Pending < Unknown < Running;
    /// 3. not ready < ready;
    /// 4. lower pod-deletion-cost < higher;
    /// 5. higher rank (more related pods on the same node) < lower rank;
    /// 6. both ready: ready more recently first, by log2 buckets of the time ready, ties in a
    ///    bucket broken by UID (an unset ready time counts as the most recent);
    /// 7. more container restarts (regular, then sidecar) < fewer;
    /// 8. created more recently first, by log2 buckets of the age, ties broken by UID (an
    ///    unset creation time counts as the most recent).
    pub fn less(&self, i: usize, j: usize) -> bool {
        let (a, b) = (&self.keys[i], &self.keys[j]);
        // 1. Unassigned < assigned
        if a.node != b.node && (a.node.is_empty() || b.node.is_empty()) {
            return a.node.is_empty();
        }
        // 2. PodPending < PodUnknown < PodRunning
        if a.phase != b.phase {
            return a.phase < b.phase;
        }
        // 3. Not ready < ready
        if a.ready != b.ready {
            return !a.ready;
        }
        // 4. lower pod-deletion-cost < higher pod-deletion cost
        if a.deletion_cost != b.deletion_cost {
            return a.deletion_cost < b.deletion_cost;
        }
        // 5. Doubled up < not doubled up
        let (ri, rj) = (self.rank_of(i), self.rank_of(j));
        if ri != rj {
            return ri > rj;
        }
        // 6. Been ready for empty time < less time < more time
        if a.ready && b.ready && a.ready_since != b.ready_since {
            return match (a.ready_since, b.ready_since) {
                (Some(t1), Some(t2)) => {
                    let diff = logarithmic_rank_diff(t1, t2, self.now);
                    if diff == 0 { a.uid < b.uid } else { diff < 0 }
                }
                (t1, t2) => after_or_zero(t1, t2),
            };
        }
        // 7. Pods with containers with higher restart counts < lower restart counts
        if a.restarts.0 != b.restarts.0 {
            return a.restarts.0 > b.restarts.0;
        }
        if a.restarts.1 != b.restarts.1 {
            return a.restarts.1 > b.restarts.1;
        }
        // 8. Empty creation time pods < newer pods < older pods
        if a.created != b.created {
            return match (a.created, b.created) {
                (Some(t1), Some(t2)) => {
                    let diff = logarithmic_rank_diff(t1, t2, self.now);
                    if diff == 0 { a.uid < b.uid } else { diff < 0 }
                }
                (t1, t2) => after_or_zero(t1, t2),
            };
        }
        false
    }

    /// Sorts the pods (and their ranks) by [`Self::less`]. A stable merge sort that tolerates
    /// the comparison not being a strict weak order (the UID tie-break inside log buckets can
    /// make it intransitive), where `slice::sort_by` could panic; upstream uses Go's unstable
    /// `sort.Sort`, so the order of pods equal under `less` may differ from upstream's.
    pub fn sort(&mut self) {
        let n = self.pods.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut buf = order.clone();
        merge_sort(&mut order, &mut buf, &|i, j| self.less(i, j));
        self.pods = order.iter().map(|&i| self.pods[i]).collect();
        self.rank = order.iter().map(|&i| self.rank_of(i)).collect();
        self.keys = order.iter().map(|&i| self.keys[i].clone()).collect();
    }
}

fn merge_sort(v: &mut [usize], buf: &mut [usize], less: &dyn Fn(usize, usize) -> bool) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let mid = n / 2;
    {
        let (lv, rv) = v.split_at_mut(mid);
        let (lb, rb) = buf.split_at_mut(mid);
        merge_sort(lv, lb, less);
        merge_sort(rv, rb, less);
    }
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < mid && j < n {
        // take from the right only when strictly less: stable
        if less(v[j], v[i]) {
            buf[k] = v[j];
            j += 1;
        } else {
            buf[k] = v[i];
            i += 1;
        }
        k += 1;
    }
    buf[k..k + (mid - i)].copy_from_slice(&v[i..mid]);
    k += mid - i;
    buf[k..k + (n - j)].copy_from_slice(&v[j..n]);
    v.copy_from_slice(&buf[..n]);
}

/// Ranks each pod by the number of active pods of `related` on its node (upstream:
/// `getPodsRankedByRelatedPodsOnSameNode`; unassigned pods share the node `""`).
pub fn get_pods_ranked_by_related_pods_on_same_node<'a>(
    pods_to_rank: &[&'a Pod],
    related: &[&Pod],
    now: Timestamp,
) -> ActivePodsWithRanks<'a> {
    let mut pods_on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related.iter().filter(|p| is_pod_active(p)) {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        *pods_on_node.entry(node).or_default() += 1;
    }
    let rank = pods_to_rank
        .iter()
        .map(|p| {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("");
            pods_on_node.get(node).copied().unwrap_or(0)
        })
        .collect();
    ActivePodsWithRanks::new(pods_to_rank.to_vec(), rank, now)
}

/// The `diff` pods to delete, preferring those in earlier phases of startup (upstream:
/// `getPodsToDelete`): when deleting fewer than all of `filtered`, they are ranked by the
/// related pods (the pods of every ReplicaSet with the same controller, from
/// `getIndirectlyRelatedPods`) on the same node and sorted by [`ActivePodsWithRanks`].
pub fn get_pods_to_delete<'a>(
    filtered: &[&'a Pod],
    related: &[&Pod],
    diff: usize,
    now: Timestamp,
) -> Vec<&'a Pod> {
    if diff < filtered.len() {
        let mut ranked = get_pods_ranked_by_related_pods_on_same_node(filtered, related, now);
        ranked.sort();
        let mut pods = ranked.into_pods();
        pods.truncate(diff);
        return pods;
    }
    filtered.to_vec()
}

/// Upstream `maskTrailingDash`: a trailing dash of a name that gets a suffix appended is
/// replaced before validation (upstream keeps `name[:len-2] + "a"`, which also drops the
/// character before the dash; reproduced as is).
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        format!("{}a", &name[..name.len() - 2])
    } else {
        name.to_string()
    }
}

/// Whether `prefix` is a valid pod `generateName` (upstream: `ValidatePodName(prefix, true)`,
/// i.e. `NameIsDNSSubdomain` with the trailing dash masked).
fn is_valid_pod_name_prefix(prefix: &str) -> bool {
    is_dns1123_subdomain(&mask_trailing_dash(prefix))
}

/// The `generateName` of the pods of controller `name`: `name-`, or `name` if that is not a
/// valid prefix (upstream: `getPodsPrefix`). Upstream does not shorten long names here: the
/// apiserver keeps the first [`MAX_GENERATED_NAME_LENGTH`] characters of the prefix and
/// appends 5 random characters ([`generated_name_base`]).
pub fn get_pods_prefix(controller_name: &str) -> String {
    let prefix = format!("{controller_name}-");
    if is_valid_pod_name_prefix(&prefix) {
        prefix
    } else {
        controller_name.to_string()
    }
}

/// The part of a `generateName` the apiserver keeps before appending 5 random characters
/// (upstream: apiserver `SimpleNameGenerator.GenerateName`).
pub fn generated_name_base(generate_name: &str) -> &str {
    if generate_name.len() > MAX_GENERATED_NAME_LENGTH {
        // names are ASCII once validated; fall back to a char boundary otherwise
        let mut end = MAX_GENERATED_NAME_LENGTH;
        while !generate_name.is_char_boundary(end) {
            end -= 1;
        }
        &generate_name[..end]
    } else {
        generate_name
    }
}

/// The pod to create for a controller: the template's labels, annotations, finalizers and
/// spec, `generateName` from [`get_pods_prefix`] of the parent's name, and `controller_ref` as
/// its only owner reference (upstream: `controller.GetPodFromTemplate`). The namespace is left
/// unset, as upstream leaves it to the create call.
pub fn get_pod_from_template(
    template: &PodTemplateSpec,
    parent: &ObjectMeta,
    controller_ref: OwnerReference,
) -> Pod {
    let tmeta = template.metadata.as_ref();
    let labels = tmeta
        .and_then(|m| m.labels.clone())
        .filter(|l| !l.is_empty());
    let annotations = tmeta
        .and_then(|m| m.annotations.clone())
        .filter(|a| !a.is_empty());
    let finalizers = tmeta
        .and_then(|m| m.finalizers.clone())
        .filter(|f| !f.is_empty());
    Pod {
        metadata: ObjectMeta {
            labels,
            annotations,
            finalizers,
            generate_name: Some(get_pods_prefix(parent.name.as_deref().unwrap_or(""))),
            owner_references: Some(vec![controller_ref]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Checks a controller reference before creating pods with it (upstream:
/// `validateControllerRef`).
pub fn validate_controller_ref(
    replica_set: &str,
    controller_ref: &OwnerReference,
) -> Result<(), ManageError> {
    let reason = if controller_ref.api_version.is_empty() {
        "controllerRef has empty APIVersion"
    } else if controller_ref.kind.is_empty() {
        "controllerRef has empty Kind"
    } else if controller_ref.controller != Some(true) {
        "controllerRef.Controller is not set to true"
    } else if controller_ref.block_owner_deletion != Some(true) {
        "controllerRef.BlockOwnerDeletion is not set"
    } else {
        return Ok(());
    };
    Err(ManageError::InvalidControllerRef {
        replica_set: replica_set.to_string(),
        reason: reason.to_string(),
    })
}

/// The pod `CreatePods` would send, or why it would refuse (upstream:
/// `RealPodControl.CreatePods` up to the API call: `validateControllerRef`,
/// `GetPodFromTemplate`, and "unable to create pods, no labels").
pub fn pod_for_create(rs: &ReplicaSet, controller_ref: OwnerReference) -> Result<Pod, ManageError> {
    let key = format!(
        "{}/{}",
        rs.metadata.namespace.as_deref().unwrap_or(""),
        rs.metadata.name.as_deref().unwrap_or("")
    );
    validate_controller_ref(&key, &controller_ref)?;
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let pod = get_pod_from_template(&template, &rs.metadata, controller_ref);
    if pod.metadata.labels.is_none() {
        return Err(ManageError::NoLabels { replica_set: key });
    }
    Ok(pod)
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::util::pod::POD_DELETION_COST;
    use crate::util::pod::tests::ready_condition;
    use jiff::SignedDuration;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use std::collections::BTreeMap;

    fn rs_with(replicas: Option<i32>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("foobar".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas,
                selector: LabelSelector::default(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn replica_diff_and_burst_cap() {
        let cases = [
            (Some(3), 0, ReplicaDiff::Create(3)),
            (Some(3), 3, ReplicaDiff::None),
            (Some(3), 5, ReplicaDiff::Delete(2)),
            (Some(0), 2, ReplicaDiff::Delete(2)),
            (None, 0, ReplicaDiff::Create(1)),
            (None, 1, ReplicaDiff::None),
            (Some(1000), 0, ReplicaDiff::Create(500)),
            (Some(1000), 499, ReplicaDiff::Create(500)),
            (Some(1000), 501, ReplicaDiff::Create(499)),
            (Some(0), 1200, ReplicaDiff::Delete(500)),
            (Some(700), 1200, ReplicaDiff::Delete(500)),
            (Some(-1), 0, ReplicaDiff::None),
        ];
        for (replicas, active, want) in cases {
            assert_eq!(
                replica_diff(&rs_with(replicas), active),
                want,
                "{replicas:?} {active}"
            );
        }
        assert_eq!(
            replica_diff_with_burst(&rs_with(Some(100)), 0, 10),
            ReplicaDiff::Create(10)
        );
        assert_eq!(desired_replicas(&rs_with(None)), 1);
        assert_eq!(min_ready_seconds(&rs_with(None)), 0);
    }

    // Port of replica_set_test.go TestSlowStartBatch (batch sizes and how many calls each
    // failure pattern makes) and TestSyncReplicaSetCreateFailures' call bound.
    #[test]
    fn slow_start_batch_sizes() {
        assert_eq!(slow_start_batches(10, 1), vec![1, 2, 4, 3]);
        assert_eq!(slow_start_batches(0, 1), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1, 1), vec![1]);
        assert_eq!(slow_start_batches(7, 1), vec![1, 2, 4]);
        assert_eq!(
            slow_start_batches(500, 1),
            vec![1, 2, 4, 8, 16, 32, 64, 128, 245]
        );
        assert_eq!(slow_start_batches(10, 3), vec![3, 6, 1]);
        assert_eq!(slow_start_batches(2, 5), vec![2]);
        assert_eq!(slow_start_batches(5, 0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(500, 1).iter().sum::<usize>(), 500);

        // Simulate slowStartBatch: run batches until one has a failure.
        let run = |count: usize, call_limit: usize| {
            let (mut calls, mut successes, mut failed) = (0, 0, false);
            for batch in slow_start_batches(count, 1) {
                for _ in 0..batch {
                    calls += 1;
                    if calls > call_limit {
                        failed = true;
                    } else {
                        successes += 1;
                    }
                }
                if failed {
                    break;
                }
            }
            (successes, failed, calls)
        };
        // (count, callLimit) -> (successes, err, calls)
        assert_eq!(run(10, 0), (0, true, 1));
        assert_eq!(run(10, 10), (10, false, 10));
        assert_eq!(run(10, 5), (5, true, 7));
        // TestSyncReplicaSetCreateFailures: 100 wanted, 10 allowed: <= 1+2+4+8 calls
        let (successes, failed, calls) = run(100, 10);
        assert_eq!((successes, failed), (10, true));
        assert!(calls <= 15, "{calls}");
    }

    struct P {
        name: &'static str,
        node: &'static str,
        phase: &'static str,
        ready: bool,
        restarts: i32,
        ready_since: Option<Timestamp>,
        created: Option<Timestamp>,
        cost: Option<&'static str>,
    }

    fn mk(p: P) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(p.name.into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.creation_timestamp = p.created.map(Time);
        pod.metadata.annotations = p
            .cost
            .map(|c| BTreeMap::from([(POD_DELETION_COST.to_string(), c.to_string())]));
        pod.spec = Some(PodSpec {
            node_name: (!p.node.is_empty()).then(|| p.node.to_string()),
            ..Default::default()
        });
        let (conditions, statuses) = if p.ready {
            (
                Some(vec![ready_condition("True", p.ready_since)]),
                Some(vec![ContainerStatus {
                    restart_count: p.restarts,
                    ..Default::default()
                }]),
            )
        } else {
            (None, None)
        };
        pod.status = Some(PodStatus {
            phase: Some(p.phase.into()),
            conditions,
            container_statuses: statuses,
            ..Default::default()
        });
        pod
    }

    /// upstream TestSortingActivePodsWithRanks pod(podName, nodeName, phase, ready, restarts,
    /// readySince, created, annotations)
    #[allow(clippy::too_many_arguments)]
    fn pod(
        name: &'static str,
        node: &'static str,
        phase: &'static str,
        ready: bool,
        restarts: i32,
        ready_since: Option<Timestamp>,
        created: Option<Timestamp>,
        cost: Option<&'static str>,
    ) -> Pod {
        mk(P {
            name,
            node,
            phase,
            ready,
            restarts,
            ready_since,
            created,
            cost,
        })
    }

    // Port of controller_utils_test.go TestSortingActivePodsWithRanks.
    #[test]
    fn sorting_active_pods_with_ranks() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        // now.AddDate(0, -1, 0): one month earlier (30 or 31 days; any month works here)
        let then_1_month = now - SignedDuration::from_hours(24 * 30);
        let then_2_hours = now - SignedDuration::from_hours(2);
        let then_5_hours = now - SignedDuration::from_hours(5);
        let then_8_hours = now - SignedDuration::from_hours(8);
        let zero = None;
        let (pending, unknown, running) = (POD_PENDING, POD_UNKNOWN, POD_RUNNING);

        let unscheduled = pod("unscheduled", "", pending, false, 0, zero, zero, None);
        let scheduled_pending = pod("pending", "node", pending, false, 0, zero, zero, None);
        let unknown_phase = pod("unknown-phase", "node", unknown, false, 0, zero, zero, None);
        let running_not_ready = pod("not-ready", "node", running, false, 0, zero, zero, None);
        let running_ready_no_ltt = pod(
            "ready-no-last-transition-time",
            "node",
            running,
            true,
            0,
            zero,
            zero,
            None,
        );
        let running_ready_now = pod(
            "ready-now",
            "node",
            running,
            true,
            0,
            Some(now),
            Some(now),
            None,
        );
        let running_ready_then = pod(
            "ready-then",
            "node",
            running,
            true,
            0,
            Some(then_1_month),
            Some(then_1_month),
            None,
        );
        let running_ready_now_high_restarts = pod(
            "ready-high-restarts",
            "node",
            running,
            true,
            9001,
            Some(now),
            Some(now),
            None,
        );
        let running_ready_now_created_then = pod(
            "ready-now-created-then",
            "node",
            running,
            true,
            0,
            Some(now),
            Some(then_1_month),
            None,
        );
        let low_cost = pod(
            "low-deletion-cost",
            "node",
            running,
            true,
            0,
            Some(now),
            Some(then_1_month),
            Some("10"),
        );
        let high_cost = pod(
            "high-deletion-cost",
            "node",
            running,
            true,
            0,
            Some(now),
            Some(then_1_month),
            Some("100"),
        );
        let unscheduled_5h = pod(
            "unscheduled-5-hours",
            "",
            pending,
            false,
            0,
            Some(then_5_hours),
            Some(then_5_hours),
            None,
        );
        let unscheduled_8h = pod(
            "unscheduled-10-hours",
            "",
            pending,
            false,
            0,
            Some(then_8_hours),
            Some(then_8_hours),
            None,
        );
        let ready_2h = pod(
            "ready-2-hours",
            "",
            running,
            true,
            0,
            Some(then_2_hours),
            Some(then_1_month),
            None,
        );
        let ready_5h = pod(
            "ready-5-hours",
            "",
            running,
            true,
            0,
            Some(then_5_hours),
            Some(then_1_month),
            None,
        );
        let ready_10h = pod(
            "ready-10-hours",
            "",
            running,
            true,
            0,
            Some(then_8_hours),
            Some(then_1_month),
            None,
        );

        let equality: Vec<(&Pod, &Pod)> = vec![
            (&unscheduled, &unscheduled),
            (&scheduled_pending, &scheduled_pending),
            (&unknown_phase, &unknown_phase),
            (&running_not_ready, &running_not_ready),
            (
                &running_ready_now_created_then,
                &running_ready_now_created_then,
            ),
            (&running_ready_now, &running_ready_now),
            (&running_ready_then, &running_ready_then),
            (
                &running_ready_now_high_restarts,
                &running_ready_now_high_restarts,
            ),
            (&unscheduled_5h, &unscheduled_8h),
            (&ready_5h, &ready_10h),
        ];
        for (i, (p1, p2)) in equality.into_iter().enumerate() {
            let ranked = ActivePodsWithRanks::new(vec![p1, p2], vec![1, 1], now);
            assert!(
                !ranked.less(0, 1) && !ranked.less(1, 0),
                "equality {i}: expected {:?} to be equivalent to {:?}",
                p1.metadata.name,
                p2.metadata.name
            );
        }

        let inequality: Vec<((&Pod, usize), (&Pod, usize))> = vec![
            ((&unscheduled, 1), (&scheduled_pending, 2)),
            ((&unscheduled, 2), (&scheduled_pending, 1)),
            ((&scheduled_pending, 1), (&unknown_phase, 2)),
            ((&unknown_phase, 1), (&running_not_ready, 2)),
            ((&running_not_ready, 1), (&running_ready_no_ltt, 1)),
            ((&running_ready_no_ltt, 1), (&running_ready_now, 1)),
            ((&running_ready_now, 2), (&running_ready_no_ltt, 1)),
            ((&running_ready_now, 1), (&running_ready_then, 1)),
            ((&running_ready_now, 2), (&running_ready_then, 1)),
            (
                (&running_ready_now_high_restarts, 1),
                (&running_ready_now, 1),
            ),
            (
                (&running_ready_now, 2),
                (&running_ready_now_high_restarts, 1),
            ),
            (
                (&running_ready_now, 1),
                (&running_ready_now_created_then, 1),
            ),
            (
                (&running_ready_now_created_then, 2),
                (&running_ready_now, 1),
            ),
            ((&low_cost, 2), (&high_cost, 1)),
            ((&ready_2h, 1), (&ready_5h, 1)),
        ];
        for (i, ((lesser, lr), (greater, gr))) in inequality.into_iter().enumerate() {
            let ranked = ActivePodsWithRanks::new(vec![lesser, greater], vec![lr, gr], now);
            assert!(
                ranked.less(0, 1),
                "inequality {i}: expected {:?} (rank {lr}) < {:?} (rank {gr})",
                lesser.metadata.name,
                greater.metadata.name
            );
            assert!(
                !ranked.less(1, 0),
                "inequality {i}: expected {:?} (rank {gr}) not < {:?} (rank {lr})",
                greater.metadata.name,
                lesser.metadata.name
            );
        }
    }

    // Port of controller_utils_test.go TestSortingActivePods (full order, 20 shuffles).
    #[test]
    fn sorting_active_pods_full_order() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let then = now - SignedDuration::from_hours(24 * 30);
        let restarts = |a: i32, b: i32| {
            Some(vec![
                ContainerStatus {
                    restart_count: a,
                    ..Default::default()
                },
                ContainerStatus {
                    restart_count: b,
                    ..Default::default()
                },
            ])
        };
        let base = |name: &str, node: &str, phase: &str| {
            let mut p = Pod::default();
            p.metadata.name = Some(name.into());
            p.spec = Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            });
            p.status = Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            });
            p
        };
        let ready =
            |name: &str, ltt: Option<Timestamp>, created: Option<Timestamp>, r: (i32, i32)| {
                let mut p = base(name, "foo", POD_RUNNING);
                p.metadata.creation_timestamp = created.map(Time);
                let s = p.status.as_mut().unwrap();
                s.conditions = Some(vec![ready_condition("True", ltt)]);
                s.container_statuses = restarts(r.0, r.1);
                p
            };
        let pods = vec![
            base("unscheduled", "", POD_PENDING),
            base("scheduledButPending", "bar", POD_PENDING),
            base("unknownPhase", "foo", POD_UNKNOWN),
            base("runningButNotReady", "foo", POD_RUNNING),
            ready("runningNoLastTransitionTime", None, None, (3, 0)),
            ready("runningWithLastTransitionTime", Some(now), None, (3, 0)),
            ready("runningLongerTime", Some(then), None, (3, 0)),
            ready("lowerContainerRestartCount", Some(then), Some(now), (2, 1)),
            ready("oldest", Some(then), Some(then), (2, 1)),
        ];
        let want: Vec<&str> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        // deterministic permutations: rotations and reversals
        for shift in 0..pods.len() {
            for reverse in [false, true] {
                let mut shuffled: Vec<&Pod> = pods.iter().collect();
                shuffled.rotate_left(shift);
                if reverse {
                    shuffled.reverse();
                }
                let n = shuffled.len();
                let mut ranked = ActivePodsWithRanks::new(shuffled, vec![0; n], now);
                ranked.sort();
                let got: Vec<&str> = ranked
                    .pods()
                    .iter()
                    .map(|p| p.metadata.name.as_deref().unwrap())
                    .collect();
                assert_eq!(got, want, "shift {shift} reverse {reverse}");
            }
        }
    }

    #[test]
    fn ranking_rules_in_isolation() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let ago = |h: i64| Some(now - SignedDuration::from_hours(h));
        let running = POD_RUNNING;
        // restarts of sidecars break ties after regular restarts
        let mut with_sidecar = pod("sidecar", "n", running, true, 1, ago(3), ago(3), None);
        with_sidecar.spec.as_mut().unwrap().init_containers = Some(vec![Container {
            name: "sc".into(),
            restart_policy: Some("Always".into()),
            ..Default::default()
        }]);
        with_sidecar
            .status
            .as_mut()
            .unwrap()
            .init_container_statuses = Some(vec![ContainerStatus {
            name: "sc".into(),
            restart_count: 5,
            ..Default::default()
        }]);
        let plain = pod("plain", "n", running, true, 1, ago(3), ago(3), None);
        let r = ActivePodsWithRanks::new(vec![&with_sidecar, &plain], vec![0, 0], now);
        assert!(r.less(0, 1) && !r.less(1, 0));
        let more_regular = pod("more", "n", running, true, 2, ago(3), ago(3), None);
        let r = ActivePodsWithRanks::new(vec![&more_regular, &with_sidecar], vec![0, 0], now);
        assert!(r.less(0, 1) && !r.less(1, 0));

        // same log2 bucket of ready time: the lower UID goes first, whatever the creation
        let mut a = pod("a", "n", running, true, 0, ago(5), ago(1), None);
        let mut b = pod("b", "n", running, true, 0, ago(6), ago(100), None);
        a.metadata.uid = Some("uid-b".into());
        b.metadata.uid = Some("uid-a".into());
        let r = ActivePodsWithRanks::new(vec![&a, &b], vec![0, 0], now);
        assert!(r.less(1, 0) && !r.less(0, 1));

        // same log2 bucket of creation: the lower UID goes first
        let mut c = pod("c", "n", running, false, 0, None, ago(5), None);
        let mut d = pod("d", "n", running, false, 0, None, ago(6), None);
        c.metadata.uid = Some("2".into());
        d.metadata.uid = Some("1".into());
        let r = ActivePodsWithRanks::new(vec![&c, &d], vec![0, 0], now);
        assert!(r.less(1, 0) && !r.less(0, 1));
        // different buckets: the newer goes first
        let e = pod("e", "n", running, false, 0, None, ago(1), None);
        let r = ActivePodsWithRanks::new(vec![&d, &e], vec![0, 0], now);
        assert!(r.less(1, 0) && !r.less(0, 1));
        // unset creation time counts as newest
        let f = pod("f", "n", running, false, 0, None, None, None);
        let r = ActivePodsWithRanks::new(vec![&e, &f], vec![0, 0], now);
        assert!(r.less(1, 0) && !r.less(0, 1));

        // negative deletion cost goes before no cost; invalid cost counts as 0
        let neg = pod("neg", "n", running, true, 0, ago(1), ago(1), Some("-5"));
        let bad = pod("bad", "n", running, true, 0, ago(1), ago(1), Some("+5"));
        let r = ActivePodsWithRanks::new(vec![&neg, &bad], vec![0, 0], now);
        assert!(r.less(0, 1) && !r.less(1, 0));

        // a Succeeded/Failed/"" phase ranks like Pending
        let odd = pod("odd", "n", "Succeeded", false, 0, None, None, None);
        let unk = pod("unk", "n", POD_UNKNOWN, false, 0, None, None, None);
        let r = ActivePodsWithRanks::new(vec![&odd, &unk], vec![0, 0], now);
        assert!(r.less(0, 1));
    }

    #[test]
    fn log2_buckets_match_go() {
        assert_eq!(go_log2(1.0), 0.0);
        assert_eq!(go_log2(2.0), 1.0);
        assert_eq!(go_log2(1024.0), 10.0);
        assert_eq!(go_log2(3.0) as i64, 1);
        assert_eq!(go_log2((1u64 << 44) as f64 - 1.0) as i64, 43);
        let five_h = SignedDuration::from_hours(5).as_nanos() as f64;
        let eight_h = SignedDuration::from_hours(8).as_nanos() as f64;
        let two_h = SignedDuration::from_hours(2).as_nanos() as f64;
        assert_eq!(go_log2(five_h) as i64, 44);
        assert_eq!(go_log2(eight_h) as i64, 44);
        assert_eq!(go_log2(two_h) as i64, 42);
        let now = Timestamp::from_second(1000).unwrap();
        assert_eq!(logarithmic_rank_diff(now, now, now), 0);
        assert_eq!(
            logarithmic_rank_diff(now, now - SignedDuration::from_secs(1), now),
            -1 - 29
        );
        // a time in the future ranks -1 as well
        assert_eq!(
            logarithmic_rank_diff(now + SignedDuration::from_secs(5), now, now),
            0
        );
    }

    /// upstream replica_set_test.go newPod(name, rs, status, lastTransitionTime, properlyOwned)
    fn rs_pod(name: &str, phase: &str, node: &str, ready: Option<bool>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.spec = Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ..Default::default()
        });
        let conditions = match ready {
            Some(r) => Some(vec![ready_condition(
                if r { "True" } else { "False" },
                None,
            )]),
            None if phase == POD_RUNNING => Some(vec![ready_condition("True", None)]),
            None => None,
        };
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions,
            ..Default::default()
        });
        p
    }

    fn names<'a>(pods: &[&'a Pod]) -> Vec<&'a str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    // Port of replica_set_test.go TestGetPodsToDelete.
    #[test]
    fn get_pods_to_delete_table() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let unscheduled_pending = rs_pod("unscheduled-pending-pod", POD_PENDING, "", None);
        let scheduled_pending = rs_pod("scheduled-pending-pod", POD_PENDING, "fake-node", None);
        let not_ready = rs_pod(
            "scheduled-running-not-ready-pod",
            POD_RUNNING,
            "fake-node",
            Some(false),
        );
        let ready_node1 = rs_pod(
            "scheduled-running-ready-pod-on-node-1",
            POD_RUNNING,
            "fake-node-1",
            Some(true),
        );
        let ready_node2 = rs_pod(
            "scheduled-running-ready-pod-on-node-2",
            POD_RUNNING,
            "fake-node-2",
            Some(true),
        );

        struct Case<'a> {
            name: &'a str,
            pods: Vec<&'a Pod>,
            related: Option<Vec<&'a Pod>>,
            diff: usize,
            want: Vec<&'a Pod>,
        }
        let cases = vec![
            Case {
                name: "len(pods) = 0 (i.e., diff = 0 too)",
                pods: vec![],
                related: None,
                diff: 0,
                want: vec![],
            },
            Case {
                name: "diff = len(pods)",
                pods: vec![&not_ready, &ready_node1],
                related: None,
                diff: 2,
                want: vec![&not_ready, &ready_node1],
            },
            Case {
                name: "diff < len(pods)",
                pods: vec![&ready_node1, &not_ready],
                related: None,
                diff: 1,
                want: vec![&not_ready],
            },
            Case {
                name: "various pod phases and conditions, diff = len(pods)",
                pods: vec![
                    &ready_node1,
                    &ready_node1,
                    &ready_node2,
                    &not_ready,
                    &scheduled_pending,
                    &unscheduled_pending,
                ],
                related: None,
                diff: 6,
                want: vec![
                    &ready_node1,
                    &ready_node1,
                    &ready_node2,
                    &not_ready,
                    &scheduled_pending,
                    &unscheduled_pending,
                ],
            },
            Case {
                name: "various pod phases and conditions, diff = len(pods), relatedPods empty",
                pods: vec![
                    &ready_node1,
                    &ready_node1,
                    &ready_node2,
                    &not_ready,
                    &scheduled_pending,
                    &unscheduled_pending,
                ],
                related: Some(vec![]),
                diff: 6,
                want: vec![
                    &ready_node1,
                    &ready_node1,
                    &ready_node2,
                    &not_ready,
                    &scheduled_pending,
                    &unscheduled_pending,
                ],
            },
            Case {
                name: "scheduled vs unscheduled, diff < len(pods)",
                pods: vec![&scheduled_pending, &unscheduled_pending],
                related: None,
                diff: 1,
                want: vec![&unscheduled_pending],
            },
            Case {
                name: "ready vs not-ready, diff < len(pods)",
                pods: vec![&ready_node1, &not_ready, &not_ready],
                related: None,
                diff: 2,
                want: vec![&not_ready, &not_ready],
            },
            Case {
                name: "ready and colocated with another ready pod vs not colocated, diff < len(pods)",
                pods: vec![&ready_node1, &ready_node2],
                related: Some(vec![&ready_node1, &ready_node2, &ready_node2]),
                diff: 1,
                want: vec![&ready_node2],
            },
            Case {
                name: "pending vs running, diff < len(pods)",
                pods: vec![&scheduled_pending, &not_ready],
                related: None,
                diff: 1,
                want: vec![&scheduled_pending],
            },
            Case {
                name: "various pod phases and conditions, diff < len(pods)",
                pods: vec![
                    &ready_node1,
                    &ready_node2,
                    &not_ready,
                    &scheduled_pending,
                    &unscheduled_pending,
                ],
                related: None,
                diff: 3,
                want: vec![&unscheduled_pending, &scheduled_pending, &not_ready],
            },
        ];
        for case in cases {
            let related = case.related.clone().unwrap_or_else(|| case.pods.clone());
            let got = get_pods_to_delete(&case.pods, &related, case.diff, now);
            assert_eq!(names(&got), names(&case.want), "{}", case.name);
        }
    }

    #[test]
    fn related_pods_rank_only_active_pods_and_prefer_crowded_nodes() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let a1 = rs_pod("a1", POD_RUNNING, "node-a", Some(true));
        let b1 = rs_pod("b1", POD_RUNNING, "node-b", Some(true));
        // pods of a sibling ReplicaSet of the same Deployment
        let sib_b = rs_pod("sib-b", POD_RUNNING, "node-b", Some(true));
        let mut sib_a_deleting = rs_pod("sib-a", POD_RUNNING, "node-a", Some(true));
        sib_a_deleting.metadata.deletion_timestamp = Some(Time(now));
        let sib_a_failed = rs_pod("sib-a2", "Failed", "node-a", None);
        let sib_a_failed2 = rs_pod("sib-a3", "Succeeded", "node-a", None);
        let related = vec![
            &a1,
            &b1,
            &sib_b,
            &sib_a_deleting,
            &sib_a_failed,
            &sib_a_failed2,
        ];
        let ranked = get_pods_ranked_by_related_pods_on_same_node(&[&a1, &b1], &related, now);
        assert_eq!(ranked.ranks(), &[1, 2]);
        let got = get_pods_to_delete(&[&a1, &b1], &related, 1, now);
        assert_eq!(names(&got), vec!["b1"]);
        // more than available: all of them, in order
        let got = get_pods_to_delete(&[&a1, &b1], &related, 5, now);
        assert_eq!(names(&got), vec!["a1", "b1"]);
    }

    #[test]
    fn sort_tolerates_intransitive_comparisons() {
        // Ready times in one log2 bucket (UID decides) mixed with equal ready times (restarts
        // then creation decide) can form a cycle; sorting must still terminate without panic.
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let t = |m: i64| Some(now - SignedDuration::from_mins(m));
        let mut pods = Vec::new();
        for (i, (ready_m, restarts, created_h)) in [
            (40, 0, 1),
            (40, 5, 2),
            (50, 1, 3),
            (40, 2, 4),
            (55, 0, 5),
            (50, 3, 6),
        ]
        .into_iter()
        .enumerate()
        {
            let mut p = pod(
                "p",
                "n",
                POD_RUNNING,
                true,
                restarts,
                t(ready_m),
                t(created_h * 60),
                None,
            );
            p.metadata.uid = Some(format!("{}", 9 - i));
            p.metadata.name = Some(format!("p{i}"));
            pods.push(p);
        }
        let refs: Vec<&Pod> = pods.iter().collect();
        for shift in 0..refs.len() {
            let mut r = refs.clone();
            r.rotate_left(shift);
            let n = r.len();
            let mut ranked = ActivePodsWithRanks::new(r, vec![0; n], now);
            ranked.sort();
            assert_eq!(ranked.pods().len(), n);
        }
    }

    #[test]
    fn pods_prefix() {
        assert_eq!(get_pods_prefix("foobar"), "foobar-");
        let long = "a".repeat(253);
        // upstream masks the trailing dash (dropping one character), so even a 253-character
        // name keeps its dash; the apiserver then shortens the base to 58 characters
        assert_eq!(get_pods_prefix(&long), format!("{long}-"));
        assert_eq!(generated_name_base(&get_pods_prefix(&long)), &long[..58]);
        assert_eq!(generated_name_base("foobar-"), "foobar-");
        let sixty = "b".repeat(60);
        assert_eq!(generated_name_base(&get_pods_prefix(&sixty)).len(), 58);
        // a name that cannot take a dash keeps its name as prefix
        assert_eq!(get_pods_prefix("Foo"), "Foo");
        assert_eq!(get_pods_prefix(&"a".repeat(300)), "a".repeat(300));
        assert_eq!(mask_trailing_dash("abc-"), "aba");
        assert_eq!(mask_trailing_dash("-"), "-");
        assert_eq!(mask_trailing_dash("abc"), "abc");
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                name: Some("ignored".into()),
                labels: Some(BTreeMap::from([
                    ("name".to_string(), "foo".to_string()),
                    ("type".to_string(), "production".to_string()),
                ])),
                annotations: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
                finalizers: Some(vec!["example.com/f".into()]),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("foo/bar".into()),
                    ..Default::default()
                }],
                restart_policy: Some("Always".into()),
                node_selector: Some(BTreeMap::from([("baz".to_string(), "blah".to_string())])),
                ..Default::default()
            }),
        }
    }

    // Port of controller_utils_test.go TestCreatePodsWithGenerateName (the pod sent).
    #[test]
    fn pod_from_template() {
        let rs = rs_with(Some(1));
        let cref =
            crate::util::claim::new_controller_ref(&rs.metadata, "rekube.io/v1", "ReplicaSet");
        let pod = get_pod_from_template(&template(), &rs.metadata, cref.clone());
        let t = template();
        let tm = t.metadata.unwrap();
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("foobar-"));
        assert_eq!(pod.metadata.name, None);
        assert_eq!(pod.metadata.namespace, None);
        assert_eq!(pod.metadata.labels, tm.labels);
        assert_eq!(pod.metadata.annotations, tm.annotations);
        assert_eq!(pod.metadata.finalizers, tm.finalizers);
        assert_eq!(pod.metadata.owner_references, Some(vec![cref.clone()]));
        assert_eq!(pod.spec, t.spec);
        assert_eq!(pod.status, None);

        // an empty template yields no labels/annotations/finalizers
        let empty = PodTemplateSpec::default();
        let pod = get_pod_from_template(&empty, &rs.metadata, cref.clone());
        assert_eq!(pod.metadata.labels, None);
        assert_eq!(pod.metadata.annotations, None);
        assert_eq!(pod.metadata.finalizers, None);

        // pod_for_create refuses a template without labels and an incomplete controller ref
        let mut rs2 = rs.clone();
        rs2.spec.as_mut().unwrap().template = Some(empty);
        assert_eq!(
            pod_for_create(&rs2, cref.clone()),
            Err(ManageError::NoLabels {
                replica_set: "default/foobar".into()
            })
        );
        rs2.spec.as_mut().unwrap().template = Some(template());
        assert!(pod_for_create(&rs2, cref.clone()).is_ok());
        let mut bad = cref.clone();
        bad.block_owner_deletion = None;
        let err = pod_for_create(&rs2, bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid controller reference for the pods of replicaset default/foobar: controllerRef.BlockOwnerDeletion is not set"
        );
        for (mutate, reason) in [
            (
                Box::new(|r: &mut OwnerReference| r.api_version.clear())
                    as Box<dyn Fn(&mut OwnerReference)>,
                "controllerRef has empty APIVersion",
            ),
            (
                Box::new(|r: &mut OwnerReference| r.kind.clear()),
                "controllerRef has empty Kind",
            ),
            (
                Box::new(|r: &mut OwnerReference| r.controller = Some(false)),
                "controllerRef.Controller is not set to true",
            ),
        ] {
            let mut r = cref.clone();
            mutate(&mut r);
            assert_eq!(
                validate_controller_ref("ns/x", &r),
                Err(ManageError::InvalidControllerRef {
                    replica_set: "ns/x".into(),
                    reason: reason.into()
                })
            );
        }
    }

    #[test]
    fn manage_error_messages() {
        let create = ManageError::Create {
            replica_set: "ns/rs".into(),
            message: "pods \"rs-abcde\" is forbidden: exceeded quota".into(),
        };
        assert_eq!(
            create.to_string(),
            "pods \"rs-abcde\" is forbidden: exceeded quota"
        );
        let delete = ManageError::Delete {
            replica_set: "ns/rs".into(),
            pod: "ns/rs-abcde".into(),
            message: "boom".into(),
        };
        assert_eq!(delete.to_string(), "unable to delete pods: boom");
    }

    // --- Overflow: spec.replicas near int32's bounds and huge creation counts.

    #[test]
    fn overflow_replica_diff_and_batches_saturate() {
        let rs = |replicas: i32| ReplicaSet {
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            replica_diff_with_burst(&rs(i32::MAX), 0, usize::MAX),
            ReplicaDiff::Create(2_147_483_647)
        );
        assert_eq!(
            replica_diff(&rs(i32::MAX), 1),
            ReplicaDiff::Create(BURST_REPLICAS)
        );
        // A negative spec.replicas (refused by validation) wants no pods.
        assert_eq!(replica_diff(&rs(i32::MIN), 3), ReplicaDiff::Delete(3));
        // Doubling a batch past usize::MAX saturates: the remainder is the last batch.
        let half = usize::MAX / 2 + 1;
        assert_eq!(slow_start_batches(usize::MAX, half), vec![half, half - 1]);
        let batches = slow_start_batches(i32::MAX as usize, 1);
        assert_eq!(batches.len(), 31, "1 + 2 + … + 2^30 = 2^31 − 1");
        assert_eq!(batches.iter().sum::<usize>(), i32::MAX as usize);
    }
}
