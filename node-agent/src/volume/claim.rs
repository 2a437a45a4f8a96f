//! A pod volume backed by a PersistentVolumeClaim (a `persistentVolumeClaim` source, or a
//! generic `ephemeral` one whose claim is `<pod>-<volume>`), resolved to the volume the
//! claim is bound to: upstream's desired-state populator `createVolumeSpec`,
//! `getPVCExtractPV` and `getPVSpec` (pkg/kubelet/volumemanager/populator), with
//! `ephemeral.VolumeClaimName` / `VolumeIsForPod` (component-helpers/storage/ephemeral).
//! Pure: the shell reads the claim and the volume, [`resolve`] judges them.
//!
//! The volume sources the agent mounts from a PersistentVolume: `hostPath` (the hostPath
//! plugin, as upstream's) and `local` directories (upstream's local plugin: a bind mount
//! of the path into the pod's volume directory) and `csi` (the PV's CSI driver stages and
//! publishes it, [`super::csi`]). In volumeMode Block, `local` block devices and `csi`
//! volumes are mapped as raw devices ([`VolumeSpec::Block`], upstream's block volume
//! mappers). Others (NFS, ...) are refused by name until their plugin exists.
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Volume,
};
use rekube_crds::pod_refs::ephemeral_volume_claim_name;
pub use rekube_crds::pod_refs::volume_is_for_pod;
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};

use super::csi::CsiSource;
use super::plugins::{BlockSource, PersistentSource, VolumeSpec};

/// upstream `util.PVCProtectionFinalizer`.
pub use rekube_crds::storage_keys::PVC_PROTECTION_FINALIZER;

/// A claim a pod volume refers to, before it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    pub claim_name: String,
    /// The pod volume's `persistentVolumeClaim.readOnly`.
    pub read_only: bool,
    /// A generic ephemeral volume: the claim must be owned by the pod.
    pub ephemeral: bool,
}

/// The claim `volume` of `pod` refers to, if it is claim-backed.
pub fn claim_ref(pod: &Pod, volume: &Volume) -> Option<ClaimRef> {
    if let Some(PersistentVolumeClaimVolumeSource {
        claim_name,
        read_only,
    }) = &volume.persistent_volume_claim
    {
        return Some(ClaimRef {
            claim_name: claim_name.clone(),
            read_only: read_only.unwrap_or(false),
            ephemeral: false,
        });
    }
    volume.ephemeral.as_ref().map(|_| ClaimRef {
        claim_name: ephemeral_volume_claim_name(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &volume.name,
        ),
        read_only: false,
        ephemeral: true,
    })
}

/// Whether a container of the pod names the volume in `volumeMounts` and in
/// `volumeDevices` (upstream `GetPodVolumeNames`' mounts and devices).
pub fn mounts_and_devices(pod: &Pod, volume: &str) -> (bool, bool) {
    let Some(spec) = pod.spec.as_ref() else {
        return (false, false);
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let (mut mounts, mut devices) = (false, false);
    for c in containers {
        mounts |= c.volume_mounts.iter().flatten().any(|m| m.name == volume);
        devices |= c.volume_devices.iter().flatten().any(|d| d.name == volume);
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        mounts |= c.volume_mounts.iter().flatten().any(|m| m.name == volume);
        devices |= c.volume_devices.iter().flatten().any(|d| d.name == volume);
    }
    (mounts, devices)
}

/// upstream `getPVCExtractPV`'s checks of the claim read from the apiserver: the name of
/// the volume it is bound to.
pub fn check_claim(claim: &PersistentVolumeClaim) -> Result<String, String> {
    let being_deleted = claim.metadata.deletion_timestamp.is_some();
    let protected = claim
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == PVC_PROTECTION_FINALIZER);
    if being_deleted && !protected {
        return Err("PVC is being deleted".into());
    }
    if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        return Err("PVC is not bound".into());
    }
    match claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err("PVC has empty pvc.Spec.VolumeName".into()),
    }
}

/// upstream `getPVSpec`'s checks: the volume read for the claim is bound to it (its
/// claimRef carries the claim's UID). The shell wraps the error as the claim's
/// ([`processing_error`]).
pub fn check_volume_bound_to_claim(
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), String> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return Err(format!(
            "found PV object {name} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
        ));
    };
    let claim_uid = claim.metadata.uid.as_deref().unwrap_or_default();
    let ref_uid = claim_ref.uid.as_deref().unwrap_or_default();
    if ref_uid != claim_uid {
        return Err(format!(
            "found PV object {name} but its pv.Spec.ClaimRef.UID {ref_uid} does not point to claim.UID {claim_uid}"
        ));
    }
    Ok(())
}

/// The plugin for the volume's source, after upstream's volumeMode checks of
/// `createVolumeSpec` (`(in_mounts, in_devices)`: [`mounts_and_devices`]).
pub fn volume_spec(
    volume_name: &str,
    pv: &PersistentVolume,
    read_only: bool,
    (in_mounts, in_devices): (bool, bool),
) -> Result<VolumeSpec, String> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let default_spec = PersistentVolumeSpec::default();
    let spec = pv.spec.as_ref().unwrap_or(&default_spec);
    let mode = spec.volume_mode.as_deref().unwrap_or("Filesystem");
    if in_mounts && mode != "Filesystem" {
        return Err(format!(
            "volume {volume_name} has volumeMode {mode}, but is specified in volumeMounts"
        ));
    }
    if in_devices && mode != "Block" {
        return Err(format!(
            "volume {volume_name} has volumeMode {mode}, but is specified in volumeDevices"
        ));
    }
    let csi_source = |c: &k8s_openapi::api::core::v1::CSIPersistentVolumeSource| CsiSource {
        driver: c.driver.clone(),
        volume_handle: c.volume_handle.clone(),
        fs_type: c.fs_type.clone().unwrap_or_default(),
        volume_attributes: c.volume_attributes.clone().unwrap_or_default(),
        read_only: c.read_only.unwrap_or(false),
        access_mode: spec.access_modes.as_ref().and_then(|m| m.first().cloned()),
        mount_options: spec.mount_options.clone().unwrap_or_default(),
    };
    if mode == "Block" {
        // upstream's FindMapperPluginBySpec: the block volume mappers are the local and
        // csi plugins' (of those the agent has).
        let source = if let Some(l) = &spec.local {
            BlockSource::Local {
                path: l.path.clone(),
            }
        } else if let Some(c) = &spec.csi {
            BlockSource::Csi(csi_source(c))
        } else if spec.host_path.is_some() {
            return Err(
                "MapVolume.FindMapperPluginBySpec failed to find BlockVolumeMapper plugin. Volume plugin is nil."
                    .into(),
            );
        } else {
            return Err(format!(
                "no volume plugin matched: the source of PV {name} is not supported by rekube-node-agent yet (local and csi are, in volumeMode Block)"
            ));
        };
        return Ok(VolumeSpec::Block {
            pv_name: name.to_string(),
            read_only,
            source,
        });
    }
    let source = if let Some(h) = &spec.host_path {
        PersistentSource::HostPath(HostPathVolumeSource {
            path: h.path.clone(),
            type_: h.type_.clone(),
        })
    } else if let Some(l) = &spec.local {
        PersistentSource::Local {
            path: l.path.clone(),
        }
    } else if let Some(c) = &spec.csi {
        PersistentSource::Csi(csi_source(c))
    } else {
        return Err(format!(
            "no volume plugin matched: the source of PV {name} is not supported by rekube-node-agent yet (hostPath, local and csi are)"
        ));
    };
    Ok(VolumeSpec::Persistent {
        pv_name: name.to_string(),
        read_only,
        source,
    })
}

/// upstream's wrapping of a claim's errors (`createVolumeSpec`).
pub fn processing_error(namespace: &str, claim: &str, error: &str) -> String {
    format!("error processing PVC {namespace}/{claim}: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "pod-uid"},
            "spec": {
                "containers": [{"name": "c", "image": "i",
                    "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                    "volumeDevices": [{"name": "raw", "devicePath": "/dev/x"}]}],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "c1", "readOnly": true}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    {"name": "cache", "emptyDir": {}}
                ]
            }
        }))
        .unwrap()
    }

    fn claim(extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut base = json!({
            "metadata": {"name": "c1", "namespace": "ns", "uid": "claim-uid"},
            "spec": {"volumeName": "pv1"},
            "status": {"phase": "Bound"}
        });
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn volume(extra: serde_json::Value) -> PersistentVolume {
        let mut base = json!({
            "metadata": {"name": "pv1"},
            "spec": {"claimRef": {"namespace": "ns", "name": "c1", "uid": "claim-uid"},
                     "hostPath": {"path": "/srv/pv1", "type": "Directory"}}
        });
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
            for (k, v) in e {
                match (b.get_mut(&k), v) {
                    (
                        Some(inner @ serde_json::Value::Object(_)),
                        v @ serde_json::Value::Object(_),
                    ) => merge(inner, v),
                    (_, v) => {
                        b.insert(k, v);
                    }
                }
            }
        }
    }

    #[test]
    fn claim_refs_of_pod_volumes() {
        let p = pod();
        let vols = p.spec.as_ref().unwrap().volumes.clone().unwrap();
        assert_eq!(
            claim_ref(&p, &vols[0]),
            Some(ClaimRef {
                claim_name: "c1".into(),
                read_only: true,
                ephemeral: false
            })
        );
        assert_eq!(
            claim_ref(&p, &vols[1]),
            Some(ClaimRef {
                claim_name: "web-scratch".into(),
                read_only: false,
                ephemeral: true
            })
        );
        assert_eq!(claim_ref(&p, &vols[2]), None);
        assert_eq!(mounts_and_devices(&p, "data"), (true, false));
        assert_eq!(mounts_and_devices(&p, "raw"), (false, true));
        assert_eq!(mounts_and_devices(&p, "scratch"), (false, false));
    }

    #[test]
    fn claim_checks_as_get_pvc_extract_pv() {
        let cases: Vec<(&str, serde_json::Value, Result<&str, &str>)> = vec![
            ("bound", json!({}), Ok("pv1")),
            (
                "being deleted, protected",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z",
                    "finalizers": [PVC_PROTECTION_FINALIZER]}}),
                Ok("pv1"),
            ),
            (
                "being deleted, not protected",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z",
                    "finalizers": ["other"]}}),
                Err("PVC is being deleted"),
            ),
            (
                "pending",
                json!({"status": {"phase": "Pending"}}),
                Err("PVC is not bound"),
            ),
            (
                "lost",
                json!({"status": {"phase": "Lost"}}),
                Err("PVC is not bound"),
            ),
            (
                "no status",
                json!({"status": null}),
                Err("PVC is not bound"),
            ),
            (
                "bound without a volume name",
                json!({"spec": {"volumeName": ""}}),
                Err("PVC has empty pvc.Spec.VolumeName"),
            ),
        ];
        for (name, extra, want) in cases {
            let got = check_claim(&claim(extra));
            assert_eq!(got.as_deref().map_err(|e| e.as_str()), want, "{name}");
        }
    }

    /// component-helpers ephemeral_test.go `TestVolumeIsForPod`, the cases that apply
    /// (owner with and without controller, other owner).
    #[test]
    fn ephemeral_claim_must_be_the_pods() {
        let p = pod();
        let owned = claim(json!({"metadata": {"ownerReferences": [
            {"apiVersion": "rekube.io/v1", "kind": "Pod", "name": "web", "uid": "pod-uid", "controller": true}
        ]}}));
        assert_eq!(volume_is_for_pod(&p, &owned), Ok(()));
        let not_controller = claim(json!({"metadata": {"ownerReferences": [
            {"apiVersion": "rekube.io/v1", "kind": "Pod", "name": "web", "uid": "pod-uid"}
        ]}}));
        let other = claim(json!({"metadata": {"ownerReferences": [
            {"apiVersion": "rekube.io/v1", "kind": "Pod", "name": "x", "uid": "other", "controller": true}
        ]}}));
        for c in [not_controller, other, claim(json!({}))] {
            assert_eq!(
                volume_is_for_pod(&p, &c),
                Err("PVC ns/c1 was not created for pod ns/web (pod is not owner)".into())
            );
        }
    }

    #[test]
    fn volume_specs_of_bound_volumes() {
        let c = claim(json!({}));
        let ok = volume_spec("data", &volume(json!({})), true, (true, false)).unwrap();
        assert_eq!(
            ok,
            VolumeSpec::Persistent {
                pv_name: "pv1".into(),
                read_only: true,
                source: PersistentSource::HostPath(HostPathVolumeSource {
                    path: "/srv/pv1".into(),
                    type_: Some("Directory".into())
                })
            }
        );
        let local = volume(json!({"spec": {"hostPath": null, "local": {"path": "/mnt/disks/a"}}}));
        assert_eq!(
            volume_spec("data", &local, false, (true, false)).unwrap(),
            VolumeSpec::Persistent {
                pv_name: "pv1".into(),
                read_only: false,
                source: PersistentSource::Local {
                    path: "/mnt/disks/a".into()
                }
            }
        );
        let csi = volume(json!({"spec": {"hostPath": null,
            "accessModes": ["ReadWriteOncePod", "ReadWriteOnce"],
            "mountOptions": ["noatime"],
            "csi": {"driver": "csi.rekube.io", "volumeHandle": "rk-1", "fsType": "ext4",
                "readOnly": true, "volumeAttributes": {"type": "local-disk"}}}}));
        assert_eq!(
            volume_spec("data", &csi, false, (true, false)).unwrap(),
            VolumeSpec::Persistent {
                pv_name: "pv1".into(),
                read_only: false,
                source: PersistentSource::Csi(CsiSource {
                    driver: "csi.rekube.io".into(),
                    volume_handle: "rk-1".into(),
                    fs_type: "ext4".into(),
                    volume_attributes: [("type".to_string(), "local-disk".to_string())].into(),
                    read_only: true,
                    access_mode: Some("ReadWriteOncePod".into()),
                    mount_options: vec!["noatime".into()],
                })
            }
        );
        // volumeMode Block: the csi and local plugins' block volume mappers, in
        // volumeDevices (or in no container at all: mapped all the same).
        let csi_block = volume(json!({"spec": {"hostPath": null, "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "csi": {"driver": "csi.rekube.io", "volumeHandle": "rk-1", "readOnly": true}}}));
        for usage in [(false, true), (false, false)] {
            assert_eq!(
                volume_spec("raw", &csi_block, true, usage).unwrap(),
                VolumeSpec::Block {
                    pv_name: "pv1".into(),
                    read_only: true,
                    source: BlockSource::Csi(CsiSource {
                        driver: "csi.rekube.io".into(),
                        volume_handle: "rk-1".into(),
                        fs_type: String::new(),
                        volume_attributes: Default::default(),
                        read_only: true,
                        access_mode: Some("ReadWriteOnce".into()),
                        mount_options: vec![],
                    })
                }
            );
        }
        let local_block = volume(json!({"spec": {"hostPath": null, "volumeMode": "Block",
            "local": {"path": "/dev/loop7"}}}));
        assert_eq!(
            volume_spec("raw", &local_block, false, (false, true)).unwrap(),
            VolumeSpec::Block {
                pv_name: "pv1".into(),
                read_only: false,
                source: BlockSource::Local {
                    path: "/dev/loop7".into()
                }
            }
        );
        assert_eq!(check_volume_bound_to_claim(&volume(json!({})), &c), Ok(()));
        let unbound: Vec<(&str, PersistentVolume, &str)> = vec![
            (
                "not bound",
                volume(json!({"spec": {"claimRef": null}})),
                "found PV object pv1 but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim",
            ),
            (
                "bound to another claim",
                volume(json!({"spec": {"claimRef": {"uid": "other"}}})),
                "found PV object pv1 but its pv.Spec.ClaimRef.UID other does not point to claim.UID claim-uid",
            ),
        ];
        for (name, pv, want) in unbound {
            assert_eq!(
                check_volume_bound_to_claim(&pv, &c).unwrap_err(),
                want,
                "{name}"
            );
        }
        let errors: Vec<(&str, PersistentVolume, (bool, bool), &str)> = vec![
            (
                "block volume mounted",
                volume(json!({"spec": {"volumeMode": "Block"}})),
                (true, false),
                "volume data has volumeMode Block, but is specified in volumeMounts",
            ),
            (
                "filesystem volume as a device",
                volume(json!({})),
                (false, true),
                "volume data has volumeMode Filesystem, but is specified in volumeDevices",
            ),
            (
                "nfs",
                volume(json!({"spec": {"hostPath": null, "nfs": {"server": "s", "path": "/"}}})),
                (true, false),
                "no volume plugin matched: the source of PV pv1 is not supported by rekube-node-agent yet (hostPath, local and csi are)",
            ),
            (
                "csi block volume mounted",
                volume(json!({"spec": {"hostPath": null, "volumeMode": "Block",
                    "csi": {"driver": "d", "volumeHandle": "h"}}})),
                (true, false),
                "volume data has volumeMode Block, but is specified in volumeMounts",
            ),
            (
                "block volume in both",
                volume(json!({"spec": {"volumeMode": "Block"}})),
                (true, true),
                "volume data has volumeMode Block, but is specified in volumeMounts",
            ),
            (
                "hostPath has no block mapper",
                volume(json!({"spec": {"volumeMode": "Block"}})),
                (false, true),
                "MapVolume.FindMapperPluginBySpec failed to find BlockVolumeMapper plugin. Volume plugin is nil.",
            ),
            (
                "nfs block",
                volume(json!({"spec": {"hostPath": null, "volumeMode": "Block",
                    "nfs": {"server": "s", "path": "/"}}})),
                (false, true),
                "no volume plugin matched: the source of PV pv1 is not supported by rekube-node-agent yet (local and csi are, in volumeMode Block)",
            ),
        ];
        for (name, pv, usage, want) in errors {
            assert_eq!(
                volume_spec("data", &pv, false, usage).unwrap_err(),
                want,
                "{name}"
            );
        }
        assert_eq!(
            processing_error("ns", "c1", "PVC is not bound"),
            "error processing PVC ns/c1: PVC is not bound"
        );
    }
}
