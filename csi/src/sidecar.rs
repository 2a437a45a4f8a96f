//! What the sidecar roles' shells share (`rekube-csi provisioner`, `rekube-csi attacher`):
//! the Kubernetes client from `--kubeconfig`, the connection to the driver's socket and
//! its identity and controller capabilities, a de-duplicating work queue with delayed
//! adds, the per-key exponential back-off of kubernetes-csi's sidecars
//! (`--retry-interval-start` 1 s doubling to `--retry-interval-max` 5 min), and the worker
//! loop that drives them ([`run_worker`]).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::csi::controller_client::ControllerClient;
use crate::csi::controller_service_capability::{Type as CapabilityType, rpc::Type as Rpc};
use crate::csi::identity_client::IdentityClient;
use crate::csi::{ControllerGetCapabilitiesRequest, GetPluginInfoRequest};

/// upstream `--retry-interval-start`.
pub const RETRY_START: Duration = Duration::from_secs(1);
/// upstream `--retry-interval-max`.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("connect to the driver at {0}: {1}")]
    Connect(PathBuf, tonic::transport::Error),
    #[error("driver at {0}: {1}")]
    Driver(PathBuf, String),
    #[error("read kubeconfig {0}: {1}")]
    Kubeconfig(PathBuf, String),
    #[error("kubernetes client: {0}")]
    Client(String),
}

/// A client from a kubeconfig file, or else KUBECONFIG, ~/.kube/config or the in-cluster
/// service account.
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<Client, SidecarError> {
    let kube_config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| SidecarError::Kubeconfig(path.to_path_buf(), e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| SidecarError::Kubeconfig(path.to_path_buf(), e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| SidecarError::Client(e.to_string()))?,
    };
    Client::try_from(kube_config).map_err(|e| SidecarError::Client(e.to_string()))
}

/// Connects to the driver, waiting up to a minute for its socket to appear (the driver
/// may start after the sidecar, as in a DaemonSet pod).
pub async fn connect_driver(socket: &Path) -> Result<Channel, SidecarError> {
    let mut waited = Duration::ZERO;
    loop {
        match crate::client::connect(socket).await {
            Ok(channel) => return Ok(channel),
            Err(e) if waited >= Duration::from_secs(60) => {
                return Err(SidecarError::Connect(socket.to_path_buf(), e));
            }
            Err(e) => {
                if waited.is_zero() {
                    tracing::info!(socket = %socket.display(), error = %e, "waiting for the driver");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                waited += Duration::from_millis(500);
            }
        }
    }
}

/// The driver's name (GetPluginInfo) and its controller capabilities.
pub async fn driver_info(
    channel: Channel,
    socket: &Path,
) -> Result<(String, Vec<Rpc>), SidecarError> {
    let driver_err = |e: tonic::Status| {
        SidecarError::Driver(
            socket.to_path_buf(),
            format!("rpc error: code = {:?} desc = {}", e.code(), e.message()),
        )
    };
    let name = IdentityClient::new(channel.clone())
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .map_err(driver_err)?
        .into_inner()
        .name;
    let rpcs = ControllerClient::new(channel)
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .map_err(driver_err)?
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| match c.r#type {
            Some(CapabilityType::Rpc(r)) => Rpc::try_from(r.r#type).ok(),
            _ => None,
        })
        .collect();
    Ok((name, rpcs))
}

/// Whether a kube error is the apiserver's answer with this HTTP status.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// A de-duplicating work queue with delayed adds (client-go's rate-limited queue, small).
pub struct Queue<K> {
    tx: mpsc::UnboundedSender<K>,
    queued: Arc<Mutex<HashSet<K>>>,
}

impl<K> Clone for Queue<K> {
    fn clone(&self) -> Self {
        Queue {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
        }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> Queue<K> {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<K>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Queue {
            tx,
            queued: Default::default(),
        };
        (queue, rx)
    }

    /// Queues `key` unless it waits in the queue already.
    pub fn add(&self, key: K) {
        if self.queued.lock().unwrap().insert(key.clone()) {
            let _ = self.tx.send(key);
        }
    }

    pub fn add_after(&self, key: K, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Takes `key` out of the queued set as its sync starts (a later add queues it again).
    pub fn done(&self, key: &K) {
        self.queued.lock().unwrap().remove(key);
    }
}

/// The delay before the retry after `failures` failures in a row: [`RETRY_START`] doubled
/// each time, at most [`RETRY_MAX`].
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_START
        .saturating_mul(2u32.saturating_pow(failures))
        .min(RETRY_MAX)
}

/// Per-key failure counts (client-go's ItemExponentialFailureRateLimiter).
#[derive(Debug)]
pub struct Backoff<K> {
    failures: HashMap<K, u32>,
}

impl<K> Default for Backoff<K> {
    fn default() -> Self {
        Backoff {
            failures: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> Backoff<K> {
    /// Counts a failure of `key`; the delay before its retry.
    pub fn failed(&mut self, key: K) -> Duration {
        let n = self.failures.entry(key).or_default();
        let delay = retry_delay(*n);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets `key`'s failures after a successful sync.
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }
}

/// The sidecars' worker (client-go's `processNextWorkItem` with a periodic resync): each
/// key the queue hands out is synced; a failure is logged and retried after the key's
/// back-off, a success forgets it; every `resync` period `requeue_all` queues every object
/// again. Returns when the queue is closed.
pub async fn run_worker<K, E, Fut>(
    mut work: mpsc::UnboundedReceiver<K>,
    queue: Queue<K>,
    resync: Duration,
    requeue_all: impl Fn(&Queue<K>),
    sync: impl Fn(K) -> Fut,
) where
    K: Clone + Eq + Hash + Send + std::fmt::Debug + 'static,
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut backoff = Backoff::default();
    let mut tick = tokio::time::interval(resync);
    loop {
        let key = tokio::select! {
            key = work.recv() => match key { Some(k) => k, None => return },
            _ = tick.tick() => {
                requeue_all(&queue);
                continue;
            }
        };
        queue.done(&key);
        match sync(key.clone()).await {
            Ok(()) => backoff.forget(&key),
            Err(e) => {
                let delay = backoff.failed(key.clone());
                tracing::warn!(?key, error = %e, retry_in = ?delay, "sync failed");
                queue.add_after(key, delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_a_second_to_five_minutes_per_key() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(8), Duration::from_secs(256));
        assert_eq!(retry_delay(9), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
        let mut b = Backoff::default();
        assert_eq!(b.failed("a"), Duration::from_secs(1));
        assert_eq!(b.failed("a"), Duration::from_secs(2));
        assert_eq!(b.failed("b"), Duration::from_secs(1));
        b.forget(&"a");
        assert_eq!(b.failed("a"), Duration::from_secs(1));
    }
}
