//! rekube-csi's flags, validated before anything starts: a bad flag is an error naming
//! the flag and the cause.

use std::path::PathBuf;

use clap::Parser;

use crate::driver::DriverConfig;

/// rekube's CSI driver: local-disk (sparse image file, loop device, ext4 or block) and
/// hostpath volumes on this node. Serves the CSI Identity, Controller and Node services
/// on one unix socket.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rekube-csi",
    version,
    args_override_self = true,
    after_help = "`rekube-csi provisioner --help`: the provisioner role (external-provisioner's distributed mode, docs/csi.md).\n`rekube-csi attacher --help`: the attacher role (external-attacher, node-local, docs/csi.md)."
)]
pub struct Options {
    /// The CSI endpoint to serve, a unix socket: unix:///path/csi.sock.
    #[arg(long, env = "CSI_ENDPOINT")]
    pub endpoint: String,
    /// This node's name, reported by NodeGetInfo and as the volumes' topology
    /// (topology.csi.rekube.io/node); a label value (at most 63 characters).
    #[arg(long, env = "NODE_ID")]
    pub node_id: String,
    /// Where image files, hostpath directories and the driver's volume records live.
    #[arg(long, default_value = "/var/lib/rekube-csi")]
    pub state_dir: PathBuf,
    /// The driver's name (GetPluginInfo; the StorageClass's provisioner).
    #[arg(long, default_value = "csi.rekube.io")]
    pub driver_name: String,
    /// The most volumes this node takes (NodeGetInfo); 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub max_volumes_per_node: i64,
    /// The total size local-disk volumes may have on this node, in bytes or with a
    /// suffix (Ki, Mi, Gi, Ti; K, M, G, T); GetCapacity reports what is left and
    /// CreateVolume refuses beyond it (no over-commit).
    #[arg(long)]
    pub capacity: String,
    /// Attach local-disk volumes in ControllerPublishVolume (the CSIDriver's
    /// attachRequired: true): advertise PUBLISH_UNPUBLISH_VOLUME, attach the image to its
    /// loop device there (publish context {"devicePath": "/dev/loopN"}) and detach it in
    /// ControllerUnpublishVolume; NodeStageVolume then mounts the published device.
    /// Without it the loop device is made by NodeStageVolume.
    #[arg(long)]
    pub attach_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("invalid --endpoint {0:?}: want unix:///absolute/path.sock")]
    Endpoint(String),
    #[error(
        "invalid --node-id {0:?}: want a label value (1-63 of [A-Za-z0-9._-], alphanumeric at both ends)"
    )]
    NodeId(String),
    #[error("invalid --driver-name {0:?}: want 1-63 of [a-z0-9.-], alphanumeric at both ends")]
    DriverName(String),
    #[error("invalid --state-dir {0:?}: must be absolute")]
    StateDir(PathBuf),
    #[error("invalid --max-volumes-per-node {0}: negative")]
    MaxVolumes(i64),
    #[error("invalid --capacity {0:?}: want bytes, or a number with Ki, Mi, Gi, Ti, K, M, G or T")]
    Capacity(String),
}

fn alphanumeric_ends(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Parses a byte count: `1073741824`, `1Gi`, `500M`.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

impl Options {
    /// The socket to serve and the driver's configuration, or the first bad flag.
    pub fn validate(&self) -> Result<(PathBuf, DriverConfig), OptionsError> {
        let socket = self
            .endpoint
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.file_name().is_some())
            .ok_or_else(|| OptionsError::Endpoint(self.endpoint.clone()))?;
        let id = &self.node_id;
        if id.is_empty()
            || id.len() > 63
            || !alphanumeric_ends(id)
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(OptionsError::NodeId(id.clone()));
        }
        let name = &self.driver_name;
        if name.is_empty()
            || name.len() > 63
            || !alphanumeric_ends(name)
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
        {
            return Err(OptionsError::DriverName(name.clone()));
        }
        if !self.state_dir.is_absolute() {
            return Err(OptionsError::StateDir(self.state_dir.clone()));
        }
        if self.max_volumes_per_node < 0 {
            return Err(OptionsError::MaxVolumes(self.max_volumes_per_node));
        }
        let capacity_bytes = parse_bytes(&self.capacity)
            .ok_or_else(|| OptionsError::Capacity(self.capacity.clone()))?;
        Ok((
            socket,
            DriverConfig {
                driver_name: name.clone(),
                node_id: id.clone(),
                state_dir: self.state_dir.clone(),
                max_volumes_per_node: self.max_volumes_per_node,
                capacity_bytes,
                attach_required: self.attach_required,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(extra: &[&str]) -> Options {
        let mut args = vec![
            "rekube-csi",
            "--endpoint",
            "unix:///run/csi/csi.sock",
            "--node-id",
            "node-1",
            "--capacity",
            "10Gi",
        ];
        args.extend_from_slice(extra);
        Options::try_parse_from(args).unwrap()
    }

    #[test]
    fn defaults_and_a_valid_configuration() {
        let (socket, config) = opts(&[]).validate().unwrap();
        assert_eq!(socket, PathBuf::from("/run/csi/csi.sock"));
        assert_eq!(
            config,
            DriverConfig {
                driver_name: "csi.rekube.io".into(),
                node_id: "node-1".into(),
                state_dir: "/var/lib/rekube-csi".into(),
                max_volumes_per_node: 0,
                capacity_bytes: 10 << 30,
                attach_required: false,
            }
        );
        assert!(
            opts(&["--attach-required"])
                .validate()
                .unwrap()
                .1
                .attach_required
        );
    }

    #[test]
    fn bad_flags_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--endpoint", "/run/csi.sock"],
                r#"invalid --endpoint "/run/csi.sock": want unix:///absolute/path.sock"#,
            ),
            (
                &["--endpoint", "unix://csi.sock"],
                r#"invalid --endpoint "unix://csi.sock": want unix:///absolute/path.sock"#,
            ),
            (
                &["--node-id=-n1"],
                r#"invalid --node-id "-n1": want a label value (1-63 of [A-Za-z0-9._-], alphanumeric at both ends)"#,
            ),
            (
                &["--node-id", "n/1"],
                r#"invalid --node-id "n/1": want a label value (1-63 of [A-Za-z0-9._-], alphanumeric at both ends)"#,
            ),
            (
                &["--driver-name", "CSI.rekube.io"],
                r#"invalid --driver-name "CSI.rekube.io": want 1-63 of [a-z0-9.-], alphanumeric at both ends"#,
            ),
            (
                &["--state-dir", "var/lib/x"],
                r#"invalid --state-dir "var/lib/x": must be absolute"#,
            ),
            (
                &["--max-volumes-per-node=-1"],
                "invalid --max-volumes-per-node -1: negative",
            ),
            (
                &["--capacity", "10GB"],
                r#"invalid --capacity "10GB": want bytes, or a number with Ki, Mi, Gi, Ti, K, M, G or T"#,
            ),
        ];
        for (args, want) in cases {
            assert_eq!(
                opts(args).validate().unwrap_err().to_string(),
                *want,
                "{args:?}"
            );
        }
    }

    #[test]
    fn byte_counts_parse() {
        for (text, want) in [
            ("0", Some(0)),
            ("1048576", Some(1 << 20)),
            ("64Mi", Some(64 << 20)),
            ("2Gi", Some(2 << 30)),
            ("1T", Some(1_000_000_000_000)),
            ("", None),
            ("Gi", None),
            ("1.5Gi", None),
            ("-1", None),
            ("99999999999Ti", None),
        ] {
            assert_eq!(parse_bytes(text), want, "{text:?}");
        }
    }
}
