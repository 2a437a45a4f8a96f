//! `--claims KIND:N`: each pod mounts N PersistentVolumeClaims of one kind, made just
//! before it (upstream's storage pod-startup workloads with claims; issue 13's "PVC created
//! → pod Running"). The kinds:
//! - `static`: hostPath PersistentVolumes made before the node starts (an administrator's
//!   static provisioning, reclaim policy Retain), bound to the claims by the PV binder;
//! - `local-disk`: dynamic, a StorageClass of rekube-csi's local-disk type (a sparse image
//!   on a loop device, ext4 made at the first stage);
//! - `hostpath`: dynamic, rekube-csi's hostpath type (a directory on the node).
//!
//! The dynamic classes bind WaitForFirstConsumer and the claims carry the
//! `volume.kubernetes.io/selected-node` annotation naming the benchmark's node, as the
//! scheduler would write it (the pods name their node; no scheduler runs on either side).
//! Every object carries the label `app=bench-pod-startup`, by which the run's leftovers are
//! found and removed.
use std::path::Path;

use anyhow::Context;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;

/// The size each claim asks for (rekube-csi's smallest local-disk volume is 16 MiB).
const CLAIM_SIZE: &str = "64Mi";
/// The label every object of a run carries.
pub const LABEL: (&str, &str) = ("app", "bench-pod-startup");
/// The annotation the scheduler writes on a claim to provision (upstream's AnnSelectedNode).
const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// rekube-csi's name (the script's CSIDriver).
const CSI_DRIVER: &str = "csi.rekube.io";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClaimKind {
    Static,
    LocalDisk,
    HostPath,
}

/// `--claims`: the kind and how many per pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Claims {
    pub kind: ClaimKind,
    pub count: usize,
}

pub fn parse_claims(s: &str) -> Result<Claims, String> {
    let (kind, count) = s
        .split_once(':')
        .ok_or_else(|| format!("--claims {s:?}: want KIND:N"))?;
    let kind = match kind {
        "static" => ClaimKind::Static,
        "local-disk" => ClaimKind::LocalDisk,
        "hostpath" => ClaimKind::HostPath,
        other => {
            return Err(format!(
                "--claims {s:?}: unknown kind {other:?} (static, local-disk, hostpath)"
            ));
        }
    };
    let count = count
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("--claims {s:?}: N must be a positive number"))?;
    Ok(Claims { kind, count })
}

/// The API resources of one side (core/v1 and storage.k8s.io/v1, or rekube.io/v1).
#[derive(Clone)]
pub struct StorageResources {
    pub claim: ApiResource,
    pub volume: ApiResource,
    pub class: ApiResource,
}

impl StorageResources {
    pub fn upstream() -> Self {
        StorageResources {
            claim: ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(&()),
            volume: ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolume>(&()),
            class: ApiResource::erase::<k8s_openapi::api::storage::v1::StorageClass>(&()),
        }
    }

    pub fn rekube() -> Self {
        StorageResources {
            claim: ApiResource::erase::<rekube_crds::PersistentVolumeClaim>(&()),
            volume: ApiResource::erase::<rekube_crds::PersistentVolume>(&()),
            class: ApiResource::erase::<rekube_crds::StorageClass>(&()),
        }
    }
}

fn object(resource: &ApiResource, value: serde_json::Value) -> DynamicObject {
    let mut value = value;
    value["apiVersion"] = json!(resource.api_version);
    value["kind"] = json!(resource.kind);
    serde_json::from_value(value).expect("a well-formed object")
}

impl Claims {
    /// The StorageClass of the dynamic kinds (its name; the static kind has none, its PVs
    /// name a class without an object, as static volumes may).
    pub fn class_name(&self) -> &'static str {
        match self.kind {
            ClaimKind::Static => "bench-pod-startup-static",
            ClaimKind::LocalDisk => "bench-pod-startup-local-disk",
            ClaimKind::HostPath => "bench-pod-startup-hostpath",
        }
    }

    /// The name of claim `i` of pod `pod`.
    pub fn claim_name(pod: &str, i: usize) -> String {
        format!("{pod}-c{i}")
    }

    /// The pod's `volumes` and the container's `volumeMounts`.
    pub fn pod_parts(&self, pod: &str) -> (serde_json::Value, serde_json::Value) {
        let volumes: Vec<_> = (0..self.count)
            .map(|i| {
                json!({"name": format!("vol-{i}"),
                       "persistentVolumeClaim": {"claimName": Self::claim_name(pod, i)}})
            })
            .collect();
        let mounts: Vec<_> = (0..self.count)
            .map(|i| json!({"name": format!("vol-{i}"), "mountPath": format!("/vol/{i}")}))
            .collect();
        (json!(volumes), json!(mounts))
    }

    /// What a side needs before its node starts: the StorageClass (dynamic kinds) or
    /// `volumes` hostPath PersistentVolumes under `dir` (static).
    pub async fn create_objects(
        &self,
        client: &Client,
        res: &StorageResources,
        dir: &Path,
        volumes: usize,
    ) -> anyhow::Result<()> {
        let pp = PostParams::default();
        let labels = json!({LABEL.0: LABEL.1});
        match self.kind {
            ClaimKind::Static => {
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &res.volume);
                for i in 0..volumes {
                    let name = format!("bench-pod-startup-{i:04}");
                    let pv = object(
                        &res.volume,
                        json!({"metadata": {"name": name, "labels": labels},
                        "spec": {"capacity": {"storage": CLAIM_SIZE},
                                 "accessModes": ["ReadWriteOnce"],
                                 "persistentVolumeReclaimPolicy": "Retain",
                                 "storageClassName": self.class_name(),
                                 "hostPath": {"path": dir.join("static").join(&name),
                                              "type": "DirectoryOrCreate"}}}),
                    );
                    api.create(&pp, &pv)
                        .await
                        .with_context(|| format!("creating persistent volume {name}"))?;
                }
            }
            ClaimKind::LocalDisk | ClaimKind::HostPath => {
                let kind = if self.kind == ClaimKind::LocalDisk {
                    "local-disk"
                } else {
                    "hostpath"
                };
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &res.class);
                let class = object(
                    &res.class,
                    json!({"metadata": {"name": self.class_name(), "labels": labels},
                           "provisioner": CSI_DRIVER,
                           "parameters": {"type": kind},
                           "reclaimPolicy": "Delete",
                           "volumeBindingMode": "WaitForFirstConsumer"}),
                );
                api.create(&pp, &class)
                    .await
                    .with_context(|| format!("creating storage class {}", self.class_name()))?;
            }
        }
        Ok(())
    }

    /// Claim `i` of pod `pod` on `node`.
    pub fn claim(
        &self,
        res: &StorageResources,
        namespace: &str,
        pod: &str,
        i: usize,
        node: &str,
    ) -> DynamicObject {
        let mut claim = json!({
            "metadata": {"name": Self::claim_name(pod, i), "namespace": namespace,
                         "labels": {LABEL.0: LABEL.1}},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "storageClassName": self.class_name(),
                     "resources": {"requests": {"storage": CLAIM_SIZE}}}
        });
        if self.kind != ClaimKind::Static {
            claim["metadata"]["annotations"] = json!({ANN_SELECTED_NODE: node});
        }
        object(&res.claim, claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(
            parse_claims("local-disk:50"),
            Ok(Claims {
                kind: ClaimKind::LocalDisk,
                count: 50
            })
        );
        assert_eq!(
            parse_claims("static:1").map(|c| c.kind),
            Ok(ClaimKind::Static)
        );
        assert!(parse_claims("nfs:1").unwrap_err().contains("unknown kind"));
        assert!(parse_claims("hostpath:0").unwrap_err().contains("positive"));
        assert!(parse_claims("hostpath").unwrap_err().contains("KIND:N"));
    }

    #[test]
    fn claims_of_dynamic_kinds_name_the_node() {
        let c = parse_claims("hostpath:2").unwrap();
        let claim = c.claim(&StorageResources::rekube(), "ns", "pod-001", 1, "n1");
        assert_eq!(claim.metadata.name.as_deref(), Some("pod-001-c1"));
        assert_eq!(claim.metadata.annotations.unwrap()[ANN_SELECTED_NODE], "n1");
        assert_eq!(claim.types.unwrap().api_version, "rekube.io/v1");
        let s = parse_claims("static:1").unwrap();
        let claim = s.claim(&StorageResources::upstream(), "ns", "p", 0, "n1");
        assert!(claim.metadata.annotations.is_none());
        assert_eq!(
            claim.data["spec"]["storageClassName"],
            "bench-pod-startup-static"
        );
    }
}
