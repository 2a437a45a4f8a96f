//! The Secrets and ConfigMaps a pod refers to: upstream's `VisitPodSecretNames` and
//! `VisitPodConfigmapNames` (pkg/api/v1/pod/util.go). The node authorizer grants a node
//! exactly these names of the pods bound to it; the node agent reads them.
//!
//! As upstream: every container kind (init, regular, ephemeral), env `valueFrom` and
//! `envFrom`, imagePullSecrets, and the volume sources that name a Secret or ConfigMap in
//! the pod's namespace. Transitive references (pod → PVC → PV → secret) are not followed;
//! empty names are skipped (upstream `skipEmptyNames`).
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
    }
}
