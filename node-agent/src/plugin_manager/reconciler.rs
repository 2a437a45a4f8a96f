//! The plugin manager's reconciler (upstream pkg/kubelet/pluginmanager/reconciler): what
//! to do to bring the actual state to the desired one. First every registered plugin
//! whose socket is gone, or was re-created (another UUID), is unregistered; then every
//! desired socket not registered with its UUID is registered. The plugin manager's loop
//! runs it every second and hands the operations to the operation executor.

use super::actual_state_of_world::{ActualStateOfWorld, RegisteredPlugin};
use super::desired_state_of_world::{DesiredStateOfWorld, PluginToRegister};

/// One operation of a reconcile pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Unregister(RegisteredPlugin),
    Register(PluginToRegister),
}

/// `reconcile`: the unregistrations first, then the registrations.
pub fn reconcile(desired: &DesiredStateOfWorld, actual: &ActualStateOfWorld) -> Vec<Operation> {
    let to_register = desired.get_plugins_to_register();
    let mut operations = Vec::new();
    for registered in actual.get_registered_plugins() {
        let gone = !desired.plugin_exists(&registered.socket_path);
        let updated = to_register
            .iter()
            .any(|p| p.socket_path == registered.socket_path && p.uuid != registered.uuid);
        if gone || updated {
            operations.push(Operation::Unregister(registered));
        }
    }
    for plugin in to_register {
        if !actual.plugin_exists_with_correct_uuid(&plugin) {
            operations.push(Operation::Register(plugin));
        }
    }
    operations
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn registered(socket: &str, uuid: u64) -> RegisteredPlugin {
        RegisteredPlugin {
            socket_path: PathBuf::from(socket),
            uuid,
            plugin_type: "CSIPlugin".into(),
            name: socket.trim_start_matches("/r/").into(),
            endpoint: "/driver.sock".into(),
        }
    }

    /// reconciler_test.go's cases: register a new plugin, nothing for a registered one,
    /// unregister a removed one, unregister then register a re-created one.
    #[test]
    fn operations() {
        let mut dsw = DesiredStateOfWorld::default();
        let mut asw = ActualStateOfWorld::default();
        assert!(reconcile(&dsw, &asw).is_empty(), "nothing to do");

        dsw.add_or_update_plugin(Path::new("/r/a")).unwrap();
        let a = dsw.get_plugins_to_register()[0].clone();
        assert_eq!(reconcile(&dsw, &asw), vec![Operation::Register(a.clone())]);

        asw.add_plugin(registered("/r/a", a.uuid)).unwrap();
        assert!(
            reconcile(&dsw, &asw).is_empty(),
            "registered: nothing to do"
        );

        dsw.add_or_update_plugin(Path::new("/r/a")).unwrap();
        let a2 = dsw.get_plugins_to_register()[0].clone();
        assert_eq!(
            reconcile(&dsw, &asw),
            vec![
                Operation::Unregister(registered("/r/a", a.uuid)),
                Operation::Register(a2.clone())
            ],
            "re-created: unregistered, then registered again"
        );

        asw.add_plugin(registered("/r/a", a2.uuid)).unwrap();
        dsw.add_or_update_plugin(Path::new("/r/b")).unwrap();
        dsw.remove_plugin(Path::new("/r/a"));
        let b = dsw.get_plugins_to_register()[0].clone();
        assert_eq!(
            reconcile(&dsw, &asw),
            vec![
                Operation::Unregister(registered("/r/a", a2.uuid)),
                Operation::Register(b)
            ],
            "removed: unregistered"
        );
    }
}
