//! The PV controller's volume index and claim-to-volume matching (upstream:
//! `pkg/controller/volume/persistentvolume/index.go`, `FindMatchingVolume` and its helpers
//! in `k8s.io/component-helpers/storage/volume/pv_helpers.go` and `helpers.go`,
//! `checkVolumeSatisfyClaim` of `pv_controller.go`, and the access-mode strings of
//! `pkg/apis/core/v1/helper/helpers.go`).
//!
//! [`PersistentVolumeOrderedIndex`] keeps the volumes grouped by their access-mode set
//! ("RWO,ROX", ...). A claim is matched against the sets containing all its modes, the sets
//! with the fewest modes first, so that a claim for RWO gets an RWO volume before an
//! RWO+ROX+RWX one; within a set [`find_matching_volume`] returns a volume pre-bound to the
//! claim (its `spec.claimRef` names the claim, and the UID too when the reference has one)
//! if it is big enough, else the smallest Available volume of the claim's class, volume
//! mode and volumeAttributesClass whose labels match the claim's selector and whose
//! capacity covers the request. Volumes being deleted are never matched; with
//! `delay_binding` (WaitForFirstConsumer, PV controller path) only pre-bound volumes are;
//! with a node (scheduler path) the volume's node affinity must admit the node and the
//! volume must offer every requested access mode.
//!
//! Differences from upstream, none visible in a match upstream would make:
//! - the store is keyed by the volume's name (PVs are cluster-scoped: upstream's
//!   `MetaNamespaceKeyFunc` gives the name); adding a volume whose name is already stored
//!   replaces it, as upstream's `store.Add`.
//! - order is deterministic where upstream's is Go map order: access-mode sets with as many
//!   modes are tried in the order of their strings, volumes within a set in name order, so
//!   of two equally small volumes the first by name wins.
//! - the VolumeAttributesClass feature gate is GA and locked on in v1.36, so only its
//!   enabled branches are ported (`FindMatchingVolume`'s `vacEnabled` is always true).
//! - a node affinity term that does not parse makes [`check_node_affinity`] fail with the
//!   same error as a term that does not match (upstream returns the parse errors), through
//!   the scheduler's node-selector matching.
//!
//! Quantities are compared exactly with `rekube_crds::quantity` (`Quantity.Cmp`), except in
//! [`check_volume_satisfy_claim`], which compares `Value()`s as upstream does.
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec,
};
use rekube_crds::quantity::{Amount, amount};
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim};

use crate::scheduler::nodeaffinity::match_node_selector_terms;
use crate::scheduler::resources::RESOURCE_STORAGE;
use crate::scheduler::volume_binding::{claim_class, volume_class};
use crate::util::labels::{LabelError, label_selector_as_selector};

/// Upstream `v1.ReadWriteOnce`.
pub const READ_WRITE_ONCE: &str = "ReadWriteOnce";
/// Upstream `v1.ReadOnlyMany`.
pub const READ_ONLY_MANY: &str = "ReadOnlyMany";
/// Upstream `v1.ReadWriteMany`.
pub const READ_WRITE_MANY: &str = "ReadWriteMany";
/// Upstream `v1.ReadWriteOncePod`.
pub const READ_WRITE_ONCE_POD: &str = "ReadWriteOncePod";
/// Upstream `v1.PersistentVolumeFilesystem`, the volume mode of a claim or volume without one.
pub const PERSISTENT_VOLUME_FILESYSTEM: &str = "Filesystem";
/// Upstream `v1.PersistentVolumeBlock`.
pub const PERSISTENT_VOLUME_BLOCK: &str = "Block";
/// Upstream `v1.VolumeAvailable`: the only phase an unbound volume is matched in.
pub const VOLUME_AVAILABLE: &str = "Available";

/// Errors of matching (upstream: the errors of `FindMatchingVolume`, `CheckNodeAffinity` and
/// `checkVolumeSatisfyClaim`, with upstream's texts: the PV controller puts the last ones
/// into its events after the volume's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The claim's `spec.selector` does not convert to a selector.
    #[error("error creating internal label selector for claim: {claim}: {source}")]
    InvalidSelector { claim: String, source: LabelError },
    /// The volume's required node affinity does not admit the node.
    #[error("no matching NodeSelectorTerms")]
    NoMatchingNodeSelectorTerms,
    /// The volume has a deletion timestamp.
    #[error("the volume is marked for deletion {0:?}")]
    VolumeMarkedForDeletion(String),
    /// The volume's capacity is below the claim's storage request.
    #[error("requested PV is too small")]
    VolumeTooSmall,
    #[error("storageClassName does not match")]
    StorageClassMismatch,
    #[error("volumeAttributesClassName does not match")]
    VolumeAttributesClassMismatch,
    #[error("incompatible volumeMode")]
    VolumeModeMismatch,
    #[error("incompatible accessMode")]
    AccessModeMismatch,
}

/// Volumes indexed by their access-mode set (upstream `persistentVolumeOrderedIndex`: a
/// `cache.Indexer` keyed by `MetaNamespaceKeyFunc` with the `accessmodes` index).
#[derive(Debug, Clone, Default)]
pub struct PersistentVolumeOrderedIndex {
    /// The volumes by name.
    store: BTreeMap<String, Arc<PersistentVolume>>,
    /// Access-mode string ([`get_access_modes_as_string`]) to the names of the volumes with
    /// exactly that set; no empty set is kept (as client-go's indexer).
    access_modes: BTreeMap<String, BTreeSet<String>>,
}

fn volume_key(volume: &PersistentVolume) -> &str {
    volume.metadata.name.as_deref().unwrap_or_default()
}

fn volume_spec(volume: &PersistentVolume) -> &PersistentVolumeSpec {
    static EMPTY: LazyLock<PersistentVolumeSpec> = LazyLock::new(PersistentVolumeSpec::default);
    volume.spec.as_ref().unwrap_or(&EMPTY)
}

fn claim_spec(claim: &PersistentVolumeClaim) -> &PersistentVolumeClaimSpec {
    static EMPTY: LazyLock<PersistentVolumeClaimSpec> =
        LazyLock::new(PersistentVolumeClaimSpec::default);
    claim.spec.as_ref().unwrap_or(&EMPTY)
}

fn volume_access_modes(volume: &PersistentVolume) -> &[String] {
    volume_spec(volume)
        .access_modes
        .as_deref()
        .unwrap_or_default()
}

fn claim_access_modes(claim: &PersistentVolumeClaim) -> &[String] {
    claim_spec(claim)
        .access_modes
        .as_deref()
        .unwrap_or_default()
}

/// The claim's `resources.requests.storage`, zero when missing.
pub fn storage_request(claim: &PersistentVolumeClaim) -> Amount {
    claim_spec(claim)
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(RESOURCE_STORAGE))
        .map(amount)
        .unwrap_or_default()
}

/// The volume's `capacity.storage`, zero when missing.
pub fn storage_capacity(volume: &PersistentVolume) -> Amount {
    volume_spec(volume)
        .capacity
        .as_ref()
        .and_then(|c| c.get(RESOURCE_STORAGE))
        .map(amount)
        .unwrap_or_default()
}

fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Upstream `accessModesIndexFunc`: the volume's index value.
fn access_modes_index_func(volume: &PersistentVolume) -> String {
    get_access_modes_as_string(volume_access_modes(volume))
}

impl PersistentVolumeOrderedIndex {
    /// Upstream `newPersistentVolumeOrderedIndex`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the volume, replacing the stored one of the same name (upstream `store.Add`).
    pub fn add(&mut self, volume: impl Into<Arc<PersistentVolume>>) {
        let volume = volume.into();
        let key = volume_key(&volume).to_string();
        self.delete(&key);
        self.access_modes
            .entry(access_modes_index_func(&volume))
            .or_default()
            .insert(key.clone());
        self.store.insert(key, volume);
    }

    /// Upstream `store.Update`: the same as [`add`](Self::add).
    pub fn update(&mut self, volume: impl Into<Arc<PersistentVolume>>) {
        self.add(volume);
    }

    /// Removes the volume of this name (upstream `store.Delete`), returning it.
    pub fn delete(&mut self, name: &str) -> Option<Arc<PersistentVolume>> {
        let old = self.store.remove(name)?;
        let modes = access_modes_index_func(&old);
        if let Some(names) = self.access_modes.get_mut(&modes) {
            names.remove(name);
            if names.is_empty() {
                self.access_modes.remove(&modes);
            }
        }
        Some(old)
    }

    /// The volume of this name (upstream `store.GetByKey`).
    pub fn get_by_key(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.store.get(name)
    }

    /// All volumes, in name order (upstream `store.List`).
    pub fn list(&self) -> impl Iterator<Item = &Arc<PersistentVolume>> {
        self.store.values()
    }

    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The volumes whose access-mode set is exactly `modes` (in any order, duplicates
    /// ignored), unsorted by capacity (upstream `listByAccessModes`).
    pub fn list_by_access_modes(&self, modes: &[String]) -> Vec<Arc<PersistentVolume>> {
        self.access_modes
            .get(&get_access_modes_as_string(modes))
            .into_iter()
            .flatten()
            .filter_map(|name| self.store.get(name).cloned())
            .collect()
    }

    /// The volume to bind the claim to, or `None` (upstream `findByClaim`): the access-mode
    /// sets that can satisfy the claim are searched fewest modes first, and the first set
    /// with a match ([`find_matching_volume`], no node, nothing excluded) gives it.
    pub fn find_by_claim(
        &self,
        claim: &PersistentVolumeClaim,
        delay_binding: bool,
    ) -> Result<Option<Arc<PersistentVolume>>, IndexError> {
        for modes in self.all_possible_matching_access_modes(claim_access_modes(claim)) {
            let volumes = self.list_by_access_modes(&modes);
            if let Some(best) =
                find_matching_volume(claim, &volumes, None, &BTreeSet::new(), delay_binding)?
            {
                return Ok(Some(Arc::clone(best)));
            }
        }
        Ok(None)
    }

    /// Upstream `findBestMatchForClaim`: [`find_by_claim`](Self::find_by_claim).
    pub fn find_best_match_for_claim(
        &self,
        claim: &PersistentVolumeClaim,
        delay_binding: bool,
    ) -> Result<Option<Arc<PersistentVolume>>, IndexError> {
        self.find_by_claim(claim, delay_binding)
    }

    /// The indexed access-mode sets that contain every requested mode, the sets with the
    /// fewest modes first (upstream `allPossibleMatchingAccessModes`). With RWO+ROX and
    /// RWO+ROX+RWX volumes indexed, a request for RWO gives both sets, RWO+ROX first; a
    /// request for RWX only the second.
    pub fn all_possible_matching_access_modes(
        &self,
        requested_modes: &[String],
    ) -> Vec<Vec<String>> {
        let mut matched: Vec<Vec<String>> = self
            .access_modes
            .keys()
            .map(|key| get_access_modes_from_string(key))
            .filter(|indexed| contains_all_access_modes(indexed, requested_modes))
            .collect();
        matched.sort_by_key(Vec::len);
        matched
    }
}

/// The access modes as upstream's short string, always in the order RWO,ROX,RWX,RWOP,
/// duplicates and unknown modes dropped (upstream `GetAccessModesAsString`).
pub fn get_access_modes_as_string(modes: &[String]) -> String {
    [
        (READ_WRITE_ONCE, "RWO"),
        (READ_ONLY_MANY, "ROX"),
        (READ_WRITE_MANY, "RWX"),
        (READ_WRITE_ONCE_POD, "RWOP"),
    ]
    .into_iter()
    .filter(|(mode, _)| contains_access_mode(modes, mode))
    .map(|(_, short)| short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The access modes of a string made by [`get_access_modes_as_string`] (upstream
/// `GetAccessModesFromString`); unknown entries are skipped.
pub fn get_access_modes_from_string(modes: &str) -> Vec<String> {
    modes
        .split(',')
        .filter_map(|s| match s.trim_matches(' ') {
            "RWO" => Some(READ_WRITE_ONCE),
            "ROX" => Some(READ_ONLY_MANY),
            "RWX" => Some(READ_WRITE_MANY),
            "RWOP" => Some(READ_WRITE_ONCE_POD),
            _ => None,
        })
        .map(str::to_string)
        .collect()
}

/// Upstream `ContainsAccessMode`.
pub fn contains_access_mode(modes: &[String], mode: &str) -> bool {
    modes.iter().any(|m| m == mode)
}

/// Whether `indexed_modes` contains every requested mode (upstream `ContainsAllAccessModes`).
pub fn contains_all_access_modes(indexed_modes: &[String], requested_modes: &[String]) -> bool {
    requested_modes
        .iter()
        .all(|m| contains_access_mode(indexed_modes, m))
}

/// `namespace/name` of the claim (upstream `claimToClaimKey`).
pub fn claim_to_claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

/// `namespace/name` of the claim a reference names (upstream `claimrefToClaimKey`).
pub fn claimref_to_claim_key(claim_ref: &ObjectReference) -> String {
    format!(
        "{}/{}",
        claim_ref.namespace.as_deref().unwrap_or_default(),
        claim_ref.name.as_deref().unwrap_or_default()
    )
}

/// Whether the volume is pre-bound or bound to the claim (upstream `IsVolumeBoundToClaim`):
/// its `spec.claimRef` has the claim's name and namespace, and the claim's UID when the
/// reference has a UID.
pub fn is_volume_bound_to_claim(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(claim_ref) = volume_spec(volume).claim_ref.as_ref() else {
        return false;
    };
    let same = |a: Option<&String>, b: Option<&String>| {
        a.map_or("", String::as_str) == b.map_or("", String::as_str)
    };
    if !same(claim.metadata.name.as_ref(), claim_ref.name.as_ref())
        || !same(
            claim.metadata.namespace.as_ref(),
            claim_ref.namespace.as_ref(),
        )
    {
        return false;
    }
    let ref_uid = claim_ref.uid.as_deref().unwrap_or_default();
    ref_uid.is_empty() || ref_uid == claim.metadata.uid.as_deref().unwrap_or_default()
}

/// Whether the claim's and the volume's volume modes differ, a missing one counting as
/// Filesystem (upstream `CheckVolumeModeMismatches`).
pub fn check_volume_mode_mismatches(
    pvc_spec: &PersistentVolumeClaimSpec,
    pv_spec: &PersistentVolumeSpec,
) -> bool {
    let requested = pvc_spec
        .volume_mode
        .as_deref()
        .unwrap_or(PERSISTENT_VOLUME_FILESYSTEM);
    let offered = pv_spec
        .volume_mode
        .as_deref()
        .unwrap_or(PERSISTENT_VOLUME_FILESYSTEM);
    requested != offered
}

/// Whether the volume offers every access mode the claim requests (upstream
/// `CheckAccessModes`).
pub fn check_access_modes(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    contains_all_access_modes(volume_access_modes(volume), claim_access_modes(claim))
}

/// Whether the volume's required node affinity admits a node with these labels (upstream
/// `CheckNodeAffinity`, which sees the labels only: `matchFields` terms are not checked).
/// No node affinity, or one without `required`, admits every node; a `required` without
/// terms admits none.
pub fn check_node_affinity(
    volume: &PersistentVolume,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<(), IndexError> {
    let Some(required) = volume_spec(volume)
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
    else {
        return Ok(());
    };
    if match_node_selector_terms(&required.node_selector_terms, node_labels, "") {
        Ok(())
    } else {
        Err(IndexError::NoMatchingNodeSelectorTerms)
    }
}

/// The best volume for the claim among `volumes` (upstream `FindMatchingVolume`), used by
/// the PV controller (`node` None) and the scheduler (`node` set):
///
/// 1. volumes named in `excluded_volumes`, volumes whose `claimRef` names another claim,
///    volumes smaller than the request, of another volume mode or volumeAttributesClass,
///    and volumes being deleted are skipped;
/// 2. a volume pre-bound to the claim is returned at once, or `None` when a node is given
///    and the volume's node affinity does not admit it;
/// 3. with `delay_binding` and no node, nothing else is matched (the scheduler binds
///    WaitForFirstConsumer claims);
/// 4. otherwise the smallest volume in phase Available whose labels match the claim's
///    selector, of the claim's storage class, and, with a node, admitting the node and
///    offering every requested access mode.
///
/// An invalid claim selector is an error.
pub fn find_matching_volume<'a, V: Borrow<PersistentVolume>>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [V],
    node: Option<&Node>,
    excluded_volumes: &BTreeSet<&str>,
    delay_binding: bool,
) -> Result<Option<&'a V>, IndexError> {
    let spec = claim_spec(claim);
    let requested_qty = storage_request(claim);
    let requested_class = claim_class(claim);
    let selector =
        match spec.selector.as_ref() {
            Some(selector) => Some(label_selector_as_selector(Some(selector)).map_err(
                |source| IndexError::InvalidSelector {
                    claim: claim_to_claim_key(claim),
                    source,
                },
            )?),
            None => None,
        };
    let claim_vac = spec
        .volume_attributes_class_name
        .as_deref()
        .unwrap_or_default();

    let mut smallest: Option<(&'a V, Amount)> = None;
    for candidate in volumes {
        let volume: &PersistentVolume = candidate.borrow();
        let pv_spec = volume_spec(volume);
        if excluded_volumes.contains(volume_key(volume)) {
            continue;
        }
        if pv_spec.claim_ref.is_some() && !is_volume_bound_to_claim(volume, claim) {
            continue;
        }
        let volume_qty = storage_capacity(volume);
        if volume_qty < requested_qty {
            continue;
        }
        if check_volume_mode_mismatches(spec, pv_spec) {
            continue;
        }
        let volume_vac = pv_spec
            .volume_attributes_class_name
            .as_deref()
            .unwrap_or_default();
        if claim_vac != volume_vac {
            continue;
        }
        if volume.metadata.deletion_timestamp.is_some() {
            continue;
        }

        // The scheduler path checks the node: the most expensive check, so after the
        // cheap ones.
        let node_affinity_valid =
            node.is_none_or(|n| check_node_affinity(volume, n.metadata.labels.as_ref()).is_ok());

        if is_volume_bound_to_claim(volume, claim) {
            // A pre-bound volume that does not fit the node: the claim does not either.
            return Ok(node_affinity_valid.then_some(candidate));
        }

        if node.is_none() && delay_binding {
            // The PV controller does not bind this claim: the scheduler binds unbound
            // volumes of WaitForFirstConsumer claims.
            continue;
        }

        // Volumes in another phase will become Available if they match; binding them now
        // would likely run into API conflicts.
        if volume_phase(volume) != VOLUME_AVAILABLE {
            continue;
        }
        if selector
            .as_ref()
            .is_some_and(|s| !s.matches(volume.metadata.labels.as_ref()))
        {
            continue;
        }
        if volume_class(volume) != requested_class {
            continue;
        }
        if !node_affinity_valid {
            continue;
        }
        if node.is_some() && !check_access_modes(claim, volume) {
            continue;
        }

        if smallest.is_none_or(|(_, qty)| qty > volume_qty) {
            smallest = Some((candidate, volume_qty));
        }
    }
    Ok(smallest.map(|(volume, _)| volume))
}

/// Whether the volume a claim names in `spec.volumeName` can serve it (upstream
/// `checkVolumeSatisfyClaim`, `pv_controller.go`): not being deleted, big enough (compared
/// as `Value()`s), same storage class, volumeAttributesClass and volume mode, every
/// requested access mode offered.
pub fn check_volume_satisfy_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), IndexError> {
    let requested_size = storage_request(claim).value();
    if volume.metadata.deletion_timestamp.is_some() {
        return Err(IndexError::VolumeMarkedForDeletion(
            volume_key(volume).to_string(),
        ));
    }
    if storage_capacity(volume).value() < requested_size {
        return Err(IndexError::VolumeTooSmall);
    }
    if volume_class(volume) != claim_class(claim) {
        return Err(IndexError::StorageClassMismatch);
    }
    let requested_vac = claim_spec(claim)
        .volume_attributes_class_name
        .as_deref()
        .unwrap_or_default();
    let volume_vac = volume_spec(volume)
        .volume_attributes_class_name
        .as_deref()
        .unwrap_or_default();
    if requested_vac != volume_vac {
        return Err(IndexError::VolumeAttributesClassMismatch);
    }
    if check_volume_mode_mismatches(claim_spec(claim), volume_spec(volume)) {
        return Err(IndexError::VolumeModeMismatch);
    }
    if !check_access_modes(claim, volume) {
        return Err(IndexError::AccessModeMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Ported from upstream's `index_test.go`, component-helpers' `pv_helpers_test.go`
    //! (`TestFindMatchVolumeWithNode`) and `helpers_test.go` (`TestCheckVolumeNodeAffinity`),
    //! and `pkg/apis/core/v1/helper/helpers_test.go` (access-mode strings). Upstream's
    //! fixtures set volume sources (GCE PD, Glusterfs, local, ...); matching never reads
    //! them, so they are left out. Upstream's tests change volumes the index points to; here
    //! the changed volume is added again.
    use super::*;

    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeStatus,
        VolumeNodeAffinity, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

    const RWO: &str = READ_WRITE_ONCE;
    const ROX: &str = READ_ONLY_MANY;
    const RWX: &str = READ_WRITE_MANY;
    const RWOP: &str = READ_WRITE_ONCE_POD;
    const FS: &str = PERSISTENT_VOLUME_FILESYSTEM;
    const BLOCK: &str = PERSISTENT_VOLUME_BLOCK;

    // framework_test.go's classes.
    const CLASS_GOLD: &str = "gold";
    const CLASS_SILVER: &str = "silver";
    const CLASS_EMPTY: &str = "";
    const CLASS_NON_EXISTING: &str = "non-existing";
    const CLASS_LARGE: &str = "large";
    const CLASS_WAIT: &str = "wait";

    fn modes(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    fn storage(size: &str) -> Option<BTreeMap<String, Quantity>> {
        Some(BTreeMap::from([(
            RESOURCE_STORAGE.to_string(),
            Quantity(size.to_string()),
        )]))
    }

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn match_labels(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: labels(pairs),
            match_expressions: None,
        })
    }

    fn pvc_spec(pvc: &mut PersistentVolumeClaim) -> &mut PersistentVolumeClaimSpec {
        pvc.spec.get_or_insert_with(Default::default)
    }

    fn pv_spec(pv: &mut PersistentVolume) -> &mut PersistentVolumeSpec {
        pv.spec.get_or_insert_with(Default::default)
    }

    fn deleted() -> Option<Time> {
        Some(Time(jiff::Timestamp::UNIX_EPOCH))
    }

    fn claim(
        name: &str,
        size: &str,
        access_modes: &[&str],
        volume_mode: Option<&str>,
    ) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("myns".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(modes(access_modes)),
                resources: Some(VolumeResourceRequirements {
                    requests: storage(size),
                    limits: None,
                }),
                volume_mode: volume_mode.map(str::to_string),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Upstream `makePVC`: claim01 in myns, ROX+RWO, Filesystem.
    fn make_pvc(
        size: &str,
        modfn: impl FnOnce(&mut PersistentVolumeClaim),
    ) -> PersistentVolumeClaim {
        let mut pvc = claim("claim01", size, &[ROX, RWO], Some(FS));
        modfn(&mut pvc);
        pvc
    }

    /// Upstream `makeVolumeModePVC`: claim01 in myns, RWO, the given volume mode.
    fn make_volume_mode_pvc(size: &str, mode: Option<&str>) -> PersistentVolumeClaim {
        claim("claim01", size, &[RWO], mode)
    }

    /// A volume with a UID, name, capacity, access modes, volume mode and phase.
    fn volume(
        uid: &str,
        name: &str,
        size: &str,
        access_modes: &[&str],
        volume_mode: Option<&str>,
        phase: Option<&str>,
    ) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                uid: (!uid.is_empty()).then(|| uid.to_string()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: storage(size),
                access_modes: Some(modes(access_modes)),
                volume_mode: volume_mode.map(str::to_string),
                ..Default::default()
            }),
            status: phase.map(|p| PersistentVolumeStatus {
                phase: Some(p.into()),
                ..Default::default()
            }),
        }
    }

    fn with(
        mut pv: PersistentVolume,
        modfn: impl FnOnce(&mut PersistentVolume),
    ) -> PersistentVolume {
        modfn(&mut pv);
        pv
    }

    fn claim_ref_uid(uid: &str) -> Option<ObjectReference> {
        Some(ObjectReference {
            uid: Some(uid.into()),
            ..Default::default()
        })
    }

    fn claim_ref_named(namespace: &str, name: &str) -> Option<ObjectReference> {
        Some(ObjectReference {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        })
    }

    /// Upstream `ref.GetReference(scheme.Scheme, claim)`.
    fn get_reference(claim: &PersistentVolumeClaim) -> Option<ObjectReference> {
        Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: claim.metadata.name.clone(),
            namespace: claim.metadata.namespace.clone(),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            field_path: None,
        })
    }

    fn in_requirement(key: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: "In".into(),
            values: Some(modes(values)),
        }
    }

    fn terms(terms: Vec<Vec<NodeSelectorRequirement>>) -> Option<VolumeNodeAffinity> {
        Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: terms
                    .into_iter()
                    .map(|exprs| NodeSelectorTerm {
                        match_expressions: Some(exprs),
                        match_fields: None,
                    })
                    .collect(),
            }),
        })
    }

    /// Upstream `createNodeAffinity` / `makeNodeAffinity`: required `key In (value)`.
    fn create_node_affinity(key: &str, value: &str) -> Option<VolumeNodeAffinity> {
        terms(vec![vec![in_requirement(key, &[value])]])
    }

    fn node(pairs: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                labels: labels(pairs),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Upstream `createTestVolumes`: deliberately out of order. Two volumes share the name
    /// affinity003, so in an index the second (affinity-pv3) replaces the first, as upstream.
    fn create_test_volumes() -> Vec<PersistentVolume> {
        let available = Some("Available");
        let bound = Some("Bound");
        let fs = Some(FS);
        vec![
            volume("gce-pd-10", "gce003", "10G", &[RWO, ROX], fs, available),
            with(
                volume("gce-pd-20", "gce004", "20G", &[RWO, ROX], fs, bound),
                // this one we're pretending is already bound
                |pv| pv_spec(pv).claim_ref = claim_ref_uid("def456"),
            ),
            volume("nfs-5", "nfs002", "5G", &[RWO, ROX, RWX], fs, available),
            with(
                volume("gce-pd-1", "gce001", "1G", &[RWO, ROX], fs, bound),
                // this one we're pretending is already bound
                |pv| pv_spec(pv).claim_ref = claim_ref_uid("abc123"),
            ),
            volume("nfs-10", "nfs003", "10G", &[RWO, ROX, RWX], fs, available),
            volume("gce-pd-5", "gce002", "5G", &[RWO, ROX], fs, available),
            volume("nfs-1", "nfs001", "1G", &[RWO, ROX, RWX], fs, available),
            with(
                volume("gce-pd-2", "gce0022", "20000G", &[RWO], fs, available),
                |pv| pv.metadata.labels = labels(&[("should-exist", "true")]),
            ),
            with(
                volume("gce-pd-silver1", "gce0023", "10000G", &[RWO], fs, available),
                |pv| {
                    pv.metadata.labels = labels(&[("should-exist", "true")]);
                    pv_spec(pv).storage_class_name = Some(CLASS_SILVER.into());
                },
            ),
            with(
                volume("gce-pd-silver2", "gce0024", "100G", &[RWO], fs, available),
                |pv| pv_spec(pv).storage_class_name = Some(CLASS_SILVER.into()),
            ),
            with(
                volume("gce-pd-gold", "gce0025", "50G", &[RWO], fs, available),
                |pv| pv_spec(pv).storage_class_name = Some(CLASS_GOLD.into()),
            ),
            with(
                volume(
                    "local-pd-very-large",
                    "local001",
                    "200E",
                    &[RWO, ROX, RWX],
                    fs,
                    available,
                ),
                |pv| pv_spec(pv).storage_class_name = Some(CLASS_LARGE.into()),
            ),
            with(
                volume(
                    "local-pd-extremely-large",
                    "local002",
                    "800E",
                    &[RWO, ROX, RWX],
                    fs,
                    available,
                ),
                |pv| pv_spec(pv).storage_class_name = Some(CLASS_LARGE.into()),
            ),
            with(
                volume(
                    "affinity-pv",
                    "affinity001",
                    "100G",
                    &[RWO, ROX],
                    fs,
                    available,
                ),
                |pv| {
                    let spec = pv_spec(pv);
                    spec.storage_class_name = Some(CLASS_WAIT.into());
                    spec.node_affinity = create_node_affinity("key1", "value1");
                },
            ),
            with(
                volume(
                    "affinity-pv2",
                    "affinity002",
                    "150G",
                    &[RWO, ROX],
                    fs,
                    available,
                ),
                |pv| {
                    let spec = pv_spec(pv);
                    spec.storage_class_name = Some(CLASS_WAIT.into());
                    spec.node_affinity = create_node_affinity("key1", "value1");
                },
            ),
            with(
                volume(
                    "affinity-prebound",
                    "affinity003",
                    "100G",
                    &[RWO, ROX],
                    fs,
                    available,
                ),
                |pv| {
                    let spec = pv_spec(pv);
                    spec.storage_class_name = Some(CLASS_WAIT.into());
                    spec.claim_ref = claim_ref_named("myns", "claim02");
                    spec.node_affinity = create_node_affinity("key1", "value1");
                },
            ),
            with(
                volume(
                    "affinity-pv3",
                    "affinity003",
                    "200G",
                    &[RWO, ROX],
                    fs,
                    available,
                ),
                |pv| {
                    let spec = pv_spec(pv);
                    spec.storage_class_name = Some(CLASS_WAIT.into());
                    spec.node_affinity = create_node_affinity("key1", "value3");
                },
            ),
            with(
                volume(
                    "affinity-pv4-pending",
                    "affinity004-pending",
                    "200G",
                    &[RWO, ROX],
                    fs,
                    Some("Pending"),
                ),
                |pv| {
                    let spec = pv_spec(pv);
                    spec.storage_class_name = Some(CLASS_WAIT.into());
                    spec.node_affinity = create_node_affinity("key1", "value4");
                },
            ),
            with(
                volume(
                    "affinity-pv4-failed",
                    "affinity004-failed",
                    "200G",
                    &[RWO, ROX],
                    fs,
                    Some("Failed"),
                ),
                |pv| {
                    let spec = pv_spec(pv);
                    spec.storage_class_name = Some(CLASS_WAIT.into());
                    spec.node_affinity = create_node_affinity("key1", "value4");
                },
            ),
            with(
                volume(
                    "affinity-pv4-released",
                    "affinity004-released",
                    "200G",
                    &[RWO, ROX],
                    fs,
                    Some("Released"),
                ),
                |pv| {
                    let spec = pv_spec(pv);
                    spec.storage_class_name = Some(CLASS_WAIT.into());
                    spec.node_affinity = create_node_affinity("key1", "value4");
                },
            ),
            with(
                volume(
                    "affinity-pv4-empty",
                    "affinity004-empty",
                    "200G",
                    &[RWO, ROX],
                    fs,
                    None,
                ),
                |pv| {
                    let spec = pv_spec(pv);
                    spec.storage_class_name = Some(CLASS_WAIT.into());
                    spec.node_affinity = create_node_affinity("key1", "value4");
                },
            ),
            with(
                volume(
                    "gce-pd-vac-silver1",
                    "gce-pd-vac-silver1",
                    "100G",
                    &[RWO, ROX],
                    fs,
                    available,
                ),
                |pv| pv_spec(pv).volume_attributes_class_name = Some(CLASS_SILVER.into()),
            ),
        ]
    }

    fn index_of(volumes: Vec<PersistentVolume>) -> PersistentVolumeOrderedIndex {
        let mut index = PersistentVolumeOrderedIndex::new();
        for pv in volumes {
            index.add(pv);
        }
        index
    }

    /// Upstream `testVolume`: an Available RWO Filesystem volume without UID.
    fn test_volume(name: &str, size: &str) -> PersistentVolume {
        with(
            volume("", name, size, &[RWO], Some(FS), Some("Available")),
            |pv| pv.metadata.annotations = Some(BTreeMap::new()),
        )
    }

    /// Upstream `createVolumeModeBlockTestVolume`.
    fn create_volume_mode_block_test_volume() -> PersistentVolume {
        volume(
            "local-1",
            "block",
            "10G",
            &[RWO],
            Some(BLOCK),
            Some("Available"),
        )
    }

    /// Upstream `createVolumeModeFilesystemTestVolume`.
    fn create_volume_mode_filesystem_test_volume() -> PersistentVolume {
        volume(
            "local-1",
            "block",
            "10G",
            &[RWO],
            Some(FS),
            Some("Available"),
        )
    }

    /// Upstream `createVolumeModeNilTestVolume`.
    fn create_volume_mode_nil_test_volume() -> PersistentVolume {
        volume(
            "local-1",
            "nil-mode",
            "10G",
            &[RWO],
            None,
            Some("Available"),
        )
    }

    /// Upstream `createTestVolOrderedIndex`.
    fn create_test_vol_ordered_index(pv: PersistentVolume) -> PersistentVolumeOrderedIndex {
        index_of(vec![pv])
    }

    fn uid(pv: &PersistentVolume) -> &str {
        pv.metadata.uid.as_deref().unwrap_or_default()
    }

    fn name(pv: &PersistentVolume) -> &str {
        pv.metadata.name.as_deref().unwrap_or_default()
    }

    /// The matched volume's UID ("" for no match), failing on an error.
    fn best_uid(
        index: &PersistentVolumeOrderedIndex,
        claim: &PersistentVolumeClaim,
        delay: bool,
    ) -> String {
        index
            .find_best_match_for_claim(claim, delay)
            .unwrap_or_else(|e| panic!("unexpected error matching volume by claim: {e}"))
            .map(|pv| uid(&pv).to_string())
            .unwrap_or_default()
    }

    fn best_name(index: &PersistentVolumeOrderedIndex, claim: &PersistentVolumeClaim) -> String {
        index
            .find_best_match_for_claim(claim, false)
            .unwrap_or_else(|e| panic!("unexpected error matching volume by claim: {e}"))
            .map(|pv| name(&pv).to_string())
            .unwrap_or_default()
    }

    #[test]
    fn test_match_volume() {
        let index = index_of(create_test_volumes());
        let scenarios: Vec<(&str, &str, PersistentVolumeClaim)> = vec![
            (
                "successful-match-gce-10",
                "gce-pd-10",
                make_pvc("8G", |_| {}),
            ),
            (
                "successful-match-nfs-5",
                "nfs-5",
                make_pvc("5G", |pvc| {
                    pvc_spec(pvc).access_modes = Some(modes(&[ROX, RWO, RWX]))
                }),
            ),
            (
                "successful-skip-1g-bound-volume",
                "gce-pd-5",
                make_pvc("1G", |_| {}),
            ),
            ("successful-no-match", "", make_pvc("999G", |_| {})),
            (
                "successful-no-match-due-to-label",
                "",
                make_pvc("999G", |pvc| {
                    pvc_spec(pvc).selector = match_labels(&[("should-not-exist", "true")])
                }),
            ),
            (
                "successful-no-match-due-to-size-constraint-with-label-selector",
                "",
                make_pvc("20000G", |pvc| {
                    let spec = pvc_spec(pvc);
                    spec.selector = match_labels(&[("should-exist", "true")]);
                    spec.access_modes = Some(modes(&[ROX, RWO]));
                }),
            ),
            (
                "successful-match-due-with-constraint-and-label-selector",
                "gce-pd-2",
                make_pvc("20000G", |pvc| {
                    let spec = pvc_spec(pvc);
                    spec.selector = match_labels(&[("should-exist", "true")]);
                    spec.access_modes = Some(modes(&[RWO]));
                }),
            ),
            (
                "successful-match-with-empty-vac",
                "gce-pd-10",
                make_pvc("8G", |pvc| {
                    pvc_spec(pvc).volume_attributes_class_name = Some(CLASS_EMPTY.into())
                }),
            ),
            (
                "successful-match-with-vac",
                "gce-pd-vac-silver1",
                make_pvc("1G", |pvc| {
                    pvc_spec(pvc).volume_attributes_class_name = Some(CLASS_SILVER.into())
                }),
            ),
            (
                "successful-no-match-vac-nonexisting",
                "",
                make_pvc("1G", |pvc| {
                    pvc_spec(pvc).volume_attributes_class_name = Some(CLASS_NON_EXISTING.into())
                }),
            ),
            (
                "successful-match-with-class",
                "gce-pd-silver1",
                make_pvc("1G", |pvc| {
                    let spec = pvc_spec(pvc);
                    spec.selector = match_labels(&[("should-exist", "true")]);
                    spec.access_modes = Some(modes(&[RWO]));
                    spec.storage_class_name = Some(CLASS_SILVER.into());
                }),
            ),
            (
                "successful-match-with-class-and-labels",
                "gce-pd-silver2",
                make_pvc("1G", |pvc| {
                    let spec = pvc_spec(pvc);
                    spec.access_modes = Some(modes(&[RWO]));
                    spec.storage_class_name = Some(CLASS_SILVER.into());
                }),
            ),
            (
                "successful-match-very-large",
                "local-pd-very-large",
                // we keep the pvc size less than int64 so that in case the pv overflows
                // the pvc does not overflow equally and give us false matching signals.
                make_pvc("1E", |pvc| {
                    let spec = pvc_spec(pvc);
                    spec.access_modes = Some(modes(&[RWO]));
                    spec.storage_class_name = Some(CLASS_LARGE.into());
                }),
            ),
            (
                "successful-match-exact-extremely-large",
                "local-pd-extremely-large",
                make_pvc("800E", |pvc| {
                    let spec = pvc_spec(pvc);
                    spec.access_modes = Some(modes(&[RWO]));
                    spec.storage_class_name = Some(CLASS_LARGE.into());
                }),
            ),
            (
                "successful-no-match-way-too-large",
                "",
                make_pvc("950E", |pvc| {
                    let spec = pvc_spec(pvc);
                    spec.access_modes = Some(modes(&[RWO]));
                    spec.storage_class_name = Some(CLASS_LARGE.into());
                }),
            ),
        ];
        assert_eq!(scenarios.len(), 15);
        for (name, expected_match, claim) in scenarios {
            assert_eq!(
                best_uid(&index, &claim, false),
                expected_match,
                "scenario {name}"
            );
        }
    }

    #[test]
    fn test_matching_with_bound_volumes() {
        // two similar volumes, one is bound
        let pv1 = with(
            volume(
                "gce-pd-1",
                "gce001",
                "1G",
                &[RWO, ROX],
                Some(FS),
                Some("Bound"),
            ),
            // this one we're pretending is already bound
            |pv| pv_spec(pv).claim_ref = claim_ref_uid("abc123"),
        );
        let pv2 = volume(
            "gce-pd-2",
            "gce002",
            "1G",
            &[RWO, ROX],
            Some(FS),
            Some("Available"),
        );
        let index = index_of(vec![pv1, pv2]);
        let claim = claim("claim01", "1G", &[ROX, RWO], Some(FS));
        assert_eq!(best_name(&index, &claim), "gce002");
    }

    #[test]
    fn test_list_by_access_modes() {
        let index = index_of(create_test_volumes());
        let by_capacity = |mut volumes: Vec<Arc<PersistentVolume>>| {
            volumes.sort_by_key(|pv| storage_capacity(pv));
            volumes
        };

        let volumes = by_capacity(index.list_by_access_modes(&modes(&[RWO, ROX])));
        for (i, expected) in ["gce-pd-1", "gce-pd-5", "gce-pd-10"]
            .into_iter()
            .enumerate()
        {
            assert_eq!(uid(&volumes[i]), expected, "RWO,ROX volume {i}");
        }

        let volumes = by_capacity(index.list_by_access_modes(&modes(&[RWO, ROX, RWX])));
        let expected = [
            "nfs-1",
            "nfs-5",
            "nfs-10",
            "local-pd-very-large",
            "local-pd-extremely-large",
        ];
        for (i, expected) in expected.into_iter().enumerate() {
            assert_eq!(uid(&volumes[i]), expected, "RWO,ROX,RWX volume {i}");
        }
    }

    #[test]
    fn test_all_possible_access_modes() {
        let index = index_of(create_test_volumes());

        // the mock PVs contain 3 sets of access modes: RWO, RWO+ROX and RWO+ROX+RWX
        let possible = index.all_possible_matching_access_modes(&modes(&[RWO]));
        assert_eq!(
            possible.len(),
            3,
            "sets of modes that match RWO: {possible:?}"
        );
        for m in &possible {
            assert!(contains_access_mode(m, RWO), "{m:?} does not contain RWO");
        }
        let lengths: Vec<usize> = possible.iter().map(Vec::len).collect();
        assert_eq!(lengths, [1, 2, 3], "fewest modes first");

        let possible = index.all_possible_matching_access_modes(&modes(&[RWX]));
        assert_eq!(
            possible.len(),
            1,
            "sets of modes that match RWX: {possible:?}"
        );
        assert!(contains_access_mode(&possible[0], RWX));
    }

    #[test]
    fn test_finding_volume_with_different_access_modes() {
        let fs = Some(FS);
        let available = Some("Available");
        let mut gce = volume("001", "gce", "10G", &[RWO, ROX], fs, available);
        let mut ebs = volume("002", "ebs", "10G", &[RWO], fs, available);
        let nfs = volume("003", "nfs", "10G", &[RWO, ROX, RWX], fs, available);
        let mut claim = claim("claim01", "1G", &[RWO], fs);
        let mut index = index_of(vec![gce.clone(), ebs.clone(), nfs]);

        assert_eq!(best_name(&index, &claim), "ebs", "RWO");

        pvc_spec(&mut claim).access_modes = Some(modes(&[RWO, ROX]));
        assert_eq!(best_name(&index, &claim), "gce", "RWO,ROX");

        // order of the requested modes should not matter
        pvc_spec(&mut claim).access_modes = Some(modes(&[RWX, RWO, ROX]));
        assert_eq!(best_name(&index, &claim), "nfs", "RWX,RWO,ROX");

        // fewer modes requested should still match
        pvc_spec(&mut claim).access_modes = Some(modes(&[RWX]));
        assert_eq!(best_name(&index, &claim), "nfs", "RWX");

        // pretend the exact match is bound. should get the next level up of modes.
        pv_spec(&mut ebs).claim_ref = Some(ObjectReference::default());
        index.update(ebs);
        pvc_spec(&mut claim).access_modes = Some(modes(&[RWO]));
        assert_eq!(best_name(&index, &claim), "gce", "RWO with ebs bound");

        // continue up the levels of modes.
        pv_spec(&mut gce).claim_ref = Some(ObjectReference::default());
        index.update(gce.clone());
        assert_eq!(
            best_name(&index, &claim),
            "nfs",
            "RWO with ebs and gce bound"
        );

        // partial mode request
        pv_spec(&mut gce).claim_ref = None;
        index.update(gce);
        pvc_spec(&mut claim).access_modes = Some(modes(&[ROX]));
        assert_eq!(best_name(&index, &claim), "gce", "ROX");
    }

    #[test]
    fn test_volume_mode_check() {
        let scenarios: Vec<(&str, bool, PersistentVolume, PersistentVolumeClaim)> = vec![
            (
                "pvc block and pv filesystem",
                true,
                create_volume_mode_filesystem_test_volume(),
                make_volume_mode_pvc("8G", Some(BLOCK)),
            ),
            (
                "pvc filesystem and pv block",
                true,
                create_volume_mode_block_test_volume(),
                make_volume_mode_pvc("8G", Some(FS)),
            ),
            (
                "pvc block and pv block",
                false,
                create_volume_mode_block_test_volume(),
                make_volume_mode_pvc("8G", Some(BLOCK)),
            ),
            (
                "pvc filesystem and pv filesystem",
                false,
                create_volume_mode_filesystem_test_volume(),
                make_volume_mode_pvc("8G", Some(FS)),
            ),
            (
                "pvc filesystem and pv nil",
                false,
                create_volume_mode_nil_test_volume(),
                make_volume_mode_pvc("8G", Some(FS)),
            ),
            (
                "pvc nil and pv filesystem",
                false,
                create_volume_mode_filesystem_test_volume(),
                make_volume_mode_pvc("8G", None),
            ),
            (
                "pvc nil and pv nil",
                false,
                create_volume_mode_nil_test_volume(),
                make_volume_mode_pvc("8G", None),
            ),
            (
                "pvc nil and pv block",
                true,
                create_volume_mode_block_test_volume(),
                make_volume_mode_pvc("8G", None),
            ),
            (
                "pvc block and pv nil",
                true,
                create_volume_mode_nil_test_volume(),
                make_volume_mode_pvc("8G", Some(BLOCK)),
            ),
        ];
        assert_eq!(scenarios.len(), 9);
        for (name, is_expected_mismatch, vol, pvc) in scenarios {
            let mismatch = check_volume_mode_mismatches(claim_spec(&pvc), volume_spec(&vol));
            assert_eq!(mismatch, is_expected_mismatch, "scenario {name}");
        }
    }

    #[test]
    fn test_filtering_volume_modes() {
        let scenarios: Vec<(
            &str,
            bool,
            PersistentVolumeOrderedIndex,
            PersistentVolumeClaim,
        )> = vec![
            (
                "pvc block and pv filesystem",
                false,
                create_test_vol_ordered_index(create_volume_mode_filesystem_test_volume()),
                make_volume_mode_pvc("8G", Some(BLOCK)),
            ),
            (
                "pvc filesystem and pv block",
                false,
                create_test_vol_ordered_index(create_volume_mode_block_test_volume()),
                make_volume_mode_pvc("8G", Some(FS)),
            ),
            (
                "pvc block and pv no mode with default filesystem",
                false,
                create_test_vol_ordered_index(create_volume_mode_filesystem_test_volume()),
                make_volume_mode_pvc("8G", Some(BLOCK)),
            ),
            (
                "pvc no mode defaulted to filesystem and pv block",
                false,
                create_test_vol_ordered_index(create_volume_mode_block_test_volume()),
                make_volume_mode_pvc("8G", Some(FS)),
            ),
            (
                "pvc block and pv block",
                true,
                create_test_vol_ordered_index(create_volume_mode_block_test_volume()),
                make_volume_mode_pvc("8G", Some(BLOCK)),
            ),
            (
                "pvc filesystem and pv filesystem",
                true,
                create_test_vol_ordered_index(create_volume_mode_filesystem_test_volume()),
                make_volume_mode_pvc("8G", Some(FS)),
            ),
            (
                "pvc mode is nil and defaulted and pv mode is nil and defaulted",
                true,
                create_test_vol_ordered_index(create_volume_mode_filesystem_test_volume()),
                make_volume_mode_pvc("8G", Some(FS)),
            ),
        ];
        assert_eq!(scenarios.len(), 7);
        for (name, is_expected_match, index, pvc) in scenarios {
            let pvmatch = index
                .find_best_match_for_claim(&pvc, false)
                .unwrap_or_else(|e| panic!("scenario {name}: unexpected error {e}"));
            assert_eq!(pvmatch.is_some(), is_expected_match, "scenario {name}");
        }
    }

    #[test]
    fn test_storage_object_in_use_protection_filtering() {
        let pv = with(
            volume("", "pv1", "1G", &[RWO], Some(FS), Some("Available")),
            |pv| pv.metadata.annotations = Some(BTreeMap::new()),
        );
        let pv_to_delete = with(pv.clone(), |pv| pv.metadata.deletion_timestamp = deleted());
        let pvc = claim("pvc1", "1G", &[RWO], Some(FS));

        let satisfying: Vec<(&str, bool, &PersistentVolume)> = vec![
            ("pv deletionTimeStamp not set", true, &pv),
            ("pv deletionTimeStamp set", false, &pv_to_delete),
        ];
        for (name, is_expected_match, vol) in satisfying {
            let result = check_volume_satisfy_claim(vol, &pvc);
            assert_eq!(result.is_ok(), is_expected_match, "{name}: {result:?}");
        }
        assert_eq!(
            check_volume_satisfy_claim(&pv_to_delete, &pvc)
                .unwrap_err()
                .to_string(),
            "the volume is marked for deletion \"pv1\""
        );

        let filtering: Vec<(&str, bool, PersistentVolumeOrderedIndex)> = vec![
            (
                "pv deletionTimeStamp not set",
                true,
                create_test_vol_ordered_index(pv.clone()),
            ),
            (
                "pv deletionTimeStamp set",
                false,
                create_test_vol_ordered_index(pv_to_delete.clone()),
            ),
        ];
        for (name, is_expected_match, index) in filtering {
            let pvmatch = index
                .find_best_match_for_claim(&pvc, false)
                .unwrap_or_else(|e| panic!("testcase {name}: unexpected error {e}"));
            assert_eq!(pvmatch.is_some(), is_expected_match, "testcase {name}");
        }
    }

    #[test]
    fn test_finding_prebound_volumes() {
        let claim = claim("claim01", "1Gi", &[RWO], Some(FS));
        let claim_ref = get_reference(&claim);

        let mut pv1 = test_volume("pv1", "1Gi");
        let pv5 = test_volume("pv5", "5Gi");
        let mut pv8 = test_volume("pv8", "8Gi");
        let mut pv_bad_size = test_volume("pvBadSize", "1Mi");
        let mut pv_bad_mode = test_volume("pvBadMode", "1Gi");
        pv_spec(&mut pv_bad_mode).access_modes = Some(modes(&[ROX]));
        let mut index = index_of(vec![
            pv1.clone(),
            pv5,
            pv8.clone(),
            pv_bad_size.clone(),
            pv_bad_mode.clone(),
        ]);

        // expected exact match on size
        assert_eq!(best_name(&index, &claim), "pv1", "exact match");

        // pretend the exact match is pre-bound. should get the next size up.
        pv_spec(&mut pv1).claim_ref = claim_ref_named("bar", "foo");
        index.update(pv1.clone());
        assert_eq!(
            best_name(&index, &claim),
            "pv5",
            "exact match pre-bound elsewhere"
        );

        // pretend the exact match is available but the largest volume is pre-bound to the claim.
        pv_spec(&mut pv1).claim_ref = None;
        index.update(pv1);
        pv_spec(&mut pv8).claim_ref = claim_ref.clone();
        index.update(pv8.clone());
        assert_eq!(
            best_name(&index, &claim),
            "pv8",
            "largest pre-bound to the claim"
        );

        // pretend the volume with too small a size is pre-bound to the claim. should get the exact match.
        pv_spec(&mut pv8).claim_ref = None;
        index.update(pv8);
        pv_spec(&mut pv_bad_size).claim_ref = claim_ref.clone();
        index.update(pv_bad_size.clone());
        assert_eq!(
            best_name(&index, &claim),
            "pv1",
            "too small pre-bound to the claim"
        );

        // pretend the volume without the right access mode is pre-bound to the claim. should get the exact match.
        pv_spec(&mut pv_bad_size).claim_ref = None;
        index.update(pv_bad_size);
        pv_spec(&mut pv_bad_mode).claim_ref = claim_ref;
        index.update(pv_bad_mode);
        assert_eq!(
            best_name(&index, &claim),
            "pv1",
            "wrong mode pre-bound to the claim"
        );
    }

    #[test]
    fn test_best_match_delayed() {
        let index = index_of(create_test_volumes());
        // binding through PV controller should be delayed
        let claim = make_pvc("8G", |_| {});
        assert_eq!(best_uid(&index, &claim, true), "", "unexpected match");
    }

    #[test]
    fn test_check_access_modes() {
        let pv = PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(modes(&[RWO, RWX])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let with_modes = |m: &[&str]| {
            let m = modes(m);
            make_pvc("100G", move |pvc| pvc_spec(pvc).access_modes = Some(m))
        };
        let scenarios: Vec<(&str, bool, PersistentVolumeClaim)> = vec![
            ("success-single-mode", true, with_modes(&[RWX])),
            ("success-many-modes", true, with_modes(&[RWX, RWO])),
            ("fail-single-mode", false, with_modes(&[ROX])),
            ("fail-many-modes", false, with_modes(&[RWX, ROX])),
        ];
        for (name, should_succeed, claim) in scenarios {
            assert_eq!(
                check_access_modes(&claim, &pv),
                should_succeed,
                "test {name}"
            );
        }
    }

    /// Upstream `makeTestVolume` (component-helpers): local, RWO+ROX, Filesystem,
    /// Available or without phase.
    fn make_test_volume(
        uid: &str,
        name: &str,
        capacity: &str,
        available: bool,
        modfn: impl FnOnce(&mut PersistentVolume),
    ) -> PersistentVolume {
        let phase = available.then_some("Available");
        with(
            volume(uid, name, capacity, &[RWO, ROX], Some(FS), phase),
            modfn,
        )
    }

    /// Upstream `makeTestPersistentVolumeClaim` (component-helpers): class "wait".
    fn make_test_persistent_volume_claim(
        name: &str,
        size: &str,
        access_modes: &[&str],
        modfn: impl FnOnce(&mut PersistentVolumeClaim),
    ) -> PersistentVolumeClaim {
        let mut pvc = claim(name, size, access_modes, Some(FS));
        pvc_spec(&mut pvc).storage_class_name = Some("wait".into());
        modfn(&mut pvc);
        pvc
    }

    #[test]
    fn test_find_match_volume_with_node() {
        let volumes = vec![
            make_test_volume("local-small", "local001", "5G", true, |_| {}),
            make_test_volume("local-pd-very-large", "local002", "200E", true, |pv| {
                pv_spec(pv).storage_class_name = Some("large".into())
            }),
            make_test_volume("affinity-pv", "affinity001", "100G", true, |pv| {
                let spec = pv_spec(pv);
                spec.storage_class_name = Some("wait".into());
                spec.node_affinity = create_node_affinity("key1", "value1");
            }),
            make_test_volume("affinity-pv2", "affinity002", "150G", true, |pv| {
                let spec = pv_spec(pv);
                spec.storage_class_name = Some("wait".into());
                spec.node_affinity = create_node_affinity("key1", "value1");
            }),
            make_test_volume("affinity-prebound", "affinity003", "100G", true, |pv| {
                let spec = pv_spec(pv);
                spec.storage_class_name = Some("wait".into());
                spec.claim_ref = claim_ref_named("myns", "claim02");
                spec.node_affinity = create_node_affinity("key1", "value1");
            }),
            make_test_volume("affinity-pv3", "affinity003", "200G", true, |pv| {
                let spec = pv_spec(pv);
                spec.storage_class_name = Some("wait".into());
                spec.node_affinity = create_node_affinity("key1", "value3");
            }),
            make_test_volume("affinity-pv4", "affinity004", "200G", false, |pv| {
                let spec = pv_spec(pv);
                spec.storage_class_name = Some("wait".into());
                spec.node_affinity = create_node_affinity("key1", "value4");
            }),
        ];
        let volumes_with_vac = |name: &str| -> Vec<PersistentVolume> {
            volumes
                .iter()
                .cloned()
                .map(|pv| {
                    with(pv, |pv| {
                        pv_spec(pv).volume_attributes_class_name = Some(name.into())
                    })
                })
                .collect()
        };
        let node1 = node(&[("key1", "value1")]);
        let node2 = node(&[("key1", "value2")]);
        let node3 = node(&[("key1", "value3")]);
        let node4 = node(&[("key1", "value4")]);
        let pvc = |name: &str, access_modes: &[&str]| {
            make_test_persistent_volume_claim(name, "100G", access_modes, |_| {})
        };
        let pvc_vac = |name: &str, vac: &str| {
            let vac = vac.to_string();
            make_test_persistent_volume_claim(name, "100G", &[RWO], move |pvc| {
                pvc_spec(pvc).volume_attributes_class_name = Some(vac)
            })
        };

        // (name, expected match, claim, node, volumes, excluded volumes)
        type Scenario<'a> = (
            &'a str,
            &'a str,
            PersistentVolumeClaim,
            &'a Node,
            Vec<PersistentVolume>,
            Vec<&'a str>,
        );
        let scenarios: Vec<Scenario<'_>> = vec![
            (
                "success-match",
                "affinity-pv",
                pvc("claim01", &[RWO]),
                &node1,
                volumes.clone(),
                vec![],
            ),
            (
                "success-prebound",
                "affinity-prebound",
                pvc("claim02", &[RWO]),
                &node1,
                volumes.clone(),
                vec![],
            ),
            (
                "success-exclusion",
                "affinity-pv2",
                pvc("claim01", &[RWO]),
                &node1,
                volumes.clone(),
                vec!["affinity001"],
            ),
            (
                "fail-exclusion",
                "",
                pvc("claim01", &[RWO]),
                &node1,
                volumes.clone(),
                vec!["affinity001", "affinity002", "affinity002-vac"],
            ),
            (
                "fail-accessmode",
                "",
                pvc("claim01", &[RWX]),
                &node1,
                volumes.clone(),
                vec![],
            ),
            (
                "fail-nodeaffinity",
                "",
                pvc("claim01", &[RWO]),
                &node2,
                volumes.clone(),
                vec![],
            ),
            (
                "fail-prebound-node-affinity",
                "",
                pvc("claim02", &[RWO]),
                &node3,
                volumes.clone(),
                vec![],
            ),
            (
                "fail-nonavaliable",
                "",
                pvc("claim04", &[RWO]),
                &node4,
                volumes.clone(),
                vec![],
            ),
            (
                "success-bad-and-good-node-affinity",
                "affinity-pv3",
                pvc("claim03", &[RWO]),
                &node3,
                volumes.clone(),
                vec![],
            ),
            (
                "success-match-with-vac",
                "affinity-pv",
                pvc_vac("claim01", CLASS_GOLD),
                &node1,
                volumes_with_vac(CLASS_GOLD),
                vec![],
            ),
            // claim has a given vac and volumes don't have the same vac.
            (
                "fail-vac",
                "",
                pvc_vac("claim01", CLASS_SILVER),
                &node1,
                volumes.clone(),
                vec![],
            ),
            // claim has a given vac and volume name but the given volume has a different vac.
            (
                "fail-prebound-vac",
                "",
                pvc_vac("claim02", CLASS_SILVER),
                &node1,
                volumes_with_vac(CLASS_GOLD),
                vec![],
            ),
        ];
        assert_eq!(scenarios.len(), 12);
        for (name, expected_match, claim, node, volumes, excluded) in scenarios {
            let excluded: BTreeSet<&str> = excluded.into_iter().collect();
            let matched = find_matching_volume(&claim, &volumes, Some(node), &excluded, true)
                .unwrap_or_else(|e| panic!("scenario {name}: unexpected error {e}"));
            assert_eq!(matched.map_or("", uid), expected_match, "scenario {name}");
        }
    }

    #[test]
    fn find_matching_volume_invalid_selector() {
        let claim = make_pvc("1G", |pvc| {
            pvc_spec(pvc).selector = Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: "a".into(),
                        operator: "Bogus".into(),
                        values: None,
                    },
                ]),
            });
        });
        let volumes = create_test_volumes();
        let err =
            find_matching_volume(&claim, &volumes, None, &BTreeSet::new(), false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("error creating internal label selector for claim: myns/claim01: "),
            "{err}"
        );
    }

    #[test]
    fn test_check_volume_node_affinity() {
        let node_labels = labels(&[("test-key1", "test-value1"), ("test-key2", "test-value2")]);
        let pv = |affinity: Option<VolumeNodeAffinity>| PersistentVolume {
            metadata: ObjectMeta {
                name: Some("test-constraints".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                node_affinity: affinity,
                ..Default::default()
            }),
            status: None,
        };
        let cases: Vec<(&str, bool, PersistentVolume)> = vec![
            ("valid-nil", true, pv(None)),
            (
                "valid-no-constraints",
                true,
                pv(Some(VolumeNodeAffinity::default())),
            ),
            (
                "select-nothing",
                false,
                pv(Some(VolumeNodeAffinity {
                    required: Some(NodeSelector::default()),
                })),
            ),
            ("select-nothing-empty-terms", false, pv(terms(vec![vec![]]))),
            (
                "valid-multiple-terms",
                true,
                pv(terms(vec![
                    vec![in_requirement("test-key3", &["test-value1", "test-value3"])],
                    vec![in_requirement("test-key2", &["test-value0", "test-value2"])],
                ])),
            ),
            (
                "valid-multiple-match-expressions",
                true,
                pv(terms(vec![vec![
                    in_requirement("test-key1", &["test-value1", "test-value3"]),
                    in_requirement("test-key2", &["test-value0", "test-value2"]),
                ]])),
            ),
            (
                "invalid-multiple-match-expressions-key",
                false,
                pv(terms(vec![vec![
                    in_requirement("test-key1", &["test-value1", "test-value3"]),
                    in_requirement("test-key3", &["test-value0", "test-value2"]),
                ]])),
            ),
            (
                "invalid-multiple-match-expressions-values",
                false,
                pv(terms(vec![vec![
                    in_requirement("test-key1", &["test-value3", "test-value4"]),
                    in_requirement("test-key2", &["test-value0", "test-value2"]),
                ]])),
            ),
            (
                "invalid-multiple-terms",
                false,
                pv(terms(vec![
                    vec![in_requirement("test-key3", &["test-value1", "test-value3"])],
                    vec![in_requirement("test-key2", &["test-value0", "test-value1"])],
                ])),
            ),
        ];
        assert_eq!(cases.len(), 9);
        for (name, expect_success, pv) in cases {
            let result = check_node_affinity(&pv, node_labels.as_ref());
            assert_eq!(
                result.is_ok(),
                expect_success,
                "CheckTopology {name}: {result:?}"
            );
            if let Err(e) = result {
                assert_eq!(e.to_string(), "no matching NodeSelectorTerms");
            }
        }
    }

    #[test]
    fn test_get_access_modes_from_string() {
        let cases: [(&str, &[&str]); 4] = [
            ("ROX", &[ROX]),
            ("ROX,RWX", &[ROX, RWX]),
            ("RWO,ROX,RWX", &[RWO, ROX, RWX]),
            ("RWO,ROX,RWX,RWOP", &[RWO, ROX, RWX, RWOP]),
        ];
        for (s, expected) in cases {
            let modes = get_access_modes_from_string(s);
            for mode in expected {
                assert!(
                    contains_access_mode(&modes, mode),
                    "{s}: expected {mode} in {modes:?}"
                );
            }
            assert_eq!(get_access_modes_as_string(&modes), s, "round trip");
        }
        assert!(get_access_modes_from_string("").is_empty());
    }

    #[test]
    fn test_remove_duplicate_access_modes() {
        // Upstream's removeDuplicateAccessModes, seen through GetAccessModesAsString, which
        // also orders the modes.
        assert_eq!(
            get_access_modes_as_string(&modes(&[RWO, ROX, ROX, ROX])),
            "RWO,ROX"
        );
        assert_eq!(
            get_access_modes_as_string(&modes(&[RWOP, RWX, ROX, RWO])),
            "RWO,ROX,RWX,RWOP"
        );
        assert_eq!(get_access_modes_as_string(&modes(&["Bogus"])), "");
    }

    #[test]
    fn index_add_update_delete() {
        let mut index = PersistentVolumeOrderedIndex::new();
        index.add(test_volume("pv1", "1Gi"));
        index.add(test_volume("pv2", "1Gi"));
        assert_eq!(index.len(), 2);
        assert_eq!(index.list_by_access_modes(&modes(&[RWO])).len(), 2);

        // Changing a volume's modes moves it to the other set; the empty set goes away.
        index.update(with(test_volume("pv1", "1Gi"), |pv| {
            pv_spec(pv).access_modes = Some(modes(&[ROX, RWO]))
        }));
        assert_eq!(index.len(), 2);
        assert_eq!(index.list_by_access_modes(&modes(&[RWO])).len(), 1);
        assert_eq!(index.list_by_access_modes(&modes(&[RWO, ROX])).len(), 1);
        index.delete("pv2");
        assert!(index.list_by_access_modes(&modes(&[RWO])).is_empty());
        assert_eq!(
            index.all_possible_matching_access_modes(&modes(&[RWO])),
            vec![modes(&[RWO, ROX])]
        );
        assert!(index.delete("pv2").is_none());
        assert!(index.get_by_key("pv1").is_some());
        assert_eq!(index.list().count(), 1);
        assert!(!index.is_empty());
    }

    #[test]
    fn is_volume_bound_to_claim_uid() {
        let mut claim = claim("claim01", "1G", &[RWO], Some(FS));
        claim.metadata.uid = Some("uid-1".into());
        let bound_to = |claim_ref: Option<ObjectReference>| {
            with(test_volume("pv", "1G"), |pv| {
                pv_spec(pv).claim_ref = claim_ref
            })
        };
        let mut by_uid = get_reference(&claim);
        assert!(is_volume_bound_to_claim(&bound_to(by_uid.clone()), &claim));
        by_uid.as_mut().unwrap().uid = Some("uid-2".into());
        assert!(
            !is_volume_bound_to_claim(&bound_to(by_uid), &claim),
            "other UID"
        );
        assert!(
            is_volume_bound_to_claim(&bound_to(claim_ref_named("myns", "claim01")), &claim),
            "no UID in the reference: pre-bound"
        );
        assert!(!is_volume_bound_to_claim(&bound_to(None), &claim));
        assert_eq!(claim_to_claim_key(&claim), "myns/claim01");
        assert_eq!(
            claimref_to_claim_key(&claim_ref_named("myns", "claim01").unwrap()),
            "myns/claim01"
        );
    }
}
