//! upstream cache/desired_state_of_world_test.go and cache/actual_state_of_world_test.go,
//! test by test (the Go names in each doc line).
use std::time::{Duration, Instant};

use super::*;

fn spec(handle: &str) -> VolumeSpec {
    VolumeSpec {
        pv_name: format!("{handle}-pv"),
        driver: "d".into(),
        volume_handle: handle.into(),
        access_modes: vec!["ReadWriteOnce".into()],
    }
}

fn unique(handle: &str) -> String {
    spec(handle).unique_name()
}

fn pod(uid: &str) -> PodRef {
    PodRef {
        namespace: "ns".into(),
        name: uid.into(),
        uid: uid.into(),
    }
}

// ---- desired_state_of_world_test.go ----

/// Test_AddNode_Positive_NewNode, Test_AddNode_Positive_ExistingNode.
#[test]
fn add_node_new_and_existing() {
    let mut dsw = DesiredStateOfWorld::default();
    assert!(!dsw.node_exists("n"));
    dsw.add_node("n");
    assert!(dsw.node_exists("n"));
    dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    dsw.add_node("n");
    assert!(dsw.node_exists("n"));
    assert!(
        dsw.volume_exists(&unique("v"), "n"),
        "adding again keeps its volumes"
    );
}

/// Test_AddPod_Positive_NewPodNodeExistsVolumeDoesntExist.
#[test]
fn add_pod_new_pod_node_exists_volume_doesnt_exist() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n");
    assert!(!dsw.volume_exists(&unique("v"), "n"));
    let name = dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    assert_eq!(name, unique("v"));
    assert!(dsw.volume_exists(&name, "n"));
    assert_eq!(dsw.get_volumes_to_attach().len(), 1);
}

/// Test_AddPod_Positive_NewPodNodeExistsVolumeExists.
#[test]
fn add_pod_new_pod_node_exists_volume_exists() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n");
    let n1 = dsw.add_pod(&pod("p1"), &spec("v"), "n").unwrap();
    let n2 = dsw.add_pod(&pod("p2"), &spec("v"), "n").unwrap();
    assert_eq!(n1, n2);
    let v = dsw.get_volumes_to_attach();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].scheduled_pods, vec![pod("p1"), pod("p2")]);
}

/// Test_AddPod_Positive_PodExistsNodeExistsVolumeExists.
#[test]
fn add_pod_pod_exists_node_exists_volume_exists() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n");
    dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    let v = dsw.get_volumes_to_attach();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].scheduled_pods.len(), 1);
}

/// Test_AddPod_Negative_NewPodNodeDoesntExistVolumeDoesntExist.
#[test]
fn add_pod_node_doesnt_exist() {
    let mut dsw = DesiredStateOfWorld::default();
    let err = dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"n\" is not managed by the attach/detach controller"
    );
    assert!(!dsw.volume_exists(&unique("v"), "n"));
    assert!(!dsw.node_exists("n"));
}

/// Test_DeleteNode_Positive_NodeExists, Test_DeleteNode_Positive_NodeDoesntExist,
/// Test_DeleteNode_Negative_NodeExistsHasChildVolumes.
#[test]
fn delete_node() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n");
    dsw.delete_node("n").unwrap();
    assert!(!dsw.node_exists("n"));
    dsw.delete_node("gone").unwrap();
    dsw.add_node("n");
    dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    let err = dsw.delete_node("n").unwrap_err();
    assert_eq!(err.to_string(), "node \"n\" still has 1 volumes to attach");
    assert!(dsw.node_exists("n"));
}

/// Test_DeletePod_Positive_PodExistsNodeExistsVolumeExists.
#[test]
fn delete_pod_pod_exists() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n");
    let v = dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    dsw.delete_pod("p", &v, "n");
    assert!(!dsw.volume_exists(&v, "n"));
}

/// Test_DeletePod_Positive_2PodsExistNodeExistsVolumesExist.
#[test]
fn delete_pod_two_pods() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n");
    let v = dsw.add_pod(&pod("p1"), &spec("v"), "n").unwrap();
    dsw.add_pod(&pod("p2"), &spec("v"), "n").unwrap();
    dsw.delete_pod("p1", &v, "n");
    assert!(dsw.volume_exists(&v, "n"), "p2 still wants it");
    dsw.delete_pod("p2", &v, "n");
    assert!(!dsw.volume_exists(&v, "n"));
}

/// Test_DeletePod_Positive_PodDoesNotExist, Test_DeletePod_Positive_NodeDoesNotExist,
/// Test_DeletePod_Positive_VolumeDoesNotExist.
#[test]
fn delete_pod_of_nothing() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n");
    let v = dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    dsw.delete_pod("other", &v, "n");
    dsw.delete_pod("p", &v, "other-node");
    dsw.delete_pod("p", &unique("other-volume"), "n");
    assert!(dsw.volume_exists(&v, "n"));
    assert!(!dsw.node_exists("other-node"));
}

/// Test_NodeExists_Positive_NodeExists, Test_NodeExists_Positive_NodeDoesntExist.
#[test]
fn node_exists() {
    let mut dsw = DesiredStateOfWorld::default();
    assert!(!dsw.node_exists("n"));
    dsw.add_node("n");
    assert!(dsw.node_exists("n"));
}

/// Test_VolumeExists_Positive_VolumeExistsNodeExists,
/// Test_VolumeExists_Positive_VolumeDoesntExistNodeExists,
/// Test_VolumeExists_Positive_VolumeDoesntExistNodeDoesntExists.
#[test]
fn volume_exists() {
    let mut dsw = DesiredStateOfWorld::default();
    assert!(!dsw.volume_exists(&unique("v"), "n"));
    dsw.add_node("n");
    assert!(!dsw.volume_exists(&unique("v"), "n"));
    dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    assert!(dsw.volume_exists(&unique("v"), "n"));
    assert!(!dsw.volume_exists(&unique("w"), "n"));
}

/// Test_GetVolumesToAttach_Positive_NoNodes, Test_GetVolumesToAttach_Positive_TwoNodes.
#[test]
fn get_volumes_to_attach_no_volumes() {
    let mut dsw = DesiredStateOfWorld::default();
    assert!(dsw.get_volumes_to_attach().is_empty());
    dsw.add_node("n1");
    dsw.add_node("n2");
    assert!(dsw.get_volumes_to_attach().is_empty());
}

/// Test_GetVolumesToAttach_Positive_TwoNodesOneVolumeEach and
/// Test_GetVolumesToAttach_Positive_TwoNodesOneVolumeEachExtraPod.
#[test]
fn get_volumes_to_attach_two_nodes_one_volume_each() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n1");
    dsw.add_node("n2");
    dsw.add_pod(&pod("p1"), &spec("v1"), "n1").unwrap();
    dsw.add_pod(&pod("p2"), &spec("v2"), "n2").unwrap();
    dsw.add_pod(&pod("p3"), &spec("v2"), "n2").unwrap();
    let got: Vec<(String, String, usize)> = dsw
        .get_volumes_to_attach()
        .into_iter()
        .map(|v| (v.node_name, v.volume_name, v.scheduled_pods.len()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("n1".to_string(), unique("v1"), 1),
            ("n2".to_string(), unique("v2"), 2)
        ]
    );
}

/// Test_GetVolumesToAttach_Positive_TwoNodesThreeVolumes.
#[test]
fn get_volumes_to_attach_two_nodes_three_volumes() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n1");
    dsw.add_node("n2");
    dsw.add_pod(&pod("p1"), &spec("v1"), "n1").unwrap();
    dsw.add_pod(&pod("p2a"), &spec("v2"), "n2").unwrap();
    dsw.add_pod(&pod("p2b"), &spec("v2"), "n2").unwrap();
    dsw.add_pod(&pod("p3"), &spec("v3"), "n1").unwrap();
    let v = dsw.get_volumes_to_attach();
    assert_eq!(v.len(), 3);
    assert!(
        v.iter()
            .any(|v| v.node_name == "n1" && v.volume_name == unique("v3"))
    );
}

/// Test_GetPodsOnNodes.
#[test]
fn get_pods_on_nodes() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n1");
    dsw.add_node("n2");
    dsw.add_pod(&pod("p1"), &spec("v1"), "n1").unwrap();
    dsw.add_pod(&pod("p2"), &spec("v1"), "n2").unwrap();
    dsw.add_pod(&pod("p3"), &spec("v2"), "n2").unwrap();
    assert_eq!(
        dsw.get_volume_pods_on_nodes(&["n1".into(), "n2".into(), "n3".into()], &unique("v1")),
        vec![pod("p1"), pod("p2")]
    );
    assert_eq!(
        dsw.get_volume_pods_on_nodes(&["n2".into()], &unique("v2")),
        vec![pod("p3")]
    );
    assert!(
        dsw.get_volume_pods_on_nodes(&["n1".into()], &unique("v2"))
            .is_empty()
    );
}

#[test]
fn multi_attach_error_is_remembered_per_volume_and_node() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_node("n");
    dsw.add_pod(&pod("p"), &spec("v"), "n").unwrap();
    dsw.set_multi_attach_error(&unique("v"), "n");
    dsw.set_multi_attach_error(&unique("v"), "other");
    assert!(dsw.get_volumes_to_attach()[0].multi_attach_error_reported);
}

// ---- actual_state_of_world_test.go ----

/// What upstream's verifyAttachedVolume checks.
fn verify(
    volumes: &[AttachedVolume],
    name: &str,
    node: &str,
    mounted: bool,
    detach_requested: bool,
) {
    let v = volumes
        .iter()
        .find(|v| v.volume_name == name && v.node_name == node)
        .unwrap_or_else(|| panic!("{name} on {node} not in {volumes:?}"));
    assert_eq!(v.mounted_by_node, mounted, "{name} on {node}: mounted");
    assert_eq!(
        v.detach_requested_time.is_some(),
        detach_requested,
        "{name} on {node}: detach requested"
    );
}

/// Test_AddVolumeNode_Positive_NewVolumeNewNode.
#[test]
fn add_volume_node_new_volume_new_node() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "path", true);
    assert_eq!(asw.get_attach_state("v", "n"), AttachState::Attached);
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 1);
    verify(&all, "v", "n", true, false);
    assert_eq!(all[0].device_path, "path");
}

/// Test_AddVolumeNode_Positive_NewVolumeNewNodeWithFalseAttached.
#[test]
fn add_volume_node_new_volume_new_node_with_false_attached() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "path", false);
    assert_eq!(asw.get_attach_state("v", "n"), AttachState::Uncertain);
    verify(&asw.get_attached_volumes(), "v", "n", true, false);
    assert!(asw.get_attached_volumes_per_node().is_empty());
    assert!(asw.get_nodes_for_attached_volume("v").is_empty());
    assert!(asw.get_volumes_to_report_attached().is_empty());
    // Confirmed later.
    asw.add_volume_node("v", Some(&spec("v")), "n", "path", true);
    assert_eq!(asw.get_attach_state("v", "n"), AttachState::Attached);
    assert_eq!(asw.get_volumes_to_report_attached()["n"].len(), 1);
}

/// Test_AddVolumeNode_Positive_NewVolumeTwoNodesWithFalseAttached.
#[test]
fn add_volume_node_new_volume_two_nodes_with_false_attached() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n1", "path", false);
    assert_eq!(asw.get_attach_state("v", "n1"), AttachState::Uncertain);
    asw.add_volume_node("v", Some(&spec("v")), "n2", "path", true);
    assert_eq!(asw.get_attach_state("v", "n2"), AttachState::Attached);
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 2);
    verify(&all, "v", "n1", true, false);
    verify(&all, "v", "n2", true, false);
    assert_eq!(asw.get_attached_volumes_for_node("n2").len(), 1);
    assert_eq!(asw.get_attached_volumes_per_node()["n2"].len(), 1);
    assert_eq!(asw.get_nodes_for_attached_volume("v"), ["n2"]);
    let report = asw.get_volumes_to_report_attached();
    assert_eq!(report["n2"].len(), 1);
    assert!(!report.contains_key("n1"));
}

/// Test_AddVolumeNode_Positive_ExistingVolumeNewNode.
#[test]
fn add_volume_node_existing_volume_new_node() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n1", "p1", true);
    asw.add_volume_node("v", Some(&spec("v")), "n2", "p2", true);
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 2);
    verify(&all, "v", "n1", true, false);
    verify(&all, "v", "n2", true, false);
}

/// Test_AddVolumeNode_Positive_ExistingVolumeExistingNode.
#[test]
fn add_volume_node_existing_volume_existing_node() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    assert_eq!(asw.get_attached_volumes().len(), 1);
}

/// Test_DeleteVolumeNode_Positive_VolumeExistsNodeExists.
#[test]
fn delete_volume_node_volume_exists_node_exists() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.delete_volume_node("v", "n");
    assert_eq!(asw.get_attach_state("v", "n"), AttachState::Detached);
    assert!(asw.get_attached_volumes().is_empty());
}

/// Test_DeleteVolumeNode_Positive_VolumeDoesntExistNodeDoesntExist.
#[test]
fn delete_volume_node_nothing() {
    let mut asw = ActualStateOfWorld::default();
    asw.delete_volume_node("v", "n");
    assert_eq!(asw.get_attach_state("v", "n"), AttachState::Detached);
    assert!(asw.get_attached_volumes().is_empty());
}

/// Test_DeleteVolumeNode_Positive_TwoNodesOneDeleted.
#[test]
fn delete_volume_node_two_nodes_one_deleted() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n1", "p", true);
    asw.add_volume_node("v", Some(&spec("v")), "n2", "p", true);
    asw.delete_volume_node("v", "n1");
    assert_eq!(asw.get_attach_state("v", "n1"), AttachState::Detached);
    assert_eq!(asw.get_attach_state("v", "n2"), AttachState::Attached);
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 1);
    verify(&all, "v", "n2", true, false);
}

/// Test_VolumeNodeExists_Positive_VolumeExistsNodeExists,
/// Test_VolumeNodeExists_Positive_VolumeExistsNodeDoesntExist,
/// Test_VolumeNodeExists_Positive_VolumeAndNodeDontExist.
#[test]
fn volume_node_exists() {
    let mut asw = ActualStateOfWorld::default();
    assert_eq!(asw.get_attach_state("v", "n1"), AttachState::Detached);
    asw.add_volume_node("v", Some(&spec("v")), "n1", "p", true);
    assert_eq!(asw.get_attach_state("v", "n1"), AttachState::Attached);
    assert_eq!(asw.get_attach_state("v", "n2"), AttachState::Detached);
}

/// Test_GetAttachedVolumes_Positive_NoVolumesOrNodes, _OneVolumeOneNode,
/// _TwoVolumeTwoNodes, _OneVolumeTwoNodes.
#[test]
fn get_attached_volumes() {
    let mut asw = ActualStateOfWorld::default();
    assert!(asw.get_attached_volumes().is_empty());
    asw.add_volume_node("v1", Some(&spec("v1")), "n1", "p", true);
    verify(&asw.get_attached_volumes(), "v1", "n1", true, false);
    asw.add_volume_node("v2", Some(&spec("v2")), "n2", "p", true);
    asw.add_volume_node("v1", Some(&spec("v1")), "n2", "p", true);
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 3);
    verify(&all, "v1", "n1", true, false);
    verify(&all, "v1", "n2", true, false);
    verify(&all, "v2", "n2", true, false);
}

/// Test_SetVolumesMountedByNode_Positive_Set.
#[test]
fn set_volumes_mounted_by_node_set() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.set_volumes_mounted_by_node(&["v".into()], "n");
    verify(&asw.get_attached_volumes(), "v", "n", true, false);
}

/// Test_SetVolumesMountedByNode_Positive_UnsetWithInitialSet.
#[test]
fn set_volumes_mounted_by_node_unset_with_initial_set() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.set_volumes_mounted_by_node(&["v".into()], "n");
    asw.set_volumes_mounted_by_node(&[], "n");
    verify(&asw.get_attached_volumes(), "v", "n", false, false);
}

/// Test_SetVolumesMountedByNode_Positive_UnsetWithoutInitialSet.
#[test]
fn set_volumes_mounted_by_node_unset_without_initial_set() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    verify(&asw.get_attached_volumes(), "v", "n", true, false);
    asw.set_volumes_mounted_by_node(&[], "n");
    verify(&asw.get_attached_volumes(), "v", "n", false, false);
}

/// Test_SetVolumesMountedByNode_Positive_UnsetWithInitialSetAddVolumeNodeNotReset.
#[test]
fn set_volumes_mounted_by_node_unset_then_add_volume_node_not_reset() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.set_volumes_mounted_by_node(&["v".into()], "n");
    asw.set_volumes_mounted_by_node(&[], "n");
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 1);
    verify(&all, "v", "n", false, false);
}

/// Test_SetVolumesMountedByNode_Positive_UnsetWithInitialSetVerifyDetachRequestedTimePerserved.
#[test]
fn set_volumes_mounted_by_node_keeps_detach_requested_time() {
    let mut asw = ActualStateOfWorld::default();
    let now = Instant::now();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.set_detach_request_time("v", "n", now).unwrap();
    asw.remove_volume_from_report_as_attached("v", "n").unwrap();
    let expected = asw.get_attached_volumes()[0].detach_requested_time;
    asw.set_volumes_mounted_by_node(&["v".into()], "n");
    asw.set_volumes_mounted_by_node(&[], "n");
    let all = asw.get_attached_volumes();
    verify(&all, "v", "n", false, true);
    assert_eq!(all[0].detach_requested_time, expected);
}

/// Test_RemoveVolumeFromReportAsAttached_Positive_Set and _Positive_Marked: removal from
/// the report keeps the attachment (and mounted-by-node), and an unknown node or volume
/// is an error.
#[test]
fn remove_volume_from_report_as_attached() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.set_detach_request_time("v", "n", Instant::now())
        .unwrap();
    asw.remove_volume_from_report_as_attached("v", "n").unwrap();
    verify(&asw.get_attached_volumes(), "v", "n", true, true);
    assert!(asw.get_volumes_to_report_attached()["n"].is_empty());
    let err = asw
        .remove_volume_from_report_as_attached("v", "n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "volume \"v\" is not reported as attached to node \"n\""
    );
    assert!(
        asw.remove_volume_from_report_as_attached("v", "other")
            .is_err()
    );
}

/// Test_MarkDesireToDetach_Positive_MarkedAddVolumeNodeReset.
#[test]
fn mark_desire_to_detach_then_reset() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.set_detach_request_time("v", "n", Instant::now())
        .unwrap();
    asw.remove_volume_from_report_as_attached("v", "n").unwrap();
    asw.reset_detach_request_time("v", "n");
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 1);
    verify(&all, "v", "n", true, false);
}

/// Test_RemoveVolumeFromReportAsAttached_Positive_UnsetWithInitialSetVolumesMountedByNodePreserved.
#[test]
fn remove_from_report_keeps_mounted_by_node_unset() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.set_volumes_mounted_by_node(&["v".into()], "n");
    asw.set_volumes_mounted_by_node(&[], "n");
    asw.set_detach_request_time("v", "n", Instant::now())
        .unwrap();
    asw.remove_volume_from_report_as_attached("v", "n").unwrap();
    verify(&asw.get_attached_volumes(), "v", "n", false, true);
}

/// Test_RemoveVolumeFromReportAsAttached and
/// Test_RemoveVolumeFromReportAsAttached_AddVolumeToReportAsAttached_Positive.
#[test]
fn remove_then_add_back_to_report() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.remove_volume_from_report_as_attached("v", "n").unwrap();
    let report = asw.get_volumes_to_report_attached();
    assert!(report["n"].is_empty());
    asw.add_volume_to_report_as_attached("v", "n");
    let report = asw.get_volumes_to_report_attached();
    assert_eq!(report["n"].len(), 1);
    // Not attached: nothing to add back.
    asw.add_volume_to_report_as_attached("w", "n");
    assert!(asw.get_volumes_to_report_attached().is_empty());
}

/// Test_RemoveVolumeFromReportAsAttached_Delete_AddVolumeNode.
#[test]
fn remove_from_report_delete_then_add_volume_node() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    asw.remove_volume_from_report_as_attached("v", "n").unwrap();
    assert!(asw.get_volumes_to_report_attached()["n"].is_empty());
    asw.delete_volume_node("v", "n");
    asw.add_volume_node("v", Some(&spec("v")), "n", "", true);
    assert_eq!(asw.get_volumes_to_report_attached()["n"].len(), 1);
}

/// Test_SetDetachRequestTime_Positive.
#[test]
fn set_detach_request_time() {
    let mut asw = ActualStateOfWorld::default();
    let t0 = Instant::now();
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    assert_eq!(
        asw.set_detach_request_time("v", "n", t0).unwrap(),
        Duration::ZERO
    );
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        asw.set_detach_request_time("v", "n", t1).unwrap(),
        Duration::from_secs(1)
    );
    assert!(asw.set_detach_request_time("v", "other", t1).is_err());
}

/// Test_GetAttachedVolumesForNode_Positive_NoVolumesOrNodes, _OneVolumeOneNode,
/// _TwoVolumeTwoNodes, _OneVolumeTwoNodes.
#[test]
fn get_attached_volumes_for_node() {
    let mut asw = ActualStateOfWorld::default();
    assert!(asw.get_attached_volumes_for_node("n").is_empty());
    asw.add_volume_node("v1", Some(&spec("v1")), "n1", "p", true);
    asw.add_volume_node("v2", Some(&spec("v2")), "n2", "p", true);
    asw.add_volume_node("v1", Some(&spec("v1")), "n2", "p", true);
    let n1 = asw.get_attached_volumes_for_node("n1");
    assert_eq!(n1.len(), 1);
    verify(&n1, "v1", "n1", true, false);
    let n2 = asw.get_attached_volumes_for_node("n2");
    assert_eq!(n2.len(), 2);
    verify(&n2, "v2", "n2", true, false);
    verify(&n2, "v1", "n2", true, false);
}

/// Test_SetNodeStatusUpdateNeededError, Test_updateNodeStatusUpdateNeeded,
/// Test_updateNodeStatusUpdateNeededError.
#[test]
fn node_status_update_needed() {
    let mut asw = ActualStateOfWorld::default();
    let err = asw.set_node_status_update_needed("n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"n\" is not tracked for status updates"
    );
    asw.add_volume_node("v", Some(&spec("v")), "n", "p", true);
    assert_eq!(asw.status_update_needed("n"), Some(true));
    asw.get_volumes_to_report_attached();
    assert_eq!(asw.status_update_needed("n"), Some(false));
    asw.set_node_status_update_needed("n").unwrap();
    assert_eq!(asw.status_update_needed("n"), Some(true));
}

/// Test_MarkVolumeAsAttached.
#[test]
fn mark_volume_as_attached() {
    let mut asw = ActualStateOfWorld::default();
    asw.mark_volume_as_attached("v", Some(&spec("v")), "n", "p");
    assert_eq!(asw.get_attach_state("v", "n"), AttachState::Attached);
    verify(&asw.get_attached_volumes(), "v", "n", true, false);
}

/// Test_MarkVolumeAsUncertain.
#[test]
fn mark_volume_as_uncertain() {
    let mut asw = ActualStateOfWorld::default();
    asw.mark_volume_as_uncertain("v", Some(&spec("v")), "n");
    assert_eq!(asw.get_attach_state("v", "n"), AttachState::Uncertain);
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 1);
    verify(&all, "v", "n", true, false);
    assert_eq!(all[0].device_path, "");
}

/// Test_GetVolumesToReportAttachedForNode_Positive,
/// Test_GetVolumesToReportAttachedForNode_UnknownNode.
#[test]
fn get_volumes_to_report_attached_for_node() {
    let mut asw = ActualStateOfWorld::default();
    assert_eq!(asw.get_volumes_to_report_attached_for_node("n"), None);
    asw.mark_volume_as_attached("v", Some(&spec("v")), "n", "p");
    let got = asw.get_volumes_to_report_attached_for_node("n").unwrap();
    assert_eq!(
        got,
        vec![AttachedVolumeStatus {
            name: "v".into(),
            device_path: "p".into()
        }]
    );
    assert_eq!(asw.get_volumes_to_report_attached_for_node("n"), None);
}

/// Test_OneVolumeTwoNodes_TwoDevicePaths: the device path is the volume's (the last
/// one written), reported for both nodes.
#[test]
fn one_volume_two_nodes_two_device_paths() {
    let mut asw = ActualStateOfWorld::default();
    asw.add_volume_node("v", Some(&spec("v")), "n1", "p1", true);
    asw.add_volume_node("v", Some(&spec("v")), "n2", "p2", true);
    let all = asw.get_attached_volumes();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|v| v.device_path == "p2"));
}

#[test]
fn multi_attach_is_allowed_as_upstream() {
    let mut s = spec("v");
    assert!(!is_multi_attach_allowed(Some(&s)));
    s.access_modes = vec!["ReadOnlyMany".into()];
    assert!(is_multi_attach_allowed(Some(&s)));
    s.access_modes = vec!["ReadWriteOnce".into(), "ReadWriteMany".into()];
    assert!(is_multi_attach_allowed(Some(&s)));
    s.access_modes = vec![];
    assert!(is_multi_attach_allowed(Some(&s)));
    s.access_modes = vec!["ReadWriteOncePod".into()];
    assert!(!is_multi_attach_allowed(Some(&s)));
    assert!(is_multi_attach_allowed(None));
}
