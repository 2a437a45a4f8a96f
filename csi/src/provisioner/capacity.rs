//! Storage capacity tracking (KEP-1472), pure: external-provisioner v5.3.0's
//! pkg/capacity (capacity.go, topology.go) and cmd/csi-provisioner's managed-by name, as
//! decisions over plain values. The provisioner publishes one CSIStorageCapacity per
//! (StorageClass of this driver, topology segment) holding the driver's GetCapacity answer
//! for the class's parameters in that segment; in distributed mode the one segment is the
//! node's own (NodeGetInfo's `accessible_topology`), and the objects are told apart from
//! other nodes' by their `csi.storage.k8s.io/managed-by` label,
//! `external-provisioner-<node>`. The scheduler's VolumeBinding plugin reads them for
//! drivers whose CSIDriver says `storageCapacity: true`.
//!
//! Upstream keeps a map from work item to the object serving it, fed by informer events;
//! here [`plan`] derives the same map from the objects at hand each time (the oldest object
//! of an item serves it, later duplicates are obsolete, as upstream's deletes them), and
//! [`sync_capacity`] is syncCapacity's decision for one item. The shell
//! ([`super::capacity_controller`]) lists, calls GetCapacity and writes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, VolumeNodeAffinity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use rekube_crds::quantity::amount;
use rekube_crds::{CSIStorageCapacity, StorageClass};

use super::decide::bytes_to_quantity;
use crate::csi::{GetCapacityRequest, GetCapacityResponse, Topology};

/// upstream `DriverNameLabel`.
pub const DRIVER_NAME_LABEL: &str = "csi.storage.k8s.io/drivername";
/// upstream `ManagedByLabel`.
pub const MANAGED_BY_LABEL: &str = "csi.storage.k8s.io/managed-by";
/// The objects' generateName.
pub const GENERATE_NAME: &str = "csisc-";
/// The managed-by value's base (`managedByID`), `-<node>` added in distributed mode.
pub const MANAGED_BY: &str = "external-provisioner";
/// validation.DNS1035LabelMaxLength, the managed-by value's bound.
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;
/// upstream `--capacity-poll-interval`'s default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// upstream `--capacity-ownerref-level`'s default: the pod's controller (a DaemonSet).
pub const DEFAULT_OWNERREF_LEVEL: i32 = 1;

/// cmd/csi-provisioner's getNameWithMaxLength: `base-suffix`, or when longer than
/// `max_length` a prefix of `base`, the FNV-1a 32 hash of `base` and the suffix; a suffix
/// too long for that is dropped for the hash of the whole name.
pub fn name_with_max_length(base: &str, suffix: &str, max_length: usize) -> String {
    let name = if base.is_empty() {
        suffix.to_string()
    } else {
        format!("{base}-{suffix}")
    };
    if name.len() <= max_length {
        return name;
    }
    let hash = |s: &str| format!("{:08x}", rekube_crds::fnv::fnv1a_32(s.as_bytes()));
    let base_length = max_length as i64 - 10 - suffix.len() as i64;
    if base_length <= 0 {
        let prefix = &base[..base.len().min(max_length.saturating_sub(9))];
        let short = if prefix.is_empty() {
            hash(&name)
        } else {
            format!("{prefix}-{}", hash(&name))
        };
        return short[..short.len().min(max_length)].to_string();
    }
    format!("{}-{}-{suffix}", &base[..base_length as usize], hash(base))
}

/// The managed-by label of this node's provisioner (distributed mode).
pub fn managed_by_id(node: &str) -> String {
    name_with_max_length(MANAGED_BY, node, DNS1035_LABEL_MAX_LENGTH)
}

/// A topology segment: key/value pairs, ordered by key (upstream topology.Segment).
pub type Segment = BTreeMap<String, String>;

/// The segment's label selector (upstream `GetLabelSelector`): its pairs as matchLabels.
pub fn segment_selector(segment: &Segment) -> LabelSelector {
    LabelSelector {
        match_labels: Some(segment.clone()),
        match_expressions: None,
    }
}

/// One object that should exist: a class of the driver in a segment (upstream `workItem`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkItem {
    pub segment: Segment,
    pub storage_class_name: String,
}

impl WorkItem {
    /// Whether `capacity` is this item's object (upstream `workItem.equals`): same class,
    /// nodeTopology the segment's selector.
    pub fn equals(&self, capacity: &CSIStorageCapacity) -> bool {
        let Some(topology) = &capacity.node_topology else {
            return false;
        };
        self.storage_class_name == capacity.storage_class_name
            && topology
                .match_expressions
                .as_deref()
                .unwrap_or_default()
                .is_empty()
            && topology.match_labels.clone().unwrap_or_default() == self.segment
    }
}

/// Whether the class gets objects (upstream onSCAddOrUpdate and onTopologyChanges): its
/// provisioner is the driver, and it is not Immediate unless `immediate_binding`
/// (`--capacity-for-immediate-binding`).
pub fn wanted_class(class: &StorageClass, driver: &str, immediate_binding: bool) -> bool {
    class.provisioner == driver
        && (immediate_binding || class.volume_binding_mode.as_deref() != Some("Immediate"))
}

/// Every object that should exist: each wanted class in each segment.
pub fn work_items(
    classes: &[&StorageClass],
    segments: &[Segment],
    driver: &str,
    immediate_binding: bool,
) -> BTreeSet<WorkItem> {
    classes
        .iter()
        .filter(|c| wanted_class(c, driver, immediate_binding))
        .flat_map(|c| {
            segments.iter().map(|s| WorkItem {
                segment: s.clone(),
                storage_class_name: c.metadata.name.clone().unwrap_or_default(),
            })
        })
        .collect()
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether this provisioner manages the object (upstream `isManaged`): both labels ours.
/// Others are left alone.
pub fn is_managed(capacity: &CSIStorageCapacity, driver: &str, managed_by: &str) -> bool {
    label(&capacity.metadata, DRIVER_NAME_LABEL) == Some(driver)
        && label(&capacity.metadata, MANAGED_BY_LABEL) == Some(managed_by)
}

/// What exists against what should: each item with the object serving it (`None`: to
/// create), and the managed objects no item needs (a class or segment gone, a duplicate),
/// to delete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub items: BTreeMap<WorkItem, Option<CSIStorageCapacity>>,
    pub obsolete: Vec<CSIStorageCapacity>,
}

impl Plan {
    /// upstream's `csistoragecapacities_desired_goal`: objects that should exist.
    pub fn goal(&self) -> usize {
        self.items.len()
    }

    /// `csistoragecapacities_desired_current`: those that do.
    pub fn current(&self) -> usize {
        self.items.values().filter(|o| o.is_some()).count()
    }
}

/// upstream onCAddOrUpdate over every object at once: the managed objects, oldest first
/// (then by name), each serve the first item they equal that has none yet; the rest are
/// obsolete. Foreign objects are ignored.
pub fn plan(
    items: &BTreeSet<WorkItem>,
    objects: &[CSIStorageCapacity],
    driver: &str,
    managed_by: &str,
) -> Plan {
    let mut out = Plan {
        items: items.iter().map(|i| (i.clone(), None)).collect(),
        obsolete: Vec::new(),
    };
    let mut managed: Vec<&CSIStorageCapacity> = objects
        .iter()
        .filter(|c| is_managed(c, driver, managed_by))
        .collect();
    managed.sort_by_key(|c| {
        (
            c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            c.metadata.name.clone(),
        )
    });
    for capacity in managed {
        match out
            .items
            .iter_mut()
            .find(|(item, served)| served.is_none() && item.equals(capacity))
        {
            Some((_, served)) => *served = Some(capacity.clone()),
            None => out.obsolete.push(capacity.clone()),
        }
    }
    out
}

/// The GetCapacity call of an item (upstream syncCapacity): the class's parameters, no
/// capabilities (capacity is assumed independent of them), the segment as topology.
pub fn get_capacity_request(item: &WorkItem, class: &StorageClass) -> GetCapacityRequest {
    GetCapacityRequest {
        volume_capabilities: Vec::new(),
        parameters: class
            .parameters
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        accessible_topology: Some(Topology {
            segments: item.segment.clone().into_iter().collect(),
        }),
    }
}

/// Whether the object names `owner` as its controller (upstream `isOwnedByUs`).
pub fn is_owned_by(capacity: &CSIStorageCapacity, owner: &OwnerReference) -> bool {
    capacity
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == owner.uid)
}

/// What an item's sync writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Sync {
    /// A new object (generateName `csisc-`).
    Create(Box<CSIStorageCapacity>),
    /// The existing object `name` with these capacity, maximumVolumeSize and owners.
    Update {
        name: String,
        capacity: Quantity,
        maximum_volume_size: Option<Quantity>,
        owner_references: Option<Vec<OwnerReference>>,
    },
    /// It holds the answer already, and the owner.
    Unchanged,
}

fn same_size(a: Option<&Quantity>, b: Option<&Quantity>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => amount(a).value() == amount(b).value(),
        _ => false,
    }
}

/// The identity of the objects this provisioner writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Publisher<'a> {
    pub driver: &'a str,
    pub managed_by: &'a str,
    pub namespace: &'a str,
    /// `--capacity-ownerref-level`'s object, if any.
    pub owner: Option<&'a OwnerReference>,
}

/// upstream syncCapacity's decision for an item, given the object serving it and the
/// driver's answer: create one (labels, class, the segment's selector, the sizes as
/// BinarySI quantities, the owner); or update the sizes, adding the owner when missing;
/// or nothing when both are right.
pub fn sync_capacity(
    item: &WorkItem,
    existing: Option<&CSIStorageCapacity>,
    answer: &GetCapacityResponse,
    publisher: &Publisher<'_>,
) -> Sync {
    let capacity = bytes_to_quantity(answer.available_capacity);
    let maximum = answer.maximum_volume_size.map(bytes_to_quantity);
    let Some(existing) = existing else {
        return Sync::Create(Box::new(CSIStorageCapacity {
            metadata: ObjectMeta {
                generate_name: Some(GENERATE_NAME.into()),
                namespace: Some(publisher.namespace.into()),
                labels: Some(BTreeMap::from([
                    (DRIVER_NAME_LABEL.to_string(), publisher.driver.to_string()),
                    (
                        MANAGED_BY_LABEL.to_string(),
                        publisher.managed_by.to_string(),
                    ),
                ])),
                owner_references: publisher.owner.map(|o| vec![o.clone()]),
                ..Default::default()
            },
            storage_class_name: item.storage_class_name.clone(),
            node_topology: Some(segment_selector(&item.segment)),
            capacity: Some(capacity),
            maximum_volume_size: maximum,
        }));
    };
    let owned = publisher.owner.is_none_or(|o| is_owned_by(existing, o));
    if same_size(existing.capacity.as_ref(), Some(&capacity))
        && same_size(existing.maximum_volume_size.as_ref(), maximum.as_ref())
        && owned
    {
        return Sync::Unchanged;
    }
    let owner_references = match publisher.owner {
        Some(owner) if !owned => {
            let mut owners = existing
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            owners.push(owner.clone());
            Some(owners)
        }
        _ => existing.metadata.owner_references.clone(),
    };
    Sync::Update {
        name: existing.metadata.name.clone().unwrap_or_default(),
        capacity,
        maximum_volume_size: maximum,
        owner_references,
    }
}

/// upstream termToSegment: a node selector term of a provisioned volume's node affinity
/// (controller.GenerateVolumeNodeAffinity's) as a segment: only matchExpressions, each
/// `In` with exactly one value.
pub fn term_to_segment(term: &NodeSelectorTerm) -> Result<Segment, String> {
    if let Some(fields) = term.match_fields.as_ref().filter(|f| !f.is_empty()) {
        return Err(format!("matchFields not empty: {fields:?}"));
    }
    let mut segment = Segment::new();
    for m in term.match_expressions.iter().flatten() {
        if m.operator != "In" {
            return Err(format!("unexpected operator: {}", m.operator));
        }
        match m.values.as_deref().unwrap_or_default() {
            [value] => {
                segment.insert(m.key.clone(), value.clone());
            }
            values => return Err(format!("need exactly one label value, got: {values:?}")),
        }
    }
    Ok(segment)
}

/// upstream refreshTopology: the items in a segment of a provisioned or deleted volume's
/// node affinity, to refresh now (terms that are not segments are skipped, as upstream
/// logs and skips them).
pub fn refresh_topology(
    items: &BTreeSet<WorkItem>,
    affinity: &VolumeNodeAffinity,
) -> Vec<WorkItem> {
    let terms = affinity
        .required
        .as_ref()
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    let segments: Vec<Segment> = terms
        .iter()
        .filter_map(|t| term_to_segment(t).ok())
        .collect();
    items
        .iter()
        .filter(|i| segments.contains(&i.segment))
        .cloned()
        .collect()
}

/// upstream refreshSC: the items of a class (after provisioning failed, or when the
/// volume's topology is unknown).
pub fn refresh_class(items: &BTreeSet<WorkItem>, class: &str) -> Vec<WorkItem> {
    items
        .iter()
        .filter(|i| i.storage_class_name == class)
        .cloned()
        .collect()
}

/// owner.Lookup's step: the controlling owner of an object (its ownerReference with
/// `controller: true`), as a reference that is itself the controller.
pub fn controller_of(meta: &ObjectMeta) -> Option<OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerReference {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        })
}

#[cfg(test)]
#[path = "capacity_tests.rs"]
mod tests;
