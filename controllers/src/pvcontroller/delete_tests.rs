//! Ported from upstream's `delete_test.go`: the Delete reclaim policy (`reclaimVolume`,
//! `deleteVolumeOperation`, `doDeleteVolume`), one table entry per upstream case.
//!
//! | upstream test | ported / upstream cases |
//! |---|---|
//! | TestDeleteSync | 13 / 14 |
//! | TestDeleteMultiSync | 1 / 1 |
//!
//! Not ported: 8-10-3 "external deleter when volume is migrated" (a volume annotated
//! `pv.kubernetes.io/migrated-to` is left to the CSI driver): CSI migration is not ported,
//! rekube has no in-tree plugins to migrate.
use super::pv_controller::*;
use super::testing::*;

const GCE_DRIVER: &str = "pd.csi.storage.gke.io";

/// Upstream `TestDeleteSync`: single calls to syncVolume, expecting deletions.
#[tokio::test(start_paused = true)]
async fn test_delete_sync() {
    let tests = vec![
        // delete volume bound by controller
        ControllerTest {
            name: "8-1 - successful delete",
            initial_volumes: new_volume_array(
                "volume8-1",
                "1Gi",
                "uid8-1",
                "claim8-1",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            expected_volumes: vec![],
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Delete,
                vec![None],
                test_sync_volume(),
            ),
        },
        // delete volume bound by user
        ControllerTest {
            name: "8-2 - successful delete with prebound volume",
            initial_volumes: new_volume_array(
                "volume8-2",
                "1Gi",
                "uid8-2",
                "claim8-2",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: vec![],
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Delete,
                vec![None],
                test_sync_volume(),
            ),
        },
        // delete failure - plugin not found
        ControllerTest {
            name: "8-3 - plugin not found",
            initial_volumes: new_volume_array(
                "volume8-3",
                "1Gi",
                "uid8-3",
                "claim8-3",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: with_message(
                "error getting deleter volume plugin for volume \"volume8-3\": no volume plugin matched",
                new_volume_array(
                    "volume8-3",
                    "1Gi",
                    "uid8-3",
                    "claim8-3",
                    VOLUME_FAILED,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    &[],
                ),
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeFailedDelete"],
            errors: no_errors(),
            test: test_sync_volume(),
        },
        // delete failure - newDeleter returns error
        ControllerTest {
            name: "8-4 - newDeleter returns error",
            initial_volumes: new_volume_array(
                "volume8-4",
                "1Gi",
                "uid8-4",
                "claim8-4",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: with_message(
                "failed to create deleter for volume \"volume8-4\": Mock plugin error: no deleteCalls configured",
                new_volume_array(
                    "volume8-4",
                    "1Gi",
                    "uid8-4",
                    "claim8-4",
                    VOLUME_FAILED,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    &[],
                ),
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeFailedDelete"],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(OperationType::Delete, vec![], test_sync_volume()),
        },
        // delete failure - delete() returns error
        ControllerTest {
            name: "8-5 - delete returns error",
            initial_volumes: new_volume_array(
                "volume8-5",
                "1Gi",
                "uid8-5",
                "claim8-5",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: with_message(
                "Mock delete error",
                new_volume_array(
                    "volume8-5",
                    "1Gi",
                    "uid8-5",
                    "claim8-5",
                    VOLUME_FAILED,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    &[],
                ),
            ),
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeFailedDelete"],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Delete,
                vec![Some("Mock delete error")],
                test_sync_volume(),
            ),
        },
        // delete success(?) - volume is deleted before doDelete() starts
        ControllerTest {
            name: "8-6 - volume is deleted before deleting",
            initial_volumes: new_volume_array(
                "volume8-6",
                "1Gi",
                "uid8-6",
                "claim8-6",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: vec![],
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_reclaim_calls(OperationType::Delete, vec![], test_sync_volume()),
                // Delete the volume before the delete operation starts.
                |ctrl| ctrl.client().delete_volume_by_name("volume8-6"),
            ),
        },
        // delete success(?) - volume is bound just at the time doDelete()
        // starts. This simulates "volume no longer needs recycling,
        // skipping".
        ControllerTest {
            name: "8-7 - volume is bound before deleting",
            initial_volumes: new_volume_array(
                "volume8-7",
                "1Gi",
                "uid8-7",
                "claim8-7",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            expected_volumes: new_volume_array(
                "volume8-7",
                "1Gi",
                "uid8-7",
                "claim8-7",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            initial_claims: vec![],
            expected_claims: new_claim_array(
                "claim8-7",
                "uid8-7",
                "10Gi",
                "volume8-7",
                CLAIM_BOUND,
                None,
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_reclaim_calls(OperationType::Delete, vec![], test_sync_volume()),
                |ctrl| {
                    // Bind the volume to a resurrected claim (this should never happen).
                    let claim = new_claim(
                        "claim8-7",
                        "uid8-7",
                        "10Gi",
                        "volume8-7",
                        CLAIM_BOUND,
                        None,
                        &[],
                    );
                    ctrl.client().add_claim_bound_to_volume(claim.clone());
                    cache_claim(ctrl, claim);
                },
            ),
        },
        // delete success - volume bound by user is deleted, while a new
        // claim is created with another UID.
        ControllerTest {
            name: "8-9 - prebound volume is deleted while the claim exists",
            initial_volumes: new_volume_array(
                "volume8-9",
                "1Gi",
                "uid8-9",
                "claim8-9",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[],
            ),
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim8-9",
                "uid8-9-x",
                "10Gi",
                "",
                CLAIM_PENDING,
                None,
                &[],
            ),
            expected_claims: new_claim_array(
                "claim8-9",
                "uid8-9-x",
                "10Gi",
                "",
                CLAIM_PENDING,
                None,
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Delete,
                vec![None],
                test_sync_volume(),
            ),
        },
        // PV requires external deleter
        ControllerTest {
            name: "8-10-1 - external deleter when volume is dynamic provisioning",
            // The external deleter annotation injected by upstream's test function.
            initial_volumes: vec![volume_with_annotation(
                ANN_DYNAMICALLY_PROVISIONED,
                "external.io/test",
                new_external_provisioned_volume(
                    "volume8-10-1",
                    "1Gi",
                    "uid10-1-1",
                    "claim10-1-1",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    GCE_DRIVER,
                    None,
                    &[ANN_BOUND_BY_CONTROLLER],
                ),
            )],
            expected_volumes: vec![volume_with_annotation(
                ANN_DYNAMICALLY_PROVISIONED,
                "external.io/test",
                new_external_provisioned_volume(
                    "volume8-10-1",
                    "1Gi",
                    "uid10-1-1",
                    "claim10-1-1",
                    VOLUME_RELEASED,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    GCE_DRIVER,
                    None,
                    &[ANN_BOUND_BY_CONTROLLER],
                ),
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: test_sync_volume(),
        },
        // PV requires external deleter
        ControllerTest {
            name: "8-10-2 - external deleter when volume is static provisioning",
            initial_volumes: vec![new_external_provisioned_volume(
                "volume8-10-2",
                "1Gi",
                "uid10-1-2",
                "claim10-1-2",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                GCE_DRIVER,
                None,
                &[ANN_BOUND_BY_CONTROLLER],
            )],
            expected_volumes: vec![new_external_provisioned_volume(
                "volume8-10-2",
                "1Gi",
                "uid10-1-2",
                "claim10-1-2",
                VOLUME_RELEASED,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                GCE_DRIVER,
                None,
                &[ANN_BOUND_BY_CONTROLLER],
            )],
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: test_sync_volume(),
        },
        // delete success - two PVs are provisioned for a single claim.
        // One of the PVs is deleted.
        ControllerTest {
            name: "8-11 - two PVs provisioned for a single claim",
            initial_volumes: vec![
                new_volume(
                    "volume8-11-1",
                    "1Gi",
                    "uid8-11",
                    "claim8-11",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    &[ANN_DYNAMICALLY_PROVISIONED],
                ),
                new_volume(
                    "volume8-11-2",
                    "1Gi",
                    "uid8-11",
                    "claim8-11",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    &[ANN_DYNAMICALLY_PROVISIONED],
                ),
            ],
            expected_volumes: vec![new_volume(
                "volume8-11-2",
                "1Gi",
                "uid8-11",
                "claim8-11",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_EMPTY,
                &[ANN_DYNAMICALLY_PROVISIONED],
            )],
            initial_claims: new_claim_array(
                "claim8-11",
                "uid8-11",
                "10Gi",
                "volume8-11-2",
                CLAIM_BOUND,
                None,
                &[],
            ),
            expected_claims: new_claim_array(
                "claim8-11",
                "uid8-11",
                "10Gi",
                "volume8-11-2",
                CLAIM_BOUND,
                None,
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Delete,
                vec![None],
                test_sync_volume(),
            ),
        },
        // delete success - two PVs are externally provisioned for a single
        // claim. One of the PVs is marked as Released to be deleted by the
        // external provisioner.
        ControllerTest {
            name: "8-12 - two PVs externally provisioned for a single claim",
            // The external deleter annotation injected on the first volume by upstream's test
            // function.
            initial_volumes: vec![
                volume_with_annotation(
                    ANN_DYNAMICALLY_PROVISIONED,
                    "external.io/test",
                    new_external_provisioned_volume(
                        "volume8-12-1",
                        "1Gi",
                        "uid8-12",
                        "claim8-12",
                        VOLUME_BOUND,
                        RECLAIM_DELETE,
                        CLASS_EMPTY,
                        GCE_DRIVER,
                        None,
                        &[ANN_DYNAMICALLY_PROVISIONED],
                    ),
                ),
                new_external_provisioned_volume(
                    "volume8-12-2",
                    "1Gi",
                    "uid8-12",
                    "claim8-12",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    GCE_DRIVER,
                    None,
                    &[ANN_DYNAMICALLY_PROVISIONED],
                ),
            ],
            expected_volumes: vec![
                volume_with_annotation(
                    ANN_DYNAMICALLY_PROVISIONED,
                    "external.io/test",
                    new_external_provisioned_volume(
                        "volume8-12-1",
                        "1Gi",
                        "uid8-12",
                        "claim8-12",
                        VOLUME_RELEASED,
                        RECLAIM_DELETE,
                        CLASS_EMPTY,
                        GCE_DRIVER,
                        None,
                        &[ANN_DYNAMICALLY_PROVISIONED],
                    ),
                ),
                new_external_provisioned_volume(
                    "volume8-12-2",
                    "1Gi",
                    "uid8-12",
                    "claim8-12",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    GCE_DRIVER,
                    None,
                    &[ANN_DYNAMICALLY_PROVISIONED],
                ),
            ],
            initial_claims: new_claim_array(
                "claim8-12",
                "uid8-12",
                "10Gi",
                "volume8-12-2",
                CLAIM_BOUND,
                None,
                &[],
            ),
            expected_claims: new_claim_array(
                "claim8-12",
                "uid8-12",
                "10Gi",
                "volume8-12-2",
                CLAIM_BOUND,
                None,
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: test_sync_volume(),
        },
        // delete success - volume has deletion timestamp before doDelete() starts
        ControllerTest {
            name: "8-13 - volume has deletion timestamp and processed",
            initial_volumes: volumes_with_finalizers(
                with_volume_deletion_timestamp(new_volume_array(
                    "volume8-13",
                    "1Gi",
                    "uid8-13",
                    "claim8-13",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    &[ANN_BOUND_BY_CONTROLLER],
                )),
                vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER],
            ),
            expected_volumes: vec![],
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Delete,
                vec![None],
                test_sync_volume(),
            ),
        },
    ];
    run_sync_tests(tests, &[], &[]).await;
}

/// Upstream `TestDeleteMultiSync`: a failed deletion is retried.
#[tokio::test(start_paused = true)]
async fn test_delete_multi_sync() {
    let tests = vec![
        // delete failure - delete returns error. The controller should
        // try again.
        ControllerTest {
            name: "9-1 - delete returns error",
            initial_volumes: volumes_with_finalizers(
                new_volume_array(
                    "volume9-1",
                    "1Gi",
                    "uid9-1",
                    "claim9-1",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_EMPTY,
                    &[],
                ),
                vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER],
            ),
            expected_volumes: vec![],
            initial_claims: vec![],
            expected_claims: vec![],
            expected_events: vec!["Warning VolumeFailedDelete"],
            errors: no_errors(),
            test: wrap_test_with_reclaim_calls(
                OperationType::Delete,
                vec![Some("Mock delete error"), None],
                test_sync_volume(),
            ),
        },
    ];
    run_multisync_tests(tests, &[]).await;
}
