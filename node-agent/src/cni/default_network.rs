//! The default pod network the agent installs when the CNI conf dir holds no config, as
//! kind's kindnet does (it writes `10-kindnet.conflist` from the node's `spec.podCIDR`):
//! the reference plugins `bridge` (bridge `rekube0`, the gateway for the pods, hairpin
//! on so that a pod reaches itself through its Service), `host-local` IPAM over the pod
//! CIDR with a default route, and `portmap` for hostPorts. Outbound masquerade is not
//! the bridge's (its `ipMasq` would also masquerade pod-to-pod traffic across nodes):
//! the agent's own rule does it for traffic leaving the cluster CIDR
//! ([`crate::agent::pod_routes`]).
//!
//! The file is the agent's (`10-rekube.conflist`): rewritten when the pod CIDR changes,
//! and removed once a user installs a config of their own (theirs is then the network).

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{Value, json};

/// The name of the file the agent writes.
pub const DEFAULT_CONFLIST: &str = "10-rekube.conflist";
/// The network's name (the CNI cache and host-local's data directory are keyed by it).
pub const DEFAULT_NETWORK_NAME: &str = "rekube";
/// The bridge the default network puts pods on.
pub const DEFAULT_BRIDGE: &str = "rekube0";

/// The default config list for `pod_cidrs` (one range per CIDR, dual-stack as host-local
/// takes it), host-local keeping its reservations under `ipam_data_dir`.
pub fn default_conflist(pod_cidrs: &[IpNet], ipam_data_dir: &Path) -> Value {
    let ranges: Vec<Value> = pod_cidrs
        .iter()
        .map(|c| json!([{ "subnet": c.trunc().to_string() }]))
        .collect();
    let routes: Vec<Value> = pod_cidrs
        .iter()
        .map(|c| match c {
            IpNet::V4(_) => json!({ "dst": "0.0.0.0/0" }),
            IpNet::V6(_) => json!({ "dst": "::/0" }),
        })
        .collect();
    json!({
        "cniVersion": "1.1.0",
        "name": DEFAULT_NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": DEFAULT_BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_data_dir.display().to_string(),
                    "ranges": ranges,
                    "routes": routes,
                },
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            },
        ],
    })
}

/// What [`ensure_default`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultConfig {
    /// The conf dir has a config that is not the agent's: it is the network.
    UserConfig,
    /// The agent's file is there with this content already.
    Unchanged(PathBuf),
    /// The agent (re)wrote its file.
    Written(PathBuf),
    /// No config and no pod CIDR to make one from (node IPAM has not set it yet).
    NoPodCidr,
}

/// Installs the default network in `conf_dir` unless a config of someone else's is
/// there; rewrites the agent's own file when `pod_cidrs` changed. Written to a temporary
/// file and renamed, so a reader never sees half of it.
pub fn ensure_default(
    conf_dir: &Path,
    pod_cidrs: &[IpNet],
    ipam_data_dir: &Path,
) -> std::io::Result<DefaultConfig> {
    let ours = conf_dir.join(DEFAULT_CONFLIST);
    if super::config::conf_files(conf_dir)
        .iter()
        .any(|f| *f != ours)
    {
        // Theirs is the network, whatever the files' order.
        match std::fs::remove_file(&ours) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        return Ok(DefaultConfig::UserConfig);
    }
    if pod_cidrs.is_empty() {
        return Ok(DefaultConfig::NoPodCidr);
    }
    let mut text = serde_json::to_string_pretty(&default_conflist(pod_cidrs, ipam_data_dir))
        .expect("a config serializes");
    text.push('\n');
    if std::fs::read_to_string(&ours).is_ok_and(|old| old == text) {
        return Ok(DefaultConfig::Unchanged(ours));
    }
    std::fs::create_dir_all(conf_dir)?;
    let tmp = conf_dir.join(format!(".{DEFAULT_CONFLIST}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &ours)?;
    Ok(DefaultConfig::Written(ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(c: &[&str]) -> Vec<IpNet> {
        c.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn the_default_list_is_bridge_host_local_and_portmap_over_the_pod_cidr() {
        let list = default_conflist(
            &cidrs(&["10.244.1.0/24", "fd00:10:244:1::/64"]),
            Path::new("/var/lib/cni/networks"),
        );
        let parsed = super::super::config::parse(
            "default",
            serde_json::to_vec(&list).unwrap().as_slice(),
            true,
        )
        .unwrap();
        assert_eq!(
            parsed
                .plugins
                .iter()
                .map(|p| p.plugin_type.as_str())
                .collect::<Vec<_>>(),
            ["bridge", "portmap"]
        );
        assert_eq!(parsed.plugins[1].capabilities, ["portMappings"]);
        let ipam = &list["plugins"][0]["ipam"];
        assert_eq!(
            ipam["ranges"],
            json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]])
        );
        assert_eq!(
            ipam["routes"],
            json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])
        );
        assert_eq!(ipam["dataDir"], "/var/lib/cni/networks");
        assert_eq!(list["plugins"][0]["ipMasq"], false);
        assert_eq!(list["plugins"][0]["hairpinMode"], true);
    }

    #[test]
    fn written_when_empty_rewritten_on_change_and_never_over_a_user_config() {
        let dir = tempfile::tempdir().unwrap();
        let data = Path::new("/d");
        assert_eq!(
            ensure_default(dir.path(), &[], data).unwrap(),
            DefaultConfig::NoPodCidr
        );
        let ours = dir.path().join(DEFAULT_CONFLIST);
        assert_eq!(
            ensure_default(dir.path(), &cidrs(&["10.244.0.0/24"]), data).unwrap(),
            DefaultConfig::Written(ours.clone())
        );
        assert_eq!(
            ensure_default(dir.path(), &cidrs(&["10.244.0.0/24"]), data).unwrap(),
            DefaultConfig::Unchanged(ours.clone())
        );
        assert_eq!(
            ensure_default(dir.path(), &cidrs(&["10.244.7.0/24"]), data).unwrap(),
            DefaultConfig::Written(ours.clone())
        );
        assert!(
            std::fs::read_to_string(&ours)
                .unwrap()
                .contains("10.244.7.0/24")
        );
        // A user's config, even one sorting after the agent's: the agent's own file
        // goes, theirs is the network.
        std::fs::write(
            dir.path().join("20-user.conflist"),
            r#"{"name": "u", "plugins": [{"type": "ptp"}]}"#,
        )
        .unwrap();
        assert_eq!(
            ensure_default(dir.path(), &cidrs(&["10.244.8.0/24"]), data).unwrap(),
            DefaultConfig::UserConfig
        );
        assert!(!ours.exists());
        assert_eq!(
            super::super::config::load_default(dir.path()).unwrap().name,
            "u"
        );
    }
}
