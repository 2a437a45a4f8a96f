//! Projected volumes (pkg/volume/projected/projected.go `collectData`): the files of
//! several sources in one volume, with the volume's `defaultMode`. The configMap, secret
//! and downwardAPI sources reuse those plugins' payloads; the errors of all sources are
//! aggregated as upstream's. serviceAccountToken, clusterTrustBundle and podCertificate
//! sources are refused for now, naming the source. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, ProjectedVolumeSource, Secret, SecretVolumeSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::Pod;

use super::{Payload, aggregate_message, configmap, downwardapi, secret};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectedError {
    #[error("no defaultMode used, not even the default value for it")]
    NoDefaultMode,
    /// The sources that failed, as upstream's aggregate error.
    #[error("{}", aggregate_message(.0.iter().cloned()))]
    Sources(Vec<String>),
}

/// The ConfigMaps and Secrets a projected volume's sources name.
pub fn objects(source: &ProjectedVolumeSource) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for s in source.sources.iter().flatten() {
        if let Some(c) = &s.config_map {
            config_maps.push(c.name.clone());
        }
        if let Some(c) = &s.secret {
            secrets.push(c.name.clone());
        }
    }
    (config_maps, secrets)
}

/// Upstream `collectData`: every source's files in one payload (a later source's file
/// replaces an earlier one's of the same path), or every source's error. `config_maps` and
/// `secrets` are the objects read for the sources (a missing name: not found).
pub fn collect_data(
    source: &ProjectedVolumeSource,
    pod: &Pod,
    config_maps: &BTreeMap<String, ConfigMap>,
    secrets: &BTreeMap<String, Secret>,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<Payload, ProjectedError> {
    let default_mode = source.default_mode.ok_or(ProjectedError::NoDefaultMode)?;
    let mut payload = Payload::new();
    let mut errors: Vec<String> = Vec::new();
    for s in source.sources.iter().flatten() {
        let files = if let Some(c) = &s.config_map {
            let as_volume = ConfigMapVolumeSource {
                name: c.name.clone(),
                items: c.items.clone(),
                optional: c.optional,
                default_mode: Some(default_mode),
            };
            configmap::payload_for(&as_volume, config_maps.get(&c.name)).map_err(|e| e.to_string())
        } else if let Some(c) = &s.secret {
            let as_volume = SecretVolumeSource {
                secret_name: Some(c.name.clone()),
                items: c.items.clone(),
                optional: c.optional,
                default_mode: Some(default_mode),
            };
            secret::payload_for(&as_volume, secrets.get(&c.name)).map_err(|e| e.to_string())
        } else if let Some(d) = &s.downward_api {
            downwardapi::collect_data(
                d.items.as_deref().unwrap_or_default(),
                pod,
                node_allocatable,
                Some(default_mode),
            )
            .map_err(|e| e.to_string())
        } else {
            let kind = if s.service_account_token.is_some() {
                "serviceAccountToken"
            } else if s.cluster_trust_bundle.is_some() {
                "clusterTrustBundle"
            } else if s.pod_certificate.is_some() {
                "podCertificate"
            } else {
                "an empty"
            };
            Err(format!(
                "{kind} projections are not supported by rekube-node-agent yet"
            ))
        };
        match files {
            Ok(files) => payload.extend(files),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(payload)
    } else {
        Err(ProjectedError::Sources(errors))
    }
}

#[cfg(test)]
mod tests {
    //! After upstream's projected_test.go TestCollectDataWithSource: sources combined,
    //! modes, optional, missing objects and keys, errors aggregated.

    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }))
        .unwrap()
    }

    fn source(json: serde_json::Value) -> ProjectedVolumeSource {
        serde_json::from_value(json).unwrap()
    }

    fn objects_fixture() -> (BTreeMap<String, ConfigMap>, BTreeMap<String, Secret>) {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}}))
        .unwrap();
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"}, "data": {"token": "c2VjcmV0"}}))
        .unwrap();
        (
            BTreeMap::from([("cm".to_string(), cm)]),
            BTreeMap::from([("s".to_string(), s)]),
        )
    }

    #[test]
    fn sources_are_combined_with_the_volumes_default_mode() {
        let (cms, secrets) = objects_fixture();
        let src = source(serde_json::json!({"defaultMode": 0o440, "sources": [
            {"configMap": {"name": "cm", "items": [{"key": "a", "path": "conf/a"}]}},
            {"secret": {"name": "s", "items": [{"key": "token", "path": "token", "mode": 0o400}]}},
            {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        ]}));
        let payload = collect_data(&src, &pod(), &cms, &secrets, &BTreeMap::new()).unwrap();
        let got: Vec<(&str, &[u8], u32)> = payload
            .iter()
            .map(|(k, v)| (k.as_str(), v.data.as_slice(), v.mode))
            .collect();
        assert_eq!(
            got,
            [
                ("conf/a", b"1".as_slice(), 0o440),
                ("labels", b"app=\"x\"".as_slice(), 0o440),
                ("token", b"secret".as_slice(), 0o400),
            ]
        );
        assert_eq!(
            objects(&src),
            (vec!["cm".to_string()], vec!["s".to_string()])
        );
    }

    #[test]
    fn errors_of_every_source_are_aggregated() {
        let (cms, secrets) = objects_fixture();
        let cases: &[(serde_json::Value, Result<usize, &str>)] = &[
            (
                serde_json::json!({"sources": []}),
                Err("no defaultMode used, not even the default value for it"),
            ),
            (
                serde_json::json!({"defaultMode": 420, "sources": [{"configMap": {"name": "nope", "optional": true}}]}),
                Ok(0),
            ),
            (
                serde_json::json!({"defaultMode": 420, "sources": [{"configMap": {"name": "nope"}}]}),
                Err("configmap \"nope\" not found"),
            ),
            (
                serde_json::json!({"defaultMode": 420, "sources": [
                    {"configMap": {"name": "cm", "items": [{"key": "zzz", "path": "z"}]}},
                    {"secret": {"name": "gone"}},
                    {"serviceAccountToken": {"path": "token"}},
                ]}),
                Err(
                    "[configmap references non-existent config key: zzz, secret \"gone\" not found, serviceAccountToken projections are not supported by rekube-node-agent yet]",
                ),
            ),
            (
                serde_json::json!({"defaultMode": 420, "sources": [{"configMap": {"name": "cm"}}, {"secret": {"name": "s"}}]}),
                Ok(3),
            ),
        ];
        for (json, want) in cases {
            let got = collect_data(
                &source(json.clone()),
                &pod(),
                &cms,
                &secrets,
                &BTreeMap::new(),
            );
            match want {
                Ok(n) => assert_eq!(got.unwrap().len(), *n, "{json}"),
                Err(msg) => assert_eq!(got.unwrap_err().to_string(), *msg, "{json}"),
            }
        }
    }
}
