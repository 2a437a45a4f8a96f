//! The API client every controller shares: client-go's QPS/burst token bucket
//! (`--kube-api-qps`, `--kube-api-burst`, defaults 20/30 as kube-controller-manager) and
//! a count of requests by authorization verb, resource and status code for `/metrics`.
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Request, Response};
use kube::Client;
use kube::client::{Body, ClientBuilder};
use tower::{Layer, Service};

use super::metrics::Metrics;
use super::request_info::RequestInfo;

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the kubeconfig: {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("building the api client: {0}")]
    Build(#[from] kube::Error),
    #[error("kube-api-qps must be positive and kube-api-burst at least 1, got {qps} and {burst}")]
    Limits { qps: f32, burst: u32 },
}

/// A write whose object is already gone counts as done (a delete of what no longer
/// exists, a patch of what was deleted meanwhile): its result without the 404.
pub fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// A token bucket refilled at `qps` per second holding `burst` tokens, as client-go's
/// flowcontrol.NewTokenBucketRateLimiter.
pub fn token_bucket(qps: f32, burst: u32) -> Result<Arc<DefaultDirectRateLimiter>, Error> {
    let burst_nz = NonZeroU32::new(burst).ok_or(Error::Limits { qps, burst })?;
    if !(qps > 0.0 && qps.is_finite()) {
        return Err(Error::Limits { qps, burst });
    }
    let period = std::time::Duration::from_secs_f64(1.0 / f64::from(qps));
    let quota = Quota::with_period(period)
        .ok_or(Error::Limits { qps, burst })?
        .allow_burst(burst_nz);
    Ok(Arc::new(RateLimiter::direct(quota)))
}

/// Builds the shared client from the ambient kubeconfig (or in-cluster config).
pub async fn build(qps: f32, burst: u32, metrics: Metrics) -> Result<Client, Error> {
    let config = kube::Config::infer().await?;
    let layer = ApiLimitLayer {
        limiter: token_bucket(qps, burst)?,
        turn: Arc::default(),
        metrics,
    };
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

#[derive(Clone)]
pub struct ApiLimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
    /// Requests take their turn at the limiter one at a time, first come first served
    /// (tokio's Mutex is fair), as client-go's token bucket serves them: only the head of
    /// the line waits on a timer, instead of every waiting request polling the limiter.
    turn: Arc<tokio::sync::Mutex<()>>,
    metrics: Metrics,
}

impl<S> Layer<S> for ApiLimitLayer {
    type Service = ApiLimit<S>;
    fn layer(&self, inner: S) -> ApiLimit<S> {
        ApiLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
            turn: Arc::clone(&self.turn),
            metrics: self.metrics.clone(),
        }
    }
}

pub struct ApiLimit<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    turn: Arc<tokio::sync::Mutex<()>>,
    metrics: Metrics,
}

impl<S, B> Service<Request<Body>> for ApiLimit<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let limiter = Arc::clone(&self.limiter);
        let turn = Arc::clone(&self.turn);
        let metrics = self.metrics.clone();
        // What RBAC authorizes the request as: which grant it uses.
        let info = RequestInfo::new(req.method().as_str(), req.uri().path(), req.uri().query());
        let resource = info.resource_label();
        // Futures are lazy: the request goes out when `response` is first polled, which is
        // after a token is taken.
        let response = self.inner.call(req);
        Box::pin(async move {
            {
                let _turn = turn.lock().await;
                limiter.until_ready().await;
            }
            let result = response.await;
            let code = match &result {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            metrics.api_request(info.verb, resource, code);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bucket_allows_a_burst_then_qps() {
        let limiter = token_bucket(20.0, 30).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..30 {
            assert!(limiter.check().is_ok(), "the burst is available at once");
        }
        assert!(limiter.check().is_err(), "the 31st request waits");
        for _ in 0..10 {
            limiter.until_ready().await;
        }
        // 10 more tokens at 20/s take about half a second.
        let waited = start.elapsed();
        assert!(
            waited >= std::time::Duration::from_millis(400),
            "{waited:?}"
        );
    }

    /// Each request is counted under the verb and resource RBAC authorizes it as.
    #[tokio::test]
    async fn requests_are_counted_by_verb_resource_and_code() {
        let metrics = Metrics::new();
        let layer = ApiLimitLayer {
            limiter: token_bucket(100.0, 10).unwrap(),
            turn: Arc::default(),
            metrics: metrics.clone(),
        };
        let mut svc = layer.layer(tower::service_fn(|req: Request<Body>| async move {
            let code = if req.method() == http::Method::DELETE {
                404
            } else {
                200
            };
            Ok::<_, std::convert::Infallible>(Response::builder().status(code).body(()).unwrap())
        }));
        for (method, uri) in [
            ("PATCH", "/apis/rekube.io/v1/namespaces/ns/pods/p/status?"),
            ("PATCH", "/apis/rekube.io/v1/namespaces/ns/pods/q/status?"),
            (
                "GET",
                "/apis/rekube.io/v1/namespaces/ns/pods?&watch=true&resourceVersion=1",
            ),
            ("DELETE", "/apis/rekube.io/v1/namespaces/ns/pods/p"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(Vec::new()))
                .unwrap();
            svc.call(req).await.unwrap();
        }
        let text = metrics.encode();
        for line in [
            r#"rekube_rest_client_requests_total{verb="patch",resource="pods.rekube.io/status",code="200"} 2"#,
            r#"rekube_rest_client_requests_total{verb="watch",resource="pods.rekube.io",code="200"} 1"#,
            r#"rekube_rest_client_requests_total{verb="delete",resource="pods.rekube.io",code="404"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert_eq!(metrics.api_requests_total(), 4);
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(matches!(token_bucket(0.0, 30), Err(Error::Limits { .. })));
        assert!(matches!(token_bucket(20.0, 0), Err(Error::Limits { .. })));
    }
}
