//! `rekube-csi resizer`: kubernetes-csi/external-resizer's role (v2.2.1, with
//! RecoverVolumeExpansionFailure, GA) for rekube's claims, node-local. rekube-csi's
//! volumes live on one node, so, as the provisioner and the attacher, one resizer runs on
//! every node beside the driver and expands only the volumes of its driver (the PV's
//! `csi.driver`) whose node affinity names its node: a Bound claim whose request exceeds
//! its `status.capacity` gets ControllerExpandVolume over the driver's socket, its PV the
//! new `spec.capacity`, and its status `allocatedResources` and
//! `allocatedResourceStatuses` (ControllerResizeInProgress, then NodeResizePending with
//! the FileSystemResizePending condition when the node must grow the filesystem, as
//! rekube-csi's local-disk volumes need; else the new capacity), with upstream's events.
//! The node's half is the node agent's (NodeExpandVolume, then the claim's capacity).
//!
//! [`decide`] holds the decisions (pure); [`controller`] watches and writes.

pub mod controller;
pub mod decide;

use std::path::PathBuf;

use clap::Parser;

/// rekube-csi's resizer (external-resizer, node-local): expands the volumes of the driver
/// on this node whose claims ask for more (ControllerExpandVolume), and records it in the
/// PersistentVolume and the claim's status for the node's filesystem expansion. Talks to
/// the driver on its socket and to the apiserver.
#[derive(Debug, Clone, Parser)]
#[command(name = "rekube-csi resizer", version, args_override_self = true)]
pub struct ResizerOptions {
    /// The driver's CSI endpoint: unix:///path/csi.sock.
    #[arg(long, env = "CSI_ENDPOINT")]
    pub endpoint: String,
    /// This node's name (the driver's --node-id): the volumes whose node affinity names
    /// it are resized here.
    #[arg(long, env = "NODE_ID")]
    pub node_id: String,
    /// A kubeconfig file; without it, KUBECONFIG, ~/.kube/config or the in-cluster
    /// service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResizerOptionsError {
    #[error("invalid --endpoint {0:?}: want unix:///absolute/path.sock")]
    Endpoint(String),
    #[error("invalid --node-id {0:?}: want the driver's node id (1-63 of [A-Za-z0-9._-])")]
    NodeId(String),
}

/// The validated resizer flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizerConfig {
    pub socket: PathBuf,
    pub node_id: String,
    pub kubeconfig: Option<PathBuf>,
}

impl ResizerOptions {
    /// The configuration, or the first bad flag.
    pub fn validate(&self) -> Result<ResizerConfig, ResizerOptionsError> {
        let socket = self
            .endpoint
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.file_name().is_some())
            .ok_or_else(|| ResizerOptionsError::Endpoint(self.endpoint.clone()))?;
        let id = &self.node_id;
        let valid = !id.is_empty()
            && id.len() <= 63
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            return Err(ResizerOptionsError::NodeId(id.clone()));
        }
        Ok(ResizerConfig {
            socket,
            node_id: id.clone(),
            kubeconfig: self.kubeconfig.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> ResizerOptions {
        ResizerOptions::try_parse_from(
            ["rekube-csi resizer", "--endpoint", "unix:///run/csi.sock"]
                .iter()
                .chain(args),
        )
        .unwrap()
    }

    #[test]
    fn flags_are_validated() {
        assert_eq!(
            options(&["--node-id", "n1", "--kubeconfig", "/k"])
                .validate()
                .unwrap(),
            ResizerConfig {
                socket: "/run/csi.sock".into(),
                node_id: "n1".into(),
                kubeconfig: Some("/k".into()),
            }
        );
        for (args, err) in [
            (
                vec!["--node-id", "n1", "--endpoint", "/run/csi.sock"],
                "invalid --endpoint \"/run/csi.sock\": want unix:///absolute/path.sock",
            ),
            (
                vec!["--node-id", "a b"],
                "invalid --node-id \"a b\": want the driver's node id (1-63 of [A-Za-z0-9._-])",
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
