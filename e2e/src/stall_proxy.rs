//! A TCP proxy on loopback in front of the apiserver that can be made to stall: once
//! stalled it keeps every connection open but forwards no byte in either direction, and
//! accepts new connections without forwarding them. A client behind it sees a hung
//! apiserver (no error, no reset), the failure a clean kill never shows.
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub struct StallProxy {
    pub addr: std::net::SocketAddr,
    stalled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream` (host:port).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stalled);
        let task = tokio::spawn(async move {
            // Connections are held here forever once stalled (never forwarded, never closed).
            let never = Arc::new(Notify::new());
            while let Ok((client, _)) = listener.accept().await {
                let (flag, upstream, never) =
                    (Arc::clone(&flag), upstream.clone(), Arc::clone(&never));
                tokio::spawn(async move {
                    if flag.load(Ordering::SeqCst) {
                        let _held = client;
                        never.notified().await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        pump(cr, sw, Arc::clone(&flag), Arc::clone(&never)),
                        pump(sr, cw, flag, never)
                    );
                });
            }
        });
        StallProxy {
            addr,
            stalled,
            task,
        }
    }

    /// From now on nothing passes, in either direction, on any connection.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// A copy of the current kubeconfig (`KUBECONFIG`, one cluster) whose server is this
    /// proxy; the apiserver's certificate names 127.0.0.1, so TLS still verifies.
    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        let out = std::process::Command::new("kubectl")
            .args([
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                "json",
            ])
            .output()
            .expect("running kubectl config view");
        assert!(out.status.success(), "{out:?}");
        let mut config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        config["clusters"][0]["cluster"]["server"] =
            serde_json::json!(format!("https://{}", self.addr));
        let path = std::env::temp_dir().join(format!("{name}-stall-proxy.kubeconfig"));
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        path
    }

    /// The apiserver's host:port from the current kubeconfig.
    pub fn apiserver_address() -> String {
        let out = std::process::Command::new("kubectl")
            .args([
                "config",
                "view",
                "--minify",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
            ])
            .output()
            .expect("running kubectl config view");
        let server = String::from_utf8_lossy(&out.stdout).trim().to_string();
        server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string()
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either closes; once `stalled`, holds what it read and waits
/// forever.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
    never: Arc<Notify>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.load(Ordering::SeqCst) {
            never.notified().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
