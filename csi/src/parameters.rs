//! CreateVolume `parameters` (the StorageClass's): `type` chooses the kind of volume.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The parameter naming the kind of volume.
pub const TYPE_PARAMETER: &str = "type";
/// Parameters the external-provisioner adds (`--extra-create-metadata`) and strips
/// (`csi.storage.k8s.io/fstype`, secrets): accepted and ignored.
const PROVISIONER_PREFIX: &str = "csi.storage.k8s.io/";
/// The class's fsType, which the provisioner strips from CreateVolume's parameters (it
/// becomes the capabilities' `fs_type`) but passes to GetCapacity with the rest of the
/// class's parameters (capacity tracking sends no capabilities).
pub const FS_TYPE_PARAMETER: &str = "csi.storage.k8s.io/fstype";

/// The kinds of volume rekube-csi makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeKind {
    /// A sparse image file attached as a loop device, ext4 or raw block.
    #[serde(rename = "local-disk")]
    LocalDisk,
    /// A directory on the node, bind-mounted (local-path-provisioner's semantics).
    #[serde(rename = "hostpath")]
    HostPath,
}

impl VolumeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeKind::LocalDisk => "local-disk",
            VolumeKind::HostPath => "hostpath",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error("parameter type {0:?}: unknown volume type (want local-disk or hostpath)")]
    UnknownType(String),
    #[error("parameter {0:?}: unknown to rekube-csi (it takes only \"type\")")]
    Unknown(String),
}

/// The kind of volume `parameters` ask for (`local-disk` when `type` is absent).
pub fn volume_kind(parameters: &HashMap<String, String>) -> Result<VolumeKind, ParameterError> {
    let mut unknown: Vec<&String> = parameters
        .keys()
        .filter(|k| k.as_str() != TYPE_PARAMETER && !k.starts_with(PROVISIONER_PREFIX))
        .collect();
    unknown.sort();
    if let Some(key) = unknown.first() {
        return Err(ParameterError::Unknown((*key).clone()));
    }
    match parameters.get(TYPE_PARAMETER).map(String::as_str) {
        None | Some("local-disk") => Ok(VolumeKind::LocalDisk),
        Some("hostpath") => Ok(VolumeKind::HostPath),
        Some(other) => Err(ParameterError::UnknownType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_type_parameter_chooses_the_kind() {
        type Case = (
            &'static [(&'static str, &'static str)],
            Result<VolumeKind, ParameterError>,
        );
        let cases: &[Case] = &[
            (&[], Ok(VolumeKind::LocalDisk)),
            (&[("type", "local-disk")], Ok(VolumeKind::LocalDisk)),
            (&[("type", "hostpath")], Ok(VolumeKind::HostPath)),
            (
                &[
                    ("type", "hostpath"),
                    ("csi.storage.k8s.io/pvc/name", "data"),
                ],
                Ok(VolumeKind::HostPath),
            ),
            (
                &[("type", "nfs")],
                Err(ParameterError::UnknownType("nfs".into())),
            ),
            (
                &[("type", "hostpath"), ("size", "1Gi")],
                Err(ParameterError::Unknown("size".into())),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(&volume_kind(&p(pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        assert_eq!(
            volume_kind(&p(&[("type", "nfs")])).unwrap_err().to_string(),
            r#"parameter type "nfs": unknown volume type (want local-disk or hostpath)"#
        );
    }
}
