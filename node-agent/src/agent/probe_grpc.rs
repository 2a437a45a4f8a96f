//! The network side of grpc probes (upstream pkg/probe/grpc/grpc.go): a
//! `grpc.health.v1.Health/Check` call over plain-text HTTP/2, with the user agent
//! `kube-probe/<major>.<minor>` and one deadline for the connection and the call.
//!
//! The connection is made by [`probe_net::dial`], so, like the other probes, it comes
//! from inside the pod's network namespace (or the host's, for hostNetwork pods). What
//! the reply means is decided by the pure [`crate::kubelet::prober::grpc_probe_outcome`].
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::probe_net::{self, Origin};
use crate::kubelet::prober::{GrpcReply, PROBE_USER_AGENT};

/// Checks `service` at `addr` from `origin`, all within `timeout`.
pub async fn check(
    origin: &Origin,
    addr: SocketAddr,
    service: &str,
    timeout: Duration,
) -> GrpcReply {
    let deadline = Instant::now() + timeout;
    let endpoint = match Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(PROBE_USER_AGENT))
    {
        Ok(e) => e,
        Err(e) => {
            return GrpcReply::ConnectFailed {
                cause: e.to_string(),
            };
        }
    };
    let dial_origin = origin.clone();
    let connector = tower::service_fn(move |_| {
        let origin = dial_origin.clone();
        async move {
            probe_net::dial(&origin, addr, timeout)
                .await
                .map(TokioIo::new)
        }
    });
    let channel =
        match tokio::time::timeout_at(deadline, endpoint.connect_with_connector(connector)).await {
            Err(_) => {
                return GrpcReply::ConnectTimeout {
                    cause: "context deadline exceeded".into(),
                };
            }
            Ok(Err(e)) => {
                return GrpcReply::ConnectFailed {
                    cause: error_chain(&e),
                };
            }
            Ok(Ok(c)) => c,
        };
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    match tokio::time::timeout_at(deadline, HealthClient::new(channel).check(request)).await {
        Err(_) => GrpcReply::RpcTimeout,
        Ok(Ok(response)) => GrpcReply::Status(
            ServingStatus::try_from(response.into_inner().status)
                .unwrap_or(ServingStatus::Unknown)
                .as_str_name()
                .to_string(),
        ),
        Ok(Err(status)) => match status.code() {
            tonic::Code::Unimplemented => GrpcReply::Unimplemented {
                message: status.message().to_string(),
            },
            tonic::Code::DeadlineExceeded => GrpcReply::RpcTimeout,
            // grpc-go's status error text, as upstream's message embeds it.
            code => GrpcReply::RpcFailed {
                cause: format!("rpc error: code = {code:?} desc = {}", status.message()),
            },
        },
    }
}

/// An error with its causes, `: `-separated (tonic's transport error alone says only
/// "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::wrappers::TcpListenerStream;

    /// A real grpc health server on loopback; `svc` starts NOT_SERVING, "" SERVING.
    async fn health_server() -> (SocketAddr, tonic_health::server::HealthReporter) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("svc", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (addr, reporter)
    }

    const T: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn serving_not_serving_and_unknown_services() {
        let (addr, reporter) = health_server().await;
        assert_eq!(
            check(&Origin::Host, addr, "", T).await,
            GrpcReply::Status("SERVING".into())
        );
        assert_eq!(
            check(&Origin::Host, addr, "svc", T).await,
            GrpcReply::Status("NOT_SERVING".into())
        );
        reporter
            .set_service_status("svc", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(
            check(&Origin::Host, addr, "svc", T).await,
            GrpcReply::Status("SERVING".into())
        );
        // An unregistered service is a NOT_FOUND status from tonic-health's server.
        let reply = check(&Origin::Host, addr, "other", T).await;
        assert!(
            matches!(&reply, GrpcReply::RpcFailed { cause } if cause == "rpc error: code = NotFound desc = service not registered"),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn a_server_without_the_health_service_is_unimplemented() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A grpc server with no services at all answers every method UNIMPLEMENTED.
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        assert!(matches!(
            check(&Origin::Host, addr, "", T).await,
            GrpcReply::Unimplemented { .. }
        ));
    }

    #[tokio::test]
    async fn a_closed_port_fails_to_connect_and_a_silent_one_times_out() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(matches!(
            check(&Origin::Host, closed, "", T).await,
            GrpcReply::ConnectFailed { cause } if cause.contains("refused")
        ));
        // Accepts the connection and never speaks HTTP/2.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let (s, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        });
        let started = std::time::Instant::now();
        let reply = check(&Origin::Host, addr, "", Duration::from_millis(300)).await;
        assert!(
            matches!(
                reply,
                GrpcReply::ConnectTimeout { .. } | GrpcReply::RpcTimeout
            ),
            "{reply:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
