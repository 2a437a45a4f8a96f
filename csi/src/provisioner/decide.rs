//! The provisioner's decisions, pure functions over the objects the shell watches
//! (external-provisioner's pkg/controller/controller.go and sig-storage-lib-external-
//! provisioner's controller/controller.go, in distributed mode): whether this node
//! provisions a claim, the CreateVolumeRequest for it, the PersistentVolume from the
//! answer, whether a volume is this node's to delete, and what a CreateVolume error means.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rekube_crds::quantity::parse_quantity;
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, StorageClass};

use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use crate::csi::{CapacityRange, CreateVolumeRequest, Topology, TopologyRequirement, Volume};
use crate::topology::TOPOLOGY_KEY;

/// The claim annotations naming the provisioner the PV controller hands the claim to (and
/// its beta spelling), the node the scheduler selected, the PV annotation naming the
/// provisioner that made it, and the finalizer marking the provisioner as the PV's owner
/// with clean-up duty: the names shared with rekube-controllers.
pub use rekube_crds::storage_keys::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_DYNAMICALLY_PROVISIONED, ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER, PV_DELETION_PROTECTION_FINALIZER as FINALIZER_PV,
};
/// The PV annotations upstream sets for the deletion secrets (empty: rekube-csi has none).
pub const ANN_DELETION_SECRET_NAME: &str = "volume.kubernetes.io/provisioner-deletion-secret-name";
pub const ANN_DELETION_SECRET_NAMESPACE: &str =
    "volume.kubernetes.io/provisioner-deletion-secret-namespace";
/// The volume attribute naming the provisioner instance that made the volume.
pub const PROVISIONER_ID_KEY: &str = "storage.kubernetes.io/csiProvisionerIdentity";
/// The prefix of the parameters meant for the provisioner, not the driver.
pub const CSI_PARAMETER_PREFIX: &str = "csi.storage.k8s.io/";
/// The fsType parameter.
pub const PREFIXED_FS_TYPE_KEY: &str = "csi.storage.k8s.io/fstype";
/// The provisioner's PV name prefix (`--volume-name-prefix`, default `pvc`).
pub const VOLUME_NAME_PREFIX: &str = "pvc";

/// The `csi.storage.k8s.io/` parameters the provisioner knows (and strips):
/// external-provisioner v6.4.0's removePrefixedParameters list, the fsType (which becomes
/// the capabilities' `fs_type` and the PV's `spec.csi.fsType`) and the secrets' names
/// (rekube-csi takes no secrets; known all the same, as upstream knows them).
const KNOWN_PREFIXED_KEYS: &[&str] = &[
    "csi.storage.k8s.io/fstype",
    "csi.storage.k8s.io/provisioner-secret-name",
    "csi.storage.k8s.io/provisioner-secret-namespace",
    "csi.storage.k8s.io/controller-publish-secret-name",
    "csi.storage.k8s.io/controller-publish-secret-namespace",
    "csi.storage.k8s.io/node-stage-secret-name",
    "csi.storage.k8s.io/node-stage-secret-namespace",
    "csi.storage.k8s.io/node-publish-secret-name",
    "csi.storage.k8s.io/node-publish-secret-namespace",
    "csi.storage.k8s.io/controller-expand-secret-name",
    "csi.storage.k8s.io/controller-expand-secret-namespace",
    "csi.storage.k8s.io/secret-name",
    "csi.storage.k8s.io/secret-namespace",
    "csi.storage.k8s.io/node-expand-secret-name",
    "csi.storage.k8s.io/node-expand-secret-namespace",
    "csi.storage.k8s.io/controller-modify-secret-name",
    "csi.storage.k8s.io/controller-modify-secret-namespace",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    #[error("corrupted PVC object, it is missing UID")]
    MissingUid,
    #[error("claim Selector is not supported")]
    Selector,
    #[error(
        "claim {0} has a data source ({1}): rekube-csi reports neither CLONE_VOLUME nor snapshots"
    )]
    DataSource(String, String),
    #[error(
        "fstype specified in parameters with both \"fstype\" and \"csi.storage.k8s.io/fstype\" keys"
    )]
    FsTypeTwice,
    #[error("found unknown parameter key {0:?} with reserved namespace csi.storage.k8s.io/")]
    UnknownPrefixedParameter(String),
    #[error("claim {0}: CSI does not support ReadWriteOncePod with other access modes")]
    ReadWriteOncePodWithOthers(String),
    #[error("claim {0}: unknown access mode {1:?}")]
    AccessMode(String, String),
    #[error("claim {0}: invalid storage request {1:?}")]
    Request(String, String),
    #[error(
        "topology labels from selected node {0:?} do not match topology keys from the driver: no label {TOPOLOGY_KEY}"
    )]
    NodeTopology(String),
    #[error("created volume capacity {0} less than requested capacity {1}")]
    CapacityTooSmall(i64, i64),
    #[error("create volume response for claim {0} has no volume")]
    NoVolume(String),
}

/// What this node's provisioner does with a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Not this node's (another provisioner's, another node's, bound, being deleted).
    Ignore,
    /// Already provisioned: the PV `pvc-<uid>` exists.
    AlreadyProvisioned,
    /// Provision it, as PV `pv_name`.
    Provision { pv_name: String },
    /// A claim of this driver without a selected node in an Immediate class: distributed
    /// provisioning cannot choose a node (the event says so).
    NeedsWaitForFirstConsumer,
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The claim's provisioner annotation (upstream reads the GA one, then the beta one).
pub fn claim_provisioner(claim: &PersistentVolumeClaim) -> Option<&str> {
    annotation(&claim.metadata, ANN_STORAGE_PROVISIONER)
        .or_else(|| annotation(&claim.metadata, ANN_BETA_STORAGE_PROVISIONER))
}

/// The claim's class name (spec.storageClassName, or the beta annotation).
pub fn claim_class(claim: &PersistentVolumeClaim) -> String {
    annotation(&claim.metadata, "volume.beta.kubernetes.io/storage-class")
        .map(str::to_string)
        .or_else(|| claim.spec.as_ref()?.storage_class_name.clone())
        .unwrap_or_default()
}

/// `namespace/name` of an object, as klog.KObj prints it.
pub fn key(meta: &ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

/// upstream makeVolumeName with `--volume-name-uuid-length=-1`: `pvc-<uid>`.
pub fn make_volume_name(claim_uid: &str) -> Result<String, ProvisionError> {
    if claim_uid.is_empty() {
        return Err(ProvisionError::MissingUid);
    }
    Ok(format!("{VOLUME_NAME_PREFIX}-{claim_uid}"))
}

/// Whether this node provisions `claim` (the lib's shouldProvision, the CSI provisioner's
/// ShouldProvision and checkNode in distributed mode, and provisionClaimOperation's
/// "PersistentVolume already exists" check). `pv_exists` answers whether a PV of that
/// name is known; `class` is the claim's StorageClass when it exists.
pub fn should_provision(
    claim: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    driver_name: &str,
    node_id: &str,
    pv_exists: impl Fn(&str) -> bool,
) -> ClaimDecision {
    let bound = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    if bound || claim.metadata.deletion_timestamp.is_some() {
        return ClaimDecision::Ignore;
    }
    if claim_provisioner(claim) != Some(driver_name) {
        return ClaimDecision::Ignore;
    }
    match annotation(&claim.metadata, ANN_SELECTED_NODE).filter(|n| !n.is_empty()) {
        Some(node) if node == node_id => {}
        Some(_) => return ClaimDecision::Ignore,
        None => {
            let delayed = class
                .and_then(|c| c.volume_binding_mode.as_deref())
                .is_some_and(|m| m == "WaitForFirstConsumer");
            // A WaitForFirstConsumer claim waits for the scheduler; without a class the
            // claim cannot be provisioned by anyone (the PV controller reports it).
            return if delayed || class.is_none() {
                ClaimDecision::Ignore
            } else {
                ClaimDecision::NeedsWaitForFirstConsumer
            };
        }
    }
    let Ok(pv_name) = make_volume_name(claim.metadata.uid.as_deref().unwrap_or_default()) else {
        // Without a UID nothing can be named; provisioning reports the error.
        return ClaimDecision::Provision {
            pv_name: String::new(),
        };
    };
    if pv_exists(&pv_name) {
        ClaimDecision::AlreadyProvisioned
    } else {
        ClaimDecision::Provision { pv_name }
    }
}

/// upstream removePrefixedParameters: the class's parameters without the known
/// `csi.storage.k8s.io/` ones; an unknown one under that prefix is an error.
pub fn remove_prefixed_parameters(
    parameters: &BTreeMap<String, String>,
) -> Result<HashMap<String, String>, ProvisionError> {
    let mut out = HashMap::new();
    for (k, v) in parameters {
        if k.starts_with(CSI_PARAMETER_PREFIX) {
            if !KNOWN_PREFIXED_KEYS.contains(&k.as_str()) {
                return Err(ProvisionError::UnknownPrefixedParameter(k.clone()));
            }
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

/// The fsType the class asks for: `csi.storage.k8s.io/fstype` or the deprecated `fstype`
/// (any case); both is an error.
pub fn fs_type(parameters: &BTreeMap<String, String>) -> Result<String, ProvisionError> {
    let found: Vec<&String> = parameters
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("fstype") || k.as_str() == PREFIXED_FS_TYPE_KEY)
        .map(|(_, v)| v)
        .collect();
    match found.as_slice() {
        [] => Ok(String::new()),
        [one] => Ok((*one).clone()),
        _ => Err(ProvisionError::FsTypeTwice),
    }
}

/// csi-lib-utils accessmodes.ToCSIAccessMode for one PV access mode.
pub fn csi_access_mode(
    claim: &str,
    mode: &str,
    supports_single_node_multi_writer: bool,
) -> Result<Mode, ProvisionError> {
    Ok(match mode {
        "ReadWriteOncePod" if supports_single_node_multi_writer => Mode::SingleNodeSingleWriter,
        "ReadWriteOncePod" => Mode::SingleNodeWriter,
        "ReadWriteOnce" if supports_single_node_multi_writer => Mode::SingleNodeMultiWriter,
        "ReadWriteOnce" => Mode::SingleNodeWriter,
        "ReadOnlyMany" => Mode::MultiNodeReaderOnly,
        "ReadWriteMany" => Mode::MultiNodeMultiWriter,
        other => return Err(ProvisionError::AccessMode(claim.into(), other.into())),
    })
}

fn is_block(claim: &PersistentVolumeClaim) -> bool {
    claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block")
}

/// The claim's storage request in bytes (0 when it names none).
pub fn requested_bytes(claim: &PersistentVolumeClaim) -> Result<i64, ProvisionError> {
    let Some(q) = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    else {
        return Ok(0);
    };
    parse_quantity(&q.0)
        .map(|a| a.value())
        .map_err(|_| ProvisionError::Request(key(&claim.metadata), q.0.clone()))
}

/// The selected node's topology: its `topology.csi.rekube.io/node` label (upstream reads
/// the labels named by the CSINode's topology keys; rekube-csi has one key).
pub fn node_topology(node: &Node) -> Result<Topology, ProvisionError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let value = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TOPOLOGY_KEY))
        .ok_or(ProvisionError::NodeTopology(name))?;
    Ok(Topology {
        segments: HashMap::from([(TOPOLOGY_KEY.to_string(), value.clone())]),
    })
}

/// upstream prepareProvision: the CreateVolumeRequest for `claim` of `class` on the
/// selected `node`, and the fsType the PV records.
pub fn create_volume_request(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &Node,
    supports_single_node_multi_writer: bool,
) -> Result<(CreateVolumeRequest, String), ProvisionError> {
    let claim_key = key(&claim.metadata);
    let spec = claim.spec.clone().unwrap_or_default();
    let source_kind = (spec.data_source.as_ref().map(|s| s.kind.clone()))
        .or_else(|| spec.data_source_ref.as_ref().map(|s| s.kind.clone()));
    if let Some(kind) = source_kind {
        return Err(ProvisionError::DataSource(claim_key, kind));
    }
    if spec.selector.is_some() {
        return Err(ProvisionError::Selector);
    }
    let name = make_volume_name(claim.metadata.uid.as_deref().unwrap_or_default())?;
    let empty = BTreeMap::new();
    let class_parameters = class.parameters.as_ref().unwrap_or(&empty);
    let fs_type = fs_type(class_parameters)?;
    let required_bytes = requested_bytes(claim)?;
    let mount_flags = class.mount_options.clone().unwrap_or_default();
    let mut volume_capabilities = Vec::new();
    let modes = spec.access_modes.clone().unwrap_or_default();
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        return Err(ProvisionError::ReadWriteOncePodWithOthers(claim_key));
    }
    for mode in &modes {
        let mode = csi_access_mode(&claim_key, mode, supports_single_node_multi_writer)?;
        let access_type = if is_block(claim) {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: fs_type.clone(),
                mount_flags: mount_flags.clone(),
                ..Default::default()
            })
        };
        volume_capabilities.push(crate::csi::VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(access_type),
        });
    }
    let topology = node_topology(node)?;
    let request = CreateVolumeRequest {
        name,
        capacity_range: Some(CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        volume_capabilities,
        parameters: remove_prefixed_parameters(class_parameters)?,
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![topology.clone()],
            preferred: vec![topology],
        }),
        ..Default::default()
    };
    Ok((request, fs_type))
}

/// upstream GenerateVolumeNodeAffinity: one term per accessible topology, one `In`
/// requirement per segment (keys sorted).
pub fn volume_node_affinity(accessible: &[Topology]) -> Option<VolumeNodeAffinity> {
    let terms: Vec<NodeSelectorTerm> = accessible
        .iter()
        .filter(|t| !t.segments.is_empty())
        .map(|t| {
            let segments: BTreeMap<&String, &String> = t.segments.iter().collect();
            NodeSelectorTerm {
                match_expressions: Some(
                    segments
                        .into_iter()
                        .map(|(k, v)| NodeSelectorRequirement {
                            key: k.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        })
                        .collect(),
                ),
                match_fields: None,
            }
        })
        .collect();
    if accessible.is_empty() {
        return None;
    }
    Some(VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: terms,
        }),
    })
}

/// upstream bytesToQuantity: `resource.NewQuantity(bytes, BinarySI)` printed canonically
/// (the largest binary suffix that is exact; below 1024 the decimal form).
pub fn bytes_to_quantity(bytes: i64) -> Quantity {
    if bytes.abs() < 1024 {
        let (mut n, mut suffix) = (bytes, "");
        if n != 0 && n % 1000 == 0 {
            n /= 1000;
            suffix = "k";
        }
        return Quantity(format!("{n}{suffix}"));
    }
    let mut n = bytes;
    let mut i = 0;
    while n % 1024 == 0 && i < 6 {
        n /= 1024;
        i += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
    Quantity(format!("{n}{suffix}"))
}

/// What the PV built from a CreateVolume answer needs besides the claim and class.
#[derive(Debug, Clone)]
pub struct VolumeContext<'a> {
    pub driver_name: &'a str,
    /// The volume attribute `storage.kubernetes.io/csiProvisionerIdentity`.
    pub identity: &'a str,
    pub fs_type: &'a str,
    /// `--pv-label`s.
    pub labels: &'a BTreeMap<String, String>,
    pub required_bytes: i64,
}

/// upstream Provision + provisionClaimOperation: the PV for `claim` from the driver's
/// `volume`: the CSI source, capacity, access modes, volumeMode, mount options, reclaim
/// policy, class, node affinity, pre-bound claimRef, provisioned-by and the finalizer.
/// A volume smaller than asked is an error (the caller deletes it).
pub fn persistent_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    pv_name: &str,
    volume: Option<&Volume>,
    context: &VolumeContext,
) -> Result<PersistentVolume, ProvisionError> {
    let volume = volume.ok_or_else(|| ProvisionError::NoVolume(key(&claim.metadata)))?;
    let mut capacity = volume.capacity_bytes;
    if capacity == 0 {
        capacity = context.required_bytes;
    } else if capacity < context.required_bytes {
        return Err(ProvisionError::CapacityTooSmall(
            capacity,
            context.required_bytes,
        ));
    }
    let mut attributes =
        BTreeMap::from([(PROVISIONER_ID_KEY.to_string(), context.identity.into())]);
    attributes.extend(volume.volume_context.clone());
    let spec = claim.spec.clone().unwrap_or_default();
    let block = is_block(claim);
    let claim_ref = ObjectReference {
        api_version: Some(rekube_crds::API_VERSION.into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    };
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.into()),
            labels: (!context.labels.is_empty()).then(|| context.labels.clone()),
            annotations: Some(BTreeMap::from([
                (
                    ANN_DYNAMICALLY_PROVISIONED.to_string(),
                    class.provisioner.clone(),
                ),
                (ANN_DELETION_SECRET_NAME.to_string(), String::new()),
                (ANN_DELETION_SECRET_NAMESPACE.to_string(), String::new()),
            ])),
            finalizers: Some(vec![FINALIZER_PV.into()]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            mount_options: class.mount_options.clone(),
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                bytes_to_quantity(capacity),
            )])),
            csi: Some(CSIPersistentVolumeSource {
                driver: context.driver_name.into(),
                volume_handle: volume.volume_id.clone(),
                volume_attributes: Some(attributes),
                fs_type: (!block && !context.fs_type.is_empty())
                    .then(|| context.fs_type.to_string()),
                read_only: None,
                ..Default::default()
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            node_affinity: volume_node_affinity(&volume.accessible_topology),
            volume_mode: spec.volume_mode.clone(),
            storage_class_name: Some(claim_class(claim)),
            claim_ref: Some(claim_ref),
            ..Default::default()
        }),
        status: None,
    })
}

/// upstream VolumeIsAccessible, strict for a node-local driver: the PV's node affinity
/// must exist and one of its terms must be satisfied by this node's topology.
pub fn volume_is_on_node(pv: &PersistentVolume, node_id: &str) -> bool {
    let Some(terms) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| &r.node_selector_terms)
    else {
        return false;
    };
    let labels = HashMap::from([(TOPOLOGY_KEY.to_string(), node_id.to_string())]);
    terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        !exprs.is_empty()
            && exprs.iter().all(|e| {
                let value = labels.get(&e.key);
                let values = e.values.as_deref().unwrap_or_default();
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    })
}

fn has_finalizer(pv: &PersistentVolume) -> bool {
    pv.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER_PV))
}

/// The lib's shouldDelete with the CSI provisioner's Delete checks in distributed mode:
/// provisioned by this driver, a CSI volume of it, Released, reclaim policy Delete, on
/// this node, and not already deleted (being deleted without the finalizer).
pub fn should_delete(pv: &PersistentVolume, driver_name: &str, node_id: &str) -> bool {
    if annotation(&pv.metadata, ANN_DYNAMICALLY_PROVISIONED) != Some(driver_name) {
        return false;
    }
    let Some(spec) = pv.spec.as_ref() else {
        return false;
    };
    if spec.csi.as_ref().map(|c| c.driver.as_str()) != Some(driver_name) {
        return false;
    }
    if pv.metadata.deletion_timestamp.is_some() && !has_finalizer(pv) {
        return false;
    }
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    phase == Some("Released")
        && spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete")
        && volume_is_on_node(pv, node_id)
}

/// The lib's handleProtectionFinalizer for this node's volumes: the finalizers the PV
/// should have when they differ from what it has. The finalizer is added to a Bound PV
/// with policy Delete that is not being deleted, and removed when the policy is Retain
/// or Recycle.
pub fn protection_finalizers(pv: &PersistentVolume) -> Option<Vec<String>> {
    let spec = pv.spec.as_ref()?;
    let policy = spec.persistent_volume_reclaim_policy.as_deref();
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let mut finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
    if policy == Some("Delete")
        && pv.metadata.deletion_timestamp.is_none()
        && phase == Some("Bound")
        && !has_finalizer(pv)
    {
        finalizers.push(FINALIZER_PV.into());
        return Some(finalizers);
    }
    if matches!(policy, Some("Retain" | "Recycle")) && has_finalizer(pv) {
        finalizers.retain(|f| f != FINALIZER_PV);
        return Some(finalizers);
    }
    None
}

/// upstream ProvisioningState: what a failed CreateVolume leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisioningState {
    /// Failed for sure; retried with back-off.
    Finished,
    /// May still be in progress in the driver; retried with back-off.
    InBackground,
    /// May succeed on another node: the selected-node annotation is removed so the
    /// scheduler picks again.
    Reschedule,
}

/// upstream checkError: the state after a CreateVolume error with gRPC `code` (None: not
/// a gRPC status, the call may not have reached the driver). `may_reschedule`: the claim
/// has a selected node (the driver reports topology).
pub fn check_error(code: Option<tonic::Code>, may_reschedule: bool) -> ProvisioningState {
    use tonic::Code;
    match code {
        None => ProvisioningState::InBackground,
        Some(Code::ResourceExhausted) if may_reschedule => ProvisioningState::Reschedule,
        Some(Code::Cancelled | Code::DeadlineExceeded | Code::Unavailable | Code::Aborted) => {
            ProvisioningState::InBackground
        }
        Some(_) => ProvisioningState::Finished,
    }
}

/// A gRPC status as grpc-go prints it (what upstream's events carry).
pub fn grpc_error(status: &tonic::Status) -> String {
    format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    )
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
