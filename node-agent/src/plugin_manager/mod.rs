//! The plugin manager (upstream pkg/kubelet/pluginmanager): plugins register themselves
//! by making a unix socket serving the kubelet's plugin registration API
//! (`rekube_csi::pluginregistration`) in the plugin registration directory
//! (`--plugin-registration-dir`, by default `<root-dir>/plugins_registry`, the kubelet's
//! `<root-dir>/plugins_registry`).
//!
//! Every second the [`plugin_watcher`] scans the directory into the
//! [`desired_state_of_world`]; the [`reconciler`] compares it with the
//! [`actual_state_of_world`] and the [`operation_executor`] registers new sockets
//! (GetInfo, the handler of the plugin's type validates and registers it,
//! NotifyRegistrationStatus) and unregisters the plugins whose socket is gone. The only
//! handler is the csi plugin's ([`crate::volume::csi_registry::RegistrationHandler`],
//! type `CSIPlugin`): the driver becomes usable by the node's CSI volumes and its node id
//! goes on the Node.

pub mod actual_state_of_world;
pub mod desired_state_of_world;
pub mod operation_executor;
pub mod plugin_watcher;
pub mod reconciler;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use actual_state_of_world::ActualStateOfWorld;
use desired_state_of_world::DesiredStateOfWorld;
use operation_executor::{Handlers, NotStarted, OperationExecutor};
use reconciler::Operation;

/// The plugin type of CSI drivers (`registerapi.CSIPlugin`).
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// The plugin registration directory under the agent's root directory.
pub const PLUGINS_REGISTRY_DIR: &str = "plugins_registry";
/// How often the reconciler runs (`loopSleepDuration`).
pub const LOOP_SLEEP_DURATION: Duration = Duration::from_secs(1);

/// A plugin type's handler (upstream cache/types.go `PluginHandler`).
pub trait PluginHandler: Send + Sync {
    /// `ValidatePlugin`: whether the plugin may register.
    fn validate_plugin(
        &self,
        name: &str,
        endpoint: &str,
        versions: &[String],
    ) -> Result<(), String>;
    /// `RegisterPlugin`.
    fn register_plugin<'a>(
        &'a self,
        name: &'a str,
        endpoint: &'a str,
        versions: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>>;
    /// `DeRegisterPlugin`.
    fn deregister_plugin<'a>(&'a self, name: &'a str, endpoint: &'a str) -> BoxFuture<'a, ()>;
}

impl PluginHandler for crate::volume::csi_registry::RegistrationHandler {
    fn validate_plugin(
        &self,
        name: &str,
        endpoint: &str,
        versions: &[String],
    ) -> Result<(), String> {
        crate::volume::csi_registry::RegistrationHandler::validate_plugin(
            self, name, endpoint, versions,
        )
    }

    fn register_plugin<'a>(
        &'a self,
        name: &'a str,
        endpoint: &'a str,
        versions: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(
            crate::volume::csi_registry::RegistrationHandler::register_plugin(
                self, name, endpoint, versions,
            ),
        )
    }

    fn deregister_plugin<'a>(&'a self, name: &'a str, endpoint: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(
            crate::volume::csi_registry::RegistrationHandler::deregister_plugin(
                self, name, endpoint,
            ),
        )
    }
}

/// The plugin manager of one registration directory.
pub struct PluginManager {
    dir: PathBuf,
    handlers: Handlers,
    actual: Arc<Mutex<ActualStateOfWorld>>,
}

impl PluginManager {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PluginManager {
            dir: dir.into(),
            handlers: Handlers::new(),
            actual: Arc::default(),
        }
    }

    /// `AddHandler`.
    pub fn add_handler(&mut self, plugin_type: &str, handler: Arc<dyn PluginHandler>) {
        self.handlers.insert(plugin_type.to_string(), handler);
    }

    /// The plugins registered now (socket, name), for tests and logs.
    pub fn actual_state_of_world(&self) -> Arc<Mutex<ActualStateOfWorld>> {
        Arc::clone(&self.actual)
    }

    /// Makes the directory (an error when it cannot be made), then watches and reconciles
    /// every second until `stop` turns true; operations already started finish.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
        plugin_watcher::init(&self.dir)?;
        tracing::info!(path = %self.dir.display(), "plugin watcher start");
        let mut watcher = plugin_watcher::Watcher::new(&self.dir);
        let mut desired = DesiredStateOfWorld::default();
        let executor = OperationExecutor::new(self.handlers, Arc::clone(&self.actual));
        let mut running = Vec::new();
        loop {
            watcher.sync(&mut desired);
            let operations = {
                let actual = self.actual.lock().expect("not poisoned");
                reconciler::reconcile(&desired, &actual)
            };
            for operation in operations {
                let what = match &operation {
                    Operation::Register(p) => ("RegisterPlugin", p.socket_path.clone()),
                    Operation::Unregister(p) => ("UnregisterPlugin", p.socket_path.clone()),
                };
                match executor.start(operation) {
                    Ok(handle) => {
                        tracing::debug!(operation = what.0, socket = %what.1.display(), "operation started");
                        running.push(handle);
                    }
                    Err(NotStarted::AlreadyExists | NotStarted::Backoff) => {}
                }
            }
            running.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
            tokio::select! {
                _ = tokio::time::sleep(LOOP_SLEEP_DURATION) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        for handle in running {
            let _ = handle.await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
