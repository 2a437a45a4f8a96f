//! The PersistentVolume controller's pure decision core (upstream:
//! `pkg/controller/volume/persistentvolume`), first piece: the volume index and the matching
//! of a claim to a volume.
//!
//! - [`index`]: `persistentVolumeOrderedIndex` (`index.go`): volumes grouped by their
//!   access-mode set, `findBestMatchForClaim` over the sets containing the claim's modes,
//!   fewest modes first; `FindMatchingVolume`, `CheckNodeAffinity`,
//!   `CheckVolumeModeMismatches`, `CheckAccessModes`, `IsVolumeBoundToClaim`
//!   (`k8s.io/component-helpers/storage/volume/pv_helpers.go`, `helpers.go`);
//!   `checkVolumeSatisfyClaim` (`pv_controller.go`); the access-mode string helpers
//!   (`pkg/apis/core/v1/helper/helpers.go`, `pkg/volume/util/util.go`).
//!
//! Upstream tests ported in `index.rs` (cases ported / upstream cases, all passing):
//!
//! | upstream test | file | ported |
//! |---|---|---|
//! | TestMatchVolume | index_test.go | 15 / 15 |
//! | TestMatchingWithBoundVolumes | index_test.go | 1 / 1 |
//! | TestListByAccessModes | index_test.go | 2 / 2 (both lists) |
//! | TestAllPossibleAccessModes | index_test.go | 2 / 2 (RWO, RWX) |
//! | TestFindingVolumeWithDifferentAccessModes | index_test.go | 7 / 7 (steps) |
//! | TestVolumeModeCheck | index_test.go | 9 / 9 |
//! | TestFilteringVolumeModes | index_test.go | 7 / 7 |
//! | TestStorageObjectInUseProtectionFiltering | index_test.go | 4 / 4 (2 checkVolumeSatisfyClaim, 2 filtering) |
//! | TestFindingPreboundVolumes | index_test.go | 5 / 5 (steps) |
//! | TestBestMatchDelayed | index_test.go | 1 / 1 |
//! | TestCheckAccessModes | index_test.go | 4 / 4 |
//! | TestFindMatchVolumeWithNode | component-helpers pv_helpers_test.go | 12 / 14 (the two cases run only with the VolumeAttributesClass gate off are not ported: the gate is GA and locked on in v1.36) |
//! | TestCheckVolumeNodeAffinity | component-helpers helpers_test.go | 9 / 9 |
//! | TestGetAccessModesFromString | pkg/apis/core/v1/helper/helpers_test.go | 4 / 4 (checks) |
//! | TestRemoveDuplicateAccessModes | pkg/apis/core/v1/helper/helpers_test.go | 1 / 1 (through `get_access_modes_as_string`) |
//!
//! Not running yet: no controller loop binds claims (the next step of issue 13). The
//! scheduler's volume binding (`scheduler::volume_binding`) uses this module's
//! `check_node_affinity`, `is_volume_bound_to_claim`, `check_access_modes` and storage
//! amounts; it keeps its own matcher for one difference only: with no PV controller to
//! move volumes to Available, it takes a volume in phase Pending (or none) as available.
pub mod index;
