//! The csi plugin's registered drivers and its registration handler (upstream
//! pkg/volume/csi: csi_drivers_store.go's `DriversStore`, csi_plugin.go's
//! `RegistrationHandler`, nodeinfomanager's Node half).
//!
//! [`DriversStore`] is shared by every [`CsiPlugin`] of the agent: the drivers named by
//! `--csi-driver` (static) are in it from the start, and the plugin manager
//! (`crate::plugin_manager`) adds and removes the drivers node-driver-registrar (or
//! `rekube-csi registrar`) announces in the plugin registration directory.
//!
//! [`RegistrationHandler`] is the `CSIPlugin` type's handler: ValidatePlugin (the
//! supported versions; a driver of that name already registered with the same or a
//! higher version is refused), RegisterPlugin (the driver stored, its NodeGetInfo on the
//! Node: `InstallCSIDriver`), DeRegisterPlugin (the driver removed, its node id taken out
//! of the Node's annotation: `UninstallCSIDriver`). Upstream keeps the topology labels on
//! the Node at deregistration (only the CSINode object's keys go); so does rekube.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::csi::{self, CsiPlugin, DriverNodeInfo};

/// The CSI plugin's name, prefixing its messages (upstream's `log`: `CSIPluginName`).
const CSI_PLUGIN_NAME: &str = "kubernetes.io/csi";

/// A version as apimachinery's `ParseGeneric` reads one: two or more dot-separated
/// numbers (the first without a leading zero), an optional leading `v`, anything after
/// the numbers ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    components: Vec<u64>,
}

impl Version {
    /// `ParseGeneric`.
    pub fn parse_generic(s: &str) -> Result<Version, String> {
        let trimmed = s.trim_start();
        let trimmed = trimmed.strip_prefix('v').unwrap_or(trimmed);
        // versionMatchRE: `^\s*v?([0-9]+(?:\.[0-9]+)*)(.*)*$`.
        let mut end = 0;
        let bytes = trimmed.as_bytes();
        loop {
            let start = end;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                // No digits where a number must be: the dot (if any) belongs to the rest.
                end = start.saturating_sub(1);
                break;
            }
            if end < bytes.len() && bytes[end] == b'.' {
                end += 1;
                continue;
            }
            break;
        }
        let numbers = &trimmed[..end];
        if numbers.is_empty() {
            return Err(format!("could not parse {s:?} as version"));
        }
        let components: Vec<&str> = numbers.split('.').collect();
        if components.len() < 2 {
            return Err(format!("illegal version string {s:?}"));
        }
        let mut parsed = Vec::with_capacity(components.len());
        for (i, c) in components.iter().enumerate() {
            if i == 0 && c.starts_with('0') && *c != "0" {
                return Err(format!(
                    "illegal zero-prefixed version component {c:?} in {s:?}"
                ));
            }
            parsed.push(c.parse::<u64>().map_err(|e| {
                format!("illegal non-numeric version component {c:?} in {s:?}: {e}")
            })?);
        }
        Ok(Version { components: parsed })
    }

    pub fn major(&self) -> u64 {
        self.components[0]
    }

    /// `LessThan` of two generic versions: component by component, a longer version with
    /// non-zero extra components is the greater.
    pub fn less_than(&self, other: &Version) -> bool {
        let (a, b) = (&self.components, &other.components);
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return x < y;
            }
        }
        b.len() > a.len() && b[a.len()..].iter().any(|c| *c != 0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.components.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// apimachinery's `HighestSupportedVersion`: the highest 1.x of `versions` (2.x and
/// later skipped, unparsable ones skipped); an error when none is 1.x.
pub fn highest_supported_version(versions: &[String]) -> Result<Version, String> {
    if versions.is_empty() {
        return Err("empty array for supported versions".into());
    }
    let mut highest: Option<Version> = None;
    let mut last_err = None;
    for v in versions.iter().rev() {
        let current = match Version::parse_generic(v) {
            Ok(current) => current,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        if current.major() > 1 {
            continue;
        }
        if highest.as_ref().is_none_or(|h| h.less_than(&current)) {
            highest = Some(current);
        }
    }
    let Some(highest) = highest else {
        return Err(format!(
            "could not find a highest supported version from versions ([{}]) reported: {}",
            versions.join(" "),
            last_err.unwrap_or_else(|| "<nil>".into())
        ));
    };
    if highest.major() != 1 {
        return Err(format!(
            "highest supported version reported is {highest}, must be v1.x"
        ));
    }
    Ok(highest)
}

/// A registered driver (upstream's `Driver`): its socket and the highest CSI plugin API
/// version it supports. A `--csi-driver` driver counts as 1.0.0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    pub endpoint: PathBuf,
    pub highest_supported_version: Version,
}

/// The drivers of the node by name (upstream's `DriversStore`), shared by clones.
#[derive(Debug, Clone, Default)]
pub struct DriversStore {
    store: Arc<RwLock<BTreeMap<String, Driver>>>,
}

impl DriversStore {
    /// The `--csi-driver` drivers (each counts as CSI plugin API 1.0.0).
    pub fn from_static(drivers: BTreeMap<String, PathBuf>) -> Self {
        let store = DriversStore::default();
        for (name, endpoint) in drivers {
            store.set(
                &name,
                Driver {
                    endpoint,
                    highest_supported_version: Version {
                        components: vec![1, 0, 0],
                    },
                },
            );
        }
        store
    }

    pub fn get(&self, name: &str) -> Option<Driver> {
        self.store.read().expect("not poisoned").get(name).cloned()
    }

    /// The socket of driver `name`.
    pub fn endpoint(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(|d| d.endpoint)
    }

    pub fn set(&self, name: &str, driver: Driver) {
        self.store
            .write()
            .expect("not poisoned")
            .insert(name.to_string(), driver);
    }

    pub fn delete(&self, name: &str) {
        self.store.write().expect("not poisoned").remove(name);
    }

    pub fn clear(&self) {
        self.store.write().expect("not poisoned").clear();
    }

    /// The drivers' names and sockets.
    pub fn snapshot(&self) -> BTreeMap<String, PathBuf> {
        self.store
            .read()
            .expect("not poisoned")
            .iter()
            .map(|(n, d)| (n.clone(), d.endpoint.clone()))
            .collect()
    }

    /// `validateVersions`: the highest supported version of a driver announcing
    /// `versions`, refused when none is 1.x or a driver of that name is registered with
    /// the same or a higher version. `caller` names the step in the message
    /// (`ValidatePlugin`, `RegisterPlugin`).
    pub fn validate_versions(
        &self,
        caller: &str,
        name: &str,
        versions: &[String],
    ) -> Result<Version, String> {
        if versions.is_empty() {
            return Err(format!(
                "{CSI_PLUGIN_NAME}: {caller} for CSI driver {name:?} failed. Plugin returned an empty list for supported versions"
            ));
        }
        let highest = highest_supported_version(versions).map_err(|e| {
            format!(
                "{CSI_PLUGIN_NAME}: {caller} for CSI driver {name:?} failed. None of the versions specified [{}] are supported. err={e}",
                versions.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(" ")
            )
        })?;
        if let Some(existing) = self.get(name)
            && !existing.highest_supported_version.less_than(&highest)
        {
            return Err(format!(
                "{CSI_PLUGIN_NAME}: {caller} for CSI driver {name:?} failed. Another driver with the same name is already registered with a higher supported version: \"{}\"",
                existing.highest_supported_version
            ));
        }
        Ok(highest)
    }

    /// `ValidatePlugin`.
    pub fn validate_plugin(
        &self,
        name: &str,
        endpoint: &str,
        versions: &[String],
    ) -> Result<(), String> {
        self.validate_versions("ValidatePlugin", name, versions)
            .map(drop)
            .map_err(|e| {
                format!("validation failed for CSI Driver {name} at endpoint {endpoint}: {e}")
            })
    }
}

/// The Node's `csi.volume.kubernetes.io/nodeid` without `driver` (nodeinfomanager's
/// `removeNodeIDFromNode`): `None` when nothing changes (no annotation, no entry),
/// `Some(None)` when the annotation goes (its last entry), else its new value.
pub fn node_id_annotation_without(
    existing: Option<&str>,
    driver: &str,
) -> Result<Option<Option<String>>, String> {
    let Some(existing) = existing.filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let mut ids: BTreeMap<String, String> = serde_json::from_str(existing).map_err(|e| {
        format!(
            "failed to parse node's {:?} annotation value ({existing:?}) err={e}",
            csi::NODE_ID_ANNOTATION
        )
    })?;
    if ids.remove(driver).is_none() {
        return Ok(None);
    }
    if ids.is_empty() {
        return Ok(Some(None));
    }
    Ok(Some(Some(
        serde_json::to_string(&ids).expect("a map of strings"),
    )))
}

/// The Node half of nodeinfomanager: the driver's node id in the Node's annotation (merged
/// with the other drivers'), its topology as labels; and the id taken out again.
#[derive(Clone)]
pub struct NodeInfoManager {
    pub client: kube::Client,
    pub node: String,
}

impl NodeInfoManager {
    /// `InstallCSIDriver` (the Node part): a read and a merge patch carrying the
    /// resourceVersion read, so another driver's id written meanwhile is a conflict, never
    /// lost; retried on a conflict (upstream's `updateNode` with `RetryOnConflict`).
    pub async fn install_csi_driver(
        &self,
        driver: &str,
        info: &DriverNodeInfo,
    ) -> Result<(), String> {
        use kube::api::{Api, Patch, PatchParams};
        let nodes: Api<rekube_crds::Node> = Api::all(self.client.clone());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = nodes
                .get(&self.node)
                .await
                .map_err(|e| format!("error getting node {}: {e}", self.node))?;
            let existing = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(csi::NODE_ID_ANNOTATION));
            let ids = csi::node_id_annotation(existing.map(String::as_str), driver, &info.node_id);
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": {csi::NODE_ID_ANNOTATION: ids},
                "labels": info.topology,
            }});
            match nodes
                .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => continue,
                Err(e) => {
                    return Err(format!(
                        "error updating node {} with the node info of CSI driver {driver}: {e}",
                        self.node
                    ));
                }
            }
        }
    }

    /// `UninstallCSIDriver` (the Node part): the driver's entry out of the annotation
    /// (the annotation removed with its last entry); retried on a conflict.
    pub async fn uninstall_csi_driver(&self, driver: &str) -> Result<(), String> {
        use kube::api::{Api, Patch, PatchParams};
        let nodes: Api<rekube_crds::Node> = Api::all(self.client.clone());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = nodes
                .get(&self.node)
                .await
                .map_err(|e| format!("error getting node {}: {e}", self.node))?;
            let existing = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(csi::NODE_ID_ANNOTATION));
            let Some(value) = node_id_annotation_without(existing.map(String::as_str), driver)?
            else {
                return Ok(());
            };
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": {csi::NODE_ID_ANNOTATION: value},
            }});
            match nodes
                .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => continue,
                Err(e) => {
                    return Err(format!(
                        "error removing CSI driver {driver} node info from node {}: {e}",
                        self.node
                    ));
                }
            }
        }
    }
}

/// The `CSIPlugin` type's registration handler (csi_plugin.go's `RegistrationHandler`).
#[derive(Clone)]
pub struct RegistrationHandler {
    drivers: DriversStore,
    /// The csi plugin over the same store, for NodeGetInfo.
    plugin: CsiPlugin,
    nim: NodeInfoManager,
}

impl RegistrationHandler {
    /// `plugins_dir` is `<root-dir>/plugins`.
    pub fn new(drivers: DriversStore, plugins_dir: &Path, nim: NodeInfoManager) -> Self {
        RegistrationHandler {
            plugin: CsiPlugin::with_drivers_store(drivers.clone(), plugins_dir, nim.node.clone()),
            drivers,
            nim,
        }
    }

    pub fn drivers(&self) -> &DriversStore {
        &self.drivers
    }

    /// `ValidatePlugin`.
    pub fn validate_plugin(
        &self,
        name: &str,
        endpoint: &str,
        versions: &[String],
    ) -> Result<(), String> {
        tracing::info!(driver = %name, %endpoint, versions = %versions.join(","), "trying to validate a new CSI driver");
        self.drivers.validate_plugin(name, endpoint, versions)
    }

    /// `RegisterPlugin`: the driver stored, then its NodeGetInfo on the Node; a failure
    /// after the driver was stored unregisters it again.
    pub async fn register_plugin(
        &self,
        name: &str,
        endpoint: &str,
        versions: &[String],
    ) -> Result<(), String> {
        tracing::info!(driver = %name, %endpoint, "register new plugin");
        let highest = self
            .drivers
            .validate_versions("RegisterPlugin", name, versions)?;
        self.drivers.set(
            name,
            Driver {
                endpoint: PathBuf::from(endpoint),
                highest_supported_version: highest,
            },
        );
        let installed = async {
            let info = self
                .plugin
                .node_get_info(name)
                .await
                .map_err(|e| e.to_string())?;
            self.nim.install_csi_driver(name, &info).await?;
            Ok::<_, String>(info)
        };
        match installed.await {
            Ok(info) => {
                tracing::info!(driver = %name, node_id = %info.node_id, "registered the CSI driver on the node");
                Ok(())
            }
            Err(e) => {
                if let Err(unregister) = self.unregister_driver(name).await {
                    tracing::error!(driver = %name, error = %unregister, "registrationHandler.RegisterPlugin failed to unregister plugin due to previous error");
                }
                Err(e)
            }
        }
    }

    /// `DeRegisterPlugin`.
    pub async fn deregister_plugin(&self, name: &str, endpoint: &str) {
        tracing::info!(driver = %name, %endpoint, "registrationHandler.DeRegisterPlugin request");
        if let Err(e) = self.unregister_driver(name).await {
            tracing::error!(driver = %name, error = %e, "registrationHandler.DeRegisterPlugin failed");
        }
    }

    /// `unregisterDriver`: out of the store, its node id out of the Node.
    async fn unregister_driver(&self, name: &str) -> Result<(), String> {
        self.drivers.delete(name);
        self.nim
            .uninstall_csi_driver(name)
            .await
            .map_err(|e| format!("{CSI_PLUGIN_NAME}: Error uninstalling CSI driver: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const ENDPOINT: &str = "/var/log/kubelet/plugins_registry/myplugin/csi.sock";

    /// csi_plugin_test.go's TestValidatePlugin.
    #[test]
    fn validate_plugin() {
        let cases: [(&[&str], bool); 13] = [
            (&["v1.0.0"], false),
            (&["0.3.0"], true),
            (&["0.2.0"], true),
            (&["0.2.0", "v0.3.0"], true),
            (&["0.2.0", "v1.0.0"], false),
            (&["0.2.0", "v1.2.3"], false),
            (&["v1.2.3", "v0.3.0"], false),
            (&["v1.2.3", "v0.3.0", "2.0.1"], false),
            (&["v1.2.3", "4.9.12", "v0.3.0", "2.0.1"], false),
            (&["v1.2.3", "boo", "v0.3.0", "2.0.1"], false),
            (&["4.9.12", "2.0.1"], true),
            (&[], true),
            (&["var", "boo", "foo"], true),
        ];
        for (versions, should_fail) in cases {
            let store = DriversStore::default();
            let result = store.validate_plugin("test.plugin", ENDPOINT, &strings(versions));
            assert_eq!(
                result.is_err(),
                should_fail,
                "versions {versions:?}: {result:?}"
            );
        }
    }

    /// csi_plugin_test.go's TestValidatePluginExistingDriver.
    #[test]
    fn validate_plugin_existing_driver() {
        /// (pluginName1, endpoint1, versions1, pluginName2, endpoint2, versions2, shouldFail)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            &'a str,
            &'a str,
            &'a [&'a str],
            bool,
        );
        let cases: [Case; 3] = [
            (
                "test.plugin",
                ENDPOINT,
                &["v1.0.0"],
                "test.plugin2",
                ENDPOINT,
                &["v1.0.0"],
                false,
            ),
            (
                "test.plugin",
                ENDPOINT,
                &["v1.0.0"],
                "test.plugin",
                ENDPOINT,
                &["v1.0.0"],
                true,
            ),
            (
                "test.plugin",
                "/var/log/kubelet/plugins/myplugin/csi.sock",
                &["v0.3.0", "v0.2.0", "v1.0.0"],
                "test.plugin",
                ENDPOINT,
                &["v1.0.1"],
                false,
            ),
        ];
        let store = DriversStore::default();
        for (name1, endpoint1, versions1, name2, endpoint2, versions2, should_fail) in cases {
            let highest = highest_supported_version(&strings(versions1)).unwrap();
            store.clear();
            store.set(
                name1,
                Driver {
                    endpoint: PathBuf::from(endpoint1),
                    highest_supported_version: highest,
                },
            );
            let result = store.validate_plugin(name2, endpoint2, &strings(versions2));
            assert_eq!(
                result.is_err(),
                should_fail,
                "{name2} {versions2:?}: {result:?}"
            );
        }
    }

    #[test]
    fn validation_messages_are_upstreams() {
        let store = DriversStore::from_static(BTreeMap::from([(
            "csi.rekube.io".to_string(),
            PathBuf::from("/run/csi.sock"),
        )]));
        assert_eq!(
            store.validate_plugin("x.io", "/e.sock", &[]).unwrap_err(),
            r#"validation failed for CSI Driver x.io at endpoint /e.sock: kubernetes.io/csi: ValidatePlugin for CSI driver "x.io" failed. Plugin returned an empty list for supported versions"#
        );
        assert_eq!(
            store
                .validate_plugin("x.io", "/e.sock", &strings(&["0.3.0"]))
                .unwrap_err(),
            r#"validation failed for CSI Driver x.io at endpoint /e.sock: kubernetes.io/csi: ValidatePlugin for CSI driver "x.io" failed. None of the versions specified ["0.3.0"] are supported. err=highest supported version reported is 0.3.0, must be v1.x"#
        );
        assert_eq!(
            store
                .validate_plugin("x.io", "/e.sock", &strings(&["2.0.0", "boo"]))
                .unwrap_err(),
            r#"validation failed for CSI Driver x.io at endpoint /e.sock: kubernetes.io/csi: ValidatePlugin for CSI driver "x.io" failed. None of the versions specified ["2.0.0" "boo"] are supported. err=could not find a highest supported version from versions ([2.0.0 boo]) reported: could not parse "boo" as version"#
        );
        // A --csi-driver driver counts as 1.0.0: the same version is refused, a higher
        // one replaces it.
        assert_eq!(
            store
                .validate_versions("RegisterPlugin", "csi.rekube.io", &strings(&["1.0.0"]))
                .unwrap_err(),
            r#"kubernetes.io/csi: RegisterPlugin for CSI driver "csi.rekube.io" failed. Another driver with the same name is already registered with a higher supported version: "1.0.0""#
        );
        assert_eq!(
            store
                .validate_versions("RegisterPlugin", "csi.rekube.io", &strings(&["1.1"]))
                .unwrap()
                .to_string(),
            "1.1"
        );
    }

    #[test]
    fn generic_versions() {
        let ok = |s: &str| Version::parse_generic(s).map(|v| v.to_string());
        assert_eq!(ok("v1.0.0"), Ok("1.0.0".into()));
        assert_eq!(ok(" 1.2"), Ok("1.2".into()));
        assert_eq!(ok("1.2.3-beta.1"), Ok("1.2.3".into()));
        assert_eq!(ok("1.2.x"), Ok("1.2".into()));
        assert_eq!(ok("0.3.0"), Ok("0.3.0".into()));
        assert_eq!(ok("1"), Err(r#"illegal version string "1""#.into()));
        assert_eq!(ok("1."), Err(r#"illegal version string "1.""#.into()));
        assert_eq!(
            ok("01.0"),
            Err(r#"illegal zero-prefixed version component "01" in "01.0""#.into())
        );
        assert_eq!(ok("boo"), Err(r#"could not parse "boo" as version"#.into()));
        let v = |s: &str| Version::parse_generic(s).unwrap();
        assert!(v("1.0.0").less_than(&v("1.0.1")));
        assert!(!v("1.0").less_than(&v("1.0.0")));
        assert!(!v("1.0.0").less_than(&v("1.0")));
        assert!(v("1.0").less_than(&v("1.0.0.1")));
        assert!(!v("1.10").less_than(&v("1.9")));
        assert_eq!(
            highest_supported_version(&strings(&["v1.2.3", "4.9.12", "v0.3.0"]))
                .unwrap()
                .to_string(),
            "1.2.3"
        );
    }

    #[test]
    fn store_is_shared_by_clones() {
        let store = DriversStore::default();
        let other = store.clone();
        store.set(
            "a.io",
            Driver {
                endpoint: PathBuf::from("/a.sock"),
                highest_supported_version: Version::parse_generic("1.0.0").unwrap(),
            },
        );
        assert_eq!(other.endpoint("a.io"), Some(PathBuf::from("/a.sock")));
        other.delete("a.io");
        assert_eq!(store.endpoint("a.io"), None);
        assert!(store.snapshot().is_empty());
    }

    #[test]
    fn node_id_annotation_entry_removed() {
        assert_eq!(node_id_annotation_without(None, "a.io"), Ok(None));
        assert_eq!(node_id_annotation_without(Some(""), "a.io"), Ok(None));
        assert_eq!(
            node_id_annotation_without(Some(r#"{"b.io":"n1"}"#), "a.io"),
            Ok(None)
        );
        assert_eq!(
            node_id_annotation_without(Some(r#"{"a.io":"n1"}"#), "a.io"),
            Ok(Some(None))
        );
        assert_eq!(
            node_id_annotation_without(Some(r#"{"a.io":"n1","b.io":"n2"}"#), "a.io"),
            Ok(Some(Some(r#"{"b.io":"n2"}"#.into())))
        );
        assert_eq!(
            node_id_annotation_without(Some("{"), "a.io").unwrap_err(),
            r#"failed to parse node's "csi.volume.kubernetes.io/nodeid" annotation value ("{") err=EOF while parsing an object at line 1 column 1"#
        );
    }
}
