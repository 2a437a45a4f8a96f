//! Operations on a network configuration list (libcni's `CNIConfig`: `AddNetworkList`,
//! `CheckNetworkList`, `DelNetworkList`, `GetStatusOfNetworkList`, `GCNetworkList`):
//! - ADD runs the plugins in order, each with the previous one's result as `prevResult`,
//!   and caches the last result; if a plugin fails, the list is deleted again (the spec:
//!   a runtime calls DEL after a failed ADD) so nothing it made is left, and the error is
//!   the failing plugin's;
//! - CHECK runs them in order with the cached result (not for lists with `disableCheck`);
//! - DEL runs them in reverse order with the cached result, then forgets it; without a
//!   cached result, DEL still runs (a plugin must tolerate a DEL of what it never made);
//! - STATUS (spec 1.1) asks each plugin whether it is ready for ADDs;
//! - GC (spec 1.1) tells each plugin the valid attachments (`cni.dev/valid-attachments`),
//!   then DELs every cached attachment not among them with the config and arguments of
//!   its ADD (its namespace may be gone: a plugin's DEL tolerates that) and forgets it.
//!   The DEL is the runtime's part: not every plugin implements GC (the reference
//!   bridge plugin does not, and so never passes it on to its IPAM), and an address
//!   leaked by a DEL that never came (the agent died) is released this way.
//!
//! The stdin of each plugin is its own config with the list's `name` and `cniVersion`, the
//! `prevResult`, and `runtimeConfig` holding the capability arguments the plugin declares
//! (portMappings and the like), as libcni's `buildOneConfig` and `injectRuntimeConfig`.
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::Error;
use super::cache::{self, CACHE_KIND, CachedInfo};
use super::config::{NetworkConfigList, PluginConfig};
use super::invoke::PluginExec;

/// The attachment a call is about (libcni's `RuntimeConf`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    /// The network namespace's path (`/proc/<pid>/ns/net` or a bind mount of it).
    pub netns: PathBuf,
    pub if_name: String,
    /// `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ... as the kubelet passes them).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, ...): sent to the plugins declaring them.
    pub capability_args: Map<String, Value>,
}

/// The `CNI_ARGS` a pod sandbox's attachment gets (containerd's CRI plugin: its labels,
/// `IgnoreUnknown=1` first so that plugins which know none of them do not refuse).
pub fn pod_args(namespace: &str, name: &str, sandbox_id: &str, uid: &str) -> Vec<(String, String)> {
    [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
        ("K8S_POD_UID", uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The stdin of one plugin of `list` (libcni `buildOneConfig` + `injectRuntimeConfig`).
pub fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &PluginConfig,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Value {
    let mut obj = plugin.raw.clone();
    obj.insert("name".into(), json!(list.name));
    obj.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(prev) = prev_result {
        obj.insert("prevResult".into(), prev.clone());
    }
    let runtime: Map<String, Value> = plugin
        .capabilities
        .iter()
        .filter_map(|c| capability_args.get(c).map(|v| (c.clone(), v.clone())))
        .collect();
    if !runtime.is_empty() {
        obj.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(obj)
}

/// The spec's environment for a call.
pub fn plugin_env(
    command: &str,
    rt: Option<&RuntimeConf>,
    bin_dirs: &[PathBuf],
) -> Vec<(String, String)> {
    let path = bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut env = vec![
        ("CNI_COMMAND".to_string(), command.to_string()),
        ("CNI_PATH".to_string(), path),
    ];
    if let Some(rt) = rt {
        env.push(("CNI_CONTAINERID".into(), rt.container_id.clone()));
        env.push(("CNI_NETNS".into(), rt.netns.display().to_string()));
        env.push(("CNI_IFNAME".into(), rt.if_name.clone()));
        let args = rt
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        env.push(("CNI_ARGS".into(), args));
    }
    env
}

/// Whether `version` (a list's cniVersion) is at least `major.minor.0`.
fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

pub struct CniRuntime<E: PluginExec> {
    pub bin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    exec: E,
}

impl<E: PluginExec> CniRuntime<E> {
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: impl Into<PathBuf>, exec: E) -> Self {
        CniRuntime {
            bin_dirs,
            cache_dir: cache_dir.into(),
            exec,
        }
    }

    fn run(
        &self,
        command: &'static str,
        list: &NetworkConfigList,
        plugin: &PluginConfig,
        rt: Option<&RuntimeConf>,
        stdin: &Value,
    ) -> Result<Vec<u8>, Error> {
        let binary = self
            .exec
            .find(&plugin.plugin_type, &self.bin_dirs)
            .ok_or_else(|| Error::PluginNotFound {
                plugin: plugin.plugin_type.clone(),
                dirs: self
                    .bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            })?;
        let env = plugin_env(command, rt, &self.bin_dirs);
        let bytes = serde_json::to_vec(stdin).expect("a plugin config serializes");
        self.exec
            .exec(&binary, &env, &bytes)
            .map_err(|source| Error::Plugin {
                plugin: format!("type={:?} network={:?}", plugin.plugin_type, list.name),
                command,
                source,
            })
    }

    fn cache_path(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> PathBuf {
        cache::result_path(&self.cache_dir, &list.name, &rt.container_id, &rt.if_name)
    }

    /// ADD: the list's result (the last plugin's).
    pub fn add_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<Value, Error> {
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list, plugin, prev.as_ref(), &rt.capability_args);
            let out = match self.run("ADD", list, plugin, Some(rt), &stdin) {
                Ok(out) => out,
                Err(e) => {
                    // Undo what the plugins before it (and it) made.
                    if let Err(del) = self.del_with(list, rt, prev.as_ref()) {
                        tracing::warn!(error = %del, container = %rt.container_id, "cni DEL after a failed ADD");
                    }
                    return Err(e);
                }
            };
            let result: Value = serde_json::from_slice(&out).map_err(|e| Error::Network {
                network: list.name.clone(),
                command: "ADD",
                container: rt.container_id.clone(),
                message: format!("plugin {} returned no result: {e}", plugin.plugin_type),
            })?;
            prev = Some(result);
        }
        let result = prev.unwrap_or_else(|| json!({"cniVersion": list.cni_version}));
        cache::write(
            &self.cache_path(list, rt),
            &CachedInfo {
                kind: CACHE_KIND.into(),
                container_id: rt.container_id.clone(),
                config: CachedInfo::encode_config(&list.bytes),
                if_name: rt.if_name.clone(),
                network_name: list.name.clone(),
                netns: rt.netns.display().to_string(),
                cni_args: rt
                    .args
                    .iter()
                    .map(|(k, v)| [k.clone(), v.clone()])
                    .collect(),
                capability_args: rt.capability_args.clone(),
                result: Some(result.clone()),
            },
        )?;
        Ok(result)
    }

    /// The cached result of an attachment, if any.
    pub fn cached_result(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Option<Value> {
        cache::read(&self.cache_path(list, rt)).and_then(|c| c.result)
    }

    /// The config list an attachment was added with (for a DEL after a restart or a
    /// change of the conf dir).
    pub fn cached_config(
        &self,
        network: &str,
        container_id: &str,
        if_name: &str,
    ) -> Option<NetworkConfigList> {
        let path = cache::result_path(&self.cache_dir, network, container_id, if_name);
        let info = cache::read(&path)?;
        super::config::parse(&path.display().to_string(), &info.config_bytes(), true)
            .or_else(|_| {
                super::config::parse(&path.display().to_string(), &info.config_bytes(), false)
            })
            .ok()
    }

    fn del_with(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<(), Error> {
        let mut first_error = None;
        for plugin in list.plugins.iter().rev() {
            let stdin = plugin_stdin(list, plugin, prev, &rt.capability_args);
            if let Err(e) = self.run("DEL", list, plugin, Some(rt), &stdin) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// DEL: every plugin, last first, with the cached result; then the cache entry goes.
    /// A plugin that fails does not stop the others; its error is returned and the cache
    /// entry kept, so the DEL can be retried.
    pub fn del_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<(), Error> {
        let path = self.cache_path(list, rt);
        let cached = cache::read(&path);
        // The capability arguments of the ADD (port mappings to remove), unless given.
        let mut rt = rt.clone();
        if rt.capability_args.is_empty()
            && let Some(c) = &cached
        {
            rt.capability_args = c.capability_args.clone();
        }
        self.del_with(list, &rt, cached.as_ref().and_then(|c| c.result.as_ref()))?;
        cache::remove(&path)
    }

    /// CHECK: every plugin in order with the cached result.
    pub fn check_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<(), Error> {
        if list.disable_check || !version_at_least(&list.cni_version, 0, 4) {
            return Ok(());
        }
        let cached = self.cached_result(list, rt).ok_or_else(|| Error::Network {
            network: list.name.clone(),
            command: "CHECK",
            container: rt.container_id.clone(),
            message: "no cached result".into(),
        })?;
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list, plugin, Some(&cached), &rt.capability_args);
            self.run("CHECK", list, plugin, Some(rt), &stdin)?;
        }
        Ok(())
    }

    /// STATUS: whether every plugin is ready for ADDs (lists before spec 1.1: assumed).
    pub fn get_status_of_network_list(&self, list: &NetworkConfigList) -> Result<(), Error> {
        if !version_at_least(&list.cni_version, 1, 1) {
            return Ok(());
        }
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list, plugin, None, &Map::new());
            self.run("STATUS", list, plugin, None, &stdin)?;
        }
        Ok(())
    }

    /// GC: the plugins release what belongs to no attachment of `valid` ((container id,
    /// ifname) pairs), and the cached results of the others are forgotten.
    pub fn gc_network_list(
        &self,
        list: &NetworkConfigList,
        valid: &[(String, String)],
    ) -> Result<(), Error> {
        if version_at_least(&list.cni_version, 1, 1) && !list.disable_gc {
            let attachments: Vec<Value> = valid
                .iter()
                .map(|(c, i)| json!({"containerID": c, "ifname": i}))
                .collect();
            for plugin in &list.plugins {
                let mut stdin = plugin_stdin(list, plugin, None, &Map::new());
                stdin["cni.dev/valid-attachments"] = json!(attachments);
                self.run("GC", list, plugin, None, &stdin)?;
            }
        }
        let mut first_error = None;
        for (container, if_name, path) in cache::entries(&self.cache_dir, &list.name) {
            if valid.iter().any(|(c, i)| *c == container && *i == if_name) {
                continue;
            }
            let Some(info) = cache::read(&path) else {
                continue;
            };
            let added_with = self
                .cached_config(&list.name, &container, &if_name)
                .unwrap_or_else(|| list.clone());
            let rt = RuntimeConf {
                container_id: container,
                // A namespace that is gone is passed as none, as the spec allows for DEL.
                netns: Some(PathBuf::from(&info.netns))
                    .filter(|p| p.exists())
                    .unwrap_or_default(),
                if_name,
                args: info
                    .cni_args
                    .iter()
                    .map(|[k, v]| (k.clone(), v.clone()))
                    .collect(),
                capability_args: info.capability_args.clone(),
            };
            if let Err(e) = self.del_network_list(&added_with, &rt) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::parse;
    use crate::cni::invoke::PluginError;
    use std::path::Path;
    use std::sync::Mutex;

    /// Records every call; `fail` names a (plugin, command) that fails.
    #[derive(Default)]
    struct FakeExec {
        calls: Mutex<Vec<(String, String, Value)>>,
        fail: Option<(&'static str, &'static str)>,
    }

    impl PluginExec for FakeExec {
        fn find(&self, plugin_type: &str, _dirs: &[PathBuf]) -> Option<PathBuf> {
            (plugin_type != "missing").then(|| PathBuf::from(plugin_type))
        }

        fn exec(
            &self,
            binary: &Path,
            env: &[(String, String)],
            stdin: &[u8],
        ) -> Result<Vec<u8>, PluginError> {
            let plugin = binary.display().to_string();
            let command = env
                .iter()
                .find(|(k, _)| k == "CNI_COMMAND")
                .unwrap()
                .1
                .clone();
            let stdin: Value = serde_json::from_slice(stdin).unwrap();
            self.calls
                .lock()
                .unwrap()
                .push((plugin.clone(), command.clone(), stdin));
            if self.fail == Some((plugin.as_str(), command.as_str())) {
                return Err(PluginError {
                    code: 11,
                    msg: "boom".into(),
                    details: String::new(),
                });
            }
            Ok(if command == "ADD" {
                serde_json::to_vec(&json!({"cniVersion": "1.0.0", "ips": [{"address": format!("10.0.0.{}/24", plugin.len())}]})).unwrap()
            } else {
                Vec::new()
            })
        }
    }

    fn list(version: &str) -> NetworkConfigList {
        parse(
            "t",
            format!(
                r#"{{"cniVersion": "{version}", "name": "net", "plugins": [
                {{"type": "bridge", "bridge": "b0"}},
                {{"type": "portmap", "capabilities": {{"portMappings": true}}}}]}}"#
            )
            .as_bytes(),
            true,
        )
        .unwrap()
    }

    fn rt() -> RuntimeConf {
        let mut capability_args = Map::new();
        capability_args.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        capability_args.insert("bandwidth".into(), json!({}));
        RuntimeConf {
            container_id: "c1".into(),
            netns: "/run/netns/n".into(),
            if_name: "eth0".into(),
            args: vec![
                ("K8S_POD_NAME".into(), "p".into()),
                ("K8S_POD_NAMESPACE".into(), "ns".into()),
            ],
            capability_args,
        }
    }

    fn calls(e: &FakeExec) -> Vec<(String, String)> {
        e.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(p, c, _)| (p.clone(), c.clone()))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn stdin_and_env_as_libcni_builds_them() {
        let l = list("1.0.0");
        let prev = json!({"cniVersion": "1.0.0"});
        let s = plugin_stdin(&l, &l.plugins[1], Some(&prev), &rt().capability_args);
        assert_eq!(s["name"], "net");
        assert_eq!(s["cniVersion"], "1.0.0");
        assert_eq!(s["type"], "portmap");
        assert_eq!(s["prevResult"], prev);
        // Only the declared capability.
        assert_eq!(
            s["runtimeConfig"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["portMappings"]
        );
        assert!(
            plugin_stdin(&l, &l.plugins[0], None, &rt().capability_args)
                .get("runtimeConfig")
                .is_none()
        );
        let env = plugin_env(
            "ADD",
            Some(&rt()),
            &[PathBuf::from("/a"), PathBuf::from("/b")],
        );
        let get = |k: &str| env.iter().find(|(e, _)| e == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CNI_COMMAND"), Some("ADD"));
        assert_eq!(get("CNI_PATH"), Some("/a:/b"));
        assert_eq!(get("CNI_CONTAINERID"), Some("c1"));
        assert_eq!(get("CNI_NETNS"), Some("/run/netns/n"));
        assert_eq!(get("CNI_IFNAME"), Some("eth0"));
        assert_eq!(get("CNI_ARGS"), Some("K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns"));
    }

    #[test]
    fn add_chains_results_caches_and_del_reverses() {
        let dir = tempfile::tempdir().unwrap();
        let r = CniRuntime::new(vec![], dir.path(), FakeExec::default());
        let l = list("1.0.0");
        let result = r.add_network_list(&l, &rt()).unwrap();
        assert_eq!(result["ips"][0]["address"], "10.0.0.7/24");
        {
            let c = r.exec.calls.lock().unwrap();
            assert!(c[0].2.get("prevResult").is_none());
            assert_eq!(c[1].2["prevResult"]["ips"][0]["address"], "10.0.0.6/24");
        }
        assert_eq!(r.cached_result(&l, &rt()), Some(result.clone()));
        assert_eq!(r.cached_config("net", "c1", "eth0").unwrap().name, "net");
        r.check_network_list(&l, &rt()).unwrap();
        // DEL after a "restart": a runtime of its own, capability args from the cache.
        let r2 = CniRuntime::new(vec![], dir.path(), FakeExec::default());
        let mut bare = rt();
        bare.capability_args = Map::new();
        r2.del_network_list(&l, &bare).unwrap();
        let c = r2.exec.calls.lock().unwrap();
        assert_eq!(
            c.iter()
                .map(|(p, cmd, _)| (p.as_str(), cmd.as_str()))
                .collect::<Vec<_>>(),
            [("portmap", "DEL"), ("bridge", "DEL")]
        );
        assert_eq!(c[0].2["prevResult"], result);
        assert!(c[0].2["runtimeConfig"]["portMappings"].is_array());
        drop(c);
        assert!(r2.cached_result(&l, &rt()).is_none());
        // A second DEL (nothing cached) still calls the plugins, and succeeds.
        r2.del_network_list(&l, &rt()).unwrap();
    }

    #[test]
    fn a_failed_add_deletes_what_it_made_and_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let exec = FakeExec {
            fail: Some(("portmap", "ADD")),
            ..Default::default()
        };
        let r = CniRuntime::new(vec![], dir.path(), exec);
        let l = list("1.0.0");
        let err = r.add_network_list(&l, &rt()).unwrap_err().to_string();
        assert_eq!(
            err,
            "cni plugin type=\"portmap\" network=\"net\" ADD failed: boom"
        );
        assert_eq!(
            calls(&r.exec),
            pairs(&[
                ("bridge", "ADD"),
                ("portmap", "ADD"),
                ("portmap", "DEL"),
                ("bridge", "DEL")
            ])
        );
        assert!(r.cached_result(&l, &rt()).is_none());
    }

    #[test]
    fn a_missing_plugin_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let r = CniRuntime::new(
            vec![PathBuf::from("/opt/cni/bin")],
            dir.path(),
            FakeExec::default(),
        );
        let l = parse(
            "t",
            br#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "missing"}]}"#,
            true,
        )
        .unwrap();
        let err = r.add_network_list(&l, &rt()).unwrap_err().to_string();
        assert_eq!(err, "cni plugin \"missing\" not found in /opt/cni/bin");
    }

    #[test]
    fn check_status_and_gc_by_spec_version() {
        let dir = tempfile::tempdir().unwrap();
        let r = CniRuntime::new(vec![], dir.path(), FakeExec::default());
        // CHECK needs a cached result.
        let err = r
            .check_network_list(&list("1.0.0"), &rt())
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("no cached result"), "{err}");
        // STATUS and GC only from spec 1.1.
        r.get_status_of_network_list(&list("1.0.0")).unwrap();
        assert!(calls(&r.exec).is_empty());
        let l = list("1.1.0");
        r.get_status_of_network_list(&l).unwrap();
        assert_eq!(
            calls(&r.exec),
            pairs(&[("bridge", "STATUS"), ("portmap", "STATUS")])
        );
        // GC: the valid attachments to every plugin; stale cache entries forgotten.
        r.add_network_list(&l, &rt()).unwrap();
        let mut other = rt();
        other.container_id = "c2".into();
        r.add_network_list(&l, &other).unwrap();
        r.exec.calls.lock().unwrap().clear();
        r.gc_network_list(&l, &[("c2".into(), "eth0".into())])
            .unwrap();
        assert_eq!(
            calls(&r.exec),
            pairs(&[
                ("bridge", "GC"),
                ("portmap", "GC"),
                ("portmap", "DEL"),
                ("bridge", "DEL")
            ])
        );
        let c = r.exec.calls.lock().unwrap();
        assert_eq!(
            c[0].2["cni.dev/valid-attachments"],
            json!([{"containerID": "c2", "ifname": "eth0"}])
        );
        // The stale attachment's DEL: with its ADD's result and port mappings.
        assert_eq!(c[2].2["prevResult"]["ips"][0]["address"], "10.0.0.7/24");
        assert!(c[2].2["runtimeConfig"]["portMappings"].is_array());
        drop(c);
        assert!(r.cached_result(&l, &rt()).is_none());
        assert!(r.cached_result(&l, &other).is_some());
    }
}
