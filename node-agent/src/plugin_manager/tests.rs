//! The plugin manager against real registration servers on unix sockets in a temporary
//! directory, with a recording handler (its validation is the csi plugin's).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rekube_csi::pluginregistration::registration_server::{Registration, RegistrationServer};
use rekube_csi::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use tokio_stream::wrappers::UnixListenerStream;

use super::{CSI_PLUGIN_TYPE, PluginHandler, PluginManager};
use crate::volume::csi_registry::{Driver, DriversStore, highest_supported_version};

/// A plugin's registration server: its GetInfo answer and the statuses it was sent.
struct FakePlugin {
    info: PluginInfo,
    statuses: Statuses,
}

#[tonic::async_trait]
impl Registration for FakePlugin {
    async fn get_info(
        &self,
        _: tonic::Request<InfoRequest>,
    ) -> Result<tonic::Response<PluginInfo>, tonic::Status> {
        Ok(tonic::Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: tonic::Request<RegistrationStatus>,
    ) -> Result<tonic::Response<RegistrationStatusResponse>, tonic::Status> {
        let s = request.into_inner();
        self.statuses
            .lock()
            .unwrap()
            .push((s.plugin_registered, s.error));
        Ok(tonic::Response::new(RegistrationStatusResponse {}))
    }
}

/// The NotifyRegistrationStatus calls a plugin got: (plugin_registered, error).
type Statuses = Arc<Mutex<Vec<(bool, String)>>>;

/// Serves `info` at `socket` until the returned sender is dropped or sent; the socket is
/// removed when the server stops.
fn serve(
    socket: &Path,
    info: PluginInfo,
) -> (
    Statuses,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let plugin = FakePlugin {
        info,
        statuses: Arc::clone(&statuses),
    };
    let path = socket.to_path_buf();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(plugin))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        std::fs::remove_file(path).unwrap();
    });
    (statuses, tx, task)
}

/// The calls a handler got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Register(String, String, Vec<String>),
    DeRegister(String, String),
}

/// A handler validating as the csi plugin does (its own driver store), recording calls,
/// refusing to register `refused.io`.
struct RecordingHandler {
    drivers: DriversStore,
    calls: Mutex<Vec<Call>>,
}

impl PluginHandler for RecordingHandler {
    fn validate_plugin(
        &self,
        name: &str,
        endpoint: &str,
        versions: &[String],
    ) -> Result<(), String> {
        self.drivers.validate_plugin(name, endpoint, versions)
    }

    fn register_plugin<'a>(
        &'a self,
        name: &'a str,
        endpoint: &'a str,
        versions: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(Call::Register(
                name.into(),
                endpoint.into(),
                versions.to_vec(),
            ));
            if name == "refused.io" {
                return Err("rpc error: code = Unavailable desc = driver not ready".into());
            }
            self.drivers.set(
                name,
                Driver {
                    endpoint: PathBuf::from(endpoint),
                    highest_supported_version: highest_supported_version(versions)?,
                },
            );
            Ok(())
        })
    }

    fn deregister_plugin<'a>(&'a self, name: &'a str, endpoint: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.drivers.delete(name);
            self.calls
                .lock()
                .unwrap()
                .push(Call::DeRegister(name.into(), endpoint.into()));
        })
    }
}

fn info(plugin_type: &str, name: &str, endpoint: &str, versions: &[&str]) -> PluginInfo {
    PluginInfo {
        r#type: plugin_type.into(),
        name: name.into(),
        endpoint: endpoint.into(),
        supported_versions: versions.iter().map(|v| v.to_string()).collect(),
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_validates_and_deregisters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins_registry");
    let handler = Arc::new(RecordingHandler {
        drivers: DriversStore::default(),
        calls: Mutex::new(Vec::new()),
    });
    let mut manager = PluginManager::new(&dir);
    manager.add_handler(
        CSI_PLUGIN_TYPE,
        Arc::clone(&handler) as Arc<dyn PluginHandler>,
    );
    let actual = manager.actual_state_of_world();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(manager.run(stop));
    wait_for("the directory", || dir.is_dir()).await;

    // A CSI driver: registered, told so.
    let good_socket = dir.join("good.io-reg.sock");
    let (good, good_stop, good_task) = serve(
        &good_socket,
        info(
            CSI_PLUGIN_TYPE,
            "good.io",
            "/plugins/good.io/csi.sock",
            &["1.0.0"],
        ),
    );
    wait_for("good.io's status", || !good.lock().unwrap().is_empty()).await;
    assert_eq!(*good.lock().unwrap(), vec![(true, String::new())]);
    assert_eq!(
        handler.drivers.endpoint("good.io"),
        Some(PathBuf::from("/plugins/good.io/csi.sock"))
    );
    let registered = actual.lock().unwrap().get_registered_plugins();
    assert_eq!(registered.len(), 1);
    assert_eq!(
        (
            registered[0].socket_path.clone(),
            registered[0].name.as_str(),
            registered[0].plugin_type.as_str()
        ),
        (good_socket.clone(), "good.io", "CSIPlugin")
    );

    // The same driver from a second socket, same version: refused by validation.
    let again_socket = dir.join("sub/good.io-again-reg.sock");
    std::fs::create_dir_all(again_socket.parent().unwrap()).unwrap();
    let (again, again_stop, again_task) = serve(
        &again_socket,
        info(CSI_PLUGIN_TYPE, "good.io", "", &["v1.0.0"]),
    );
    // Unsupported versions, an unknown plugin type, a failing registration.
    let old_socket = dir.join("old.io-reg.sock");
    let (old, old_stop, old_task) = serve(
        &old_socket,
        info(CSI_PLUGIN_TYPE, "old.io", "/old.sock", &["0.3.0"]),
    );
    let device_socket = dir.join("device-reg.sock");
    let (device, device_stop, device_task) = serve(
        &device_socket,
        info("DevicePlugin", "example.com/gpu", "/dp.sock", &["v1beta1"]),
    );
    let refused_socket = dir.join("refused.io-reg.sock");
    let (refused, refused_stop, refused_task) = serve(
        &refused_socket,
        info(CSI_PLUGIN_TYPE, "refused.io", "/refused.sock", &["1.0.0"]),
    );
    for (name, statuses) in [
        ("again", &again),
        ("old", &old),
        ("device", &device),
        ("refused", &refused),
    ] {
        wait_for(name, || !statuses.lock().unwrap().is_empty()).await;
    }
    assert_eq!(
        again.lock().unwrap()[0],
        (
            false,
            format!(
                r#"RegisterPlugin error -- plugin validation failed with err: validation failed for CSI Driver good.io at endpoint {}: kubernetes.io/csi: ValidatePlugin for CSI driver "good.io" failed. Another driver with the same name is already registered with a higher supported version: "1.0.0""#,
                again_socket.display()
            )
        ),
        "an empty endpoint is the socket"
    );
    assert_eq!(
        old.lock().unwrap()[0],
        (
            false,
            r#"RegisterPlugin error -- plugin validation failed with err: validation failed for CSI Driver old.io at endpoint /old.sock: kubernetes.io/csi: ValidatePlugin for CSI driver "old.io" failed. None of the versions specified ["0.3.0"] are supported. err=highest supported version reported is 0.3.0, must be v1.x"#.to_string()
        )
    );
    assert_eq!(
        device.lock().unwrap()[0],
        (
            false,
            format!(
                "RegisterPlugin error -- no handler registered for plugin type: DevicePlugin at socket {}",
                device_socket.display()
            )
        )
    );
    assert_eq!(
        refused.lock().unwrap()[0],
        (
            false,
            "RegisterPlugin error -- plugin registration failed with err: rpc error: code = Unavailable desc = driver not ready".to_string()
        )
    );
    // Failed registrations are retried after their back-off (500 ms, then 1 s).
    wait_for("refused.io's retry", || refused.lock().unwrap().len() >= 2).await;
    assert_eq!(
        actual
            .lock()
            .unwrap()
            .get_registered_plugins()
            .iter()
            .map(|p| p.name.as_str().to_string())
            .collect::<Vec<_>>(),
        vec!["good.io"],
        "only good.io is registered"
    );

    // The socket gone: deregistered.
    good_stop.send(()).unwrap();
    good_task.await.unwrap();
    wait_for("good.io's deregistration", || {
        handler.calls.lock().unwrap().contains(&Call::DeRegister(
            "good.io".into(),
            "/plugins/good.io/csi.sock".into(),
        ))
    })
    .await;
    assert_eq!(handler.drivers.endpoint("good.io"), None);
    // The second good.io socket registers now that the first is gone.
    wait_for("the second good.io", || {
        again.lock().unwrap().last() == Some(&(true, String::new()))
    })
    .await;
    assert_eq!(
        handler.drivers.endpoint("good.io"),
        Some(again_socket.clone())
    );

    for (stop, task) in [
        (again_stop, again_task),
        (old_stop, old_task),
        (device_stop, device_task),
        (refused_stop, refused_task),
    ] {
        stop.send(()).unwrap();
        task.await.unwrap();
    }
    wait_for("every deregistration", || {
        actual.lock().unwrap().get_registered_plugins().is_empty()
    })
    .await;
    assert_eq!(handler.drivers.snapshot().len(), 0);
    stop_tx.send(true).unwrap();
    run.await.unwrap().unwrap();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "only sub/ is left"
    );
}
