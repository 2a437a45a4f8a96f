//! Scaling, cleanup, status and new-ReplicaSet decisions (upstream:
//! pkg/controller/deployment/sync.go).
//!
//! The functions return what upstream would write; the reconciler performs the writes:
//! - every `(name, replicas)` pair returned by [`scale`] (and by the rolling and recreate
//!   decisions) is one ReplicaSet update, upstream's scaleReplicaSet: set `spec.replicas`
//!   and call [`util::set_replicas_annotations`] with the Deployment's spec.replicas and
//!   [`util::max_replicas`] (spec.replicas + maxSurge), then record a `ScalingReplicaSet` event
//!   ([`util::scaling_replica_set_message`]) when the size changed;
//! - [`cleanup_deployment`] names the ReplicaSets to delete;
//! - [`calculate_status`] / [`sync_deployment_status`] give the status to write;
//! - [`new_replica_set`] is the ReplicaSet to create, [`sync_existing_new_replica_set`]
//!   the update of an existing new ReplicaSet.
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DeploymentStatus, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use rekube_crds::{Deployment, ReplicaSet};

use super::hash::compute_hash;
use super::rollback::get_rollback_to;
use super::util::{
    self, DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY, MAX_REV_HISTORY_LENGTH_IN_CHARS, clamp_i32,
    deployment_replicas, filter_active_replica_sets, max_replicas, name, replica_set_replicas,
};

/// Errors of the sync decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The Deployment's rolling-update parameters or strategy are invalid.
    #[error("deployment {deployment}: {source}")]
    Deployment {
        deployment: String,
        #[source]
        source: util::Error,
    },
}

fn deployment_error(d: &Deployment, source: util::Error) -> Error {
    Error::Deployment {
        deployment: util::key(&d.metadata),
        source,
    }
}

/// One ReplicaSet update of [`scale`] when its size or its replica annotations change
/// (upstream scaleReplicaSet: sizeNeedsUpdate || annotationsNeedUpdate).
fn scale_entry(d: &Deployment, rs: &ReplicaSet, new_scale: i32) -> Option<(String, i32)> {
    let desired = deployment_replicas(d);
    let max = max_replicas(d);
    let size_needs_update = replica_set_replicas(rs) != new_scale;
    let annotations_need_update = util::replicas_annotations_need_update(rs, desired, max);
    (size_needs_update || annotations_need_update)
        .then(|| (name(&rs.metadata).to_string(), new_scale))
}

/// scale: proportional scaling on a scaling event or while paused. Returns the ReplicaSets
/// to update as `(name, new spec.replicas)`, including ones whose size is unchanged but
/// whose desired/max-replicas annotations must be refreshed (see the module docs).
///
/// Unlike upstream, which resolves an invalid maxSurge/maxUnavailable to 0 ("caught by
/// validation"), an invalid rolling-update parameter is an error here.
pub fn scale(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    old_rss: &[&ReplicaSet],
) -> Result<Vec<(String, i32)>, Error> {
    if util::is_rolling_update(d) {
        util::deployment_fenceposts(d).map_err(|e| deployment_error(d, e))?;
    }
    let replicas = deployment_replicas(d);

    // One active replica set: scale it to the full count. No active replica set: scale
    // up the newest.
    if let Some(active_or_latest) = util::find_active_or_latest(new_rs, old_rss) {
        if replica_set_replicas(active_or_latest) == replicas {
            return Ok(Vec::new());
        }
        return Ok(vec![(
            name(&active_or_latest.metadata).to_string(),
            replicas,
        )]);
    }

    // A saturated new replica set: old replica sets are fully scaled down. This handles
    // replica set adoption during a saturated new replica set.
    if util::is_saturated(d, new_rs) {
        return Ok(filter_active_replica_sets(old_rss)
            .into_iter()
            .map(|rs| (name(&rs.metadata).to_string(), 0))
            .collect());
    }

    // Old replica sets with pods and a new one not saturated: scale all of them
    // proportionally in case of a rolling deployment.
    if !util::is_rolling_update(d) {
        return Ok(Vec::new());
    }
    let mut candidates: Vec<&ReplicaSet> = old_rss.to_vec();
    candidates.extend(new_rs);
    let mut all_rss = filter_active_replica_sets(&candidates);
    let all_rss_replicas = util::get_replica_count_for_replica_sets(&all_rss);
    let allowed_size = if replicas > 0 { max_replicas(d) } else { 0 };
    // Replicas to add (or remove) across the active replica sets, distributed from the
    // larger to the smaller: on ties, newer first when scaling up, older first when down.
    let to_add = allowed_size.saturating_sub(all_rss_replicas);
    match to_add.cmp(&0) {
        std::cmp::Ordering::Greater => util::sort_by_size_newer(&mut all_rss),
        std::cmp::Ordering::Less => util::sort_by_size_older(&mut all_rss),
        std::cmp::Ordering::Equal => {}
    }
    // |added| never exceeds |to_add|.
    let mut added = 0;
    let mut sizes = Vec::with_capacity(all_rss.len());
    for rs in &all_rss {
        if to_add != 0 {
            let proportion = util::get_proportion(rs, d, to_add, added);
            sizes.push(replica_set_replicas(rs).saturating_add(proportion));
            added = added.saturating_add(proportion);
        } else {
            sizes.push(replica_set_replicas(rs));
        }
    }
    let mut updates = Vec::new();
    for (i, rs) in all_rss.iter().enumerate() {
        // Add or remove the leftover to/from the largest replica set.
        if i == 0 && to_add != 0 {
            sizes[0] = clamp_i32(i64::from(sizes[0]) + i64::from(to_add) - i64::from(added)).max(0);
        }
        updates.extend(scale_entry(d, rs, sizes[i]));
    }
    Ok(updates)
}

/// isScalingEvent: an active ReplicaSet's desired-replicas annotation differs from
/// spec.replicas. `rss` are all the Deployment's ReplicaSets (new and old).
pub fn is_scaling_event(d: &Deployment, rss: &[&ReplicaSet]) -> bool {
    let replicas = deployment_replicas(d);
    filter_active_replica_sets(rss)
        .into_iter()
        .filter_map(util::get_desired_replicas_annotation)
        .any(|desired| desired != replicas)
}

/// Whether `sync` cleans up old ReplicaSets: only when paused with no rollback in flight
/// (upstream sync: `d.Spec.Paused && getRollbackTo(d) == nil`).
pub fn cleanup_on_sync(d: &Deployment) -> bool {
    util::is_paused(d) && get_rollback_to(d).is_none()
}

/// calculateStatus: the Deployment status from its ReplicaSets (`all_rss` includes
/// `new_rs`), with the existing conditions copied and the Available condition set.
/// terminatingReplicas is reported as with the DeploymentReplicaSetTerminatingReplicas
/// gate on (the default since 1.35): absent when a synced ReplicaSet does not report it.
pub fn calculate_status(
    all_rss: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available_replicas = util::get_available_replica_count_for_replica_sets(all_rss);
    // Σspec − Σavailable, exact in i64 (the two int32 sums may each saturate) then clamped.
    // More available than desired (e.g. while scaling down) is no unavailability.
    let exact_sum = |count: fn(&ReplicaSet) -> i32| -> i64 {
        all_rss.iter().map(|rs| i64::from(count(rs))).sum()
    };
    let unavailable_replicas =
        clamp_i32(exact_sum(replica_set_replicas) - exact_sum(util::rs_available_replicas)).max(0);
    let new_rs_list: Vec<&ReplicaSet> = new_rs.into_iter().collect();
    let current = d.status.as_ref();
    let mut status = DeploymentStatus {
        observed_generation: util::opt_i64(d.metadata.generation.unwrap_or(0)),
        replicas: util::opt_i32(util::get_actual_replica_count_for_replica_sets(all_rss)),
        updated_replicas: util::opt_i32(util::get_actual_replica_count_for_replica_sets(
            &new_rs_list,
        )),
        ready_replicas: util::opt_i32(util::get_ready_replica_count_for_replica_sets(all_rss)),
        available_replicas: util::opt_i32(available_replicas),
        unavailable_replicas: util::opt_i32(unavailable_replicas),
        terminating_replicas: util::get_terminating_replica_count_for_replica_sets(all_rss),
        collision_count: current.and_then(|s| s.collision_count),
        // Copy conditions so that unknown (user-added) ones are kept.
        conditions: current
            .and_then(|s| s.conditions.clone())
            .filter(|c| !c.is_empty()),
    };
    let min_available = deployment_replicas(d).saturating_sub(util::max_unavailable(d));
    let condition = if available_replicas >= min_available {
        util::new_deployment_condition(
            util::DEPLOYMENT_AVAILABLE,
            util::CONDITION_TRUE,
            util::MINIMUM_REPLICAS_AVAILABLE,
            util::MINIMUM_AVAILABILITY_MESSAGE,
            now,
        )
    } else {
        util::new_deployment_condition(
            util::DEPLOYMENT_AVAILABLE,
            util::CONDITION_FALSE,
            util::MINIMUM_REPLICAS_UNAVAILABLE,
            util::NO_MINIMUM_AVAILABILITY_MESSAGE,
            now,
        )
    };
    util::set_deployment_condition(&mut status, condition);
    status
}

/// syncDeploymentStatus: the status to write, `None` when it equals the current one.
pub fn sync_deployment_status(
    all_rss: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> Option<DeploymentStatus> {
    let new_status = calculate_status(all_rss, new_rs, d, now);
    (util::deployment_status(d) != new_status).then_some(new_status)
}

/// cleanupDeployment: the old ReplicaSets to delete beyond revisionHistoryLimit, lowest
/// revision first; only those scaled to 0 (spec and status), observed, and not deleting.
pub fn cleanup_deployment(old_rss: &[&ReplicaSet], d: &Deployment) -> Vec<String> {
    let Some(limit) =
        util::revision_history_limit(d).filter(|_| util::has_revision_history_limit(d))
    else {
        return Vec::new();
    };
    // Avoid deleting replica sets that are already being deleted.
    let mut cleanable: Vec<&ReplicaSet> = old_rss
        .iter()
        .copied()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let diff = cleanable.len() as i64 - i64::from(limit);
    if diff <= 0 {
        return Vec::new();
    }
    util::sort_by_revision(&mut cleanable);
    cleanable
        .into_iter()
        .take(diff as usize)
        .filter(|rs| {
            // Never delete a replica set that still has (or may still have) pods.
            util::rs_status_replicas(rs) == 0
                && replica_set_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= util::rs_observed_generation(rs)
                && rs.metadata.deletion_timestamp.is_none()
        })
        .map(|rs| name(&rs.metadata).to_string())
        .collect()
}

/// metav1.NewControllerRef for a Deployment.
pub fn new_controller_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: rekube_crds::API_VERSION.to_string(),
        kind: "Deployment".to_string(),
        name: name(&d.metadata).to_string(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// metav1.GetControllerOf: the owner reference with controller=true.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// labelsutil.CloneSelectorAndAddLabel: the selector with `key=value` added to matchLabels.
fn clone_selector_and_add_label(selector: &LabelSelector, key: &str, value: &str) -> LabelSelector {
    let mut selector = selector.clone();
    if !key.is_empty() {
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value.to_string());
    }
    selector
}

/// getNewReplicaSet's creation branch: the new ReplicaSet to create for the Deployment,
/// named `<deployment>-<hash>` (hash over the template and status.collisionCount), with
/// the hash label on itself, its selector and template, a controller reference, the
/// Deployment's minReadySeconds, the replicas NewRSNewReplicas allows, and revision
/// max(old)+1 with the desired/max-replicas annotations. After creating it, the reconciler
/// sets the Deployment's revision to the ReplicaSet's ([`util::set_deployment_revision`]).
pub fn new_replica_set(d: &Deployment, old_rss: &[&ReplicaSet]) -> Result<ReplicaSet, Error> {
    let new_revision = util::next_revision(old_rss).to_string();
    let mut template = util::deployment_template(d);
    let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = compute_hash(&template, collision_count);
    let template_labels = template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    template_labels.insert(
        DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY.to_string(),
        hash.clone(),
    );
    let labels = template_labels.clone();
    let selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let selector =
        clone_selector_and_add_label(&selector, DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY, &hash);
    let mut new_rs = ReplicaSet {
        metadata: ObjectMeta {
            // A deterministic name makes creation idempotent.
            name: Some(format!("{}-{hash}", name(&d.metadata))),
            namespace: d.metadata.namespace.clone(),
            owner_references: Some(vec![new_controller_ref(d)]),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
            selector,
            template: Some(template),
        }),
        status: None,
    };
    let mut all_rss: Vec<&ReplicaSet> = old_rss.to_vec();
    all_rss.push(&new_rs);
    let new_replicas =
        util::new_rs_new_replicas(d, &all_rss, &new_rs).map_err(|e| deployment_error(d, e))?;
    if let Some(spec) = new_rs.spec.as_mut() {
        spec.replicas = Some(new_replicas);
    }
    util::set_new_replica_set_annotations(
        d,
        &mut new_rs,
        &new_revision,
        false,
        MAX_REV_HISTORY_LENGTH_IN_CHARS,
    );
    Ok(new_rs)
}

/// getNewReplicaSet's existing branch: the existing new ReplicaSet with the Deployment's
/// annotations copied, its revision raised to max(old)+1 and minReadySeconds synced;
/// `None` when it needs no update. When `None`, the reconciler then sets the Deployment's
/// revision from the ReplicaSet's ([`util::set_deployment_revision`]) and adds the
/// FoundNewReplicaSet condition ([`super::progress::found_new_replica_set_condition`]).
pub fn sync_existing_new_replica_set(
    d: &Deployment,
    existing: &ReplicaSet,
    old_rss: &[&ReplicaSet],
) -> Option<ReplicaSet> {
    let new_revision = util::next_revision(old_rss).to_string();
    let mut copy = existing.clone();
    let annotations_updated = util::set_new_replica_set_annotations(
        d,
        &mut copy,
        &new_revision,
        true,
        MAX_REV_HISTORY_LENGTH_IN_CHARS,
    );
    let rs_min_ready = copy
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let min_ready_seconds_needs_update = rs_min_ready != util::deployment_min_ready_seconds(d);
    if !annotations_updated && !min_ready_seconds_needs_update {
        return None;
    }
    copy.spec
        .get_or_insert_with(Default::default)
        .min_ready_seconds = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
    Some(copy)
}

/// The AlreadyExists check of getNewReplicaSet: an existing ReplicaSet with the new one's
/// name is the Deployment's new ReplicaSet when the Deployment controls it and its
/// template equals the Deployment's; otherwise it is a hash collision (bump
/// status.collisionCount with [`bump_collision_count`] and requeue).
pub fn is_new_replica_set_of(d: &Deployment, existing: &ReplicaSet) -> bool {
    let owned =
        controller_ref(&existing.metadata).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
    owned
        && util::equal_ignore_hash(
            &util::deployment_template(d),
            &util::replica_set_template(existing),
        )
}

/// `*d.Status.CollisionCount++`: returns the new count.
pub fn bump_collision_count(status: &mut DeploymentStatus) -> i32 {
    let count = status.collision_count.unwrap_or(0).saturating_add(1);
    status.collision_count = Some(count);
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::util::test_helpers::*;
    use crate::deployment::util::{
        DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, REVISION_ANNOTATION, max_surge,
        set_replicas_annotations,
    };
    use k8s_openapi::api::apps::v1::{DeploymentCondition, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    struct ScaleCase {
        name: &'static str,
        deployment: Deployment,
        old_deployment: Deployment,
        new_rs: Option<ReplicaSet>,
        old_rss: Vec<ReplicaSet>,
        expected_new: Option<i32>,
        expected_old: Vec<i32>,
        wasnt_updated: &'static [&'static str],
        desired_replicas_annotations: &'static [(&'static str, i32)],
    }

    fn dep(
        replicas: i32,
        surge: Option<IntOrString>,
        unavailable: Option<IntOrString>,
    ) -> Deployment {
        new_deployment("foo", replicas, None, surge, unavailable, &[])
    }

    // TestScale (sync_test.go), plus the worked example of the semantics notes.
    #[test]
    fn scale_table() {
        let new_ts = Some(ts(2016, 5, 20, 2, 0, 0));
        let old_ts = Some(ts(2016, 5, 20, 1, 0, 0));
        let older_ts = Some(ts(2016, 5, 20, 0, 0, 0));
        let updated_template = |replicas: i32| {
            let mut d = new_deployment("foo", replicas, None, None, None, &[("foo", "bar")]);
            let t = &mut d.spec.as_mut().unwrap().template;
            t.metadata
                .as_mut()
                .unwrap()
                .labels
                .as_mut()
                .unwrap()
                .insert("another".into(), "label".into());
            d
        };
        let broken_new = {
            let mut r = rs("foo-v2", 2, new_ts);
            r.status = Some(ReplicaSetStatus {
                available_replicas: None,
                ..Default::default()
            });
            r
        };
        let cases = vec![
            ScaleCase {
                name: "normal scaling event: 10 -> 12",
                deployment: dep(12, None, None),
                old_deployment: dep(10, None, None),
                new_rs: Some(rs("foo-v1", 10, new_ts)),
                old_rss: vec![],
                expected_new: Some(12),
                expected_old: vec![],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "normal scaling event: 10 -> 5",
                deployment: dep(5, None, None),
                old_deployment: dep(10, None, None),
                new_rs: Some(rs("foo-v1", 10, new_ts)),
                old_rss: vec![],
                expected_new: Some(5),
                expected_old: vec![],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "proportional scaling: 5 -> 10",
                deployment: dep(10, None, None),
                old_deployment: dep(5, None, None),
                new_rs: Some(rs("foo-v2", 2, new_ts)),
                old_rss: vec![rs("foo-v1", 3, old_ts)],
                expected_new: Some(4),
                expected_old: vec![6],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "proportional scaling: 5 -> 3",
                deployment: dep(3, None, None),
                old_deployment: dep(5, None, None),
                new_rs: Some(rs("foo-v2", 2, new_ts)),
                old_rss: vec![rs("foo-v1", 3, old_ts)],
                expected_new: Some(1),
                expected_old: vec![2],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "proportional scaling: 9 -> 4",
                deployment: dep(4, None, None),
                old_deployment: dep(9, None, None),
                new_rs: Some(rs("foo-v2", 8, new_ts)),
                old_rss: vec![rs("foo-v1", 1, old_ts)],
                expected_new: Some(4),
                expected_old: vec![0],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "proportional scaling: 7 -> 10",
                deployment: dep(10, None, None),
                old_deployment: dep(7, None, None),
                new_rs: Some(rs("foo-v3", 2, new_ts)),
                old_rss: vec![rs("foo-v2", 3, old_ts), rs("foo-v1", 2, older_ts)],
                expected_new: Some(3),
                expected_old: vec![4, 3],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "proportional scaling: 13 -> 8",
                deployment: dep(8, None, None),
                old_deployment: dep(13, None, None),
                new_rs: Some(rs("foo-v3", 2, new_ts)),
                old_rss: vec![rs("foo-v2", 8, old_ts), rs("foo-v1", 3, older_ts)],
                expected_new: Some(1),
                expected_old: vec![5, 2],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            // Scales up the new replica set.
            ScaleCase {
                name: "leftover distribution: 3 -> 4",
                deployment: dep(4, None, None),
                old_deployment: dep(3, None, None),
                new_rs: Some(rs("foo-v3", 1, new_ts)),
                old_rss: vec![rs("foo-v2", 1, old_ts), rs("foo-v1", 1, older_ts)],
                expected_new: Some(2),
                expected_old: vec![1, 1],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            // Scales down the older replica set.
            ScaleCase {
                name: "leftover distribution: 3 -> 2",
                deployment: dep(2, None, None),
                old_deployment: dep(3, None, None),
                new_rs: Some(rs("foo-v3", 1, new_ts)),
                old_rss: vec![rs("foo-v2", 1, old_ts), rs("foo-v1", 1, older_ts)],
                expected_new: Some(1),
                expected_old: vec![1, 0],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            // Scales up the latest replica set first.
            ScaleCase {
                name: "proportional scaling (no new rs): 4 -> 5",
                deployment: dep(5, None, None),
                old_deployment: dep(4, None, None),
                new_rs: None,
                old_rss: vec![rs("foo-v2", 2, old_ts), rs("foo-v1", 2, older_ts)],
                expected_new: None,
                expected_old: vec![3, 2],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            // Scales down to zero.
            ScaleCase {
                name: "proportional scaling: 6 -> 0",
                deployment: dep(0, None, None),
                old_deployment: dep(6, None, None),
                new_rs: Some(rs("foo-v3", 3, new_ts)),
                old_rss: vec![rs("foo-v2", 2, old_ts), rs("foo-v1", 1, older_ts)],
                expected_new: Some(0),
                expected_old: vec![0, 0],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            // Scales up from zero.
            ScaleCase {
                name: "proportional scaling: 0 -> 6",
                deployment: dep(6, None, None),
                old_deployment: dep(6, None, None),
                new_rs: Some(rs("foo-v3", 0, new_ts)),
                old_rss: vec![rs("foo-v2", 0, old_ts), rs("foo-v1", 0, older_ts)],
                expected_new: Some(6),
                expected_old: vec![0, 0],
                wasnt_updated: &["foo-v2", "foo-v1"],
                desired_replicas_annotations: &[],
            },
            // Scenario: deployment.spec.replicas == 3 (foo-v1.spec.replicas ==
            // foo-v2.spec.replicas == foo-v3.spec.replicas == 1). Deployment is scaled to
            // 5. foo-v3.spec.replicas and foo-v2.spec.replicas should increment by 1 but
            // foo-v2 fails to update.
            ScaleCase {
                name: "failed rs update",
                deployment: dep(5, None, None),
                old_deployment: dep(5, None, None),
                new_rs: Some(rs("foo-v3", 2, new_ts)),
                old_rss: vec![rs("foo-v2", 1, old_ts), rs("foo-v1", 1, older_ts)],
                expected_new: Some(2),
                expected_old: vec![2, 1],
                wasnt_updated: &["foo-v3", "foo-v1"],
                desired_replicas_annotations: &[("foo-v2", 3)],
            },
            ScaleCase {
                name: "deployment with surge pods",
                deployment: dep(20, Some(int(2)), None),
                old_deployment: dep(10, Some(int(2)), None),
                new_rs: Some(rs("foo-v2", 6, new_ts)),
                old_rss: vec![rs("foo-v1", 6, old_ts)],
                expected_new: Some(11),
                expected_old: vec![11],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "change both surge and size",
                deployment: dep(50, Some(int(6)), None),
                old_deployment: dep(10, Some(int(3)), None),
                new_rs: Some(rs("foo-v2", 5, new_ts)),
                old_rss: vec![rs("foo-v1", 8, old_ts)],
                expected_new: Some(22),
                expected_old: vec![34],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "change both size and template",
                deployment: updated_template(14),
                old_deployment: new_deployment("foo", 10, None, None, None, &[("foo", "bar")]),
                new_rs: None,
                old_rss: vec![rs("foo-v2", 7, new_ts), rs("foo-v1", 3, old_ts)],
                expected_new: None,
                expected_old: vec![10, 4],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            ScaleCase {
                name: "saturated but broken new replica set does not affect old pods",
                deployment: dep(2, Some(int(1)), Some(int(1))),
                old_deployment: dep(2, Some(int(1)), Some(int(1))),
                new_rs: Some(broken_new),
                old_rss: vec![rs("foo-v1", 1, old_ts)],
                expected_new: Some(2),
                expected_old: vec![1],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
            // Worked example: 10 replicas, surge 3, unavailable 2, stuck at RS1=8 (old) and
            // RS2=5 (new); scaling to 30 gives RS1=20 and RS2=13.
            ScaleCase {
                name: "worked example: 10 -> 30 with surge 3, unavailable 2",
                deployment: dep(30, Some(int(3)), Some(int(2))),
                old_deployment: dep(10, Some(int(3)), Some(int(2))),
                new_rs: Some(rs("foo-v2", 5, new_ts)),
                old_rss: vec![rs("foo-v1", 8, old_ts)],
                expected_new: Some(13),
                expected_old: vec![20],
                wasnt_updated: &[],
                desired_replicas_annotations: &[],
            },
        ];

        for mut case in cases {
            let annotate = |r: &mut ReplicaSet, old: &Deployment, overrides: &[(&str, i32)]| {
                let desired = overrides
                    .iter()
                    .find(|(n, _)| *n == name(&r.metadata))
                    .map(|(_, v)| *v)
                    .unwrap_or(deployment_replicas(old));
                set_replicas_annotations(r, desired, desired + max_surge(old));
            };
            if let Some(r) = case.new_rs.as_mut() {
                annotate(r, &case.old_deployment, case.desired_replicas_annotations);
            }
            for r in &mut case.old_rss {
                annotate(r, &case.old_deployment, case.desired_replicas_annotations);
            }
            let old_refs: Vec<&ReplicaSet> = case.old_rss.iter().collect();
            let updates = scale(&case.deployment, case.new_rs.as_ref(), &old_refs)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));

            let mut name_to_size: BTreeMap<String, i32> = BTreeMap::new();
            for r in case.new_rs.iter().chain(case.old_rss.iter()) {
                name_to_size.insert(name(&r.metadata).to_string(), replica_set_replicas(r));
            }
            for (n, size) in &updates {
                if !case.wasnt_updated.contains(&n.as_str()) {
                    name_to_size.insert(n.clone(), *size);
                }
            }
            if let (Some(expected), Some(r)) = (case.expected_new, case.new_rs.as_ref()) {
                assert_eq!(
                    name_to_size[name(&r.metadata)],
                    expected,
                    "{}: new replicas",
                    case.name
                );
            }
            for (r, expected) in case.old_rss.iter().zip(&case.expected_old) {
                assert_eq!(
                    name_to_size[name(&r.metadata)],
                    *expected,
                    "{}: old {}",
                    case.name,
                    name(&r.metadata)
                );
            }
        }
    }

    #[test]
    fn scale_refreshes_annotations_of_unchanged_replica_sets() {
        // 10 -> 10 with annotations from an older size: no size change, annotation refresh.
        let d = dep(10, Some(int(2)), None);
        let mut new = rs("foo-v2", 5, Some(ts(2016, 5, 20, 2, 0, 0)));
        let mut old = rs("foo-v1", 7, Some(ts(2016, 5, 20, 1, 0, 0)));
        set_replicas_annotations(&mut new, 9, 11);
        set_replicas_annotations(&mut old, 10, 12);
        let updates = scale(&d, Some(&new), &[&old]).unwrap();
        assert_eq!(updates, vec![("foo-v2".to_string(), 5)]);
    }

    #[test]
    fn scale_saturated_new_scales_old_to_zero() {
        let d = dep(3, Some(int(1)), None);
        let mut new = rs("foo-v2", 3, None);
        set_replicas_annotations(&mut new, 3, 4);
        new.status = Some(ReplicaSetStatus {
            replicas: 3,
            available_replicas: Some(3),
            ..Default::default()
        });
        let old = rs("foo-v1", 1, None);
        let inactive = rs("foo-v0", 0, None);
        assert_eq!(
            scale(&d, Some(&new), &[&old, &inactive]).unwrap(),
            vec![("foo-v1".to_string(), 0)]
        );
    }

    #[test]
    fn scale_rejects_invalid_rolling_parameters() {
        let d = dep(3, Some(pct("lots")), None);
        let err = scale(&d, Some(&rs("foo-v2", 1, None)), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "deployment default/foo: invalid maxSurge value \"lots\": invalid type: string is not a percentage"
        );
    }

    #[test]
    fn scale_recreate_with_several_active_does_nothing() {
        let mut d = dep(5, None, None);
        d.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ = Some("Recreate".to_string());
        let updates = scale(&d, Some(&rs("foo-v2", 1, None)), &[&rs("foo-v1", 2, None)]).unwrap();
        assert!(updates.is_empty());
    }

    #[test]
    fn scaling_event_detection() {
        let d = dep(5, None, None);
        let mut a = rs("a", 2, None);
        let mut b = rs("b", 0, None);
        set_replicas_annotations(&mut a, 5, 5);
        set_replicas_annotations(&mut b, 3, 3);
        assert!(!is_scaling_event(&d, &[&a, &b]), "inactive RSs are ignored");
        b.spec.as_mut().unwrap().replicas = Some(1);
        assert!(is_scaling_event(&d, &[&a, &b]));
        let c = rs("c", 4, None);
        assert!(
            !is_scaling_event(&d, &[&a, &c]),
            "RSs without the annotation are ignored"
        );
    }

    #[test]
    fn cleanup_on_sync_only_when_paused_without_rollback() {
        let mut d = dep(1, None, None);
        assert!(!cleanup_on_sync(&d));
        d.spec.as_mut().unwrap().paused = Some(true);
        assert!(cleanup_on_sync(&d));
        set_annotation(&mut d.metadata, util::ROLLBACK_TO_ANNOTATION, "0");
        assert!(!cleanup_on_sync(&d));
    }

    fn rs_status(spec: i32, replicas: i32, ready: i32, available: i32) -> ReplicaSetStatus {
        let _ = spec;
        ReplicaSetStatus {
            replicas,
            ready_replicas: util::opt_i32(ready),
            available_replicas: util::opt_i32(available),
            ..Default::default()
        }
    }

    #[test]
    fn calculate_status_counts_and_conditions() {
        let now = ts(2020, 1, 1, 0, 0, 0);
        let mut d = dep(10, Some(int(3)), Some(int(2)));
        d.metadata.generation = Some(4);
        let user_condition = DeploymentCondition {
            type_: "Custom".to_string(),
            status: "True".to_string(),
            reason: Some("User".to_string()),
            ..Default::default()
        };
        d.status = Some(DeploymentStatus {
            collision_count: Some(2),
            conditions: Some(vec![user_condition.clone()]),
            ..Default::default()
        });
        let mut old = rs("foo-v1", 8, None);
        old.status = Some(rs_status(8, 8, 8, 8));
        let mut new = rs("foo-v2", 5, None);
        new.status = Some(rs_status(5, 5, 2, 0));
        let s = calculate_status(&[&old, &new], Some(&new), &d, now);
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.replicas, Some(13));
        assert_eq!(s.updated_replicas, Some(5));
        assert_eq!(s.ready_replicas, Some(10));
        assert_eq!(s.available_replicas, Some(8));
        assert_eq!(s.unavailable_replicas, Some(5), "Σspec 13 − available 8");
        assert_eq!(s.collision_count, Some(2));
        assert_eq!(
            s.terminating_replicas,
            Some(0),
            "never-synced RSs are skipped"
        );
        let conditions = s.conditions.clone().unwrap();
        assert_eq!(
            conditions[0], user_condition,
            "unknown conditions are copied"
        );
        let available = util::get_deployment_condition(&s, util::DEPLOYMENT_AVAILABLE).unwrap();
        assert_eq!(available.status, "True");
        assert_eq!(
            available.reason.as_deref(),
            Some(util::MINIMUM_REPLICAS_AVAILABLE)
        );
        assert_eq!(
            available.message.as_deref(),
            Some("Deployment has minimum availability.")
        );
        assert_eq!(available.last_transition_time, Some(Time(now)));

        // Below replicas − maxUnavailable: Available=False.
        old.status = Some(rs_status(8, 8, 7, 7));
        let s = calculate_status(&[&old, &new], Some(&new), &d, now);
        let available = util::get_deployment_condition(&s, util::DEPLOYMENT_AVAILABLE).unwrap();
        assert_eq!(available.status, "False");
        assert_eq!(
            available.reason.as_deref(),
            Some(util::MINIMUM_REPLICAS_UNAVAILABLE)
        );
        assert_eq!(
            available.message.as_deref(),
            Some("Deployment does not have minimum availability.")
        );
    }

    #[test]
    fn calculate_status_is_stable_and_zero_is_absent() {
        let now = ts(2020, 1, 1, 0, 0, 0);
        let later = ts(2020, 1, 1, 1, 0, 0);
        let mut d = dep(0, None, None);
        let empty = rs("foo-v1", 0, None);
        let s = calculate_status(&[&empty], None, &d, now);
        assert_eq!(s.replicas, None);
        assert_eq!(s.unavailable_replicas, None);
        assert_eq!(s.updated_replicas, None);
        d.status = Some(s.clone());
        // Nothing changed: same status (timestamps kept), so no write.
        assert_eq!(calculate_status(&[&empty], None, &d, later), s);
        assert_eq!(sync_deployment_status(&[&empty], None, &d, later), None);
        // More available than desired never makes unavailable negative.
        let mut big = rs("foo-v2", 1, None);
        big.status = Some(rs_status(1, 3, 3, 3));
        let s = calculate_status(&[&big], Some(&big), &d, now);
        assert_eq!(s.unavailable_replicas, None);
    }

    fn rs_with_revision(
        n: &str,
        spec: i32,
        status: i32,
        created: Timestamp,
        revision: &str,
    ) -> ReplicaSet {
        let mut r = rs(n, spec, Some(created));
        if !revision.is_empty() {
            set_annotation(&mut r.metadata, REVISION_ANNOTATION, revision);
        }
        r.status = Some(ReplicaSetStatus {
            replicas: status,
            ..Default::default()
        });
        r
    }

    // TestDeploymentController_cleanupDeployment
    #[test]
    fn cleanup_deployment_table() {
        let mut already_deleted = rs_with_status("foo-1", 0, 0, 0);
        already_deleted.metadata.deletion_timestamp = Some(Time(ts(2020, 1, 1, 0, 0, 0)));
        let cases: Vec<(Vec<ReplicaSet>, i32, usize)> = vec![
            (
                vec![
                    rs_with_status("foo-1", 0, 0, 0),
                    rs_with_status("foo-2", 0, 0, 0),
                    rs_with_status("foo-3", 0, 0, 0),
                ],
                1,
                2,
            ),
            // Only delete the replica set with Spec.Replicas = Status.Replicas = 0.
            (
                vec![
                    rs_with_status("foo-1", 0, 0, 0),
                    rs_with_status("foo-2", 0, 1, 0),
                    rs_with_status("foo-3", 1, 0, 0),
                    rs_with_status("foo-4", 1, 1, 0),
                ],
                0,
                1,
            ),
            (
                vec![
                    rs_with_status("foo-1", 0, 0, 0),
                    rs_with_status("foo-2", 0, 0, 0),
                ],
                0,
                2,
            ),
            (
                vec![
                    rs_with_status("foo-1", 1, 1, 0),
                    rs_with_status("foo-2", 1, 1, 0),
                ],
                0,
                0,
            ),
            (vec![already_deleted], 0, 0),
            // With unlimited revisionHistoryLimit.
            (
                vec![
                    rs_with_status("foo-1", 0, 0, 0),
                    rs_with_status("foo-2", 0, 0, 0),
                    rs_with_status("foo-3", 0, 0, 0),
                ],
                i32::MAX,
                0,
            ),
        ];
        for (i, (old, limit, expected)) in cases.into_iter().enumerate() {
            let d = new_deployment("foo", 1, Some(limit), None, None, &[("foo", "bar")]);
            let refs: Vec<&ReplicaSet> = old.iter().collect();
            assert_eq!(
                cleanup_deployment(&refs, &d).len(),
                expected,
                "scenario {i}"
            );
        }
        // No revisionHistoryLimit: never clean up.
        let d = new_deployment("foo", 1, None, None, None, &[]);
        assert!(cleanup_deployment(&[&rs_with_status("foo-1", 0, 0, 0)], &d).is_empty());
    }

    #[test]
    fn cleanup_skips_unobserved_generations() {
        let d = new_deployment("foo", 1, Some(0), None, None, &[]);
        let mut r = rs_with_status("foo-1", 0, 0, 0);
        r.metadata.generation = Some(3);
        r.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(cleanup_deployment(&[&r], &d).is_empty());
        r.status.as_mut().unwrap().observed_generation = Some(3);
        assert_eq!(cleanup_deployment(&[&r], &d), vec!["foo-1".to_string()]);
    }

    // TestDeploymentController_cleanupDeploymentOrder
    #[test]
    fn cleanup_deployment_order_table() {
        let now = ts(2020, 1, 1, 0, 0, 0);
        let minute = jiff::SignedDuration::from_mins(1);
        let at = |k: i64| now + minute * k as i32;
        let cases: Vec<(Vec<ReplicaSet>, i32, Vec<&str>)> = vec![
            // revision order: rs1 < rs2, delete rs1
            (
                vec![
                    rs_with_revision("foo-1", 0, 0, at(-1), "1"),
                    rs_with_revision("foo-2", 0, 0, at(0), "2"),
                ],
                1,
                vec!["foo-1"],
            ),
            // revision order: rs2 < rs1, delete rs2
            (
                vec![
                    rs_with_revision("foo-1", 0, 0, at(-1), "2"),
                    rs_with_revision("foo-2", 0, 0, at(0), "1"),
                ],
                1,
                vec!["foo-2"],
            ),
            // rs1 has revision but rs2 doesn't have revision, delete rs2
            (
                vec![
                    rs_with_revision("foo-1", 0, 0, at(-1), "1"),
                    rs_with_revision("foo-2", 0, 0, at(0), ""),
                ],
                1,
                vec!["foo-2"],
            ),
            // rs1 doesn't have revision while rs2 has revision, delete rs1
            (
                vec![
                    rs_with_revision("foo-1", 0, 0, at(-1), ""),
                    rs_with_revision("foo-2", 0, 0, at(0), "2"),
                ],
                1,
                vec!["foo-1"],
            ),
            // revision order: rs1 < rs2 < r3, but rs1 has replicas, delete rs2
            (
                vec![
                    rs_with_revision("foo-1", 1, 1, at(-1), "1"),
                    rs_with_revision("foo-2", 0, 0, at(0), "2"),
                    rs_with_revision("foo-3", 0, 0, at(1), "3"),
                ],
                1,
                vec!["foo-2"],
            ),
            // revision order: rs1 < rs2 < r3, both rs1 && rs2 have replicas, don't delete
            (
                vec![
                    rs_with_revision("foo-1", 1, 1, at(-1), "1"),
                    rs_with_revision("foo-2", 1, 1, at(0), "2"),
                    rs_with_revision("foo-3", 0, 0, at(1), "3"),
                ],
                1,
                vec![],
            ),
            // revision order: rs2 < rs4 < rs1 < rs3, delete rs2 && rs4
            (
                vec![
                    rs_with_revision("foo-1", 0, 0, at(-1), "3"),
                    rs_with_revision("foo-2", 0, 0, at(0), "1"),
                    rs_with_revision("foo-3", 0, 0, at(1), "4"),
                    rs_with_revision("foo-4", 0, 0, at(2), "2"),
                ],
                2,
                vec!["foo-2", "foo-4"],
            ),
        ];
        for (i, (old, limit, expected)) in cases.into_iter().enumerate() {
            let d = new_deployment("foo", 1, Some(limit), None, None, &[("foo", "bar")]);
            let refs: Vec<&ReplicaSet> = old.iter().collect();
            let mut got = cleanup_deployment(&refs, &d);
            got.sort();
            assert_eq!(got, expected, "scenario {i}");
        }
    }

    #[test]
    fn new_replica_set_is_named_labelled_and_annotated() {
        let mut d = new_deployment(
            "web",
            10,
            None,
            Some(int(3)),
            Some(int(2)),
            &[("app", "web")],
        );
        d.spec.as_mut().unwrap().min_ready_seconds = Some(5);
        set_annotation(&mut d.metadata, "change-cause", "v2");
        let mut old = rs("web-old", 10, None);
        set_annotation(&mut old.metadata, REVISION_ANNOTATION, "4");
        let new = new_replica_set(&d, &[&old]).unwrap();
        let hash = compute_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(name(&new.metadata), format!("web-{hash}"));
        let labels = new.metadata.labels.clone().unwrap();
        assert_eq!(labels.get(DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY), Some(&hash));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        let spec = new.spec.clone().unwrap();
        assert_eq!(
            spec.selector
                .match_labels
                .unwrap()
                .get(DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY),
            Some(&hash)
        );
        let tlabels = spec
            .template
            .clone()
            .unwrap()
            .metadata
            .unwrap()
            .labels
            .unwrap();
        assert_eq!(
            tlabels.get(DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY),
            Some(&hash)
        );
        assert_eq!(spec.min_ready_seconds, Some(5));
        // 10 + 3 surge − 10 old = 3.
        assert_eq!(spec.replicas, Some(3));
        let annotations = new.metadata.annotations.clone().unwrap();
        assert_eq!(
            annotations.get(REVISION_ANNOTATION).map(String::as_str),
            Some("5")
        );
        assert_eq!(
            annotations
                .get(DESIRED_REPLICAS_ANNOTATION)
                .map(String::as_str),
            Some("10")
        );
        assert_eq!(
            annotations.get(MAX_REPLICAS_ANNOTATION).map(String::as_str),
            Some("13")
        );
        assert_eq!(
            annotations.get("change-cause").map(String::as_str),
            Some("v2")
        );
        let owner = controller_ref(&new.metadata).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "uid-web")
        );
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert!(is_new_replica_set_of(&d, &new));
        // The deployment's template is the new RS's template.
        assert_eq!(
            util::find_new_replica_set(&d, std::slice::from_ref(&new)).map(|r| name(&r.metadata)),
            Some(name(&new.metadata))
        );

        // A collision count changes the name.
        d.status = Some(DeploymentStatus {
            collision_count: Some(1),
            ..Default::default()
        });
        let other = new_replica_set(&d, &[&old]).unwrap();
        assert_ne!(name(&other.metadata), name(&new.metadata));
    }

    #[test]
    fn hash_collision_detection() {
        let d = new_deployment("web", 1, None, None, None, &[("app", "web")]);
        let mut existing = new_replica_set(&d, &[]).unwrap();
        assert!(is_new_replica_set_of(&d, &existing));
        existing
            .spec
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
        assert!(!is_new_replica_set_of(&d, &existing), "different template");
        let mut foreign = new_replica_set(&d, &[]).unwrap();
        foreign.metadata.owner_references = None;
        assert!(
            !is_new_replica_set_of(&d, &foreign),
            "not controlled by the deployment"
        );
        let mut status = DeploymentStatus::default();
        assert_eq!(bump_collision_count(&mut status), 1);
        assert_eq!(bump_collision_count(&mut status), 2);
    }

    #[test]
    fn existing_new_replica_set_sync() {
        let mut d = new_deployment("web", 3, None, None, None, &[("app", "web")]);
        let mut old = rs("web-old", 0, None);
        set_annotation(&mut old.metadata, REVISION_ANNOTATION, "1");
        let existing = new_replica_set(&d, &[&old]).unwrap();
        assert_eq!(sync_existing_new_replica_set(&d, &existing, &[&old]), None);
        d.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let updated = sync_existing_new_replica_set(&d, &existing, &[&old]).unwrap();
        assert_eq!(updated.spec.unwrap().min_ready_seconds, Some(10));
        // An old RS got a higher revision (rollback): the new RS is raised above it.
        set_annotation(&mut old.metadata, REVISION_ANNOTATION, "7");
        d.spec.as_mut().unwrap().min_ready_seconds = None;
        let updated = sync_existing_new_replica_set(&d, &existing, &[&old]).unwrap();
        let a = updated.metadata.annotations.unwrap();
        assert_eq!(a.get(REVISION_ANNOTATION).map(String::as_str), Some("8"));
        assert_eq!(
            a.get(util::REVISION_HISTORY_ANNOTATION).map(String::as_str),
            Some("2")
        );
    }

    // --- Overflow: replicas near int32's max saturate instead of panicking or wrapping.

    const MAX: i32 = i32::MAX;

    fn annotated(name: &str, replicas: i32, minute: i8, desired: i32, max: i32) -> ReplicaSet {
        let mut r = rs(name, replicas, Some(ts(2020, 1, 1, 0, minute, 0)));
        set_replicas_annotations(&mut r, desired, max);
        r
    }

    #[test]
    fn overflow_proportional_scale_up_saturates() {
        // Two RSs of 1000 last scaled for 2000; the Deployment goes to int32's max with
        // maxSurge 25%. Upstream's int32 spec.replicas + maxSurge wraps negative and would
        // scale everything down; here the budget saturates at 2147483647 and is split.
        let old = annotated("foo-v1", 1000, 0, 2000, 2000);
        let new = annotated("foo-v2", 1000, 1, 2000, 2000);
        let d = dep(MAX, Some(pct("25%")), Some(pct("25%")));
        let updates = scale(&d, Some(&new), &[&old]).unwrap();
        assert_eq!(
            updates,
            vec![
                ("foo-v2".to_string(), 1_073_741_824),
                ("foo-v1".to_string(), 1_073_741_823),
            ]
        );
        assert_eq!(
            updates.iter().map(|(_, n)| i64::from(*n)).sum::<i64>(),
            i64::from(MAX)
        );
    }

    #[test]
    fn overflow_proportional_scale_down_saturates() {
        // Two RSs of int32's max each (their sum saturates) scaled to 0: the older goes
        // first, the other keeps its size with refreshed annotations until the next sync.
        let old = annotated("foo-v1", MAX, 0, MAX, MAX);
        let new = annotated("foo-v2", MAX, 1, MAX, MAX);
        let d = dep(0, Some(pct("25%")), Some(pct("25%")));
        let updates = scale(&d, Some(&new), &[&old]).unwrap();
        assert_eq!(
            updates,
            vec![("foo-v1".to_string(), 0), ("foo-v2".to_string(), MAX)]
        );
        // Scaling one active RS to int32's max.
        let d = dep(MAX, Some(int(1)), Some(int(0)));
        let only = annotated("foo-v1", 10, 0, 10, 11);
        assert_eq!(
            scale(&d, None, &[&only]).unwrap(),
            vec![("foo-v1".to_string(), MAX)]
        );
    }

    #[test]
    fn overflow_calculate_status_saturates() {
        let now = ts(2020, 1, 1, 0, 0, 0);
        let d = dep(MAX, Some(pct("25%")), Some(pct("25%")));
        let mut old = rs("foo-v1", MAX, None);
        old.status = Some(rs_status(MAX, MAX, MAX, MAX));
        let mut new = rs("foo-v2", MAX, None);
        new.status = Some(rs_status(MAX, MAX, MAX, 0));
        let s = calculate_status(&[&old, &new], Some(&new), &d, now);
        assert_eq!(s.replicas, Some(MAX));
        assert_eq!(s.updated_replicas, Some(MAX));
        assert_eq!(s.ready_replicas, Some(MAX));
        assert_eq!(s.available_replicas, Some(MAX));
        // Σspec (2 × MAX) − Σavailable (MAX), exact before clamping.
        assert_eq!(s.unavailable_replicas, Some(MAX));
        let available = util::get_deployment_condition(&s, util::DEPLOYMENT_AVAILABLE).unwrap();
        assert_eq!(
            available.status,
            util::CONDITION_TRUE,
            "MAX ≥ MAX − 536870911"
        );
        // minAvailable with a negative maxUnavailable saturates at int32's max.
        let d = dep(MAX, Some(int(0)), Some(int(-1)));
        new.status = Some(rs_status(MAX, MAX, MAX, MAX - 1));
        let s = calculate_status(&[&new], Some(&new), &d, now);
        let available = util::get_deployment_condition(&s, util::DEPLOYMENT_AVAILABLE).unwrap();
        assert_eq!(available.status, util::CONDITION_FALSE);
        assert_eq!(s.unavailable_replicas, Some(1));
    }

    #[test]
    fn overflow_new_replica_set_saturates() {
        let d = new_deployment(
            "web",
            MAX,
            None,
            Some(int(1)),
            Some(int(0)),
            &[("app", "web")],
        );
        let mut old = rs("web-old", 5, None);
        set_annotation(
            &mut old.metadata,
            REVISION_ANNOTATION,
            "9223372036854775807",
        );
        let new = new_replica_set(&d, &[&old]).unwrap();
        assert_eq!(new.spec.as_ref().unwrap().replicas, Some(MAX - 5));
        let a = new.metadata.annotations.clone().unwrap();
        assert_eq!(
            a.get(REVISION_ANNOTATION).map(String::as_str),
            Some("9223372036854775807")
        );
        assert_eq!(
            a.get(DESIRED_REPLICAS_ANNOTATION).map(String::as_str),
            Some("2147483647")
        );
        assert_eq!(
            a.get(MAX_REPLICAS_ANNOTATION).map(String::as_str),
            Some("2147483647")
        );
        // The existing new RS is raised to the saturated revision once, then left alone.
        let mut existing = new.clone();
        set_annotation(&mut existing.metadata, REVISION_ANNOTATION, "3");
        let raised = sync_existing_new_replica_set(&d, &existing, &[&old]).unwrap();
        assert_eq!(
            raised
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .get(REVISION_ANNOTATION)
                .map(String::as_str),
            Some("9223372036854775807")
        );
        assert_eq!(sync_existing_new_replica_set(&d, &raised, &[&old]), None);
    }

    #[test]
    fn overflow_revision_history_limit_extremes() {
        let rss = [
            rs_with_status("foo-1", 0, 0, 0),
            rs_with_status("foo-2", 0, 0, 0),
        ];
        let refs: Vec<&ReplicaSet> = rss.iter().collect();
        let with_limit = |limit: i32| new_deployment("foo", 1, Some(limit), None, None, &[]);
        // len − limit is computed in int64: no overflow at either bound.
        assert!(cleanup_deployment(&refs, &with_limit(MAX - 1)).is_empty());
        assert_eq!(
            cleanup_deployment(&refs, &with_limit(i32::MIN)),
            ["foo-1", "foo-2"]
        );
        // int32's max is upstream's "no limit".
        assert!(cleanup_deployment(&refs, &with_limit(MAX)).is_empty());
    }

    #[test]
    fn overflow_collision_count_saturates() {
        let mut status = DeploymentStatus {
            collision_count: Some(MAX - 1),
            ..Default::default()
        };
        assert_eq!(bump_collision_count(&mut status), MAX);
        assert_eq!(bump_collision_count(&mut status), MAX);
        assert_eq!(status.collision_count, Some(MAX));
    }

    fn arb_int_or_percent() -> impl Strategy<Value = IntOrString> {
        prop_oneof![
            (0..6i32).prop_map(IntOrString::Int),
            (0..=100i32).prop_map(|p| IntOrString::String(format!("{p}%"))),
        ]
    }

    proptest! {
        /// Proportional scaling never makes a ReplicaSet negative, and when scaling up it
        /// lands exactly on spec.replicas + maxSurge.
        #[test]
        fn proportional_scaling_is_bounded(
            sizes in prop::collection::vec(1..30i32, 2..5),
            headroom in 0..5i32,
            replicas in 0..60i32,
            surge in arb_int_or_percent(),
            unavailable in arb_int_or_percent(),
        ) {
            let d = dep(replicas, Some(surge), Some(unavailable));
            prop_assume!(util::deployment_fenceposts(&d).is_ok());
            // Consistent annotations: every RS was last scaled for the same max size, which
            // holds all their replicas.
            let max_before: i32 = sizes.iter().sum::<i32>() + headroom;
            let rss: Vec<ReplicaSet> = sizes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut r = rs(&format!("rs-{i}"), *s, Some(ts(2020, 1, 1, 0, i as i8, 0)));
                    set_replicas_annotations(&mut r, max_before, max_before);
                    r
                })
                .collect();
            let (new, old) = rss.split_last().unwrap();
            let old: Vec<&ReplicaSet> = old.iter().collect();
            let updates = scale(&d, Some(new), &old).unwrap();
            let mut final_sizes: BTreeMap<String, i32> =
                rss.iter().map(|r| (name(&r.metadata).to_string(), replica_set_replicas(r))).collect();
            for (n, s) in &updates {
                prop_assert!(*s >= 0, "{n} scaled to {s}");
                final_sizes.insert(n.clone(), *s);
            }
            let before: i32 = sizes.iter().sum();
            let allowed = if replicas > 0 { replicas + max_surge(&d) } else { 0 };
            let total: i32 = final_sizes.values().sum();
            if allowed > before {
                prop_assert_eq!(total, allowed);
            } else {
                prop_assert!(total >= allowed && total <= before, "total {} allowed {} before {}", total, allowed, before);
            }
        }
    }

    // --- No panic for any int32 input: every rollout helper over arbitrary counts, rolling
    // parameters and annotations (debug builds panic on overflow, so this would fail).

    fn arb_count() -> impl Strategy<Value = i32> {
        prop_oneof![
            any::<i32>(),
            0..100i32,
            Just(i32::MAX),
            Just(i32::MAX - 1),
            Just(i32::MIN),
            Just(-1),
        ]
    }

    fn arb_any_int_or_percent() -> impl Strategy<Value = IntOrString> {
        prop_oneof![
            arb_count().prop_map(IntOrString::Int),
            (0..=1000i64).prop_map(|p| IntOrString::String(format!("{p}%"))),
            any::<i64>().prop_map(|p| IntOrString::String(format!("{p}%"))),
        ]
    }

    fn arb_annotation() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            arb_count().prop_map(|v| Some(v.to_string())),
            any::<u64>().prop_map(|v| Some(v.to_string())),
            Just(Some("99999999999".to_string())),
        ]
    }

    /// (spec, status.replicas, ready, available, terminating, desired-replicas,
    /// max-replicas, revision)
    type ArbRs = (
        i32,
        i32,
        i32,
        i32,
        Option<i32>,
        Option<String>,
        Option<String>,
        i64,
    );

    fn arb_rs() -> impl Strategy<Value = ArbRs> {
        (
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            prop::option::of(arb_count()),
            arb_annotation(),
            arb_annotation(),
            prop_oneof![any::<i64>(), Just(i64::MAX), 0..10i64],
        )
    }

    fn build_rs(i: usize, a: &ArbRs) -> ReplicaSet {
        let (spec, replicas, ready, available, terminating, desired, max, revision) = a;
        let mut r = rs(
            &format!("rs-{i}"),
            *spec,
            Some(ts(2020, 1, 1, 0, i as i8, 0)),
        );
        r.status = Some(ReplicaSetStatus {
            replicas: *replicas,
            ready_replicas: Some(*ready),
            available_replicas: Some(*available),
            terminating_replicas: *terminating,
            observed_generation: Some(1),
            ..Default::default()
        });
        set_annotation(&mut r.metadata, REVISION_ANNOTATION, &revision.to_string());
        if let Some(v) = desired {
            set_annotation(&mut r.metadata, DESIRED_REPLICAS_ANNOTATION, v);
        }
        if let Some(v) = max {
            set_annotation(&mut r.metadata, MAX_REPLICAS_ANNOTATION, v);
        }
        r
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        #[test]
        fn rollout_helpers_never_panic(
            replicas in arb_count(),
            surge in arb_any_int_or_percent(),
            unavailable in arb_any_int_or_percent(),
            recreate in any::<bool>(),
            status in (arb_count(), arb_count(), arb_count(), arb_count()),
            deadline in prop::option::of(arb_count()),
            rss in prop::collection::vec(arb_rs(), 1..4),
            to_add in arb_count(),
            added in arb_count(),
        ) {
            let now = ts(2020, 1, 1, 1, 0, 0);
            let mut d = dep(replicas, Some(surge), Some(unavailable));
            let spec = d.spec.as_mut().unwrap();
            spec.progress_deadline_seconds = deadline;
            spec.revision_history_limit = deadline;
            if recreate {
                spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                    type_: Some(util::RECREATE_DEPLOYMENT_STRATEGY_TYPE.to_string()),
                    rolling_update: None,
                });
            }
            let (st_replicas, st_updated, st_ready, st_available) = status;
            d.status = Some(DeploymentStatus {
                replicas: Some(st_replicas),
                updated_replicas: Some(st_updated),
                ready_replicas: Some(st_ready),
                available_replicas: Some(st_available),
                ..Default::default()
            });
            let owned: Vec<ReplicaSet> = rss.iter().enumerate().map(|(i, a)| build_rs(i, a)).collect();
            let all: Vec<&ReplicaSet> = owned.iter().collect();
            let (new, old) = all.split_last().unwrap();

            // The resolved parameters and their sums: exact int64 results, clamped.
            let _ = util::deployment_fenceposts(&d);
            let surge = util::max_surge(&d);
            prop_assert_eq!(
                util::max_replicas(&d),
                clamp_i32(i64::from(util::deployment_replicas(&d)) + i64::from(surge))
            );
            let _ = (util::max_unavailable(&d), util::min_available(&d));
            let exact: i64 = all.iter().map(|r| i64::from(replica_set_replicas(r))).sum();
            prop_assert_eq!(util::get_replica_count_for_replica_sets(&all), clamp_i32(exact));
            let _ = util::get_actual_replica_count_for_replica_sets(&all);
            let _ = util::get_ready_replica_count_for_replica_sets(&all);
            let _ = util::get_available_replica_count_for_replica_sets(&all);
            let _ = util::get_terminating_replica_count_for_replica_sets(&all);
            let _ = util::next_revision(old);
            for r in &all {
                let _ = util::get_replica_set_fraction(r, &d);
                let _ = util::get_proportion(r, &d, to_add, added);
                let _ = util::is_saturated(&d, Some(r));
            }
            let _ = util::new_rs_new_replicas(&d, &all, new);

            // The decisions built on them.
            let _ = crate::deployment::rolling::reconcile_new_replica_set(&all, new, &d);
            let _ = crate::deployment::rolling::reconcile_old_replica_sets(&all, old, Some(new), &d);
            let _ = crate::deployment::rolling::rollout_rolling_step(&all, old, new, &d);
            let _ = crate::deployment::rolling::cleanup_unhealthy_replicas(old, &d, to_add);
            let _ = crate::deployment::rolling::scale_down_old_replica_sets_for_rolling_update(&all, old, &d);
            let _ = crate::deployment::recreate::rollout_recreate_step(&d, Some(new), old, &BTreeMap::new());
            let _ = scale(&d, Some(new), old);
            let _ = scale(&d, None, &all);
            let _ = is_scaling_event(&d, &all);
            let status = calculate_status(&all, Some(new), &d, now);
            prop_assert!(status.unavailable_replicas.unwrap_or(0) >= 0);
            let _ = util::deployment_progressing(&d, &status);
            let _ = util::deployment_complete(&d, &status);
            let _ = util::deployment_time_out(&d, &status, now);
            let _ = crate::deployment::progress::sync_rollout_status(&all, Some(new), &d, now);
            let _ = crate::deployment::progress::requeue_stuck_deployment(&d, &status, now);
            let _ = cleanup_deployment(old, &d);
            let _ = new_replica_set(&d, old);
            let _ = sync_existing_new_replica_set(&d, new, old);
        }
    }
}
