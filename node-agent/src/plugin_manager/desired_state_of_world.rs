//! The plugin manager's desired state of world (upstream
//! pkg/kubelet/pluginmanager/cache/desired_state_of_world.go): the plugin sockets the
//! plugin watcher found, each with a UUID renewed whenever its socket is (re)created, so
//! a plugin that came back is registered again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A socket to register (upstream's `PluginInfo` of the desired state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginToRegister {
    pub socket_path: PathBuf,
    /// Renewed by every [`DesiredStateOfWorld::add_or_update_plugin`].
    pub uuid: u64,
}

#[derive(Debug, Default)]
pub struct DesiredStateOfWorld {
    plugins: BTreeMap<PathBuf, PluginToRegister>,
    last_uuid: u64,
}

impl DesiredStateOfWorld {
    /// `AddOrUpdatePlugin`: the socket with a new UUID; an empty path is refused.
    pub fn add_or_update_plugin(&mut self, socket_path: &Path) -> Result<(), String> {
        if socket_path.as_os_str().is_empty() {
            return Err("socket path is empty".into());
        }
        self.last_uuid += 1;
        self.plugins.insert(
            socket_path.to_path_buf(),
            PluginToRegister {
                socket_path: socket_path.to_path_buf(),
                uuid: self.last_uuid,
            },
        );
        Ok(())
    }

    /// `RemovePlugin`.
    pub fn remove_plugin(&mut self, socket_path: &Path) {
        self.plugins.remove(socket_path);
    }

    /// `PluginExists`.
    pub fn plugin_exists(&self, socket_path: &Path) -> bool {
        self.plugins.contains_key(socket_path)
    }

    /// `GetPluginsToRegister`.
    pub fn get_plugins_to_register(&self) -> Vec<PluginToRegister> {
        self.plugins.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_update_remove() {
        let mut dsw = DesiredStateOfWorld::default();
        let a = Path::new("/r/a-reg.sock");
        assert_eq!(
            dsw.add_or_update_plugin(Path::new("")),
            Err("socket path is empty".into())
        );
        dsw.add_or_update_plugin(a).unwrap();
        assert!(dsw.plugin_exists(a));
        let first = dsw.get_plugins_to_register();
        assert_eq!(first.len(), 1);
        dsw.add_or_update_plugin(a).unwrap();
        let second = dsw.get_plugins_to_register();
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].uuid, second[0].uuid, "an update renews the uuid");
        dsw.remove_plugin(a);
        assert!(!dsw.plugin_exists(a));
        assert!(dsw.get_plugins_to_register().is_empty());
    }
}
