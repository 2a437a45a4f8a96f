//! `rekube-csi provisioner`: kubernetes-csi/external-provisioner's role in its distributed
//! mode (`--node-deployment`), for rekube's objects. One provisioner runs on every node
//! beside the driver and provisions only the claims whose
//! `volume.kubernetes.io/selected-node` is its node: it calls the driver's CreateVolume
//! over the driver's socket and creates the PersistentVolume, and deletes (DeleteVolume,
//! then the PV) the Released volumes with policy Delete that it made on its node.
//!
//! [`decide`] holds the decisions (pure); [`controller`] watches and writes.

pub mod controller;
pub mod decide;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

/// rekube-csi's provisioner (external-provisioner in distributed mode): provisions the
/// claims of this driver whose selected node is this node, and deletes the Released
/// volumes it made here. Talks to the driver on its socket and to the apiserver.
#[derive(Debug, Clone, Parser)]
#[command(name = "rekube-csi provisioner", version, args_override_self = true)]
pub struct ProvisionerOptions {
    /// The driver's CSI endpoint: unix:///path/csi.sock.
    #[arg(long, env = "CSI_ENDPOINT")]
    pub endpoint: String,
    /// This node's name: the claims whose volume.kubernetes.io/selected-node is this
    /// name are provisioned here (the driver's --node-id).
    #[arg(long, env = "NODE_ID")]
    pub node_id: String,
    /// A kubeconfig file; without it, KUBECONFIG, ~/.kube/config or the in-cluster
    /// service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A label to put on every PersistentVolume this provisioner creates, key=value;
    /// repeatable.
    #[arg(long = "pv-label", value_name = "KEY=VALUE")]
    pub pv_labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionerOptionsError {
    #[error("invalid --endpoint {0:?}: want unix:///absolute/path.sock")]
    Endpoint(String),
    #[error(
        "invalid --node-id {0:?}: want a label value (1-63 of [A-Za-z0-9._-], alphanumeric at both ends)"
    )]
    NodeId(String),
    #[error("invalid --pv-label {0:?}: want key=value, a label key and a label value")]
    PvLabel(String),
}

/// The validated provisioner flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionerConfig {
    pub socket: PathBuf,
    pub node_id: String,
    pub kubeconfig: Option<PathBuf>,
    pub pv_labels: BTreeMap<String, String>,
}

fn label_value(s: &str) -> bool {
    s.len() <= 63
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))))
}

fn label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    !name.is_empty()
        && label_value(name)
        && prefix.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 253
                && p.split('.').all(|part| {
                    !part.is_empty()
                        && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && part.ends_with(|c: char| c.is_ascii_alphanumeric())
                        && part
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
        })
}

impl ProvisionerOptions {
    /// The configuration, or the first bad flag.
    pub fn validate(&self) -> Result<ProvisionerConfig, ProvisionerOptionsError> {
        let socket = self
            .endpoint
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.file_name().is_some())
            .ok_or_else(|| ProvisionerOptionsError::Endpoint(self.endpoint.clone()))?;
        if self.node_id.is_empty() || !label_value(&self.node_id) {
            return Err(ProvisionerOptionsError::NodeId(self.node_id.clone()));
        }
        let mut pv_labels = BTreeMap::new();
        for l in &self.pv_labels {
            match l.split_once('=') {
                Some((k, v)) if label_key(k) && label_value(v) => {
                    pv_labels.insert(k.to_string(), v.to_string());
                }
                _ => return Err(ProvisionerOptionsError::PvLabel(l.clone())),
            }
        }
        Ok(ProvisionerConfig {
            socket,
            node_id: self.node_id.clone(),
            kubeconfig: self.kubeconfig.clone(),
            pv_labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> ProvisionerOptions {
        ProvisionerOptions::try_parse_from(
            [
                "rekube-csi provisioner",
                "--endpoint",
                "unix:///run/csi.sock",
            ]
            .iter()
            .chain(args),
        )
        .unwrap()
    }

    #[test]
    fn flags_are_validated() {
        let config = options(&["--node-id", "n1", "--pv-label", "rekube.io/e2e-nodes=x"])
            .validate()
            .unwrap();
        assert_eq!(config.socket, PathBuf::from("/run/csi.sock"));
        assert_eq!(config.node_id, "n1");
        assert_eq!(
            config.pv_labels,
            BTreeMap::from([("rekube.io/e2e-nodes".to_string(), "x".to_string())])
        );
        for (args, err) in [
            (
                vec!["--node-id", "n1", "--endpoint", "tcp://x"],
                ProvisionerOptionsError::Endpoint("tcp://x".into()),
            ),
            (
                vec!["--node-id=-n"],
                ProvisionerOptionsError::NodeId("-n".into()),
            ),
            (
                vec!["--node-id", "n", "--pv-label", "novalue"],
                ProvisionerOptionsError::PvLabel("novalue".into()),
            ),
            (
                vec!["--node-id", "n", "--pv-label", "Bad_Prefix/k=v"],
                ProvisionerOptionsError::PvLabel("Bad_Prefix/k=v".into()),
            ),
            (
                vec!["--node-id", "n", "--pv-label", "k=not valid"],
                ProvisionerOptionsError::PvLabel("k=not valid".into()),
            ),
        ] {
            assert_eq!(options(&args).validate(), Err(err), "{args:?}");
        }
    }
}
