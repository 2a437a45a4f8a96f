//! secret volumes' content: upstream pkg/volume/secret/secret.go `MakePayload` (the
//! files: every key, or the listed items, with their modes) and `SetUpAt`'s handling of a
//! missing Secret (an error unless the volume is optional, then an empty one). Pure: the
//! shell reads the Secret and writes the payload with the atomic writer.

use k8s_openapi::api::core::v1::{KeyToPath, Secret, SecretVolumeSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use std::collections::BTreeMap;

use super::{Payload, key_to_path_payload};

/// Why a secret volume's files could not be made (upstream's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no defaultMode used, not even the default value for it")]
    NoDefaultMode,
    #[error("references non-existent secret key: {0}")]
    NonExistentKey(String),
    /// The kubelet's secret manager's NotFound (`secret "NAME" not found`).
    #[error("secret {0:?} not found")]
    NotFound(String),
}

/// Upstream `MakePayload`: without `mappings`, one file per key of `data` named after it,
/// with `default_mode`; with them, one file per item at its path, with its own mode or
/// `default_mode`. A missing key fails the volume unless it is `optional`.
pub fn make_payload(
    mappings: &[KeyToPath],
    secret: &Secret,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, SecretError> {
    let default_mode = default_mode.ok_or(SecretError::NoDefaultMode)?;
    let keys: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    key_to_path_payload(mappings, &keys, default_mode, optional)
        .map_err(SecretError::NonExistentKey)
}

/// The payload of a secret volume from its source and the Secret read for it (`None`:
/// not found). A missing Secret fails the volume unless the source is optional; then it
/// projects as an empty Secret (upstream `SetUpAt`).
pub fn payload_for(
    source: &SecretVolumeSource,
    object: Option<&Secret>,
) -> Result<Payload, SecretError> {
    let optional = source.optional.unwrap_or(false);
    let name = source.secret_name.clone().unwrap_or_default();
    let empty;
    let secret = match object {
        Some(s) => s,
        None if optional => {
            empty = Secret {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..Default::default()
                },
                ..Default::default()
            };
            &empty
        }
        None => return Err(SecretError::NotFound(name)),
    };
    make_payload(
        source.items.as_deref().unwrap_or_default(),
        secret,
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

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
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

    /// upstream TestMakePayload: (name, mappings, defaultMode, optional, expected payload
    /// or `None` for a failure), each over the Secret {foo: foo, bar: bar}.
    #[test]
    fn make_payload_table() {
        let foo_bar = secret(&[("foo", "foo"), ("bar", "bar")]);
        let case_mapping_mode = 0o400;
        type Case = (&'static str, Vec<KeyToPath>, i32, bool, Option<Payload>);
        let cases: Vec<Case> = vec![
            (
                "no overrides",
                vec![],
                0o644,
                false,
                Some(payload(&[("foo", "foo", 0o644), ("bar", "bar", 0o644)])),
            ),
            (
                "basic 1",
                vec![ktp("foo", "path/to/foo.txt", None)],
                0o644,
                false,
                Some(payload(&[("path/to/foo.txt", "foo", 0o644)])),
            ),
            (
                "subdirs",
                vec![ktp("foo", "path/to/1/2/3/foo.txt", None)],
                0o644,
                false,
                Some(payload(&[("path/to/1/2/3/foo.txt", "foo", 0o644)])),
            ),
            (
                "subdirs 2",
                vec![ktp("foo", "path/to/1/2/3/foo.txt", None)],
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
                0o644,
                true,
                Some(payload(&[])),
            ),
        ];
        assert_eq!(cases.len(), 9);
        for (name, mappings, mode, optional, want) in cases {
            let got = make_payload(&mappings, &foo_bar, Some(mode), optional);
            match want {
                Some(want) => assert_eq!(got.as_ref(), Ok(&want), "{name}"),
                None => assert!(got.is_err(), "{name}: unexpected success {got:?}"),
            }
        }
    }

    #[test]
    fn errors_are_upstreams() {
        let s = secret(&[("foo", "foo")]);
        assert_eq!(
            make_payload(&[], &s, None, false).unwrap_err().to_string(),
            "no defaultMode used, not even the default value for it"
        );
        assert_eq!(
            make_payload(&[ktp("zab", "x", None)], &s, Some(0o644), false)
                .unwrap_err()
                .to_string(),
            "references non-existent secret key: zab"
        );
    }

    #[test]
    fn payload_for_a_missing_secret() {
        let source = |optional: Option<bool>, items: Option<Vec<KeyToPath>>| SecretVolumeSource {
            secret_name: Some("s".into()),
            default_mode: Some(0o400),
            items,
            optional,
        };
        assert_eq!(
            payload_for(&source(None, None), None)
                .unwrap_err()
                .to_string(),
            "secret \"s\" not found"
        );
        assert!(payload_for(&source(Some(false), None), None).is_err());
        // Optional: an empty Secret, whose listed keys are skipped.
        assert_eq!(
            payload_for(&source(Some(true), None), None),
            Ok(Payload::new())
        );
        assert_eq!(
            payload_for(&source(Some(true), Some(vec![ktp("a", "a", None)])), None),
            Ok(Payload::new())
        );
        // Present: its keys, binary as they are.
        let mut s = secret(&[]);
        s.data = Some([("k".to_string(), ByteString(vec![0, 255, 10]))].into());
        assert_eq!(
            payload_for(&source(None, None), Some(&s)),
            Ok([(
                "k".to_string(),
                FileProjection {
                    data: vec![0, 255, 10],
                    mode: 0o400,
                    fs_user: None
                }
            )]
            .into())
        );
    }
}
