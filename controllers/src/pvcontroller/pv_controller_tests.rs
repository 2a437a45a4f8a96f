//! Ported from upstream's `pv_controller_test.go`.
//!
//! | upstream test | ported / upstream cases |
//! |---|---|
//! | TestControllerSync | 8 / 9 |
//! | TestControllerCache | 5 / 5 (steps) |
//! | TestControllerCacheParsingError | 1 / 1 |
//! | TestModifyDeletionFinalizers | 14 / 15 |
//! | TestRetroactiveStorageClassAssignment | 7 / 7 |
//! | TestAnnealMigrationAnnotations | 0 / 8 |
//!
//! Not ported (CSI migration is not: rekube has no in-tree plugins to migrate): all of
//! `TestAnnealMigrationAnnotations`; 5-9 of `TestControllerSync` (the migrated-to
//! annotation removed when migration is off); 13-7 of `TestModifyDeletionFinalizers`
//! (a migrated volume). `TestControllerSync`'s checks of the metrics cache
//! `operationTimestamps` (5-6, 5-7, 5-8) are not ported either; their objects and events
//! are.
//!
//! `TestControllerSync` runs the controller as its shell does, through
//! `update_volume`/`update_claim`/`delete_volume`/`delete_claim`: the reactor's watch
//! events feed an informer cache and two work queues, as upstream's informers and workers
//! (`syncVolumeByKey`, `syncClaimByKey`), processed in order until idle after each step of
//! the test; then a resync.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rekube_crds::{PersistentVolume, PersistentVolumeClaim, StorageClass};

use super::index::claim_to_claim_key;
use super::pv_controller::*;
use super::testing::*;

// --- TestControllerSync ---

/// A step of a controller test (upstream's test functions): an event of the reactor.
enum Step {
    /// Upstream `reactor.AddClaimEvent`.
    AddClaim(Box<PersistentVolumeClaim>),
    /// Upstream `reactor.DeleteClaimEvent(ctrl.claims.List()[0])`.
    DeleteFirstClaim,
    /// Upstream `reactor.DeleteVolumeEvent(ctrl.volumes.store.List()[0])`.
    DeleteFirstVolume,
}

/// The informers and work queues of the shell, simplified.
#[derive(Default)]
struct Shell {
    volumes: BTreeMap<String, PersistentVolume>,
    claims: BTreeMap<String, PersistentVolumeClaim>,
    volume_queue: VecDeque<String>,
    claim_queue: VecDeque<String>,
}

impl Shell {
    /// Runs watch events and queued keys until nothing is left.
    async fn run_until_idle(&mut self, ctrl: &Arc<TestController>) -> Result<(), String> {
        for _ in 0..1000 {
            ctrl.wait_for_operations().await;
            let (events, enqueued) = {
                let mut state = ctrl.client().lock();
                (
                    std::mem::take(&mut state.watch_events),
                    std::mem::take(&mut state.enqueued_claims),
                )
            };
            self.claim_queue.extend(enqueued);
            if !events.is_empty() {
                for event in events {
                    self.watch_event(event);
                }
                continue;
            }
            if let Some(name) = self.volume_queue.pop_front() {
                // Upstream syncVolumeByKey.
                if let Some(volume) = self.volumes.get(&name).cloned() {
                    // Errors are retried by upstream's rate-limited queue: at the next
                    // event or resync here.
                    let _ = ctrl.update_volume(&volume).await;
                } else if let Some(volume) = ctrl.cached_volume(&name)
                    && let Some(claim) = ctrl.delete_volume(&volume).await
                {
                    self.claim_queue.push_back(claim);
                }
                continue;
            }
            if let Some(key) = self.claim_queue.pop_front() {
                // Upstream syncClaimByKey.
                if let Some(claim) = self.claims.get(&key).cloned() {
                    let _ = ctrl.update_claim(&claim).await;
                } else if let Some(claim) = ctrl.cached_claim(&key)
                    && let Some(volume) = ctrl.delete_claim(&claim).await
                {
                    self.volume_queue.push_back(volume);
                }
                continue;
            }
            return Ok(());
        }
        Err("the controller does not settle".to_string())
    }

    fn watch_event(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Volume(v) => {
                let name = name_of(&v.metadata).to_string();
                self.volumes.insert(name.clone(), *v);
                self.volume_queue.push_back(name);
            }
            WatchEvent::VolumeDeleted(v) => {
                let name = name_of(&v.metadata).to_string();
                self.volumes.remove(&name);
                self.volume_queue.push_back(name);
            }
            WatchEvent::Claim(c) => {
                let key = claim_to_claim_key(&c);
                self.claims.insert(key.clone(), *c);
                self.claim_queue.push_back(key);
            }
            WatchEvent::ClaimDeleted(c) => {
                let key = claim_to_claim_key(&c);
                self.claims.remove(&key);
                self.claim_queue.push_back(key);
            }
        }
    }

    /// Upstream `resync`: every claim, then every volume.
    fn resync(&mut self) {
        self.claim_queue.extend(self.claims.keys().cloned());
        self.volume_queue.extend(self.volumes.keys().cloned());
    }
}

async fn run_controller_sync_tests(
    tests: Vec<(ControllerTest, Vec<Step>)>,
    classes: &[StorageClass],
) {
    let total = tests.len();
    let mut failures: Vec<String> = Vec::new();
    for (test, steps) in tests {
        let reactor = VolumeReactor::new(test.errors.clone());
        reactor.add_storage_classes(classes);
        let ctrl = new_test_controller(reactor.clone(), &test.test, true);
        let mut shell = Shell::default();
        // The informers deliver the initial objects; the controller starts from their
        // lists.
        for claim in &test.initial_claims {
            reactor.add_claim_event(claim);
        }
        for volume in &test.initial_volumes {
            reactor.add_volume(volume.clone());
            reactor
                .lock()
                .watch_events
                .push_back(WatchEvent::Volume(Box::new(volume.clone())));
        }
        ctrl.initialize_caches(test.initial_volumes.clone(), test.initial_claims.clone());
        let mut result = shell.run_until_idle(&ctrl).await;
        for step in steps {
            match step {
                Step::AddClaim(claim) => reactor.add_claim_event(&claim),
                Step::DeleteFirstClaim => {
                    let key = ctrl
                        .claim_keys()
                        .into_iter()
                        .next()
                        .expect("a cached claim");
                    reactor.delete_claim_event(&ctrl.cached_claim(&key).unwrap());
                }
                Step::DeleteFirstVolume => {
                    let name = ctrl
                        .volume_names()
                        .into_iter()
                        .next()
                        .expect("a cached volume");
                    reactor.delete_volume_event(&ctrl.cached_volume(&name).unwrap());
                }
            }
            result = result.and(shell.run_until_idle(&ctrl).await);
        }
        // A periodic resync, in case events arrived in a wrong order.
        shell.resync();
        result = result.and(shell.run_until_idle(&ctrl).await);
        if let Err(e) = result {
            failures.push(format!("Test {:?}: {e}", test.name));
        }
        for f in evaluate_test_results(&reactor, &test) {
            failures.push(format!("Test {:?}: {f}", test.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A test that only watches (upstream's `func(...) error { return nil }`).
fn noop() -> TestCall {
    test_sync_claim()
}

/// Upstream `TestControllerSync`: the controller's event handlers over a simulated
/// apiserver. [Unit test set 5]
#[tokio::test(start_paused = true)]
async fn test_controller_sync() {
    let tests = vec![
        // addClaim gets a new claim. Check it's bound to a volume.
        (
            ControllerTest {
                name: "5-2 - complete bind",
                initial_volumes: new_volume_array(
                    "volume5-2",
                    "1Gi",
                    "",
                    "",
                    VOLUME_AVAILABLE,
                    RECLAIM_RETAIN,
                    CLASS_EMPTY,
                    &[],
                ),
                expected_volumes: new_volume_array(
                    "volume5-2",
                    "1Gi",
                    "uid5-2",
                    "claim5-2",
                    VOLUME_BOUND,
                    RECLAIM_RETAIN,
                    CLASS_EMPTY,
                    &[ANN_BOUND_BY_CONTROLLER],
                ),
                initial_claims: vec![],
                expected_claims: new_claim_array(
                    "claim5-2",
                    "uid5-2",
                    "1Gi",
                    "volume5-2",
                    CLAIM_BOUND,
                    None,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                ),
                expected_events: vec![],
                errors: no_errors(),
                test: noop(),
            },
            vec![Step::AddClaim(Box::new(new_claim(
                "claim5-2",
                "uid5-2",
                "1Gi",
                "",
                CLAIM_PENDING,
                None,
                &[],
            )))],
        ),
        (
            ControllerTest {
                name: "5-2-2 - complete bind when PV and PVC both exist",
                initial_volumes: new_volume_array(
                    "volume5-2",
                    "1Gi",
                    "",
                    "",
                    VOLUME_AVAILABLE,
                    RECLAIM_RETAIN,
                    CLASS_EMPTY,
                    &[],
                ),
                expected_volumes: new_volume_array(
                    "volume5-2",
                    "1Gi",
                    "uid5-2",
                    "claim5-2",
                    VOLUME_BOUND,
                    RECLAIM_RETAIN,
                    CLASS_EMPTY,
                    &[ANN_BOUND_BY_CONTROLLER],
                ),
                initial_claims: new_claim_array(
                    "claim5-2",
                    "uid5-2",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    None,
                    &[],
                ),
                expected_claims: new_claim_array(
                    "claim5-2",
                    "uid5-2",
                    "1Gi",
                    "volume5-2",
                    CLAIM_BOUND,
                    None,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                ),
                expected_events: vec![],
                errors: no_errors(),
                test: noop(),
            },
            vec![],
        ),
        (
            ControllerTest {
                name: "5-2-3 - complete bind when PV and PVC both exist and PV has AnnPreResizeCapacity annotation",
                initial_volumes: volumes_with_annotation(
                    ANN_PRE_RESIZE_CAPACITY,
                    "1Gi",
                    new_volume_array(
                        "volume5-2",
                        "2Gi",
                        "",
                        "",
                        VOLUME_AVAILABLE,
                        RECLAIM_RETAIN,
                        CLASS_EMPTY,
                        &[ANN_BOUND_BY_CONTROLLER],
                    ),
                ),
                expected_volumes: volumes_with_annotation(
                    ANN_PRE_RESIZE_CAPACITY,
                    "1Gi",
                    new_volume_array(
                        "volume5-2",
                        "2Gi",
                        "uid5-2",
                        "claim5-2",
                        VOLUME_BOUND,
                        RECLAIM_RETAIN,
                        CLASS_EMPTY,
                        &[ANN_BOUND_BY_CONTROLLER],
                    ),
                ),
                initial_claims: with_expected_capacity(
                    "2Gi",
                    new_claim_array("claim5-2", "uid5-2", "2Gi", "", CLAIM_PENDING, None, &[]),
                ),
                expected_claims: with_expected_capacity(
                    "1Gi",
                    new_claim_array(
                        "claim5-2",
                        "uid5-2",
                        "2Gi",
                        "volume5-2",
                        CLAIM_BOUND,
                        None,
                        &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                    ),
                ),
                expected_events: vec![],
                errors: no_errors(),
                test: noop(),
            },
            vec![],
        ),
        // deleteClaim with a bound claim makes bound volume released.
        (
            ControllerTest {
                name: "5-3 - delete claim",
                initial_volumes: new_volume_array(
                    "volume5-3",
                    "10Gi",
                    "uid5-3",
                    "claim5-3",
                    VOLUME_BOUND,
                    RECLAIM_RETAIN,
                    CLASS_EMPTY,
                    &[ANN_BOUND_BY_CONTROLLER],
                ),
                expected_volumes: new_volume_array(
                    "volume5-3",
                    "10Gi",
                    "uid5-3",
                    "claim5-3",
                    VOLUME_RELEASED,
                    RECLAIM_RETAIN,
                    CLASS_EMPTY,
                    &[ANN_BOUND_BY_CONTROLLER],
                ),
                initial_claims: new_claim_array(
                    "claim5-3",
                    "uid5-3",
                    "1Gi",
                    "volume5-3",
                    CLAIM_BOUND,
                    None,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                ),
                expected_claims: vec![],
                expected_events: vec![],
                errors: no_errors(),
                test: noop(),
            },
            vec![Step::DeleteFirstClaim],
        ),
        // deleteVolume with a bound volume. Check the claim is Lost.
        (
            ControllerTest {
                name: "5-4 - delete volume",
                initial_volumes: new_volume_array(
                    "volume5-4",
                    "1Gi",
                    "uid5-4",
                    "claim5-4",
                    VOLUME_BOUND,
                    RECLAIM_RETAIN,
                    CLASS_EMPTY,
                    &[],
                ),
                expected_volumes: vec![],
                initial_claims: new_claim_array(
                    "claim5-4",
                    "uid5-4",
                    "1Gi",
                    "volume5-4",
                    CLAIM_BOUND,
                    None,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                ),
                expected_claims: new_claim_array(
                    "claim5-4",
                    "uid5-4",
                    "1Gi",
                    "volume5-4",
                    CLAIM_LOST,
                    None,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                ),
                expected_events: vec!["Warning ClaimLost"],
                errors: no_errors(),
                test: noop(),
            },
            vec![Step::DeleteFirstVolume],
        ),
        // deleteClaim with a bound claim makes bound volume released with external
        // deleter; the volume is then deleted from the apiserver.
        (
            ControllerTest {
                name: "5-5 - delete claim and delete volume report metric",
                initial_volumes: volumes_with_annotation(
                    ANN_DYNAMICALLY_PROVISIONED,
                    "gcr.io/vendor-csi",
                    new_volume_array(
                        "volume5-5",
                        "10Gi",
                        "uid5-5",
                        "claim5-5",
                        VOLUME_BOUND,
                        RECLAIM_DELETE,
                        CLASS_EXTERNAL,
                        &[ANN_BOUND_BY_CONTROLLER],
                    ),
                ),
                expected_volumes: vec![],
                initial_claims: claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "gcr.io/vendor-csi",
                    new_claim_array(
                        "claim5-5",
                        "uid5-5",
                        "1Gi",
                        "volume5-5",
                        CLAIM_BOUND,
                        Some(CLASS_EXTERNAL),
                        &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                    ),
                ),
                expected_claims: vec![],
                expected_events: vec![],
                errors: no_errors(),
                test: noop(),
            },
            vec![Step::DeleteFirstClaim, Step::DeleteFirstVolume],
        ),
        // deleteClaim with a bound claim makes bound volume released with external
        // deleter pending.
        (
            ControllerTest {
                name: "5-6 - delete claim and waiting for external volume deletion",
                initial_volumes: volumes_with_annotation(
                    ANN_DYNAMICALLY_PROVISIONED,
                    "gcr.io/vendor-csi",
                    vec![new_external_provisioned_volume(
                        "volume5-6",
                        "10Gi",
                        "uid5-6",
                        "claim5-6",
                        VOLUME_BOUND,
                        RECLAIM_DELETE,
                        CLASS_EXTERNAL,
                        "fake.driver.csi",
                        None,
                        &[ANN_BOUND_BY_CONTROLLER],
                    )],
                ),
                expected_volumes: volumes_with_annotation(
                    ANN_DYNAMICALLY_PROVISIONED,
                    "gcr.io/vendor-csi",
                    vec![new_external_provisioned_volume(
                        "volume5-6",
                        "10Gi",
                        "uid5-6",
                        "claim5-6",
                        VOLUME_RELEASED,
                        RECLAIM_DELETE,
                        CLASS_EXTERNAL,
                        "fake.driver.csi",
                        None,
                        &[ANN_BOUND_BY_CONTROLLER],
                    )],
                ),
                initial_claims: claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "gcr.io/vendor-csi",
                    new_claim_array(
                        "claim5-6",
                        "uid5-6",
                        "1Gi",
                        "volume5-6",
                        CLAIM_BOUND,
                        Some(CLASS_EXTERNAL),
                        &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                    ),
                ),
                expected_claims: vec![],
                expected_events: vec![],
                errors: no_errors(),
                test: noop(),
            },
            vec![Step::DeleteFirstClaim],
        ),
        // deleteVolume event issued before deleteClaim.
        (
            ControllerTest {
                name: "5-7 - delete volume event makes claim lost, delete claim event will not report metric",
                initial_volumes: new_volume_array(
                    "volume5-7",
                    "10Gi",
                    "uid5-7",
                    "claim5-7",
                    VOLUME_BOUND,
                    RECLAIM_DELETE,
                    CLASS_EXTERNAL,
                    &[ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED],
                ),
                expected_volumes: vec![],
                initial_claims: claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "gcr.io/vendor-csi",
                    new_claim_array(
                        "claim5-7",
                        "uid5-7",
                        "1Gi",
                        "volume5-7",
                        CLAIM_BOUND,
                        Some(CLASS_EXTERNAL),
                        &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                    ),
                ),
                expected_claims: vec![],
                expected_events: vec!["Warning ClaimLost"],
                errors: no_errors(),
                test: noop(),
            },
            vec![Step::DeleteFirstVolume, Step::DeleteFirstClaim],
        ),
        // Deleting a claim waiting for its provisioning.
        (
            ControllerTest {
                name: "5-8 - delete claim cleans up operation timestamp cache for provision",
                initial_volumes: vec![],
                expected_volumes: vec![],
                initial_claims: claim_with_annotation(
                    ANN_STORAGE_PROVISIONER,
                    "gcr.io/vendor-csi",
                    new_claim_array(
                        "claim5-8",
                        "uid5-8",
                        "1Gi",
                        "",
                        CLAIM_PENDING,
                        Some(CLASS_EXTERNAL),
                        &[],
                    ),
                ),
                expected_claims: vec![],
                expected_events: vec!["Normal ExternalProvisioning"],
                errors: no_errors(),
                test: noop(),
            },
            vec![Step::DeleteFirstClaim],
        ),
    ];
    let mut external = storage_class(
        CLASS_EXTERNAL,
        NOT_SUPPORTED_PROVISIONER,
        None,
        None,
        Some(MODE_IMMEDIATE),
    );
    external.provisioner = "gcr.io/vendor-csi".to_string();
    run_controller_sync_tests(tests, &[external]).await;
}

// --- TestControllerCache, TestControllerCacheParsingError ---

/// Upstream `storeVersion`: stores a volume of this version, checks what was stored.
fn store_version(ctrl: &TestController, prefix: &str, version: &str, expected_return: bool) {
    let mut pv = new_volume(
        "pvName",
        "1Gi",
        "",
        "",
        VOLUME_AVAILABLE,
        RECLAIM_DELETE,
        CLASS_EMPTY,
        &[],
    );
    pv.metadata.resource_version = Some(version.to_string());
    let ret = ctrl
        .store_volume_update(&pv)
        .unwrap_or_else(|e| panic!("{prefix}: expected storeObjectUpdate to succeed, got: {e}"));
    assert_eq!(ret, expected_return, "{prefix}: storeObjectUpdate's return");
    let stored = ctrl
        .cached_volume("pvName")
        .unwrap_or_else(|| panic!("{prefix}: expected volume 'pvName' in the cache"));
    let stored_version = stored
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or_default();
    if ret {
        assert_eq!(stored_version, version, "{prefix}: the cached version");
    } else {
        assert_ne!(stored_version, version, "{prefix}: the cached version");
    }
}

fn cache_test_controller() -> Arc<TestController> {
    new_test_controller(VolumeReactor::new(no_errors()), &test_sync_volume(), true)
}

/// Upstream `TestControllerCache`: storeObjectUpdate.
#[test]
fn test_controller_cache() {
    let ctrl = cache_test_controller();
    // Store new PV
    store_version(&ctrl, "Step1", "1", true);
    // Store the same PV
    store_version(&ctrl, "Step2", "1", true);
    // Store newer PV
    store_version(&ctrl, "Step3", "2", true);
    // Store older PV - simulating old "PV updated" event or periodic sync with old data
    store_version(&ctrl, "Step4", "1", false);
    // Store newer PV - test integer parsing ("2" > "10" as string, while 2 < 10 as
    // integers)
    store_version(&ctrl, "Step5", "10", true);
}

/// Upstream `TestControllerCacheParsingError`.
#[test]
fn test_controller_cache_parsing_error() {
    let ctrl = cache_test_controller();
    // There must be something in the cache to compare with
    store_version(&ctrl, "Step1", "1", true);
    let mut pv = new_volume(
        "pvName",
        "1Gi",
        "",
        "",
        VOLUME_AVAILABLE,
        RECLAIM_DELETE,
        CLASS_EMPTY,
        &[],
    );
    pv.metadata.resource_version = Some("xxx".to_string());
    assert!(
        ctrl.store_volume_update(&pv).is_err(),
        "expected parsing error, got nil instead"
    );
}

// --- TestModifyDeletionFinalizers ---

/// Upstream `TestModifyDeletionFinalizers`, CSI migration off (13-7, the migrated case,
/// is not ported).
#[test]
fn test_modify_deletion_finalizers() {
    const NONMIGRATED_DRIVER: &str = "rbd.csi.ceph.com";
    const CUSTOM_FINALIZER: &str = "test.volume.kubernetes.io/finalizer";
    let bound = [ANN_DYNAMICALLY_PROVISIONED, ANN_BOUND_BY_CONTROLLER];
    let with = |name, policy, finalizers: Option<Vec<&str>>, annotations: &[&str]| {
        new_volume_with_finalizers(
            name,
            "1Gi",
            "uid11-23",
            "claim11-23",
            VOLUME_BOUND,
            policy,
            CLASS_COPPER,
            finalizers,
            annotations,
        )
    };
    let tests: Vec<(&str, PersistentVolume, Option<Vec<&str>>, bool)> = vec![
        // A CSI volume provisioned through the external provisioner.
        (
            "13-1 migration was never enabled, volume has the finalizer",
            new_external_provisioned_volume(
                "volume-13-1",
                "1Gi",
                "uid11-23",
                "claim11-23",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_COPPER,
                NONMIGRATED_DRIVER,
                vec![PV_DELETION_PROTECTION_FINALIZER],
                &bound,
            ),
            Some(vec![PV_DELETION_PROTECTION_FINALIZER]),
            false,
        ),
        // The external provisioner has not added its finalizer yet.
        (
            "13-2 migration was never enabled, volume does not have the finalizer",
            new_external_provisioned_volume(
                "volume-13-2",
                "1Gi",
                "uid11-23",
                "claim11-23",
                VOLUME_BOUND,
                RECLAIM_DELETE,
                CLASS_COPPER,
                NONMIGRATED_DRIVER,
                None,
                &bound,
            ),
            None,
            false,
        ),
        (
            "13-3 migration was disabled, volume has existing custom finalizer, does not have in-tree pv deletion protection finalizer",
            with(
                "volume-13-3",
                RECLAIM_DELETE,
                Some(vec![CUSTOM_FINALIZER]),
                &bound,
            ),
            Some(vec![
                CUSTOM_FINALIZER,
                PV_DELETION_IN_TREE_PROTECTION_FINALIZER,
            ]),
            true,
        ),
        (
            "13-4 migration was disabled, volume has no finalizers",
            with("volume-13-4", RECLAIM_DELETE, None, &bound),
            Some(vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER]),
            true,
        ),
        // Roll back: the external provisioner's finalizer goes, the in-tree one comes.
        (
            "13-5 migration was disabled, volume has external PV deletion finalizer",
            with(
                "volume-13-5",
                RECLAIM_DELETE,
                Some(vec![PV_DELETION_PROTECTION_FINALIZER]),
                &bound,
            ),
            Some(vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER]),
            true,
        ),
        (
            "13-6 migration was disabled, volume has multiple finalizers",
            with(
                "volume-13-6",
                RECLAIM_DELETE,
                Some(vec![PV_DELETION_PROTECTION_FINALIZER, CUSTOM_FINALIZER]),
                &bound,
            ),
            Some(vec![
                CUSTOM_FINALIZER,
                PV_DELETION_IN_TREE_PROTECTION_FINALIZER,
            ]),
            true,
        ),
        (
            "13-8 migration is enabled but plugin migration feature is disabled, volume has the external PV deletion protection finalizer",
            with(
                "volume-13-8",
                RECLAIM_DELETE,
                Some(vec![PV_DELETION_PROTECTION_FINALIZER]),
                &bound,
            ),
            Some(vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER]),
            true,
        ),
        (
            "13-9 migration is enabled but plugin migration feature is disabled, volume has multiple finalizers including external PV deletion protection finalizer",
            with(
                "volume-13-9",
                RECLAIM_DELETE,
                Some(vec![PV_DELETION_PROTECTION_FINALIZER, CUSTOM_FINALIZER]),
                &bound,
            ),
            Some(vec![
                CUSTOM_FINALIZER,
                PV_DELETION_IN_TREE_PROTECTION_FINALIZER,
            ]),
            true,
        ),
        (
            "13-10 missing annotations but finalizers exist",
            with(
                "volume-13-10",
                RECLAIM_DELETE,
                Some(vec![PV_DELETION_PROTECTION_FINALIZER]),
                &[],
            ),
            Some(vec![PV_DELETION_PROTECTION_FINALIZER]),
            false,
        ),
        (
            "13-11 missing annotations and finalizers",
            with("volume-13-11", RECLAIM_DELETE, None, &[]),
            None,
            false,
        ),
        (
            "13-12 migration is disabled, volume has no finalizers, reclaimPolicy is Retain",
            with("volume-13-12", RECLAIM_RETAIN, None, &bound),
            None,
            false,
        ),
        (
            "13-13 migration is disabled, volume has no finalizers, reclaimPolicy is Recycle",
            with("volume-13-13", RECLAIM_RECYCLE, None, &bound),
            None,
            false,
        ),
        (
            "13-14 migration is disabled, volume has in-tree pv deletion finalizers, reclaimPolicy is Retain",
            with(
                "volume-13-14",
                RECLAIM_RETAIN,
                Some(vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER]),
                &bound,
            ),
            None,
            true,
        ),
        // Statically provisioned volumes do not get the in-tree finalizer.
        (
            "13-15 migration is disabled, statically provisioned PV",
            new_volume_with_finalizers(
                "volume-13-14",
                "1Gi",
                "",
                "",
                VOLUME_AVAILABLE,
                RECLAIM_DELETE,
                CLASS_COPPER,
                None,
                &[],
            ),
            None,
            false,
        ),
    ];
    for (name, volume, expected_finalizers, expected_modified) in tests {
        let (finalizers, modified) = modify_deletion_finalizers(&volume);
        assert_eq!(modified, expected_modified, "{name}: modified");
        let expected =
            expected_finalizers.map(|f| f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(finalizers, expected, "{name}: finalizers");
    }
}

// --- TestRetroactiveStorageClassAssignment ---

/// Upstream `makeStorageClass`.
fn make_storage_class(name: &str, mode: &str) -> StorageClass {
    storage_class(name, NOT_SUPPORTED_PROVISIONER, None, None, Some(mode))
}

/// Upstream `makeDefaultStorageClass`.
fn make_default_storage_class(name: &str, mode: &str) -> StorageClass {
    let mut class = make_storage_class(name, mode);
    class.metadata.annotations = Some(BTreeMap::from([(
        IS_DEFAULT_STORAGE_CLASS_ANNOTATION.to_string(),
        "true".to_string(),
    )]));
    class
}

/// Upstream `TestRetroactiveStorageClassAssignment`: the default class given to claims
/// without one. [Unit test set 15]
#[tokio::test(start_paused = true)]
async fn test_retroactive_storage_class_assignment() {
    let sync_claim = |name, initial_claims, expected_claims| ControllerTest {
        name,
        initial_volumes: vec![],
        expected_volumes: vec![],
        initial_claims,
        expected_claims,
        expected_events: vec![],
        errors: no_errors(),
        test: test_sync_claim(),
    };
    let gold_default_silver = || {
        vec![
            make_default_storage_class(CLASS_GOLD, MODE_IMMEDIATE),
            make_storage_class(CLASS_SILVER, MODE_IMMEDIATE),
        ]
    };
    let gold_default_copper = || {
        vec![
            make_default_storage_class(CLASS_GOLD, MODE_IMMEDIATE),
            make_storage_class(CLASS_COPPER, MODE_IMMEDIATE),
        ]
    };
    let tests: Vec<(Vec<StorageClass>, ControllerTest)> = vec![
        (
            vec![],
            sync_claim(
                "15-1 - pvc storage class is not assigned retroactively if there are no default storage classes",
                new_claim_array("claim15-1", "uid15-1", "1Gi", "", CLAIM_PENDING, None, &[]),
                new_claim_array("claim15-1", "uid15-1", "1Gi", "", CLAIM_PENDING, None, &[]),
            ),
        ),
        (
            gold_default_silver(),
            sync_claim(
                "15-3 - pvc storage class is not assigned retroactively if claim is already bound",
                new_claim_array(
                    "claim15-3",
                    "uid15-3",
                    "1Gi",
                    "test",
                    CLAIM_BOUND,
                    Some(CLASS_COPPER),
                    &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                ),
                new_claim_array(
                    "claim15-3",
                    "uid15-3",
                    "1Gi",
                    "test",
                    CLAIM_LOST,
                    Some(CLASS_COPPER),
                    &[ANN_BOUND_BY_CONTROLLER, ANN_BIND_COMPLETED],
                ),
            ),
        ),
        (
            gold_default_silver(),
            sync_claim(
                "15-4 - pvc storage class is not assigned retroactively if claim is already bound but annotations are missing",
                new_claim_array(
                    "claim15-4",
                    "uid15-4",
                    "1Gi",
                    "test",
                    CLAIM_BOUND,
                    Some(CLASS_COPPER),
                    &[],
                ),
                new_claim_array(
                    "claim15-4",
                    "uid15-4",
                    "1Gi",
                    "test",
                    CLAIM_PENDING,
                    Some(CLASS_COPPER),
                    &[],
                ),
            ),
        ),
        (
            gold_default_silver(),
            sync_claim(
                "15-5 - pvc storage class is assigned retroactively if there is a default",
                new_claim_array("claim15-5", "uid15-5", "1Gi", "", CLAIM_PENDING, None, &[]),
                new_claim_array(
                    "claim15-5",
                    "uid15-5",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_GOLD),
                    &[],
                ),
            ),
        ),
        (
            vec![
                make_default_storage_class(CLASS_GOLD, MODE_IMMEDIATE),
                make_default_storage_class(CLASS_SILVER, MODE_IMMEDIATE),
            ],
            sync_claim(
                "15-2 - pvc storage class is assigned retroactively if there are multiple default storage classes",
                new_claim_array("claim15-2", "uid15-2", "1Gi", "", CLAIM_PENDING, None, &[]),
                new_claim_array(
                    "claim15-2",
                    "uid15-2",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_GOLD),
                    &[],
                ),
            ),
        ),
        (
            gold_default_copper(),
            sync_claim(
                "15-6 - pvc storage class is not changed if claim is not bound but already has a storage class",
                new_claim_array(
                    "claim15-6",
                    "uid15-6",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_COPPER),
                    &[],
                ),
                new_claim_array(
                    "claim15-6",
                    "uid15-6",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    Some(CLASS_COPPER),
                    &[],
                ),
            ),
        ),
        (
            gold_default_copper(),
            sync_claim(
                "15-7 - pvc storage class is not changed if claim is not bound but already set annotation \"volume.beta.kubernetes.io/storage-class\"",
                new_claim_array(
                    "claim15-7",
                    "uid15-7",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    None,
                    &[BETA_STORAGE_CLASS_ANNOTATION],
                ),
                new_claim_array(
                    "claim15-7",
                    "uid15-7",
                    "1Gi",
                    "",
                    CLAIM_PENDING,
                    None,
                    &[BETA_STORAGE_CLASS_ANNOTATION],
                ),
            ),
        ),
    ];
    for (classes, test) in tests {
        run_sync_tests(vec![test], &classes, &[]).await;
    }
}
