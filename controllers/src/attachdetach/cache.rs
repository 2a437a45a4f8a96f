//! upstream cache/desired_state_of_world.go and cache/actual_state_of_world.go: the
//! volumes that should be attached to each managed node (and the pods that want them),
//! and the volumes attached (or perhaps attached) to each node, with what the node's
//! `status.volumesAttached` should list. Plain data, no locks: the controller keeps both
//! behind one mutex; time is passed in (`now`) so the detach timer is testable.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::Error;

/// `v1.UniqueVolumeName`: `kubernetes.io/csi/<driver>^<handle>` for CSI volumes.
pub type UniqueVolumeName = String;
/// `types.NodeName`.
pub type NodeName = String;
/// `types.UniquePodName`: the pod's UID.
pub type UniquePodName = String;

/// What the controller knows of an attachable volume (upstream's `volume.Spec` of a CSI
/// PersistentVolume, reduced to what attach and detach read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The PersistentVolume (upstream `Spec.Name()`, in messages).
    pub pv_name: String,
    pub driver: String,
    pub volume_handle: String,
    /// The PV's access modes (upstream `IsMultiAttachAllowed`).
    pub access_modes: Vec<String>,
}

impl VolumeSpec {
    /// upstream `GetUniqueVolumeNameFromSpec` for the CSI plugin.
    pub fn unique_name(&self) -> UniqueVolumeName {
        rekube_crds::storage_keys::csi_unique_volume_name(&self.driver, &self.volume_handle)
    }
}

/// upstream `util.IsMultiAttachAllowed`: unknown (no spec, or a PV without access modes)
/// allows it; otherwise only ReadWriteMany or ReadOnlyMany.
pub fn is_multi_attach_allowed(spec: Option<&VolumeSpec>) -> bool {
    let Some(spec) = spec else { return true };
    spec.access_modes.is_empty()
        || spec
            .access_modes
            .iter()
            .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany")
}

/// A pod of the desired state, as much of it as events and the populator need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: UniquePodName,
}

/// upstream `cache.VolumeToAttach`.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeToAttach {
    pub multi_attach_error_reported: bool,
    pub volume_name: UniqueVolumeName,
    pub volume_spec: VolumeSpec,
    pub node_name: NodeName,
    pub scheduled_pods: Vec<PodRef>,
}

/// upstream `cache.PodToAdd`.
#[derive(Clone, Debug, PartialEq)]
pub struct PodToAdd {
    pub pod: PodRef,
    pub volume_name: UniqueVolumeName,
    pub node_name: NodeName,
}

#[derive(Clone, Debug)]
struct DesiredVolume {
    multi_attach_error_reported: bool,
    spec: VolumeSpec,
    scheduled_pods: BTreeMap<UniquePodName, PodRef>,
}

/// upstream `desiredStateOfWorld`: managed nodes → volumes to attach → scheduled pods.
#[derive(Clone, Debug, Default)]
pub struct DesiredStateOfWorld {
    nodes_managed: BTreeMap<NodeName, BTreeMap<UniqueVolumeName, DesiredVolume>>,
}

impl DesiredStateOfWorld {
    pub fn add_node(&mut self, node: &str) {
        self.nodes_managed.entry(node.to_string()).or_default();
    }

    /// Adds `pod` as wanting `spec` on `node`; the node must be managed.
    pub fn add_pod(
        &mut self,
        pod: &PodRef,
        spec: &VolumeSpec,
        node: &str,
    ) -> Result<UniqueVolumeName, Error> {
        let Some(volumes) = self.nodes_managed.get_mut(node) else {
            return Err(Error::NodeNotManaged {
                node: node.to_string(),
            });
        };
        let name = spec.unique_name();
        let v = volumes
            .entry(name.clone())
            .or_insert_with(|| DesiredVolume {
                multi_attach_error_reported: false,
                spec: spec.clone(),
                scheduled_pods: BTreeMap::new(),
            });
        v.scheduled_pods
            .entry(pod.uid.clone())
            .or_insert_with(|| pod.clone());
        Ok(name)
    }

    /// Removes a node without volumes to attach; refuses one that still has some.
    pub fn delete_node(&mut self, node: &str) -> Result<(), Error> {
        let Some(volumes) = self.nodes_managed.get(node) else {
            return Ok(());
        };
        if !volumes.is_empty() {
            return Err(Error::NodeHasVolumes {
                node: node.to_string(),
                volumes: volumes.len(),
            });
        }
        self.nodes_managed.remove(node);
        Ok(())
    }

    /// Removes `pod` from `volume` on `node`, and the volume when no pod wants it.
    pub fn delete_pod(&mut self, pod: &str, volume: &str, node: &str) {
        let Some(volumes) = self.nodes_managed.get_mut(node) else {
            return;
        };
        let Some(v) = volumes.get_mut(volume) else {
            return;
        };
        if v.scheduled_pods.remove(pod).is_some() && v.scheduled_pods.is_empty() {
            volumes.remove(volume);
        }
    }

    pub fn node_exists(&self, node: &str) -> bool {
        self.nodes_managed.contains_key(node)
    }

    pub fn volume_exists(&self, volume: &str, node: &str) -> bool {
        self.nodes_managed
            .get(node)
            .is_some_and(|v| v.contains_key(volume))
    }

    pub fn set_multi_attach_error(&mut self, volume: &str, node: &str) {
        if let Some(v) = self
            .nodes_managed
            .get_mut(node)
            .and_then(|v| v.get_mut(volume))
        {
            v.multi_attach_error_reported = true;
        }
    }

    pub fn get_volumes_to_attach(&self) -> Vec<VolumeToAttach> {
        self.nodes_managed
            .iter()
            .flat_map(|(node, volumes)| {
                volumes.iter().map(move |(name, v)| VolumeToAttach {
                    multi_attach_error_reported: v.multi_attach_error_reported,
                    volume_name: name.clone(),
                    volume_spec: v.spec.clone(),
                    node_name: node.clone(),
                    scheduled_pods: v.scheduled_pods.values().cloned().collect(),
                })
            })
            .collect()
    }

    pub fn get_pod_to_add(&self) -> BTreeMap<UniquePodName, PodToAdd> {
        let mut out = BTreeMap::new();
        for (node, volumes) in &self.nodes_managed {
            for (name, v) in volumes {
                for (uid, pod) in &v.scheduled_pods {
                    out.insert(
                        uid.clone(),
                        PodToAdd {
                            pod: pod.clone(),
                            volume_name: name.clone(),
                            node_name: node.clone(),
                        },
                    );
                }
            }
        }
        out
    }

    /// The pods on `nodes` that want `volume`.
    pub fn get_volume_pods_on_nodes(&self, nodes: &[NodeName], volume: &str) -> Vec<PodRef> {
        nodes
            .iter()
            .filter_map(|n| self.nodes_managed.get(n)?.get(volume))
            .flat_map(|v| v.scheduled_pods.values().cloned())
            .collect()
    }
}

/// upstream `cache.AttachState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachState {
    Attached,
    Uncertain,
    Detached,
}

/// upstream `cache.AttachedVolume`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttachedVolume {
    pub volume_name: UniqueVolumeName,
    pub volume_spec: Option<VolumeSpec>,
    pub node_name: NodeName,
    pub device_path: String,
    pub mounted_by_node: bool,
    pub detach_requested_time: Option<Instant>,
}

/// One entry of a node's `status.volumesAttached`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttachedVolumeStatus {
    pub name: UniqueVolumeName,
    pub device_path: String,
}

#[derive(Clone, Debug)]
struct NodeAttachedTo {
    attached_confirmed: bool,
    detach_requested_time: Option<Instant>,
}

#[derive(Clone, Debug)]
struct AttachedVolumeObj {
    spec: Option<VolumeSpec>,
    nodes_attached_to: BTreeMap<NodeName, NodeAttachedTo>,
    device_path: String,
}

#[derive(Clone, Debug, Default)]
struct NodeToUpdateStatusFor {
    status_update_needed: bool,
    volumes_to_report_as_attached: BTreeSet<UniqueVolumeName>,
}

/// upstream `actualStateOfWorld`.
#[derive(Clone, Debug, Default)]
pub struct ActualStateOfWorld {
    attached_volumes: BTreeMap<UniqueVolumeName, AttachedVolumeObj>,
    nodes_to_update_status_for: BTreeMap<NodeName, NodeToUpdateStatusFor>,
    in_use_volumes: BTreeMap<NodeName, BTreeSet<UniqueVolumeName>>,
}

impl ActualStateOfWorld {
    /// upstream `AddVolumeNode`: a new (volume, node) counts as mounted by the node until
    /// the node says otherwise (its `volumesInUse`); an attached one is reported in the
    /// node's status.
    pub fn add_volume_node(
        &mut self,
        volume: &str,
        spec: Option<&VolumeSpec>,
        node: &str,
        device_path: &str,
        attached: bool,
    ) {
        let v = self
            .attached_volumes
            .entry(volume.to_string())
            .or_insert_with(|| AttachedVolumeObj {
                spec: None,
                nodes_attached_to: BTreeMap::new(),
                device_path: String::new(),
            });
        v.device_path = device_path.to_string();
        v.spec = spec.cloned();
        match v.nodes_attached_to.get_mut(node) {
            Some(n) => n.attached_confirmed = attached,
            None => {
                v.nodes_attached_to.insert(
                    node.to_string(),
                    NodeAttachedTo {
                        attached_confirmed: attached,
                        detach_requested_time: None,
                    },
                );
                self.in_use_volumes
                    .entry(node.to_string())
                    .or_default()
                    .insert(volume.to_string());
            }
        }
        if attached {
            self.add_volume_to_report_as_attached(volume, node);
        }
    }

    pub fn mark_volume_as_attached(
        &mut self,
        volume: &str,
        spec: Option<&VolumeSpec>,
        node: &str,
        device_path: &str,
    ) {
        self.add_volume_node(volume, spec, node, device_path, true)
    }

    pub fn mark_volume_as_uncertain(
        &mut self,
        volume: &str,
        spec: Option<&VolumeSpec>,
        node: &str,
    ) {
        self.add_volume_node(volume, spec, node, "", false)
    }

    pub fn mark_volume_as_detached(&mut self, volume: &str, node: &str) {
        self.delete_volume_node(volume, node)
    }

    pub fn delete_volume_node(&mut self, volume: &str, node: &str) {
        let Some(v) = self.attached_volumes.get_mut(volume) else {
            return;
        };
        v.nodes_attached_to.remove(node);
        if v.nodes_attached_to.is_empty() {
            self.attached_volumes.remove(volume);
        }
        let _ = self.remove_volume_from_report_as_attached(volume, node);
    }

    /// upstream `SetVolumesMountedByNode`: the node's `status.volumesInUse`.
    pub fn set_volumes_mounted_by_node(&mut self, volumes: &[String], node: &str) {
        self.in_use_volumes
            .insert(node.to_string(), volumes.iter().cloned().collect());
    }

    pub fn reset_detach_request_time(&mut self, volume: &str, node: &str) {
        if let Some(n) = self.node_attached_to(volume, node) {
            n.detach_requested_time = None;
        }
    }

    /// upstream `SetDetachRequestTime`: starts the detach timer if it is not running, and
    /// says how long it has run.
    pub fn set_detach_request_time(
        &mut self,
        volume: &str,
        node: &str,
        now: Instant,
    ) -> Result<Duration, Error> {
        let Some(n) = self.node_attached_to(volume, node) else {
            return Err(Error::VolumeNotAttached {
                volume: volume.to_string(),
                node: node.to_string(),
            });
        };
        let since = *n.detach_requested_time.get_or_insert(now);
        Ok(now.saturating_duration_since(since))
    }

    fn node_attached_to(&mut self, volume: &str, node: &str) -> Option<&mut NodeAttachedTo> {
        self.attached_volumes
            .get_mut(volume)?
            .nodes_attached_to
            .get_mut(node)
    }

    pub fn remove_volume_from_report_as_attached(
        &mut self,
        volume: &str,
        node: &str,
    ) -> Result<(), Error> {
        if let Some(n) = self.nodes_to_update_status_for.get_mut(node)
            && n.volumes_to_report_as_attached.remove(volume)
        {
            n.status_update_needed = true;
            return Ok(());
        }
        Err(Error::NotReportedAsAttached {
            volume: volume.to_string(),
            node: node.to_string(),
        })
    }

    /// upstream `AddVolumeToReportAsAttached`: only a volume still attached to the node.
    pub fn add_volume_to_report_as_attached(&mut self, volume: &str, node: &str) {
        let attached = self
            .attached_volumes
            .get(volume)
            .is_some_and(|v| v.nodes_attached_to.contains_key(node));
        if !attached {
            return;
        }
        let n = self
            .nodes_to_update_status_for
            .entry(node.to_string())
            .or_insert_with(|| NodeToUpdateStatusFor {
                status_update_needed: true,
                ..Default::default()
            });
        if n.volumes_to_report_as_attached.insert(volume.to_string()) {
            n.status_update_needed = true;
        }
    }

    /// upstream `SetNodeStatusUpdateNeeded`; an unknown node is an error.
    pub fn set_node_status_update_needed(&mut self, node: &str) -> Result<(), Error> {
        match self.nodes_to_update_status_for.get_mut(node) {
            Some(n) => {
                n.status_update_needed = true;
                Ok(())
            }
            None => Err(Error::NodeNotTracked {
                node: node.to_string(),
            }),
        }
    }

    pub fn get_attach_state(&self, volume: &str, node: &str) -> AttachState {
        match self
            .attached_volumes
            .get(volume)
            .and_then(|v| v.nodes_attached_to.get(node))
        {
            Some(n) if n.attached_confirmed => AttachState::Attached,
            Some(_) => AttachState::Uncertain,
            None => AttachState::Detached,
        }
    }

    fn attached_volume(&self, name: &str, v: &AttachedVolumeObj, node: &str) -> AttachedVolume {
        let n = &v.nodes_attached_to[node];
        AttachedVolume {
            volume_name: name.to_string(),
            volume_spec: v.spec.clone(),
            node_name: node.to_string(),
            device_path: v.device_path.clone(),
            mounted_by_node: self
                .in_use_volumes
                .get(node)
                .is_some_and(|s| s.contains(name)),
            detach_requested_time: n.detach_requested_time,
        }
    }

    /// Every (volume, node), attached or uncertain.
    pub fn get_attached_volumes(&self) -> Vec<AttachedVolume> {
        self.attached_volumes
            .iter()
            .flat_map(|(name, v)| {
                v.nodes_attached_to
                    .keys()
                    .map(move |node| self.attached_volume(name, v, node))
            })
            .collect()
    }

    pub fn get_attached_volumes_for_node(&self, node: &str) -> Vec<AttachedVolume> {
        self.attached_volumes
            .iter()
            .filter(|(_, v)| v.nodes_attached_to.contains_key(node))
            .map(|(name, v)| self.attached_volume(name, v, node))
            .collect()
    }

    /// The confirmed attachments per node (upstream `GetAttachedVolumesPerNode`, what the
    /// sync verifies).
    pub fn get_attached_volumes_per_node(&self) -> BTreeMap<NodeName, Vec<AttachedVolume>> {
        let mut out: BTreeMap<NodeName, Vec<AttachedVolume>> = BTreeMap::new();
        for (name, v) in &self.attached_volumes {
            for (node, n) in &v.nodes_attached_to {
                if n.attached_confirmed {
                    out.entry(node.clone())
                        .or_default()
                        .push(self.attached_volume(name, v, node));
                }
            }
        }
        out
    }

    /// The nodes a volume is confirmed attached to.
    pub fn get_nodes_for_attached_volume(&self, volume: &str) -> Vec<NodeName> {
        self.attached_volumes
            .get(volume)
            .map(|v| {
                v.nodes_attached_to
                    .iter()
                    .filter(|(_, n)| n.attached_confirmed)
                    .map(|(node, _)| node.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn report(&self, volumes: &BTreeSet<UniqueVolumeName>) -> Vec<AttachedVolumeStatus> {
        volumes
            .iter()
            .map(|name| AttachedVolumeStatus {
                name: name.clone(),
                device_path: self
                    .attached_volumes
                    .get(name)
                    .map(|v| v.device_path.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// upstream `GetVolumesToReportAttached`: the nodes whose status needs writing, with
    /// their `volumesAttached`; clears every node's flag.
    pub fn get_volumes_to_report_attached(
        &mut self,
    ) -> BTreeMap<NodeName, Vec<AttachedVolumeStatus>> {
        let mut out = BTreeMap::new();
        let nodes: Vec<NodeName> = self.nodes_to_update_status_for.keys().cloned().collect();
        for node in nodes {
            let n = &self.nodes_to_update_status_for[&node];
            if n.status_update_needed {
                out.insert(node.clone(), self.report(&n.volumes_to_report_as_attached));
            }
            if let Some(n) = self.nodes_to_update_status_for.get_mut(&node) {
                n.status_update_needed = false;
            }
        }
        out
    }

    /// upstream `GetVolumesToReportAttachedForNode`: `None` when the node needs no write.
    pub fn get_volumes_to_report_attached_for_node(
        &mut self,
        node: &str,
    ) -> Option<Vec<AttachedVolumeStatus>> {
        let n = self.nodes_to_update_status_for.get(node)?;
        if !n.status_update_needed {
            return None;
        }
        let out = self.report(&n.volumes_to_report_as_attached);
        if let Some(n) = self.nodes_to_update_status_for.get_mut(node) {
            n.status_update_needed = false;
        }
        Some(out)
    }

    /// Whether `node` is tracked for status updates, and whether one is needed (tests).
    pub fn status_update_needed(&self, node: &str) -> Option<bool> {
        self.nodes_to_update_status_for
            .get(node)
            .map(|n| n.status_update_needed)
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
