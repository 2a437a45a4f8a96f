//! upstream util/util.go (`CreateVolumeSpec`, `DetermineVolumeAction`,
//! `ProcessPodVolumes`) and the pieces of pkg/volume/util and the CSI plugin it calls
//! (`IsPodTerminated`, `FindAttachablePluginBySpec`: a CSI PV whose driver needs attach).
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Volume};
use rekube_crds::pod_refs::{ephemeral_volume_claim_name, volume_is_for_pod};
use rekube_crds::{CSIDriver, PersistentVolume, PersistentVolumeClaim, Pod};

use super::Error;
use super::cache::{DesiredStateOfWorld, PodRef, VolumeSpec};

/// What the controller reads from its informers' caches (upstream's listers).
pub trait Listers {
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>>;
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    fn csi_driver(&self, name: &str) -> Option<Arc<CSIDriver>>;
}

/// The pod's unique name (upstream `GetUniquePodName`: its UID) and what events need.
pub fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn not_running(statuses: Option<&Vec<ContainerStatus>>) -> bool {
    statuses.into_iter().flatten().all(|s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.terminated.is_some() || st.waiting.is_some())
    })
}

/// upstream `volumeutil.IsPodTerminated`: Failed or Succeeded, or deleted with no
/// container running (every status terminated or waiting).
pub fn is_pod_terminated(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Failed") | Some("Succeeded")) {
        return true;
    }
    pod.metadata.deletion_timestamp.is_some()
        && not_running(status.and_then(|s| s.init_container_statuses.as_ref()))
        && not_running(status.and_then(|s| s.container_statuses.as_ref()))
        && not_running(status.and_then(|s| s.ephemeral_container_statuses.as_ref()))
}

/// upstream `DetermineVolumeAction`: add the pod's volumes unless it is terminated.
pub fn determine_volume_action(pod: &Pod, default_action: bool) -> bool {
    let has_volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| !v.is_empty());
    if !has_volumes {
        return default_action;
    }
    if is_pod_terminated(pod) {
        return false;
    }
    default_action
}

/// upstream `createInTreeVolumeSpec` for the volumes rekube can attach: the CSI
/// PersistentVolume a `persistentVolumeClaim` or generic `ephemeral` volume resolves to
/// (the claim Bound, the PV's claimRef its UID). `Ok(None)`: a volume of no claim, or a PV
/// that is not CSI (nothing to attach).
pub fn create_volume_spec(
    pod: &Pod,
    volume: &Volume,
    listers: &dyn Listers,
) -> Result<Option<VolumeSpec>, Error> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let claim_name = match (&volume.persistent_volume_claim, &volume.ephemeral) {
        (Some(c), _) => c.claim_name.clone(),
        (None, Some(_)) => ephemeral_volume_claim_name(&pod_name, &volume.name),
        (None, None) => return Ok(None),
    };
    if claim_name.is_empty() {
        return Ok(None);
    }
    let claim_err = |cause: String| Error::Claim {
        namespace: namespace.clone(),
        claim: claim_name.clone(),
        cause,
    };
    let Some(claim) = listers.claim(&namespace, &claim_name) else {
        return Err(claim_err(format!(
            "failed to find PVC {namespace}/{claim_name} in PVCInformer cache"
        )));
    };
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let pv_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || pv_name.is_empty() {
        return Err(claim_err(format!(
            "PVC {namespace}/{claim_name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({pv_name:?})"
        )));
    }
    if volume.ephemeral.is_some() {
        volume_is_for_pod(pod, &claim).map_err(Error::EphemeralClaim)?;
    }
    let Some(pv) = listers.volume(&pv_name) else {
        return Err(claim_err(format!(
            "failed to find PV {pv_name:?} in PVInformer cache"
        )));
    };
    let spec = pv.spec.as_ref();
    let Some(claim_ref) = spec.and_then(|s| s.claim_ref.as_ref()) else {
        return Err(claim_err(format!(
            "found PV object {pv_name:?} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
        )));
    };
    let claim_uid = claim.metadata.uid.clone().unwrap_or_default();
    let ref_uid = claim_ref.uid.clone().unwrap_or_default();
    if ref_uid != claim_uid {
        return Err(claim_err(format!(
            "found PV object {pv_name:?} but its pv.Spec.ClaimRef.UID ({ref_uid:?}) does not point to claim.UID ({claim_uid:?})"
        )));
    }
    Ok(volume_spec_from_pv(&pv))
}

/// The spec of a CSI PersistentVolume (`None` for any other kind of volume).
pub fn volume_spec_from_pv(pv: &PersistentVolume) -> Option<VolumeSpec> {
    let spec = pv.spec.as_ref()?;
    let csi = spec.csi.as_ref()?;
    Some(VolumeSpec {
        pv_name: pv.metadata.name.clone().unwrap_or_default(),
        driver: csi.driver.clone(),
        volume_handle: csi.volume_handle.clone(),
        access_modes: spec.access_modes.clone().unwrap_or_default(),
    })
}

/// upstream `FindAttachablePluginBySpec` for CSI (csiPlugin.CanAttach): the driver needs
/// attach unless its CSIDriver object says `attachRequired: false`; no object means it
/// does.
pub fn is_attachable(spec: &VolumeSpec, listers: &dyn Listers) -> bool {
    listers
        .csi_driver(&spec.driver)
        .is_none_or(|d| d.spec.attach_required != Some(false))
}

/// upstream `ProcessPodVolumes`: adds (or removes) the attachable volumes of `pod` to (or
/// from) the desired state of its node, if the node is managed.
pub fn process_pod_volumes(
    pod: &Pod,
    add_volumes: bool,
    dsw: &mut DesiredStateOfWorld,
    listers: &dyn Listers,
) {
    let Some(volumes) = pod.spec.as_ref().and_then(|s| s.volumes.as_ref()) else {
        return;
    };
    let node = node_name(pod);
    if volumes.is_empty() || node.is_empty() || !dsw.node_exists(node) {
        return;
    }
    let uid = pod_ref(pod);
    for v in volumes {
        let spec = match create_volume_spec(pod, v, listers) {
            Ok(Some(spec)) => spec,
            Ok(None) => continue,
            Err(e) => {
                tracing::trace!(pod = %format!("{}/{}", uid.namespace, uid.name), volume = %v.name, error = %e, "error processing volume for pod");
                continue;
            }
        };
        if !is_attachable(&spec, listers) {
            continue;
        }
        if add_volumes {
            if let Err(e) = dsw.add_pod(&uid, &spec, node) {
                tracing::trace!(error = %e, "failed to add volume for pod to the desired state");
            }
        } else {
            dsw.delete_pod(&uid.uid, &spec.unique_name(), node);
        }
    }
}

/// The driver and handle of a CSI unique volume name (the CSI plugin's `GetVolumeName`
/// reversed, what Detach does without a spec after a restart).
pub fn split_csi_unique_name(name: &str) -> Result<(String, String), Error> {
    let rest = name
        .strip_prefix(rekube_crds::storage_keys::CSI_PLUGIN_NAME)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| Error::UniqueName(name.to_string()))?;
    let parts: Vec<&str> = rest.split('^').collect();
    match parts.as_slice() {
        [driver, handle] if !driver.is_empty() && !handle.is_empty() => {
            Ok((driver.to_string(), handle.to_string()))
        }
        _ => Err(Error::UniqueName(name.to_string())),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! In-memory listers and object builders for the module's tests.
    use std::collections::BTreeMap;

    use super::*;
    use serde_json::json;

    #[derive(Default)]
    pub struct FakeListers {
        pub pods: BTreeMap<(String, String), Arc<Pod>>,
        pub claims: BTreeMap<(String, String), Arc<PersistentVolumeClaim>>,
        pub volumes: BTreeMap<String, Arc<PersistentVolume>>,
        pub drivers: BTreeMap<String, Arc<CSIDriver>>,
    }

    impl Listers for FakeListers {
        fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
            self.pods.get(&(namespace.into(), name.into())).cloned()
        }
        fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
            self.claims.get(&(namespace.into(), name.into())).cloned()
        }
        fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
            self.volumes.get(name).cloned()
        }
        fn csi_driver(&self, name: &str) -> Option<Arc<CSIDriver>> {
            self.drivers.get(name).cloned()
        }
    }

    impl FakeListers {
        pub fn add_pod(&mut self, p: Pod) {
            let key = (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            );
            self.pods.insert(key, Arc::new(p));
        }
        pub fn add_claim(&mut self, c: PersistentVolumeClaim) {
            let key = (
                c.metadata.namespace.clone().unwrap_or_default(),
                c.metadata.name.clone().unwrap_or_default(),
            );
            self.claims.insert(key, Arc::new(c));
        }
        pub fn add_volume(&mut self, v: PersistentVolume) {
            self.volumes
                .insert(v.metadata.name.clone().unwrap_or_default(), Arc::new(v));
        }
        pub fn add_driver(&mut self, name: &str, attach_required: Option<bool>) {
            let d: CSIDriver = serde_json::from_value(json!({
                "apiVersion": "rekube.io/v1", "kind": "CSIDriver", "metadata": {"name": name},
                "spec": {"attachRequired": attach_required}
            }))
            .unwrap();
            self.drivers.insert(name.into(), Arc::new(d));
        }
        /// A bound claim `claim` (uid `<claim>-uid`) and its CSI volume `pv`.
        pub fn add_bound_csi_claim(&mut self, ns: &str, claim: &str, pv: &str, driver: &str) {
            self.add_claim(pvc(ns, claim, Some(pv), "Bound"));
            self.add_volume(csi_pv(pv, driver, &format!("{claim}-uid")));
        }
    }

    pub fn pod(ns: &str, name: &str, node: &str, volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": format!("{name}-uid")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}], "volumes": volumes},
        }))
        .unwrap()
    }

    pub fn claim_volume(name: &str, claim: &str) -> serde_json::Value {
        json!({"name": name, "persistentVolumeClaim": {"claimName": claim}})
    }

    pub fn pvc(ns: &str, name: &str, pv: Option<&str>, phase: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "uid": format!("{name}-uid")},
            "spec": {"volumeName": pv, "accessModes": ["ReadWriteOnce"]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    pub fn csi_pv(name: &str, driver: &str, claim_uid: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                     "claimRef": {"uid": claim_uid},
                     "csi": {"driver": driver, "volumeHandle": format!("{name}-handle")}},
        }))
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use serde_json::json;

    /// upstream Test_CreateVolumeSpec checks the spec a pod volume resolves to (its cases
    /// are in-tree volumes translated by CSI migration, which rekube does not have); the
    /// same function here, over rekube's cases: each way a volume resolves or fails, with
    /// upstream's messages.
    #[test]
    fn create_volume_spec_table() {
        let mut l = FakeListers::default();
        l.add_bound_csi_claim("ns", "bound", "pv-1", "csi.rekube.io");
        l.add_claim(pvc("ns", "pending", None, "Pending"));
        l.add_claim(pvc("ns", "no-pv", Some("missing"), "Bound"));
        l.add_claim(pvc("ns", "other-uid", Some("pv-2"), "Bound"));
        l.add_volume(csi_pv("pv-2", "csi.rekube.io", "someone-else"));
        l.add_claim(pvc("ns", "host", Some("pv-host"), "Bound"));
        l.add_volume(
            serde_json::from_value(json!({
                "apiVersion": "rekube.io/v1", "kind": "PersistentVolume", "metadata": {"name": "pv-host"},
                "spec": {"claimRef": {"uid": "host-uid"}, "hostPath": {"path": "/tmp"}}
            }))
            .unwrap(),
        );
        // The ephemeral volume's claim p-scratch, not owned by the pod.
        l.add_claim(pvc("ns", "p-scratch", Some("pv-3"), "Bound"));
        let p = pod("ns", "p", "n", json!([]));
        // (name, the pod's volume, the PV it resolves to or the error)
        type Case = (
            &'static str,
            serde_json::Value,
            Result<Option<&'static str>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "bound CSI claim",
                claim_volume("v", "bound"),
                Ok(Some("pv-1")),
            ),
            (
                "claim not in cache",
                claim_volume("v", "nope"),
                Err(
                    "error processing PVC \"ns\"/\"nope\": failed to find PVC ns/nope in PVCInformer cache",
                ),
            ),
            (
                "claim not bound",
                claim_volume("v", "pending"),
                Err(
                    "error processing PVC \"ns\"/\"pending\": PVC ns/pending has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")",
                ),
            ),
            (
                "volume not in cache",
                claim_volume("v", "no-pv"),
                Err(
                    "error processing PVC \"ns\"/\"no-pv\": failed to find PV \"missing\" in PVInformer cache",
                ),
            ),
            (
                "volume bound to another claim",
                claim_volume("v", "other-uid"),
                Err(
                    "error processing PVC \"ns\"/\"other-uid\": found PV object \"pv-2\" but its pv.Spec.ClaimRef.UID (\"someone-else\") does not point to claim.UID (\"other-uid-uid\")",
                ),
            ),
            ("hostPath volume", claim_volume("v", "host"), Ok(None)),
            ("emptyDir", json!({"name": "v", "emptyDir": {}}), Ok(None)),
            (
                "inline csi",
                json!({"name": "v", "csi": {"driver": "csi.rekube.io"}}),
                Ok(None),
            ),
            (
                "ephemeral claim of another owner",
                json!({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}),
                Err("PVC ns/p-scratch was not created for pod ns/p (pod is not owner)"),
            ),
        ];
        for (name, v, want) in cases {
            let v: Volume = serde_json::from_value(v).unwrap();
            let got = create_volume_spec(&p, &v, &l)
                .map(|s| s.map(|s| s.pv_name))
                .map_err(|e| e.to_string());
            let want = want.map(|s| s.map(str::to_string)).map_err(str::to_string);
            assert_eq!(got, want, "{name}");
        }
        let spec = create_volume_spec(
            &p,
            &serde_json::from_value(claim_volume("v", "bound")).unwrap(),
            &l,
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.volume_handle, "pv-1-handle");
        assert_eq!(
            spec.unique_name(),
            "kubernetes.io/csi/csi.rekube.io^pv-1-handle"
        );
    }

    #[test]
    fn ephemeral_volume_of_the_pod_resolves() {
        let mut l = FakeListers::default();
        let p = pod("ns", "p", "n", json!([]));
        let mut c = pvc("ns", "p-scratch", Some("pv-e"), "Bound");
        c.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "name": "p", "uid": "p-uid", "controller": true
        })).unwrap()]);
        l.add_claim(c);
        l.add_volume(csi_pv("pv-e", "d", "p-scratch-uid"));
        let v: Volume = serde_json::from_value(
            json!({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}),
        )
        .unwrap();
        assert_eq!(
            create_volume_spec(&p, &v, &l).unwrap().unwrap().pv_name,
            "pv-e"
        );
    }

    #[test]
    fn attach_is_required_unless_the_csidriver_says_otherwise() {
        let mut l = FakeListers::default();
        let spec = |driver: &str| VolumeSpec {
            pv_name: "pv".into(),
            driver: driver.into(),
            volume_handle: "h".into(),
            access_modes: vec![],
        };
        l.add_driver("no-attach", Some(false));
        l.add_driver("attach", Some(true));
        l.add_driver("unset", None);
        assert!(is_attachable(&spec("no-object"), &l));
        assert!(is_attachable(&spec("attach"), &l));
        assert!(is_attachable(&spec("unset"), &l));
        assert!(!is_attachable(&spec("no-attach"), &l));
    }

    #[test]
    fn terminated_pods_as_upstream() {
        let base = pod("ns", "p", "n", json!([claim_volume("v", "c")]));
        let with = |status: serde_json::Value, deleted: bool| {
            let mut p = base.clone();
            p.status = Some(serde_json::from_value(status).unwrap());
            if deleted {
                p.metadata.deletion_timestamp =
                    Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
            }
            p
        };
        let running = json!({"phase": "Running", "containerStatuses": [
            {"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {}}}]});
        let exited = json!({"phase": "Running", "containerStatuses": [
            {"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0}}}]});
        for (name, p, terminated) in [
            ("running", with(running.clone(), false), false),
            (
                "succeeded",
                with(json!({"phase": "Succeeded"}), false),
                true,
            ),
            ("failed", with(json!({"phase": "Failed"}), false), true),
            ("deleted, still running", with(running, true), false),
            (
                "deleted, containers exited",
                with(exited.clone(), true),
                true,
            ),
            ("exited, not deleted", with(exited, false), false),
            (
                "deleted, no statuses",
                with(json!({"phase": "Pending"}), true),
                true,
            ),
        ] {
            assert_eq!(is_pod_terminated(&p), terminated, "{name}");
            assert_eq!(determine_volume_action(&p, true), !terminated, "{name}");
        }
        // A pod without volumes keeps the default action.
        let mut none = with(json!({"phase": "Succeeded"}), false);
        none.spec.as_mut().unwrap().volumes = None;
        assert!(determine_volume_action(&none, true));
    }

    #[test]
    fn process_pod_volumes_adds_and_removes_on_managed_nodes_only() {
        let mut l = FakeListers::default();
        l.add_bound_csi_claim("ns", "c1", "pv-1", "d");
        l.add_bound_csi_claim("ns", "c2", "pv-2", "no-attach");
        l.add_driver("no-attach", Some(false));
        let p = pod(
            "ns",
            "p",
            "n1",
            json!([claim_volume("a", "c1"), claim_volume("b", "c2")]),
        );
        let mut dsw = DesiredStateOfWorld::default();
        process_pod_volumes(&p, true, &mut dsw, &l);
        assert!(dsw.get_volumes_to_attach().is_empty(), "n1 is not managed");
        dsw.add_node("n1");
        process_pod_volumes(&p, true, &mut dsw, &l);
        let got: Vec<String> = dsw
            .get_volumes_to_attach()
            .into_iter()
            .map(|v| v.volume_name)
            .collect();
        assert_eq!(got, ["kubernetes.io/csi/d^pv-1-handle"]);
        process_pod_volumes(&p, false, &mut dsw, &l);
        assert!(dsw.get_volumes_to_attach().is_empty());
    }

    #[test]
    fn csi_unique_names_split() {
        assert_eq!(
            split_csi_unique_name("kubernetes.io/csi/csi.rekube.io^vol-1").unwrap(),
            ("csi.rekube.io".to_string(), "vol-1".to_string())
        );
        for bad in [
            "kubernetes.io/csi/d",
            "kubernetes.io/aws-ebs/x",
            "kubernetes.io/csi/a^b^c",
        ] {
            assert!(split_csi_unique_name(bad).is_err(), "{bad}");
        }
    }
}
