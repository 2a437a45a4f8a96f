//! Pure: the attach step of `--attach-required` (ControllerPublishVolume,
//! ControllerUnpublishVolume) and the device NodeStageVolume takes from its publish
//! context. A local-disk volume's attach is its loop device: ControllerPublishVolume
//! attaches the image and answers `{"devicePath": "/dev/loopN"}`, NodeStageVolume formats
//! and mounts that device (never attaching or detaching), ControllerUnpublishVolume
//! detaches it. A hostpath volume has nothing to attach: its publication is only recorded.
//!
//! A volume lives on the node that made it, so it can be published to that node only:
//! another node id is NOT_FOUND for ControllerPublishVolume ("node does not exist" as far
//! as this plugin knows), and for ControllerUnpublishVolume a volume "safely regarded as
//! ControllerUnpublished" (the spec's SHOULD: 0 OK).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::Code;

/// The publish context key of the loop device (as csi-driver-host-path's and
/// external-attacher's examples name it).
pub const DEVICE_PATH_KEY: &str = "devicePath";

/// A volume's publication to a node, kept in its record: what ControllerPublishVolume
/// was asked, so a repeated call is recognised and an incompatible one refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Publication {
    pub node_id: String,
    pub readonly: bool,
    /// Block access (else mount).
    pub block: bool,
    /// The capability's access mode (csi.v1 `AccessMode.Mode`).
    pub access_mode: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("volume {volume}: node {node:?} not found (the volume lives on node {here:?})")]
    NodeNotFound {
        volume: String,
        node: String,
        here: String,
    },
    #[error(
        "volume {volume}: already published to node {node:?} {existing}, incompatible with {requested}"
    )]
    Incompatible {
        volume: String,
        node: String,
        existing: String,
        requested: String,
    },
    #[error("volume {volume}: node {node:?} has {max} volumes published, its limit")]
    TooMany {
        volume: String,
        node: String,
        max: i64,
    },
}

impl PublishError {
    /// The codes of the spec's ControllerPublishVolume error table.
    pub fn code(&self) -> Code {
        match self {
            PublishError::NodeNotFound { .. } => Code::NotFound,
            PublishError::Incompatible { .. } => Code::AlreadyExists,
            PublishError::TooMany { .. } => Code::ResourceExhausted,
        }
    }
}

/// What ControllerPublishVolume does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishDecision {
    /// Published like this already: answer again (attaching what is missing).
    AlreadyPublished,
    /// Attach and record the publication.
    Publish,
}

fn describe(p: &Publication) -> String {
    format!(
        "{} {}, access mode {}",
        if p.readonly {
            "read-only"
        } else {
            "read-write"
        },
        if p.block { "block" } else { "mount" },
        p.access_mode
    )
}

/// ControllerPublishVolume's decision for an existing volume: `this_node` is the driver's
/// node id, `existing` the volume's recorded publication, `published` how many volumes
/// are published to this node now, `max_volumes` NodeGetInfo's limit (0: none).
pub fn decide_publish(
    volume: &str,
    this_node: &str,
    max_volumes: i64,
    existing: Option<&Publication>,
    requested: &Publication,
    published: usize,
) -> Result<PublishDecision, PublishError> {
    if requested.node_id != this_node {
        return Err(PublishError::NodeNotFound {
            volume: volume.to_string(),
            node: requested.node_id.clone(),
            here: this_node.to_string(),
        });
    }
    match existing {
        Some(e) if e == requested => Ok(PublishDecision::AlreadyPublished),
        Some(e) => Err(PublishError::Incompatible {
            volume: volume.to_string(),
            node: e.node_id.clone(),
            existing: describe(e),
            requested: describe(requested),
        }),
        None if max_volumes > 0 && published as i64 >= max_volumes => Err(PublishError::TooMany {
            volume: volume.to_string(),
            node: this_node.to_string(),
            max: max_volumes,
        }),
        None => Ok(PublishDecision::Publish),
    }
}

/// Whether ControllerUnpublishVolume has anything to do: an empty node id means every
/// node; another node than this one never had the volume.
pub fn unpublish_here(this_node: &str, requested_node: &str) -> bool {
    requested_node.is_empty() || requested_node == this_node
}

/// The publish context ControllerPublishVolume answers.
pub fn publish_context(device: Option<&Path>) -> HashMap<String, String> {
    device
        .map(|d| HashMap::from([(DEVICE_PATH_KEY.to_string(), d.display().to_string())]))
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageDeviceError {
    #[error(
        "volume {volume}: publish_context has no {DEVICE_PATH_KEY} (call ControllerPublishVolume first)"
    )]
    NotPublished { volume: String },
    #[error(
        "volume {volume}: not attached at {device} ({actual}; call ControllerPublishVolume again)"
    )]
    NotAttached {
        volume: String,
        device: PathBuf,
        actual: String,
    },
}

impl StageDeviceError {
    /// FAILED_PRECONDITION: the CO skipped (or lost) ControllerPublishVolume.
    pub fn code(&self) -> Code {
        Code::FailedPrecondition
    }
}

/// The device NodeStageVolume uses under `--attach-required`: the publish context's
/// `devicePath`, which must be the loop device the image is attached to now (`attached`).
pub fn stage_device(
    volume: &str,
    publish_context: &HashMap<String, String>,
    attached: Option<&Path>,
) -> Result<PathBuf, StageDeviceError> {
    let device = publish_context
        .get(DEVICE_PATH_KEY)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| StageDeviceError::NotPublished {
            volume: volume.to_string(),
        })?;
    match attached {
        Some(a) if a == device => Ok(device),
        Some(a) => Err(StageDeviceError::NotAttached {
            volume: volume.to_string(),
            device,
            actual: format!("its image is attached to {}", a.display()),
        }),
        None => Err(StageDeviceError::NotAttached {
            volume: volume.to_string(),
            device,
            actual: "its image is attached to no loop device".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(node: &str, readonly: bool, block: bool, mode: i32) -> Publication {
        Publication {
            node_id: node.into(),
            readonly,
            block,
            access_mode: mode,
        }
    }

    #[test]
    fn publish_decisions() {
        let rw = publication("n1", false, false, 1);
        type Case<'a> = (
            &'a str,
            i64,
            Option<Publication>,
            Publication,
            usize,
            Result<PublishDecision, Code>,
        );
        let cases: Vec<Case> = vec![
            (
                "first publish",
                0,
                None,
                rw.clone(),
                0,
                Ok(PublishDecision::Publish),
            ),
            (
                "the same again",
                0,
                Some(rw.clone()),
                rw.clone(),
                1,
                Ok(PublishDecision::AlreadyPublished),
            ),
            (
                "another node",
                0,
                None,
                publication("n2", false, false, 1),
                0,
                Err(Code::NotFound),
            ),
            (
                "another node, published here",
                0,
                Some(rw.clone()),
                publication("n2", false, false, 1),
                1,
                Err(Code::NotFound),
            ),
            (
                "readonly changed",
                0,
                Some(rw.clone()),
                publication("n1", true, false, 1),
                1,
                Err(Code::AlreadyExists),
            ),
            (
                "block instead of mount",
                0,
                Some(rw.clone()),
                publication("n1", false, true, 1),
                1,
                Err(Code::AlreadyExists),
            ),
            (
                "access mode changed",
                0,
                Some(rw.clone()),
                publication("n1", false, false, 7),
                1,
                Err(Code::AlreadyExists),
            ),
            (
                "at the limit",
                2,
                None,
                rw.clone(),
                2,
                Err(Code::ResourceExhausted),
            ),
            (
                "below the limit",
                2,
                None,
                rw.clone(),
                1,
                Ok(PublishDecision::Publish),
            ),
            (
                "published already counts within the limit",
                2,
                Some(rw.clone()),
                rw.clone(),
                2,
                Ok(PublishDecision::AlreadyPublished),
            ),
            (
                "no limit",
                0,
                None,
                rw.clone(),
                1000,
                Ok(PublishDecision::Publish),
            ),
        ];
        for (name, max, existing, requested, published, want) in cases {
            let got = decide_publish("rk-1", "n1", max, existing.as_ref(), &requested, published)
                .map_err(|e| e.code());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn publish_errors_name_the_volume_and_the_cause() {
        let rw = publication("n1", false, false, 1);
        let err = |existing: Option<&Publication>, requested: &Publication, max, published| {
            decide_publish("rk-1", "n1", max, existing, requested, published)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(None, &publication("elsewhere", false, false, 1), 0, 0),
            r#"volume rk-1: node "elsewhere" not found (the volume lives on node "n1")"#
        );
        assert_eq!(
            err(Some(&rw), &publication("n1", true, false, 1), 0, 1),
            r#"volume rk-1: already published to node "n1" read-write mount, access mode 1, incompatible with read-only mount, access mode 1"#
        );
        assert_eq!(
            err(None, &rw, 3, 3),
            r#"volume rk-1: node "n1" has 3 volumes published, its limit"#
        );
    }

    #[test]
    fn unpublish_is_for_this_node_or_all() {
        assert!(unpublish_here("n1", "n1"));
        assert!(unpublish_here("n1", ""));
        assert!(!unpublish_here("n1", "n2"));
    }

    #[test]
    fn the_stage_device_is_the_published_one() {
        let ctx = |d: &str| HashMap::from([(DEVICE_PATH_KEY.to_string(), d.to_string())]);
        let loop3 = Path::new("/dev/loop3");
        type Case<'a> = (
            &'a str,
            HashMap<String, String>,
            Option<&'a Path>,
            Result<PathBuf, String>,
        );
        let cases: Vec<Case> = vec![
            ("published and attached", ctx("/dev/loop3"), Some(loop3), Ok(loop3.into())),
            (
                "no publish context",
                HashMap::new(),
                Some(loop3),
                Err("volume rk-1: publish_context has no devicePath (call ControllerPublishVolume first)".into()),
            ),
            (
                "an empty devicePath",
                ctx(""),
                Some(loop3),
                Err("volume rk-1: publish_context has no devicePath (call ControllerPublishVolume first)".into()),
            ),
            (
                "another key only (csi-sanity's mock)",
                HashMap::from([("device".to_string(), "/dev/mock".to_string())]),
                None,
                Err("volume rk-1: publish_context has no devicePath (call ControllerPublishVolume first)".into()),
            ),
            (
                "attached elsewhere",
                ctx("/dev/loop4"),
                Some(loop3),
                Err("volume rk-1: not attached at /dev/loop4 (its image is attached to /dev/loop3; call ControllerPublishVolume again)".into()),
            ),
            (
                "detached since",
                ctx("/dev/loop3"),
                None,
                Err("volume rk-1: not attached at /dev/loop3 (its image is attached to no loop device; call ControllerPublishVolume again)".into()),
            ),
        ];
        for (name, context, attached, want) in cases {
            let got = stage_device("rk-1", &context, attached);
            if let Err(e) = &got {
                assert_eq!(e.code(), Code::FailedPrecondition, "{name}");
            }
            assert_eq!(got.map_err(|e| e.to_string()), want, "{name}");
        }
    }

    #[test]
    fn the_publish_context_holds_the_device() {
        assert_eq!(
            publish_context(Some(Path::new("/dev/loop7"))),
            HashMap::from([("devicePath".to_string(), "/dev/loop7".to_string())])
        );
        assert_eq!(publish_context(None), HashMap::new());
    }
}
