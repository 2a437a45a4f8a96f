//! Ported from kubernetes v1.36.3 pkg/volume/util/operationexecutor:
//! node_expander_test.go `TestNodeExpander` (9/9), operation_generator_test.go
//! `TestOperationGenerator_nodeExpandVolume` (6/6), `TestExpandDuringMount` (1/1),
//! `TestCheckForRecoveryFromExpansion` (5/5; the gate is GA, its "disabled" cases answer
//! the same); pkg/volume/util/resize_util_test.go `TestMergeResizeCondition` (6/6) and
//! `TestResizeFunctions` (1/4: "mark resize finished"; the other three are the in-tree
//! resizer's markers, the resizer's in rekube-csi). The fake plugin's failing volume
//! names become the driver answers they stand for.

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

fn q(s: &str) -> Quantity {
    Quantity(s.into())
}

/// operation_generator_test.go getTestPVC: `test-vol0`'s claim.
fn get_test_pvc(
    spec: &str,
    status: &str,
    allocated: &str,
    resize: Option<&str>,
) -> PersistentVolumeClaim {
    let mut v = json!({
        "metadata": {"name": "test-pvc", "namespace": "ns", "uid": "test-uid"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": spec}},
                 "volumeName": "test-vol0"},
        "status": {"phase": "Bound", "capacity": {"storage": status}},
    });
    if !allocated.is_empty() {
        v["status"]["allocatedResources"] = json!({"storage": allocated});
    }
    if let Some(r) = resize {
        v["status"]["allocatedResourceStatuses"] = json!({"storage": r});
    }
    serde_json::from_value(v).unwrap()
}

fn rwx(mut c: PersistentVolumeClaim) -> PersistentVolumeClaim {
    c.spec
        .as_mut()
        .unwrap()
        .access_modes
        .as_mut()
        .unwrap()
        .push("ReadWriteMany".into());
    c
}

/// What the fake plugin answers for each kind of volume of upstream's tests.
#[derive(Clone, Copy, PartialEq)]
enum Plugin {
    Ok,
    Infeasible,
    OtherFinal,
    Unsupported,
}

fn answer(p: Plugin) -> Result<(), NodeExpandError> {
    match p {
        Plugin::Ok => Ok(()),
        Plugin::Infeasible => Err(NodeExpandError::from_rpc(
            tonic::Code::InvalidArgument,
            "rpc error: code = InvalidArgument desc = infeasible",
        )),
        Plugin::OtherFinal => Err(NodeExpandError::from_rpc(
            tonic::Code::Internal,
            "rpc error: code = Internal desc = final error",
        )),
        Plugin::Unsupported => Err(NodeExpandError::NotSupported(
            "NodeExpand is not supported by the CSI driver test".into(),
        )),
    }
}

/// The result of an expansion through [`Before`] and [`after`]: (finished, resize
/// called, error, the claim afterwards).
fn drive(
    claim: &PersistentVolumeClaim,
    before: Before,
    plugin: Plugin,
) -> (bool, bool, bool, PersistentVolumeClaim) {
    let mut claim = claim.clone();
    match before {
        Before::Done { .. } => (true, false, false, claim),
        Before::Wait => (false, false, false, claim),
        Before::Call {
            new_size,
            old_size,
            in_progress,
            pre,
            recovery,
        } => {
            if let Some(s) = in_progress {
                claim.status = Some(*s);
            }
            let result = answer(plugin);
            let called = !matches!(result, Err(NodeExpandError::NotSupported(_)));
            let a = after(&claim, &new_size, &old_size, pre, recovery, result, &now());
            if let Some((s, _)) = a.status {
                claim.status = Some(s);
            }
            (a.finished, called, a.error.is_some(), claim)
        }
    }
}

fn status_of(c: &PersistentVolumeClaim) -> String {
    resize_status(c)
}

#[test]
fn test_node_expander() {
    let pending = Some(NODE_RESIZE_PENDING);
    let failed = Some(NODE_RESIZE_INFEASIBLE);
    let annotated = |mut c: PersistentVolumeClaim| {
        c.metadata.annotations = Some(
            [(
                ANN_NODE_EXPANSION_NOT_REQUIRED.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        c
    };
    // (name, claim, pv size, plugin, expected status, status size, resize call,
    //  return value, error, final errors)
    let cases = vec![
        (
            "pv.spec.cap > pvc.status.cap, resizeStatus=node_expansion_failed",
            get_test_pvc("2G", "1G", "", failed),
            "2G",
            Plugin::Ok,
            NODE_RESIZE_INFEASIBLE,
            "1G",
            false,
            false,
            false,
            false,
        ),
        (
            "pv.spec.cap > pvc.status.cap, resizeStatus=node_expansion_pending",
            get_test_pvc("2G", "1G", "2G", pending),
            "2G",
            Plugin::Ok,
            "",
            "2G",
            true,
            true,
            false,
            false,
        ),
        (
            "pv.spec.cap > pvc.status.cap, resizeStatus=node_expansion_pending, reize_op=infeasible",
            get_test_pvc("2G", "1G", "2G", pending),
            "2G",
            Plugin::Infeasible,
            NODE_RESIZE_INFEASIBLE,
            "1G",
            true,
            false,
            true,
            true,
        ),
        (
            "pv.spec.cap > pvc.status.cap, resizeStatus=node_expansion_pending, reize_op=failing",
            get_test_pvc("2G", "1G", "2G", pending),
            "2G",
            Plugin::OtherFinal,
            NODE_RESIZE_IN_PROGRESS,
            "1G",
            true,
            false,
            true,
            true,
        ),
        (
            "RWO volumes, pv.spec.cap = pvc.status.cap, resizeStatus='', desiredSize > actualSize",
            get_test_pvc("2G", "2G", "2G", None),
            "2G",
            Plugin::Ok,
            "",
            "2G",
            false,
            true,
            false,
            false,
        ),
        (
            "RWX volumes, pv.spec.cap = pvc.status.cap, resizeStatus='', desiredSize > actualSize",
            rwx(get_test_pvc("2G", "2G", "2G", None)),
            "2G",
            Plugin::Ok,
            "",
            "2G",
            true,
            true,
            false,
            false,
        ),
        (
            "RWX pv.spec.cap = pvc.status.cap, resizeStatus='', desiredSize > actualSize, reize_op=unsupported",
            rwx(get_test_pvc("2G", "2G", "2G", None)),
            "2G",
            Plugin::Unsupported,
            "",
            "2G",
            false,
            true,
            false,
            false,
        ),
        (
            "RWX volumes, pv.spec.cap = pvc.status.cap, resizeStatus='', desiredSize > actualSize, node-expansion-not-required",
            annotated(rwx(get_test_pvc("2G", "2G", "2G", None))),
            "2G",
            Plugin::Ok,
            "",
            "2G",
            false,
            true,
            false,
            false,
        ),
        (
            "pv.spec.cap > pvc.status.cap, resizeStatus=node_expansion_pending, featuregate=disabled",
            get_test_pvc("2G", "1G", "2G", pending),
            "2G",
            Plugin::Ok,
            "",
            "2G",
            true,
            true,
            false,
            false,
        ),
    ];
    assert_eq!(cases.len(), 9);
    for (
        name,
        claim,
        desired,
        plugin,
        want_status,
        want_size,
        want_call,
        want_return,
        want_error,
        want_final,
    ) in cases
    {
        let old = claim_capacity(&claim);
        let before = expand_on_plugin(&claim, &q(desired), &old, false);
        let final_error = match &before {
            Before::Call {
                new_size,
                old_size,
                pre,
                recovery,
                ..
            } => {
                let mut marked = claim.clone();
                if let Before::Call {
                    in_progress: Some(s),
                    ..
                } = &before
                {
                    marked.status = Some((**s).clone());
                }
                after(
                    &marked,
                    new_size,
                    old_size,
                    *pre,
                    *recovery,
                    answer(plugin),
                    &now(),
                )
                .final_error
            }
            _ => false,
        };
        let (finished, called, error, claim) = drive(&claim, before, plugin);
        assert_eq!(status_of(&claim), want_status, "{name}: resize status");
        assert_eq!(
            amount(&claim_capacity(&claim)),
            amount(&q(want_size)),
            "{name}: status size"
        );
        assert_eq!(called, want_call, "{name}: resize called");
        assert_eq!(finished, want_return, "{name}: return value");
        assert_eq!(error, want_error, "{name}: error");
        assert_eq!(final_error, want_final, "{name}: final errors");
    }
}

#[test]
fn test_operation_generator_node_expand_volume() {
    let failed = Some(NODE_RESIZE_INFEASIBLE);
    let pending = Some(NODE_RESIZE_PENDING);
    // (name, claim, desired, actual, plugin, expected status, status size, calls, error)
    let cases = vec![
        (
            "pv.spec.cap > pvc.status.cap, resizeStatus=node_expansion_failed",
            get_test_pvc("2G", "1G", "", failed),
            "2G",
            None,
            Plugin::Ok,
            NODE_RESIZE_INFEASIBLE,
            "1G",
            0,
            false,
        ),
        (
            "pv.spec.cap > pvc.status.cap, resizeStatus=node_expansion_pending",
            get_test_pvc("2G", "1G", "2G", pending),
            "2G",
            None,
            Plugin::Ok,
            "",
            "2G",
            1,
            false,
        ),
        (
            "pv.spec.cap > pvc.status.cap, resizeStatus=node_expansion_pending, reize_op=failing",
            get_test_pvc("2G", "1G", "2G", pending),
            "2G",
            None,
            Plugin::Infeasible,
            NODE_RESIZE_INFEASIBLE,
            "1G",
            1,
            true,
        ),
        (
            "pv.spec.cap = pvc.status.cap, resizeStatus='', desiredSize = actualSize",
            get_test_pvc("2G", "2G", "2G", None),
            "2G",
            None,
            Plugin::Ok,
            "",
            "2G",
            0,
            false,
        ),
        (
            "pv.spec.cap = pvc.status.cap, resizeStatus='', desiredSize > actualSize",
            get_test_pvc("2G", "2G", "2G", None),
            "2G",
            Some("1G"),
            Plugin::Ok,
            "",
            "2G",
            0,
            false,
        ),
        (
            "pv.spec.cap = pvc.status.cap, resizeStatus=node-expansion-failed, desiredSize > actualSize",
            get_test_pvc("2G", "2G", "2G", failed),
            "2G",
            Some("1G"),
            Plugin::Ok,
            NODE_RESIZE_INFEASIBLE,
            "2G",
            0,
            false,
        ),
    ];
    assert_eq!(cases.len(), 6);
    for (name, claim, desired, actual, plugin, want_status, want_size, want_calls, want_error) in
        cases
    {
        let actual = actual.map(q).unwrap_or_else(|| claim_capacity(&claim));
        let before = node_expand_volume(&claim, &q(desired), &actual, false, false);
        let (_, called, error, claim) = drive(&claim, before, plugin);
        assert_eq!(status_of(&claim), want_status, "{name}: resize status");
        assert_eq!(
            amount(&claim_capacity(&claim)),
            amount(&q(want_size)),
            "{name}: size"
        );
        assert_eq!(usize::from(called), want_calls, "{name}: calls");
        assert_eq!(error, want_error, "{name}: error");
    }
}

#[test]
fn test_expand_during_mount() {
    let claim = get_test_pvc("2G", "1G", "2G", Some(NODE_RESIZE_PENDING));
    let before = expand_volume_during_mount(&claim, &q("2G"), false, false);
    let (finished, called, error, claim) = drive(&claim, before, Plugin::Ok);
    assert!(finished && called && !error);
    assert_eq!(status_of(&claim), "");
    assert_eq!(amount(&claim_capacity(&claim)), amount(&q("2G")));
    // rekube's: already the PV's size: nothing; read-only: the FileSystemResizeFailed events.
    assert_eq!(
        expand_volume_during_mount(&claim, &q("2G"), false, false),
        Before::Done {
            size: q("2G"),
            read_only_event: false
        }
    );
    let small = get_test_pvc("2G", "1G", "2G", Some(NODE_RESIZE_PENDING));
    assert_eq!(
        expand_volume_during_mount(&small, &q("2G"), true, false),
        Before::Done {
            size: q("1G"),
            read_only_event: true
        }
    );
    // An older resizer (no allocatedResources, no status): the legacy path to the PV's
    // size, MarkFSResizeFinished afterwards.
    let legacy = get_test_pvc("2G", "1G", "", None);
    let before = expand_volume_during_mount(&legacy, &q("2G"), false, false);
    assert!(
        matches!(
            &before,
            Before::Call {
                recovery: false,
                in_progress: None,
                ..
            }
        ),
        "{before:?}"
    );
    let (finished, _, _, claim) = drive(&legacy, before, Plugin::Ok);
    assert!(finished);
    assert_eq!(amount(&claim_capacity(&claim)), amount(&q("2G")));
}

#[test]
fn test_check_for_recovery_from_expansion() {
    let claim = |statuses: Option<&str>, allocated: Option<&str>| {
        let mut v = json!({"metadata": {"name": "test-pvc"}, "status": {}});
        if let Some(s) = statuses {
            v["status"]["allocatedResourceStatuses"] = json!({"storage": s});
        }
        if let Some(a) = allocated {
            v["status"]["allocatedResources"] = json!({"storage": a});
        }
        serde_json::from_value::<PersistentVolumeClaim>(v).unwrap()
    };
    for (name, c, want) in [
        (
            "feature gate disabled, no resize status or allocated resources",
            claim(None, None),
            false,
        ),
        (
            "feature gate disabled, resize status set",
            claim(Some(NODE_RESIZE_PENDING), None),
            true,
        ),
        (
            "feature gate enabled, resize status and allocated resources set",
            claim(Some(NODE_RESIZE_PENDING), Some("10Gi")),
            true,
        ),
        (
            "feature gate enabled, no resize status or allocated resources",
            claim(None, None),
            false,
        ),
        (
            "feature gate enabled, older external resize controller",
            claim(None, None),
            false,
        ),
    ] {
        assert_eq!(recovery_path(&c), want, "{name}");
    }
}

fn cond(type_: &str, status: &str, at: i64) -> PersistentVolumeClaimCondition {
    PersistentVolumeClaimCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time: Some(Time(Timestamp::from_second(at).unwrap())),
        ..Default::default()
    }
}

#[test]
fn test_merge_resize_condition() {
    let resizing = vec![cond(RESIZING, "True", 100)];
    for (name, old, new, keep, want) in [
        (
            "when removing all conditions",
            resizing.clone(),
            vec![],
            false,
            vec![],
        ),
        (
            "adding new condition",
            resizing.clone(),
            vec![cond(FILE_SYSTEM_RESIZE_PENDING, "True", 0)],
            false,
            vec![cond(FILE_SYSTEM_RESIZE_PENDING, "True", 0)],
        ),
        (
            "adding same condition with new timestamp",
            resizing.clone(),
            vec![cond(RESIZING, "True", 3700)],
            false,
            resizing.clone(),
        ),
        (
            "adding same condition but with different status",
            resizing.clone(),
            vec![cond(RESIZING, "False", 101)],
            false,
            vec![cond(RESIZING, "False", 101)],
        ),
        (
            "when no condition exists on pvc",
            vec![],
            vec![cond(RESIZING, "True", 100)],
            false,
            resizing.clone(),
        ),
        (
            "when adding new condition with existing resize conditions",
            resizing.clone(),
            vec![cond(NODE_RESIZE_ERROR, "True", 100)],
            true,
            vec![
                cond(RESIZING, "True", 100),
                cond(NODE_RESIZE_ERROR, "True", 100),
            ],
        ),
    ] {
        assert_eq!(merge_resize_conditions(&old, &new, keep), want, "{name}");
    }
}

#[test]
fn test_resize_functions_mark_resize_finished() {
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "foo", "namespace": "resize"},
        "status": {"phase": "Bound", "capacity": {"storage": "2Gi"},
                   "conditions": [{"type": FILE_SYSTEM_RESIZE_PENDING, "status": "True"},
                                  {"type": "ModifyingVolume", "status": "True"}],
                   "allocatedResourceStatuses": {"cpu": "ControllerResizeInfeasible",
                                                 "storage": NODE_RESIZE_PENDING}},
    }))
    .unwrap();
    let s = mark_node_expansion_finished(&claim, &q("10Gi"));
    assert_eq!(
        s.allocated_resource_statuses,
        Some([("cpu".to_string(), "ControllerResizeInfeasible".to_string())].into())
    );
    assert_eq!(s.capacity.unwrap()["storage"], q("10Gi"));
    assert_eq!(
        s.conditions
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect::<Vec<_>>(),
        ["ModifyingVolume"]
    );
}

/// The csi plugin's texts of a failed NodeExpandVolume, and where they go.
#[test]
fn messages_are_upstreams() {
    let e = NodeExpandError::from_rpc(tonic::Code::Internal, "rpc error: code = Internal desc = x");
    assert_eq!(
        e.message(),
        "Expander.NodeExpand failed to expand the volume : rpc error: code = Internal desc = x"
    );
    let e = NodeExpandError::from_rpc(
        tonic::Code::OutOfRange,
        "rpc error: code = OutOfRange desc = x",
    );
    assert_eq!(
        e,
        NodeExpandError::Infeasible(
            "Expander.NodeExpand failed to expand the volume rpc error: code = OutOfRange desc = x"
                .into()
        )
    );
    assert!(matches!(
        NodeExpandError::from_rpc(tonic::Code::FailedPrecondition, "e"),
        NodeExpandError::FailedPrecondition(_)
    ));
    assert_eq!(
        volume_error("NodeExpandVolume.NodeExpandVolume failed", "pvc-1", "boom"),
        "NodeExpandVolume.NodeExpandVolume failed for volume \"pvc-1\" : boom"
    );
    assert_eq!(
        volume_message("MountVolume.NodeExpandVolume succeeded", "pvc-1", "node-1"),
        "MountVolume.NodeExpandVolume succeeded for volume \"pvc-1\" node-1"
    );
}

/// A FailedPrecondition answer: a final error recorded, not retried while in use, and no
/// error for the pod (upstream: "expansion operation should not block mounting").
#[test]
fn an_in_use_refusal_stops_retries_without_an_error() {
    let claim = get_test_pvc("2G", "1G", "2G", Some(NODE_RESIZE_IN_PROGRESS));
    let pre = run_pre_check(&claim, &q("2G"), false);
    let a = after(
        &claim,
        &q("2G"),
        &q("1G"),
        pre,
        true,
        Err(NodeExpandError::from_rpc(
            tonic::Code::FailedPrecondition,
            "busy",
        )),
        &now(),
    );
    assert!(a.in_use_error && a.final_error && !a.finished && a.error.is_none());
    assert_eq!(a.size, q("1G"));
}

#[test]
fn needs_expansion_and_back_off() {
    assert!(volume_needs_expansion(&q("64Mi"), &q("128Mi")));
    assert!(!volume_needs_expansion(&q("128Mi"), &q("128Mi")));
    assert!(!volume_needs_expansion(&q("0"), &q("128Mi")));
    assert!(!volume_needs_expansion(&q("64Mi"), &q("0")));
    let mut v = VolumeExpansion::default();
    let t0 = Instant::now();
    assert!(v.due(t0));
    assert_eq!(v.failed(t0), Duration::from_millis(500));
    assert!(!v.due(t0) && v.due(t0 + Duration::from_millis(500)));
    assert_eq!(v.failed(t0), Duration::from_secs(1));
    for _ in 0..10 {
        v.failed(t0);
    }
    assert_eq!(v.failed(t0), MAX_RETRY);
    v.succeeded();
    assert!(v.due(t0));
}
