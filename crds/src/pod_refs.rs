//! The Secrets, ConfigMaps and PersistentVolumeClaims a pod refers to: upstream's
//! `VisitPodSecretNames` and `VisitPodConfigmapNames` (pkg/api/v1/pod/util.go), and the
//! claims of its volumes as the Node authorizer's graph has them (a `persistentVolumeClaim`
//! volume's claim, `ephemeral.VolumeClaimName` for a generic ephemeral one). The node
//! authorizer grants a node exactly these names of the pods bound to it; the node agent
//! reads them.
//!
//! As upstream: every container kind (init, regular, ephemeral), env `valueFrom` and
//! `envFrom`, imagePullSecrets, and the volume sources that name a Secret or ConfigMap in
//! the pod's namespace. The claims' PersistentVolumes are the node authorizer's to follow
//! (it reads the claims); a PersistentVolume's own Secrets (pod → PVC → PV → secret) are
//! not followed. Empty names are skipped (upstream `skipEmptyNames`).
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, PodSpec, Volume};

/// The env and envFrom of every container, init container and ephemeral container.
fn container_envs(spec: &PodSpec) -> Vec<(&[EnvVar], &[EnvFromSource])> {
    let plain = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| {
            (
                c.env.as_deref().unwrap_or(&[]),
                c.env_from.as_deref().unwrap_or(&[]),
            )
        });
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| {
        (
            c.env.as_deref().unwrap_or(&[]),
            c.env_from.as_deref().unwrap_or(&[]),
        )
    });
    plain.chain(ephemeral).collect()
}

fn volume_secret_names(v: &Volume) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    if let Some(s) = &v.azure_file {
        out.push(&s.secret_name);
    }
    let refs = [
        v.cephfs.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.cinder.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.flex_volume.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.rbd.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.scale_io.as_ref().map(|s| &s.secret_ref),
        v.iscsi.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.storageos.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.csi
            .as_ref()
            .and_then(|s| s.node_publish_secret_ref.as_ref()),
    ];
    out.extend(refs.into_iter().flatten().map(|r| r.name.as_str()));
    if let Some(p) = &v.projected {
        out.extend(
            p.sources
                .iter()
                .flatten()
                .filter_map(|s| s.secret.as_ref())
                .map(|s| s.name.as_str()),
        );
    }
    if let Some(s) = &v.secret {
        out.extend(s.secret_name.as_deref());
    }
    out
}

fn volume_config_map_names(v: &Volume) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    if let Some(p) = &v.projected {
        out.extend(
            p.sources
                .iter()
                .flatten()
                .filter_map(|s| s.config_map.as_ref())
                .map(|s| s.name.as_str()),
        );
    }
    if let Some(c) = &v.config_map {
        out.push(&c.name);
    }
    out
}

fn non_empty<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    names
        .into_iter()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// The ConfigMaps and Secrets one container's environment refers to (`envFrom` and env
/// `valueFrom`; upstream `visitContainerConfigmapNames` / `visitContainerSecretNames`).
pub fn container_env_names(
    env: &[EnvVar],
    env_from: &[EnvFromSource],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let config_maps = env_from
        .iter()
        .filter_map(|e| e.config_map_ref.as_ref())
        .map(|r| r.name.as_str())
        .chain(
            env.iter()
                .filter_map(|e| e.value_from.as_ref()?.config_map_key_ref.as_ref())
                .map(|r| r.name.as_str()),
        );
    let secrets = env_from
        .iter()
        .filter_map(|e| e.secret_ref.as_ref())
        .map(|r| r.name.as_str())
        .chain(
            env.iter()
                .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|r| r.name.as_str()),
        );
    (non_empty(config_maps), non_empty(secrets))
}

/// Every Secret name the pod spec refers to (upstream `VisitPodSecretNames`).
pub fn pod_secret_names(spec: &PodSpec) -> BTreeSet<String> {
    let mut names: Vec<&str> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.as_str())
        .collect();
    for v in spec.volumes.iter().flatten() {
        names.extend(volume_secret_names(v));
    }
    let mut out = non_empty(names);
    for (env, env_from) in container_envs(spec) {
        out.extend(container_env_names(env, env_from).1);
    }
    out
}

/// Every ConfigMap name the pod spec refers to (upstream `VisitPodConfigmapNames`).
pub fn pod_config_map_names(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = non_empty(
        spec.volumes
            .iter()
            .flatten()
            .flat_map(volume_config_map_names),
    );
    for (env, env_from) in container_envs(spec) {
        out.extend(container_env_names(env, env_from).0);
    }
    out
}

/// The claim of a generic ephemeral volume: `<pod>-<volume>` (upstream
/// `ephemeral.VolumeClaimName`, component-helpers/storage/ephemeral).
pub fn ephemeral_volume_claim_name(pod_name: &str, volume_name: &str) -> String {
    format!("{pod_name}-{volume_name}")
}

/// The PersistentVolumeClaim a volume of pod `pod_name` uses: a `persistentVolumeClaim`
/// volume's `claimName`, or [`ephemeral_volume_claim_name`] for an `ephemeral` one.
pub fn volume_claim_name(pod_name: &str, v: &Volume) -> Option<String> {
    if let Some(c) = &v.persistent_volume_claim {
        return Some(c.claim_name.clone());
    }
    v.ephemeral
        .as_ref()
        .map(|_| ephemeral_volume_claim_name(pod_name, &v.name))
}

/// Whether `claim` was created for `pod`'s generic ephemeral volume: same namespace and
/// controlled by the pod (upstream `ephemeral.VolumeIsForPod`), else upstream's error.
pub fn volume_is_for_pod(
    pod: &crate::Pod,
    claim: &crate::PersistentVolumeClaim,
) -> Result<(), String> {
    let ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.clone().unwrap_or_default()
    };
    let controlled = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == pod.metadata.uid.as_ref());
    if ns(&claim.metadata) == ns(&pod.metadata) && controlled {
        return Ok(());
    }
    Err(format!(
        "PVC {}/{} was not created for pod {}/{} (pod is not owner)",
        ns(&claim.metadata),
        claim.metadata.name.as_deref().unwrap_or_default(),
        ns(&pod.metadata),
        pod.metadata.name.as_deref().unwrap_or_default(),
    ))
}

/// Every PersistentVolumeClaim name the volumes of pod `pod_name` use (upstream's Node
/// authorizer graph: the pod → pvc edges of `AddPod`).
pub fn pod_claim_names(pod_name: &str, spec: &PodSpec) -> BTreeSet<String> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| volume_claim_name(pod_name, v))
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Upstream TestPodSecrets / TestPodConfigmaps: a pod with every referencing field
    /// set, each to its own name, and the exact set expected.
    fn pod() -> PodSpec {
        let env = |kind: &str, n: &str| {
            json!({
                "envFrom": [{(format!("{kind}Ref")): {"name": format!("{n}-env-from")}}],
                "env": [{"name": "E", "valueFrom": {(format!("{kind}KeyRef")): {"name": format!("{n}-env"), "key": "k"}}}],
            })
        };
        let merged = |a: serde_json::Value, b: serde_json::Value, name: &str| {
            let mut c = json!({"name": name, "image": "i"});
            for v in [a, b] {
                for (k, x) in v.as_object().unwrap() {
                    let slot = c
                        .as_object_mut()
                        .unwrap()
                        .entry(k.clone())
                        .or_insert(json!([]));
                    slot.as_array_mut()
                        .unwrap()
                        .extend(x.as_array().unwrap().iter().cloned());
                }
            }
            c
        };
        serde_json::from_value(json!({
            "imagePullSecrets": [{"name": "pull"}, {"name": ""}],
            "initContainers": [merged(env("secret", "s-init"), env("configMap", "c-init"), "init")],
            "containers": [merged(env("secret", "s-main"), env("configMap", "c-main"), "main")],
            "ephemeralContainers": [merged(env("secret", "s-eph"), env("configMap", "c-eph"), "debug")],
            "volumes": [
                {"name": "azure", "azureFile": {"secretName": "azure", "shareName": "s"}},
                {"name": "ceph", "cephfs": {"monitors": ["m"], "secretRef": {"name": "ceph"}}},
                {"name": "cinder", "cinder": {"volumeID": "v", "secretRef": {"name": "cinder"}}},
                {"name": "flex", "flexVolume": {"driver": "d", "secretRef": {"name": "flex"}}},
                {"name": "projected", "projected": {"sources": [
                    {"secret": {"name": "projected"}}, {"configMap": {"name": "c-projected"}}]}},
                {"name": "rbd", "rbd": {"monitors": ["m"], "image": "i", "secretRef": {"name": "rbd"}}},
                {"name": "secret", "secret": {"secretName": "secret"}},
                {"name": "secret-unnamed", "secret": {}},
                {"name": "scaleio", "scaleIO": {"gateway": "g", "system": "s", "secretRef": {"name": "scaleio"}}},
                {"name": "iscsi", "iscsi": {"targetPortal": "t", "iqn": "q", "lun": 0, "secretRef": {"name": "iscsi"}}},
                {"name": "storageos", "storageos": {"secretRef": {"name": "storageos"}}},
                {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi"}}},
                {"name": "cm", "configMap": {"name": "c-volume"}},
                {"name": "empty", "emptyDir": {}},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn every_secret_reference_of_upstreams_table() {
        let want: BTreeSet<String> = [
            "pull",
            "s-init-env-from",
            "s-init-env",
            "s-main-env-from",
            "s-main-env",
            "s-eph-env-from",
            "s-eph-env",
            "azure",
            "ceph",
            "cinder",
            "flex",
            "projected",
            "rbd",
            "secret",
            "scaleio",
            "iscsi",
            "storageos",
            "csi",
        ]
        .map(String::from)
        .into();
        assert_eq!(pod_secret_names(&pod()), want);
    }

    #[test]
    fn every_config_map_reference_of_upstreams_table() {
        let want: BTreeSet<String> = [
            "c-init-env-from",
            "c-init-env",
            "c-main-env-from",
            "c-main-env",
            "c-eph-env-from",
            "c-eph-env",
            "c-projected",
            "c-volume",
        ]
        .map(String::from)
        .into();
        assert_eq!(pod_config_map_names(&pod()), want);
    }

    #[test]
    fn a_pod_without_references_has_none() {
        let spec: PodSpec =
            serde_json::from_value(json!({"containers": [{"name": "c", "image": "i"}]})).unwrap();
        assert!(pod_secret_names(&spec).is_empty());
        assert!(pod_config_map_names(&spec).is_empty());
        assert!(pod_claim_names("p", &spec).is_empty());
        assert!(pod_claim_names("p", &pod()).is_empty());
    }

    #[test]
    fn claims_of_claim_and_ephemeral_volumes() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "shared"}},
                {"name": "again", "persistentVolumeClaim": {"claimName": "shared", "readOnly": true}},
                {"name": "unnamed", "persistentVolumeClaim": {"claimName": ""}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}},
                {"name": "secret", "secret": {"secretName": "s"}},
            ],
        }))
        .unwrap();
        let want: BTreeSet<String> = ["shared", "web-scratch"].map(String::from).into();
        assert_eq!(pod_claim_names("web", &spec), want);
        let volumes = spec.volumes.as_deref().unwrap();
        assert_eq!(
            volume_claim_name("web", &volumes[3]).as_deref(),
            Some("web-scratch")
        );
        assert_eq!(volume_claim_name("web", &volumes[4]), None);
        // Not followed to Secrets: a claim is no Secret reference.
        assert_eq!(pod_secret_names(&spec), ["s".to_string()].into());
    }
}
