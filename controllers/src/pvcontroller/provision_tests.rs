//! Ported from upstream's `provision_test.go`: dynamic provisioning (`provisionClaim`,
//! `provisionClaimOperation`, `provisionClaimOperationExternal`, `setClaimProvisioner`,
//! `rescheduleProvisioning`), one table entry per upstream case.
//!
//! | upstream test | ported / upstream cases |
//! |---|---|
//! | TestProvisionSync | 24 / 25 |
//! | TestProvisionMultiSync | 4 / 4 |
//! | TestDisablingDynamicProvisioner | 1 / 1 |
//!
//! Not ported: 11-21 "external provisioner for CSI migration" (a claim of an in-tree
//! provisioner handed to its CSI driver, with `pv.kubernetes.io/migrated-to`): CSI
//! migration is not ported, rekube has no in-tree plugins to migrate. In 12-2 and 12-4 the
//! injected volume appears from the second scheduling of the provisioning on, which is when
//! upstream's condition (the operation's start time recorded in `operationTimestamps`, a
//! metrics cache not ported) becomes true.
use std::collections::BTreeMap;

use rekube_crds::{PersistentVolumeClaim, StorageClass};

use super::pv_controller::*;
use super::testing::*;

const CLASS1_PARAMETERS: &[(&str, &str)] = &[("param1", "value1")];
const CLASS2_PARAMETERS: &[(&str, &str)] = &[("param2", "value2")];

fn parameters(p: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Upstream `storageClasses`.
fn storage_classes() -> Vec<StorageClass> {
    let class = |name, provisioner, params, mode| {
        storage_class(
            name,
            provisioner,
            Some(params),
            Some(RECLAIM_DELETE),
            Some(mode),
        )
    };
    let mut unsupported_mount_options = class(
        CLASS_UNSUPPORTED_MOUNT_OPTIONS,
        MOCK_PLUGIN_NAME,
        CLASS1_PARAMETERS,
        MODE_IMMEDIATE,
    );
    unsupported_mount_options.mount_options = Some(vec!["foo".to_string()]);
    vec![
        class(
            CLASS_GOLD,
            MOCK_PLUGIN_NAME,
            CLASS1_PARAMETERS,
            MODE_IMMEDIATE,
        ),
        class(
            CLASS_SILVER,
            MOCK_PLUGIN_NAME,
            CLASS2_PARAMETERS,
            MODE_IMMEDIATE,
        ),
        class(CLASS_COPPER, MOCK_PLUGIN_NAME, CLASS1_PARAMETERS, MODE_WAIT),
        class(
            CLASS_EXTERNAL,
            "vendor.com/my-volume",
            CLASS1_PARAMETERS,
            MODE_IMMEDIATE,
        ),
        class(
            CLASS_EXTERNAL_WAIT,
            "vendor.com/my-volume-wait",
            CLASS1_PARAMETERS,
            MODE_WAIT,
        ),
        class(
            CLASS_UNKNOWN_INTERNAL,
            "kubernetes.io/unknown",
            CLASS1_PARAMETERS,
            MODE_IMMEDIATE,
        ),
        unsupported_mount_options,
        class(
            CLASS_CSI,
            "mydriver.csi.k8s.io",
            CLASS1_PARAMETERS,
            MODE_IMMEDIATE,
        ),
    ]
}

/// Upstream `provision1Error`: a call for storage class 1, failing.
fn provision1_error() -> ProvisionCall {
    ProvisionCall {
        expected_parameters: parameters(CLASS1_PARAMETERS),
        ret: Some("Mock provisioner error"),
    }
}

/// Upstream `provision1Success`.
fn provision1_success() -> ProvisionCall {
    ProvisionCall {
        expected_parameters: parameters(CLASS1_PARAMETERS),
        ret: None,
    }
}

/// Upstream `provision2Success`.
fn provision2_success() -> ProvisionCall {
    ProvisionCall {
        expected_parameters: parameters(CLASS2_PARAMETERS),
        ret: None,
    }
}

/// Upstream `TestProvisionSync`: single calls to syncClaim, expecting provisioning.
#[tokio::test(start_paused = true)]
async fn test_provision_sync() {
    let tests = vec![
        // Provision a volume (with a default class)
        ControllerTest {
            name: "11-1 - successful provision with storage class 1",
            initial_volumes: vec![],
            expected_volumes: volumes_with_finalizers(
                new_volume_array(
                    "pvc-uid11-1",
                    "1Gi",
                    "uid11-1",
                    "claim11-1",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_GOLD,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED],
                ),
                vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER],
            ),
            initial_claims: new_claim_array(
                "claim11-1",
                "uid11-1",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-1",
                "uid11-1",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec!["Normal ProvisioningSucceeded"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![provision1_success()], test_sync_claim()),
        },
        // Provision failure - plugin not found
        ControllerTest {
            name: "11-2 - plugin not found",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-2",
                "uid11-2",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-2",
                "uid11-2",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_events: vec!["Warning ProvisioningFailed"],
            errors: no_errors(),
            test: test_sync_claim(),
        },
        // Provision failure - newProvisioner returns error
        ControllerTest {
            name: "11-3 - newProvisioner failure",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-3",
                "uid11-3",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-3",
                "uid11-3",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec!["Warning ProvisioningFailed"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
        // Provision failure - Provision returns error
        ControllerTest {
            name: "11-4 - provision failure",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-4",
                "uid11-4",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-4",
                "uid11-4",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec!["Warning ProvisioningFailed"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![provision1_error()], test_sync_claim()),
        },
        // No provisioning if there is a matching volume available
        ControllerTest {
            name: "11-6 - provisioning when there is a volume available",
            initial_volumes: new_volume_array(
                "volume11-6",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_RETAIN,
                CLASS_GOLD,
                &[],
            ),
            expected_volumes: new_volume_array(
                "volume11-6",
                "1Gi",
                "uid11-6",
                "claim11-6",
                VOLUME_BOUND,
                RECLAIM_RETAIN,
                CLASS_GOLD,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            initial_claims: new_claim_array(
                "claim11-6",
                "uid11-6",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-6",
                "uid11-6",
                "1Gi",
                "volume11-6",
                CLAIM_BOUND,
                Some(CLASS_GOLD),
                &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![provision1_success()], test_sync_claim()),
        },
        // Provision success? - claim is bound before provisioner creates
        // a volume.
        ControllerTest {
            name: "11-7 - claim is bound before provisioning",
            initial_volumes: vec![],
            expected_volumes: new_volume_array(
                "pvc-uid11-7",
                "1Gi",
                "uid11-7",
                "claim11-7",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_GOLD,
                &[ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED],
            ),
            initial_claims: new_claim_array(
                "claim11-7",
                "uid11-7",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-7",
                "uid11-7",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_provision_calls(vec![], test_sync_claim()),
                |ctrl| {
                    // Create a volume before provisionClaimOperation starts: a parallel
                    // controller provisioning the volume.
                    ctrl.client().add_volume(new_volume(
                        "pvc-uid11-7",
                        "1Gi",
                        "uid11-7",
                        "claim11-7",
                        VOLUME_BOUND,
                        RECLAIM_DELETE,
                        CLASS_GOLD,
                        &[ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED],
                    ));
                },
            ),
        },
        // Provision success - cannot save provisioned PV once,
        // second retry succeeds
        ControllerTest {
            name: "11-8 - cannot save provisioned volume",
            initial_volumes: vec![],
            expected_volumes: volumes_with_finalizers(
                new_volume_array(
                    "pvc-uid11-8",
                    "1Gi",
                    "uid11-8",
                    "claim11-8",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_GOLD,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED],
                ),
                vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER],
            ),
            initial_claims: new_claim_array(
                "claim11-8",
                "uid11-8",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-8",
                "uid11-8",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec!["Normal ProvisioningSucceeded"],
            errors: vec![reactor_error(
                "create",
                "persistentvolumes",
                "Mock creation error",
            )],
            test: wrap_test_with_provision_calls(vec![provision1_success()], test_sync_claim()),
        },
        // Provision success? - cannot save provisioned PV five times,
        // volume is deleted and delete succeeds
        ControllerTest {
            name: "11-9 - cannot save provisioned volume, delete succeeds",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-9",
                "uid11-9",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-9",
                "uid11-9",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec!["Warning ProvisioningFailed"],
            errors: vec![
                reactor_error("create", "persistentvolumes", "Mock creation error1"),
                reactor_error("create", "persistentvolumes", "Mock creation error2"),
                reactor_error("create", "persistentvolumes", "Mock creation error3"),
                reactor_error("create", "persistentvolumes", "Mock creation error4"),
                reactor_error("create", "persistentvolumes", "Mock creation error5"),
            ],
            test: wrap_test_with_plugin_calls(
                vec![],
                vec![None],
                vec![provision1_success()],
                test_sync_claim(),
            ),
        },
        // Provision failure - cannot save provisioned PV five times,
        // volume delete failed - no plugin found
        ControllerTest {
            name: "11-10 - cannot save provisioned volume, no delete plugin found",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-10",
                "uid11-10",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-10",
                "uid11-10",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec![
                "Warning ProvisioningFailed",
                "Warning ProvisioningCleanupFailed",
            ],
            errors: vec![
                reactor_error("create", "persistentvolumes", "Mock creation error1"),
                reactor_error("create", "persistentvolumes", "Mock creation error2"),
                reactor_error("create", "persistentvolumes", "Mock creation error3"),
                reactor_error("create", "persistentvolumes", "Mock creation error4"),
                reactor_error("create", "persistentvolumes", "Mock creation error5"),
            ],
            test: wrap_test_with_provision_calls(vec![provision1_success()], test_sync_claim()),
        },
        // Provision failure - cannot save provisioned PV five times,
        // volume delete failed - deleter returns error five times
        ControllerTest {
            name: "11-11 - cannot save provisioned volume, deleter fails",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-11",
                "uid11-11",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-11",
                "uid11-11",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec![
                "Warning ProvisioningFailed",
                "Warning ProvisioningCleanupFailed",
            ],
            errors: vec![
                reactor_error("create", "persistentvolumes", "Mock creation error1"),
                reactor_error("create", "persistentvolumes", "Mock creation error2"),
                reactor_error("create", "persistentvolumes", "Mock creation error3"),
                reactor_error("create", "persistentvolumes", "Mock creation error4"),
                reactor_error("create", "persistentvolumes", "Mock creation error5"),
            ],
            test: wrap_test_with_plugin_calls(
                vec![],
                vec![
                    Some("Mock deletion error1"),
                    Some("Mock deletion error2"),
                    Some("Mock deletion error3"),
                    Some("Mock deletion error4"),
                    Some("Mock deletion error5"),
                ],
                vec![provision1_success()],
                test_sync_claim(),
            ),
        },
        // Provision failure - cannot save provisioned PV five times,
        // volume delete succeeds 2nd time
        ControllerTest {
            name: "11-12 - cannot save provisioned volume, delete succeeds 2nd time",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-12",
                "uid11-12",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-12",
                "uid11-12",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec!["Warning ProvisioningFailed"],
            errors: vec![
                reactor_error("create", "persistentvolumes", "Mock creation error1"),
                reactor_error("create", "persistentvolumes", "Mock creation error2"),
                reactor_error("create", "persistentvolumes", "Mock creation error3"),
                reactor_error("create", "persistentvolumes", "Mock creation error4"),
                reactor_error("create", "persistentvolumes", "Mock creation error5"),
            ],
            test: wrap_test_with_plugin_calls(
                vec![],
                vec![Some("Mock deletion error1"), None],
                vec![provision1_success()],
                test_sync_claim(),
            ),
        },
        // Provision a volume (with non-default class)
        ControllerTest {
            name: "11-13 - successful provision with storage class 2",
            initial_volumes: vec![],
            expected_volumes: volumes_with_finalizers(
                new_volume_array(
                    "pvc-uid11-13",
                    "1Gi",
                    "uid11-13",
                    "claim11-13",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_SILVER,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED],
                ),
                vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER],
            ),
            initial_claims: new_claim_array(
                "claim11-13",
                "uid11-13",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_SILVER),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-13",
                "uid11-13",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_SILVER),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec!["Normal ProvisioningSucceeded"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![provision2_success()], test_sync_claim()),
        },
        // Provision error - non existing class
        ControllerTest {
            name: "11-14 - fail due to non-existing class",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-14",
                "uid11-14",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_NON_EXISTING),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-14",
                "uid11-14",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_NON_EXISTING),
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
        // No provisioning with class=""
        ControllerTest {
            name: "11-15 - no provisioning with class=''",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-15",
                "uid11-15",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_EMPTY),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-15",
                "uid11-15",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_EMPTY),
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
        // No provisioning with class=nil
        ControllerTest {
            name: "11-16 - no provisioning with class=nil",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-15",
                "uid11-15",
                "1Gi",
                "",
                CLAIM_PENDING,
                None,
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-15",
                "uid11-15",
                "1Gi",
                "",
                CLAIM_PENDING,
                None,
                &[],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
        // No provisioning + normal event with external provisioner
        ControllerTest {
            name: "11-17 - external provisioner",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-17",
                "uid11-17",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_EXTERNAL),
                &[],
            ),
            expected_claims: claim_with_annotation(
                ANN_BETA_STORAGE_PROVISIONER,
                "vendor.com/my-volume",
                claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "vendor.com/my-volume",
                    new_claim_array(
                        "claim11-17",
                        "uid11-17",
                        "1Gi",
                        "",
                        CLAIM_PENDING,
                        Some(CLASS_EXTERNAL),
                        &[],
                    ),
                ),
            ),
            expected_events: vec!["Normal ExternalProvisioning"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
        // No provisioning + warning event with unknown internal provisioner
        ControllerTest {
            name: "11-18 - unknown internal provisioner",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-18",
                "uid11-18",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_UNKNOWN_INTERNAL),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-18",
                "uid11-18",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_UNKNOWN_INTERNAL),
                &[],
            ),
            expected_events: vec!["Warning ProvisioningFailed"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
        // Provision success - first save of a PV to API server fails (API
        // server has written the object to etcd, but crashed before sending
        // 200 OK response to the controller). Controller retries and the
        // second save of the PV returns "AlreadyExists" because the PV
        // object already is in the API server.
        //
        ControllerTest {
            name: "11-19 - provisioned volume saved but API server crashed",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-19",
                "uid11-19",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-19",
                "uid11-19",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec![],
            errors: vec![
                reactor_error("create", "persistentvolumes", "Mock creation error1"),
                reactor_already_exists("create", "persistentvolumes"),
            ],
            test: wrap_test_with_plugin_calls(
                vec![],
                vec![],
                vec![provision1_success()],
                test_sync_claim(),
            ),
        },
        // No provisioning + warning event with unsupported storageClass.mountOptions
        ControllerTest {
            name: "11-20 - unsupported storageClass.mountOptions",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim11-20",
                "uid11-20",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_UNSUPPORTED_MOUNT_OPTIONS),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-20",
                "uid11-20",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_UNSUPPORTED_MOUNT_OPTIONS),
                &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
            ),
            expected_events: vec!["Warning ProvisioningFailed Mount options"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
        // volume provisioned and available
        // in this case, NO normal event with external provisioner should be issued
        ControllerTest {
            name: "11-22 - external provisioner with volume available",
            initial_volumes: new_volume_array(
                "volume11-22",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_RETAIN,
                CLASS_EXTERNAL,
                &[],
            ),
            expected_volumes: new_volume_array(
                "volume11-22",
                "1Gi",
                "uid11-22",
                "claim11-22",
                VOLUME_BOUND,
                RECLAIM_RETAIN,
                CLASS_EXTERNAL,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            initial_claims: new_claim_array(
                "claim11-22",
                "uid11-22",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_EXTERNAL),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim11-22",
                "uid11-22",
                "1Gi",
                "volume11-22",
                CLAIM_BOUND,
                Some(CLASS_EXTERNAL),
                &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
        // volume provision for PVC scheduled
        ControllerTest {
            name: "11-23 - skip finding PV and provision for PVC annotated with AnnSelectedNode",
            initial_volumes: new_volume_array(
                "volume11-23",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_DELETE,
                CLASS_COPPER,
                &[],
            ),
            expected_volumes: vec![
                new_volume_with_finalizers(
                    "volume11-23",
                    "1Gi",
                    "",
                    "",
                    VOLUME_AVAILABLE,
                    RECLAIM_DELETE,
                    CLASS_COPPER,
                    None,
                    &[],
                ),
                new_volume_with_finalizers(
                    "pvc-uid11-23",
                    "1Gi",
                    "uid11-23",
                    "claim11-23",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_COPPER,
                    vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER],
                    &[ANN_DYNAMICALLY_PROVISIONED, ANN_BOUND_BY_CONTROLLER],
                ),
            ],
            initial_claims: claim_with_annotation(
                ANN_SELECTED_NODE,
                "node1",
                new_claim_array(
                    "claim11-23",
                    "uid11-23",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_COPPER),
                    &[],
                ),
            ),
            expected_claims: claim_with_annotation(
                ANN_SELECTED_NODE,
                "node1",
                new_claim_array(
                    "claim11-23",
                    "uid11-23",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_COPPER),
                    &[ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER],
                ),
            ),
            expected_events: vec!["Normal ProvisioningSucceeded"],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_provision_calls(vec![provision1_success()], test_sync_claim()),
                |ctrl| ctrl.client().add_node(node("node1")),
            ),
        },
        // volume provision for PVC that scheduled
        ControllerTest {
            name: "11-24 - skip finding PV and wait external provisioner for PVC annotated with AnnSelectedNode",
            initial_volumes: new_volume_array(
                "volume11-24",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_DELETE,
                CLASS_EXTERNAL_WAIT,
                &[],
            ),
            expected_volumes: new_volume_array(
                "volume11-24",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_DELETE,
                CLASS_EXTERNAL_WAIT,
                &[],
            ),
            initial_claims: claim_with_annotation(
                ANN_SELECTED_NODE,
                "node1",
                new_claim_array(
                    "claim11-24",
                    "uid11-24",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_EXTERNAL_WAIT),
                    &[],
                ),
            ),
            expected_claims: claim_with_annotation(
                ANN_BETA_STORAGE_PROVISIONER,
                "vendor.com/my-volume-wait",
                claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "vendor.com/my-volume-wait",
                    claim_with_annotation(
                        ANN_SELECTED_NODE,
                        "node1",
                        new_claim_array(
                            "claim11-24",
                            "uid11-24",
                            "1Gi",
                            "",
                            CLAIM_PENDING,
                            Some(CLASS_EXTERNAL_WAIT),
                            &[],
                        ),
                    ),
                ),
            ),
            expected_events: vec!["Normal ExternalProvisioning"],
            errors: no_errors(),
            test: test_sync_claim(),
        },
        // Provision a volume with a data source will fail
        // for in-tree plugins
        ControllerTest {
            name: "11-25 - failed in-tree provision with data source",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: claim_with_data_source(
                "test-snap",
                "VolumeSnapshot",
                "snapshot.storage.k8s.io",
                new_claim_array(
                    "claim11-25",
                    "uid11-25",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_GOLD),
                    &[],
                ),
            ),
            expected_claims: claim_with_data_source(
                "test-snap",
                "VolumeSnapshot",
                "snapshot.storage.k8s.io",
                new_claim_array(
                    "claim11-25",
                    "uid11-25",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_GOLD),
                    &[],
                ),
            ),
            expected_events: vec!["Warning ProvisioningFailed"],
            errors: no_errors(),
            test: test_sync_claim(),
        },
        // Provision a volume with a data source will proceed
        // for CSI plugins
        ControllerTest {
            name: "11-26 - csi with data source",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: claim_with_annotation(
                ANN_STORAGE_PROVISIONER,
                "mydriver.csi.k8s.io",
                claim_with_data_source(
                    "test-snap",
                    "VolumeSnapshot",
                    "snapshot.storage.k8s.io",
                    new_claim_array(
                        "claim11-26",
                        "uid11-26",
                        "1Gi",
                        "",
                        CLAIM_PENDING,
                        Some(CLASS_CSI),
                        &[],
                    ),
                ),
            ),
            expected_claims: claim_with_annotation(
                ANN_STORAGE_PROVISIONER,
                "mydriver.csi.k8s.io",
                claim_with_data_source(
                    "test-snap",
                    "VolumeSnapshot",
                    "snapshot.storage.k8s.io",
                    new_claim_array(
                        "claim11-26",
                        "uid11-26",
                        "1Gi",
                        "",
                        CLAIM_PENDING,
                        Some(CLASS_CSI),
                        &[],
                    ),
                ),
            ),
            expected_events: vec!["Normal ExternalProvisioning"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![], test_sync_claim()),
        },
    ];
    run_sync_tests(tests, &storage_classes(), &[]).await;
}

/// Upstream `TestProvisionMultiSync`: provisioning and binding over repeated syncs.
#[tokio::test(start_paused = true)]
async fn test_provision_multi_sync() {
    let tests = vec![
        // Provision a volume with binding
        ControllerTest {
            name: "12-1 - successful provision",
            initial_volumes: vec![],
            expected_volumes: volumes_with_finalizers(
                new_volume_array(
                    "pvc-uid12-1",
                    "1Gi",
                    "uid12-1",
                    "claim12-1",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_GOLD,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED],
                ),
                vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER],
            ),
            initial_claims: new_claim_array(
                "claim12-1",
                "uid12-1",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_GOLD),
                &[],
            ),
            expected_claims: new_claim_array(
                "claim12-1",
                "uid12-1",
                "1Gi",
                "pvc-uid12-1",
                CLAIM_BOUND,
                Some(CLASS_GOLD),
                &[
                    ANN_BOUND_BY_CONTROLLER,
                    ANN_BIND_COMPLETED,
                    ANN_STORAGE_PROVISIONER,
                    ANN_BETA_STORAGE_PROVISIONER,
                ],
            ),
            expected_events: vec![],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![provision1_success()], test_sync_claim()),
        },
        // provision a volume (external provisioner) and binding + normal event with external provisioner
        ControllerTest {
            name: "12-2 - external provisioner with volume provisioned success",
            initial_volumes: vec![],
            expected_volumes: new_volume_array(
                "pvc-uid12-2",
                "1Gi",
                "uid12-2",
                "claim12-2",
                VOLUME_BOUND,
                RECLAIM_RETAIN,
                CLASS_EXTERNAL,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            initial_claims: new_claim_array(
                "claim12-2",
                "uid12-2",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_EXTERNAL),
                &[],
            ),
            expected_claims: claim_with_annotation(
                ANN_BETA_STORAGE_PROVISIONER,
                "vendor.com/my-volume",
                claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "vendor.com/my-volume",
                    new_claim_array(
                        "claim12-2",
                        "uid12-2",
                        "1Gi",
                        "pvc-uid12-2",
                        CLAIM_BOUND,
                        Some(CLASS_EXTERNAL),
                        &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                    ),
                ),
            ),
            expected_events: vec!["Normal ExternalProvisioning"],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_provision_calls(vec![], test_sync_claim()),
                // Upstream creates the volume once the provisioning operation has recorded
                // its start time (operationTimestamps, not ported): from the second
                // scheduling of the operation on. This simulates an external provisioner
                // creating the volume while the controller waits for one to bind.
                from_second_call(|ctrl| {
                    let volume = new_volume(
                        "pvc-uid12-2",
                        "1Gi",
                        "",
                        "",
                        VOLUME_AVAILABLE,
                        RECLAIM_RETAIN,
                        CLASS_EXTERNAL,
                        &[],
                    );
                    cache_volume(ctrl, volume.clone());
                    ctrl.client().add_volume(volume);
                }),
            ),
        },
        // provision a volume (external provisioner) but binding will not happen + normal event with external provisioner
        ControllerTest {
            name: "12-3 - external provisioner with volume to be provisioned",
            initial_volumes: vec![],
            expected_volumes: vec![],
            initial_claims: new_claim_array(
                "claim12-3",
                "uid12-3",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_EXTERNAL),
                &[],
            ),
            expected_claims: claim_with_annotation(
                ANN_BETA_STORAGE_PROVISIONER,
                "vendor.com/my-volume",
                claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "vendor.com/my-volume",
                    new_claim_array(
                        "claim12-3",
                        "uid12-3",
                        "1Gi",
                        "",
                        CLAIM_PENDING,
                        Some(CLASS_EXTERNAL),
                        &[],
                    ),
                ),
            ),
            expected_events: vec!["Normal ExternalProvisioning"],
            errors: no_errors(),
            test: wrap_test_with_provision_calls(vec![provision1_success()], test_sync_claim()),
        },
        // provision a volume (external provisioner) and binding + normal event with external provisioner
        ControllerTest {
            name: "12-4 - external provisioner with volume provisioned/bound success",
            initial_volumes: vec![],
            expected_volumes: new_volume_array(
                "pvc-uid12-4",
                "1Gi",
                "uid12-4",
                "claim12-4",
                VOLUME_BOUND,
                RECLAIM_RETAIN,
                CLASS_EXTERNAL,
                &[ANN_BOUND_BY_CONTROLLER],
            ),
            initial_claims: new_claim_array(
                "claim12-4",
                "uid12-4",
                "1Gi",
                "",
                CLAIM_PENDING,
                Some(CLASS_EXTERNAL),
                &[],
            ),
            expected_claims: claim_with_annotation(
                ANN_BETA_STORAGE_PROVISIONER,
                "vendor.com/my-volume",
                claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "vendor.com/my-volume",
                    new_claim_array(
                        "claim12-4",
                        "uid12-4",
                        "1Gi",
                        "pvc-uid12-4",
                        CLAIM_BOUND,
                        Some(CLASS_EXTERNAL),
                        &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                    ),
                ),
            ),
            expected_events: vec!["Normal ExternalProvisioning"],
            errors: no_errors(),
            test: wrap_test_with_injected_operation(
                wrap_test_with_provision_calls(vec![], test_sync_claim()),
                // Upstream creates the volume once the provisioning operation has recorded
                // its start time (operationTimestamps, not ported): from the second
                // scheduling of the operation on. This simulates an external provisioner
                // creating the volume while the controller waits for one to bind.
                from_second_call(|ctrl| {
                    let volume = new_volume(
                        "pvc-uid12-4",
                        "1Gi",
                        "uid12-4",
                        "claim12-4",
                        VOLUME_BOUND,
                        RECLAIM_RETAIN,
                        CLASS_EXTERNAL,
                        &[ANN_BOUND_BY_CONTROLLER],
                    );
                    cache_volume(ctrl, volume.clone());
                    ctrl.client().add_volume(volume);
                }),
            ),
        },
    ];
    run_multisync_tests(tests, &storage_classes()).await;
}

/// Upstream `TestDisablingDynamicProvisioner`: with provisioning disabled, provisionClaim
/// does nothing.
#[tokio::test(start_paused = true)]
async fn test_disabling_dynamic_provisioner() {
    let reactor = VolumeReactor::new(no_errors());
    let ctrl = new_test_controller(reactor.clone(), &test_sync_claim(), false);
    let result = ctrl
        .provision_claim(&PersistentVolumeClaim::default())
        .await;
    assert!(result.is_ok(), "expected Ok, got {result:?}");
    ctrl.wait_for_operations().await;
    assert!(reactor.events().is_empty());
}
