//! The network side of probes and lifecycle hooks (upstream pkg/probe/http, pkg/probe/tcp
//! and the httpGet handler of pkg/kubelet/lifecycle/handlers.go): a TCP connect and an
//! HTTP(S) GET with a timeout.
//!
//! Upstream dials the pod IP from the host's network namespace. Until pods have routable
//! IPs (the sandbox network is loopback only), the agent dials from *inside* the pod's
//! network namespace: a short-lived thread joins it, connects, and hands the connected
//! socket back (a socket stays in the namespace it was made in). A pod on the host
//! network is dialled from the agent's own namespace. What the probe asks for (the
//! host, the port, the path, the headers, the `Host` override) is what upstream sends.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::kubelet::prober::HttpGetTarget;
use crate::runtime::sandbox::in_netns;

/// The most of a response body kept (upstream `maxRespBodyLength`, 10 KiB).
pub const MAX_BODY: usize = 10 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dial tcp {addr}: {message}")]
    Dial { addr: String, message: String },
    #[error("dial tcp {addr}: i/o timeout")]
    Timeout { addr: String },
    #[error("lookup {host}: {message}")]
    Lookup { host: String, message: String },
    #[error("get {url:?}: {message}")]
    Http { url: String, message: String },
    #[error("get {url:?}: context deadline exceeded (timeout {timeout:?})")]
    HttpTimeout { url: String, timeout: Duration },
}

/// Where a probe's connection is made from: the pod's network namespace, or the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Host,
    Netns(PathBuf),
}

impl Origin {
    /// The pod's network namespace file, or the host (hostNetwork pods).
    pub fn of(netns: Option<&Path>) -> Self {
        netns.map_or(Origin::Host, |p| Origin::Netns(p.to_path_buf()))
    }
}

/// `host` as an IP (the pod's IP or an explicit address), resolved through the host's
/// resolver when it is a name. An empty host (a pod without an IP yet) is loopback:
/// dialled inside the pod's namespace, that is the pod itself.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    if host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::Lookup {
            host: host.into(),
            message: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Lookup {
            host: host.into(),
            message: "no such host".into(),
        })
}

/// Connects to `addr` from `origin` within `timeout` (upstream `DoTCPProbe`'s
/// `net.DialTimeout`).
pub async fn dial(
    origin: &Origin,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    let timed_out = || Error::Timeout {
        addr: addr.to_string(),
    };
    let failed = |message: String| Error::Dial {
        addr: addr.to_string(),
        message,
    };
    match origin {
        Origin::Host => tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| failed(connect_error(&e))),
        Origin::Netns(path) => {
            let path = path.clone();
            let std_stream = tokio::task::spawn_blocking(move || {
                in_netns(&path, move || {
                    let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| match e {
                crate::runtime::sandbox::NetworkError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::TimedOut =>
                {
                    timed_out()
                }
                // The connect itself failed (not joining the namespace).
                crate::runtime::sandbox::NetworkError::Io {
                    op: "configure",
                    source,
                    ..
                } => failed(connect_error(&source)),
                other => failed(other.to_string()),
            })?;
            TcpStream::from_std(std_stream).map_err(|e| failed(e.to_string()))
        }
    }
}

/// A failed connect as Go's net package words it, which upstream's probe messages carry
/// (`dial tcp 10.244.0.5:8080: connect: connection refused`).
fn connect_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!(
            "connect: {}",
            nix::errno::Errno::from_raw(n).desc().to_lowercase()
        ),
        None => e.to_string(),
    }
}

/// A response to [`http_get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// At most [`MAX_BODY`] bytes of the body, lossily as text.
    pub body: String,
}

/// GETs `target` from `origin`, giving up after `timeout` for the whole exchange
/// (upstream's `http.Client{Timeout}`). Redirects are not followed: a 3xx is returned
/// as is (upstream follows same-host redirects; see [`crate::kubelet::prober`]).
/// `https` is TLS without certificate verification, as upstream's
/// `InsecureSkipVerify`.
pub async fn http_get(
    origin: &Origin,
    target: &HttpGetTarget,
    timeout: Duration,
) -> Result<HttpResponse, Error> {
    let url = target.url.clone();
    match tokio::time::timeout(timeout, http_get_inner(origin, target, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(Error::HttpTimeout { url, timeout }),
    }
}

async fn http_get_inner(
    origin: &Origin,
    target: &HttpGetTarget,
    timeout: Duration,
) -> Result<HttpResponse, Error> {
    let addr = resolve(&target.host, target.port).await?;
    let stream = dial(origin, addr, timeout).await?;
    if target.scheme == "https" {
        let connector = tokio_rustls::TlsConnector::from(insecure_tls_config());
        let name = rustls::pki_types::ServerName::try_from(
            target
                .host_header
                .clone()
                .unwrap_or_else(|| target.host.clone()),
        )
        .unwrap_or_else(|_| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| Error::Http {
                url: target.url.clone(),
                message: e.to_string(),
            })?;
        exchange(tls, target).await
    } else {
        exchange(stream, target).await
    }
}

async fn exchange<S>(stream: S, target: &HttpGetTarget) -> Result<HttpResponse, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let err = |message: String| Error::Http {
        url: target.url.clone(),
        message,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| err(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let request = build_request(target).map_err(|e| err(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = response.status().as_u16();
    // Only the first MAX_BODY bytes matter; a longer body is cut, not an error.
    let mut body = Limited::new(response.into_body(), usize::MAX);
    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Some(Err(e)) => return Err(err(e.to_string())),
            None => break,
        }
    }
    bytes.truncate(MAX_BODY);
    conn.abort();
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// The request upstream's `NewRequestForHTTPGetAction` makes: the path as given, the
/// headers with their defaults, `Host` from the headers or the URL's host:port.
fn build_request(target: &HttpGetTarget) -> Result<http::Request<Empty<Bytes>>, http::Error> {
    let path = if target.path.starts_with('/') {
        target.path.clone()
    } else {
        format!("/{}", target.path)
    };
    let host = target.host_header.clone().unwrap_or_else(|| {
        let authority = target
            .url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string());
        authority.unwrap_or_else(|| format!("{}:{}", target.host, target.port))
    });
    let mut builder = http::Request::get(path).header(http::header::HOST, host);
    let headers: &BTreeMap<String, Vec<String>> = &target.headers;
    for (name, values) in headers {
        if name == "Host" {
            continue;
        }
        for v in values {
            builder = builder.header(name.as_str(), v.as_str());
        }
    }
    builder.header("Connection", "close").body(Empty::new())
}

/// TLS without verification (upstream's probes and hooks set `InsecureSkipVerify`).
fn insecure_tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth();
        Arc::new(config)
    }))
}

#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn target(port: u16, path: &str, headers: &[(&str, &str)]) -> HttpGetTarget {
        let mut h: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers {
            h.entry(k.to_string()).or_default().push(v.to_string());
        }
        HttpGetTarget {
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
            url: format!("http://127.0.0.1:{port}{path}"),
            host_header: h.get("Host").and_then(|v| v.first().cloned()),
            headers: h,
        }
    }

    /// A one-shot HTTP server on loopback: returns the request it read.
    async fn serve_once(response: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(response.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (port, task)
    }

    #[tokio::test]
    async fn http_get_sends_upstreams_request_and_reads_the_status() {
        let (port, server) =
            serve_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy").await;
        let t = target(
            port,
            "/healthz?x=1",
            &[("User-Agent", "kube-probe/1.36"), ("X-Custom", "a")],
        );
        let r = http_get(&Origin::Host, &t, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "busy"));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_lowercase();
        assert!(
            lower.contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{request}"
        );
        assert!(
            lower.contains("user-agent: kube-probe/1.36\r\n"),
            "{request}"
        );
        assert!(lower.contains("x-custom: a\r\n"), "{request}");
    }

    #[tokio::test]
    async fn the_host_header_overrides_the_urls_host_and_bodies_are_cut() {
        const BIG: &str = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        let body = "x".repeat(3 * MAX_BODY);
        let response: &'static str = Box::leak(format!("{BIG}{body}").into_boxed_str());
        let (port, server) = serve_once(response).await;
        let t = target(port, "/", &[("Host", "example.test")]);
        let r = http_get(&Origin::Host, &t, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.len()), (200, MAX_BODY));
        assert!(
            server
                .await
                .unwrap()
                .to_lowercase()
                .contains("host: example.test\r\n")
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_a_dial_error_and_a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let addr = resolve("127.0.0.1", port).await.unwrap();
        let e = dial(&Origin::Host, addr, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
        // Accepts, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let e = http_get(
            &Origin::Host,
            &target(port, "/", &[]),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::HttpTimeout { .. }), "{e}");
        drop(silent);
    }

    #[tokio::test]
    async fn an_empty_host_is_loopback() {
        assert_eq!(
            resolve("", 8080).await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]", 80).await.unwrap(),
            "[::1]:80".parse().unwrap()
        );
    }
}
