//! `rekube-csi provisioner`: kubernetes-csi/external-provisioner's role in its distributed
//! mode (`--node-deployment`), for rekube's objects. One provisioner runs on every node
//! beside the driver and provisions only the claims whose
//! `volume.kubernetes.io/selected-node` is its node: it calls the driver's CreateVolume
//! over the driver's socket and creates the PersistentVolume, and deletes (DeleteVolume,
//! then the PV) the Released volumes with policy Delete that it made on its node.
//!
//! With `--enable-capacity` it also publishes the driver's capacity for this node as
//! CSIStorageCapacity objects (external-provisioner's pkg/capacity): [`capacity`] holds
//! those decisions, [`capacity_controller`] the watches and writes.
//!
//! [`decide`] holds the decisions (pure); [`controller`] watches and writes.

pub mod capacity;
pub mod capacity_controller;
pub mod controller;
pub mod decide;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::registrar::parse_duration;

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
    /// Publish CSIStorageCapacity objects with the driver's GetCapacity answers for each
    /// StorageClass of the driver in this node's topology segment, in the namespace of the
    /// NAMESPACE environment variable.
    #[arg(long)]
    pub enable_capacity: bool,
    /// How long between refreshes of the capacity objects (also refreshed after each
    /// CreateVolume and DeleteVolume): a whole number of ms, s or m.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub capacity_poll_interval: Duration,
    /// Publish capacity for StorageClasses with Immediate binding too (the scheduler does
    /// not need it).
    #[arg(long)]
    pub capacity_for_immediate_binding: bool,
    /// The owner of the capacity objects: -1 none, 0 the pod named by the POD_NAME
    /// environment variable in NAMESPACE, 1 that pod's controller (a DaemonSet), 2 its
    /// controller, and so on.
    #[arg(long, default_value_t = capacity::DEFAULT_OWNERREF_LEVEL, allow_negative_numbers = true)]
    pub capacity_ownerref_level: i32,
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
    #[error("--enable-capacity: need NAMESPACE env variable for CSIStorageCapacity objects")]
    CapacityNamespace,
    #[error("--enable-capacity: need POD_NAME env variable to determine CSIStorageCapacity owner")]
    CapacityPodName,
    #[error("invalid --capacity-poll-interval 0s: must be longer than 0")]
    CapacityPollInterval,
}

/// Where the capacity objects' owner comes from (upstream's owner.Lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapacityOwner {
    /// `--capacity-ownerref-level` below 0: no owner.
    None,
    /// The pod `pod` (in the objects' namespace) at level 0, its controller at 1, ...
    Pod { pod: String, level: u32 },
}

/// The validated `--enable-capacity` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityConfig {
    pub namespace: String,
    pub poll_interval: Duration,
    pub immediate_binding: bool,
    pub owner: CapacityOwner,
}

/// The validated provisioner flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionerConfig {
    pub socket: PathBuf,
    pub node_id: String,
    pub kubeconfig: Option<PathBuf>,
    pub pv_labels: BTreeMap<String, String>,
    /// `--enable-capacity`'s settings.
    pub capacity: Option<CapacityConfig>,
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
    /// The configuration, or the first bad flag, with the process's environment.
    pub fn validate(&self) -> Result<ProvisionerConfig, ProvisionerOptionsError> {
        self.validate_with_env(|k| std::env::var(k).ok())
    }

    /// The configuration, or the first bad flag; `env` reads NAMESPACE and POD_NAME.
    pub fn validate_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ProvisionerConfig, ProvisionerOptionsError> {
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
        let capacity = if self.enable_capacity {
            let namespace = env("NAMESPACE")
                .filter(|n| !n.is_empty())
                .ok_or(ProvisionerOptionsError::CapacityNamespace)?;
            if self.capacity_poll_interval.is_zero() {
                return Err(ProvisionerOptionsError::CapacityPollInterval);
            }
            let owner = match u32::try_from(self.capacity_ownerref_level) {
                Err(_) => CapacityOwner::None,
                Ok(level) => CapacityOwner::Pod {
                    pod: env("POD_NAME")
                        .filter(|n| !n.is_empty())
                        .ok_or(ProvisionerOptionsError::CapacityPodName)?,
                    level,
                },
            };
            Some(CapacityConfig {
                namespace,
                poll_interval: self.capacity_poll_interval,
                immediate_binding: self.capacity_for_immediate_binding,
                owner,
            })
        } else {
            None
        };
        Ok(ProvisionerConfig {
            socket,
            node_id: self.node_id.clone(),
            kubeconfig: self.kubeconfig.clone(),
            pv_labels,
            capacity,
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

    #[test]
    fn capacity_flags_are_upstreams() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let off = options(&["--node-id", "n1"])
            .validate_with_env(env(&[]))
            .unwrap();
        assert_eq!(off.capacity, None);
        let on = options(&["--node-id", "n1", "--enable-capacity"]);
        assert_eq!(on.capacity_poll_interval, Duration::from_secs(60));
        assert_eq!(on.capacity_ownerref_level, 1);
        assert_eq!(
            on.validate_with_env(env(&[("NAMESPACE", "kube-system"), ("POD_NAME", "csi-x")]))
                .unwrap()
                .capacity,
            Some(CapacityConfig {
                namespace: "kube-system".into(),
                poll_interval: Duration::from_secs(60),
                immediate_binding: false,
                owner: CapacityOwner::Pod {
                    pod: "csi-x".into(),
                    level: 1
                },
            })
        );
        assert_eq!(
            on.validate_with_env(env(&[])),
            Err(ProvisionerOptionsError::CapacityNamespace)
        );
        assert_eq!(
            on.validate_with_env(env(&[("NAMESPACE", "ns")])),
            Err(ProvisionerOptionsError::CapacityPodName)
        );
        let no_owner = options(&[
            "--node-id",
            "n1",
            "--enable-capacity",
            "--capacity-ownerref-level=-1",
            "--capacity-poll-interval",
            "500ms",
            "--capacity-for-immediate-binding",
        ]);
        assert_eq!(
            no_owner
                .validate_with_env(env(&[("NAMESPACE", "ns")]))
                .unwrap()
                .capacity,
            Some(CapacityConfig {
                namespace: "ns".into(),
                poll_interval: Duration::from_millis(500),
                immediate_binding: true,
                owner: CapacityOwner::None,
            })
        );
        let zero = options(&[
            "--node-id",
            "n1",
            "--enable-capacity",
            "--capacity-poll-interval=0s",
        ]);
        assert_eq!(
            zero.validate_with_env(env(&[("NAMESPACE", "ns"), ("POD_NAME", "p")])),
            Err(ProvisionerOptionsError::CapacityPollInterval)
        );
    }
}
