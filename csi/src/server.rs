//! Serves the three CSI services on the driver's unix socket until `shutdown` completes.
//! A stale socket from a previous run is replaced; anything else at the path is an error.
//! The socket is removed on the way out.

use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::csi::controller_server::ControllerServer;
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::NodeServer;
use crate::driver::Driver;
use crate::service::CsiService;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("endpoint {0}: exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serve {path}: {source}")]
    Serve {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Binds `socket`: its directory is made, a stale socket replaced.
pub fn bind(socket: &Path) -> Result<UnixListener, ServerError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| ServerError::Io { op, path, source }
    };
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(socket).map_err(io("remove", socket))?
        }
        Ok(_) => return Err(ServerError::NotASocket(socket.to_path_buf())),
        Err(_) => {}
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    UnixListener::bind(socket).map_err(io("listen on", socket))
}

/// Serves on `listener` (bound at `socket`) until `shutdown`, then removes the socket.
pub async fn serve(
    listener: UnixListener,
    socket: &Path,
    driver: Arc<Driver>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let service = CsiService::new(driver);
    let result = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(service.clone()))
        .add_service(ControllerServer::new(service.clone()))
        .add_service(NodeServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(|source| ServerError::Serve {
        path: socket.to_path_buf(),
        source,
    })
}
