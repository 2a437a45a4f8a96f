//! The volumes the node's pods should have mounted (pkg/kubelet/volumemanager/cache/
//! desired_state_of_world.go), filled by the populator from the pods bound to the node.
//! Pure. A volume here is one pod's own: its unique name is `<plugin>/<pod uid>-<name>`
//! (upstream's `GetUniqueVolumeNameFromSpecWithPod` for non-attachable plugins), `<name>`
//! the name of its directory under the pod's (the volume's name in the pod spec, or its
//! PersistentVolume's for a claim-backed one: [`VolumeSpec::dir_name`]), so that a volume
//! reconstructed from that directory after an agent restart has the same name. A CSI
//! device shared by several pods is the actual state's `DeviceMount`.

use std::collections::{BTreeMap, BTreeSet};

use crate::volume::plugins::VolumeSpec;

/// `UniqueVolumeName`.
pub type UniqueVolumeName = String;

/// `GetUniqueVolumeNameFromSpecWithPod`.
pub fn unique_volume_name(plugin: &str, pod_uid: &str, volume: &str) -> UniqueVolumeName {
    format!("{plugin}/{pod_uid}-{volume}")
}

/// One volume of one pod to mount (`VolumeToMount` with its one `PodToMount`).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeToMount {
    pub volume_name: UniqueVolumeName,
    pub pod_uid: String,
    /// The volume's name in the pod spec (`OuterVolumeSpecName`).
    pub outer_volume_spec_name: String,
    pub spec: VolumeSpec,
}

#[derive(Debug, Clone, Default)]
pub struct DesiredStateOfWorld {
    /// By pod UID, then by the volume's name in the pod spec.
    pods: BTreeMap<String, BTreeMap<String, VolumeToMount>>,
    /// The populator's errors by pod UID: `(volume, error)` (`AddErrorToPod`).
    pod_errors: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl DesiredStateOfWorld {
    /// `AddPodToVolume` for every volume of the pod (the populator's `processPodVolumes`),
    /// replacing what the pod had before.
    pub fn add_pod(&mut self, pod_uid: &str, volumes: Vec<(String, VolumeSpec)>) {
        let entries = volumes
            .into_iter()
            .map(|(name, spec)| {
                let v = VolumeToMount {
                    volume_name: unique_volume_name(
                        spec.plugin_name(),
                        pod_uid,
                        &spec.dir_name(&name),
                    ),
                    pod_uid: pod_uid.to_string(),
                    outer_volume_spec_name: name.clone(),
                    spec,
                };
                (name, v)
            })
            .collect();
        self.pods.insert(pod_uid.to_string(), entries);
    }

    /// `DeletePodFromVolume` for every volume of the pod.
    pub fn delete_pod(&mut self, pod_uid: &str) {
        self.pods.remove(pod_uid);
        self.pod_errors.remove(pod_uid);
    }

    /// The UIDs of the pods with volumes here.
    pub fn pods(&self) -> impl Iterator<Item = &str> {
        self.pods.keys().map(String::as_str)
    }

    /// `AddErrorToPod`: why the populator could not add `volume` of the pod.
    pub fn add_error_to_pod(&mut self, pod_uid: &str, volume: &str, error: &str) {
        self.pod_errors
            .entry(pod_uid.to_string())
            .or_default()
            .insert((volume.to_string(), error.to_string()));
    }

    /// `PopPodErrors`: the pod's errors, forgotten.
    pub fn pop_pod_errors(&mut self, pod_uid: &str) -> Vec<(String, String)> {
        self.pod_errors
            .remove(pod_uid)
            .map(|e| e.into_iter().collect())
            .unwrap_or_default()
    }

    pub fn pod_exists(&self, pod_uid: &str) -> bool {
        self.pods.contains_key(pod_uid)
    }

    /// `GetVolumesToMount`.
    pub fn volumes_to_mount(&self) -> impl Iterator<Item = &VolumeToMount> {
        self.pods.values().flat_map(|vs| vs.values())
    }

    /// The pod's volumes.
    pub fn pod_volumes(&self, pod_uid: &str) -> impl Iterator<Item = &VolumeToMount> {
        self.pods
            .get(pod_uid)
            .into_iter()
            .flat_map(|vs| vs.values())
    }

    /// Whether the volume is wanted.
    pub fn volume_exists(&self, volume_name: &str) -> bool {
        self.volumes_to_mount()
            .any(|v| v.volume_name == volume_name)
    }

    /// `GetVolumeNamesForPod`: the unique name of each of the pod's volumes, by its name
    /// in the pod spec (two names of one claim share their volume).
    pub fn volume_names_for_pod(&self, pod_uid: &str) -> BTreeMap<String, UniqueVolumeName> {
        self.pod_volumes(pod_uid)
            .map(|v| (v.outer_volume_spec_name.clone(), v.volume_name.clone()))
            .collect()
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod cache_tests;
