//! The plugin manager's operation executor and generator (upstream
//! pkg/kubelet/pluginmanager/operationexecutor): each operation runs on its own task, at
//! most one per socket at a time (upstream's goroutinemap); a failed registration waits
//! before the next attempt, 500 ms doubling up to 2 min 2 s (exponentialbackoff), until
//! its socket is re-created.
//!
//! Registration (`GenerateRegisterPluginFunc`): dial the socket, GetInfo (1 s), the
//! handler of the plugin's type, ValidatePlugin, the plugin in the actual state,
//! RegisterPlugin, NotifyRegistrationStatus(true); every refusal is sent to the plugin as
//! NotifyRegistrationStatus(false, the error). Unregistration: out of the actual state,
//! DeRegisterPlugin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekube_csi::pluginregistration::registration_client::RegistrationClient;
use rekube_csi::pluginregistration::{InfoRequest, RegistrationStatus};
use tonic::transport::Channel;

use super::PluginHandler;
use super::actual_state_of_world::{ActualStateOfWorld, RegisteredPlugin};
use super::reconciler::Operation;

/// How long dialling a plugin's socket may take (`dialTimeoutDuration`).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long GetInfo may take.
pub const GET_INFO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long NotifyRegistrationStatus may take (`notifyTimeoutDuration`).
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// exponentialbackoff's `initialDurationBeforeRetry`.
pub const INITIAL_DURATION_BEFORE_RETRY: Duration = Duration::from_millis(500);
/// exponentialbackoff's `maxDurationBeforeRetry`.
pub const MAX_DURATION_BEFORE_RETRY: Duration = Duration::from_secs(122);

/// The plugin handlers by plugin type (`CSIPlugin`).
pub type Handlers = BTreeMap<String, Arc<dyn PluginHandler>>;

/// The wait after a failure, given the previous one (exponentialbackoff's `Update`).
pub fn next_duration_before_retry(previous: Option<Duration>) -> Duration {
    match previous {
        None => INITIAL_DURATION_BEFORE_RETRY,
        Some(d) => (d * 2).min(MAX_DURATION_BEFORE_RETRY),
    }
}

/// Why an operation was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStarted {
    /// An operation on the socket is running (goroutinemap's AlreadyExists).
    AlreadyExists,
    /// The socket's last registration failed and its wait is not over.
    Backoff,
}

#[derive(Debug)]
struct Backoff {
    uuid: u64,
    retry_at: Instant,
    duration: Duration,
}

#[derive(Debug, Default)]
struct State {
    running: BTreeSet<PathBuf>,
    backoff: BTreeMap<PathBuf, Backoff>,
}

#[derive(Clone)]
pub struct OperationExecutor {
    state: Arc<Mutex<State>>,
    handlers: Arc<Handlers>,
    actual: Arc<Mutex<ActualStateOfWorld>>,
}

impl OperationExecutor {
    pub fn new(handlers: Handlers, actual: Arc<Mutex<ActualStateOfWorld>>) -> Self {
        OperationExecutor {
            state: Arc::default(),
            handlers: Arc::new(handlers),
            actual,
        }
    }

    /// Starts `operation` on its own task, unless one runs on its socket or the socket
    /// waits after a failure. The returned handle ends with the operation.
    pub fn start(&self, operation: Operation) -> Result<tokio::task::JoinHandle<()>, NotStarted> {
        let (socket, uuid) = match &operation {
            Operation::Register(p) => (p.socket_path.clone(), Some(p.uuid)),
            Operation::Unregister(p) => (p.socket_path.clone(), None),
        };
        {
            let mut state = self.state.lock().expect("not poisoned");
            if state.running.contains(&socket) {
                return Err(NotStarted::AlreadyExists);
            }
            if let (Some(uuid), Some(b)) = (uuid, state.backoff.get(&socket))
                && b.uuid == uuid
                && Instant::now() < b.retry_at
            {
                return Err(NotStarted::Backoff);
            }
            state.running.insert(socket.clone());
        }
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let result = match operation {
                Operation::Register(p) => {
                    register_plugin(&p.socket_path, p.uuid, &this.handlers, &this.actual).await
                }
                Operation::Unregister(p) => {
                    unregister_plugin(p, &this.handlers, &this.actual).await;
                    Ok(())
                }
            };
            let mut state = this.state.lock().expect("not poisoned");
            state.running.remove(&socket);
            match (result, uuid) {
                (Err(e), Some(uuid)) => {
                    let previous = state
                        .backoff
                        .get(&socket)
                        .filter(|b| b.uuid == uuid)
                        .map(|b| b.duration);
                    let duration = next_duration_before_retry(previous);
                    tracing::error!(socket = %socket.display(), error = %e, retry_in = ?duration, "OperationExecutor.RegisterPlugin failed");
                    state.backoff.insert(
                        socket,
                        Backoff {
                            uuid,
                            retry_at: Instant::now() + duration,
                            duration,
                        },
                    );
                }
                _ => {
                    state.backoff.remove(&socket);
                }
            }
        }))
    }
}

async fn dial(socket: &Path) -> Result<RegistrationClient<Channel>, String> {
    match tokio::time::timeout(DIAL_TIMEOUT, rekube_csi::client::connect(socket)).await {
        Ok(Ok(channel)) => Ok(RegistrationClient::new(channel)),
        Ok(Err(e)) => Err(format!(
            "failed to dial socket {}, err: {e}",
            socket.display()
        )),
        Err(_) => Err(format!(
            "failed to dial socket {}, err: context deadline exceeded",
            socket.display()
        )),
    }
}

/// `notifyPlugin`: the status sent; `Err` with the error sent (or with the failure to
/// send it).
async fn notify_plugin(
    client: &mut RegistrationClient<Channel>,
    registered: bool,
    error: String,
) -> Result<(), String> {
    let call = client.notify_registration_status(RegistrationStatus {
        plugin_registered: registered,
        error: error.clone(),
    });
    match tokio::time::timeout(NOTIFY_TIMEOUT, call).await {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => {
            return Err(format!(
                "{error}: {}",
                crate::volume::csi::rpc_error_message(status.code(), status.message())
            ));
        }
        Err(_) => return Err(format!("{error}: context deadline exceeded")),
    }
    if error.is_empty() { Ok(()) } else { Err(error) }
}

/// `GenerateRegisterPluginFunc`'s function.
pub async fn register_plugin(
    socket: &Path,
    uuid: u64,
    handlers: &Handlers,
    actual: &Mutex<ActualStateOfWorld>,
) -> Result<(), String> {
    let at = socket.display();
    let mut client = dial(socket)
        .await
        .map_err(|e| format!("RegisterPlugin error -- dial failed at socket {at}, err: {e}"))?;
    let info = match tokio::time::timeout(GET_INFO_TIMEOUT, client.get_info(InfoRequest {})).await {
        Ok(Ok(info)) => info.into_inner(),
        Ok(Err(status)) => {
            return Err(format!(
                "RegisterPlugin error -- failed to get plugin info using RPC GetInfo at socket {at}, err: {}",
                crate::volume::csi::rpc_error_message(status.code(), status.message())
            ));
        }
        Err(_) => {
            return Err(format!(
                "RegisterPlugin error -- failed to get plugin info using RPC GetInfo at socket {at}, err: context deadline exceeded"
            ));
        }
    };
    let Some(handler) = handlers.get(&info.r#type) else {
        let message = format!(
            "RegisterPlugin error -- no handler registered for plugin type: {} at socket {at}",
            info.r#type
        );
        return match notify_plugin(&mut client, false, message.clone()).await {
            Err(e) if e != message => Err(format!(
                "RegisterPlugin error -- failed to send error at socket {at}, err: {e}"
            )),
            _ => Err(message),
        };
    };
    let endpoint = if info.endpoint.is_empty() {
        socket.to_string_lossy().into_owned()
    } else {
        info.endpoint.clone()
    };
    if let Err(e) = handler.validate_plugin(&info.name, &endpoint, &info.supported_versions) {
        let message = format!("RegisterPlugin error -- plugin validation failed with err: {e}");
        if let Err(sent) = notify_plugin(&mut client, false, message.clone()).await
            && sent != message
        {
            return Err(format!(
                "RegisterPlugin error -- failed to send error at socket {at}, err: {sent}"
            ));
        }
        return Err(format!(
            "RegisterPlugin error -- pluginHandler.ValidatePluginFunc failed: {e}"
        ));
    }
    let added = actual
        .lock()
        .expect("not poisoned")
        .add_plugin(RegisteredPlugin {
            socket_path: socket.to_path_buf(),
            uuid,
            plugin_type: info.r#type.clone(),
            name: info.name.clone(),
            endpoint: endpoint.clone(),
        });
    if let Err(e) = added {
        tracing::error!(path = %at, error = %e, "RegisterPlugin error -- failed to add plugin");
    }
    if let Err(e) = handler
        .register_plugin(&info.name, &endpoint, &info.supported_versions)
        .await
    {
        actual.lock().expect("not poisoned").remove_plugin(socket);
        return notify_plugin(
            &mut client,
            false,
            format!("RegisterPlugin error -- plugin registration failed with err: {e}"),
        )
        .await;
    }
    if let Err(e) = notify_plugin(&mut client, true, String::new()).await {
        actual.lock().expect("not poisoned").remove_plugin(socket);
        handler.deregister_plugin(&info.name, &endpoint).await;
        return Err(format!(
            "RegisterPlugin error -- failed to send registration status at socket {at}, err: {e}"
        ));
    }
    tracing::info!(plugin = %info.name, r#type = %info.r#type, %endpoint, socket = %at, "registered plugin");
    Ok(())
}

/// `GenerateUnregisterPluginFunc`'s function.
pub async fn unregister_plugin(
    plugin: RegisteredPlugin,
    handlers: &Handlers,
    actual: &Mutex<ActualStateOfWorld>,
) {
    actual
        .lock()
        .expect("not poisoned")
        .remove_plugin(&plugin.socket_path);
    match handlers.get(&plugin.plugin_type) {
        Some(handler) => {
            handler
                .deregister_plugin(&plugin.name, &plugin.endpoint)
                .await;
            tracing::info!(plugin = %plugin.name, socket = %plugin.socket_path.display(), "DeRegisterPlugin called");
        }
        None => tracing::error!(
            socket = %plugin.socket_path.display(),
            "UnregisterPlugin error -- failed to get plugin handler"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let next = next_duration_before_retry(d);
            seen.push(next.as_millis());
            d = Some(next);
        }
        assert_eq!(
            seen,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 122000, 122000
            ]
        );
    }
}
