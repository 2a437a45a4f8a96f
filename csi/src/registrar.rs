//! `rekube-csi registrar`: node-driver-registrar's job (kubernetes-csi/node-driver-registrar,
//! `--mode=registration`). It asks the CSI driver at `--csi-address` its name
//! (GetPluginInfo), then serves the kubelet's plugin registration API
//! (`pluginregistration.Registration`) at `<--plugin-registration-path>/<driver>-reg.sock`.
//! The node agent's plugin watcher finds that socket, calls GetInfo (type `CSIPlugin`, the
//! driver's name, `--kubelet-registration-path` as the endpoint, supported versions
//! `["1.0.0"]`), registers the driver and answers with NotifyRegistrationStatus. As
//! upstream: a failed registration ends the registrar with exit status 1 (its pod's
//! restart tries again); SIGTERM removes the socket (the agent then deregisters the
//! driver) and ends it with status 0.
//!
//! The kubelet dials the socket with its path as the HTTP/2 `:authority`, which h2 refuses;
//! connections go through [`crate::server::incoming`], which makes it `localhost`
//! ([`crate::uds_authority`]).
//!
//! Not ported: the `kubelet-registration-probe` mode and its probe file, the HTTP health
//! endpoint and pprof.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::csi::identity_client::IdentityClient;
use crate::pluginregistration::registration_server::{Registration, RegistrationServer};
use crate::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};

/// The plugin type of CSI drivers (upstream's `registerapi.CSIPlugin`).
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// The versions of the kubelet's CSI plugin API the registrar announces (upstream's
/// `supportedVersions`).
pub const SUPPORTED_VERSIONS: [&str; 1] = ["1.0.0"];

/// `rekube-csi registrar`: registers a CSI driver with the node agent through the plugin
/// registration directory (node-driver-registrar).
#[derive(Debug, Clone, Parser)]
#[command(name = "rekube-csi registrar", args_override_self = true)]
pub struct RegistrarOptions {
    /// Path of the CSI driver socket the registrar connects to (as the registrar sees it).
    #[arg(long, default_value = "/run/csi/socket")]
    pub csi_address: PathBuf,
    /// Path to the node agent's plugin registration directory (the agent's
    /// --plugin-registration-dir, as the registrar sees it).
    #[arg(long, default_value = "/registration")]
    pub plugin_registration_path: PathBuf,
    /// Path of the CSI driver socket as the node agent sees it: the endpoint GetInfo
    /// announces. Required.
    #[arg(long, default_value = "")]
    pub kubelet_registration_path: String,
    /// How long each call to the driver may take.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// A whole number of `ms`, `s` or `m` (the sidecars' duration flags).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: want a whole number of ms, s or m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: want a whole number of ms, s or m")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    #[error("kubelet-registration-path is a required parameter")]
    KubeletRegistrationPath,
    #[error("invalid --kubelet-registration-path {0:?}: must be an absolute path")]
    KubeletRegistrationPathRelative(String),
    #[error("error retrieving CSI driver name from {}: {message}", path.display())]
    DriverName { path: PathBuf, message: String },
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error("set the mode of {}: {source}", path.display())]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registration server at {}: {source}", path.display())]
    Serve {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("registration process failed with error: {0}")]
    RegistrationFailed(String),
}

impl RegistrarOptions {
    /// The flags checked (upstream refuses an empty --kubelet-registration-path).
    pub fn validate(&self) -> Result<(), RegistrarError> {
        if self.kubelet_registration_path.is_empty() {
            return Err(RegistrarError::KubeletRegistrationPath);
        }
        if !self.kubelet_registration_path.starts_with('/') {
            return Err(RegistrarError::KubeletRegistrationPathRelative(
                self.kubelet_registration_path.clone(),
            ));
        }
        Ok(())
    }
}

/// `<plugin registration path>/<driver>-reg.sock` (upstream's `buildSocketPath`).
pub fn registration_socket_path(plugin_registration_path: &Path, driver: &str) -> PathBuf {
    plugin_registration_path.join(format!("{driver}-reg.sock"))
}

/// The Registration service of one driver (upstream's `registrationServer`).
#[derive(Debug)]
pub struct RegistrationService {
    pub driver_name: String,
    pub endpoint: String,
    pub versions: Vec<String>,
    /// A failed registration, sent to the registrar's loop, which stops serving.
    failed: tokio::sync::mpsc::UnboundedSender<String>,
}

impl RegistrationService {
    /// The service of `driver_name`, announcing `endpoint` and [`SUPPORTED_VERSIONS`], and
    /// the receiver of its failed registrations.
    pub fn new(
        driver_name: String,
        endpoint: String,
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (failed, failures) = tokio::sync::mpsc::unbounded_channel();
        let service = RegistrationService {
            driver_name,
            endpoint,
            versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
            failed,
        };
        (service, failures)
    }

    /// The answer to GetInfo.
    pub fn plugin_info(&self) -> PluginInfo {
        PluginInfo {
            r#type: CSI_PLUGIN_TYPE.to_string(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: self.versions.clone(),
        }
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(
        &self,
        _request: tonic::Request<InfoRequest>,
    ) -> Result<tonic::Response<PluginInfo>, tonic::Status> {
        tracing::info!(driver = %self.driver_name, "received GetInfo call");
        Ok(tonic::Response::new(self.plugin_info()))
    }

    async fn notify_registration_status(
        &self,
        request: tonic::Request<RegistrationStatus>,
    ) -> Result<tonic::Response<RegistrationStatusResponse>, tonic::Status> {
        let status = request.into_inner();
        tracing::info!(
            driver = %self.driver_name,
            plugin_registered = status.plugin_registered,
            error = %status.error,
            "received NotifyRegistrationStatus call"
        );
        if !status.plugin_registered {
            tracing::error!(
                driver = %self.driver_name,
                error = %status.error,
                "registration process failed, stopping the registrar"
            );
            let _ = self.failed.send(status.error);
        }
        Ok(tonic::Response::new(RegistrationStatusResponse {}))
    }
}

/// GetPluginInfo's name of the driver at `csi_address` (csi-lib-utils' `GetDriverName`);
/// as csi-lib-utils' `Connect`, the connection is retried until the driver listens
/// (logged every 10 s), the call bounded by `timeout`.
pub async fn driver_name(csi_address: &Path, timeout: Duration) -> Result<String, RegistrarError> {
    let mut attempts = 0u32;
    let channel = loop {
        match crate::client::connect(csi_address).await {
            Ok(channel) => break channel,
            Err(e) => {
                if attempts.is_multiple_of(20) {
                    tracing::info!(path = %csi_address.display(), error = %e, "still connecting to the CSI driver");
                }
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let err = |message: String| RegistrarError::DriverName {
        path: csi_address.to_path_buf(),
        message,
    };
    let mut identity = IdentityClient::new(channel);
    let call = identity.get_plugin_info(crate::csi::GetPluginInfoRequest {});
    let info = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| err("context deadline exceeded".into()))?
        .map_err(|status| err(status.message().to_string()))?
        .into_inner();
    if info.name.is_empty() {
        return Err(err("driver name is empty".into()));
    }
    Ok(info.name)
}

/// The registrar: the driver's name, then the Registration service on
/// `<plugin registration path>/<driver>-reg.sock` (mode 0600, a stale socket replaced)
/// until `shutdown` (the socket removed, `Ok`) or a failed registration (the socket
/// removed, `Err`).
pub async fn run(
    options: RegistrarOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RegistrarError> {
    options.validate()?;
    tokio::pin!(shutdown);
    let name = tokio::select! {
        name = driver_name(&options.csi_address, options.timeout) => name?,
        _ = &mut shutdown => return Ok(()),
    };
    tracing::info!(driver = %name, "CSI driver name");
    let socket = registration_socket_path(&options.plugin_registration_path, &name);
    let listener = crate::server::bind(&socket)?;
    // Upstream listens under umask 0077: only the agent's user reaches the socket.
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(source) =
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        {
            let _ = std::fs::remove_file(&socket);
            return Err(RegistrarError::Permissions {
                path: socket,
                source,
            });
        }
    }
    tracing::info!(socket_path = %socket.display(), "registration server started");
    let (service, mut failed_rx) =
        RegistrationService::new(name, options.kubelet_registration_path.clone());
    let failure = std::sync::Mutex::new(None);
    let stop = async {
        tokio::select! {
            _ = &mut shutdown => {}
            error = failed_rx.recv() => {
                *failure.lock().expect("not poisoned") = error;
            }
        }
    };
    let served = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(service))
        .serve_with_incoming_shutdown(crate::server::incoming(listener, &socket), stop)
        .await;
    let _ = std::fs::remove_file(&socket);
    served.map_err(|source| RegistrarError::Serve {
        path: socket.clone(),
        source,
    })?;
    match failure.into_inner().expect("not poisoned") {
        Some(error) => Err(RegistrarError::RegistrationFailed(error)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_socket_path() {
        let o = RegistrarOptions::parse_from(["x"]);
        assert_eq!(o.csi_address, PathBuf::from("/run/csi/socket"));
        assert_eq!(o.plugin_registration_path, PathBuf::from("/registration"));
        assert_eq!(o.timeout, Duration::from_secs(1));
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "kubelet-registration-path is a required parameter"
        );
        let o = RegistrarOptions::parse_from(["x", "--kubelet-registration-path", "csi.sock"]);
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            r#"invalid --kubelet-registration-path "csi.sock": must be an absolute path"#
        );
        let o = RegistrarOptions::parse_from([
            "x",
            "--kubelet-registration-path",
            "/var/lib/kubelet/plugins/csi.rekube.io/csi.sock",
            "--timeout",
            "250ms",
        ]);
        assert!(o.validate().is_ok());
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert!(RegistrarOptions::try_parse_from(["x", "--timeout", "1h"]).is_err());
        assert_eq!(
            registration_socket_path(Path::new("/registration"), "csi.rekube.io"),
            PathBuf::from("/registration/csi.rekube.io-reg.sock")
        );
    }

    #[tokio::test]
    async fn get_info_and_a_failed_registration() {
        let (failed, mut failures) = tokio::sync::mpsc::unbounded_channel();
        let service = RegistrationService {
            driver_name: "csi.rekube.io".into(),
            endpoint: "/var/lib/rekube/plugins/csi.rekube.io/csi.sock".into(),
            versions: vec!["1.0.0".into()],
            failed,
        };
        let info = service
            .get_info(tonic::Request::new(InfoRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            info,
            PluginInfo {
                r#type: "CSIPlugin".into(),
                name: "csi.rekube.io".into(),
                endpoint: "/var/lib/rekube/plugins/csi.rekube.io/csi.sock".into(),
                supported_versions: vec!["1.0.0".into()],
            }
        );
        service
            .notify_registration_status(tonic::Request::new(RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            }))
            .await
            .unwrap();
        assert!(failures.try_recv().is_err(), "a success stops nothing");
        service
            .notify_registration_status(tonic::Request::new(RegistrationStatus {
                plugin_registered: false,
                error: "validation failed".into(),
            }))
            .await
            .unwrap();
        assert_eq!(failures.try_recv().unwrap(), "validation failed");
    }
}
