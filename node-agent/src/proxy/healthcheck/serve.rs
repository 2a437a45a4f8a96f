//! The health servers' I/O shell: TCP listeners (bound inside the proxy's network
//! namespace), HTTP/1 through hyper, and the two servers built on the pure states:
//! [`run_proxy_health`] (`ProxyHealthServer.Run`, retried every 5 s as kube-proxy's
//! `serveHealthz`) and [`ServiceHealthServer`] (one listener per node address and health
//! check node port, opened and closed as Services come and go).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ObjectReference;
use rekube_crds::events::EventRecorder;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::Reply;
use super::proxy_health::ProxyHealthState;
use super::service_health::ServiceHealthState;
use crate::proxy::nftables::NodePortAddresses;
use crate::proxy::types::{IpFamily, NamespacedName};

/// What answers a request, by its path.
pub type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// How long kube-proxy waits before trying its healthz server again.
const HEALTHZ_RETRY: Duration = Duration::from_secs(5);

/// A listening TCP socket on `addr`, inside the network namespace at `netns` (the
/// process's own when None). An IPv6 address takes IPv6 only (Go's "tcp6"), so the
/// families' wildcard listeners do not collide.
pub fn listen(addr: SocketAddr, netns: Option<&Path>) -> io::Result<std::net::TcpListener> {
    let bind = move || -> io::Result<std::net::TcpListener> {
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
            socket, sockopt,
        };
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        if addr.is_ipv6() {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        }
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrStorage::from(addr),
        )?;
        listen(&fd, Backlog::MAXCONN)?;
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    match netns {
        None => bind(),
        Some(path) => crate::runtime::sandbox::in_netns(path, bind).map_err(io::Error::other),
    }
}

/// Serves HTTP/1 on `listener` with `handler` until the returned task is aborted, which
/// closes the listener and every connection it accepted (Go's `Server.Close`).
pub fn serve(listener: std::net::TcpListener, handler: Handler) -> io::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "health server accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                // Reap finished connections as they end.
                Some(_) = connections.join_next() => continue,
            };
            let handler = Arc::clone(&handler);
            connections.spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let reply = handler(req.uri().path());
                    async move { Ok::<_, Infallible>(to_response(reply)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

fn to_response(reply: Reply) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::builder().status(reply.status);
    for (name, value) in reply.headers {
        response = response.header(name, value);
    }
    response
        .body(Full::new(Bytes::from(reply.body)))
        .expect("health replies are valid responses")
}

/// kube-proxy's healthz server: `/healthz` and `/livez` on `addr` until `stop` turns true;
/// a failure to listen is logged and tried again every 5 s.
pub async fn run_proxy_health(
    addr: SocketAddr,
    netns: Option<PathBuf>,
    state: Arc<Mutex<ProxyHealthState>>,
    mut stop: watch::Receiver<bool>,
) {
    let handler: Handler = Arc::new(move |path: &str| {
        let state = state.lock().unwrap();
        match path {
            "/healthz" => state.healthz(SystemTime::now()),
            "/livez" => state.livez(SystemTime::now()),
            _ => Reply::not_found(),
        }
    });
    loop {
        match listen(addr, netns.as_deref()).and_then(|l| serve(l, Arc::clone(&handler))) {
            Ok(task) => {
                tracing::info!(%addr, "proxy healthz serving");
                until_stopped(&mut stop).await;
                task.abort();
                return;
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "proxy healthz server failed");
                tokio::select! {
                    _ = tokio::time::sleep(HEALTHZ_RETRY) => {}
                    _ = until_stopped(&mut stop) => return,
                }
            }
        }
    }
}

/// Returns once `stop` is true (or its sender gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// The addresses the health check node ports listen on: the node port addresses, or every
/// address of the family (upstream's `newServiceHealthServer`).
pub fn listen_ips(family: IpFamily, addresses: &NodePortAddresses) -> Vec<IpAddr> {
    match addresses {
        NodePortAddresses::Ips(ips) if !ips.is_empty() => ips.clone(),
        _ => vec![match family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }],
    }
}

/// One family's health check node ports (upstream's `ServiceHealthServer`).
pub struct ServiceHealthServer {
    node_name: String,
    state: Arc<Mutex<ServiceHealthState>>,
    proxy: Arc<Mutex<ProxyHealthState>>,
    listen_ips: Vec<IpAddr>,
    netns: Option<PathBuf>,
    recorder: Option<EventRecorder>,
    servers: BTreeMap<NamespacedName, Vec<JoinHandle<()>>>,
}

impl ServiceHealthServer {
    pub fn new(
        node_name: &str,
        listen_ips: Vec<IpAddr>,
        netns: Option<PathBuf>,
        proxy: Arc<Mutex<ProxyHealthState>>,
        recorder: Option<EventRecorder>,
    ) -> Self {
        ServiceHealthServer {
            node_name: node_name.to_string(),
            state: Arc::default(),
            proxy,
            listen_ips,
            netns,
            recorder,
            servers: BTreeMap::new(),
        }
    }

    /// `SyncServices`: closes the health checks of Services that are gone or moved, and
    /// opens the new ones. A port that cannot be opened is logged, recorded as a
    /// `FailedToStartServiceHealthcheck` event on the Service, and tried again next sync.
    /// Must run inside the tokio runtime.
    pub fn sync_services(&mut self, new: &BTreeMap<NamespacedName, u16>) {
        let change = self.state.lock().unwrap().sync_services(new);
        for (name, port) in change.close {
            tracing::debug!(service = %name, port, "closing healthcheck");
            for task in self.servers.remove(&name).unwrap_or_default() {
                task.abort();
            }
        }
        for (name, port) in change.open {
            match self.listen_and_serve_all(&name, port) {
                Ok(tasks) => {
                    tracing::debug!(service = %name, port, "opening healthcheck");
                    self.servers.insert(name.clone(), tasks);
                    self.state.lock().unwrap().opened(name, port);
                }
                Err(e) => {
                    let message = format!(
                        "node {} failed to start healthcheck \"{name}\" on port {port}: {e}",
                        self.node_name
                    );
                    tracing::error!("{message}");
                    if let Some(recorder) = &self.recorder {
                        recorder.record(
                            &ObjectReference {
                                api_version: Some("rekube.io/v1".into()),
                                kind: Some("Service".into()),
                                namespace: Some(name.namespace.clone()),
                                name: Some(name.name.clone()),
                                uid: Some(name.to_string()),
                                ..Default::default()
                            },
                            rekube_crds::events::EventType::Warning,
                            "FailedToStartServiceHealthcheck",
                            message,
                        );
                    }
                }
            }
        }
    }

    /// `SyncEndpoints`: the local ready endpoint counts.
    pub fn sync_endpoints(&mut self, new: &BTreeMap<NamespacedName, usize>) {
        self.state.lock().unwrap().sync_endpoints(new);
    }

    /// One listener per address; none stays open when one fails.
    fn listen_and_serve_all(
        &self,
        name: &NamespacedName,
        port: u16,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let state = Arc::clone(&self.state);
        let proxy = Arc::clone(&self.proxy);
        let service = name.clone();
        let handler: Handler = Arc::new(move |_path: &str| {
            let healthy = proxy.lock().unwrap().is_healthy(SystemTime::now());
            state
                .lock()
                .unwrap()
                .reply(&service, healthy)
                .unwrap_or_else(|| Reply::new(503, "text/plain", String::new()))
        });
        let mut tasks = Vec::new();
        for ip in &self.listen_ips {
            let served = listen(SocketAddr::new(*ip, port), self.netns.as_deref())
                .and_then(|l| serve(l, Arc::clone(&handler)));
            match served {
                Ok(task) => tasks.push(task),
                Err(e) => {
                    tasks.iter().for_each(JoinHandle::abort);
                    return Err(e);
                }
            }
        }
        Ok(tasks)
    }
}

impl Drop for ServiceHealthServer {
    fn drop(&mut self) {
        self.servers.values().flatten().for_each(JoinHandle::abort);
    }
}

#[cfg(test)]
mod tests {
    //! The shell over real sockets on loopback: hyper answers what the states say, ports
    //! open and close with the Services, a taken port is retried.

    use std::io::{Read, Write};

    use super::*;

    /// `GET path` on 127.0.0.1:port: the status and the whole response.
    fn get(port: u16, path: &str) -> io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let status = text[9..12].parse().expect("a status line");
        Ok((status, text))
    }

    /// A port nothing listens on now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn loopback() -> Vec<IpAddr> {
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn service_health_ports_follow_services_and_endpoints() {
        let proxy = Arc::new(Mutex::new(ProxyHealthState::new(Duration::from_secs(60))));
        let mut hcs = ServiceHealthServer::new("n", loopback(), None, Arc::clone(&proxy), None);
        let name = NamespacedName::new("ns", "lb");
        let port = free_port();
        hcs.sync_services(&BTreeMap::from([(name.clone(), port)]));
        let get_async =
            move |path: &'static str| tokio::task::spawn_blocking(move || get(port, path));
        let (status, text) = get_async("/").await.unwrap().unwrap();
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("\"localEndpoints\": 0"), "{text}");
        hcs.sync_endpoints(&BTreeMap::from([(name.clone(), 2)]));
        let (status, text) = get_async("/anything").await.unwrap().unwrap();
        assert_eq!(status, 200, "{text}");
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("x-load-balancing-endpoint-weight: 2"),
            "{text}"
        );
        assert!(lower.contains("content-type: application/json"), "{text}");
        assert!(lower.contains("x-content-type-options: nosniff"), "{text}");
        // A late proxy fails the health check although the node has endpoints.
        {
            let mut p = proxy.lock().unwrap();
            let long_ago = SystemTime::now() - Duration::from_secs(120);
            p.updated(IpFamily::V4, long_ago);
            p.queued_update(IpFamily::V4, long_ago);
        }
        let (status, text) = get_async("/").await.unwrap().unwrap();
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("\"serviceProxyHealthy\": false"), "{text}");
        proxy
            .lock()
            .unwrap()
            .updated(IpFamily::V4, SystemTime::now());
        // The Service gone: its port closes.
        hcs.sync_services(&BTreeMap::new());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = get_async("/").await.unwrap();
        assert_eq!(
            refused.map(|r| r.0).map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionRefused)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn taken_port_is_retried_at_the_next_sync() {
        let proxy = Arc::new(Mutex::new(ProxyHealthState::new(Duration::from_secs(60))));
        let mut hcs = ServiceHealthServer::new("n", loopback(), None, proxy, None);
        let name = NamespacedName::new("ns", "lb");
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = squatter.local_addr().unwrap().port();
        let wanted = BTreeMap::from([(name.clone(), port)]);
        hcs.sync_services(&wanted);
        assert!(hcs.state.lock().unwrap().services().is_empty());
        drop(squatter);
        hcs.sync_services(&wanted);
        assert_eq!(hcs.state.lock().unwrap().services(), wanted);
        let (status, _) = tokio::task::spawn_blocking(move || get(port, "/"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 503);
    }

    /// As kube-proxy's `serveHealthz`: a port that is taken is tried again every 5 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxy_healthz_retries_a_taken_port() {
        let state = Arc::new(Mutex::new(ProxyHealthState::new(Duration::from_secs(60))));
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = squatter.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(run_proxy_health(addr, None, state, stop));
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(squatter);
        let answered = tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < HEALTHZ_RETRY * 2 {
                if let Ok((status, _)) = get(addr.port(), "/livez") {
                    return Some((status, start.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            None
        })
        .await
        .unwrap();
        let (status, after) = answered.expect("the healthz server never took the freed port");
        assert_eq!(status, 200);
        assert!(
            after > Duration::from_secs(3),
            "answered after {after:?}: not a retry"
        );
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxy_healthz_and_livez() {
        let state = Arc::new(Mutex::new(ProxyHealthState::new(Duration::from_secs(60))));
        let port = free_port();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(run_proxy_health(addr, None, Arc::clone(&state), stop));
        let fetch = move |path: &'static str| async move {
            for _ in 0..50 {
                match tokio::task::spawn_blocking(move || get(port, path))
                    .await
                    .unwrap()
                {
                    Ok(r) => return r,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            panic!("nothing answers on {port}");
        };
        // The node not seen yet: healthz fails, livez does not.
        assert_eq!(fetch("/healthz").await.0, 503);
        assert_eq!(fetch("/livez").await.0, 200);
        state.lock().unwrap().sync_node(Some(Default::default()));
        let (status, text) = fetch("/healthz").await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"nodeEligible\":true"), "{text}");
        assert_eq!(fetch("/metrics").await.0, 404);
        stop_tx.send(true).unwrap();
        server.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = tokio::task::spawn_blocking(move || get(port, "/healthz"))
            .await
            .unwrap();
        assert!(refused.is_err(), "still answering after stop");
    }
}
