//! The volumes the node's pods should have mounted (pkg/kubelet/volumemanager/cache/
//! desired_state_of_world.go), filled by the populator from the pods bound to the node.
//! Pure. rekube has no attachable volume plugin yet, so a volume is one pod's own: its
//! unique name is `<plugin>/<pod uid>-<volume name>` (upstream's
//! `GetUniqueVolumeNameFromSpecWithPod` for non-attachable plugins).

use std::collections::BTreeMap;

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
}

impl DesiredStateOfWorld {
    /// `AddPodToVolume` for every volume of the pod (the populator's `processPodVolumes`),
    /// replacing what the pod had before.
    pub fn add_pod(&mut self, pod_uid: &str, volumes: Vec<(String, VolumeSpec)>) {
        let entries = volumes
            .into_iter()
            .map(|(name, spec)| {
                let v = VolumeToMount {
                    volume_name: unique_volume_name(spec.plugin_name(), pod_uid, &name),
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
}
