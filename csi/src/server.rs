//! Serves the three CSI services on the driver's unix socket until `shutdown` completes.
//! A stale socket from a previous run is replaced; anything else at the path is an error.
//! The socket is removed on the way out. Every connection goes through
//! [`incoming`]'s adapter, which lets gRPC clients that send the socket path as
//! `:authority` in (crate::uds_authority); `rekube-csi registrar` serves the same way.

use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{UnixListener, UnixStream};

use crate::csi::controller_server::ControllerServer;
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::NodeServer;
use crate::driver::Driver;
use crate::service::CsiService;
use crate::uds_authority::{ClientRewriter, RewriteError};

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
        .serve_with_incoming_shutdown(incoming(listener, socket), shutdown)
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(|source| ServerError::Serve {
        path: socket.to_path_buf(),
        source,
    })
}

/// The bytes buffered each way between a connection and the server.
const PUMP_BUFFER: usize = 64 * 1024;

/// The connections `listener` (bound at `socket`) accepts, for
/// `tonic::transport::Server::serve_with_incoming`: each one an in-memory stream whose
/// other end a task pumps to and from the unix connection, the client's bytes through a
/// [`ClientRewriter`] (a socket path as `:authority` becomes `localhost`), the server's
/// unchanged. A client whose bytes cannot be rewritten (not HTTP/2, a malformed header
/// block) loses its connection, logged; the server goes on.
pub fn incoming(
    listener: UnixListener,
    socket: &Path,
) -> impl Stream<Item = std::io::Result<DuplexStream>> + Send + 'static {
    let socket: Arc<Path> = socket.into();
    futures::stream::unfold(listener, move |listener| {
        let socket = socket.clone();
        async move {
            let accepted = listener.accept().await.map(|(client, _)| {
                let (server, pumped) = tokio::io::duplex(PUMP_BUFFER);
                tokio::spawn(pump(client, pumped, socket));
                server
            });
            Some((accepted, listener))
        }
    })
}

enum PumpError {
    Rewrite(RewriteError),
    Io(std::io::Error),
}

/// Copies `client`'s bytes, rewritten, to `server` and `server`'s back, until the server
/// ends the connection or the client's bytes cannot be rewritten.
async fn pump(client: UnixStream, server: DuplexStream, socket: Arc<Path>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let to_server = async {
        let mut rewriter = ClientRewriter::new();
        let mut read = vec![0; PUMP_BUFFER];
        let mut rewritten = BytesMut::new();
        loop {
            let n = client_read.read(&mut read).await.map_err(PumpError::Io)?;
            if n == 0 {
                return server_write.shutdown().await.map_err(PumpError::Io);
            }
            rewriter
                .feed(&read[..n], &mut rewritten)
                .map_err(PumpError::Rewrite)?;
            server_write
                .write_all(&rewritten)
                .await
                .map_err(PumpError::Io)?;
            rewritten.clear();
        }
    };
    let to_client = async {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::pin!(to_server, to_client);
    tokio::select! {
        sent = &mut to_server => match sent {
            // The client is done sending: the server's answers still go back.
            Ok(()) => {
                let _ = to_client.await;
            }
            Err(PumpError::Rewrite(error)) => {
                tracing::error!("closing a client connection to {}: {error}", socket.display())
            }
            Err(PumpError::Io(error)) => {
                tracing::debug!("client connection to {} ended: {error}", socket.display())
            }
        },
        _ = &mut to_client => {}
    }
}
