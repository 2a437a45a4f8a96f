//! Table tests ported from kubernetes-csi/external-resizer v2.2.1, upstream case names in
//! the tables (`name`): pkg/controller/expand_and_recover_test.go `TestExpandAndRecover`
//! (13/13; `TestExpandAndRecoverConcurrent` is about Go locks: 0/1),
//! resize_status_test.go `TestResizeFunctions` (5/5), controller_test.go `TestController`
//! (11/20: not the invalid key and the missing claim, which are the shell's; not "PV
//! nodeExpand Complete", the alpha AnnotateFsResize gate; not the 6 cases with
//! `--handle-volume-inuse-error=false`, a flag rekube does not have) and `TestResizePVC`
//! (2/3: the conflict that emits no event is the shell's), pkg/util/util_test.go
//! `TestMergeResizeConditionsOfPVC` (3/3), pkg/resizer/csi_resizer_test.go `TestNewResizer`
//! (5/5) and `TestGetVolumeCapabilities` (18/18; `TestCanSupport` 0/4 and
//! `TestResizeMigratedPV` 0/3 are in-tree migration, `TestResizeWithSecret` 0/2 secrets),
//! inuse_pvc_store_test.go `TestAddRemovePods` (5/5, over a snapshot of the pods).
//! Upstream's "1G" claims against `createPV`'s GiB volumes are kept as they are.

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use crate::csi::{VolumeCapability, volume_capability};

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

fn resizer(name: &str) -> Resizer {
    Resizer {
        name: name.into(),
        node_id: "n1".into(),
        kind: ResizerKind::Csi,
        single_node_multi_writer: true,
    }
}

fn q(s: &str) -> Quantity {
    Quantity(s.into())
}

/// testutil.GetTestPVC: `claim01` in `default`, uid `test-uid`, ReadWriteOnce, Bound.
fn get_test_pvc(
    volume: &str,
    spec: &str,
    status: &str,
    allocated: &str,
    resize_status: &str,
) -> PersistentVolumeClaim {
    let mut v = json!({
        "metadata": {"name": "claim01", "namespace": "default", "uid": "test-uid"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": spec}},
                 "volumeName": volume},
        "status": {"phase": "Bound"},
    });
    if !status.is_empty() {
        v["status"]["capacity"] = json!({"storage": status});
    }
    if !allocated.is_empty() {
        v["status"]["allocatedResources"] = json!({"storage": allocated});
    }
    if !resize_status.is_empty() {
        v["status"]["allocatedResourceStatuses"] = json!({"storage": resize_status});
    }
    serde_json::from_value(v).unwrap()
}

/// controller_test.go createPVC: `testPVC` in `default`, uid `foobar`, on `testPV`, sizes
/// in GiB.
fn create_pvc(request_gb: u64, capacity_gb: u64) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": "testPVC", "namespace": "default", "uid": "foobar"},
        "spec": {"resources": {"requests": {"storage": format!("{request_gb}Gi")}},
                 "volumeName": "testPV"},
        "status": {"phase": "Bound", "capacity": {"storage": format!("{capacity_gb}Gi")}},
    }))
    .unwrap()
}

/// controller_test.go createPV: `testPV` of `capacity_gb` GiB of driver `driver`, bound to
/// the claim named (none for ""), on node n1 (rekube's node-local resizer wants the
/// node affinity).
fn create_pv(
    capacity_gb: u64,
    claim: &str,
    namespace: &str,
    uid: &str,
    mode: Option<&str>,
    driver: &str,
) -> PersistentVolume {
    let mut v = json!({
        "metadata": {"name": "testPV"},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": format!("{capacity_gb}Gi")},
                 "csi": {"driver": driver, "volumeHandle": "foo"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": crate::topology::TOPOLOGY_KEY, "operator": "In", "values": ["n1"]}]}]}}},
    });
    if let Some(m) = mode {
        v["spec"]["volumeMode"] = json!(m);
    }
    if !claim.is_empty() {
        v["spec"]["claimRef"] = json!({"namespace": namespace, "name": claim, "uid": uid});
        v["status"] = json!({"phase": "Bound"});
    }
    serde_json::from_value(v).unwrap()
}

/// What upstream's MockClient answers: the requested size, node expansion as configured,
/// or the configured error.
fn mock_expand(
    resizer: &Resizer,
    new_size: &Quantity,
    node_expansion: bool,
    error: Option<Code>,
) -> Expanded {
    let bytes = amount(new_size).value();
    match (resizer.kind, error) {
        // trivialResizer.Resize: the request, node expansion required, no driver call.
        (ResizerKind::Trivial, _) => Expanded::Ok {
            capacity_bytes: bytes,
            node_expansion_required: true,
        },
        (ResizerKind::Csi, Some(code)) => Expanded::Failed {
            code,
            error: format!("rpc error: code = {code:?} desc = something broke"),
        },
        (ResizerKind::Csi, None) => Expanded::Ok {
            capacity_bytes: bytes,
            node_expansion_required: node_expansion,
        },
    }
}

/// upstream's `expandAndRecover` with a mock driver: the claim afterwards, whether the
/// driver was called, the events.
fn run(
    resizer: &Resizer,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    tracking: Tracking,
    node_expansion: bool,
    error: Option<Code>,
) -> (PersistentVolumeClaim, bool, Vec<Event>) {
    let mut claim = claim.clone();
    let Plan::Resize {
        new_size,
        in_progress,
    } = expand_and_recover(resizer, &claim, pv, tracking, &now())
    else {
        return (claim, false, Vec::new());
    };
    claim.status = Some(*in_progress);
    if let Some(a) = claim.metadata.annotations.as_mut() {
        a.remove(ANN_NODE_EXPANSION_NOT_REQUIRED);
    }
    let mut events = vec![resizing_event("testPV")];
    let answer = mock_expand(resizer, &new_size, node_expansion, error);
    let after = after_expand(resizer, &claim, pv, &answer, &now());
    if let Some((s, _)) = after.status {
        claim.status = Some(s);
    }
    if after.node_expansion_not_required {
        claim
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(ANN_NODE_EXPANSION_NOT_REQUIRED.into(), "true".into());
    }
    events.extend(after.event);
    if let Some(e) = after.error {
        events.push(Event::warning(VOLUME_RESIZE_FAILED, e));
    }
    (claim, true, events)
}

#[test]
fn test_expand_and_recover() {
    struct Case {
        name: &'static str,
        pvc: PersistentVolumeClaim,
        pv: PersistentVolume,
        disable_node_expansion: bool,
        disable_controller_expansion: bool,
        expected_resize_status: &'static str,
        expected_allocated_size: &'static str,
        expect_node_expansion_not_required_annotation: bool,
        pvc_with_final_errors: bool,
        expansion_error: Option<Code>,
        expect_resize_call: bool,
    }
    let pv = |gb| {
        create_pv(
            gb,
            "claim01",
            "default",
            "test-uid",
            Some("Filesystem"),
            "foo",
        )
    };
    let base = |name, pvc, pv| Case {
        name,
        pvc,
        pv,
        disable_node_expansion: false,
        disable_controller_expansion: false,
        expected_resize_status: "",
        expected_allocated_size: "",
        expect_node_expansion_not_required_annotation: false,
        pvc_with_final_errors: false,
        expansion_error: None,
        expect_resize_call: false,
    };
    let cases = vec![
        Case {
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "2G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size > pv.spec.size, resize_status=node_expansion_inprogress",
                get_test_pvc("test-vol0", "2G", "1G", "", ""),
                pv(1),
            )
        },
        Case {
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "1G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size = pv.spec.size, resize_status=no_expansion_inprogress",
                get_test_pvc("test-vol0", "1G", "1G", "", ""),
                pv(1),
            )
        },
        Case {
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "5G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size > pv.spec.size, resize_status=controller_expansion_infeasible",
                get_test_pvc("test-vol0", "5G", "3G", "10G", CONTROLLER_RESIZE_INFEASIBLE),
                pv(3),
            )
        },
        Case {
            pvc_with_final_errors: true,
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "5G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size > pv.spec.size, resize_status=controller_expansion_fail(final, but feasible)",
                get_test_pvc(
                    "test-vol0",
                    "5G",
                    "3G",
                    "10G",
                    CONTROLLER_RESIZE_IN_PROGRESS,
                ),
                pv(3),
            )
        },
        Case {
            pvc_with_final_errors: true,
            expansion_error: Some(Code::FailedPrecondition),
            expected_resize_status: CONTROLLER_RESIZE_IN_PROGRESS,
            expected_allocated_size: "5G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size > pv.spec.size, resize_status=controller_expansion_fail(final, but feasible), retry fail with final error",
                get_test_pvc(
                    "test-vol0",
                    "5G",
                    "3G",
                    "10G",
                    CONTROLLER_RESIZE_IN_PROGRESS,
                ),
                pv(3),
            )
        },
        Case {
            pvc_with_final_errors: true,
            expansion_error: Some(Code::InvalidArgument),
            expected_resize_status: CONTROLLER_RESIZE_INFEASIBLE,
            expected_allocated_size: "5G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size > pv.spec.size, resize_status=controller_expansion_fail(final, but feasible), retry fail with infeasible error",
                get_test_pvc(
                    "test-vol0",
                    "5G",
                    "3G",
                    "10G",
                    CONTROLLER_RESIZE_IN_PROGRESS,
                ),
                pv(3),
            )
        },
        Case {
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "10G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size > pv.spec.size, resize_status=controller_expansion_inprogress",
                get_test_pvc(
                    "test-vol0",
                    "5G",
                    "3G",
                    "10G",
                    CONTROLLER_RESIZE_IN_PROGRESS,
                ),
                pv(3),
            )
        },
        Case {
            disable_controller_expansion: true,
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "5G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size = pv.spec.size, resize_status=node_expansion_infeasible, disable_controller_expansion=true",
                get_test_pvc("test-vol0", "5G", "3G", "10G", NODE_RESIZE_INFEASIBLE),
                pv(10),
            )
        },
        Case {
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "1G",
            expect_resize_call: false,
            ..base(
                "pvc.spec.size = pv.spec.size, resize_status=node_expansion_pending",
                get_test_pvc("test-vol0", "1G", "1G", "1G", NODE_RESIZE_PENDING),
                pv(1),
            )
        },
        Case {
            disable_node_expansion: true,
            expected_resize_status: "",
            expect_node_expansion_not_required_annotation: true,
            expected_allocated_size: "2G",
            expect_resize_call: true,
            ..base(
                "pvc.spec.size > pv.spec.size, disable_node_expansion=true, resize_status=no_expansion_inprogress",
                get_test_pvc("test-vol0", "2G", "1G", "", ""),
                pv(1),
            )
        },
        Case {
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "2G",
            expect_resize_call: true,
            ..base(
                "pv.spec.size >= pvc.spec.size, resize_status=node_expansion_failed",
                get_test_pvc("test-vol0", "2G", "1G", "2G", NODE_RESIZE_INFEASIBLE),
                pv(2),
            )
        },
        Case {
            expected_resize_status: NODE_RESIZE_PENDING,
            expected_allocated_size: "3G",
            expect_resize_call: false,
            ..base(
                "pvc.spec.size > pv.spec.size, resize_status-node_expansion_pending",
                get_test_pvc("test-vol0", "10G", "1G", "3G", NODE_RESIZE_PENDING),
                pv(3),
            )
        },
        Case {
            expected_resize_status: NODE_RESIZE_IN_PROGRESS,
            expected_allocated_size: "3G",
            expect_resize_call: false,
            ..base(
                "pvc.spec.size > pv.spec.size, resize_status-node_expansion_inprogress",
                get_test_pvc("test-vol0", "10G", "1G", "3G", NODE_RESIZE_IN_PROGRESS),
                pv(3),
            )
        },
    ];
    assert_eq!(cases.len(), 13);
    for c in cases {
        let mut r = resizer("foo");
        if c.disable_controller_expansion {
            r.kind = ResizerKind::Trivial;
        }
        let tracking = Tracking {
            final_error: c.pvc_with_final_errors,
            slow_remaining: None,
        };
        let (pvc, called, _) = run(
            &r,
            &c.pvc,
            &c.pv,
            tracking,
            !c.disable_node_expansion,
            c.expansion_error,
        );
        assert_eq!(called, c.expect_resize_call, "{}: resize called", c.name);
        assert_eq!(
            resize_status(&pvc),
            c.expected_resize_status,
            "{}: resize status",
            c.name
        );
        let annotated = pvc
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANN_NODE_EXPANSION_NOT_REQUIRED));
        assert_eq!(
            annotated, c.expect_node_expansion_not_required_annotation,
            "{}: annotation",
            c.name
        );
        assert_eq!(
            allocated(&pvc).map(|a| amount(&a)),
            Some(amount(&q(c.expected_allocated_size))),
            "{}: allocated size",
            c.name
        );
    }
}

/// testutil.MakePVC: `foo` in `resize`, 2Gi, Bound; with resource statuses.
fn make_pvc(statuses: &[(&str, &str)]) -> PersistentVolumeClaim {
    let mut v = json!({
        "metadata": {"name": "foo", "namespace": "resize"},
        "spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                 "resources": {"requests": {"storage": "2Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}},
    });
    if !statuses.is_empty() {
        v["status"]["allocatedResourceStatuses"] =
            serde_json::to_value(statuses.iter().copied().collect::<BTreeMap<_, _>>()).unwrap();
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn test_resize_functions() {
    let size = q("10Gi");
    let t = now();
    type Marker = Box<dyn Fn(&PersistentVolumeClaim) -> PersistentVolumeClaimStatus>;
    type Case = (
        &'static str,
        PersistentVolumeClaim,
        Vec<(&'static str, &'static str)>,
        Marker,
    );
    let cases: Vec<Case> = vec![
        (
            "mark fs resize, with no other conditions",
            make_pvc(&[]),
            vec![(STORAGE, NODE_RESIZE_PENDING)],
            Box::new(move |p| mark_for_pending_node_expansion(p, &now())),
        ),
        (
            "mark fs resize, when other resource statuses are present",
            make_pvc(&[("cpu", CONTROLLER_RESIZE_INFEASIBLE)]),
            vec![
                ("cpu", CONTROLLER_RESIZE_INFEASIBLE),
                (STORAGE, NODE_RESIZE_PENDING),
            ],
            Box::new(move |p| mark_for_pending_node_expansion(p, &now())),
        ),
        (
            "mark controller resize in-progress",
            make_pvc(&[]),
            vec![(STORAGE, CONTROLLER_RESIZE_IN_PROGRESS)],
            Box::new({
                let size = size.clone();
                move |p| mark_controller_resize_in_progress(p, &size, true, &t)
            }),
        ),
        (
            "mark controller resize failed",
            make_pvc(&[]),
            vec![(STORAGE, CONTROLLER_RESIZE_INFEASIBLE)],
            Box::new(move |p| mark_controller_expansion_infeasible(p, "things failed", &now())),
        ),
        (
            "mark resize finished",
            make_pvc(&[
                ("cpu", CONTROLLER_RESIZE_INFEASIBLE),
                (STORAGE, NODE_RESIZE_PENDING),
            ]),
            vec![("cpu", CONTROLLER_RESIZE_INFEASIBLE)],
            Box::new({
                let size = size.clone();
                move |p| mark_overall_expansion_as_finished(p, &size)
            }),
        ),
    ];
    for (name, pvc, want, mark) in cases {
        let got = mark(&pvc).allocated_resource_statuses.unwrap_or_default();
        let want: BTreeMap<String, String> = want
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

fn cond(type_: &str, message: &str) -> PersistentVolumeClaimCondition {
    PersistentVolumeClaimCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(now()),
        message: Some(message.into()),
        ..Default::default()
    }
}

#[test]
fn test_merge_resize_conditions_of_pvc() {
    let pending = cond(
        FILE_SYSTEM_RESIZE_PENDING,
        FILE_SYSTEM_RESIZE_PENDING_MESSAGE,
    );
    let error1 = cond(CONTROLLER_RESIZE_ERROR, "controller resize failed");
    let error2 = cond(
        CONTROLLER_RESIZE_ERROR,
        "controller resize failed with error2",
    );
    let modifying = cond("ModifyingVolume", "ModifyVolume operation in progress.");
    for (name, old, new, want, keep) in [
        (
            "should not remove previous non-resize conditions",
            vec![modifying.clone()],
            vec![pending.clone()],
            vec![modifying.clone(), pending.clone()],
            false,
        ),
        (
            "should not remove previous resize conditions if requested",
            vec![modifying.clone()],
            vec![error1.clone()],
            vec![modifying.clone(), error1.clone()],
            true,
        ),
        (
            "should not keep previous resize conditions of same type",
            vec![error1.clone()],
            vec![error2.clone()],
            vec![error2.clone()],
            true,
        ),
    ] {
        assert_eq!(merge_resize_conditions(&old, &new, keep), want, "{name}");
    }
    // rekube's: an old resize condition not renewed goes unless kept.
    assert_eq!(
        merge_resize_conditions(&[pending.clone(), modifying.clone()], &[], false),
        vec![modifying.clone()]
    );
}

/// A sync of the claim through the plan and a mock driver, as controller_test.go runs its
/// controller: whether ControllerExpandVolume was called and with which capability.
fn sync(
    claim: &PersistentVolumeClaim,
    pv: Option<&PersistentVolume>,
    node_expansion: bool,
    in_use: bool,
    in_use_errors: bool,
) -> (
    Plan,
    Option<VolumeCapability>,
    Option<PersistentVolumeClaimStatus>,
) {
    let r = resizer("mock");
    let plan = plan(&r, claim, pv, Tracking::default(), &now());
    let Plan::Resize {
        new_size,
        in_progress,
    } = &plan
    else {
        return (plan, None, None);
    };
    // expandAndRecover: a driver that refused an in-use expansion is not asked again while
    // the claim is in use.
    if in_use_errors && in_use {
        return (plan.clone(), None, None);
    }
    let pv = pv.unwrap();
    let request = expand_request(&r, pv, new_size).unwrap();
    let mut marked = claim.clone();
    marked.status = Some((**in_progress).clone());
    let answer = mock_expand(&r, new_size, node_expansion, None);
    let after = after_expand(&r, &marked, pv, &answer, &now());
    (plan, request.volume_capability, after.status.map(|s| s.0))
}

#[test]
fn test_controller() {
    let fs = Some("Filesystem");
    let block = Some("Block");
    let pv = |claim, ns, uid, mode| create_pv(1, claim, ns, uid, mode, "mock");
    // (name, claim, volume, node resize, in use, in-use errors, expect a call, block)
    type Case = (
        &'static str,
        PersistentVolumeClaim,
        Option<PersistentVolume>,
        bool,
        bool,
        bool,
        bool,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "PVC doesn't need resize",
            create_pvc(1, 1),
            None,
            false,
            false,
            false,
            false,
            false,
        ),
        (
            "PV not found",
            create_pvc(2, 1),
            None,
            false,
            false,
            false,
            false,
            false,
        ),
        (
            "pv claimref does not have pvc UID",
            create_pvc(2, 1),
            Some(pv("testPVC", "default", "foobaz", fs)),
            false,
            false,
            false,
            false,
            false,
        ),
        (
            "pv claimref does not have PVC namespace",
            create_pvc(2, 1),
            Some(pv("testPVC", "test1", "foobar", fs)),
            false,
            false,
            false,
            false,
            false,
        ),
        (
            "pv claimref is nil",
            create_pvc(2, 1),
            Some(pv("", "test1", "foobar", fs)),
            false,
            false,
            false,
            false,
            false,
        ),
        (
            "Resize PVC, no FS resize",
            create_pvc(2, 1),
            Some(pv("testPVC", "default", "foobar", fs)),
            false,
            false,
            false,
            true,
            false,
        ),
        (
            "Resize PVC with FS resize",
            create_pvc(2, 1),
            Some(pv("testPVC", "default", "foobar", fs)),
            true,
            false,
            false,
            true,
            false,
        ),
        (
            "Block Resize PVC with FS resize",
            create_pvc(2, 1),
            Some(pv("testPVC", "default", "foobar", block)),
            true,
            false,
            false,
            true,
            true,
        ),
        (
            "Resize PVC, no FS resize, pvc-inuse with failedprecondition",
            create_pvc(2, 1),
            Some(pv("testPVC", "default", "foobar", fs)),
            false,
            true,
            true,
            false,
            false,
        ),
        (
            "Resize PVC, no FS resize, pvc-inuse but no failedprecondition error",
            create_pvc(2, 1),
            Some(pv("testPVC", "default", "foobar", fs)),
            false,
            true,
            false,
            true,
            false,
        ),
        (
            "Resize PVC, no FS resize, pvc not in-use but has failedprecondition error",
            create_pvc(2, 1),
            Some(pv("testPVC", "default", "foobar", fs)),
            false,
            false,
            true,
            true,
            false,
        ),
    ];
    assert_eq!(cases.len(), 11);
    for (name, claim, pv, node_resize, in_use, in_use_errors, expect_call, expect_block) in cases {
        let (plan, capability, status) =
            sync(&claim, pv.as_ref(), node_resize, in_use, in_use_errors);
        assert_eq!(capability.is_some(), expect_call, "{name}: {plan:?}");
        if name == "PV not found" {
            assert_eq!(
                plan,
                Plan::VolumeMissing(
                    "persistentvolume \"testPV\" bound to persistentvolumeclaim \"default/testPVC\" not found"
                        .into()
                ),
                "{name}"
            );
        }
        let Some(capability) = capability else {
            continue;
        };
        match capability.access_type {
            Some(AccessType::Block(_)) => assert!(expect_block, "{name}: block"),
            Some(AccessType::Mount(_)) => assert!(!expect_block, "{name}: mount"),
            None => panic!("{name}: no access type"),
        }
        let status = status.unwrap();
        let want = if node_resize {
            Some(NODE_RESIZE_PENDING.to_string())
        } else {
            None
        };
        assert_eq!(
            status
                .allocated_resource_statuses
                .as_ref()
                .and_then(|s| s.get(STORAGE))
                .cloned(),
            want,
            "{name}: resize status"
        );
        let capacity = status.capacity.unwrap()[STORAGE].clone();
        let want = if node_resize { "1Gi" } else { "2Gi" };
        assert_eq!(amount(&capacity), amount(&q(want)), "{name}: capacity");
    }
}

#[test]
fn test_resize_pvc_events() {
    let pv = create_pv(
        1,
        "testPVC",
        "default",
        "foobar",
        Some("Filesystem"),
        "mock",
    );
    let claim = create_pvc(2, 1);
    let r = resizer("mock");
    // "Resize PVC with FS resize"
    let (_, called, events) = run(&r, &claim, &pv, Tracking::default(), true, None);
    assert!(called);
    assert_eq!(
        events,
        [
            Event::normal(
                VOLUME_RESIZING,
                "External resizer is resizing volume testPV"
            ),
            Event::normal(
                FILE_SYSTEM_RESIZE_REQUIRED,
                "Require file system resize of volume on node"
            ),
        ]
    );
    // "Resize PVC with FS resize failure" (the driver's answer is a gRPC status here).
    let (claim_after, _, events) = run(
        &r,
        &claim,
        &pv,
        Tracking::default(),
        true,
        Some(Code::Internal),
    );
    assert_eq!(
        events,
        [
            Event::normal(
                VOLUME_RESIZING,
                "External resizer is resizing volume testPV"
            ),
            Event::warning(
                VOLUME_RESIZE_FAILED,
                "resize volume \"testPV\" by resizer \"mock\" failed: rpc error: code = Internal desc = something broke"
            ),
        ]
    );
    // A final error: the condition says so; the request is still in progress.
    assert_eq!(resize_status(&claim_after), CONTROLLER_RESIZE_IN_PROGRESS);
    let conditions = claim_after.status.unwrap().conditions.unwrap();
    assert_eq!(
        conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.message.clone().unwrap_or_default()))
            .collect::<Vec<_>>(),
        [
            (RESIZING, String::new()),
            (
                CONTROLLER_RESIZE_ERROR,
                "failed to expand pvc with rpc error: code = Internal desc = something broke"
                    .to_string()
            ),
        ]
    );
    // Success without node expansion.
    let (done, _, events) = run(&r, &claim, &pv, Tracking::default(), false, None);
    assert_eq!(
        events.last(),
        Some(&Event::normal(
            VOLUME_RESIZE_SUCCESS,
            "Resize volume succeeded"
        ))
    );
    assert_eq!(done.status.unwrap().conditions, None);
}

#[test]
fn test_new_resizer() {
    // (node resize, controller resize, controller service) → kind or error
    for (i, (node, controller, service, want)) in [
        (true, true, true, Ok(ResizerKind::Csi)),
        (true, true, false, Err(CONTROLLER_SERVICE_NOT_SUPPORTED)),
        (true, true, true, Ok(ResizerKind::Csi)),
        (true, false, true, Ok(ResizerKind::Trivial)),
        (false, false, true, Err(RESIZE_NOT_SUPPORTED)),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(resizer_kind(service, controller, node), want, "case {i}");
    }
}

fn mount_capability(fs_type: &str, mode: Mode, flags: &[&str]) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn block_capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

#[test]
fn test_get_volume_capabilities() {
    use Mode::*;
    type Case = (
        &'static str,
        Option<&'static str>,
        &'static str,
        Vec<&'static str>,
        Vec<&'static str>,
        bool,
        Option<VolumeCapability>,
    );
    let cases: Vec<Case> = vec![
        (
            "RWX",
            Some("Filesystem"),
            "",
            vec!["ReadWriteMany"],
            vec![],
            false,
            Some(mount_capability("", MultiNodeMultiWriter, &[])),
        ),
        (
            "Block RWX",
            Some("Block"),
            "",
            vec!["ReadWriteMany"],
            vec![],
            false,
            Some(block_capability(MultiNodeMultiWriter)),
        ),
        (
            "RWX + specified fsType",
            None,
            "ext3",
            vec!["ReadWriteMany"],
            vec![],
            false,
            Some(mount_capability("ext3", MultiNodeMultiWriter, &[])),
        ),
        (
            "RWO",
            None,
            "",
            vec!["ReadWriteOnce"],
            vec![],
            false,
            Some(mount_capability("", SingleNodeWriter, &[])),
        ),
        (
            "Block RWO",
            Some("Block"),
            "",
            vec!["ReadWriteOnce"],
            vec![],
            false,
            Some(block_capability(SingleNodeWriter)),
        ),
        (
            "ROX",
            None,
            "",
            vec!["ReadOnlyMany"],
            vec![],
            false,
            Some(mount_capability("", MultiNodeReaderOnly, &[])),
        ),
        (
            "RWX + anytyhing",
            None,
            "",
            vec!["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"],
            vec![],
            false,
            Some(mount_capability("", MultiNodeMultiWriter, &[])),
        ),
        (
            "mount options",
            None,
            "",
            vec!["ReadWriteMany"],
            vec!["first", "second"],
            false,
            Some(mount_capability(
                "",
                MultiNodeMultiWriter,
                &["first", "second"],
            )),
        ),
        (
            "ROX+RWO",
            None,
            "",
            vec!["ReadWriteOnce", "ReadOnlyMany"],
            vec![],
            false,
            None,
        ),
        ("nothing", None, "", vec![], vec![], false, None),
        (
            "RWX with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            vec!["ReadWriteMany"],
            vec![],
            true,
            Some(mount_capability("", MultiNodeMultiWriter, &[])),
        ),
        (
            "ROX + RWO with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            vec!["ReadOnlyMany", "ReadWriteOnce"],
            vec![],
            true,
            None,
        ),
        (
            "ROX + RWOP with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            vec!["ReadOnlyMany", "ReadWriteOncePod"],
            vec![],
            true,
            None,
        ),
        (
            "RWO + RWOP with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            vec!["ReadWriteOnce", "ReadWriteOncePod"],
            vec![],
            true,
            None,
        ),
        (
            "ROX with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            vec!["ReadOnlyMany"],
            vec![],
            true,
            Some(mount_capability("", MultiNodeReaderOnly, &[])),
        ),
        (
            "RWO with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            vec!["ReadWriteOnce"],
            vec![],
            true,
            Some(mount_capability("", SingleNodeMultiWriter, &[])),
        ),
        (
            "RWOP with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            vec!["ReadWriteOncePod"],
            vec![],
            true,
            Some(mount_capability("", SingleNodeSingleWriter, &[])),
        ),
        (
            "nothing with SINGLE_NODE_MULTI_WRITER capable driver",
            None,
            "",
            vec![],
            vec![],
            true,
            None,
        ),
    ];
    assert_eq!(cases.len(), 18);
    for (name, mode, fs_type, modes, options, snmw, want) in cases {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv"},
            "spec": {"volumeMode": mode, "accessModes": modes, "mountOptions": options,
                     "csi": {"driver": "d", "volumeHandle": "h", "fsType": fs_type}},
        }))
        .unwrap();
        let mut r = resizer("d");
        r.single_node_multi_writer = snmw;
        let got = expand_request(&r, &pv, &q("1Gi")).map(|req| req.volume_capability.unwrap());
        match want {
            Some(want) => assert_eq!(got, Ok(want), "{name}"),
            None => assert!(got.is_err(), "{name}: {got:?}"),
        }
    }
}

fn pod(name: &str, phase: Option<&str>, claims: &[&str]) -> Pod {
    let volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
        "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": volumes}});
    if let Some(p) = phase {
        v["status"] = json!({"phase": p});
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn test_add_remove_pods() {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    for (name, pods, want) in [
        (
            "with no initial pods",
            vec![pod("no-init-pod", None, &["no-init-pod"])],
            set(&["default/no-init-pod"]),
        ),
        (
            "adding failed pod",
            vec![pod("p", Some("Failed"), &["foobar"])],
            set(&[]),
        ),
        (
            "with success pod",
            vec![pod("p", Some("Succeeded"), &["foobar"])],
            set(&[]),
        ),
        // Removing a pod is its absence from the snapshot.
        ("removing running pod", vec![], set(&[])),
        (
            "removing failed pod",
            vec![pod("foobar-pod", Some("Failed"), &["foobar"])],
            set(&[]),
        ),
    ] {
        assert_eq!(claims_in_use(&pods), want, "{name}");
    }
    // rekube's: two pods, one claim each; an ephemeral volume is not a claim volume.
    let mut p = pod("a", Some("Running"), &["x"]);
    p.spec.as_mut().unwrap().volumes.as_mut().unwrap().push(
        serde_json::from_value(
            json!({"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}),
        )
        .unwrap(),
    );
    assert_eq!(
        claims_in_use(&[p, pod("b", None, &["y"])]),
        set(&["default/x", "default/y"])
    );
}

/// rekube's node-local filter: the driver's volumes on this node only.
#[test]
fn only_this_drivers_volumes_on_this_node() {
    let r = resizer("mock");
    let pv = create_pv(1, "testPVC", "default", "foobar", None, "mock");
    assert!(can_support(&r, &pv));
    assert!(!can_support(&resizer("other"), &pv));
    let mut elsewhere = r.clone();
    elsewhere.node_id = "n2".into();
    assert!(!can_support(&elsewhere, &pv));
    let mut no_affinity = pv.clone();
    no_affinity.spec.as_mut().unwrap().node_affinity = None;
    assert!(!can_support(&r, &no_affinity));
}

#[test]
fn an_infeasible_expansion_waits_in_the_slow_set() {
    let claim = get_test_pvc("testPV", "5G", "3G", "5G", CONTROLLER_RESIZE_INFEASIBLE);
    let pv = create_pv(3, "claim01", "default", "test-uid", None, "foo");
    let r = resizer("foo");
    let mut slow = SlowSet::new(Duration::from_secs(300));
    let t0 = Instant::now();
    slow.add("default/claim01", t0);
    slow.add("default/claim01", t0 + Duration::from_secs(100)); // kept from t0
    let remaining = slow.remaining("default/claim01", t0 + Duration::from_secs(60));
    assert_eq!(remaining, Some(Duration::from_secs(240)));
    let tracking = Tracking {
        final_error: true,
        slow_remaining: remaining,
    };
    assert_eq!(
        expand_and_recover(&r, &claim, &pv, tracking, &now()),
        Plan::DelayRetry {
            message: "skipping volume expansion for pvc default/claim01, because expansion previously failed with infeasible error".into(),
            after: Duration::from_secs(240),
        }
    );
    assert_eq!(
        slow.remaining("default/claim01", t0 + Duration::from_secs(300)),
        None
    );
    slow.remove("default/claim01");
    assert_eq!(slow.remaining("default/claim01", t0), None);
    // Out of the slow set: tried again (the allocated size, not re-marked).
    let Plan::Resize {
        new_size,
        in_progress,
    } = expand_and_recover(
        &r,
        &claim,
        &pv,
        Tracking {
            final_error: true,
            slow_remaining: None,
        },
        &now(),
    )
    else {
        panic!("no resize");
    };
    assert_eq!(amount(&new_size), amount(&q("5G")));
    assert_eq!(
        in_progress.allocated_resource_statuses.unwrap()[STORAGE],
        CONTROLLER_RESIZE_INFEASIBLE
    );
}

#[test]
fn status_patches_carry_only_the_changes() {
    let claim = get_test_pvc("v", "2Gi", "1Gi", "", "");
    let old = claim.status.clone().unwrap();
    let progress = mark_controller_resize_in_progress(&claim, &q("2Gi"), true, &now());
    assert_eq!(
        status_patch(&old, &progress, Some("42")),
        json!({"metadata": {"resourceVersion": "42"}, "status": {
            "conditions": [{"type": "Resizing", "status": "True",
                            "lastTransitionTime": "2023-11-14T22:13:20Z"}],
            "allocatedResources": {"storage": "2Gi"},
            "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"}}})
    );
    let mut marked = claim.clone();
    marked.status = Some(progress.clone());
    let done = mark_overall_expansion_as_finished(&marked, &q("2Gi"));
    assert_eq!(
        status_patch(&progress, &done, None),
        json!({"status": {"conditions": null, "capacity": {"storage": "2Gi"},
                          "allocatedResourceStatuses": {"storage": null}}})
    );
}

/// controller.go updatePVC's cases.
#[test]
fn updates_worth_a_sync() {
    let old = get_test_pvc("v", "1Gi", "1Gi", "", "");
    let with = |f: &dyn Fn(&mut PersistentVolumeClaim)| {
        let mut c = old.clone();
        c.metadata.resource_version = Some("2".into());
        f(&mut c);
        c
    };
    let mut old = old.clone();
    old.metadata.resource_version = Some("1".into());
    let grown = with(&|c| {
        c.spec
            .as_mut()
            .unwrap()
            .resources
            .as_mut()
            .unwrap()
            .requests = Some([(STORAGE.to_string(), q("2Gi"))].into())
    });
    assert!(should_enqueue_update(&old, &grown), "request grew");
    assert!(
        should_enqueue_update(&grown, &old),
        "request shrank (recovery)"
    );
    assert!(should_enqueue_update(&old, &old.clone()), "resync");
    let labelled = with(&|c| c.metadata.labels = Some([("a".to_string(), "b".to_string())].into()));
    assert!(
        !should_enqueue_update(&old, &labelled),
        "an unrelated change"
    );
    let capacity = with(&|c| {
        c.status.as_mut().unwrap().capacity = Some([(STORAGE.to_string(), q("2Gi"))].into())
    });
    assert!(should_enqueue_update(&old, &capacity), "capacity grew");
    let status = with(&|c| {
        c.status.as_mut().unwrap().allocated_resource_statuses =
            Some([(STORAGE.to_string(), NODE_RESIZE_INFEASIBLE.to_string())].into())
    });
    assert!(
        should_enqueue_update(&old, &status),
        "resize status changed"
    );
    let condition = with(&|c| {
        c.status.as_mut().unwrap().conditions = Some(vec![cond(CONTROLLER_RESIZE_ERROR, "x")])
    });
    assert!(
        !should_enqueue_update(&old, &condition),
        "a condition alone"
    );
    let resizer = with(&|c| {
        c.metadata.annotations = Some([(ANN_STORAGE_RESIZER.to_string(), "d".to_string())].into())
    });
    assert!(should_enqueue_update(&old, &resizer), "resizer annotation");
}
