//! Prometheus metrics, named after client-go's and kube-controller-manager's where they
//! have a counterpart, and the HTTP server for `/metrics`, `/healthz` and `/readyz`.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use warp::Filter;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    pub controller: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub name: String,
}

/// An API request as the apiserver authorizes it ([`super::request_info::RequestInfo`]):
/// the verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
/// `deletecollection`), the resource (`pods.rekube.io/status`, `leases.coordination.k8s.io`;
/// the path of a non-resource request) and the response's status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

/// Every metric the controller manager exports; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    syncs: Family<SyncLabels, Counter>,
    sync_duration: Family<ControllerLabel, Histogram>,
    queue_depth: Family<QueueLabel, Gauge>,
    queue_adds: Family<QueueLabel, Counter>,
    queue_retries: Family<QueueLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    leader: Gauge,
    ready: Arc<AtomicBool>,
    health: super::health::Health,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rekube");
        let syncs = Family::<SyncLabels, Counter>::default();
        registry.register(
            "controller_syncs",
            "Object syncs by controller and result",
            syncs.clone(),
        );
        let sync_duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "controller_sync_duration_seconds",
            "How long one object sync took",
            sync_duration.clone(),
        );
        let queue_depth = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "workqueue_depth",
            "Keys waiting in a work queue",
            queue_depth.clone(),
        );
        let queue_adds = Family::<QueueLabel, Counter>::default();
        registry.register(
            "workqueue_adds",
            "Keys added to a work queue",
            queue_adds.clone(),
        );
        let queue_retries = Family::<QueueLabel, Counter>::default();
        registry.register(
            "workqueue_retries",
            "Keys re-queued after a failed sync",
            queue_retries.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "rest_client_requests",
            "API requests by authorization verb, resource and status code",
            requests.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader_election_master_status",
            "1 while this process leads",
            leader.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            syncs,
            sync_duration,
            queue_depth,
            queue_adds,
            queue_retries,
            requests,
            leader,
            ready: Arc::new(AtomicBool::new(false)),
            health: Default::default(),
        }
    }

    pub fn sync(&self, controller: &str, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.syncs
            .get_or_create(&SyncLabels {
                controller: controller.into(),
                result: result.into(),
            })
            .inc();
        self.sync_duration
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn queue(&self, name: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&QueueLabel { name: name.into() })
            .set(depth as i64);
    }

    pub fn queue_add(&self, name: &str) {
        self.queue_adds
            .get_or_create(&QueueLabel { name: name.into() })
            .inc();
    }

    pub fn queue_retry(&self, name: &str) {
        self.queue_retries
            .get_or_create(&QueueLabel { name: name.into() })
            .inc();
    }

    pub fn api_request(&self, verb: String, resource: String, code: String) {
        self.requests
            .get_or_create(&RequestLabels {
                verb,
                resource,
                code,
            })
            .inc();
    }

    /// Total API requests issued so far, all verbs and codes.
    pub fn api_requests_total(&self) -> u64 {
        let text = self.encode();
        text.lines()
            .filter(|l| l.starts_with("rekube_rest_client_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// What `/healthz` checks: stopped tasks and the leader election watchdog.
    pub fn health(&self) -> &super::health::Health {
        &self.health
    }

    /// `/readyz` answers OK once the informers have synced.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .expect("metrics encode");
        out
    }

    /// The `/metrics`, `/healthz` and `/readyz` routes, boxed (warp's filter types are
    /// otherwise too general to be sent to another task).
    fn routes(&self) -> warp::filters::BoxedFilter<(Box<dyn warp::Reply>,)> {
        let m = self.clone();
        let metrics =
            warp::path("metrics")
                .and(warp::get())
                .map(move || -> Box<dyn warp::Reply> {
                    Box::new(warp::reply::with_header(
                        m.encode(),
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ))
                });
        let health = self.health.clone();
        let healthz = warp::path("healthz").map(move || -> Box<dyn warp::Reply> {
            match health.check(std::time::Instant::now()) {
                Ok(()) => Box::new("ok".to_string()),
                Err(problems) => Box::new(warp::reply::with_status(
                    format!("unhealthy:\n{problems}\n"),
                    warp::http::StatusCode::INTERNAL_SERVER_ERROR,
                )),
            }
        });
        let ready = Arc::clone(&self.ready);
        let readyz = warp::path("readyz").map(move || -> Box<dyn warp::Reply> {
            if ready.load(Ordering::SeqCst) {
                Box::new(warp::reply::with_status(
                    "ok".to_string(),
                    warp::http::StatusCode::OK,
                ))
            } else {
                Box::new(warp::reply::with_status(
                    "informers not synced".to_string(),
                    warp::http::StatusCode::SERVICE_UNAVAILABLE,
                ))
            }
        });
        metrics.or(healthz).unify().or(readyz).unify().boxed()
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        warp::serve(self.routes())
            .bind(addr)
            .await
            .graceful(shutdown)
            .run()
            .await;
    }
}
