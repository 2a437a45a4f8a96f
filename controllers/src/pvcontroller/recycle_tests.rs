//! Ported from upstream's `recycle_test.go`: the Recycle reclaim policy (`reclaimVolume`,
//! `recycleVolumeOperation`, `isVolumeUsed`), one table entry per upstream case.
//!
//! | upstream test | ported / upstream cases |
//! |---|---|
//! | TestRecycleSync | 14 / 14 |
//! | TestRecycleMultiSync | 1 / 1 |
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PodSpec, PodStatus, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rekube_crds::Pod;

use super::pv_controller::*;
use super::testing::*;

/// A pod using the claim through volume "vol1" (upstream's runningPod and its copies).
fn pod(name: &str, claim_name: &str, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(TEST_NAMESPACE.to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "vol1".to_string(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.to_string()),
            ..Default::default()
        }),
    }
}

/// Upstream `TestRecycleSync`: single calls to syncVolume, expecting recycling.
#[tokio::test(start_paused = true)]
async fn test_recycle_sync() {
    let pods = [
        pod("runningPod", "runningClaim", "Running"),
        pod("pendingPod", "pendingClaim", "Pending"),
        pod("completedPod", "completedClaim", "Succeeded"),
    ];
    let tests = vec![
        // recycle volume bound by controller
        ControllerTest {
            name: "6-1 - successful recycle",
            initial_volumes: new_volume_array(
                "volume6-1",
                "1Gi",
                "uid6-1",
                "claim6-1",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            expected_volumes: new_volume_array(
                "volume6-1",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Recycle,
                vec![None],
                test_sync_volume(),
            ),
        },
        // recycle volume bound by user
        ControllerTest {
            name: "6-2 - successful recycle with prebound volume",
            initial_volumes: new_volume_array(
                "volume6-2",
                "1Gi",
                "uid6-2",
                "claim6-2",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: new_volume_array(
                "volume6-2",
                "1Gi",
                "",
                "claim6-2",
                VOLUME_AVAILABLE,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Recycle,
                vec![None],
                test_sync_volume(),
            ),
        },
        // recycle failure - plugin not found
        ControllerTest {
            name: "6-3 - plugin not found",
            initial_volumes: new_volume_array(
                "volume6-3",
                "1Gi",
                "uid6-3",
                "claim6-3",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: with_message(
                "No recycler plugin found for the volume!",
                new_volume_array(
                    "volume6-3",
                    "1Gi",
                    "uid6-3",
                    "claim6-3",
                    VOLUME_FAILED,
                    RECLAIM_RECYCLE,
                    CLASS_EMPTY,
                    &[],
                ),
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeFailedRecycle"],
            errors: no_errors(),
            test: test_sync_volume(),
        },
        // recycle failure - Recycle returns error
        ControllerTest {
            name: "6-4 - newRecycler returns error",
            initial_volumes: new_volume_array(
                "volume6-4",
                "1Gi",
                "uid6-4",
                "claim6-4",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: with_message(
                "Recycle failed: Mock plugin error: no recycleCalls configured",
                new_volume_array(
                    "volume6-4",
                    "1Gi",
                    "uid6-4",
                    "claim6-4",
                    VOLUME_FAILED,
                    RECLAIM_RECYCLE,
                    CLASS_EMPTY,
                    &[],
                ),
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeFailedRecycle"],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(OperationType::Recycle, vec![], test_sync_volume()),
        },
        // recycle failure - recycle returns error
        ControllerTest {
            name: "6-5 - recycle returns error",
            initial_volumes: new_volume_array(
                "volume6-5",
                "1Gi",
                "uid6-5",
                "claim6-5",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: with_message(
                "Recycle failed: Mock recycle error",
                new_volume_array(
                    "volume6-5",
                    "1Gi",
                    "uid6-5",
                    "claim6-5",
                    VOLUME_FAILED,
                    RECLAIM_RECYCLE,
                    CLASS_EMPTY,
                    &[],
                ),
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeFailedRecycle"],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Recycle,
                vec![Some("Mock recycle error")],
                test_sync_volume(),
            ),
        },
        // recycle success(?) - volume is deleted before doRecycle() starts
        ControllerTest {
            name: "6-6 - volume is deleted before recycling",
            initial_volumes: new_volume_array(
                "volume6-6",
                "1Gi",
                "uid6-6",
                "claim6-6",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: vec![],
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_reclaim_calls(OperationType::Recycle, vec![], test_sync_volume()),
                // Delete the volume before the recycle operation starts.
                |ctrl| ctrl.client().delete_volume_by_name("volume6-6"),
            ),
        },
        // recycle success(?) - volume is recycled by previous recycler just
        // at the time new doRecycle() starts. This simulates "volume no
        // longer needs recycling, skipping".
        ControllerTest {
            name: "6-7 - volume is deleted before recycling",
            initial_volumes: new_volume_array(
                "volume6-7",
                "1Gi",
                "uid6-7",
                "claim6-7",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            expected_volumes: new_volume_array(
                "volume6-7",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_reclaim_calls(OperationType::Recycle, vec![], test_sync_volume()),
                // Mark the volume as Available before the recycler starts.
                |ctrl| ctrl.client().mark_volume_available("volume6-7"),
            ),
        },
        // recycle success(?) - volume bound by user is recycled by previous
        // recycler just at the time new doRecycle() starts. This simulates
        // "volume no longer needs recycling, skipping" with volume bound by
        // user.
        ControllerTest {
            name: "6-8 - prebound volume is deleted before recycling",
            initial_volumes: new_volume_array(
                "volume6-8",
                "1Gi",
                "uid6-8",
                "claim6-8",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: new_volume_array(
                "volume6-8",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_reclaim_calls(OperationType::Recycle, vec![], test_sync_volume()),
                // Mark the volume as Available before the recycler starts.
                |ctrl| ctrl.client().mark_volume_available("volume6-8"),
            ),
        },
        // recycle success - volume bound by user is recycled, while a new
        // claim is created with another UID.
        ControllerTest {
            name: "6-9 - prebound volume is recycled while the claim exists",
            initial_volumes: new_volume_array(
                "volume6-9",
                "1Gi",
                "uid6-9",
                "claim6-9",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: new_volume_array(
                "volume6-9",
                "1Gi",
                "",
                "claim6-9",
                VOLUME_AVAILABLE,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            initial_claims: new_claim_array(
                "claim6-9",
                "uid6-9-x",
                "10Gi",
                "",
                CLAIM_PENDING,
                None,
                &[],
            ),
            expected_claims: new_claim_array(
                "claim6-9",
                "uid6-9-x",
                "10Gi",
                "",
                CLAIM_PENDING,
                None,
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Recycle,
                vec![None],
                test_sync_volume(),
            ),
        },
        // volume has unknown reclaim policy - failure expected
        ControllerTest {
            name: "6-10 - unknown reclaim policy",
            initial_volumes: new_volume_array(
                "volume6-10",
                "1Gi",
                "uid6-10",
                "claim6-10",
                VOLUME_BOUND,
                "Unknown",
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: with_message(
                "Volume has unrecognized PersistentVolumeReclaimPolicy",
                new_volume_array(
                    "volume6-10",
                    "1Gi",
                    "uid6-10",
                    "claim6-10",
                    VOLUME_FAILED,
                    "Unknown",
                    CLASS_EMPTY,
                    &[],
                ),
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeUnknownReclaimPolicy"],
            errors: no_errors(),
            test: test_sync_volume(),
        },
        // volume is used by a running pod - failure expected
        ControllerTest {
            name: "6-11 - used by running pod",
            initial_volumes: new_volume_array(
                "volume6-11",
                "1Gi",
                "uid6-11",
                "runningClaim",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            expected_volumes: new_volume_array(
                "volume6-11",
                "1Gi",
                "uid6-11",
                "runningClaim",
                VOLUME_RELEASED,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Normal VolumeFailedRecycle"],
            errors: no_errors(),
            test: test_sync_volume(),
        },
        // volume is used by a pending pod - failure expected
        ControllerTest {
            name: "6-12 - used by pending pod",
            initial_volumes: new_volume_array(
                "volume6-12",
                "1Gi",
                "uid6-12",
                "pendingClaim",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            expected_volumes: new_volume_array(
                "volume6-12",
                "1Gi",
                "uid6-12",
                "pendingClaim",
                VOLUME_RELEASED,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Normal VolumeFailedRecycle"],
            errors: no_errors(),
            test: test_sync_volume(),
        },
        // volume is used by a completed pod - recycle succeeds
        ControllerTest {
            name: "6-13 - used by completed pod",
            initial_volumes: new_volume_array(
                "volume6-13",
                "1Gi",
                "uid6-13",
                "completedClaim",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            expected_volumes: new_volume_array(
                "volume6-13",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Recycle,
                vec![None],
                test_sync_volume(),
            ),
        },
        // volume is used by a completed pod, pod using claim with the same name bound to different pv is running, should recycle
        ControllerTest {
            name: "6-14 - seemingly used by running pod",
            initial_volumes: new_volume_array(
                "volume6-14",
                "1Gi",
                "uid6-14",
                "completedClaim",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            expected_volumes: new_volume_array(
                "volume6-14",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            initial_claims: new_claim_array(
                "completedClaim",
                "uid6-14-x",
                "10Gi",
                "",
                CLAIM_BOUND,
                None,
                &[],
            ),
            expected_claims: new_claim_array(
                "completedClaim",
                "uid6-14-x",
                "10Gi",
                "",
                CLAIM_BOUND,
                None,
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Recycle,
                vec![None],
                test_sync_volume(),
            ),
        },
    ];
    run_sync_tests(tests, &[], &pods).await;
}

/// Upstream `TestRecycleMultiSync`: a failed recycling is retried.
#[tokio::test(start_paused = true)]
async fn test_recycle_multi_sync() {
    let tests = vec![
        // recycle failure - recycle returns error. The controller should
        // try again.
        ControllerTest {
            name: "7-1 - recycle returns error",
            initial_volumes: new_volume_array(
                "volume7-1",
                "1Gi",
                "uid7-1",
                "claim7-1",
                VOLUME_BOUND,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: new_volume_array(
                "volume7-1",
                "1Gi",
                "",
                "claim7-1",
                VOLUME_AVAILABLE,
                RECLAIM_RECYCLE,
                CLASS_EMPTY,
                &[],
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeFailedRecycle"],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Recycle,
                vec![Some("Mock recycle error"), None],
                test_sync_volume(),
            ),
        },
    ];
    run_multisync_tests(tests, &[]).await;
}
