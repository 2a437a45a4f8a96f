//! Projected volumes (pkg/volume/projected/projected.go `collectData`): the files of
//! several sources in one volume, with the volume's `defaultMode`. The configMap, secret
//! and downwardAPI sources reuse those plugins' payloads; a serviceAccountToken source is
//! the token the shell requested for it ([`token_requests`], through the token manager,
//! [`super::token_manager`]) as the file at its path; the errors of all sources are
//! aggregated as upstream's. A clusterTrustBundle source is the trust anchors of the
//! bundles the shell listed ([`super::cluster_trust_bundle`]). A podCertificate source is
//! the credential the shell had issued for it (through the podcertificate manager,
//! [`super::pod_certificate_manager`]) as its credential bundle, key and chain files
//! ([`super::pod_certificate::payload`]). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, ProjectedVolumeSource, Secret, SecretVolumeSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::Pod;

use super::{FileProjection, Payload, aggregate_message, configmap, downwardapi, secret};

/// upstream's default `expirationSeconds` of a serviceAccountToken projection
/// (SetDefaults_ServiceAccountTokenProjection; the CRD's schema default too).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The tokens of a projected volume's serviceAccountToken sources, by the source's index
/// in `sources`: the token, or why there is none (upstream's `getServiceAccountToken`
/// error).
pub type Tokens = BTreeMap<usize, Result<Vec<u8>, String>>;

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

/// The TokenRequest of each serviceAccountToken source (by its index in `sources`), as
/// upstream's `collectData` makes it: the source's audience (none: the apiserver's own
/// audiences), its `expirationSeconds` (default 3600; the apiserver refuses less than
/// 600), bound to the pod's token binding Secret `binding` (name and UID;
/// [`rekube_crds::token_binding`]) where upstream binds to the Pod.
pub fn token_requests(
    source: &ProjectedVolumeSource,
    binding: (&str, &str),
) -> Vec<(usize, TokenRequest)> {
    source
        .sources
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| s.service_account_token.as_ref().map(|t| (i, t)))
        .map(|(i, t)| {
            let audiences = (!t.audience.as_deref().unwrap_or_default().is_empty())
                .then(|| vec![t.audience.clone().unwrap_or_default()]);
            let tr = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences,
                    expiration_seconds: Some(
                        t.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
                    ),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Secret".into()),
                        name: Some(binding.0.to_string()),
                        uid: Some(binding.1.to_string()),
                    }),
                }),
                ..Default::default()
            };
            (i, tr)
        })
        .collect()
}

/// Upstream `collectData`: every source's files in one payload (a later source's file
/// replaces an earlier one's of the same path), or every source's error. `config_maps` and
/// `secrets` are the objects read for the sources (a missing name: not found), `tokens`
/// the serviceAccountToken sources' tokens, `cluster_trust_bundles` the ClusterTrustBundles
/// listed for the clusterTrustBundle sources, `pod_certificates` the podCertificate
/// sources' credentials. A token, trust anchors or credential file has the
/// volume's `defaultMode` (upstream: 0600 when the pod has an fsUser or fsGroup, for
/// SetVolumeOwnership to open to the group; rekube sets no volume ownership, so neither
/// that).
#[allow(clippy::too_many_arguments)]
pub fn collect_data(
    source: &ProjectedVolumeSource,
    pod: &Pod,
    config_maps: &BTreeMap<String, ConfigMap>,
    secrets: &BTreeMap<String, Secret>,
    tokens: &Tokens,
    cluster_trust_bundles: &super::cluster_trust_bundle::Bundles,
    pod_certificates: &super::pod_certificate::Credentials,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<Payload, ProjectedError> {
    let default_mode = source.default_mode.ok_or(ProjectedError::NoDefaultMode)?;
    let mut payload = Payload::new();
    let mut errors: Vec<String> = Vec::new();
    for (i, s) in source.sources.iter().flatten().enumerate() {
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
        } else if let Some(t) = &s.service_account_token {
            match tokens.get(&i) {
                Some(Ok(token)) => Ok(Payload::from([(
                    t.path.clone(),
                    FileProjection::new(token.clone(), default_mode),
                )])),
                Some(Err(e)) => Err(e.clone()),
                None => Err(format!(
                    "failed to fetch token: no token requested for source {i} ({})",
                    t.path
                )),
            }
        } else if let Some(c) = &s.cluster_trust_bundle {
            super::cluster_trust_bundle::trust_anchors(c, cluster_trust_bundles).map(|anchors| {
                Payload::from([(c.path.clone(), FileProjection::new(anchors, default_mode))])
            })
        } else if let Some(c) = &s.pod_certificate {
            match pod_certificates.get(&i) {
                Some(Ok(credential)) => {
                    Ok(super::pod_certificate::payload(c, credential, default_mode))
                }
                Some(Err(e)) => Err(e.clone()),
                None => Err(super::pod_certificate::NOT_ISSUED_YET.to_string()),
            }
        } else {
            Err("an empty projections are not supported by rekube-node-agent yet".to_string())
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
        let payload = collect_data(
            &src,
            &pod(),
            &cms,
            &secrets,
            &Tokens::new(),
            &Default::default(),
            &Default::default(),
            &BTreeMap::new(),
        )
        .unwrap();
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
                    "[configmap references non-existent config key: zzz, secret \"gone\" not found, failed to fetch token: secrets \"p-token-binding-u\" not found]",
                ),
            ),
            (
                serde_json::json!({"defaultMode": 420, "sources": [
                    {"clusterTrustBundle": {"path": "ca", "name": "b"}},
                    {"podCertificate": {"signerName": "s", "keyType": "ED25519", "credentialBundlePath": "c"}},
                ]}),
                Err(
                    "[while getting ClusterTrustBundle: the ClusterTrustBundles were not read, credential bundle is not issued yet]",
                ),
            ),
            (
                serde_json::json!({"defaultMode": 420, "sources": [{"configMap": {"name": "cm"}}, {"secret": {"name": "s"}}]}),
                Ok(3),
            ),
        ];
        // The token of source 2 could not be had (the shell's error).
        let tokens = Tokens::from([(
            2,
            Err("failed to fetch token: secrets \"p-token-binding-u\" not found".to_string()),
        )]);
        for (json, want) in cases {
            let got = collect_data(
                &source(json.clone()),
                &pod(),
                &cms,
                &secrets,
                &tokens,
                &Default::default(),
                &Default::default(),
                &BTreeMap::new(),
            );
            match want {
                Ok(n) => assert_eq!(got.unwrap().len(), *n, "{json}"),
                Err(msg) => assert_eq!(got.unwrap_err().to_string(), *msg, "{json}"),
            }
        }
    }

    /// upstream TestCollectDataWithServiceAccountToken, 5 of its 8 cases (not: the three
    /// fsUser/fsGroup cases, mode 0600 and the file's owner: rekube sets no volume
    /// ownership). As upstream, the request goes through the token manager to a fake API
    /// that defaults the audiences to the apiserver's (`https://api`) and answers
    /// `<namespace>:<service account>:<expirationSeconds>:<audiences>` as the token; the
    /// request is bound to the pod's token binding Secret instead of the pod.
    #[tokio::test]
    async fn collect_data_with_service_account_token() {
        struct Case {
            name: &'static str,
            audience: Option<&'static str>,
            default_mode: Option<i32>,
            expiration: Option<i64>,
            path: &'static str,
            want: Result<(&'static str, &'static str, u32), &'static str>,
        }
        let cases = [
            Case {
                name: "good service account",
                audience: Some("https://example.com"),
                default_mode: Some(0o644),
                expiration: Some(60),
                path: "token",
                want: Ok((
                    "token",
                    "test_projected_namespace:foo:60:[https://example.com]",
                    0o644,
                )),
            },
            Case {
                name: "good service account other path",
                audience: Some("https://example.com"),
                default_mode: Some(0o644),
                expiration: Some(60),
                path: "other-token",
                want: Ok((
                    "other-token",
                    "test_projected_namespace:foo:60:[https://example.com]",
                    0o644,
                )),
            },
            Case {
                name: "good service account defaults audience",
                audience: None,
                default_mode: Some(0o644),
                expiration: Some(60),
                path: "token",
                want: Ok((
                    "token",
                    "test_projected_namespace:foo:60:[https://api]",
                    0o644,
                )),
            },
            Case {
                name: "good service account defaults expiration",
                audience: None,
                default_mode: Some(0o644),
                expiration: None,
                path: "token",
                want: Ok((
                    "token",
                    "test_projected_namespace:foo:3600:[https://api]",
                    0o644,
                )),
            },
            Case {
                name: "no default mode",
                audience: None,
                default_mode: None,
                expiration: None,
                path: "token",
                want: Err("no defaultMode used, not even the default value for it"),
            },
        ];
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "test_projected_namespace", "uid": "test_pod_uid"},
            "spec": {"serviceAccountName": "foo", "containers": []},
        }))
        .unwrap();
        for c in cases {
            let src = source(
                serde_json::json!({"defaultMode": c.default_mode, "sources": [
                    {"serviceAccountToken": {"audience": c.audience, "expirationSeconds": c.expiration, "path": c.path}},
                ]}),
            );
            let namespace = "test_projected_namespace";
            let sa = rekube_crds::token_binding::service_account_name(pod.spec.as_ref().unwrap());
            let manager = super::super::token_manager::TokenManager::default();
            let mut tokens = Tokens::new();
            for (i, tr) in token_requests(&src, ("p-token-binding-testpod", "secret-uid")) {
                let r = tr.spec.as_ref().unwrap().bound_object_ref.clone().unwrap();
                assert_eq!(
                    (
                        r.api_version.as_deref(),
                        r.kind.as_deref(),
                        r.name.as_deref(),
                        r.uid.as_deref()
                    ),
                    (
                        Some("v1"),
                        Some("Secret"),
                        Some("p-token-binding-testpod"),
                        Some("secret-uid")
                    ),
                    "{}",
                    c.name
                );
                let fake_api = |mut tr: TokenRequest| async move {
                    let spec = tr.spec.get_or_insert_default();
                    let audiences = spec
                        .audiences
                        .get_or_insert_with(|| vec!["https://api".into()]);
                    let token = format!(
                        "{namespace}:foo:{}:[{}]",
                        spec.expiration_seconds.unwrap(),
                        audiences.join(" ")
                    );
                    tr.status = Some(k8s_openapi::api::authentication::v1::TokenRequestStatus {
                        token: Some(token),
                        expiration_timestamp: Some(
                            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600),
                            ),
                        ),
                    });
                    Ok(tr)
                };
                let got = manager
                    .get_service_account_token("test_pod_uid", namespace, &sa, &tr, || {
                        fake_api(tr.clone())
                    })
                    .await
                    .map(|tr| tr.status.unwrap().token.unwrap().into_bytes());
                tokens.insert(i, got);
            }
            let got = collect_data(
                &src,
                &pod,
                &BTreeMap::new(),
                &BTreeMap::new(),
                &tokens,
                &Default::default(),
                &Default::default(),
                &BTreeMap::new(),
            );
            match c.want {
                Ok((path, data, mode)) => {
                    let payload = got.unwrap_or_else(|e| panic!("{}: {e}", c.name));
                    let got: Vec<(&str, &[u8], u32, Option<u32>)> = payload
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.data.as_slice(), v.mode, v.fs_user))
                        .collect();
                    assert_eq!(got, [(path, data.as_bytes(), mode, None)], "{}", c.name);
                }
                Err(message) => {
                    assert_eq!(got.unwrap_err().to_string(), message, "{}", c.name)
                }
            }
        }
    }

    /// A source without a token from the shell is an error naming it, never an empty file.
    #[test]
    fn a_token_source_without_a_token_fails() {
        let src = source(serde_json::json!({"defaultMode": 420, "sources": [
            {"configMap": {"name": "cm"}},
            {"serviceAccountToken": {"path": "token"}},
        ]}));
        let (cms, secrets) = objects_fixture();
        assert_eq!(
            collect_data(
                &src,
                &pod(),
                &cms,
                &secrets,
                &Tokens::new(),
                &Default::default(),
                &Default::default(),
                &BTreeMap::new()
            )
            .unwrap_err()
            .to_string(),
            "failed to fetch token: no token requested for source 1 (token)"
        );
        assert_eq!(
            token_requests(&src, ("b", "u"))
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            [1]
        );
    }

    /// upstream TestCollectDataWithClusterTrustBundle (3/3): by name, by signer name and
    /// selector, a non-default mode; and the file of an optional missing bundle is empty.
    #[test]
    fn collect_data_with_cluster_trust_bundle() {
        use super::super::cluster_trust_bundle::Bundles;
        let good_cert1 = "-----BEGIN CERTIFICATE-----\nY2VydGlmaWNhdGUgb2Ygcm9vdDE=\n-----END CERTIFICATE-----\n";
        let bundle = |name: &str, signer: Option<&str>| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"key": "value"}},
                "spec": {"signerName": signer, "trustBundle": good_cert1},
            }))
            .unwrap()
        };
        let cases = [
            (
                "single ClusterTrustBundle by name",
                serde_json::json!({"defaultMode": 0o644, "sources": [
                    {"clusterTrustBundle": {"name": "foo", "path": "bundle.pem"}}]}),
                bundle("foo", None),
                Ok(("bundle.pem", good_cert1, 0o644)),
            ),
            (
                "single ClusterTrustBundle by signer name",
                serde_json::json!({"defaultMode": 0o644, "sources": [
                    {"clusterTrustBundle": {"signerName": "foo.example/bar",
                        "labelSelector": {"matchLabels": {"key": "value"}}, "path": "bundle.pem"}}]}),
                bundle("foo.example:bar:x", Some("foo.example/bar")),
                Ok(("bundle.pem", good_cert1, 0o644)),
            ),
            (
                "single ClusterTrustBundle by name, non-default mode",
                serde_json::json!({"defaultMode": 0o600, "sources": [
                    {"clusterTrustBundle": {"name": "foo", "path": "bundle.pem"}}]}),
                bundle("foo", None),
                Ok(("bundle.pem", good_cert1, 0o600)),
            ),
            (
                "an optional missing ClusterTrustBundle",
                serde_json::json!({"defaultMode": 0o644, "sources": [
                    {"clusterTrustBundle": {"name": "bar", "path": "bundle.pem", "optional": true}}]}),
                bundle("foo", None),
                Ok(("bundle.pem", "", 0o644)),
            ),
            (
                "a missing ClusterTrustBundle",
                serde_json::json!({"defaultMode": 0o644, "sources": [
                    {"clusterTrustBundle": {"name": "bar", "path": "bundle.pem"}}]}),
                bundle("foo", None),
                Err(
                    "while getting ClusterTrustBundle: clustertrustbundle.certificates.k8s.io \"bar\" not found",
                ),
            ),
        ];
        for (name, src, bundle, want) in cases {
            let got = collect_data(
                &source(src),
                &pod(),
                &BTreeMap::new(),
                &BTreeMap::new(),
                &Tokens::new(),
                &Bundles::Listed(vec![bundle]),
                &Default::default(),
                &BTreeMap::new(),
            );
            match want {
                Ok((path, data, mode)) => {
                    let payload = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                    let got: Vec<(&str, &[u8], u32, Option<u32>)> = payload
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.data.as_slice(), v.mode, v.fs_user))
                        .collect();
                    assert_eq!(got, [(path, data.as_bytes(), mode, None)], "{name}");
                }
                Err(message) => assert_eq!(got.unwrap_err().to_string(), message, "{name}"),
            }
        }
    }
}
