//! configMap volumes' content: upstream pkg/volume/configmap/configmap.go `MakePayload`
//! (the files: every key, or the listed items, with their modes) and `SetUpAt`'s handling
//! of a missing ConfigMap (an error unless the volume is optional, then an empty one).
//! Pure: the shell reads the ConfigMap and writes the payload with the atomic writer.

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, KeyToPath};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use std::collections::BTreeMap;

use super::{Payload, key_to_path_payload};

/// Why a configMap volume's files could not be made (upstream's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigMapError {
    #[error("no defaultMode used, not even the default value for it")]
    NoDefaultMode,
    #[error("configmap references non-existent config key: {0}")]
    NonExistentKey(String),
    /// The kubelet's configmap manager's NotFound (`configmap "NAME" not found`).
    #[error("configmap {0:?} not found")]
    NotFound(String),
}

/// Upstream `MakePayload`: without `mappings`, one file per key of `data` and
/// `binaryData` named after it, with `default_mode`; with them, one file per item at its
/// path, with its own mode or `default_mode`. A missing key fails the volume unless it is
/// `optional`.
pub fn make_payload(
    mappings: &[KeyToPath],
    config_map: &ConfigMap,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, ConfigMapError> {
    let default_mode = default_mode.ok_or(ConfigMapError::NoDefaultMode)?;
    // The API keeps data's and binaryData's keys apart; were one in both, data's wins
    // (upstream's item lookup).
    let keys: BTreeMap<String, Vec<u8>> = config_map
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .chain(
            config_map
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec())),
        )
        .collect();
    key_to_path_payload(mappings, &keys, default_mode, optional)
        .map_err(ConfigMapError::NonExistentKey)
}

/// The payload of a configMap volume from its source and the ConfigMap read for it
/// (`None`: not found). A missing ConfigMap fails the volume unless the source is
/// optional; then it projects as an empty ConfigMap (upstream `SetUpAt`).
pub fn payload_for(
    source: &ConfigMapVolumeSource,
    object: Option<&ConfigMap>,
) -> Result<Payload, ConfigMapError> {
    let optional = source.optional.unwrap_or(false);
    let empty;
    let config_map = match object {
        Some(cm) => cm,
        None if optional => {
            empty = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(source.name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            &empty
        }
        None => return Err(ConfigMapError::NotFound(source.name.clone())),
    };
    make_payload(
        source.items.as_deref().unwrap_or_default(),
        config_map,
        source.default_mode,
        optional,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::FileProjection;
    use k8s_openapi::ByteString;

    fn ktp(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    fn config_map(data: &[(&str, &str)], binary: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: (!data.is_empty()).then(|| {
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            binary_data: (!binary.is_empty()).then(|| {
                binary
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect()
            }),
            ..Default::default()
        }
    }

    fn payload(files: &[(&str, &str, i32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection::new(d.as_bytes().to_vec(), *m),
                )
            })
            .collect()
    }

    /// upstream TestMakePayload: (name, mappings, configMap, defaultMode, optional,
    /// expected payload or `None` for a failure).
    #[test]
    fn make_payload_table() {
        let foo_bar = config_map(&[("foo", "foo"), ("bar", "bar")], &[]);
        let case_mapping_mode = 0o400;
        type Case<'a> = (
            &'a str,
            Vec<KeyToPath>,
            ConfigMap,
            i32,
            bool,
            Option<Payload>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "no overrides",
                vec![],
                foo_bar.clone(),
                0o644,
                false,
                Some(payload(&[("foo", "foo", 0o644), ("bar", "bar", 0o644)])),
            ),
            (
                "no overrides binary data",
                vec![],
                config_map(&[], &[("foo", "foo"), ("bar", "bar")]),
                0o644,
                false,
                Some(payload(&[("foo", "foo", 0o644), ("bar", "bar", 0o644)])),
            ),
            (
                "no overrides mixed data",
                vec![],
                config_map(&[("bar", "bar")], &[("foo", "foo")]),
                0o644,
                false,
                Some(payload(&[("foo", "foo", 0o644), ("bar", "bar", 0o644)])),
            ),
            (
                "basic 1",
                vec![ktp("foo", "path/to/foo.txt", None)],
                foo_bar.clone(),
                0o644,
                false,
                Some(payload(&[("path/to/foo.txt", "foo", 0o644)])),
            ),
            (
                "subdirs",
                vec![ktp("foo", "path/to/1/2/3/foo.txt", None)],
                foo_bar.clone(),
                0o644,
                false,
                Some(payload(&[("path/to/1/2/3/foo.txt", "foo", 0o644)])),
            ),
            (
                "subdirs 2",
                vec![ktp("foo", "path/to/1/2/3/foo.txt", None)],
                foo_bar.clone(),
                0o644,
                false,
                Some(payload(&[("path/to/1/2/3/foo.txt", "foo", 0o644)])),
            ),
            (
                "subdirs 3",
                vec![
                    ktp("foo", "path/to/1/2/3/foo.txt", None),
                    ktp("bar", "another/path/to/the/esteemed/bar.bin", None),
                ],
                foo_bar.clone(),
                0o644,
                false,
                Some(payload(&[
                    ("path/to/1/2/3/foo.txt", "foo", 0o644),
                    ("another/path/to/the/esteemed/bar.bin", "bar", 0o644),
                ])),
            ),
            (
                "non existent key",
                vec![ktp("zab", "path/to/foo.txt", None)],
                foo_bar.clone(),
                0o644,
                false,
                None,
            ),
            (
                "mapping with Mode",
                vec![
                    ktp("foo", "foo.txt", Some(case_mapping_mode)),
                    ktp("bar", "bar.bin", Some(case_mapping_mode)),
                ],
                foo_bar.clone(),
                0o644,
                false,
                Some(payload(&[
                    ("foo.txt", "foo", case_mapping_mode),
                    ("bar.bin", "bar", case_mapping_mode),
                ])),
            ),
            (
                "mapping with defaultMode",
                vec![ktp("foo", "foo.txt", None), ktp("bar", "bar.bin", None)],
                foo_bar.clone(),
                0o644,
                false,
                Some(payload(&[
                    ("foo.txt", "foo", 0o644),
                    ("bar.bin", "bar", 0o644),
                ])),
            ),
            (
                "optional non existent key",
                vec![ktp("zab", "path/to/foo.txt", None)],
                foo_bar.clone(),
                0o644,
                true,
                Some(payload(&[])),
            ),
        ];
        assert_eq!(cases.len(), 11);
        for (name, mappings, cm, mode, optional, want) in cases {
            let got = make_payload(&mappings, &cm, Some(mode), optional);
            match want {
                Some(want) => assert_eq!(got.as_ref(), Ok(&want), "{name}"),
                None => assert!(got.is_err(), "{name}: unexpected success {got:?}"),
            }
        }
    }

    #[test]
    fn errors_are_upstreams() {
        let cm = config_map(&[("foo", "foo")], &[]);
        assert_eq!(
            make_payload(&[], &cm, None, false).unwrap_err().to_string(),
            "no defaultMode used, not even the default value for it"
        );
        assert_eq!(
            make_payload(&[ktp("zab", "x", None)], &cm, Some(0o644), false)
                .unwrap_err()
                .to_string(),
            "configmap references non-existent config key: zab"
        );
    }

    #[test]
    fn data_wins_over_binary_data_for_an_item() {
        let cm = config_map(&[("k", "text")], &[("k", "binary")]);
        let got = make_payload(&[ktp("k", "k", None)], &cm, Some(0o644), false).unwrap();
        assert_eq!(got, payload(&[("k", "text", 0o644)]));
    }

    #[test]
    fn payload_for_a_missing_config_map() {
        let source =
            |optional: Option<bool>, items: Option<Vec<KeyToPath>>| ConfigMapVolumeSource {
                name: "cm".into(),
                default_mode: Some(0o644),
                items,
                optional,
            };
        assert_eq!(
            payload_for(&source(None, None), None)
                .unwrap_err()
                .to_string(),
            "configmap \"cm\" not found"
        );
        assert!(payload_for(&source(Some(false), None), None).is_err());
        // Optional: an empty ConfigMap, whose listed keys are skipped.
        assert_eq!(
            payload_for(&source(Some(true), None), None),
            Ok(Payload::new())
        );
        assert_eq!(
            payload_for(&source(Some(true), Some(vec![ktp("a", "a", None)])), None),
            Ok(Payload::new())
        );
        // Present: its keys.
        let cm = config_map(&[("a", "1")], &[]);
        assert_eq!(
            payload_for(&source(None, None), Some(&cm)),
            Ok(payload(&[("a", "1", 0o644)]))
        );
    }
}
