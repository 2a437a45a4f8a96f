//! A gRPC channel to a CSI driver's unix socket, for the generated clients
//! (`csi::identity_client::IdentityClient::new(channel)`, ...): what the node agent and
//! the provisioner use to call a CSI driver.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// Connects to the CSI endpoint at `socket` (a unix socket path).
pub async fn connect(socket: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let socket: PathBuf = socket.as_ref().to_path_buf();
    // The URI is not dialled: the connector opens the socket.
    Endpoint::from_static("http://csi.invalid")
        .connect_with_connector(service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
}
