//! `rekube-csi attacher`: kubernetes-csi/external-attacher's role for rekube's
//! VolumeAttachments, node-local. rekube-csi's volumes live on one node, so, as the
//! provisioner runs in external-provisioner's distributed mode, one attacher runs on every
//! node beside the driver and handles only the VolumeAttachments of its driver
//! (`spec.attacher`) and its node (`spec.nodeName`): ControllerPublishVolume over the
//! driver's socket, the VolumeAttachment's status (through `volumeattachments/status`) and
//! finalizers, and ControllerUnpublishVolume when it is deleted. A driver without
//! PUBLISH_UNPUBLISH_VOLUME gets upstream's trivial handler (attached at once).
//!
//! [`decide`] holds the decisions (pure); [`controller`] watches and writes.

pub mod controller;
pub mod decide;

use std::path::PathBuf;

use clap::Parser;

/// rekube-csi's attacher (external-attacher, node-local): attaches the rekube
/// VolumeAttachments of the driver on this node with ControllerPublishVolume and detaches
/// them with ControllerUnpublishVolume when they are deleted. Talks to the driver on its
/// socket and to the apiserver.
#[derive(Debug, Clone, Parser)]
#[command(name = "rekube-csi attacher", version, args_override_self = true)]
pub struct AttacherOptions {
    /// The driver's CSI endpoint: unix:///path/csi.sock.
    #[arg(long, env = "CSI_ENDPOINT")]
    pub endpoint: String,
    /// This node's name: the VolumeAttachments whose spec.nodeName is this name are
    /// handled here (the rekube Node, whose csi.volume.kubernetes.io/nodeid annotation
    /// gives the driver's node id).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// A kubeconfig file; without it, KUBECONFIG, ~/.kube/config or the in-cluster
    /// service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The filesystem type of a mount volume whose PersistentVolume names none (upstream
    /// --default-fstype); empty: none, the driver decides.
    #[arg(long, default_value = "")]
    pub default_fstype: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttacherOptionsError {
    #[error("invalid --endpoint {0:?}: want unix:///absolute/path.sock")]
    Endpoint(String),
    #[error(
        "invalid --node-name {0:?}: want a node name (1-253 of [a-z0-9.-], alphanumeric at both ends)"
    )]
    NodeName(String),
}

/// The validated attacher flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttacherConfig {
    pub socket: PathBuf,
    pub node_name: String,
    pub kubeconfig: Option<PathBuf>,
    pub default_fs_type: String,
}

impl AttacherOptions {
    /// The configuration, or the first bad flag.
    pub fn validate(&self) -> Result<AttacherConfig, AttacherOptionsError> {
        let socket = self
            .endpoint
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.file_name().is_some())
            .ok_or_else(|| AttacherOptionsError::Endpoint(self.endpoint.clone()))?;
        let name = &self.node_name;
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c));
        if !valid {
            return Err(AttacherOptionsError::NodeName(name.clone()));
        }
        Ok(AttacherConfig {
            socket,
            node_name: name.clone(),
            kubeconfig: self.kubeconfig.clone(),
            default_fs_type: self.default_fstype.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> AttacherOptions {
        AttacherOptions::try_parse_from(
            ["rekube-csi attacher", "--endpoint", "unix:///run/csi.sock"]
                .iter()
                .chain(args),
        )
        .unwrap()
    }

    #[test]
    fn flags_are_validated() {
        let config = options(&["--node-name", "n1"]).validate().unwrap();
        assert_eq!(
            config,
            AttacherConfig {
                socket: "/run/csi.sock".into(),
                node_name: "n1".into(),
                kubeconfig: None,
                default_fs_type: String::new(),
            }
        );
        for (args, err) in [
            (
                vec!["--node-name", "n1", "--endpoint", "tcp://x"],
                "invalid --endpoint \"tcp://x\": want unix:///absolute/path.sock",
            ),
            (
                vec!["--node-name", "N1"],
                "invalid --node-name \"N1\": want a node name (1-253 of [a-z0-9.-], alphanumeric at both ends)",
            ),
            (
                vec!["--node-name", ""],
                "invalid --node-name \"\": want a node name (1-253 of [a-z0-9.-], alphanumeric at both ends)",
            ),
        ] {
            assert_eq!(
                options(&args).validate().unwrap_err().to_string(),
                err,
                "{args:?}"
            );
        }
    }
}
