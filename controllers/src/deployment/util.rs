//! Rollout arithmetic and bookkeeping of the Deployment controller (upstream:
//! pkg/controller/deployment/util/deployment_util.go, with the ReplicaSet sorting and
//! filtering helpers of pkg/controller/controller_utils.go and intstr's
//! GetScaledValueFromIntOrPercent).
//!
//! Everything here is pure: functions read snapshots and return values; "now" is a
//! parameter.
//!
//! Absent fields: the apiserver normally applies the apps/v1 defaults, but these functions
//! never panic when a field is missing and apply the same defaults themselves:
//! `spec.replicas` 1 (Deployment and ReplicaSet), strategy `RollingUpdate`, `maxSurge` and
//! `maxUnavailable` 25% each. `progressDeadlineSeconds` and `revisionHistoryLimit` keep
//! upstream's nil meaning (no deadline, no cleanup).
//!
//! Overflow: upstream computes in Go's int32, which wraps; here every sum, difference and
//! scaling of user-supplied numbers (spec.replicas, maxSurge/maxUnavailable, the replica
//! annotations, status counts, revisions) saturates at the type's bounds instead
//! ([`clamp_i32`], `saturating_*`), so replicas near `i32::MAX` neither panic nor wrap to a
//! negative size, and results are upstream's whenever upstream does not overflow.
//!
//! Go zero values: upstream's status counters are plain integers serialized with
//! `omitempty`, so a zero is absent on the wire. Here `None` reads as 0, and computed
//! statuses write 0 as `None` ([`opt_i32`]), so a computed status compares equal to the
//! stored one when nothing changed.
use std::cmp::Ordering;
use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{
    DeploymentCondition, DeploymentStatus, ReplicaSetCondition, ReplicaSetStatus,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rekube_crds::{Deployment, ReplicaSet};

/// The revision annotation of a Deployment's ReplicaSets, recording the rollout sequence.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The old revisions a ReplicaSet has served (set when a rollback reuses it).
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's spec.replicas when the ReplicaSet was last scaled by the controller.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// spec.replicas + maxSurge of the Deployment when the ReplicaSet was last scaled.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// The annotation carrying the deprecated `spec.rollbackTo.revision` (apps.DeprecatedRollbackTo).
pub const ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";
/// The label added to a new ReplicaSet, its selector and its pod template.
pub const DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY: &str = "pod-template-hash";
/// kubectl's last-applied-configuration annotation (never copied to ReplicaSets).
pub const LAST_APPLIED_CONFIG_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Upper bound of the revision-history annotation (sync.go maxRevHistoryLengthInChars).
pub const MAX_REV_HISTORY_LENGTH_IN_CHARS: usize = 2000;

/// Event reason: the revision to roll back to does not exist.
pub const ROLLBACK_REVISION_NOT_FOUND: &str = "DeploymentRollbackRevisionNotFound";
/// Event reason: the rollback revision has the Deployment's current template.
pub const ROLLBACK_TEMPLATE_UNCHANGED: &str = "DeploymentRollbackTemplateUnchanged";
/// Event reason: the rollback was performed.
pub const ROLLBACK_DONE: &str = "DeploymentRollback";
/// Event reason of every ReplicaSet scale performed by the controller.
pub const SCALING_REPLICA_SET_REASON: &str = "ScalingReplicaSet";
/// Event reason for a Deployment with an empty selector.
pub const SELECTING_ALL_REASON: &str = "SelectingAll";
/// Event message for a Deployment with an empty selector.
pub const SELECTING_ALL_MESSAGE: &str =
    "This deployment is selecting all pods. A non-empty selector is required.";

/// Progressing reason: one of the ReplicaSets was updated during the rollout.
pub const REPLICA_SET_UPDATED_REASON: &str = "ReplicaSetUpdated";
/// Progressing reason: the new ReplicaSet could not be created.
pub const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";
/// Event reason when the new ReplicaSet could not be created.
pub const FAILED_RS_CREATE_EVENT_REASON: &str = FAILED_RS_CREATE_REASON;
/// Progressing reason: the controller created the new ReplicaSet.
pub const NEW_REPLICA_SET_REASON: &str = "NewReplicaSetCreated";
/// Progressing reason: the controller found (adopted) an existing new ReplicaSet.
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
/// Progressing reason: the new ReplicaSet is fully available; the rollout is complete.
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
/// Progressing reason: no progress within progressDeadlineSeconds.
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
/// Progressing reason: the Deployment is paused.
pub const PAUSED_DEPLOY_REASON: &str = "DeploymentPaused";
/// Progressing reason: the Deployment was resumed.
pub const RESUMED_DEPLOY_REASON: &str = "DeploymentResumed";
/// Available reason: at least replicas − maxUnavailable pods are available.
pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
/// Available reason: fewer than replicas − maxUnavailable pods are available.
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
/// Message of the Available=True condition.
pub const MINIMUM_AVAILABILITY_MESSAGE: &str = "Deployment has minimum availability.";
/// Message of the Available=False condition.
pub const NO_MINIMUM_AVAILABILITY_MESSAGE: &str = "Deployment does not have minimum availability.";
/// Message of the Progressing=Unknown DeploymentPaused condition.
pub const PAUSED_MESSAGE: &str = "Deployment is paused";
/// Message of the Progressing=Unknown DeploymentResumed condition.
pub const RESUMED_MESSAGE: &str = "Deployment is resumed";

/// Deployment condition type Available (apps.DeploymentAvailable).
pub const DEPLOYMENT_AVAILABLE: &str = "Available";
/// Deployment condition type Progressing (apps.DeploymentProgressing).
pub const DEPLOYMENT_PROGRESSING: &str = "Progressing";
/// Deployment condition type ReplicaFailure (apps.DeploymentReplicaFailure).
pub const DEPLOYMENT_REPLICA_FAILURE: &str = rekube_crds::core_v1::REPLICA_FAILURE;
/// ReplicaSet condition type ReplicaFailure (apps.ReplicaSetReplicaFailure).
pub const REPLICA_SET_REPLICA_FAILURE: &str = rekube_crds::core_v1::REPLICA_FAILURE;
/// Condition statuses True, False, Unknown.
pub use rekube_crds::core_v1::{CONDITION_FALSE, CONDITION_TRUE, CONDITION_UNKNOWN};
/// Strategy type RollingUpdate (the default).
pub const ROLLING_UPDATE_DEPLOYMENT_STRATEGY_TYPE: &str = "RollingUpdate";
/// Strategy type Recreate.
pub const RECREATE_DEPLOYMENT_STRATEGY_TYPE: &str = "Recreate";
/// Event type Normal.
pub const EVENT_TYPE_NORMAL: &str = "Normal";
/// Event type Warning.
pub const EVENT_TYPE_WARNING: &str = "Warning";

/// The apps/v1 default of maxSurge and maxUnavailable.
const DEFAULT_ROLLING_PERCENT: &str = "25%";

/// Errors of the rollout arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An IntOrString that is neither an integer nor a percentage.
    #[error("invalid {field} value {value:?}: {reason}")]
    InvalidIntOrPercent {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// A revision annotation that is not an integer.
    #[error("invalid revision annotation {value:?} on {object}: {reason}")]
    InvalidRevision {
        object: String,
        value: String,
        reason: String,
    },
    /// A replica-count annotation that is not a non-negative int32.
    #[error("invalid annotation {key} value {value:?} on replica set {object}: {reason}")]
    InvalidReplicasAnnotation {
        object: String,
        key: String,
        value: String,
        reason: String,
    },
    /// A strategy type other than RollingUpdate or Recreate.
    #[error("deployment {deployment}: deployment type {strategy:?} isn't supported")]
    UnsupportedStrategy {
        deployment: String,
        strategy: String,
    },
}

// ---------------------------------------------------------------------------------------
// Small accessors (absent fields read as their apps/v1 default or Go zero value)
// ---------------------------------------------------------------------------------------

/// `metadata.name`, or "" when absent.
pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// `namespace/name` for messages.
pub fn key(meta: &ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", name(meta)),
        _ => name(meta).to_string(),
    }
}

/// Go's `%q` for the names that appear in upstream's messages.
pub(crate) fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// An i64 intermediate clamped into int32's range (how every combination of several int32
/// terms is computed here, exactly, before saturating).
pub fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

/// Σ of int32 values, saturating at int32's bounds (exact in i64 otherwise).
pub fn saturating_sum(values: impl IntoIterator<Item = i32>) -> i32 {
    clamp_i32(
        values
            .into_iter()
            .fold(0i64, |acc, v| acc.saturating_add(i64::from(v))),
    )
}

/// Go zero-value convention: 0 is written as absent.
pub fn opt_i32(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

/// Go zero-value convention: 0 is written as absent.
pub fn opt_i64(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

/// Go zero-value convention: "" is written as absent.
pub(crate) fn opt_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `*(d.Spec.Replicas)`, defaulting to 1.
pub fn deployment_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `*(rs.Spec.Replicas)`, defaulting to 1 as the apiserver does.
pub fn replica_set_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> Option<&ReplicaSetStatus> {
    rs.status.as_ref()
}

/// `rs.Status.Replicas`.
pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs_status(rs).map(|s| s.replicas).unwrap_or(0)
}

/// `rs.Status.AvailableReplicas`.
pub fn rs_available_replicas(rs: &ReplicaSet) -> i32 {
    rs_status(rs)
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// `rs.Status.ReadyReplicas`.
pub fn rs_ready_replicas(rs: &ReplicaSet) -> i32 {
    rs_status(rs).and_then(|s| s.ready_replicas).unwrap_or(0)
}

/// `rs.Status.ObservedGeneration`.
pub fn rs_observed_generation(rs: &ReplicaSet) -> i64 {
    rs_status(rs)
        .and_then(|s| s.observed_generation)
        .unwrap_or(0)
}

/// `d.Spec.MinReadySeconds`.
pub fn deployment_min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// `d.Spec.Paused`.
pub fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// The Deployment's pod template (an empty one when the spec is absent).
pub fn deployment_template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

/// The ReplicaSet's pod template (an empty one when absent).
pub fn replica_set_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

/// Fields of a DeploymentStatus read with Go's zero values.
pub mod status {
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    /// `status.replicas`.
    pub fn replicas(s: &DeploymentStatus) -> i32 {
        s.replicas.unwrap_or(0)
    }
    /// `status.updatedReplicas`.
    pub fn updated(s: &DeploymentStatus) -> i32 {
        s.updated_replicas.unwrap_or(0)
    }
    /// `status.readyReplicas`.
    pub fn ready(s: &DeploymentStatus) -> i32 {
        s.ready_replicas.unwrap_or(0)
    }
    /// `status.availableReplicas`.
    pub fn available(s: &DeploymentStatus) -> i32 {
        s.available_replicas.unwrap_or(0)
    }
    /// `status.unavailableReplicas`.
    pub fn unavailable(s: &DeploymentStatus) -> i32 {
        s.unavailable_replicas.unwrap_or(0)
    }
    /// `status.observedGeneration`.
    pub fn observed_generation(s: &DeploymentStatus) -> i64 {
        s.observed_generation.unwrap_or(0)
    }
}

/// The Deployment's current status (an empty one when absent).
pub fn deployment_status(d: &Deployment) -> DeploymentStatus {
    d.status.clone().unwrap_or_default()
}

/// Whether two ReplicaSet references denote the same object (by UID, else by namespace/name).
pub fn same_replica_set(a: &ReplicaSet, b: &ReplicaSet) -> bool {
    match (&a.metadata.uid, &b.metadata.uid) {
        (Some(x), Some(y)) if !x.is_empty() || !y.is_empty() => x == y,
        _ => a.metadata.namespace == b.metadata.namespace && name(&a.metadata) == name(&b.metadata),
    }
}

// ---------------------------------------------------------------------------------------
// intstr and fenceposts
// ---------------------------------------------------------------------------------------

/// intstr.GetScaledValueFromIntOrPercent: an int as is, or `N%` of `total` rounded up or down.
/// The percentage is scaled in f64 and saturates at int32's bounds (upstream's int(...) then
/// int32(...) would wrap, e.g. 1000% of 2147483647).
pub fn get_scaled_value_from_int_or_percent(
    field: &'static str,
    value: &IntOrString,
    total: i32,
    round_up: bool,
) -> Result<i32, Error> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(number) = s.strip_suffix('%') else {
                return Err(Error::InvalidIntOrPercent {
                    field,
                    value: s.clone(),
                    reason: "invalid type: string is not a percentage".to_string(),
                });
            };
            let percent: i64 = number.parse().map_err(|e| Error::InvalidIntOrPercent {
                field,
                value: s.clone(),
                reason: format!("{e}"),
            })?;
            let scaled = percent as f64 * f64::from(total) / 100.0;
            let rounded = if round_up {
                scaled.ceil()
            } else {
                scaled.floor()
            };
            // `as` saturates (and the operands are finite, so no NaN).
            Ok(rounded as i32)
        }
    }
}

/// ResolveFenceposts: maxSurge scaled rounding up, maxUnavailable rounding down (absent = 0);
/// when both resolve to 0, maxUnavailable becomes 1.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), Error> {
    let zero = IntOrString::Int(0);
    let surge = get_scaled_value_from_int_or_percent(
        "maxSurge",
        max_surge.unwrap_or(&zero),
        desired,
        true,
    )?;
    let mut unavailable = get_scaled_value_from_int_or_percent(
        "maxUnavailable",
        max_unavailable.unwrap_or(&zero),
        desired,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        // Validation forbids both being 0 explicitly, but rounding down maxUnavailable can
        // resolve it to 0; then allow one unavailable pod on the theory that surge might
        // not work due to quota.
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// The Deployment's strategy type, defaulting to RollingUpdate.
pub fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or(ROLLING_UPDATE_DEPLOYMENT_STRATEGY_TYPE)
}

/// IsRollingUpdate.
pub fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == ROLLING_UPDATE_DEPLOYMENT_STRATEGY_TYPE
}

/// `spec.strategy.rollingUpdate.{maxSurge,maxUnavailable}` with the apps/v1 defaults (25%)
/// applied to an absent rollingUpdate or an absent field.
pub fn rolling_update_params(d: &Deployment) -> (IntOrString, IntOrString) {
    let default = || IntOrString::String(DEFAULT_ROLLING_PERCENT.to_string());
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    match rolling {
        None => (default(), default()),
        Some(r) => (
            r.max_surge.clone().unwrap_or_else(default),
            r.max_unavailable.clone().unwrap_or_else(default),
        ),
    }
}

/// ResolveFenceposts applied to the Deployment (defaults included); validates its strategy.
pub fn deployment_fenceposts(d: &Deployment) -> Result<(i32, i32), Error> {
    let (surge, unavailable) = rolling_update_params(d);
    resolve_fenceposts(Some(&surge), Some(&unavailable), deployment_replicas(d))
}

/// MaxUnavailable: 0 for non-RollingUpdate or 0 replicas, otherwise the resolved
/// maxUnavailable capped at spec.replicas (0 on an invalid value, as upstream).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = deployment_replicas(d);
    if !is_rolling_update(d) || replicas == 0 {
        return 0;
    }
    // Invalid values are rejected by validation upstream; treat them as 0 like upstream.
    let (_, unavailable) = deployment_fenceposts(d).unwrap_or((0, 0));
    unavailable.min(replicas)
}

/// MinAvailable: spec.replicas − MaxUnavailable for RollingUpdate, else 0 (saturating).
pub fn min_available(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    deployment_replicas(d).saturating_sub(max_unavailable(d))
}

/// MaxSurge: the resolved maxSurge for RollingUpdate, else 0 (0 on an invalid value).
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    deployment_fenceposts(d).map(|(s, _)| s).unwrap_or(0)
}

/// `*(d.Spec.Replicas) + MaxSurge(*d)`: the most pods the Deployment may run, what the
/// max-replicas annotation records; saturating at int32's bounds.
pub fn max_replicas(d: &Deployment) -> i32 {
    deployment_replicas(d).saturating_add(max_surge(d))
}

// ---------------------------------------------------------------------------------------
// Templates, new and old ReplicaSets
// ---------------------------------------------------------------------------------------

/// Removes JSON nulls, empty objects and empty arrays, recursively: apimachinery's
/// Semantic.DeepEqual treats nil and empty maps/slices as equal.
fn normalize_json(v: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::Object(map) => {
            let map: serde_json::Map<String, Value> = map
                .into_iter()
                .filter_map(|(k, v)| normalize_json(v).map(|v| (k, v)))
                .collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
        Value::Array(items) => {
            let items: Vec<Value> = items
                .into_iter()
                .map(|v| normalize_json(v).unwrap_or(Value::Null))
                .collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        other => Some(other),
    }
}

fn template_without_hash(template: &PodTemplateSpec) -> Option<serde_json::Value> {
    let mut copy = template.clone();
    if let Some(meta) = copy.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY);
    }
    serde_json::to_value(&copy).ok().and_then(normalize_json)
}

/// EqualIgnoreHash: the templates are semantically equal ignoring the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

fn creation_timestamp(rs: &ReplicaSet) -> Option<&Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| &t.0)
}

/// controller.ReplicaSetsByCreationTimestamp: older first, name as the tie breaker (an
/// absent timestamp is Go's zero time, the oldest).
pub fn compare_by_creation_timestamp(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    creation_timestamp(a)
        .cmp(&creation_timestamp(b))
        .then_with(|| name(&a.metadata).cmp(name(&b.metadata)))
}

/// sort.Sort(controller.ReplicaSetsByCreationTimestamp(rss)).
pub fn sort_by_creation_timestamp(rss: &mut [&ReplicaSet]) {
    rss.sort_by(|a, b| compare_by_creation_timestamp(a, b));
}

/// sort.Sort(controller.ReplicaSetsBySizeNewer(rss)): larger first, newer first on ties.
pub fn sort_by_size_newer(rss: &mut [&ReplicaSet]) {
    rss.sort_by(|a, b| {
        replica_set_replicas(b)
            .cmp(&replica_set_replicas(a))
            .then_with(|| compare_by_creation_timestamp(b, a))
    });
}

/// sort.Sort(controller.ReplicaSetsBySizeOlder(rss)): larger first, older first on ties.
pub fn sort_by_size_older(rss: &mut [&ReplicaSet]) {
    rss.sort_by(|a, b| {
        replica_set_replicas(b)
            .cmp(&replica_set_replicas(a))
            .then_with(|| compare_by_creation_timestamp(a, b))
    });
}

/// Insertion sort with a Go-style `less`; never panics on an inconsistent `less`.
fn sort_with_less<T: Copy>(v: &mut [T], less: impl Fn(T, T) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && less(v[j], v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// sort.Sort(ReplicaSetsByRevision(rss)): lower revision first; on equal or unparsable
/// revisions, by creation timestamp.
pub fn sort_by_revision(rss: &mut [&ReplicaSet]) {
    sort_with_less(rss, |a, b| {
        match (revision(&a.metadata), revision(&b.metadata)) {
            (Ok(ra), Ok(rb)) if ra != rb => ra < rb,
            _ => compare_by_creation_timestamp(a, b) == Ordering::Less,
        }
    });
}

/// FindNewReplicaSet: the oldest ReplicaSet (by creation timestamp, then name) whose
/// template equals the Deployment's ignoring the pod-template-hash label.
pub fn find_new_replica_set<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = deployment_template(d);
    let mut sorted: Vec<&ReplicaSet> = rss.iter().collect();
    sort_by_creation_timestamp(&mut sorted);
    // In rare cases (e.g. after cluster upgrades) more than one ReplicaSet has the
    // Deployment's template; deterministically choose the oldest.
    sorted
        .into_iter()
        .find(|rs| equal_ignore_hash(&replica_set_template(rs), &template))
}

/// FindOldReplicaSets: every ReplicaSet but `new_rs` (pass
/// [`find_new_replica_set`]'s result): `(those with spec.replicas != 0, all of them)`, in
/// input order.
pub fn find_old_replica_sets<'a>(
    _d: &Deployment,
    rss: &'a [ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> (Vec<&'a ReplicaSet>, Vec<&'a ReplicaSet>) {
    let mut required = Vec::new();
    let mut all = Vec::new();
    for rs in rss {
        if new_rs.is_some_and(|n| same_replica_set(rs, n)) {
            continue;
        }
        all.push(rs);
        if replica_set_replicas(rs) != 0 {
            required.push(rs);
        }
    }
    (required, all)
}

/// controller.FilterActiveReplicaSets: the ReplicaSets with spec.replicas > 0.
pub fn filter_active_replica_sets<'a>(rss: &[&'a ReplicaSet]) -> Vec<&'a ReplicaSet> {
    rss.iter()
        .copied()
        .filter(|rs| replica_set_replicas(rs) > 0)
        .collect()
}

/// FindActiveOrLatest: the only active ReplicaSet, or the latest when none is active;
/// `None` when several are active (they must be scaled proportionally).
pub fn find_active_or_latest<'a>(
    new_rs: Option<&'a ReplicaSet>,
    old_rss: &[&'a ReplicaSet],
) -> Option<&'a ReplicaSet> {
    if new_rs.is_none() && old_rss.is_empty() {
        return None;
    }
    let mut old: Vec<&ReplicaSet> = old_rss.to_vec();
    old.sort_by(|a, b| compare_by_creation_timestamp(b, a));
    let mut all = old.clone();
    all.extend(new_rs);
    let active = filter_active_replica_sets(&all);
    match active.len() {
        // No active replica set: return the newest.
        0 => new_rs.or_else(|| old.first().copied()),
        1 => Some(active[0]),
        _ => None,
    }
}

/// SetFromReplicaSetTemplate: copies the ReplicaSet template into the Deployment, without
/// the pod-template-hash label.
pub fn set_from_replica_set_template(d: &mut Deployment, template: &PodTemplateSpec) {
    let mut template = template.clone();
    if let Some(meta) = template.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY);
    }
    d.spec.get_or_insert_with(Default::default).template = template;
}

// ---------------------------------------------------------------------------------------
// Revisions and annotations
// ---------------------------------------------------------------------------------------

/// Revision: the revision annotation as an integer (0 when absent).
pub fn revision(meta: &ObjectMeta) -> Result<i64, Error> {
    let Some(v) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
    else {
        return Ok(0);
    };
    v.parse::<i64>().map_err(|e| Error::InvalidRevision {
        object: key(meta),
        value: v.clone(),
        reason: e.to_string(),
    })
}

/// MaxRevision: the highest revision among the ReplicaSets (unparsable ones skipped).
pub fn max_revision(rss: &[&ReplicaSet]) -> i64 {
    rss.iter()
        .filter_map(|rs| revision(&rs.metadata).ok())
        .fold(0, i64::max)
}

/// The revision of a new ReplicaSet: MaxRevision + 1, saturating at `i64::MAX` (upstream's
/// int64 would wrap to a negative revision).
pub fn next_revision(old_rss: &[&ReplicaSet]) -> i64 {
    max_revision(old_rss).saturating_add(1)
}

/// LastRevision: the second highest revision among the ReplicaSets (the one before current).
pub fn last_revision(rss: &[&ReplicaSet]) -> i64 {
    let (mut max, mut sec_max) = (0i64, 0i64);
    for rs in rss {
        let Ok(v) = revision(&rs.metadata) else {
            continue;
        };
        if v >= max {
            sec_max = max;
            max = v;
        } else if v > sec_max {
            sec_max = v;
        }
    }
    sec_max
}

/// SetDeploymentRevision: sets the Deployment's revision annotation; true when it changed.
pub fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let annotations = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if annotations.get(REVISION_ANNOTATION).map(String::as_str) != Some(revision) {
        annotations.insert(REVISION_ANNOTATION.to_string(), revision.to_string());
        return true;
    }
    false
}

/// skipCopyAnnotation: annotations that never travel between a Deployment and its
/// ReplicaSets.
pub fn skip_copy_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED_CONFIG_ANNOTATION
            | REVISION_ANNOTATION
            | REVISION_HISTORY_ANNOTATION
            | DESIRED_REPLICAS_ANNOTATION
            | MAX_REPLICAS_ANNOTATION
            | ROLLBACK_TO_ANNOTATION
    )
}

/// copyDeploymentAnnotationsToReplicaSet: copies the Deployment's annotations (but the
/// skipped ones) to the ReplicaSet; true when the ReplicaSet changed.
pub fn copy_deployment_annotations_to_replica_set(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let rs_annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        // The new RS's revision is set by the controller, and the Deployment's revision is
        // copied from it: never the other way round.
        if skip_copy_annotation(k) || rs_annotations.get(k) == Some(v) {
            continue;
        }
        rs_annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// SetDeploymentAnnotationsTo: on rollback, the Deployment takes the ReplicaSet's
/// annotations, keeping only its own skipped ones (revision, last-applied, ...).
pub fn set_deployment_annotations_to(d: &mut Deployment, rs: &ReplicaSet) {
    let mut annotations: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| skip_copy_annotation(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in rs.metadata.annotations.iter().flatten() {
        if !skip_copy_annotation(k) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    d.metadata.annotations = Some(annotations);
}

/// SetNewReplicaSetAnnotations: copies the Deployment's annotations, raises the revision to
/// `new_revision` (keeping the revision history within `rev_history_limit_in_chars`), and
/// for a ReplicaSet about to be created sets desired/max replicas; true when anything changed.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    new_rs: &mut ReplicaSet,
    new_revision: &str,
    exists: bool,
    rev_history_limit_in_chars: usize,
) -> bool {
    // First, copy the deployment's annotations (except for apply and revision annotations).
    let mut annotation_changed = copy_deployment_annotations_to_replica_set(d, new_rs);
    let annotations = new_rs
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    let old_revision = annotations.get(REVISION_ANNOTATION).cloned();
    let had_revision = old_revision.is_some();
    let old_revision = old_revision.unwrap_or_default();
    // The new RS's revision should be the greatest among all RSes; only raise it.
    let old_revision_int = match old_revision.parse::<i64>() {
        Ok(v) => v,
        Err(_) if old_revision.is_empty() => 0,
        // Upstream logs "Updating replica set revision OldRevision not int" and gives up.
        Err(_) => return false,
    };
    let Ok(new_revision_int) = new_revision.parse::<i64>() else {
        return false;
    };
    if old_revision_int < new_revision_int {
        annotations.insert(REVISION_ANNOTATION.to_string(), new_revision.to_string());
        annotation_changed = true;
    }
    // A revision that existed and was raised means we are rolling back to this replica
    // set: keep the old revisions for historical information.
    if had_revision && old_revision_int < new_revision_int {
        let history = annotations
            .get(REVISION_HISTORY_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let old_revisions: Vec<&str> = history.split(',').collect();
        if old_revisions[0].is_empty() {
            annotations.insert(
                REVISION_HISTORY_ANNOTATION.to_string(),
                old_revision.clone(),
            );
        } else {
            let mut total_len = history.len() + old_revision.len() + 1;
            // Index of the first old revision to keep.
            let mut start = 0;
            while total_len > rev_history_limit_in_chars && start < old_revisions.len() {
                total_len = total_len - old_revisions[start].len() - 1;
                start += 1;
            }
            if total_len <= rev_history_limit_in_chars {
                let mut kept: Vec<&str> = old_revisions[start..].to_vec();
                kept.push(&old_revision);
                annotations.insert(REVISION_HISTORY_ANNOTATION.to_string(), kept.join(","));
            }
            // Otherwise upstream logs "Not appending revision due to length limit".
        }
    }
    // A replica set about to be created gets its replica annotations.
    if !exists && set_replicas_annotations(new_rs, deployment_replicas(d), max_replicas(d)) {
        annotation_changed = true;
    }
    annotation_changed
}

/// getNonNegativeInt32FromAnnotation: `Ok(None)` when absent, the value when it is a
/// non-negative int32, an error otherwise.
pub fn get_non_negative_int32_from_annotation(
    rs: &ReplicaSet,
    annotation_key: &str,
) -> Result<Option<i32>, Error> {
    let Some(value) = rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation_key))
    else {
        return Ok(None);
    };
    let err = |reason: &str| Error::InvalidReplicasAnnotation {
        object: key(&rs.metadata),
        key: annotation_key.to_string(),
        value: value.clone(),
        reason: reason.to_string(),
    };
    // strconv.ParseUint(value, 10, 31): digits only, no sign.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("invalid syntax"));
    }
    match value.parse::<u64>() {
        Ok(v) if v <= i32::MAX as u64 => Ok(Some(v as i32)),
        _ => Err(err("value out of range")),
    }
}

/// GetDesiredReplicasAnnotation: the desired-replicas annotation, `None` when absent or invalid.
pub fn get_desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    get_non_negative_int32_from_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
        .ok()
        .flatten()
}

/// getMaxReplicasAnnotation: the max-replicas annotation, `None` when absent or invalid.
pub fn get_max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    get_non_negative_int32_from_annotation(rs, MAX_REPLICAS_ANNOTATION)
        .ok()
        .flatten()
}

/// SetReplicasAnnotations: sets desired-replicas and max-replicas; true when changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut updated = false;
    for (k, v) in [
        (DESIRED_REPLICAS_ANNOTATION, desired.to_string()),
        (MAX_REPLICAS_ANNOTATION, max.to_string()),
    ] {
        if annotations.get(k) != Some(&v) {
            annotations.insert(k.to_string(), v);
            updated = true;
        }
    }
    updated
}

/// ReplicasAnnotationsNeedUpdate: whether desired-replicas or max-replicas differ from the
/// given values.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let Some(annotations) = rs.metadata.annotations.as_ref() else {
        return true;
    };
    annotations.get(DESIRED_REPLICAS_ANNOTATION) != Some(&desired.to_string())
        || annotations.get(MAX_REPLICAS_ANNOTATION) != Some(&max.to_string())
}

// ---------------------------------------------------------------------------------------
// Proportions and counts
// ---------------------------------------------------------------------------------------

/// GetReplicaSetProportion (GetProportion): how many replicas to add to (or, negative,
/// remove from) `rs` out of the Deployment's remaining budget.
pub fn get_proportion(
    rs: &ReplicaSet,
    d: &Deployment,
    deployment_replicas_to_add: i32,
    deployment_replicas_added: i32,
) -> i32 {
    if replica_set_replicas(rs) == 0
        || deployment_replicas_to_add == 0
        || deployment_replicas_to_add == deployment_replicas_added
    {
        return 0;
    }
    let rs_fraction = get_replica_set_fraction(rs, d);
    let allowed = deployment_replicas_to_add.saturating_sub(deployment_replicas_added);
    if deployment_replicas_to_add > 0 {
        // Scaling up: never add more than allowed.
        rs_fraction.min(allowed)
    } else {
        // Scaling down: never remove more than allowed.
        rs_fraction.max(allowed)
    }
}

/// integer.RoundToInt32: rounds half away from zero (saturating at int32's bounds).
fn round_to_i32(v: f64) -> i32 {
    v.round() as i32
}

/// getReplicaSetFraction: the change of `rs` proportional to the Deployment's change of
/// size (spec.replicas + maxSurge against the max-replicas annotation, falling back to
/// status.replicas when the annotation is missing or 0). The new size is computed in f64
/// (upstream multiplies in int32 first, which wraps beyond int32) and saturates.
pub fn get_replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let rs_replicas = replica_set_replicas(rs);
    // Scaling down to zero: the fraction of this replica set is its whole size.
    if deployment_replicas(d) == 0 {
        return rs_replicas.saturating_neg();
    }
    let deployment_max_replicas = max_replicas(d);
    let mut max_before_scale = get_max_replicas_annotation(rs).unwrap_or(0);
    if max_before_scale == 0 {
        // The annotation was removed or zeroed by a third party: fall back to the current
        // deployment size. Not accurate when other replica sets differ, but the min/max
        // in get_proportion keeps us within limits.
        max_before_scale = d.status.as_ref().map(status::replicas).unwrap_or(0);
        if max_before_scale == 0 {
            return 0;
        }
    }
    // We never proportionally scale up from zero, so neither value is zero here.
    let new_size =
        f64::from(rs_replicas) * f64::from(deployment_max_replicas) / f64::from(max_before_scale);
    round_to_i32(new_size).saturating_sub(rs_replicas)
}

/// GetReplicaCountForReplicaSets: Σ spec.replicas (this and the other sums saturate at
/// int32's bounds).
pub fn get_replica_count_for_replica_sets(rss: &[&ReplicaSet]) -> i32 {
    saturating_sum(rss.iter().map(|rs| replica_set_replicas(rs)))
}

/// GetActualReplicaCountForReplicaSets: Σ status.replicas.
pub fn get_actual_replica_count_for_replica_sets(rss: &[&ReplicaSet]) -> i32 {
    saturating_sum(rss.iter().map(|rs| rs_status_replicas(rs)))
}

/// GetReadyReplicaCountForReplicaSets: Σ status.readyReplicas.
pub fn get_ready_replica_count_for_replica_sets(rss: &[&ReplicaSet]) -> i32 {
    saturating_sum(rss.iter().map(|rs| rs_ready_replicas(rs)))
}

/// GetAvailableReplicaCountForReplicaSets: Σ status.availableReplicas.
pub fn get_available_replica_count_for_replica_sets(rss: &[&ReplicaSet]) -> i32 {
    saturating_sum(rss.iter().map(|rs| rs_available_replicas(rs)))
}

/// GetTerminatingReplicaCountForReplicaSets: Σ status.terminatingReplicas, skipping
/// ReplicaSets never synced (observedGeneration 0 and no count); `None` when a synced one
/// does not report it.
pub fn get_terminating_replica_count_for_replica_sets(rss: &[&ReplicaSet]) -> Option<i32> {
    let mut total: i32 = 0;
    for rs in rss {
        let terminating = rs_status(rs).and_then(|s| s.terminating_replicas);
        match terminating {
            None if rs_observed_generation(rs) == 0 => continue,
            None => return None,
            Some(n) => total = total.saturating_add(n),
        }
    }
    Some(total)
}

/// NewRSNewReplicas: the size the new ReplicaSet may grow to now (RollingUpdate: within
/// spec.replicas + maxSurge and never above spec.replicas; Recreate: spec.replicas).
pub fn new_rs_new_replicas(
    d: &Deployment,
    all_rss: &[&ReplicaSet],
    new_rs: &ReplicaSet,
) -> Result<i32, Error> {
    let replicas = deployment_replicas(d);
    let new_rs_replicas = replica_set_replicas(new_rs);
    match strategy_type(d) {
        ROLLING_UPDATE_DEPLOYMENT_STRATEGY_TYPE => {
            let (surge, _) = rolling_update_params(d);
            let max_surge =
                get_scaled_value_from_int_or_percent("maxSurge", &surge, replicas, true)?;
            let current_pod_count = get_replica_count_for_replica_sets(all_rss);
            let max_total_pods = replicas.saturating_add(max_surge);
            if current_pod_count >= max_total_pods {
                // Cannot scale up.
                return Ok(new_rs_replicas);
            }
            // Scale up, but do not exceed the number of desired replicas.
            let scale_up_count = max_total_pods
                .saturating_sub(current_pod_count)
                .min(replicas.saturating_sub(new_rs_replicas));
            Ok(new_rs_replicas.saturating_add(scale_up_count))
        }
        RECREATE_DEPLOYMENT_STRATEGY_TYPE => Ok(replicas),
        other => Err(Error::UnsupportedStrategy {
            deployment: key(&d.metadata),
            strategy: other.to_string(),
        }),
    }
}

/// IsSaturated: the ReplicaSet owns, wants and has available all of the Deployment's replicas.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else {
        return false;
    };
    let Some(desired) = get_desired_replicas_annotation(rs) else {
        return false;
    };
    let replicas = deployment_replicas(d);
    replica_set_replicas(rs) == replicas
        && desired == replicas
        && rs_available_replicas(rs) == replicas
}

// ---------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------

/// DeploymentComplete: all desired replicas are updated and available, no old pods run,
/// and the status observed the current generation.
pub fn deployment_complete(d: &Deployment, new_status: &DeploymentStatus) -> bool {
    let replicas = deployment_replicas(d);
    status::updated(new_status) == replicas
        && status::replicas(new_status) == replicas
        && status::available(new_status) == replicas
        && status::observed_generation(new_status) >= d.metadata.generation.unwrap_or(0)
}

/// DeploymentProgressing: compared with the Deployment's current status, new pods were
/// updated, old pods removed, or pods became ready or available.
pub fn deployment_progressing(d: &Deployment, new_status: &DeploymentStatus) -> bool {
    let old_status = deployment_status(d);
    let old_status_old_replicas =
        status::replicas(&old_status).saturating_sub(status::updated(&old_status));
    let new_status_old_replicas =
        status::replicas(new_status).saturating_sub(status::updated(new_status));
    status::updated(new_status) > status::updated(&old_status)
        || new_status_old_replicas < old_status_old_replicas
        || status::ready(new_status) > status::ready(&old_status)
        || status::available(new_status) > status::available(&old_status)
}

/// DeploymentTimedOut: the Progressing condition of `new_status` is older than
/// progressDeadlineSeconds at `now`, or already says ProgressDeadlineExceeded.
pub fn deployment_time_out(d: &Deployment, new_status: &DeploymentStatus, now: Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    // Without a Progressing condition there is no base to estimate progress.
    let Some(condition) = get_deployment_condition(new_status, DEPLOYMENT_PROGRESSING) else {
        return false;
    };
    // A previous successful rollout: do not estimate progress (the cached Deployment may
    // not have caught up with a new ReplicaSet yet).
    match condition.reason.as_deref() {
        Some(NEW_RS_AVAILABLE_REASON) => return false,
        Some(TIMED_OUT_REASON) => return true,
        _ => {}
    }
    // Compare the time since the last reported progress with the deadline. A missing
    // lastUpdateTime is Go's zero time: long past.
    let from = condition
        .last_update_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::MIN);
    let deadline = progress_deadline_seconds(d).unwrap_or(0);
    match from.checked_add(SignedDuration::from_secs(i64::from(deadline))) {
        Ok(at) => at < now,
        Err(_) => false,
    }
}

/// `spec.progressDeadlineSeconds`.
pub fn progress_deadline_seconds(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds)
}

/// HasProgressDeadline: progressDeadlineSeconds is set and not math.MaxInt32.
pub fn has_progress_deadline(d: &Deployment) -> bool {
    progress_deadline_seconds(d).is_some_and(|p| p != i32::MAX)
}

/// `spec.revisionHistoryLimit`.
pub fn revision_history_limit(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.revision_history_limit)
}

/// HasRevisionHistoryLimit: revisionHistoryLimit is set and not math.MaxInt32.
pub fn has_revision_history_limit(d: &Deployment) -> bool {
    revision_history_limit(d).is_some_and(|l| l != i32::MAX)
}

// ---------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------

/// metav1.Time as stored: whole seconds (what the apiserver round-trips).
pub fn to_time(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// NewDeploymentCondition: a condition updated and transitioned at `now`.
pub fn new_deployment_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        last_update_time: Some(to_time(now)),
        last_transition_time: Some(to_time(now)),
        reason: opt_str(reason),
        message: opt_str(message),
    }
}

/// GetDeploymentCondition: the condition of the given type.
pub fn get_deployment_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// SetDeploymentCondition: adds or replaces the condition of its type; a no-op when status
/// and reason are unchanged; keeps lastTransitionTime when only the reason changed.
pub fn set_deployment_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_deployment_condition(status, &condition.type_) {
        let same_reason =
            current.reason.as_deref().unwrap_or("") == condition.reason.as_deref().unwrap_or("");
        if current.status == condition.status && same_reason {
            return;
        }
        // Do not update lastTransitionTime if the status of the condition doesn't change.
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    let type_ = condition.type_.clone();
    remove_deployment_condition(status, &type_);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

/// RemoveDeploymentCondition: drops the condition of the given type (no conditions left
/// reads as absent, like Go's nil slice).
pub fn remove_deployment_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.take() {
        let kept: Vec<DeploymentCondition> = conditions
            .into_iter()
            .filter(|c| c.type_ != type_)
            .collect();
        status.conditions = (!kept.is_empty()).then_some(kept);
    }
}

/// ReplicaSetToDeploymentCondition: a ReplicaSet condition promoted to the Deployment.
pub fn replica_set_to_deployment_condition(cond: &ReplicaSetCondition) -> DeploymentCondition {
    DeploymentCondition {
        type_: cond.type_.clone(),
        status: cond.status.clone(),
        last_transition_time: cond.last_transition_time.clone(),
        last_update_time: cond.last_transition_time.clone(),
        reason: cond.reason.clone(),
        message: cond.message.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// `ReplicaSet "x" has successfully progressed.` (or `Deployment "d" ...` without a new RS).
pub fn successfully_progressed_message(d: &Deployment, new_rs: Option<&ReplicaSet>) -> String {
    match new_rs {
        Some(rs) => format!(
            "ReplicaSet {} has successfully progressed.",
            quote(name(&rs.metadata))
        ),
        None => format!(
            "Deployment {} has successfully progressed.",
            quote(name(&d.metadata))
        ),
    }
}

/// `ReplicaSet "x" is progressing.` (or `Deployment "d" is progressing.`).
pub fn is_progressing_message(d: &Deployment, new_rs: Option<&ReplicaSet>) -> String {
    match new_rs {
        Some(rs) => format!("ReplicaSet {} is progressing.", quote(name(&rs.metadata))),
        None => format!("Deployment {} is progressing.", quote(name(&d.metadata))),
    }
}

/// `ReplicaSet "x" has timed out progressing.` (or `Deployment "d" ...`).
pub fn timed_out_message(d: &Deployment, new_rs: Option<&ReplicaSet>) -> String {
    match new_rs {
        Some(rs) => format!(
            "ReplicaSet {} has timed out progressing.",
            quote(name(&rs.metadata))
        ),
        None => format!(
            "Deployment {} has timed out progressing.",
            quote(name(&d.metadata))
        ),
    }
}

/// `Created new replica set "x"`.
pub fn created_new_replica_set_message(rs_name: &str) -> String {
    format!("Created new replica set {}", quote(rs_name))
}

/// `Found new replica set "x"`.
pub fn found_new_replica_set_message(rs_name: &str) -> String {
    format!("Found new replica set {}", quote(rs_name))
}

/// `Failed to create new replica set "x": <error>`.
pub fn failed_rs_create_message(rs_name: &str, error: &str) -> String {
    format!(
        "Failed to create new replica set {}: {error}",
        quote(rs_name)
    )
}

/// The ScalingReplicaSet event message: `Scaled up replica set x from 1 to 3`.
pub fn scaling_replica_set_message(rs_name: &str, from: i32, to: i32) -> String {
    let direction = if from < to { "up" } else { "down" };
    format!("Scaled {direction} replica set {rs_name} from {from} to {to}")
}

#[cfg(test)]
pub(crate) mod test_helpers {
    //! Builders shared by the deployment modules' tests, after upstream's test fixtures
    //! (newDeployment, rs, newRSWithStatus, generateDeployment, generateRS).
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, RollingUpdateDeployment,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

    pub fn ts(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> Timestamp {
        jiff::civil::date(y, mo, d)
            .at(h, mi, s, 0)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
    }

    pub fn int(i: i32) -> IntOrString {
        IntOrString::Int(i)
    }

    pub fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.to_string())
    }

    pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// upstream newDeployment: RollingUpdate with maxSurge/maxUnavailable 0 unless given.
    pub fn new_deployment(
        name: &str,
        replicas: i32,
        revision_history_limit: Option<i32>,
        max_surge: Option<IntOrString>,
        max_unavailable: Option<IntOrString>,
        selector: &[(&str, &str)],
    ) -> Deployment {
        let selector = labels(selector);
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".to_string()),
                uid: Some(format!("uid-{name}")),
                annotations: Some(BTreeMap::new()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                revision_history_limit,
                selector: LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..Default::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some(ROLLING_UPDATE_DEPLOYMENT_STRATEGY_TYPE.to_string()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(max_surge.unwrap_or(int(0))),
                        max_unavailable: Some(max_unavailable.unwrap_or(int(0))),
                    }),
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(selector),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            image: Some("foo/bar".to_string()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    /// upstream rs(name, replicas, selector, timestamp).
    pub fn rs(name: &str, replicas: i32, created: Option<Timestamp>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".to_string()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: created.map(Time),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// upstream newRSWithStatus, plus available replicas.
    pub fn rs_with_status(name: &str, spec: i32, status: i32, available: i32) -> ReplicaSet {
        let mut r = rs(name, spec, None);
        r.status = Some(ReplicaSetStatus {
            replicas: status,
            available_replicas: opt_i32(available),
            ..Default::default()
        });
        r
    }

    /// upstream newReplicaSet(d, name, replicas): owned by `d`, with its template.
    pub fn owned_replica_set(d: &Deployment, name: &str, replicas: i32) -> ReplicaSet {
        let mut r = rs(name, replicas, None);
        r.metadata.owner_references = Some(vec![OwnerReference {
            api_version: rekube_crds::API_VERSION.to_string(),
            kind: "Deployment".to_string(),
            name: super::name(&d.metadata).to_string(),
            uid: d.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        let spec = d.spec.as_ref().unwrap();
        r.metadata.labels = spec.selector.match_labels.clone();
        let rs_spec = r.spec.as_mut().unwrap();
        rs_spec.selector = spec.selector.clone();
        rs_spec.template = Some(spec.template.clone());
        r
    }

    pub fn set_annotation(meta: &mut ObjectMeta, k: &str, v: &str) {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.to_string(), v.to_string());
    }
}

#[cfg(test)]
mod tests {
    // Table tests spell their rows as tuples.
    #![allow(clippy::type_complexity)]

    use super::test_helpers::*;
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    // --- generateDeployment / generateRS / generatePodTemplateSpec (deployment_util_test.go)

    fn generate_deployment(image: &str) -> Deployment {
        let pod_labels = labels(&[("name", image)]);
        let mut d = new_deployment(image, 1, None, None, None, &[("name", image)]);
        let spec = d.spec.as_mut().unwrap();
        spec.strategy = None;
        spec.template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: image.to_string(),
                    image: Some(image.to_string()),
                    image_pull_policy: Some("Always".to_string()),
                    termination_message_path: Some("/dev/termination-log".to_string()),
                    ..Default::default()
                }],
                dns_policy: Some("ClusterFirst".to_string()),
                termination_grace_period_seconds: Some(30),
                restart_policy: Some("Always".to_string()),
                security_context: Some(Default::default()),
                enable_service_links: Some(true),
                ..Default::default()
            }),
        };
        d
    }

    fn generate_rs(d: &Deployment, name: &str) -> ReplicaSet {
        let mut r = owned_replica_set(d, name, 0);
        r.metadata.labels = deployment_template(d).metadata.and_then(|m| m.labels);
        r
    }

    fn generate_pod_template_spec(
        name: &str,
        node_name: &str,
        annotations: &[(&str, &str)],
        lbls: &[(&str, &str)],
    ) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                name: Some(name.to_string()),
                annotations: Some(labels(annotations)),
                labels: Some(labels(lbls)),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: Some(node_name.to_string()),
                ..Default::default()
            }),
        }
    }

    fn set_template_hash(rs: &mut ReplicaSet, hash: &str) {
        let template = rs.spec.as_mut().unwrap().template.as_mut().unwrap();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(
                DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY.to_string(),
                hash.to_string(),
            );
        rs.metadata.labels.get_or_insert_with(BTreeMap::new).insert(
            DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY.to_string(),
            hash.to_string(),
        );
    }

    fn names(rss: &[&ReplicaSet]) -> Vec<String> {
        rss.iter().map(|r| name(&r.metadata).to_string()).collect()
    }

    // TestEqualIgnoreHash
    #[test]
    fn equal_ignore_hash_table() {
        let h = DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY;
        let cases = [
            (
                "Same spec, same labels",
                generate_pod_template_spec(
                    "foo",
                    "foo-node",
                    &[],
                    &[(h, "value-1"), ("something", "else")],
                ),
                generate_pod_template_spec(
                    "foo",
                    "foo-node",
                    &[],
                    &[(h, "value-1"), ("something", "else")],
                ),
                true,
            ),
            (
                "Same spec, only pod-template-hash label value is different",
                generate_pod_template_spec(
                    "foo",
                    "foo-node",
                    &[],
                    &[(h, "value-1"), ("something", "else")],
                ),
                generate_pod_template_spec(
                    "foo",
                    "foo-node",
                    &[],
                    &[(h, "value-2"), ("something", "else")],
                ),
                true,
            ),
            (
                "Same spec, the former doesn't have pod-template-hash label",
                generate_pod_template_spec("foo", "foo-node", &[], &[("something", "else")]),
                generate_pod_template_spec(
                    "foo",
                    "foo-node",
                    &[],
                    &[(h, "value-2"), ("something", "else")],
                ),
                true,
            ),
            (
                "Same spec, the label is different, the former doesn't have pod-template-hash label, same number of labels",
                generate_pod_template_spec("foo", "foo-node", &[], &[("something", "else")]),
                generate_pod_template_spec("foo", "foo-node", &[], &[(h, "value-2")]),
                false,
            ),
            (
                "Same spec, the label is different, the latter doesn't have pod-template-hash label, same number of labels",
                generate_pod_template_spec("foo", "foo-node", &[], &[(h, "value-1")]),
                generate_pod_template_spec("foo", "foo-node", &[], &[("something", "else")]),
                false,
            ),
            (
                "Same spec, the label is different, and the pod-template-hash label value is the same",
                generate_pod_template_spec("foo", "foo-node", &[], &[(h, "value-1")]),
                generate_pod_template_spec(
                    "foo",
                    "foo-node",
                    &[],
                    &[(h, "value-1"), ("something", "else")],
                ),
                false,
            ),
            (
                "Different spec, same labels",
                generate_pod_template_spec(
                    "foo",
                    "foo-node",
                    &[("former", "value")],
                    &[(h, "value-1"), ("something", "else")],
                ),
                generate_pod_template_spec(
                    "foo",
                    "foo-node",
                    &[("latter", "value")],
                    &[(h, "value-1"), ("something", "else")],
                ),
                false,
            ),
            (
                "Different spec, different pod-template-hash label value",
                generate_pod_template_spec(
                    "foo-1",
                    "foo-node",
                    &[],
                    &[(h, "value-1"), ("something", "else")],
                ),
                generate_pod_template_spec(
                    "foo-2",
                    "foo-node",
                    &[],
                    &[(h, "value-2"), ("something", "else")],
                ),
                false,
            ),
            (
                "Different spec, the former doesn't have pod-template-hash label",
                generate_pod_template_spec("foo-1", "foo-node-1", &[], &[("something", "else")]),
                generate_pod_template_spec(
                    "foo-2",
                    "foo-node-2",
                    &[],
                    &[(h, "value-2"), ("something", "else")],
                ),
                false,
            ),
            (
                "Different spec, different labels",
                generate_pod_template_spec("foo", "foo-node-1", &[], &[("something", "else")]),
                generate_pod_template_spec("foo", "foo-node-2", &[], &[("nothing", "else")]),
                false,
            ),
        ];
        for (case, a, b, expected) in cases {
            assert_eq!(equal_ignore_hash(&a, &b), expected, "{case}");
            assert_eq!(
                equal_ignore_hash(&b, &a),
                expected,
                "{case} (reverse order)"
            );
        }
    }

    #[test]
    fn equal_ignore_hash_treats_nil_and_empty_alike() {
        let a = generate_pod_template_spec(
            "foo",
            "n",
            &[],
            &[(DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY, "x")],
        );
        let mut b = a.clone();
        b.metadata.as_mut().unwrap().labels = None;
        b.metadata.as_mut().unwrap().annotations = None;
        assert!(equal_ignore_hash(&a, &b));
    }

    // TestFindNewReplicaSet
    #[test]
    fn find_new_replica_set_table() {
        let now = ts(2016, 5, 20, 2, 0, 0);
        let later = now + SignedDuration::from_mins(1);
        let deployment = generate_deployment("nginx");
        let mut new_rs = generate_rs(&deployment, "nginx-new");
        set_template_hash(&mut new_rs, "hash");
        new_rs.metadata.creation_timestamp = Some(Time(later));
        let mut new_rs_dup = generate_rs(&deployment, "nginx-dup");
        set_template_hash(&mut new_rs_dup, "different-hash");
        new_rs_dup.metadata.creation_timestamp = Some(Time(now));
        let mut old_deployment = generate_deployment("nginx");
        old_deployment
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .name = "nginx-old-1".to_string();
        let old_rs = generate_rs(&old_deployment, "nginx-old");

        let list = [new_rs.clone(), old_rs.clone()];
        let got = find_new_replica_set(&deployment, &list);
        assert_eq!(got.map(|r| name(&r.metadata)), Some("nginx-new"));
        let list = [new_rs.clone(), old_rs.clone(), new_rs_dup.clone()];
        let got = find_new_replica_set(&deployment, &list);
        assert_eq!(
            got.map(|r| name(&r.metadata)),
            Some("nginx-dup"),
            "oldest new ReplicaSet"
        );
        assert!(find_new_replica_set(&deployment, &[old_rs]).is_none());
    }

    // TestFindOldReplicaSets
    #[test]
    fn find_old_replica_sets_table() {
        let now = ts(2016, 5, 20, 2, 0, 0);
        let later = now + SignedDuration::from_mins(1);
        let before = now - SignedDuration::from_mins(1);
        let deployment = generate_deployment("nginx");
        let mut new_rs = generate_rs(&deployment, "nginx-new");
        new_rs.spec.as_mut().unwrap().replicas = Some(1);
        set_template_hash(&mut new_rs, "hash");
        new_rs.metadata.creation_timestamp = Some(Time(later));
        let mut new_rs_dup = generate_rs(&deployment, "nginx-dup");
        set_template_hash(&mut new_rs_dup, "different-hash");
        new_rs_dup.metadata.creation_timestamp = Some(Time(now));
        let mut old_deployment = generate_deployment("nginx");
        old_deployment
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .name = "nginx-old-1".to_string();
        let mut old_rs = generate_rs(&old_deployment, "nginx-old");
        old_rs.metadata.creation_timestamp = Some(Time(before));

        let cases: Vec<(&str, Vec<ReplicaSet>, Vec<&str>, Vec<&str>)> = vec![
            (
                "Get old ReplicaSets",
                vec![new_rs.clone(), old_rs.clone()],
                vec!["nginx-old"],
                vec![],
            ),
            (
                "Get old ReplicaSets with no new ReplicaSet",
                vec![old_rs.clone()],
                vec!["nginx-old"],
                vec![],
            ),
            (
                "Get old ReplicaSets with two new ReplicaSets, only the oldest new ReplicaSet is seen as new ReplicaSet",
                vec![old_rs.clone(), new_rs.clone(), new_rs_dup.clone()],
                vec!["nginx-old", "nginx-new"],
                vec!["nginx-new"],
            ),
            (
                "Get empty old ReplicaSets",
                vec![new_rs.clone()],
                vec![],
                vec![],
            ),
        ];
        for (case, list, expected_all, expected_required) in cases {
            let new = find_new_replica_set(&deployment, &list);
            let (required, mut all) = find_old_replica_sets(&deployment, &list, new);
            sort_by_creation_timestamp(&mut all);
            assert_eq!(names(&all), expected_all, "{case}");
            assert_eq!(names(&required), expected_required, "{case}");
        }
    }

    // TestGetReplicaCountForReplicaSets
    #[test]
    fn replica_counts_table() {
        let mut rs1 = rs("foo-rs", 1, None);
        rs1.status = Some(ReplicaSetStatus {
            observed_generation: Some(1),
            replicas: 2,
            terminating_replicas: Some(3),
            ..Default::default()
        });
        let mut rs2 = rs("bar-rs", 2, None);
        rs2.status = Some(ReplicaSetStatus {
            replicas: 3,
            terminating_replicas: Some(1),
            ..Default::default()
        });
        let mut rs3 = rs("unsynced-rs", 3, None);
        rs3.status = Some(ReplicaSetStatus::default());
        let mut rs4 = rs("dropped-rs", 1, None);
        rs4.status = Some(ReplicaSetStatus {
            observed_generation: Some(1),
            replicas: 1,
            ..Default::default()
        });
        let cases: Vec<(&str, Vec<&ReplicaSet>, i32, i32, Option<i32>)> = vec![
            ("scaling down rs1", vec![&rs1], 1, 2, Some(3)),
            ("scaling down rs1 and rs2", vec![&rs1, &rs2], 3, 5, Some(4)),
            ("scaling up rs3", vec![&rs3], 3, 0, Some(0)),
            (
                "scaling down rs1 and rs2 and scaling up rs3",
                vec![&rs1, &rs2, &rs3],
                6,
                5,
                Some(4),
            ),
            (
                "invalid/unknown terminating status for rs4",
                vec![&rs4],
                1,
                1,
                None,
            ),
            (
                "invalid/unknown terminating status for rs4 with rs1, rs2 and rs3",
                vec![&rs1, &rs2, &rs3, &rs4],
                7,
                6,
                None,
            ),
        ];
        for (case, sets, count, actual, terminating) in cases {
            assert_eq!(get_replica_count_for_replica_sets(&sets), count, "{case}");
            assert_eq!(
                get_actual_replica_count_for_replica_sets(&sets),
                actual,
                "{case}"
            );
            assert_eq!(
                get_terminating_replica_count_for_replica_sets(&sets),
                terminating,
                "{case}"
            );
        }
    }

    #[test]
    fn ready_and_available_counts() {
        let mut a = rs("a", 3, None);
        a.status = Some(ReplicaSetStatus {
            replicas: 3,
            ready_replicas: Some(2),
            available_replicas: Some(1),
            ..Default::default()
        });
        let b = rs("b", 2, None);
        assert_eq!(get_ready_replica_count_for_replica_sets(&[&a, &b]), 2);
        assert_eq!(get_available_replica_count_for_replica_sets(&[&a, &b]), 1);
    }

    // TestResolveFenceposts
    #[test]
    fn resolve_fenceposts_table() {
        let cases: [(Option<&str>, Option<&str>, i32, i32, i32, bool); 7] = [
            (Some("0%"), Some("0%"), 0, 0, 1, false),
            (Some("39%"), Some("39%"), 10, 4, 3, false),
            (Some("oops"), Some("39%"), 10, 0, 0, true),
            (Some("55%"), Some("urg"), 10, 0, 0, true),
            (None, Some("39%"), 10, 0, 3, false),
            (Some("39%"), None, 10, 4, 0, false),
            (None, None, 10, 0, 1, false),
        ];
        for (i, (surge, unavail, desired, es, eu, err)) in cases.into_iter().enumerate() {
            let surge = surge.map(pct);
            let unavail = unavail.map(pct);
            let got = resolve_fenceposts(surge.as_ref(), unavail.as_ref(), desired);
            match got {
                Ok((s, u)) => {
                    assert!(!err, "#{i}: expected error");
                    assert_eq!((s, u), (es, eu), "#{i}");
                }
                Err(e) => assert!(err, "#{i}: unexpected error {e}"),
            }
        }
    }

    #[test]
    fn scaled_value_parses_like_intstr() {
        assert_eq!(
            get_scaled_value_from_int_or_percent("x", &int(7), 100, true),
            Ok(7)
        );
        assert_eq!(
            get_scaled_value_from_int_or_percent("x", &pct("25%"), 10, true),
            Ok(3)
        );
        assert_eq!(
            get_scaled_value_from_int_or_percent("x", &pct("25%"), 10, false),
            Ok(2)
        );
        assert_eq!(
            get_scaled_value_from_int_or_percent("x", &pct("100%"), 7, false),
            Ok(7)
        );
        let err =
            get_scaled_value_from_int_or_percent("maxSurge", &pct("5"), 10, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid maxSurge value \"5\": invalid type: string is not a percentage"
        );
        assert!(get_scaled_value_from_int_or_percent("x", &pct("a%"), 10, true).is_err());
    }

    // TestNewRSNewReplicas
    #[test]
    fn new_rs_new_replicas_table() {
        let cases = [
            (
                "can not scale up - to newRSReplicas",
                ROLLING_UPDATE_DEPLOYMENT_STRATEGY_TYPE,
                1,
                5,
                1,
                5,
            ),
            (
                "scale up - to depReplicas",
                ROLLING_UPDATE_DEPLOYMENT_STRATEGY_TYPE,
                6,
                2,
                10,
                6,
            ),
            (
                "recreate - to depReplicas",
                RECREATE_DEPLOYMENT_STRATEGY_TYPE,
                3,
                1,
                1,
                3,
            ),
        ];
        let mut d = generate_deployment("nginx");
        let mut new_rc = generate_rs(&d, "nginx-new");
        let mut rs5 = generate_rs(&d, "nginx-5");
        rs5.spec.as_mut().unwrap().replicas = Some(5);
        for (case, strategy, dep_replicas, new_rs_replicas, surge, expected) in cases {
            let spec = d.spec.as_mut().unwrap();
            spec.replicas = Some(dep_replicas);
            spec.strategy = Some(DeploymentStrategy {
                type_: Some(strategy.to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(int(1)),
                    max_surge: Some(int(surge)),
                }),
            });
            new_rc.spec.as_mut().unwrap().replicas = Some(new_rs_replicas);
            assert_eq!(
                new_rs_new_replicas(&d, &[&rs5], &new_rc),
                Ok(expected),
                "{case}"
            );
        }
        d.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ = Some("Foo".to_string());
        let err = new_rs_new_replicas(&d, &[&rs5], &new_rc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "deployment default/nginx: deployment type \"Foo\" isn't supported"
        );
    }

    fn cond(type_: &str, status: &str, reason: &str) -> DeploymentCondition {
        DeploymentCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: Some(reason.to_string()),
            ..Default::default()
        }
    }

    fn cond_progressing() -> DeploymentCondition {
        cond(DEPLOYMENT_PROGRESSING, CONDITION_FALSE, "ForSomeReason")
    }
    fn cond_progressing2() -> DeploymentCondition {
        cond(DEPLOYMENT_PROGRESSING, CONDITION_TRUE, "BecauseItIs")
    }
    fn cond_available() -> DeploymentCondition {
        cond(DEPLOYMENT_AVAILABLE, CONDITION_TRUE, "AwesomeController")
    }
    fn example_status() -> DeploymentStatus {
        DeploymentStatus {
            conditions: Some(vec![cond_progressing(), cond_available()]),
            ..Default::default()
        }
    }

    // TestGetCondition
    #[test]
    fn get_condition_table() {
        let s = example_status();
        assert!(get_deployment_condition(&s, DEPLOYMENT_AVAILABLE).is_some());
        assert!(get_deployment_condition(&s, DEPLOYMENT_REPLICA_FAILURE).is_none());
    }

    // TestSetCondition
    #[test]
    fn set_condition_table() {
        let mut s = DeploymentStatus::default();
        set_deployment_condition(&mut s, cond_available());
        assert_eq!(
            s.conditions,
            Some(vec![cond_available()]),
            "set for the first time"
        );

        let mut s = DeploymentStatus {
            conditions: Some(vec![cond_progressing()]),
            ..Default::default()
        };
        set_deployment_condition(&mut s, cond_available());
        assert_eq!(s, example_status(), "simple set");

        let mut s = DeploymentStatus {
            conditions: Some(vec![cond_progressing()]),
            ..Default::default()
        };
        set_deployment_condition(&mut s, cond_progressing2());
        assert_eq!(s.conditions, Some(vec![cond_progressing2()]), "overwrite");
    }

    #[test]
    fn set_condition_keeps_transition_time_and_ignores_same_reason() {
        let t0 = ts(2020, 1, 1, 0, 0, 0);
        let t1 = ts(2020, 1, 1, 0, 5, 0);
        let mut s = DeploymentStatus::default();
        set_deployment_condition(
            &mut s,
            new_deployment_condition(DEPLOYMENT_PROGRESSING, CONDITION_TRUE, "A", "m", t0),
        );
        // Same status and reason: no-op, even with a new message and time.
        set_deployment_condition(
            &mut s,
            new_deployment_condition(DEPLOYMENT_PROGRESSING, CONDITION_TRUE, "A", "m2", t1),
        );
        let c = get_deployment_condition(&s, DEPLOYMENT_PROGRESSING).unwrap();
        assert_eq!(c.message.as_deref(), Some("m"));
        assert_eq!(c.last_update_time, Some(Time(t0)));
        // Same status, new reason: replaced, transition time kept.
        set_deployment_condition(
            &mut s,
            new_deployment_condition(DEPLOYMENT_PROGRESSING, CONDITION_TRUE, "B", "m3", t1),
        );
        let c = get_deployment_condition(&s, DEPLOYMENT_PROGRESSING).unwrap();
        assert_eq!(c.reason.as_deref(), Some("B"));
        assert_eq!(c.last_update_time, Some(Time(t1)));
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        // New status: transition time moves.
        set_deployment_condition(
            &mut s,
            new_deployment_condition(DEPLOYMENT_PROGRESSING, CONDITION_FALSE, "C", "", t1),
        );
        let c = get_deployment_condition(&s, DEPLOYMENT_PROGRESSING).unwrap();
        assert_eq!(c.last_transition_time, Some(Time(t1)));
        assert_eq!(c.message, None);
    }

    #[test]
    fn new_condition_truncates_to_seconds() {
        let now = ts(2020, 1, 1, 0, 0, 0) + SignedDuration::from_millis(1500);
        let c = new_deployment_condition(DEPLOYMENT_AVAILABLE, CONDITION_TRUE, "r", "m", now);
        assert_eq!(c.last_update_time, Some(Time(ts(2020, 1, 1, 0, 0, 1))));
    }

    // TestRemoveCondition
    #[test]
    fn remove_condition_table() {
        let mut s = DeploymentStatus::default();
        remove_deployment_condition(&mut s, DEPLOYMENT_PROGRESSING);
        assert_eq!(s, DeploymentStatus::default(), "remove from empty status");

        let mut s = DeploymentStatus {
            conditions: Some(vec![cond_progressing()]),
            ..Default::default()
        };
        remove_deployment_condition(&mut s, DEPLOYMENT_PROGRESSING);
        assert_eq!(s, DeploymentStatus::default(), "simple remove");

        let mut s = example_status();
        remove_deployment_condition(&mut s, DEPLOYMENT_REPLICA_FAILURE);
        assert_eq!(s, example_status(), "doesn't remove anything");
    }

    fn complete_deployment(
        desired: i32,
        current: i32,
        updated: i32,
        available: i32,
        max_unavailable: i32,
        max_surge: i32,
    ) -> Deployment {
        let mut d = new_deployment(
            "foo",
            desired,
            None,
            Some(int(max_surge)),
            Some(int(max_unavailable)),
            &[],
        );
        d.status = Some(DeploymentStatus {
            replicas: opt_i32(current),
            updated_replicas: opt_i32(updated),
            available_replicas: opt_i32(available),
            ..Default::default()
        });
        d
    }

    // TestDeploymentComplete
    #[test]
    fn deployment_complete_table() {
        let cases = [
            (
                "not complete: min but not all pods become available",
                complete_deployment(5, 5, 5, 4, 1, 0),
                false,
            ),
            (
                "not complete: min availability is not honored",
                complete_deployment(5, 5, 5, 3, 1, 0),
                false,
            ),
            ("complete", complete_deployment(5, 5, 5, 5, 0, 0), true),
            (
                "not complete: all pods are available but not updated",
                complete_deployment(5, 5, 4, 5, 0, 0),
                false,
            ),
            (
                "not complete: still running old pods",
                complete_deployment(1, 2, 1, 1, 0, 1),
                false,
            ),
            (
                "not complete: one replica deployment never comes up",
                complete_deployment(1, 1, 1, 0, 1, 1),
                false,
            ),
        ];
        for (case, d, expected) in cases {
            assert_eq!(
                deployment_complete(&d, d.status.as_ref().unwrap()),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn deployment_complete_requires_observed_generation() {
        let mut d = complete_deployment(5, 5, 5, 5, 0, 0);
        d.metadata.generation = Some(2);
        let mut s = d.status.clone().unwrap();
        s.observed_generation = Some(1);
        assert!(!deployment_complete(&d, &s));
        s.observed_generation = Some(2);
        assert!(deployment_complete(&d, &s));
    }

    fn progress_status(current: i32, updated: i32, ready: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            replicas: opt_i32(current),
            updated_replicas: opt_i32(updated),
            ready_replicas: opt_i32(ready),
            available_replicas: opt_i32(available),
            ..Default::default()
        }
    }

    // TestDeploymentProgressing
    #[test]
    fn deployment_progressing_table() {
        let cases = [
            (
                "progressing: updated pods",
                (10, 4, 4, 4),
                (10, 6, 4, 4),
                true,
            ),
            ("not progressing", (10, 4, 4, 4), (10, 4, 4, 4), false),
            (
                "progressing: old pods removed",
                (10, 4, 6, 6),
                (8, 4, 6, 6),
                true,
            ),
            (
                "not progressing: less new pods",
                (10, 7, 3, 3),
                (10, 6, 3, 3),
                false,
            ),
            (
                "progressing: less overall but more new pods",
                (10, 4, 7, 7),
                (8, 8, 5, 5),
                true,
            ),
            (
                "progressing: more ready pods",
                (10, 10, 9, 8),
                (10, 10, 10, 8),
                true,
            ),
            (
                "progressing: more available pods",
                (10, 10, 10, 9),
                (10, 10, 10, 10),
                true,
            ),
        ];
        for (case, old, new, expected) in cases {
            let d = Deployment {
                status: Some(progress_status(old.0, old.1, old.2, old.3)),
                ..Default::default()
            };
            let new_status = progress_status(new.0, new.1, new.2, new.3);
            assert_eq!(deployment_progressing(&d, &new_status), expected, "{case}");
        }
    }

    // TestDeploymentTimedOut
    #[test]
    fn deployment_timed_out_table() {
        let time = |min: i8, sec: i8| ts(2016, 1, 1, 0, min, sec);
        let deployment =
            |status: &str, reason: &str, pds: Option<i32>, from: Option<Timestamp>| Deployment {
                spec: Some(DeploymentSpec {
                    progress_deadline_seconds: pds,
                    ..Default::default()
                }),
                status: Some(DeploymentStatus {
                    conditions: Some(vec![DeploymentCondition {
                        type_: DEPLOYMENT_PROGRESSING.to_string(),
                        status: status.to_string(),
                        reason: opt_str(reason),
                        last_update_time: from.map(Time),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
        let cases = [
            (
                "nil progressDeadlineSeconds specified - no timeout",
                deployment(CONDITION_TRUE, "", None, Some(time(1, 9))),
                time(1, 20),
                false,
            ),
            (
                "infinite progressDeadlineSeconds specified - no timeout",
                deployment(CONDITION_TRUE, "", Some(i32::MAX), Some(time(1, 9))),
                time(1, 20),
                false,
            ),
            (
                "progressDeadlineSeconds: 10s, now - started => 00:01:20 - 00:01:09 => 11s",
                deployment(CONDITION_TRUE, "", Some(10), Some(time(1, 9))),
                time(1, 20),
                true,
            ),
            (
                "progressDeadlineSeconds: 10s, now - started => 00:01:20 - 00:01:11 => 9s",
                deployment(CONDITION_TRUE, "", Some(10), Some(time(1, 11))),
                time(1, 20),
                false,
            ),
            (
                "previous status was a complete deployment",
                deployment(CONDITION_TRUE, NEW_RS_AVAILABLE_REASON, None, None),
                time(1, 20),
                false,
            ),
            (
                "already timed out",
                deployment(
                    CONDITION_FALSE,
                    TIMED_OUT_REASON,
                    Some(600),
                    Some(time(1, 19)),
                ),
                time(1, 20),
                true,
            ),
        ];
        for (case, d, now, expected) in cases {
            assert_eq!(
                deployment_time_out(&d, d.status.as_ref().unwrap(), now),
                expected,
                "{case}"
            );
        }
    }

    fn max_unavailable_deployment(replicas: i32, max_unavailable: IntOrString) -> Deployment {
        new_deployment(
            "foo",
            replicas,
            None,
            Some(int(1)),
            Some(max_unavailable),
            &[],
        )
    }

    // TestMaxUnavailable
    #[test]
    fn max_unavailable_table() {
        let recreate = Deployment {
            spec: Some(DeploymentSpec {
                strategy: Some(DeploymentStrategy {
                    type_: Some(RECREATE_DEPLOYMENT_STRATEGY_TYPE.to_string()),
                    rolling_update: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cases = [
            (
                "maxUnavailable less than replicas",
                max_unavailable_deployment(10, int(5)),
                5,
            ),
            (
                "maxUnavailable equal replicas",
                max_unavailable_deployment(10, int(10)),
                10,
            ),
            (
                "maxUnavailable greater than replicas",
                max_unavailable_deployment(5, int(10)),
                5,
            ),
            (
                "maxUnavailable with replicas is 0",
                max_unavailable_deployment(0, int(10)),
                0,
            ),
            (
                "maxUnavailable with Recreate deployment strategy",
                recreate,
                0,
            ),
            (
                "maxUnavailable less than replicas with percents",
                max_unavailable_deployment(10, pct("50%")),
                5,
            ),
            (
                "maxUnavailable equal replicas with percents",
                max_unavailable_deployment(10, pct("100%")),
                10,
            ),
            (
                "maxUnavailable greater than replicas with percents",
                max_unavailable_deployment(5, pct("100%")),
                5,
            ),
        ];
        for (case, d, expected) in cases {
            assert_eq!(max_unavailable(&d), expected, "{case}");
        }
    }

    // TestMinAvailable
    #[test]
    fn min_available_table() {
        let mut recreate = new_deployment("foo", 10, None, None, None, &[]);
        recreate.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some(RECREATE_DEPLOYMENT_STRATEGY_TYPE.to_string()),
            rolling_update: None,
        });
        let cases = [
            (
                "replicas greater than maxUnavailable",
                max_unavailable_deployment(10, int(5)),
                5,
            ),
            (
                "replicas equal maxUnavailable",
                max_unavailable_deployment(10, int(10)),
                0,
            ),
            (
                "replicas less than maxUnavailable",
                max_unavailable_deployment(5, int(10)),
                0,
            ),
            ("replicas is 0", max_unavailable_deployment(0, int(10)), 0),
            (
                "minAvailable with Recreate deployment strategy",
                recreate,
                0,
            ),
            (
                "replicas greater than maxUnavailable with percents",
                max_unavailable_deployment(10, pct("60%")),
                4,
            ),
            (
                "replicas equal maxUnavailable with percents",
                max_unavailable_deployment(10, pct("100%")),
                0,
            ),
            (
                "replicas less than maxUnavailable with percents",
                max_unavailable_deployment(5, pct("100%")),
                0,
            ),
        ];
        for (case, d, expected) in cases {
            assert_eq!(min_available(&d), expected, "{case}");
        }
    }

    #[test]
    fn absent_fields_use_apps_v1_defaults() {
        // No spec at all: 1 replica, RollingUpdate 25%/25% → surge ceil(0.25)=1, unavailable 0.
        let d = Deployment::default();
        assert_eq!(deployment_replicas(&d), 1);
        assert!(is_rolling_update(&d));
        assert_eq!(max_surge(&d), 1);
        assert_eq!(max_unavailable(&d), 0);
        // rollingUpdate absent: 25%/25% of 10 → 3 and 2.
        let mut d = new_deployment("foo", 10, None, None, None, &[]);
        d.spec
            .as_mut()
            .unwrap()
            .strategy
            .as_mut()
            .unwrap()
            .rolling_update = None;
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        // A field absent inside rollingUpdate: that field defaults to 25%.
        let mut d = new_deployment("foo", 10, None, None, None, &[]);
        d.spec
            .as_mut()
            .unwrap()
            .strategy
            .as_mut()
            .unwrap()
            .rolling_update = Some(RollingUpdateDeployment {
            max_surge: Some(int(5)),
            max_unavailable: None,
        });
        assert_eq!((max_surge(&d), max_unavailable(&d)), (5, 2));
        // ReplicaSet without spec.replicas reads as 1.
        let mut r = rs("r", 0, None);
        r.spec.as_mut().unwrap().replicas = None;
        assert_eq!(replica_set_replicas(&r), 1);
        // Invalid values resolve to 0 like upstream ("caught by validation").
        let d = new_deployment("foo", 10, None, Some(pct("x")), Some(int(1)), &[]);
        assert_eq!(max_surge(&d), 0);
        assert_eq!(max_unavailable(&d), 0);
    }

    // TestGetNonNegativeInt32FromAnnotation
    #[test]
    fn non_negative_int32_annotation_table() {
        let cases: [(&str, Option<&str>, Result<Option<i32>, &str>); 8] = [
            ("invalid empty", None, Ok(None)),
            ("invalid", Some("invalid"), Err("invalid syntax")),
            ("invalid negative", Some("-1"), Err("invalid syntax")),
            ("valid zero", Some("0"), Ok(Some(0))),
            ("valid", Some("13"), Ok(Some(13))),
            ("valid max", Some("2147483647"), Ok(Some(i32::MAX))),
            (
                "invalid max out of range",
                Some("2147483648"),
                Err("out of range"),
            ),
            (
                "invalid max out of range 2",
                Some("4294967296"),
                Err("out of range"),
            ),
        ];
        for (case, value, expected) in cases {
            let mut r = rs("r", 1, None);
            set_annotation(&mut r.metadata, "foo", "2");
            if let Some(v) = value {
                set_annotation(&mut r.metadata, "test", v);
            }
            let got = get_non_negative_int32_from_annotation(&r, "test");
            match (got, expected) {
                (Ok(g), Ok(e)) => assert_eq!(g, e, "{case}"),
                (Err(g), Err(e)) => assert!(g.to_string().contains(e), "{case}: {g}"),
                (g, e) => panic!("{case}: got {g:?}, expected {e:?}"),
            }
        }
    }

    // TestAnnotationUtils
    #[test]
    fn annotation_utils() {
        let mut d = generate_deployment("nginx");
        let mut r = generate_rs(&d, "nginx-rs");
        set_annotation(&mut d.metadata, REVISION_ANNOTATION, "1");

        // SetNewReplicaSetAnnotations: increment the revision from 11 through 20.
        for i in 10..20 {
            let next = (i + 1).to_string();
            set_new_replica_set_annotations(&d, &mut r, &next, true, 5);
            let annotations = r.metadata.annotations.as_ref().unwrap();
            if i >= 12 {
                let expected = format!("{},{}", i - 1, i);
                assert_eq!(
                    annotations.get(REVISION_HISTORY_ANNOTATION),
                    Some(&expected),
                    "i={i}"
                );
            }
            assert_eq!(annotations.get(REVISION_ANNOTATION), Some(&next), "i={i}");
        }

        // SetReplicasAnnotations.
        assert!(set_replicas_annotations(&mut r, 10, 11));
        let annotations = r.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations
                .get(DESIRED_REPLICAS_ANNOTATION)
                .map(String::as_str),
            Some("10")
        );
        assert_eq!(
            annotations.get(MAX_REPLICAS_ANNOTATION).map(String::as_str),
            Some("11")
        );
        assert!(!set_replicas_annotations(&mut r, 10, 11));

        // IsSaturated.
        set_annotation(&mut r.metadata, DESIRED_REPLICAS_ANNOTATION, "1");
        r.status = Some(ReplicaSetStatus {
            available_replicas: Some(1),
            ..Default::default()
        });
        r.spec.as_mut().unwrap().replicas = Some(1);
        assert!(is_saturated(&d, Some(&r)));
        assert!(!is_saturated(&d, None));
    }

    #[test]
    fn set_new_replica_set_annotations_copies_and_creates() {
        let mut d = new_deployment("foo", 10, None, Some(int(3)), Some(int(2)), &[]);
        set_annotation(&mut d.metadata, "change-cause", "edit");
        set_annotation(&mut d.metadata, LAST_APPLIED_CONFIG_ANNOTATION, "{}");
        set_annotation(&mut d.metadata, REVISION_ANNOTATION, "7");
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "1");
        let mut r = rs("foo-abc", 0, None);
        assert!(set_new_replica_set_annotations(
            &d,
            &mut r,
            "3",
            false,
            MAX_REV_HISTORY_LENGTH_IN_CHARS
        ));
        let a = r.metadata.annotations.clone().unwrap();
        assert_eq!(
            a,
            labels(&[
                ("change-cause", "edit"),
                (REVISION_ANNOTATION, "3"),
                (DESIRED_REPLICAS_ANNOTATION, "10"),
                (MAX_REPLICAS_ANNOTATION, "13"),
            ])
        );
        // Nothing changes the second time, and a lower revision never lowers it.
        assert!(!set_new_replica_set_annotations(
            &d,
            &mut r,
            "3",
            true,
            MAX_REV_HISTORY_LENGTH_IN_CHARS
        ));
        assert!(!set_new_replica_set_annotations(
            &d,
            &mut r,
            "2",
            true,
            MAX_REV_HISTORY_LENGTH_IN_CHARS
        ));
        // Rolling back to this RS: revision 5 and history "3"; revisions compare as integers.
        assert!(set_new_replica_set_annotations(
            &d,
            &mut r,
            "10",
            true,
            MAX_REV_HISTORY_LENGTH_IN_CHARS
        ));
        let a = r.metadata.annotations.clone().unwrap();
        assert_eq!(a.get(REVISION_ANNOTATION).map(String::as_str), Some("10"));
        assert_eq!(
            a.get(REVISION_HISTORY_ANNOTATION).map(String::as_str),
            Some("3")
        );
        // An unparsable old revision: give up.
        set_annotation(&mut r.metadata, REVISION_ANNOTATION, "x");
        assert!(!set_new_replica_set_annotations(
            &d,
            &mut r,
            "11",
            true,
            MAX_REV_HISTORY_LENGTH_IN_CHARS
        ));
    }

    #[test]
    fn set_deployment_annotations_to_keeps_skipped_ones() {
        let mut d = new_deployment("foo", 1, None, None, None, &[]);
        set_annotation(&mut d.metadata, "change-cause", "edit");
        set_annotation(&mut d.metadata, REVISION_ANNOTATION, "2");
        let mut r = rs("foo-1", 0, None);
        set_annotation(&mut r.metadata, "change-cause", "create");
        set_annotation(&mut r.metadata, REVISION_ANNOTATION, "1");
        set_annotation(&mut r.metadata, "other", "x");
        set_deployment_annotations_to(&mut d, &r);
        assert_eq!(
            d.metadata.annotations.unwrap(),
            labels(&[
                ("change-cause", "create"),
                ("other", "x"),
                (REVISION_ANNOTATION, "2")
            ])
        );
    }

    // TestReplicasAnnotationsNeedUpdate
    #[test]
    fn replicas_annotations_need_update_table() {
        let with = |desired: &str, max: &str| {
            let mut r = rs("hello", 1, None);
            set_annotation(&mut r.metadata, DESIRED_REPLICAS_ANNOTATION, desired);
            set_annotation(&mut r.metadata, MAX_REPLICAS_ANNOTATION, max);
            r
        };
        let cases = [
            ("test Annotations nil", rs("hello", 1, None), true),
            ("test desiredReplicas update", with("8", "20"), true),
            ("test maxReplicas update", with("10", "16"), true),
            ("test needn't update", with("10", "20"), false),
        ];
        for (case, r, expected) in cases {
            assert_eq!(
                replicas_annotations_need_update(&r, 10, 20),
                expected,
                "{case}"
            );
        }
    }

    // TestGetReplicaSetFraction
    #[test]
    fn replica_set_fraction_table() {
        let cases: [(&str, i32, i32, i32, i32, Option<&str>, i32); 9] = [
            (
                "empty deployment always scales to 0",
                0,
                0,
                0,
                10,
                None,
                -10,
            ),
            (
                "unsynced deployment does not scale when max-replicas annotation is missing",
                10,
                0,
                0,
                5,
                None,
                0,
            ),
            (
                "unsynced deployment does not scale when max-replicas annotation is 0",
                10,
                0,
                0,
                5,
                Some("0"),
                0,
            ),
            (
                "scale up by 1/5 when max-replicas annotation is missing",
                120,
                100,
                0,
                50,
                None,
                10,
            ),
            (
                "scale up by 1/5 when max-replicas annotation is 0",
                120,
                100,
                0,
                50,
                Some("0"),
                10,
            ),
            (
                "scale up by 1/5 should increase RS replicas by 1/5",
                120,
                0,
                0,
                50,
                Some("100"),
                10,
            ),
            (
                "scale up with maxSurge by 1/5",
                120,
                0,
                10,
                50,
                Some("110"),
                9,
            ),
            (
                "scale down by 1/6 should decrease RS replicas by 1/6",
                10,
                0,
                0,
                6,
                Some("12"),
                -1,
            ),
            (
                "scale down with maxSurge by 1/6",
                100,
                0,
                10,
                50,
                Some("130"),
                -8,
            ),
        ];
        for (case, dep_replicas, dep_status_replicas, surge, rs_replicas, annotation, expected) in
            cases
        {
            let mut d = generate_deployment("nginx");
            d.status = Some(DeploymentStatus {
                replicas: opt_i32(dep_status_replicas),
                ..Default::default()
            });
            let spec = d.spec.as_mut().unwrap();
            spec.replicas = Some(dep_replicas);
            spec.strategy = Some(DeploymentStrategy {
                type_: Some(ROLLING_UPDATE_DEPLOYMENT_STRATEGY_TYPE.to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(int(surge)),
                    max_unavailable: Some(int(1)),
                }),
            });
            let mut r = generate_rs(&d, "nginx-rs");
            r.spec.as_mut().unwrap().replicas = Some(rs_replicas);
            if let Some(a) = annotation {
                set_annotation(&mut r.metadata, MAX_REPLICAS_ANNOTATION, a);
            }
            assert_eq!(get_replica_set_fraction(&r, &d), expected, "{case}");
        }
    }

    #[test]
    fn proportion_is_bounded_by_the_budget() {
        let d = new_deployment("foo", 20, None, Some(int(0)), None, &[]);
        let mut r = rs("r", 10, None);
        set_annotation(&mut r.metadata, MAX_REPLICAS_ANNOTATION, "10");
        // Fraction is +10, but only 4 are left to add.
        assert_eq!(get_proportion(&r, &d, 6, 2), 4);
        assert_eq!(get_proportion(&r, &d, 6, 6), 0);
        assert_eq!(get_proportion(&rs("z", 0, None), &d, 6, 0), 0);
        // Scaling down never removes more than allowed.
        let d = new_deployment("foo", 5, None, Some(int(0)), None, &[]);
        assert_eq!(get_proportion(&r, &d, -3, 0), -3);
    }

    #[test]
    fn revisions() {
        let with_rev = |n: &str, rev: Option<&str>| {
            let mut r = rs(n, 0, None);
            if let Some(v) = rev {
                set_annotation(&mut r.metadata, REVISION_ANNOTATION, v);
            }
            r
        };
        let a = with_rev("a", Some("3"));
        let b = with_rev("b", Some("10"));
        let c = with_rev("c", Some("bogus"));
        let e = with_rev("e", None);
        assert_eq!(revision(&a.metadata), Ok(3));
        assert_eq!(revision(&e.metadata), Ok(0));
        let err = revision(&c.metadata).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid revision annotation \"bogus\" on default/c"),
            "{err}"
        );
        assert_eq!(max_revision(&[&a, &b, &c, &e]), 10);
        assert_eq!(last_revision(&[&a, &b, &c, &e]), 3);
        assert_eq!(last_revision(&[&b]), 0);
        assert_eq!(last_revision(&[&b, &with_rev("d", Some("10"))]), 10);
        let mut d = new_deployment("foo", 1, None, None, None, &[]);
        assert!(set_deployment_revision(&mut d, "4"));
        assert!(!set_deployment_revision(&mut d, "4"));
    }

    #[test]
    fn sort_orders() {
        let t = |m: i8| Some(ts(2016, 5, 20, 0, m, 0));
        let a = rs("a", 3, t(0));
        let b = rs("b", 3, t(1));
        let c = rs("c", 5, t(2));
        let z = rs("z", 3, t(1));
        let mut v = vec![&c, &z, &b, &a];
        sort_by_creation_timestamp(&mut v);
        assert_eq!(names(&v), ["a", "b", "z", "c"]);
        sort_by_size_newer(&mut v);
        assert_eq!(names(&v), ["c", "z", "b", "a"]);
        sort_by_size_older(&mut v);
        assert_eq!(names(&v), ["c", "a", "b", "z"]);
    }

    #[test]
    fn find_active_or_latest_cases() {
        let t = |m: i8| Some(ts(2016, 5, 20, 0, m, 0));
        let old1 = rs("old1", 0, t(0));
        let old2 = rs("old2", 0, t(1));
        let new = rs("new", 0, t(2));
        assert!(find_active_or_latest(None, &[]).is_none());
        // None active: the new one, else the newest old one.
        assert_eq!(
            find_active_or_latest(Some(&new), &[&old1, &old2]).map(|r| name(&r.metadata)),
            Some("new")
        );
        assert_eq!(
            find_active_or_latest(None, &[&old1, &old2]).map(|r| name(&r.metadata)),
            Some("old2")
        );
        // One active.
        let active = rs("active", 2, t(0));
        assert_eq!(
            find_active_or_latest(Some(&new), &[&active, &old2]).map(|r| name(&r.metadata)),
            Some("active")
        );
        // Two active.
        let new_active = rs("new", 1, t(2));
        assert!(find_active_or_latest(Some(&new_active), &[&active]).is_none());
    }

    #[test]
    fn set_from_template_strips_hash() {
        let mut d = new_deployment("foo", 1, None, None, None, &[("a", "b")]);
        let mut r = owned_replica_set(&d, "foo-1", 1);
        set_template_hash(&mut r, "abc");
        r.spec
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("other".to_string());
        set_from_replica_set_template(&mut d, &replica_set_template(&r));
        let t = deployment_template(&d);
        assert_eq!(t.metadata.unwrap().labels, Some(labels(&[("a", "b")])));
        assert_eq!(
            t.spec.unwrap().containers[0].image.as_deref(),
            Some("other")
        );
    }

    #[test]
    fn messages() {
        let d = new_deployment("web", 1, None, None, None, &[]);
        let r = rs("web-abc", 1, None);
        assert_eq!(
            successfully_progressed_message(&d, Some(&r)),
            "ReplicaSet \"web-abc\" has successfully progressed."
        );
        assert_eq!(
            successfully_progressed_message(&d, None),
            "Deployment \"web\" has successfully progressed."
        );
        assert_eq!(
            is_progressing_message(&d, Some(&r)),
            "ReplicaSet \"web-abc\" is progressing."
        );
        assert_eq!(
            timed_out_message(&d, Some(&r)),
            "ReplicaSet \"web-abc\" has timed out progressing."
        );
        assert_eq!(
            created_new_replica_set_message("web-abc"),
            "Created new replica set \"web-abc\""
        );
        assert_eq!(
            found_new_replica_set_message("web-abc"),
            "Found new replica set \"web-abc\""
        );
        assert_eq!(
            scaling_replica_set_message("web-abc", 1, 3),
            "Scaled up replica set web-abc from 1 to 3"
        );
        assert_eq!(
            scaling_replica_set_message("web-abc", 3, 0),
            "Scaled down replica set web-abc from 3 to 0"
        );
    }

    // --- Overflow: user numbers near the int32 (and int64) bounds saturate, never panic
    // (debug) nor wrap (release). One test per arithmetic site.

    const MAX: i32 = i32::MAX;

    fn big_deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        new_deployment(
            "big",
            replicas,
            None,
            Some(surge),
            Some(unavailable),
            &[("a", "b")],
        )
    }

    #[test]
    fn overflow_scaled_value_saturates() {
        let scaled = |v: IntOrString, total: i32, up: bool| {
            get_scaled_value_from_int_or_percent("maxSurge", &v, total, up).unwrap()
        };
        // In range: upstream's values (2147483647 × 25 / 100 = 536870911.75).
        assert_eq!(scaled(pct("25%"), MAX, true), 536_870_912);
        assert_eq!(scaled(pct("25%"), MAX, false), 536_870_911);
        assert_eq!(scaled(pct("100%"), MAX, true), MAX);
        assert_eq!(scaled(int(MAX), MAX, true), MAX);
        // Beyond int32: saturated (upstream's int32() would wrap 1000% to -10).
        assert_eq!(scaled(pct("1000%"), MAX, true), MAX);
        assert_eq!(scaled(pct("9223372036854775807%"), MAX, true), MAX);
        assert_eq!(scaled(pct("-1000%"), MAX, false), i32::MIN);
        // A percentage beyond int64 is an error, as strconv.Atoi's.
        assert!(
            get_scaled_value_from_int_or_percent(
                "maxSurge",
                &pct("99999999999999999999%"),
                MAX,
                true
            )
            .is_err()
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), MAX),
            Ok((536_870_912, 536_870_911))
        );
    }

    #[test]
    fn overflow_max_replicas_saturates() {
        // spec.replicas + maxSurge: upstream's int32 sum wraps negative for these.
        assert_eq!(
            max_replicas(&big_deployment(MAX, pct("25%"), pct("25%"))),
            MAX
        );
        assert_eq!(max_replicas(&big_deployment(MAX, int(1), int(0))), MAX);
        assert_eq!(max_replicas(&big_deployment(MAX - 1, int(1), int(0))), MAX);
        assert_eq!(max_replicas(&big_deployment(10, int(3), int(0))), 13);
        assert_eq!(max_replicas(&big_deployment(MAX, int(MAX), int(0))), MAX);
    }

    #[test]
    fn overflow_min_available_saturates() {
        assert_eq!(
            min_available(&big_deployment(MAX, pct("25%"), pct("25%"))),
            MAX - 536_870_911
        );
        // A negative maxUnavailable (refused by validation) would overflow the difference.
        assert_eq!(min_available(&big_deployment(MAX, int(0), int(-1))), MAX);
    }

    #[test]
    fn overflow_next_revision_saturates() {
        let with_revision = |name: &str, revision: &str| {
            let mut r = rs(name, 0, None);
            set_annotation(&mut r.metadata, REVISION_ANNOTATION, revision);
            r
        };
        let top = with_revision("top", "9223372036854775807");
        let near = with_revision("near", "9223372036854775806");
        let beyond = with_revision("beyond", "99999999999999999999");
        assert_eq!(next_revision(&[&near]), i64::MAX);
        assert_eq!(next_revision(&[&near, &top]), i64::MAX);
        // A revision beyond int64 is unparsable and skipped, like upstream's.
        assert_eq!(next_revision(&[&beyond]), 1);
        assert_eq!(next_revision(&[]), 1);
    }

    #[test]
    fn overflow_new_replica_set_annotations_saturate() {
        let d = big_deployment(MAX, pct("25%"), pct("25%"));
        let mut r = rs("new", 0, None);
        assert!(set_new_replica_set_annotations(
            &d, &mut r, "1", false, 2000
        ));
        let a = r.metadata.annotations.unwrap();
        assert_eq!(
            a.get(DESIRED_REPLICAS_ANNOTATION).map(String::as_str),
            Some("2147483647")
        );
        assert_eq!(
            a.get(MAX_REPLICAS_ANNOTATION).map(String::as_str),
            Some("2147483647")
        );
    }

    #[test]
    fn overflow_max_replicas_annotation_bounds() {
        let annotated = |v: &str| {
            let mut r = rs("r", 1, None);
            set_annotation(&mut r.metadata, MAX_REPLICAS_ANNOTATION, v);
            r
        };
        assert_eq!(
            get_max_replicas_annotation(&annotated("2147483647")),
            Some(MAX)
        );
        assert_eq!(get_max_replicas_annotation(&annotated("2147483648")), None);
        assert_eq!(get_max_replicas_annotation(&annotated("99999999999")), None);
        assert!(
            get_non_negative_int32_from_annotation(
                &annotated("99999999999"),
                MAX_REPLICAS_ANNOTATION
            )
            .is_err()
        );
    }

    #[test]
    fn overflow_proportion_saturates() {
        // A 10-replica RS last scaled for 10, the Deployment now 20: its fraction is +10.
        let d = big_deployment(20, int(0), int(1));
        let mut r = rs("r", 10, None);
        set_annotation(&mut r.metadata, MAX_REPLICAS_ANNOTATION, "10");
        // to_add − added overflows int32 in both directions.
        assert_eq!(get_proportion(&r, &d, MAX, -1), 10);
        let down = big_deployment(0, int(0), int(1));
        assert_eq!(get_proportion(&r, &down, i32::MIN, 1), -10);
    }

    #[test]
    fn overflow_replica_set_fraction_saturates() {
        // 1 replica last scaled for 1, the Deployment now at int32's max: +2147483646.
        let d = big_deployment(MAX, int(0), int(1));
        let mut one = rs("one", 1, None);
        set_annotation(&mut one.metadata, MAX_REPLICAS_ANNOTATION, "1");
        assert_eq!(get_replica_set_fraction(&one, &d), MAX - 1);
        // maxSurge 25% on top of int32's max: the max size saturates, the fraction too
        // (upstream's int32 product wraps).
        let d = big_deployment(MAX, pct("25%"), int(1));
        let mut huge = rs("huge", MAX, None);
        set_annotation(&mut huge.metadata, MAX_REPLICAS_ANNOTATION, "1");
        assert_eq!(get_replica_set_fraction(&huge, &d), 0);
        set_annotation(&mut huge.metadata, MAX_REPLICAS_ANNOTATION, "2147483647");
        assert_eq!(get_replica_set_fraction(&huge, &d), 0);
        // Scaling to zero negates the size; int32's min has no negation.
        let zero = big_deployment(0, int(0), int(1));
        assert_eq!(
            get_replica_set_fraction(&rs("min", i32::MIN, None), &zero),
            MAX
        );
        // The new size minus a negative size (status.replicas fallback, both refused by
        // validation) would overflow.
        let mut d = big_deployment(MAX, int(0), int(1));
        d.status = Some(DeploymentStatus {
            replicas: Some(-1),
            ..Default::default()
        });
        assert_eq!(get_replica_set_fraction(&rs("neg", -1, None), &d), MAX);
    }

    #[test]
    fn overflow_replica_counts_saturate() {
        let full = |name: &str| {
            let mut r = rs_with_status(name, MAX, MAX, MAX);
            let st = r.status.as_mut().unwrap();
            st.ready_replicas = Some(MAX);
            st.terminating_replicas = Some(MAX);
            r
        };
        let (a, b, c) = (full("a"), full("b"), full("c"));
        let rss = [&a, &b, &c];
        assert_eq!(get_replica_count_for_replica_sets(&rss), MAX);
        assert_eq!(get_actual_replica_count_for_replica_sets(&rss), MAX);
        assert_eq!(get_ready_replica_count_for_replica_sets(&rss), MAX);
        assert_eq!(get_available_replica_count_for_replica_sets(&rss), MAX);
        assert_eq!(
            get_terminating_replica_count_for_replica_sets(&rss),
            Some(MAX)
        );
        // The sums are exact in between: MAX + MAX + MIN = MAX − 1.
        let min = rs("min", i32::MIN, None);
        assert_eq!(get_replica_count_for_replica_sets(&[&a, &b, &min]), MAX - 1);
        assert_eq!(get_replica_count_for_replica_sets(&[&min, &min]), i32::MIN);
        assert_eq!(saturating_sum([MAX, 1, -1]), MAX);
        assert_eq!(clamp_i32(i64::MAX), MAX);
        assert_eq!(clamp_i32(i64::MIN), i32::MIN);
    }

    #[test]
    fn overflow_new_rs_new_replicas_saturates() {
        let old = rs("old", 10, None);
        let new = rs("new", 0, None);
        // maxSurge 0: upstream's values (room for 2147483637 more pods).
        let d = big_deployment(MAX, int(0), int(1));
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(MAX - 10));
        // maxSurge 1: spec.replicas + maxSurge saturates instead of wrapping negative
        // (which would freeze the rollout).
        let d = big_deployment(MAX, int(1), int(0));
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(MAX - 10));
        // Already int32's max pods: cannot scale up.
        let full = rs("full", MAX, None);
        let d = big_deployment(MAX, pct("25%"), pct("25%"));
        assert_eq!(new_rs_new_replicas(&d, &[&full, &new], &new), Ok(0));
        // Recreate asks for spec.replicas.
        let mut d = big_deployment(MAX, int(1), int(0));
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some(RECREATE_DEPLOYMENT_STRATEGY_TYPE.to_string()),
            rolling_update: None,
        });
        assert_eq!(new_rs_new_replicas(&d, &[&full, &new], &new), Ok(MAX));
    }

    #[test]
    fn overflow_deployment_progressing_saturates() {
        // status.replicas − status.updatedReplicas with out-of-range counts.
        let st = |replicas: i32, updated: i32| DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ..Default::default()
        };
        let mut d = big_deployment(MAX, int(1), int(0));
        d.status = Some(st(i32::MIN, 1));
        assert!(!deployment_progressing(&d, &st(i32::MIN, 1)));
        d.status = Some(st(MAX, -1));
        assert!(deployment_progressing(&d, &st(MAX, 0)));
        d.status = Some(st(MAX, 0));
        assert!(!deployment_progressing(&d, &st(MAX, 0)));
    }

    #[test]
    fn overflow_progress_deadline_never_overflows_time() {
        let mut d = big_deployment(1, int(1), int(0));
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(MAX - 1);
        let late = Timestamp::MAX
            .checked_sub(SignedDuration::from_secs(1))
            .unwrap();
        let status = DeploymentStatus {
            conditions: Some(vec![DeploymentCondition {
                type_: DEPLOYMENT_PROGRESSING.to_string(),
                status: CONDITION_TRUE.to_string(),
                last_update_time: Some(Time(late)),
                reason: Some(REPLICA_SET_UPDATED_REASON.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        // lastUpdateTime + 68 years is past the representable time: not timed out.
        assert!(!deployment_time_out(&d, &status, Timestamp::MAX));
    }
}
