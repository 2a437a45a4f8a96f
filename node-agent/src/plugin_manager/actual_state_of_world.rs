//! The plugin manager's actual state of world (upstream
//! pkg/kubelet/pluginmanager/cache/actual_state_of_world.go): the plugins registered, by
//! socket, with the UUID of the desired state they were registered for and what
//! deregistration needs (the handler's type, the plugin's name and endpoint).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::desired_state_of_world::PluginToRegister;

/// A registered plugin (upstream's `PluginInfo` of the actual state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredPlugin {
    pub socket_path: PathBuf,
    pub uuid: u64,
    /// The handler's plugin type (`CSIPlugin`).
    pub plugin_type: String,
    pub name: String,
    pub endpoint: String,
}

#[derive(Debug, Default)]
pub struct ActualStateOfWorld {
    plugins: BTreeMap<PathBuf, RegisteredPlugin>,
}

impl ActualStateOfWorld {
    /// `AddPlugin`: an empty socket path is refused.
    pub fn add_plugin(&mut self, plugin: RegisteredPlugin) -> Result<(), String> {
        if plugin.socket_path.as_os_str().is_empty() {
            return Err("socket path is empty".into());
        }
        self.plugins.insert(plugin.socket_path.clone(), plugin);
        Ok(())
    }

    /// `RemovePlugin`.
    pub fn remove_plugin(&mut self, socket_path: &Path) {
        self.plugins.remove(socket_path);
    }

    /// `GetRegisteredPlugins`.
    pub fn get_registered_plugins(&self) -> Vec<RegisteredPlugin> {
        self.plugins.values().cloned().collect()
    }

    /// `PluginExistsWithCorrectUUID`.
    pub fn plugin_exists_with_correct_uuid(&self, plugin: &PluginToRegister) -> bool {
        self.plugins
            .get(&plugin.socket_path)
            .is_some_and(|p| p.uuid == plugin.uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_and_uuid() {
        let mut asw = ActualStateOfWorld::default();
        let plugin = RegisteredPlugin {
            socket_path: PathBuf::from("/r/a-reg.sock"),
            uuid: 7,
            plugin_type: "CSIPlugin".into(),
            name: "a.io".into(),
            endpoint: "/a.sock".into(),
        };
        assert_eq!(
            asw.add_plugin(RegisteredPlugin {
                socket_path: PathBuf::new(),
                ..plugin.clone()
            }),
            Err("socket path is empty".into())
        );
        asw.add_plugin(plugin.clone()).unwrap();
        let wanted = |uuid| PluginToRegister {
            socket_path: PathBuf::from("/r/a-reg.sock"),
            uuid,
        };
        assert!(asw.plugin_exists_with_correct_uuid(&wanted(7)));
        assert!(!asw.plugin_exists_with_correct_uuid(&wanted(8)));
        assert_eq!(asw.get_registered_plugins(), vec![plugin]);
        asw.remove_plugin(Path::new("/r/a-reg.sock"));
        assert!(!asw.plugin_exists_with_correct_uuid(&wanted(7)));
    }
}
