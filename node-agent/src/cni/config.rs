//! Network configuration lists (CNI spec "Section 1: Network configuration format"), and
//! the conf dir they are read from, as libcni's `ConfFiles`/`ConfListFromFile`/
//! `ConfFromFile` and containerd's choice of the first one: files ending in `.conf`,
//! `.conflist` or `.json`, in lexical order; a `.conf`/`.json` holding a single plugin
//! config is wrapped in a list of one.
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::Error;

/// One plugin of a list: its `type` (the binary), its declared `capabilities`, and the
/// whole object as given (sent to the plugin with the list's name and version added).
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    pub plugin_type: String,
    pub capabilities: Vec<String>,
    pub raw: Map<String, Value>,
}

/// A network configuration list.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConfig>,
    /// The file's bytes (cached with each result, as libcni caches the config).
    pub bytes: Vec<u8>,
}

fn config_error(path: &str, message: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_string(),
        message: message.into(),
    }
}

fn plugin_of(path: &str, v: &Value) -> Result<PluginConfig, Error> {
    let raw = v
        .as_object()
        .ok_or_else(|| config_error(path, "a plugin config is not an object"))?
        .clone();
    let plugin_type = raw
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| config_error(path, "a plugin config has no type"))?
        .to_string();
    // A type names a binary in a bin dir, never a path.
    if plugin_type.contains('/') || plugin_type.starts_with('.') {
        return Err(config_error(
            path,
            format!("invalid plugin type {plugin_type:?}"),
        ));
    }
    let capabilities = raw
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|c| {
            c.iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    Ok(PluginConfig {
        plugin_type,
        capabilities,
        raw,
    })
}

/// Parses a `.conflist` (`list == true`) or a single plugin `.conf`.
pub fn parse(path: &str, bytes: &[u8], list: bool) -> Result<NetworkConfigList, Error> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| config_error(path, format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| config_error(path, "not a JSON object"))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| config_error(path, "no name"))?
        .to_string();
    let cni_version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let plugins = if list {
        let plugins = obj
            .get("plugins")
            .and_then(Value::as_array)
            .ok_or_else(|| config_error(path, "no plugins list"))?;
        if plugins.is_empty() {
            return Err(config_error(path, "an empty plugins list"));
        }
        plugins
            .iter()
            .map(|p| plugin_of(path, p))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![plugin_of(path, &v)?]
    };
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check: flag("disableCheck"),
        disable_gc: flag("disableGC"),
        plugins,
        bytes: bytes.to_vec(),
    })
}

/// The config files of `dir`, in lexical order (libcni `ConfFiles`).
pub fn conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("conf" | "conflist" | "json")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The default network of `dir`: its first config file that parses (containerd's
/// choice). A file that does not parse is skipped with a warning, as containerd does.
pub fn load_default(dir: &Path) -> Result<NetworkConfigList, Error> {
    for path in conf_files(dir) {
        let shown = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|e| config_error(&shown, e.to_string()))?;
        let list = path.extension().and_then(|e| e.to_str()) == Some("conflist");
        match parse(&shown, &bytes, list) {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(error = %e, "skipping a cni config"),
        }
    }
    Err(Error::NoConfig {
        dir: dir.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_and_a_single_plugin() {
        let list = parse(
            "l",
            br#"{"cniVersion": "1.0.0", "name": "net", "disableCheck": true, "plugins": [
                {"type": "bridge", "bridge": "cni0"},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}]}"#,
            true,
        )
        .unwrap();
        assert_eq!(
            (list.name.as_str(), list.cni_version.as_str()),
            ("net", "1.0.0")
        );
        assert!(list.disable_check && !list.disable_gc);
        assert_eq!(
            list.plugins
                .iter()
                .map(|p| p.plugin_type.as_str())
                .collect::<Vec<_>>(),
            ["bridge", "portmap"]
        );
        assert_eq!(list.plugins[1].capabilities, ["portMappings"]);
        assert_eq!(list.plugins[0].raw["bridge"], "cni0");

        let single = parse(
            "s",
            br#"{"cniVersion": "0.4.0", "name": "n", "type": "bridge"}"#,
            false,
        )
        .unwrap();
        assert_eq!(single.plugins.len(), 1);
        assert_eq!(single.plugins[0].plugin_type, "bridge");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        for (bytes, list, want) in [
            (&b"{"[..], true, "not JSON"),
            (br#"[]"#, true, "not a JSON object"),
            (br#"{"plugins": [{"type": "x"}]}"#, true, "no name"),
            (br#"{"name": "n"}"#, true, "no plugins list"),
            (
                br#"{"name": "n", "plugins": []}"#,
                true,
                "an empty plugins list",
            ),
            (
                br#"{"name": "n", "plugins": [{"bridge": "x"}]}"#,
                true,
                "a plugin config has no type",
            ),
            (
                br#"{"name": "n", "plugins": [{"type": "../sh"}]}"#,
                true,
                "invalid plugin type",
            ),
            (br#"{"name": "n"}"#, false, "a plugin config has no type"),
        ] {
            let err = parse("f.conflist", bytes, list).unwrap_err().to_string();
            assert!(
                err.starts_with("cni config f.conflist: ") && err.contains(want),
                "{err}"
            );
        }
    }

    #[test]
    fn the_first_valid_file_in_lexical_order_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            dir.path().join("10-b.conflist"),
            br#"{"name": "b", "plugins": [{"type": "bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("20-a.conf"),
            br#"{"name": "a", "type": "bridge"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("00-ignored.txt"), "x").unwrap();
        assert_eq!(conf_files(dir.path()).len(), 3);
        assert_eq!(load_default(dir.path()).unwrap().name, "b");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_default(empty.path()),
            Err(Error::NoConfig { .. })
        ));
    }
}
