//! [`CniNetwork`]: the pod network through CNI, as containerd's CRI plugin gives it to a
//! kubelet (`RunPodSandbox` → `setupPodNetwork`, `StopPodSandbox` → `teardownPodNetwork`):
//! - the loopback network (`cni-loopback`, the `loopback` plugin on `lo`), then the default
//!   network of the conf dir (its first config, [`super::config::load_default`]) on
//!   `eth0`, with the pod's CNI_ARGS ([`super::runtime::pod_args`]) and its hostPorts as
//!   the `portMappings` capability;
//! - the pod's IPs are those of the result's interfaces inside the sandbox;
//! - teardown DELs every attachment cached for the sandbox, with the config it was added
//!   with (the conf dir may have changed since, the agent may have restarted);
//! - GC (after a restart) DELs the attachments of sandboxes that are gone and tells the
//!   plugins which attachments are still valid.
//!
//! STATUS (spec 1.1) of the network is the node's NetworkReady: while it fails, the
//! Node is NotReady with the kubelet's "container runtime network not ready" message.
//!
//! An empty conf dir gets the agent's default network ([`super::default_network`]) once
//! the node has a pod CIDR; until then a pod's sandbox fails with "network plugin not
//! ready", as containerd's "cni plugin not initialized".
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::config::{NetworkConfigList, parse};
use super::default_network::{DefaultConfig, ensure_default};
use super::runtime::pod_args;
use super::{CniRuntime, PluginExec, RuntimeConf};
use crate::runtime::network::SharedPodCidr;
use crate::runtime::sandbox::{NetworkError, PodNetwork, SandboxConfig};

/// The interface of the pod's network in its namespace.
pub const POD_INTERFACE: &str = "eth0";
/// containerd's loopback network.
const LOOPBACK_NETWORK: &str =
    r#"{"cniVersion": "1.1.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}"#;

/// Where the agent finds and keeps CNI things.
#[derive(Debug, Clone)]
pub struct CniPaths {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// host-local's reservations for the default network.
    pub ipam_data_dir: PathBuf,
}

pub struct CniNetwork<E: PluginExec> {
    runtime: CniRuntime<E>,
    paths: CniPaths,
    pod_cidr: SharedPodCidr,
    loopback: NetworkConfigList,
}

/// The IPs a result gives the sandbox's interfaces (an address whose `interface` is an
/// interface with a `sandbox`, or one with no interface index at all).
pub fn sandbox_ips(result: &Value) -> Vec<IpAddr> {
    let interfaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let in_sandbox = |i: &Value| {
        i.as_u64()
            .and_then(|i| interfaces.get(i as usize))
            .is_none_or(|iface| iface["sandbox"].as_str().is_some_and(|s| !s.is_empty()))
    };
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ip| in_sandbox(&ip["interface"]))
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.parse::<IpNet>().ok())
        .map(|n| n.addr())
        .collect()
}

/// The `portMappings` capability argument of a pod.
fn capability_args(pod: &SandboxConfig) -> Map<String, Value> {
    let mut args = Map::new();
    if !pod.port_mappings.is_empty() {
        args.insert("portMappings".into(), json!(pod.port_mappings));
    }
    args
}

impl<E: PluginExec> CniNetwork<E> {
    pub fn new(paths: CniPaths, pod_cidr: SharedPodCidr, exec: E) -> Self {
        let loopback = parse("cni-loopback", LOOPBACK_NETWORK.as_bytes(), true)
            .expect("the loopback network parses");
        CniNetwork {
            runtime: CniRuntime::new(paths.bin_dirs.clone(), paths.cache_dir.clone(), exec),
            paths,
            pod_cidr,
            loopback,
        }
    }

    /// The default network: the conf dir's first config, the agent's own written first
    /// when the dir has none.
    pub fn network_config(&self) -> Result<NetworkConfigList, NetworkError> {
        let cidrs: Vec<IpNet> = self
            .pod_cidr
            .read()
            .unwrap()
            .iter()
            .filter_map(|c| c.parse::<IpNet>().ok())
            .collect();
        let installed = ensure_default(&self.paths.conf_dir, &cidrs, &self.paths.ipam_data_dir)
            .map_err(|e| NetworkError::NotReady {
                message: format!(
                    "writing the default network config in {}: {e}",
                    self.paths.conf_dir.display()
                ),
            })?;
        if let DefaultConfig::Written(path) = &installed {
            tracing::info!(path = %path.display(), ?cidrs, "wrote the default pod network config");
        }
        super::config::load_default(&self.paths.conf_dir).map_err(|e| NetworkError::NotReady {
            message: match installed {
                DefaultConfig::NoPodCidr => format!(
                    "cni plugin not initialized: {e}, and the node has no podCIDR to make the default network from"
                ),
                _ => format!("cni plugin not initialized: {e}"),
            },
        })
    }

    fn runtime_conf(&self, pod: &SandboxConfig, netns: &Path, if_name: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: pod.pod_uid.clone(),
            netns: netns.to_path_buf(),
            if_name: if_name.into(),
            args: pod_args(&pod.namespace, &pod.pod_name, &pod.pod_uid, &pod.pod_uid),
            capability_args: if if_name == POD_INTERFACE {
                capability_args(pod)
            } else {
                Map::new()
            },
        }
    }

    fn cni_error(op: &'static str, pod: &SandboxConfig, source: super::Error) -> NetworkError {
        NetworkError::Cni {
            op,
            sandbox: pod.pod_uid.clone(),
            source: Box::new(source),
        }
    }

    /// DELs every cached attachment of `container_id`, each with the config it was added
    /// with; the first error is returned, the others still run.
    fn del_cached(&self, container_id: &str) -> Result<(), super::Error> {
        let mut first_error = None;
        for (network, id, if_name, path) in super::cache::all_entries(&self.paths.cache_dir) {
            if id != container_id {
                continue;
            }
            let Some(list) = self.runtime.cached_config(&network, &id, &if_name) else {
                tracing::warn!(path = %path.display(), "a cni cache entry without a config: removed");
                super::cache::remove(&path)?;
                continue;
            };
            let info = super::cache::read(&path);
            let rt = RuntimeConf {
                container_id: id,
                netns: info
                    .as_ref()
                    .map(|i| PathBuf::from(&i.netns))
                    .filter(|p| p.exists())
                    .unwrap_or_default(),
                if_name,
                args: info
                    .as_ref()
                    .map(|i| {
                        i.cni_args
                            .iter()
                            .map(|[k, v]| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                capability_args: Map::new(),
            };
            if let Err(e) = self.runtime.del_network_list(&list, &rt) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl<E: PluginExec> PodNetwork for CniNetwork<E> {
    fn setup(&self, pod: &SandboxConfig, netns: &Path) -> Result<Vec<IpAddr>, NetworkError> {
        let list = self.network_config()?;
        self.runtime
            .add_network_list(&self.loopback, &self.runtime_conf(pod, netns, "lo"))
            .map_err(|e| Self::cni_error("setup", pod, e))?;
        match self
            .runtime
            .add_network_list(&list, &self.runtime_conf(pod, netns, POD_INTERFACE))
        {
            Ok(result) => Ok(sandbox_ips(&result)),
            Err(e) => {
                // The failed list undid itself; the loopback attachment goes too.
                let _ = self.del_cached(&pod.pod_uid);
                Err(Self::cni_error("setup", pod, e))
            }
        }
    }

    fn teardown(&self, pod: &SandboxConfig, _netns: &Path) -> Result<(), NetworkError> {
        self.del_cached(&pod.pod_uid)
            .map_err(|e| Self::cni_error("destroy", pod, e))
    }

    fn status(&self) -> Result<(), NetworkError> {
        let list = self.network_config()?;
        self.runtime
            .get_status_of_network_list(&list)
            .map_err(|e| NetworkError::NotReady {
                message: e.to_string(),
            })
    }

    fn garbage_collect(&self, valid: &[String]) -> Result<(), NetworkError> {
        // One GC per network with cached attachments, with its config as cached (the
        // conf dir may name another network now), then the plugins of the current one.
        let mut networks: BTreeMap<String, NetworkConfigList> = BTreeMap::new();
        for (network, id, if_name, _) in super::cache::all_entries(&self.paths.cache_dir) {
            if !networks.contains_key(&network)
                && let Some(list) = self.runtime.cached_config(&network, &id, &if_name)
            {
                networks.insert(network, list);
            }
        }
        if let Ok(current) = super::config::load_default(&self.paths.conf_dir) {
            networks.insert(current.name.clone(), current);
        }
        let mut first_error = None;
        for list in networks.values() {
            let if_name = if list.name == self.loopback.name {
                "lo"
            } else {
                POD_INTERFACE
            };
            let attachments: Vec<(String, String)> = valid
                .iter()
                .map(|uid| (uid.clone(), if_name.to_string()))
                .collect();
            if let Err(e) = self.runtime.gc_network_list(list, &attachments) {
                tracing::warn!(network = %list.name, error = %e, "cni GC");
                first_error.get_or_insert(NetworkError::Cni {
                    op: "garbage-collect",
                    sandbox: String::new(),
                    source: Box::new(e),
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_ips_of_a_bridge_result() {
        // The reference bridge plugin's result: the bridge, the host veth, eth0 in the pod.
        let result = json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "rekube0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"},
                {"interface": 2, "address": "fd00::5/64"},
                {"interface": 0, "address": "10.244.1.1/24"},
                {"address": "192.0.2.9/32"}
            ]
        });
        assert_eq!(
            sandbox_ips(&result),
            [
                "10.244.1.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap(),
                "192.0.2.9".parse().unwrap()
            ]
        );
        assert!(sandbox_ips(&json!({"cniVersion": "1.0.0"})).is_empty());
    }

    #[test]
    fn host_ports_become_the_port_mappings_capability() {
        let mut pod = SandboxConfig::new("u", "p", "ns");
        assert!(capability_args(&pod).is_empty());
        pod.port_mappings
            .push(crate::runtime::sandbox::PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            });
        assert_eq!(
            Value::Object(capability_args(&pod)),
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
    }
}
